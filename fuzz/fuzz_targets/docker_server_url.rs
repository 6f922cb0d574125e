//! Any server URL a docker client may send `get`: a registry the plugin can
//! plan for, or none, never a panic; and what it names reads back the same.
#![no_main]

use credential_provider::ImageRef;
use credential_provider::docker_helper::{REPOSITORY, image_for_server};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(image) = image_for_server(text) {
        assert_eq!(image.path, REPOSITORY);
        let again = ImageRef::parse(&image.to_string()).expect("a named registry reads back");
        assert_eq!(again, image);
        assert_eq!(image_for_server(&image.registry()), Some(image));
    }
});
