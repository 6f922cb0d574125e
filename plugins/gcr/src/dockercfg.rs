//! The upstream plugin's `dockercfg` and `dockercfg-url` flows: a legacy
//! `.dockercfg` document kept in the instance attribute `google-dockercfg`,
//! or fetched from the URL in the attribute `google-dockercfg-url`.
//!
//! The document maps registry keys to logins; the entry for the requested
//! image is chosen by the kubelet's own matching rules, the most specific key
//! first, and returned under the requested host only.

use std::collections::BTreeMap;

use base64::Engine as _;
use credential_provider::matching::RegistryPattern;
use credential_provider::{Error, Secret};
use serde::Deserialize;

/// One login of a `.dockercfg` (or `config.json`) document.
#[derive(Deserialize)]
struct Entry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// Both shapes: the legacy map, and `config.json`'s `{"auths": {…}}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Document {
    Modern { auths: BTreeMap<String, Entry> },
    Legacy(BTreeMap<String, Entry>),
}

/// The login `document` holds for `image` (`host[:port]/path`).
pub fn login_for(document: &str, image: &str, source: &str) -> Result<(String, Secret), Error> {
    let document = Secret::new(document.to_string());
    let entries = match serde_json::from_str::<Document>(document.expose()) {
        Ok(Document::Modern { auths }) => auths,
        Ok(Document::Legacy(entries)) => entries,
        Err(_) => return Err(Error::cloud(source, "is not a .dockercfg document")),
    };
    let mut keys: Vec<&String> = entries.keys().filter(|k| RegistryPattern::parse_auth_key(k).matches(image)).collect();
    // The most specific first: the longest key once its scheme is set aside.
    let schemeless = |k: &str| k.split_once("://").map_or(k.len(), |(_, rest)| rest.len());
    keys.sort_by_key(|k| std::cmp::Reverse(schemeless(k)));
    let key = keys.first().ok_or_else(|| Error::cloud(source, format!("holds no login for {image}")))?;
    let entry = &entries[*key];
    // As the kubelet reads an entry: a non-empty `auth` wins over `username`
    // and `password`, and an `auth` that does not decode makes the entry invalid.
    let (username, password) = match (&entry.auth, &entry.username, &entry.password) {
        (Some(auth), _, _) if !auth.is_empty() => {
            let invalid = || Error::cloud(source, format!("the auth of {key} is not base64 of user:password"));
            let decoded = Secret::new(decode_auth(auth).ok_or_else(invalid)?);
            let (user, password) = decoded.expose().split_once(':').ok_or_else(invalid)?;
            (user.to_string(), password.to_string())
        }
        (_, Some(user), Some(password)) => (user.clone(), password.clone()),
        _ => return Err(Error::cloud(source, format!("the login of {key} has no username and password"))),
    };
    if username.is_empty() || password.is_empty() {
        return Err(Error::cloud(source, format!("the login of {key} is empty")));
    }
    Ok((username, Secret::new(password)))
}

/// An `auth` field decoded as the kubelet decodes it: standard base64, padded
/// when it ends in `=` and unpadded otherwise, line breaks ignored (Go's
/// decoder skips them), anything else stray (a space, say) refused.
fn decode_auth(auth: &str) -> Option<String> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let text: String = auth.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    // Go's decoder (not in strict mode) also accepts non-zero trailing bits.
    let config = GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true);
    let config = match auth.trim().ends_with('=') {
        true => config.with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
        false => config.with_decode_padding_mode(DecodePaddingMode::RequireNone),
    };
    let decoded = GeneralPurpose::new(&base64::alphabet::STANDARD, config).decode(text).ok()?;
    String::from_utf8(decoded).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    #[test]
    fn picks_the_most_specific_matching_login() {
        let document = serde_json::json!({
            "https://gcr.io": { "auth": b64("_json_key:outer"), "email": "x@y" },
            "gcr.io/team": { "username": "team", "password": "inner" },
            "us.gcr.io": { "auth": b64("other:pw") },
        })
        .to_string();
        let (user, password) = login_for(&document, "gcr.io/team/app", "google-dockercfg").expect("login");
        assert_eq!((user.as_str(), password.expose()), ("team", "inner"));
        let (user, password) = login_for(&document, "gcr.io/other/app", "google-dockercfg").expect("login");
        assert_eq!((user.as_str(), password.expose()), ("_json_key", "outer"));
        assert!(login_for(&document, "eu.gcr.io/x", "google-dockercfg").is_err());
    }

    #[test]
    fn decodes_auth_as_the_kubelet_does() {
        assert_eq!(decode_auth("dXNlcjpwYXNz").as_deref(), Some("user:pass"), "unpadded");
        assert_eq!(decode_auth("dXNlcjpwYXNzd29yZA==").as_deref(), Some("user:password"), "padded");
        assert_eq!(decode_auth("dXNlcjpw\r\nYXNz").as_deref(), Some("user:pass"), "line breaks are skipped");
        for stray in ["dXNlcjpwYXNz ", " dXNlcjpwYXNz", "dXNlcjpw YXNz", "dXNlcjpwYXNzd29yZA=", "dXNlcjpwYXNz=="] {
            assert_eq!(decode_auth(stray), None, "{stray:?}");
        }
    }

    #[test]
    fn auth_wins_over_username_and_password() {
        let document = serde_json::json!({
            "gcr.io": { "auth": b64("from-auth:pw1"), "username": "from-fields", "password": "pw2" },
            "us.gcr.io": { "auth": "", "username": "from-fields", "password": "pw2" },
            "eu.gcr.io": { "auth": format!("{} ", b64("u:p")), "username": "from-fields", "password": "pw2" },
        })
        .to_string();
        let (user, password) = login_for(&document, "gcr.io/a", "s").expect("login");
        assert_eq!((user.as_str(), password.expose()), ("from-auth", "pw1"));
        let (user, _) = login_for(&document, "us.gcr.io/a", "s").expect("an empty auth is no auth");
        assert_eq!(user, "from-fields");
        assert!(login_for(&document, "eu.gcr.io/a", "s").is_err(), "a stray space makes the entry invalid");
    }

    #[test]
    fn reads_config_json_and_refuses_junk() {
        let document = serde_json::json!({ "auths": { "gcr.io": { "auth": b64("u:p:w") } } }).to_string();
        let (user, password) = login_for(&document, "gcr.io/a", "s").expect("login");
        assert_eq!((user.as_str(), password.expose()), ("u", "p:w"));
        for bad in ["[]", "nope", r#"{"gcr.io":{"auth":"!!"}}"#, r#"{"gcr.io":{}}"#, r#"{"gcr.io":{"auth":"OnA="}}"#] {
            assert!(login_for(bad, "gcr.io/a", "s").is_err(), "{bad}");
        }
    }
}
