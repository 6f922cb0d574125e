//! Configuration: the upstream plugin's (oracle-devrel/oke-credential-provider-for-ocir)
//! `-config` YAML file or its environment variables, and the OCI CLI's config
//! file for user principals.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use credential_provider::Error;
use serde::Deserialize;

/// The registry's token endpoint path.
pub const DEFAULT_TOKEN_PATH: &str = "/20180419/docker/token";
/// The username OCIR pairs with a bearer token.
pub const DEFAULT_USER: &str = "BEARER_TOKEN";

/// Which principal to sign as, when the configuration says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    InstancePrincipal,
    UserPrincipal,
    ResourcePrincipal,
}

impl AuthMethod {
    fn parse(value: &str) -> Result<AuthMethod, Error> {
        match value.trim().to_ascii_uppercase().as_str() {
            "INSTANCE_PRINCIPAL" => Ok(AuthMethod::InstancePrincipal),
            "USER_PRINCIPAL" | "API_KEY" => Ok(AuthMethod::UserPrincipal),
            "RESOURCE_PRINCIPAL" => Ok(AuthMethod::ResourcePrincipal),
            _ => Err(Error::Config(format!(
                "OCIR_AUTH_METHOD {value:?} is not INSTANCE_PRINCIPAL, USER_PRINCIPAL or RESOURCE_PRINCIPAL"
            ))),
        }
    }
}

/// The upstream plugin's settings.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpstreamYaml {
    registry_token_path: Option<String>,
    default_user: Option<String>,
    registry_protocol: Option<String>,
    ocir_auth_method: Option<String>,
    token_validation: Option<serde_yaml_ng::Value>,
}

/// The settings in force.
#[derive(Debug, PartialEq, Eq)]
pub struct UpstreamSettings {
    pub token_path: String,
    pub username: String,
    pub auth_method: Option<AuthMethod>,
    /// Prove each answer at the registry before the kubelet gets it.
    pub validate_tokens: bool,
}

impl UpstreamSettings {
    /// From the `-config` file when given (as upstream, the variables are
    /// then not read), else from `REGISTRY_TOKEN_PATH`, `DEFAULT_USER`,
    /// `REGISTRY_PROTOCOL`, `OCIR_AUTH_METHOD` and `TOKEN_VALIDATION`
    /// (or `VERIFY_TOKEN_AUTH`).
    pub fn load(file: Option<&Path>, lookup: impl Fn(&str) -> Option<String>) -> Result<UpstreamSettings, Error> {
        let yaml = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
                serde_yaml_ng::from_str::<UpstreamYaml>(&text)
                    .map_err(|e| Error::Config(format!("{} is not the plugin's YAML config: {e}", path.display())))?
            }
            None => UpstreamYaml {
                registry_token_path: lookup("REGISTRY_TOKEN_PATH"),
                default_user: lookup("DEFAULT_USER"),
                registry_protocol: lookup("REGISTRY_PROTOCOL"),
                ocir_auth_method: lookup("OCIR_AUTH_METHOD"),
                token_validation: lookup("TOKEN_VALIDATION")
                    .or_else(|| lookup("VERIFY_TOKEN_AUTH"))
                    .map(serde_yaml_ng::Value::String),
            },
        };
        let non_empty = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
        if let Some(protocol) = non_empty(yaml.registry_protocol)
            && !protocol.eq_ignore_ascii_case("https")
        {
            return Err(Error::Config(format!(
                "REGISTRY_PROTOCOL {protocol:?}: registries are reached over https only (point CREDENTIAL_PROVIDER_REGISTRY_ENDPOINTS at a loopback emulator instead)"
            )));
        }
        let token_path = non_empty(yaml.registry_token_path).unwrap_or_else(|| DEFAULT_TOKEN_PATH.to_string());
        if !token_path.starts_with('/') || token_path.contains("..") || token_path.contains(['?', '#', ' ']) {
            return Err(Error::Config(format!(
                "REGISTRY_TOKEN_PATH {token_path:?} is not a path such as {DEFAULT_TOKEN_PATH}"
            )));
        }
        let validate_tokens = match yaml.token_validation {
            None => false,
            Some(serde_yaml_ng::Value::Bool(on)) => on,
            Some(serde_yaml_ng::Value::String(text)) => {
                matches!(text.trim().to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "enabled" | "on")
            }
            Some(other) => return Err(Error::Config(format!("TOKEN_VALIDATION {other:?} is not true or false"))),
        };
        Ok(UpstreamSettings {
            token_path,
            username: non_empty(yaml.default_user).unwrap_or_else(|| DEFAULT_USER.to_string()),
            auth_method: non_empty(yaml.ocir_auth_method).map(|m| AuthMethod::parse(&m)).transpose()?,
            validate_tokens,
        })
    }
}

/// One profile of an OCI CLI config file.
#[derive(Debug)]
pub struct OciProfile {
    pub user: String,
    pub tenancy: String,
    pub fingerprint: String,
    pub key_file: PathBuf,
    pub pass_phrase: Option<String>,
    pub region: Option<String>,
}

/// The OCI CLI config file: `--config-file`, `OCI_CLI_CONFIG_FILE`,
/// `OCI_CONFIG_FILE`, else `~/.oci/config`; with what named it, `None` for
/// the default (which may well not exist: then the node is an instance).
pub fn config_file(
    flag: Option<&Path>,
    lookup: impl Fn(&str) -> Option<String>,
) -> Option<(PathBuf, Option<&'static str>)> {
    if let Some(path) = flag {
        return Some((path.to_path_buf(), Some("--config-file")));
    }
    for variable in ["OCI_CLI_CONFIG_FILE", "OCI_CONFIG_FILE"] {
        if let Some(path) = lookup(variable) {
            return Some((PathBuf::from(path), Some(variable)));
        }
    }
    lookup("HOME").map(|home| (Path::new(&home).join(".oci/config"), None))
}

impl OciProfile {
    /// Reads `profile` from the config file at `path`. The format is INI:
    /// `[PROFILE]` sections of `key=value` lines, `#` comments; a profile
    /// inherits from `[DEFAULT]`.
    pub fn read(path: &Path, profile: &str) -> Result<OciProfile, Error> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut current = None;
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                current = Some(name.trim().to_string());
                sections.entry(name.trim().to_string()).or_default();
                continue;
            }
            let (Some(section), Some((key, value))) = (&current, line.split_once('=')) else {
                return Err(Error::Config(format!(
                    "{} line {}: not a [PROFILE] or key=value line",
                    path.display(),
                    number + 1
                )));
            };
            sections.entry(section.clone()).or_default().insert(key.trim().to_string(), value.trim().to_string());
        }
        if !sections.contains_key(profile) {
            return Err(Error::Config(format!("{} has no [{profile}] profile", path.display())));
        }
        let field = |key: &str| {
            sections
                .get(profile)
                .and_then(|s| s.get(key))
                .or_else(|| sections.get("DEFAULT").and_then(|s| s.get(key)))
                .cloned()
        };
        let required =
            |key: &str| field(key).ok_or_else(|| Error::Config(format!("{} [{profile}] has no {key}", path.display())));
        let key_file = required("key_file")?;
        let key_file = match key_file.strip_prefix("~/") {
            Some(rest) => std::env::var_os("HOME")
                .map(|home| Path::new(&home).join(rest))
                .unwrap_or_else(|| PathBuf::from(&key_file)),
            None => PathBuf::from(&key_file),
        };
        Ok(OciProfile {
            user: required("user")?,
            tenancy: required("tenancy")?,
            fingerprint: required("fingerprint")?,
            key_file,
            pass_phrase: field("pass_phrase"),
            region: field("region"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn upstream_variables_and_defaults() {
        let settings = UpstreamSettings::load(None, lookup(&[])).expect("defaults");
        assert_eq!(
            settings,
            UpstreamSettings {
                token_path: DEFAULT_TOKEN_PATH.into(),
                username: DEFAULT_USER.into(),
                auth_method: None,
                validate_tokens: false
            }
        );
        let settings = UpstreamSettings::load(
            None,
            lookup(&[
                ("REGISTRY_TOKEN_PATH", "/20180419/docker/token"),
                ("DEFAULT_USER", "BEARER_TOKEN"),
                ("REGISTRY_PROTOCOL", "https"),
                ("OCIR_AUTH_METHOD", "USER_PRINCIPAL"),
                ("VERIFY_TOKEN_AUTH", "true"),
            ]),
        )
        .expect("upstream's example");
        assert_eq!(settings.auth_method, Some(AuthMethod::UserPrincipal));
        assert!(settings.validate_tokens);
        for bad in [
            &[("REGISTRY_PROTOCOL", "http")][..],
            &[("OCIR_AUTH_METHOD", "MAGIC")][..],
            &[("REGISTRY_TOKEN_PATH", "https://evil/x")][..],
        ] {
            assert!(UpstreamSettings::load(None, lookup(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_upstream_yaml_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "registryTokenPath: /20180419/docker/token\ndefaultUser: BEARER_TOKEN\nregistryProtocol: https\nocirAuthMethod: INSTANCE_PRINCIPAL\ntokenValidation: true\n").expect("write");
        let settings =
            UpstreamSettings::load(Some(&path), lookup(&[("OCIR_AUTH_METHOD", "USER_PRINCIPAL")])).expect("yaml");
        assert_eq!(settings.auth_method, Some(AuthMethod::InstancePrincipal), "the file wins; variables are not read");
        assert!(settings.validate_tokens);
        std::fs::write(&path, "registryTokenPath: [1, 2").expect("write");
        assert!(UpstreamSettings::load(Some(&path), lookup(&[])).is_err());
    }

    #[test]
    fn oci_cli_config_profiles() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("config");
        std::fs::write(
            &path,
            "# comment\n[DEFAULT]\nuser=ocid1.user.oc1..u\nfingerprint=aa:bb\ntenancy=ocid1.tenancy.oc1..t\nregion=us-ashburn-1\nkey_file=/keys/k.pem\n\n[OTHER]\nuser = ocid1.user.oc1..other\n",
        )
        .expect("write");
        let default = OciProfile::read(&path, "DEFAULT").expect("default");
        assert_eq!(
            (default.user.as_str(), default.key_file.as_path()),
            ("ocid1.user.oc1..u", Path::new("/keys/k.pem"))
        );
        let other = OciProfile::read(&path, "OTHER").expect("other");
        assert_eq!((other.user.as_str(), other.tenancy.as_str()), ("ocid1.user.oc1..other", "ocid1.tenancy.oc1..t"));
        assert!(OciProfile::read(&path, "MISSING").is_err());
        std::fs::write(&path, "user=outside-a-section\n").expect("write");
        assert!(OciProfile::read(&path, "DEFAULT").is_err());
    }
}
