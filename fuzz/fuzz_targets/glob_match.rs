//! Any pattern against any image: matched or not, never a panic, and a
//! pattern without wildcards matches an image only if the host is the same.
#![no_main]

use credential_provider::matching::{RegistryPattern, urls_match};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (pattern, image) = text.split_once('\n').unwrap_or((text, ""));
    let matched = urls_match(pattern, image);
    let _ = RegistryPattern::parse_auth_key(pattern).matches(image);
    if matched && !pattern.contains(['*', '?', '[', '\\']) {
        let host = |s: &str| s.split(['/', '?', '#']).next().unwrap_or("").rsplit('@').next().unwrap_or("").to_string();
        assert_eq!(host(pattern), host(image), "{pattern:?} matched {image:?}");
    }
});
