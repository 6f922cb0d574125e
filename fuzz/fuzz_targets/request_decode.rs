//! Any stdin: decoded or refused, never a panic; an accepted request's image is not empty.
#![no_main]

use credential_provider::protocol::CredentialProviderRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = CredentialProviderRequest::decode(data) {
        assert!(!request.image.is_empty());
    }
});
