//! Keeping secrets out of logs and error messages.
//!
//! Two layers: [`Secret`] has no `Display` and a redacted `Debug`, so a secret
//! cannot reach a log line by accident; and every secret the process handles is
//! also registered here, so that whatever text does reach stderr (an SDK's error
//! that quotes a request, a cloud's message that echoes a token) is scrubbed
//! before it is written.

use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a redacted secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Secrets shorter than this are not scrubbed from text: replacing every "a" or
/// "1" would mangle messages without protecting anything.
const MIN_SCRUBBED_LEN: usize = 6;

static REGISTERED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A string that must never be logged: a password, token or key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret and registers it for scrubbing.
    pub fn new(value: String) -> Secret {
        register(&value);
        Secret(value)
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

/// Registers a secret so that [`scrub`] removes it from any text.
pub fn register(value: &str) {
    if value.len() < MIN_SCRUBBED_LEN {
        return;
    }
    if let Ok(mut registered) = REGISTERED.lock()
        && !registered.iter().any(|s| s == value)
    {
        registered.push(value.to_string());
        // Longest first, so that a secret containing another is removed whole.
        registered.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Registers the values of environment variables that hold secrets.
pub fn register_env(names: &[&str]) {
    for name in names {
        if let Ok(value) = std::env::var(name) {
            register(&value);
        }
    }
}

/// Replaces every registered secret in `text`.
pub fn scrub(text: &str) -> String {
    let Ok(registered) = REGISTERED.lock() else {
        return text.to_string();
    };
    let mut out = text.to_string();
    for secret in registered.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), REDACTED);
        }
    }
    out
}

/// A stderr writer that scrubs registered secrets from what passes through it.
/// The tracing formatter hands it one whole event per `write`.
#[derive(Debug, Default)]
pub struct ScrubbingStderr;

impl Write for ScrubbingStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        io::stderr().write_all(scrub(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted_and_text_is_scrubbed() {
        let secret = Secret::new("hunter2-very-secret".to_string());
        assert_eq!(format!("{secret:?}"), REDACTED);
        assert_eq!(scrub("failed with token hunter2-very-secret!"), "failed with token [redacted]!");
        register("abc");
        assert_eq!(scrub("abc"), "abc", "short values are not scrubbed");
    }
}
