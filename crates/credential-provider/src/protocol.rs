//! The kubelet's exec credential provider wire format.
//!
//! Requests are read leniently: a later kubelet may add fields, and rejecting
//! them would break every pull on upgrade. Responses are written exactly: since
//! 1.32 the kubelet decodes them strictly, and one unknown, duplicate or
//! wrong-case field makes it throw the whole response away.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// The API group every request and response belongs to.
pub const API_GROUP: &str = "credentialprovider.kubelet.k8s.io";
/// The `kind` of a request.
pub const REQUEST_KIND: &str = "CredentialProviderRequest";
/// The `kind` of a response.
pub const RESPONSE_KIND: &str = "CredentialProviderResponse";

/// A version of the protocol the kubelet may speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApiVersion {
    V1Alpha1,
    V1Beta1,
    V1,
}

impl ApiVersion {
    /// Every version, oldest first.
    pub const ALL: [ApiVersion; 3] = [ApiVersion::V1Alpha1, ApiVersion::V1Beta1, ApiVersion::V1];

    /// The full `apiVersion` string, group included.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V1Alpha1 => "credentialprovider.kubelet.k8s.io/v1alpha1",
            ApiVersion::V1Beta1 => "credentialprovider.kubelet.k8s.io/v1beta1",
            ApiVersion::V1 => "credentialprovider.kubelet.k8s.io/v1",
        }
    }

    /// Parses a full `apiVersion` string; `None` for anything the kubelet never sends.
    pub fn parse(value: &str) -> Option<ApiVersion> {
        ApiVersion::ALL.into_iter().find(|v| v.as_str() == value)
    }

    /// Whether this version carries the service-account token fields of KEP-4412.
    pub fn has_service_account_fields(self) -> bool {
        self == ApiVersion::V1
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("the request on stdin is empty; the kubelet sends a CredentialProviderRequest as JSON")]
    Empty,
    #[error("the request is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the request is not valid JSON: {0}")]
    Json(String),
    #[error("the request's kind is {found:?}; expected {REQUEST_KIND:?}")]
    WrongKind { found: String },
    #[error("the request's apiVersion {found:?} is not supported; expected one of {API_GROUP}/v1alpha1, v1beta1 or v1")]
    UnsupportedApiVersion { found: String },
    #[error("the request has no image")]
    MissingImage,
}

/// The fields of a request as they arrive; every one optional so that the
/// errors say what is missing instead of serde's generic message.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRequest {
    kind: Option<String>,
    api_version: Option<String>,
    image: Option<String>,
    service_account_token: Option<String>,
    service_account_annotations: Option<BTreeMap<String, String>>,
}

/// The service account the kubelet pulls for (KEP-4412, `v1` only).
#[derive(Clone, Debug, Default)]
pub struct ServiceAccount {
    /// The projected token the kubelet minted for this pull. May be absent while
    /// annotations are present (the kubelet sends annotations alone when the
    /// provider's config requires no token).
    pub token: Option<Secret>,
    /// The annotations named by the provider config's `tokenAttributes`.
    pub annotations: BTreeMap<String, String>,
}

/// A request, validated.
#[derive(Clone, Debug)]
pub struct CredentialProviderRequest {
    pub api_version: ApiVersion,
    pub image: String,
    /// `None` unless the request is `v1` and carries a token or annotations.
    pub service_account: Option<ServiceAccount>,
}

impl CredentialProviderRequest {
    /// Decodes a request the way the kubelet would have written it.
    pub fn decode(bytes: &[u8]) -> Result<CredentialProviderRequest, RequestError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(RequestError::Empty);
        }
        let wire: WireRequest = serde_json::from_slice(bytes).map_err(|e| RequestError::Json(e.to_string()))?;
        let api_version = match wire.api_version.as_deref() {
            Some(v) => {
                ApiVersion::parse(v).ok_or_else(|| RequestError::UnsupportedApiVersion { found: v.to_string() })?
            }
            None => {
                return Err(RequestError::UnsupportedApiVersion { found: String::new() });
            }
        };
        match wire.kind.as_deref() {
            Some(REQUEST_KIND) => {}
            other => {
                return Err(RequestError::WrongKind { found: other.unwrap_or_default().to_string() });
            }
        }
        let image = match wire.image {
            Some(image) if !image.is_empty() => image,
            _ => return Err(RequestError::MissingImage),
        };
        // The service-account fields only exist in v1; in older versions they are
        // unknown fields, which a lenient reader ignores.
        let service_account = if api_version.has_service_account_fields() {
            let token = wire.service_account_token.filter(|t| !t.is_empty()).map(Secret::new);
            let annotations = wire.service_account_annotations.unwrap_or_default();
            if token.is_none() && annotations.is_empty() { None } else { Some(ServiceAccount { token, annotations }) }
        } else {
            if wire.service_account_token.is_some() {
                tracing::warn!("ignoring serviceAccountToken in a {api_version} request: only v1 carries it");
            }
            None
        };
        Ok(CredentialProviderRequest { api_version, image, service_account })
    }
}

/// How the kubelet keys the credentials it caches in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheKeyType {
    Image,
    Registry,
    Global,
}

/// One registry login.
#[derive(Clone, Debug, Serialize)]
pub struct AuthConfig {
    pub username: String,
    pub password: Secret,
}

/// A response, ready to be encoded exactly as the kubelet expects.
#[derive(Clone, Debug)]
pub struct CredentialProviderResponse {
    pub api_version: ApiVersion,
    pub cache_key_type: CacheKeyType,
    pub cache_duration: Duration,
    pub auth: BTreeMap<String, AuthConfig>,
}

/// The response's wire form; field order and names are the kubelet's.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse<'a> {
    kind: &'static str,
    api_version: &'static str,
    cache_key_type: CacheKeyType,
    cache_duration: String,
    auth: &'a BTreeMap<String, AuthConfig>,
}

impl CredentialProviderResponse {
    /// The response as one line of JSON, newline included.
    pub fn encode(&self) -> String {
        let wire = WireResponse {
            kind: RESPONSE_KIND,
            api_version: self.api_version.as_str(),
            cache_key_type: self.cache_key_type,
            cache_duration: go_duration(self.cache_duration),
            auth: &self.auth,
        };
        // Serializing strings and maps of strings cannot fail.
        let mut line = serde_json::to_string(&wire).unwrap_or_default();
        line.push('\n');
        line
    }
}

/// Formats a duration as Go's `time.Duration.String` does for whole seconds
/// (`0s`, `45s`, `1m0s`, `5h59m30s`), which is what `metav1.Duration` emits and
/// what the kubelet parses. Sub-second parts are dropped: rounding down can only
/// make the kubelet's cache expire sooner, never later.
pub fn go_duration(duration: Duration) -> String {
    let total = duration.as_secs();
    let (hours, minutes, seconds) = (total / 3600, (total % 3600) / 60, total % 60);
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else if minutes > 0 {
        format!("{minutes}m{seconds}s")
    } else {
        format!("{seconds}s")
    }
}

/// The longest duration Go can hold (2^63 - 1 ns, about 2,562,047 hours), in seconds.
const MAX_GO_DURATION_SECONDS: f64 = 9_223_372_036.854_775;

/// Parses a Go duration as `time.ParseDuration` does (`1h2m3.5s`, `300ms`, `0s`) into seconds.
/// A duration past what Go holds is refused, as Go refuses it.
pub fn parse_go_duration(text: &str) -> Option<f64> {
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Some(0.0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let number_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if number_end == 0 {
            return None;
        }
        let value: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_end..];
    }
    if total > MAX_GO_DURATION_SECONDS {
        return None;
    }
    Some(if negative { -total } else { total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("0s"), Some(0.0));
        assert_eq!(parse_go_duration("0"), Some(0.0));
        assert_eq!(parse_go_duration("5h59m30s"), Some(21570.0));
        assert_eq!(parse_go_duration("1.5s"), Some(1.5));
        assert_eq!(parse_go_duration("-1m"), Some(-60.0));
        assert_eq!(parse_go_duration("2562047h47m16s"), Some(9_223_372_036.0));
        // Past what a Go duration holds: Go's ParseDuration refuses it, and so the kubelet.
        for bad in ["", "5", "1x", "h", "1h 2m", "13639362h39m13s", "2562048h"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn go_duration_matches_go() {
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_millis(999)), "0s");
        assert_eq!(go_duration(Duration::from_secs(45)), "45s");
        assert_eq!(go_duration(Duration::from_secs(60)), "1m0s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_secs(5 * 3600 + 59 * 60 + 30)), "5h59m30s");
        assert_eq!(go_duration(Duration::from_secs(49 * 3600)), "49h0m0s");
    }

    #[test]
    fn decodes_every_version_and_ignores_unknown_fields() {
        for version in ApiVersion::ALL {
            let body = format!(
                r#"{{"kind":"CredentialProviderRequest","apiVersion":"{version}","image":"a.example/b","someFutureField":{{"x":1}}}}"#
            );
            let request = CredentialProviderRequest::decode(body.as_bytes()).expect("decodes");
            assert_eq!(request.api_version, version);
            assert_eq!(request.image, "a.example/b");
            assert!(request.service_account.is_none());
        }
    }

    #[test]
    fn service_account_fields_only_count_in_v1() {
        let body = |v: &str| {
            format!(
                r#"{{"kind":"CredentialProviderRequest","apiVersion":"{API_GROUP}/{v}","image":"a/b","serviceAccountToken":"tok","serviceAccountAnnotations":{{"k":"v"}}}}"#
            )
        };
        let v1 = CredentialProviderRequest::decode(body("v1").as_bytes()).expect("v1");
        let sa = v1.service_account.expect("service account");
        assert_eq!(sa.token.expect("token").expose(), "tok");
        assert_eq!(sa.annotations.get("k").map(String::as_str), Some("v"));
        let beta = CredentialProviderRequest::decode(body("v1beta1").as_bytes()).expect("beta");
        assert!(beta.service_account.is_none());
    }

    #[test]
    fn rejects_bad_requests() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("   \n", "empty"),
            ("{", "not valid JSON"),
            ("[]", "not valid JSON"),
            ("\u{0}", "not valid JSON"),
            (r#"{"kind":"Pod","apiVersion":"credentialprovider.kubelet.k8s.io/v1","image":"a/b"}"#, "kind"),
            (r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","image":"a/b"}"#, "kind"),
            (
                r#"{"kind":"CredentialProviderRequest","apiVersion":"credentialprovider.kubelet.k8s.io/v2","image":"a/b"}"#,
                "apiVersion",
            ),
            (r#"{"kind":"CredentialProviderRequest","image":"a/b"}"#, "apiVersion"),
            (r#"{"kind":"CredentialProviderRequest","apiVersion":"credentialprovider.kubelet.k8s.io/v1"}"#, "no image"),
            (
                r#"{"kind":"CredentialProviderRequest","apiVersion":"credentialprovider.kubelet.k8s.io/v1","image":""}"#,
                "no image",
            ),
            (
                r#"{"kind":"CredentialProviderRequest","apiVersion":"credentialprovider.kubelet.k8s.io/v1","image":7}"#,
                "not valid JSON",
            ),
        ];
        for (body, expected) in cases {
            let err = CredentialProviderRequest::decode(body.as_bytes()).expect_err(body);
            let message = err.to_string();
            assert!(message.contains(expected), "{body:?}: {message}");
            assert!(!message.contains('\n'), "one line: {message}");
        }
    }

    #[test]
    fn encodes_exactly_the_kubelet_fields() {
        let mut auth = BTreeMap::new();
        auth.insert(
            "r.example:5000".to_string(),
            AuthConfig { username: "AWS".into(), password: Secret::new("pw".into()) },
        );
        let response = CredentialProviderResponse {
            api_version: ApiVersion::V1Beta1,
            cache_key_type: CacheKeyType::Registry,
            cache_duration: Duration::from_secs(90),
            auth,
        };
        assert_eq!(
            response.encode(),
            concat!(
                r#"{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1beta1","#,
                r#""cacheKeyType":"Registry","cacheDuration":"1m30s","auth":{"r.example:5000":{"username":"AWS","password":"pw"}}}"#,
                "\n"
            )
        );
    }
}
