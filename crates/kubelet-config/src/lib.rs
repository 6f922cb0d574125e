//! The kubelet's `CredentialProviderConfig`: read from a file or, as kubelets
//! 1.34+ accept, a directory of `*.json`, `*.yaml` and `*.yml` files merged in
//! lexical order; decoded strictly (an unknown, duplicate or mistyped field is
//! fatal, as it is to the kubelet) and validated by the kubelet's rules; and
//! which provider an image goes to (its `matchImages`, by the kubelet's glob
//! rules).
//!
//! One definition of a valid config for everything that reads one: the
//! simulator, the node installer (before it installs), the refresh agent
//! (to run each provider as the kubelet execs it) and the tests.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use credential_provider::matching::urls_match;
use credential_provider::protocol::{ApiVersion, parse_go_duration};
use serde::Deserialize;

/// The config's group; its versions are v1alpha1, v1beta1 and v1.
pub const GROUP: &str = "kubelet.config.k8s.io";
const VERSIONS: &[&str] = &["v1alpha1", "v1beta1", "v1"];

/// One problem in a config, where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based, when known.
    pub line: Option<usize>,
    /// The field path (`providers[0].matchImages`), when the problem has one.
    pub field: Option<String>,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ConfigFile {
    kind: String,
    api_version: String,
    #[serde(default)]
    providers: Vec<ProviderSpec>,
}

/// One provider, as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProviderSpec {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub match_images: Vec<String>,
    pub default_cache_duration: Option<String>,
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    pub token_attributes: Option<TokenAttributes>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenAttributes {
    #[serde(default)]
    pub service_account_token_audience: String,
    pub require_service_account: Option<bool>,
    #[serde(default)]
    pub required_service_account_annotation_keys: Vec<String>,
    #[serde(default)]
    pub optional_service_account_annotation_keys: Vec<String>,
    #[serde(default)]
    pub cache_type: String,
}

/// A provider that passed validation, with where it was written.
#[derive(Clone, Debug)]
pub struct Provider {
    pub spec: ProviderSpec,
    pub file: PathBuf,
    pub line: Option<usize>,
    pub api_version: ApiVersion,
    pub default_cache_duration: Duration,
}

impl Provider {
    /// Whether the kubelet runs this provider for `image` (a repository as the
    /// kubelet names it): one of its `matchImages` patterns matches it.
    pub fn matches(&self, image: &str) -> bool {
        self.spec.match_images.iter().any(|pattern| urls_match(pattern, image))
    }
}

/// The file the kubelet runs for the provider `name` from `bin_dir`: the
/// file of that name, or on Windows `name.exe` when there is none (as the
/// kubelet looks it up there since 1.29, kubernetes#120291; AKS installs
/// both for older kubelets).
pub fn plugin_path(bin_dir: &Path, name: &str) -> PathBuf {
    let exact = bin_dir.join(name);
    let with_suffix = bin_dir.join(credential_provider::platform::executable_name(name));
    if cfg!(windows) && !exact.is_file() && with_suffix.is_file() { with_suffix } else { exact }
}

/// Whether the kubelet reads a file of a config directory by its name:
/// `*.json`, `*.yaml` and `*.yml` only.
pub fn is_config_file_name(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("json" | "yaml" | "yml"))
}

/// The files a config path stands for.
pub fn config_files(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let error = |message: String| ConfigError { file: path.to_path_buf(), line: None, field: None, message };
    let meta = std::fs::metadata(path).map_err(|e| error(format!("cannot read: {e}")))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| error(format!("cannot list: {e}")))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_config_file_name(p))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(error("the directory holds no *.json, *.yaml or *.yml file".into()));
    }
    Ok(files)
}

/// Reads and validates a config file or directory: every provider, or every problem.
pub fn load(path: &Path) -> Result<Vec<Provider>, Vec<ConfigError>> {
    let files = config_files(path).map_err(|e| vec![e])?;
    load_files(&files)
}

/// Reads and validates `files` as one config directory would be (in this
/// order, names unique across them): for an installer, the directory as it
/// will be once new files join it.
pub fn load_files(files: &[PathBuf]) -> Result<Vec<Provider>, Vec<ConfigError>> {
    let mut providers = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        match load_file(file) {
            Ok(found) => providers.extend(found),
            Err(found) => errors.extend(found),
        }
    }
    let mut seen = BTreeSet::new();
    for provider in &providers {
        if !seen.insert(provider.spec.name.clone()) {
            errors.push(ConfigError {
                file: provider.file.clone(),
                line: provider.line,
                field: Some("providers.name".into()),
                message: format!(
                    "duplicate provider name {:?} (names must be unique across every file)",
                    provider.spec.name
                ),
            });
        }
    }
    if errors.is_empty() { Ok(providers) } else { Err(errors) }
}

fn load_file(file: &Path) -> Result<Vec<Provider>, Vec<ConfigError>> {
    let error =
        |line, field: Option<String>, message: String| ConfigError { file: file.to_path_buf(), line, field, message };
    let text = std::fs::read_to_string(file).map_err(|e| vec![error(None, None, format!("cannot read: {e}"))])?;
    let config: ConfigFile = serde_yaml_ng::from_str(&text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        vec![error(line, None, format!("cannot be decoded strictly: {e}"))]
    })?;
    let mut errors = Vec::new();
    if config.kind != "CredentialProviderConfig" {
        errors.push(error(
            None,
            Some("kind".into()),
            format!("is {:?}, expected CredentialProviderConfig", config.kind),
        ));
    }
    let version_ok =
        config.api_version.strip_prefix(GROUP).and_then(|v| v.strip_prefix('/')).is_some_and(|v| VERSIONS.contains(&v));
    if !version_ok {
        errors.push(error(
            None,
            Some("apiVersion".into()),
            format!("is {:?}, expected {GROUP}/v1, /v1beta1 or /v1alpha1", config.api_version),
        ));
    }
    if config.providers.is_empty() {
        errors.push(error(None, Some("providers".into()), "at least one provider is required".into()));
    }
    let mut providers = Vec::new();
    for (index, spec) in config.providers.into_iter().enumerate() {
        let line = line_of(&text, &spec.name);
        let mut problem = |field: &str, message: String| {
            errors.push(error(line, Some(format!("providers[{index}].{field}")), message));
        };
        validate_provider(&spec, &mut problem);
        let api_version = ApiVersion::parse(&spec.api_version);
        let default_cache_duration =
            spec.default_cache_duration.as_deref().and_then(parse_go_duration).filter(|s| *s >= 0.0);
        if let (Some(api_version), Some(seconds)) = (api_version, default_cache_duration) {
            providers.push(Provider {
                default_cache_duration: Duration::from_secs_f64(seconds),
                api_version,
                file: file.to_path_buf(),
                line,
                spec,
            });
        }
    }
    if errors.is_empty() { Ok(providers) } else { Err(errors) }
}

/// The kubelet's `validateCredentialProviderConfig`, for one provider.
fn validate_provider(spec: &ProviderSpec, problem: &mut impl FnMut(&str, String)) {
    let name = &spec.name;
    if name.is_empty() {
        problem("name", "is required".into());
    }
    if name.contains('/') {
        problem("name", format!("{name:?}: a provider name cannot contain '/'"));
    }
    if name.contains(' ') {
        problem("name", format!("{name:?}: a provider name cannot contain spaces"));
    }
    if name == "." || name == ".." {
        problem("name", format!("{name:?}: a provider name cannot be '.' or '..'"));
    }
    if spec.api_version.is_empty() {
        problem("apiVersion", "is required".into());
    } else if ApiVersion::parse(&spec.api_version).is_none() {
        problem(
            "apiVersion",
            format!(
                "{:?} is not supported: credentialprovider.kubelet.k8s.io/v1, /v1beta1 or /v1alpha1",
                spec.api_version
            ),
        );
    }
    if spec.match_images.is_empty() {
        problem("matchImages", "at least one item is required".into());
    }
    for pattern in &spec.match_images {
        if let Err(why) = validate_match_image(pattern) {
            problem("matchImages", format!("{pattern:?} is invalid: {why}"));
        }
    }
    match spec.default_cache_duration.as_deref() {
        None => problem("defaultCacheDuration", "is required".into()),
        Some(text) => match parse_go_duration(text) {
            None => problem("defaultCacheDuration", format!("{text:?} is not a duration such as 10m or 1h30m")),
            Some(seconds) if seconds < 0.0 => problem("defaultCacheDuration", format!("{text:?} must be 0 or more")),
            Some(_) => {}
        },
    }
    for (index, var) in spec.env.iter().enumerate() {
        if var.name.is_empty() {
            problem(&format!("env[{index}].name"), "is required".into());
        }
    }
    if let Some(attributes) = &spec.token_attributes {
        validate_token_attributes(spec, attributes, problem);
    }
}

fn validate_token_attributes(
    spec: &ProviderSpec,
    attributes: &TokenAttributes,
    problem: &mut impl FnMut(&str, String),
) {
    let field = |name: &str| format!("tokenAttributes.{name}");
    if attributes.service_account_token_audience.is_empty() {
        problem(&field("serviceAccountTokenAudience"), "is required".into());
    }
    if attributes.require_service_account.is_none() {
        problem(&field("requireServiceAccount"), "is required".into());
    }
    if ApiVersion::parse(&spec.api_version) != Some(ApiVersion::V1) {
        problem(
            "tokenAttributes",
            format!(
                "is only supported with apiVersion credentialprovider.kubelet.k8s.io/v1, not {:?}",
                spec.api_version
            ),
        );
    }
    if attributes.require_service_account == Some(false)
        && !attributes.required_service_account_annotation_keys.is_empty()
    {
        problem(
            &field("requiredServiceAccountAnnotationKeys"),
            "requireServiceAccount cannot be false when requiredServiceAccountAnnotationKeys is set".into(),
        );
    }
    for (name, keys) in [
        ("requiredServiceAccountAnnotationKeys", &attributes.required_service_account_annotation_keys),
        ("optionalServiceAccountAnnotationKeys", &attributes.optional_service_account_annotation_keys),
    ] {
        let mut seen = BTreeSet::new();
        for key in keys {
            if let Err(why) = qualified_name(&key.to_ascii_lowercase()) {
                problem(&field(name), format!("{key:?} is not a valid annotation key: {why}"));
            }
            if !seen.insert(key) {
                problem(&field(name), format!("{key:?} is listed twice"));
            }
        }
    }
    let required: BTreeSet<&String> = attributes.required_service_account_annotation_keys.iter().collect();
    let optional: BTreeSet<&String> = attributes.optional_service_account_annotation_keys.iter().collect();
    let both: Vec<&&String> = optional.intersection(&required).collect();
    if !both.is_empty() {
        problem("tokenAttributes", format!("annotation keys cannot be both required and optional: {both:?}"));
    }
    match attributes.cache_type.as_str() {
        "" => problem(&field("cacheType"), "is required when tokenAttributes is set: ServiceAccount or Token".into()),
        "ServiceAccount" | "Token" => {}
        other => problem(&field("cacheType"), format!("{other:?} is not supported: ServiceAccount or Token")),
    }
}

/// What `url.Parse("https://" + pattern)` and the glob syntax accept.
fn validate_match_image(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("it is empty".into());
    }
    if pattern.contains("://") {
        return Err("it has a scheme; write host[:port][/path]".into());
    }
    if pattern.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        return Err("it contains spaces or control characters".into());
    }
    let authority = pattern.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err("it has no host".into());
    }
    if let Some((_, port)) = authority.rsplit_once(':')
        && (port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("{port:?} is not a port"));
    }
    if authority.matches('[').count() != authority.matches(']').count() {
        return Err("a character class is not closed".into());
    }
    Ok(())
}

/// Kubernetes' `IsQualifiedName`: an optional DNS-subdomain prefix and `/`,
/// then a name of at most 63 alphanumerics, `-`, `_`, `.`, starting and ending
/// alphanumeric.
fn qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if prefix.is_empty() || prefix.len() > 253 || !prefix.split('.').all(valid_label) {
            return Err(format!("the prefix {prefix:?} must be a DNS subdomain"));
        }
    }
    let inner = |b: u8| b.is_ascii_alphanumeric() || b"-_.".contains(&b);
    if name.is_empty()
        || name.len() > 63
        || !name.bytes().all(inner)
        || !name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !name.ends_with(|c: char| c.is_ascii_alphanumeric())
    {
        return Err(format!(
            "the name {name:?} must be 1 to 63 alphanumerics, '-', '_' or '.', starting and ending alphanumeric"
        ));
    }
    Ok(())
}

/// The line where the provider named `name` is written, to point at it.
fn line_of(text: &str, name: &str) -> Option<usize> {
    if name.is_empty() {
        return None;
    }
    text.lines()
        .position(|line| {
            let line = line.trim().trim_start_matches("- ").trim();
            line.strip_prefix("name:")
                .or_else(|| line.strip_prefix("\"name\":"))
                .is_some_and(|v| v.trim().trim_end_matches(',').trim_matches(['"', '\'']) == name)
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Vec<Provider>, Vec<ConfigError>> {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, text).expect("write");
        load(&path)
    }

    const GOOD: &str = "apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
  - name: ecr-credential-provider
    apiVersion: credentialprovider.kubelet.k8s.io/v1
    defaultCacheDuration: 12h
    matchImages:
      - \"*.dkr.ecr.*.amazonaws.com\"
";

    fn messages(result: Result<Vec<Provider>, Vec<ConfigError>>) -> String {
        result.expect_err("invalid").iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn accepts_a_good_config() {
        let providers = load_text(GOOD).expect("valid");
        assert_eq!(providers.len(), 1);
        assert_eq!(providers[0].default_cache_duration, Duration::from_secs(12 * 3600));
        assert_eq!(providers[0].line, Some(4));
    }

    #[test]
    fn unknown_and_mistyped_fields_are_fatal_with_their_line() {
        let errors = messages(load_text(&GOOD.replace("    matchImages:", "    matchImage:\n    matchImages:")));
        assert!(errors.contains("unknown field `matchImage`") && errors.contains(":7"), "{errors}");
        let errors = messages(load_text(&GOOD.replace("defaultCacheDuration: 12h", "defaultCacheDuration: [12h]")));
        assert!(errors.contains("config.yaml:6"), "{errors}");
    }

    #[test]
    fn the_kubelets_rules() {
        for (change, expect) in [
            (("name: ecr-credential-provider", "name: a/b"), "cannot contain '/'"),
            (("name: ecr-credential-provider", "name: .."), "cannot be '.' or '..'"),
            (("defaultCacheDuration: 12h", "defaultCacheDuration: -1m"), "must be 0 or more"),
            (("defaultCacheDuration: 12h", "defaultCacheDuration: soon"), "not a duration"),
            (("credentialprovider.kubelet.k8s.io/v1", "credentialprovider.kubelet.k8s.io/v2"), "not supported"),
            (("kubelet.config.k8s.io/v1", "kubelet.config.k8s.io/v2"), "apiVersion"),
            (("\"*.dkr.ecr.*.amazonaws.com\"", "\"https://x.io\""), "has a scheme"),
            (("\"*.dkr.ecr.*.amazonaws.com\"", "\"x.io:abc\""), "not a port"),
        ] {
            let errors = messages(load_text(&GOOD.replace(change.0, change.1)));
            assert!(errors.contains(expect), "{change:?}: {errors}");
        }
        let missing = GOOD.replace("    defaultCacheDuration: 12h\n", "");
        assert!(messages(load_text(&missing)).contains("defaultCacheDuration: is required"));
    }

    #[test]
    fn token_attributes_rules() {
        let with = |attributes: &str, version: &str| {
            GOOD.replace("credentialprovider.kubelet.k8s.io/v1", version) + "    tokenAttributes:\n" + attributes
        };
        let good = "      serviceAccountTokenAudience: sts.amazonaws.com\n      requireServiceAccount: false\n      cacheType: ServiceAccount\n      optionalServiceAccountAnnotationKeys:\n        - eks.amazonaws.com/ecr-role-arn\n";
        assert!(load_text(&with(good, "credentialprovider.kubelet.k8s.io/v1")).is_ok());
        assert!(
            messages(load_text(&with(good, "credentialprovider.kubelet.k8s.io/v1beta1")))
                .contains("only supported with apiVersion")
        );
        for (bad, expect) in [
            (good.replace("      cacheType: ServiceAccount\n", ""), "cacheType: is required"),
            (good.replace("ServiceAccount\n", "Pod\n"), "not supported"),
            (good.replace("      requireServiceAccount: false\n", ""), "requireServiceAccount: is required"),
            (
                good.replace("serviceAccountTokenAudience: sts.amazonaws.com", "serviceAccountTokenAudience: \"\""),
                "serviceAccountTokenAudience: is required",
            ),
            (good.replace("eks.amazonaws.com/ecr-role-arn", "-bad-/x"), "not a valid annotation key"),
            (
                good.to_string()
                    + "      requiredServiceAccountAnnotationKeys:\n        - eks.amazonaws.com/ecr-role-arn\n",
                "cannot be false",
            ),
        ] {
            let errors = messages(load_text(&with(&bad, "credentialprovider.kubelet.k8s.io/v1")));
            assert!(errors.contains(expect), "{expect}: {errors}");
        }
    }

    #[test]
    fn a_directory_is_merged_in_order_and_names_stay_unique() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("20-b.yaml"), GOOD.replace("ecr-credential-provider", "b")).expect("write");
        std::fs::write(dir.path().join("10-a.yml"), GOOD.replace("ecr-credential-provider", "a")).expect("write");
        std::fs::write(dir.path().join("notes.txt"), "ignored").expect("write");
        let names: Vec<String> = load(dir.path()).expect("valid").into_iter().map(|p| p.spec.name).collect();
        assert_eq!(names, ["a", "b"]);
        std::fs::write(dir.path().join("30-c.json"), serde_json::json!({
            "apiVersion": "kubelet.config.k8s.io/v1", "kind": "CredentialProviderConfig",
            "providers": [{ "name": "a", "apiVersion": "credentialprovider.kubelet.k8s.io/v1", "defaultCacheDuration": "1m", "matchImages": ["x.io"] }]
        }).to_string()).expect("write");
        assert!(messages(load(dir.path())).contains("duplicate provider name \"a\""));
    }
}
