//! The `icr-credential-provider` binary: the ICR plugin on the shared runner.

fn main() {
    credential_provider::run::<icr_credential_provider::Icr>()
}
