//! The `gcr-credential-provider` binary: the GCR plugin on the shared runner.

fn main() {
    credential_provider::run::<gcr_credential_provider::Gcr>()
}
