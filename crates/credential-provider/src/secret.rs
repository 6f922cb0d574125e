//! Keeping secrets out of logs and error messages.
//!
//! Two layers: [`Secret`] has no `Display` and a redacted `Debug`, so a secret
//! cannot reach a log line by accident; and every secret the process handles is
//! also registered here, so that whatever text does reach stderr (an SDK's error
//! that quotes a request, a cloud's message that echoes a token) is scrubbed
//! before it is written.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write};
use std::sync::Mutex;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, Zeroizing};

/// What a redacted secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Secrets shorter than this are not scrubbed from text: replacing every "a" or
/// "1" would mangle messages without protecting anything.
const MIN_SCRUBBED_LEN: usize = 6;

/// The most secrets kept for scrubbing: a process that runs for days
/// (`refresh --every`) registers each credential it renews, and must not grow
/// for it. The newest are kept; an exec handles a handful.
pub const MAX_REGISTERED: usize = 256;

/// This process's registered secrets.
static REGISTERED: Mutex<Registry> = Mutex::new(Registry::new(MAX_REGISTERED));

/// Secrets to scrub, oldest first, at most `max`; each wiped from memory
/// when forgotten.
#[derive(Debug)]
struct Registry {
    secrets: VecDeque<Zeroizing<String>>,
    max: usize,
}

impl Registry {
    const fn new(max: usize) -> Registry {
        Registry { secrets: VecDeque::new(), max }
    }

    fn register(&mut self, value: &str) {
        if value.len() < MIN_SCRUBBED_LEN {
            return;
        }
        // Seen again: the newest, so the last to be forgotten.
        if let Some(index) = self.secrets.iter().position(|s| s.as_str() == value) {
            let again = self.secrets.remove(index);
            self.secrets.extend(again);
            return;
        }
        self.secrets.push_back(Zeroizing::new(value.to_string()));
        while self.secrets.len() > self.max {
            self.secrets.pop_front();
        }
    }

    fn scrub(&self, text: &str) -> String {
        // Longest first, so that a secret containing another is removed whole.
        let mut secrets: Vec<&str> = self.secrets.iter().map(|s| s.as_str()).collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let mut out = text.to_string();
        for secret in secrets {
            if out.contains(secret) {
                out = out.replace(secret, REDACTED);
            }
        }
        out
    }
}

/// A string that must never be logged: a password, token or key. Its memory
/// is wiped when it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

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
    if let Ok(mut registered) = REGISTERED.lock() {
        registered.register(value);
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
    match REGISTERED.lock() {
        Ok(registered) => registered.scrub(text),
        Err(_) => text.to_string(),
    }
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

    #[test]
    fn the_registry_keeps_the_newest_secrets_only() {
        let mut registry = Registry::new(4);
        let first = "the-very-first-secret";
        registry.register(first);
        for n in 0..4 {
            registry.register(&format!("later-secret-{n}"));
        }
        assert_eq!(registry.secrets.len(), 4);
        assert_eq!(registry.scrub(first), first, "the oldest was forgotten");
        assert_eq!(registry.scrub("later-secret-3"), REDACTED);
        // One seen again is kept longest.
        registry.register("later-secret-0");
        registry.register("another-secret");
        assert_eq!(registry.scrub("later-secret-0"), REDACTED);
        assert_eq!(registry.scrub("later-secret-1"), "later-secret-1");
        // A secret that contains another is removed whole.
        let mut registry = Registry::new(MAX_REGISTERED);
        registry.register("outer-secret-with-inner-secret-inside");
        registry.register("inner-secret");
        assert_eq!(registry.scrub("x outer-secret-with-inner-secret-inside y"), "x [redacted] y");
    }
}
