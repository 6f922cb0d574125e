//! Any image reference: parsed or refused, never a panic; what parses prints
//! back to a reference that parses to the same thing.
#![no_main]

use credential_provider::image::ImageRef;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(image) = ImageRef::parse(text) {
        let again = ImageRef::parse(&image.to_string()).expect("a parsed image prints back to a valid reference");
        assert_eq!(again, image);
        assert!(!image.host.is_empty() && !image.path.contains(".."));
    }
});
