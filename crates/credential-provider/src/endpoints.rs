//! Where each network call goes.
//!
//! Every endpoint a plugin calls has a short name. Resolution, first match wins:
//! 1. the cloud SDK's standard variable, where one exists (`AWS_ENDPOINT_URL_ECR`…);
//! 2. `CREDENTIAL_PROVIDER_ENDPOINTS`, a comma-separated `name=url` list;
//! 3. the cloud's real endpoint.
//!
//! Registry calls go to `https://<host>` unless `CREDENTIAL_PROVIDER_REGISTRY_ENDPOINTS`
//! maps that host. An override that is not https is refused unless it points at
//! a loopback address: these variables exist for tests and local emulators, and
//! must never become a way to send a node's credentials over plain HTTP.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// The variable that overrides named endpoints.
pub const ENDPOINTS_VARIABLE: &str = "CREDENTIAL_PROVIDER_ENDPOINTS";
/// The variable that overrides registry hosts.
pub const REGISTRY_ENDPOINTS_VARIABLE: &str = "CREDENTIAL_PROVIDER_REGISTRY_ENDPOINTS";

/// Why an endpoint override was refused.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("{variable}: {entry:?} is not of the form name=url")]
    Malformed { variable: String, entry: String },
    #[error("{variable}: {url:?} {reason}")]
    Refused { variable: String, url: String, reason: &'static str },
}

/// The endpoint overrides in force for this process.
#[derive(Clone, Debug, Default)]
pub struct Endpoints {
    named: BTreeMap<String, String>,
    registries: BTreeMap<String, String>,
    /// SDK-standard variables, read once.
    sdk: BTreeMap<String, String>,
}

impl Endpoints {
    /// Reads the overrides from the environment, validating every one.
    pub fn from_env() -> Result<Endpoints, EndpointError> {
        Endpoints::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the overrides through `lookup`, for tests that must not touch the
    /// process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Endpoints, EndpointError> {
        let named = parse_list(ENDPOINTS_VARIABLE, lookup(ENDPOINTS_VARIABLE).as_deref())?;
        let registries = parse_list(REGISTRY_ENDPOINTS_VARIABLE, lookup(REGISTRY_ENDPOINTS_VARIABLE).as_deref())?;
        let mut sdk = BTreeMap::new();
        for variable in SDK_VARIABLES {
            if let Some(value) = lookup(variable).filter(|v| !v.is_empty()) {
                let value = value.trim_end_matches('/').to_string();
                validate_url(variable, &value)?;
                sdk.insert(variable.to_string(), value);
            }
        }
        Ok(Endpoints { named, registries, sdk })
    }

    /// The override for the endpoint `name`, if any: the SDK variable first,
    /// then `CREDENTIAL_PROVIDER_ENDPOINTS`. `None` means the cloud's real endpoint.
    pub fn get(&self, name: &str, sdk_variable: Option<&str>) -> Option<&str> {
        sdk_variable.and_then(|v| self.sdk.get(v)).or_else(|| self.named.get(name)).map(String::as_str)
    }

    /// The URL for endpoint `name`, or `default` when nothing overrides it.
    pub fn resolve(&self, name: &str, sdk_variable: Option<&str>, default: &str) -> String {
        self.get(name, sdk_variable).unwrap_or(default).to_string()
    }

    /// The base URL for calls to the registry at `host` (`host[:port]`).
    pub fn registry(&self, host: &str) -> String {
        self.registries.get(host).cloned().unwrap_or_else(|| format!("https://{host}"))
    }

    /// The override for the registry at `host` (`host[:port]`), if one is set.
    pub fn registry_override(&self, host: &str) -> Option<&str> {
        self.registries.get(host).map(String::as_str)
    }

    /// Every override in force, as `name=url` strings: part of a cache key, so
    /// that credentials from an emulator are never served for the real cloud.
    pub fn fingerprint(&self) -> Vec<String> {
        self.sdk.iter().chain(&self.named).chain(&self.registries).map(|(k, v)| format!("{k}={v}")).collect()
    }
}

/// The SDK-standard variables the core knows and validates.
pub const SDK_VARIABLES: &[&str] = &[
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_ECR",
    "AWS_ENDPOINT_URL_ECR_PUBLIC",
    "AWS_ENDPOINT_URL_STS",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "AZURE_AUTHORITY_HOST",
];

fn parse_list(variable: &str, value: Option<&str>) -> Result<BTreeMap<String, String>, EndpointError> {
    let mut map = BTreeMap::new();
    let Some(value) = value else {
        return Ok(map);
    };
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, url)) = entry.split_once('=') else {
            return Err(EndpointError::Malformed { variable: variable.to_string(), entry: entry.to_string() });
        };
        let (name, url) = (name.trim(), url.trim().trim_end_matches('/'));
        if name.is_empty() || url.is_empty() {
            return Err(EndpointError::Malformed { variable: variable.to_string(), entry: entry.to_string() });
        }
        validate_url(variable, url)?;
        map.insert(name.to_string(), url.to_string());
    }
    Ok(map)
}

/// Accepts `https://` anywhere and `http://` only to a loopback address.
/// `source` says where the URL came from (a variable, a file), for the error.
pub fn validate_url(variable: &str, url: &str) -> Result<(), EndpointError> {
    let refuse = |reason| EndpointError::Refused { variable: variable.to_string(), url: url.to_string(), reason };
    let (scheme, rest) = url.split_once("://").ok_or_else(|| refuse("is not a URL (expected https://host[:port])"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if let Some((_, host)) = authority.rsplit_once('@') {
        // Say which URL without repeating the credentials it carries.
        return Err(EndpointError::Refused {
            variable: variable.to_string(),
            url: format!("{scheme}://…@{host}"),
            reason: "must not carry credentials",
        });
    }
    let host = host_of(authority);
    if host.is_empty() {
        return Err(refuse("has no host"));
    }
    match scheme {
        "https" => Ok(()),
        "http" if is_loopback(host) => Ok(()),
        "http" => Err(refuse("is plain http to a host that is not loopback; use https")),
        _ => Err(refuse("has a scheme other than https or http")),
    }
}

/// The host of `host[:port]` or `[v6]:port`.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    authority.rsplit_once(':').map_or(authority, |(host, _)| host)
}

/// Whether `host` is a loopback address or `localhost`.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(vars: &[(&str, &str)]) -> Result<Endpoints, EndpointError> {
        Endpoints::from_lookup(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_string()))
    }

    #[test]
    fn sdk_variable_wins_over_the_list() {
        let e = endpoints(&[
            ("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:1/"),
            ("CREDENTIAL_PROVIDER_ENDPOINTS", "sts=http://127.0.0.1:2, imds=https://imds.example"),
        ])
        .expect("valid");
        assert_eq!(e.get("sts", Some("AWS_ENDPOINT_URL_STS")), Some("http://127.0.0.1:1"));
        assert_eq!(e.get("sts", None), Some("http://127.0.0.1:2"));
        assert_eq!(e.get("imds", None), Some("https://imds.example"));
        assert_eq!(e.resolve("other", None, "https://real"), "https://real");
    }

    #[test]
    fn registry_overrides() {
        let e = endpoints(&[("CREDENTIAL_PROVIDER_REGISTRY_ENDPOINTS", "r.example=http://[::1]:5000")]).expect("valid");
        assert_eq!(e.registry("r.example"), "http://[::1]:5000");
        assert_eq!(e.registry("s.example:444"), "https://s.example:444");
    }

    #[test]
    fn refuses_plain_http_off_loopback_and_junk() {
        for (var, value) in [
            ("CREDENTIAL_PROVIDER_ENDPOINTS", "sts=http://10.0.0.1:80"),
            ("CREDENTIAL_PROVIDER_ENDPOINTS", "sts=http://127.0.0.1.evil.io"),
            ("CREDENTIAL_PROVIDER_ENDPOINTS", "sts=ftp://127.0.0.1"),
            ("CREDENTIAL_PROVIDER_ENDPOINTS", "sts"),
            ("CREDENTIAL_PROVIDER_ENDPOINTS", "sts=https://user:pw@host"),
            ("AWS_ENDPOINT_URL_ECR", "http://ecr.example"),
            ("AWS_ENDPOINT_URL_ECR", "localhost:4566"),
        ] {
            assert!(endpoints(&[(var, value)]).is_err(), "{var}={value}");
        }
        for host in ["127.0.0.1", "127.8.9.10", "localhost", "[::1]"] {
            let value = format!("sts=http://{host}:8080");
            assert!(endpoints(&[("CREDENTIAL_PROVIDER_ENDPOINTS", &value)]).is_ok(), "{value}");
        }
    }
}
