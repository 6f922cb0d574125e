//! The protocol as the kubelet speaks it: the request it writes, and the
//! strict decoding of the response it reads (1.32+: an unknown, duplicate or
//! wrong-case field makes it drop the whole response).

use std::collections::BTreeMap;

use credential_provider::protocol::{ApiVersion, parse_go_duration};
use serde::{Deserialize, Serialize};

/// The request the kubelet writes to a plugin's stdin.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KubeletRequest<'a> {
    pub kind: &'static str,
    pub api_version: &'static str,
    pub image: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_account_annotations: Option<&'a BTreeMap<String, String>>,
}

impl<'a> KubeletRequest<'a> {
    /// A request for `image`; the service-account fields only exist in v1.
    pub fn new(
        version: ApiVersion,
        image: &'a str,
        token: Option<&'a str>,
        annotations: Option<&'a BTreeMap<String, String>>,
    ) -> KubeletRequest<'a> {
        let v1 = version == ApiVersion::V1;
        KubeletRequest {
            kind: "CredentialProviderRequest",
            api_version: version.as_str(),
            image,
            service_account_token: token.filter(|_| v1),
            service_account_annotations: annotations.filter(|_| v1),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The response as the kubelet's strict decoder reads it.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubeletResponse {
    pub kind: String,
    pub api_version: String,
    pub cache_key_type: String,
    pub cache_duration: Option<String>,
    #[serde(default)]
    pub auth: BTreeMap<String, KubeletAuth>,
}

/// One auth entry as the kubelet's strict decoder reads it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubeletAuth {
    pub username: String,
    pub password: String,
}

impl KubeletResponse {
    /// The cache duration in seconds, when it parses.
    pub fn cache_seconds(&self) -> f64 {
        self.cache_duration.as_deref().and_then(parse_go_duration).unwrap_or(0.0)
    }
}

/// Why the kubelet would refuse a plugin's stdout.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResponseError {
    #[error("stdout is empty")]
    Empty,
    #[error("stdout holds more than one JSON document")]
    Trailing,
    #[error("error reading the apiVersion from the response: {0}")]
    NoVersion(String),
    #[error("apiVersion from the response did not match the expected one: expected {expected}, actual {actual}")]
    WrongVersion { expected: String, actual: String },
    #[error("error decoding the response strictly: {0}")]
    Strict(String),
    #[error("kind is {0:?}, expected CredentialProviderResponse")]
    WrongKind(String),
    #[error("the plugin did not return a valid cacheKeyType: {0:?}")]
    CacheKeyType(String),
    #[error("cacheDuration {0:?} is not a duration")]
    CacheDuration(String),
}

/// Reads `stdout` as the kubelet does for a provider configured with `expected`.
pub fn decode_response(stdout: &str, expected: ApiVersion) -> Result<KubeletResponse, ResponseError> {
    let text = stdout.trim();
    if text.is_empty() {
        return Err(ResponseError::Empty);
    }
    let mut documents = serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>();
    let first = documents.next().ok_or(ResponseError::Empty)?.map_err(|e| ResponseError::NoVersion(e.to_string()))?;
    if documents.next().is_some() {
        return Err(ResponseError::Trailing);
    }
    let actual = first.get("apiVersion").and_then(|v| v.as_str()).unwrap_or_default().to_string();
    if actual != expected.as_str() {
        return Err(ResponseError::WrongVersion { expected: expected.as_str().to_string(), actual });
    }
    // serde_json reports duplicate fields of a struct, which Value would hide.
    let response: KubeletResponse = serde_json::from_str(text).map_err(|e| ResponseError::Strict(strict_reason(&e)))?;
    if response.kind != "CredentialProviderResponse" {
        return Err(ResponseError::WrongKind(response.kind));
    }
    if !["Image", "Registry", "Global"].contains(&response.cache_key_type.as_str()) {
        return Err(ResponseError::CacheKeyType(response.cache_key_type));
    }
    if let Some(duration) = &response.cache_duration
        && parse_go_duration(duration).is_none()
    {
        return Err(ResponseError::CacheDuration(duration.clone()));
    }
    Ok(response)
}

/// serde's reason without the value it may quote (a password, say).
fn strict_reason(e: &serde_json::Error) -> String {
    let message = e.to_string();
    let reason = message.split(" at line ").next().unwrap_or(&message);
    if reason.starts_with("unknown field")
        || reason.starts_with("duplicate field")
        || reason.starts_with("missing field")
    {
        reason.to_string()
    } else {
        format!("malformed at line {} column {}", e.line(), e.column())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1","cacheKeyType":"Registry","cacheDuration":"1m0s","auth":{"a.example":{"username":"u","password":"p"}}}"#;

    #[test]
    fn strict_decoding_rejects_what_the_kubelet_rejects() {
        assert!(decode_response(GOOD, ApiVersion::V1).is_ok());
        assert!(matches!(decode_response(GOOD, ApiVersion::V1Beta1), Err(ResponseError::WrongVersion { .. })));
        for (bad, expect) in [
            (GOOD.replace("\"cacheKeyType\"", "\"CacheKeyType\""), "unknown field"),
            (GOOD.replace("\"kind\"", "\"extra\":1,\"kind\""), "unknown field"),
            (
                GOOD.replace(
                    "\"kind\":\"CredentialProviderResponse\",",
                    "\"kind\":\"CredentialProviderResponse\",\"kind\":\"x\",",
                ),
                "duplicate field",
            ),
            (GOOD.replace("\"password\":\"p\"", "\"password\":\"p\",\"email\":\"e\""), "unknown field"),
            (GOOD.replace("Registry", "Pod"), "cacheKeyType"),
            (GOOD.replace("1m0s", "60"), "not a duration"),
            // Past what a Go duration holds: the kubelet's decoder refuses it.
            (GOOD.replace("1m0s", "13639362h39m13s"), "not a duration"),
            (format!("{GOOD}{GOOD}"), "more than one"),
            (String::new(), "empty"),
        ] {
            let error = decode_response(&bad, ApiVersion::V1).expect_err(&bad).to_string();
            assert!(error.contains(expect), "{bad}: {error}");
        }
    }

    #[test]
    fn requests_carry_service_account_fields_only_in_v1() {
        let annotations = BTreeMap::from([("k".to_string(), "v".to_string())]);
        let v1 = KubeletRequest::new(ApiVersion::V1, "r.io/a", Some("t"), Some(&annotations)).to_json();
        assert!(v1.contains("serviceAccountToken") && v1.contains("serviceAccountAnnotations"), "{v1}");
        let beta = KubeletRequest::new(ApiVersion::V1Beta1, "r.io/a", Some("t"), Some(&annotations)).to_json();
        assert!(!beta.contains("serviceAccount"), "{beta}");
    }
}
