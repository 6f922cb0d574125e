//! The `ocir-credential-provider` binary: the OCIR plugin on the shared runner.

fn main() {
    credential_provider::run::<ocir_credential_provider::Ocir>()
}
