//! The files under `examples/`, for the tests that keep them true.

use std::path::{Path, PathBuf};

/// The path of `relative` under the workspace's `examples/`.
pub fn path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(relative)
}

/// The `matchImages` entries of a CredentialProviderConfig file under
/// `examples/`: the list items under each `matchImages:` key.
pub fn match_images(relative: &str) -> Vec<String> {
    let path = path(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut patterns = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed == "matchImages:" {
            inside = true;
        } else if inside && trimmed.starts_with("- ") {
            patterns.push(trimmed[2..].trim_matches('"').to_string());
        } else if inside && !trimmed.starts_with('#') {
            inside = false;
        }
    }
    assert!(!patterns.is_empty(), "{} has no matchImages", path.display());
    patterns
}
