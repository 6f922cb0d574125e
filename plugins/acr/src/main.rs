//! The `acr-credential-provider` binary: the ACR plugin on the shared runner.

fn main() {
    credential_provider::run::<acr_credential_provider::Acr>()
}
