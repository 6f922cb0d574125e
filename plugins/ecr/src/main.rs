//! The `ecr-credential-provider` binary: the ECR plugin on the shared runner.

// `pow` for the AWS SDK, so that no exec loads the system's libm (see the crate).
extern crate libm_shim;

fn main() {
    credential_provider::run::<ecr_credential_provider::Ecr>()
}
