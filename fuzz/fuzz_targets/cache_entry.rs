//! Any cache file: an entry of this format or nothing, never a panic.
#![no_main]

use credential_provider::cache::{FORMAT_VERSION, parse_entry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(entry) = parse_entry(data) {
        assert_eq!(entry.format, FORMAT_VERSION);
    }
});
