//! Any pattern against any image: matched or not, never a panic; and a
//! pattern without wildcards matches only an image with the same host and
//! port (both read as Go's `url.Parse("https://" + s)` reads them).
#![no_main]

use credential_provider::matching::{RegistryPattern, urls_match};
use libfuzzer_sys::fuzz_target;

/// (host, port) of `host[:port][/path]`, userinfo dropped.
fn authority(value: &str) -> (String, String) {
    let end = value.find(['/', '?', '#']).unwrap_or(value.len());
    let authority = value[..end].rsplit('@').next().unwrap_or("");
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host.to_string(), port.to_string()),
        _ => (authority.to_string(), String::new()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (pattern, image) = text.split_once('\n').unwrap_or((text, ""));
    let matched = urls_match(pattern, image);
    let _ = RegistryPattern::parse_auth_key(pattern).matches(image);
    if matched && !pattern.contains(['*', '?', '[', '\\']) {
        assert_eq!(authority(pattern), authority(image), "{pattern:?} matched {image:?}");
    }
});
