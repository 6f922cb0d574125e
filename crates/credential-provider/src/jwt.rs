//! Reading the claims of a JWT that a cloud or registry issued to us, without
//! verifying it: the issuer is the party we just asked over TLS, and what we
//! read (its expiry, its tenant) only decides how long to cache it.

use base64::Engine as _;

/// The claims of `token`, if it is a JWT.
pub fn unverified_claims(token: &str) -> Option<serde_json::Value> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.is_object().then_some(claims)
}

/// The `exp` claim of `token`, in seconds since the Unix epoch.
pub fn expiry(token: &str) -> Option<u64> {
    unverified_claims(token)?.get("exp")?.as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> String {
        let encode = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{}.sig", encode(r#"{"alg":"RS256"}"#), encode(claims))
    }

    #[test]
    fn reads_claims_and_expiry() {
        let token = jwt(r#"{"exp":1800000000,"tid":"t"}"#);
        assert_eq!(expiry(&token), Some(1_800_000_000));
        assert_eq!(unverified_claims(&token).and_then(|c| c["tid"].as_str().map(str::to_string)), Some("t".into()));
        for bad in ["", "a.b", "a.b.c.d", "a.!!!.c", &jwt("[1]"), &jwt(r#"{"exp":"soon"}"#)] {
            assert_eq!(expiry(bad), None, "{bad}");
        }
    }
}
