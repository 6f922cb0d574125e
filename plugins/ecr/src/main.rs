//! The `ecr-credential-provider` binary: the ECR plugin on the shared runner.

fn main() {
    credential_provider::run::<ecr_credential_provider::Ecr>()
}
