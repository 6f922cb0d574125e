//! What the kubelet does for one image: which providers match, which it runs
//! (and with what), how it reads their answers, and which credentials it then
//! tries, in its order, and for how long it caches them.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use credential_provider::matching::RegistryPattern;
use serde::Serialize;

use crate::wire::{KubeletRequest, KubeletResponse, decode_response};
use kubelet_config::Provider;

/// The kubelet's hard limit on one plugin exec.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// The pod's service account, as the kubelet would know it.
#[derive(Debug, Default)]
pub struct ServiceAccountInput {
    /// `namespace/name`; none for a pod without one (static pods).
    pub name: Option<String>,
    /// The token the kubelet would request for the provider's audience.
    pub token: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

/// What became of one provider.
#[derive(Debug, Serialize)]
#[serde(tag = "result", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum ProviderOutcome {
    /// No `matchImages` entry matches the image.
    NotMatched,
    /// Matched, but the kubelet would not run it.
    Skipped { reason: String },
    /// Ran and failed: what the kubelet would log.
    Failed { kubelet_log: String, exit_code: Option<i32>, elapsed_ms: u64, stderr: String },
    /// Ran and answered acceptably.
    Answered {
        cache_key_type: String,
        /// Where the kubelet files it in its cache.
        kubelet_cache_key: String,
        /// How long the kubelet keeps it; `None`: not cached.
        kubelet_cache_seconds: Option<u64>,
        elapsed_ms: u64,
        stderr: String,
        #[serde(skip)]
        response: Box<KubeletResponse>,
    },
}

/// One provider's line in the report.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderReport {
    pub name: String,
    pub api_version: String,
    #[serde(flatten)]
    pub outcome: ProviderOutcome,
}

/// A credential the kubelet would try, in order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TriedCredential {
    pub provider: String,
    pub auth_key: String,
    pub username: String,
    pub password: String,
    pub kubelet_cache_seconds: Option<u64>,
}

/// The whole simulation.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Simulation {
    pub image: String,
    pub providers: Vec<ProviderReport>,
    pub credentials: Vec<TriedCredential>,
}

impl Simulation {
    /// Whether every provider that ran answered, and some credential is tried.
    pub fn succeeded(&self) -> bool {
        !self.credentials.is_empty()
            && !self.providers.iter().any(|p| matches!(p.outcome, ProviderOutcome::Failed { .. }))
    }
}

/// Runs what the kubelet runs for `image` (its normalized form, as the kubelet
/// sends it), with the plugins in `bin_dir`.
pub fn simulate(
    providers: &[Provider],
    bin_dir: &Path,
    image: &str,
    service_account: &ServiceAccountInput,
    timeout: Duration,
    show_secrets: bool,
) -> Simulation {
    let reports: Vec<ProviderReport> = providers
        .iter()
        .map(|provider| ProviderReport {
            name: provider.spec.name.clone(),
            api_version: provider.api_version.as_str().to_string(),
            outcome: run_provider(provider, bin_dir, image, service_account, timeout),
        })
        .collect();
    let answers: Vec<_> = reports
        .iter()
        .filter_map(|report| match &report.outcome {
            ProviderOutcome::Answered { response, kubelet_cache_seconds, .. } => {
                Some((&report.name, response, *kubelet_cache_seconds))
            }
            _ => None,
        })
        .collect();
    let tried = |default_registry: bool| -> Vec<TriedCredential> {
        let mut tried = Vec::new();
        for (provider, response, kubelet_cache_seconds) in &answers {
            for key in keyring_lookup(response.auth.keys(), image, default_registry) {
                let auth = &response.auth[key];
                tried.push(TriedCredential {
                    provider: (*provider).clone(),
                    auth_key: key.clone(),
                    username: auth.username.clone(),
                    password: if show_secrets { auth.password.clone() } else { redacted(&auth.password) },
                    kubelet_cache_seconds: *kubelet_cache_seconds,
                });
            }
        }
        tried
    };
    // Only when no key matches at all does the kubelet fall back to Docker
    // Hub's credentials, for an image that Docker Hub serves.
    let mut credentials = tried(false);
    if credentials.is_empty() {
        credentials = tried(true);
    }
    Simulation { image: image.to_string(), providers: reports, credentials }
}

/// The kubelet's keyring over one provider's auth keys: with `default_registry`
/// false, the keys that match `image` by the glob rules, the most specific
/// (reverse lexical) first; with it true, the keys that name Docker Hub's
/// default registry, if `image` is one Docker Hub serves.
fn keyring_lookup<'a>(keys: impl Iterator<Item = &'a String>, image: &str, default_registry: bool) -> Vec<&'a String> {
    let mut found: Vec<&String> = if default_registry {
        if !is_default_registry_image(image) {
            return Vec::new();
        }
        keys.filter(|key| keyring_key(key) == DEFAULT_REGISTRY_HOST).collect()
    } else {
        keys.filter(|key| RegistryPattern::parse_auth_key(key).matches(image)).collect()
    };
    found.sort_by(|a, b| b.cmp(a));
    found
}

/// The host under which the kubelet's keyring files Docker Hub's credentials.
const DEFAULT_REGISTRY_HOST: &str = "index.docker.io";

/// An auth key as the kubelet's keyring files it: no scheme, and a `/v1/` or
/// `/v2/` path (or none) meaning the whole host (`https://index.docker.io/v1/`
/// is `index.docker.io`).
fn keyring_key(key: &str) -> &str {
    let key = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    let (host, path) = key.find('/').map_or((key, ""), |slash| key.split_at(slash));
    let path = if path.starts_with("/v1/") || path.starts_with("/v2/") { &path[3..] } else { path };
    if path.is_empty() || path == "/" { host } else { key }
}

/// Whether Docker Hub serves `image`, by the kubelet's reading of its name:
/// no registry host in front (`foo`, `foo/bar`: a first part with no `.` or
/// `:`), or `docker.io` or `index.docker.io` in front.
fn is_default_registry_image(image: &str) -> bool {
    let (first, rest) = image.split_once('/').map_or((image, None), |(first, rest)| (first, Some(rest)));
    match rest {
        _ if first.is_empty() => false,
        None => true,
        Some(_) => first == "docker.io" || first == DEFAULT_REGISTRY_HOST || !first.contains(['.', ':']),
    }
}

fn redacted(secret: &str) -> String {
    format!("[redacted: {} characters]", secret.chars().count())
}

fn run_provider(
    provider: &Provider,
    bin_dir: &Path,
    image: &str,
    service_account: &ServiceAccountInput,
    timeout: Duration,
) -> ProviderOutcome {
    let spec = &provider.spec;
    if !provider.matches(image) {
        return ProviderOutcome::NotMatched;
    }
    // KEP-4412: what the kubelet sends, if anything, about the service account.
    let mut token = None;
    let mut annotations = None;
    let mut sa_cache_key = String::new();
    if let Some(attributes) = &spec.token_attributes {
        match &service_account.name {
            None if attributes.require_service_account == Some(true) => {
                return ProviderOutcome::Skipped {
                    reason: "the provider requires a service account and the pod has none (the kubelet returns no credentials)"
                        .into(),
                };
            }
            None => {}
            Some(name) => {
                let mut sent = BTreeMap::new();
                for key in &attributes.required_service_account_annotation_keys {
                    match service_account.annotations.get(key) {
                        Some(value) => {
                            sent.insert(key.clone(), value.clone());
                        }
                        None => {
                            return ProviderOutcome::Skipped {
                                reason: format!(
                                    "the service account lacks the required annotation {key} (the kubelet does not run the plugin)"
                                ),
                            };
                        }
                    }
                }
                for key in &attributes.optional_service_account_annotation_keys {
                    if let Some(value) = service_account.annotations.get(key) {
                        sent.insert(key.clone(), value.clone());
                    }
                }
                let Some(sa_token) = &service_account.token else {
                    return ProviderOutcome::Skipped {
                        reason: format!(
                            "the kubelet would send a token for audience {:?}: pass --service-account-token-file",
                            attributes.service_account_token_audience
                        ),
                    };
                };
                sa_cache_key = match attributes.cache_type.as_str() {
                    "Token" => format!(" + token sha256:{}", sha256_hex(sa_token)),
                    _ => format!(" + service account {name} and its annotations"),
                };
                token = Some(sa_token.as_str());
                annotations = Some(sent);
            }
        }
    }
    let request = KubeletRequest::new(provider.api_version, image, token, annotations.as_ref()).to_json();
    let binary = kubelet_config::plugin_path(bin_dir, &spec.name);
    let started = Instant::now();
    let exec = match run(&binary, &spec.args, &spec.env, &request, timeout) {
        Ok(exec) => exec,
        Err(why) => {
            return ProviderOutcome::Failed {
                kubelet_log: format!("error execing credential provider plugin {} for image {image}: {why}", spec.name),
                exit_code: None,
                elapsed_ms: elapsed_ms(started),
                stderr: String::new(),
            };
        }
    };
    let elapsed = elapsed_ms(started);
    let scrub = |text: &str| match token {
        Some(token) if token.len() >= 6 => text.replace(token, "[service-account token]"),
        _ => text.to_string(),
    };
    let stderr = scrub(exec.stderr.trim_end());
    let fail = |log: String, stderr: String| ProviderOutcome::Failed {
        kubelet_log: format!("Failed getting credential from external registry credential provider: {log}"),
        exit_code: exec.code,
        elapsed_ms: elapsed,
        stderr,
    };
    if exec.timed_out {
        return fail(
            format!(
                "error execing credential provider plugin {} for image {image}: context deadline exceeded (after {}s)",
                spec.name,
                timeout.as_secs()
            ),
            stderr,
        );
    }
    if exec.code != Some(0) {
        let status = exec.code.map_or_else(|| "signal: killed".to_string(), |c| format!("exit status {c}"));
        return fail(
            format!("error execing credential provider plugin {} for image {image}: {status}: {stderr}", spec.name),
            stderr,
        );
    }
    let response = match decode_response(&exec.stdout, provider.api_version) {
        Ok(response) => response,
        Err(e) => return fail(e.to_string(), stderr),
    };
    if let Some(token) = token
        && response.auth.values().any(|auth| auth.password == token)
    {
        return fail(
            "the response echoes the service-account token as a password: a plugin must never hand it back".into(),
            stderr,
        );
    }
    let kubelet_cache_key = match response.cache_key_type.as_str() {
        "Image" => image.to_string(),
        "Registry" => image.split('/').next().unwrap_or_default().to_string(),
        _ => "global".to_string(),
    } + &sa_cache_key;
    let kubelet_cache_seconds = match &response.cache_duration {
        Some(_) if response.cache_seconds() <= 0.0 => None,
        Some(_) => Some(response.cache_seconds() as u64),
        None if provider.default_cache_duration.is_zero() => None,
        None => Some(provider.default_cache_duration.as_secs()),
    };
    ProviderOutcome::Answered {
        cache_key_type: response.cache_key_type.clone(),
        kubelet_cache_key,
        kubelet_cache_seconds,
        elapsed_ms: elapsed,
        stderr,
        response: Box::new(response),
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A finished exec.
pub(crate) struct Exec {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) timed_out: bool,
}

/// Runs `binary` as the kubelet does: its args, the kubelet's environment with
/// the config's `env` on top, the request on stdin, killed after `timeout`.
pub(crate) fn run(
    binary: &Path,
    args: &[String],
    env: &[kubelet_config::EnvVar],
    stdin: &str,
    timeout: Duration,
) -> Result<Exec, String> {
    if !binary.is_file() {
        return Err(format!("plugin binary executable {} did not exist", binary.display()));
    }
    let mut child = Command::new(binary)
        .args(args)
        .envs(env.iter().map(|v| (v.name.as_str(), v.value.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let request = stdin.as_bytes().to_vec();
    let mut pipe = child.stdin.take();
    let writer = std::thread::spawn(move || {
        if let Some(pipe) = pipe.as_mut() {
            let _ = pipe.write_all(&request);
        }
    });
    let reader = |stream: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut stream) = stream {
                let _ = stream.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = reader(child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let stderr = reader(child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>));
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(e.to_string()),
        }
    };
    let _ = writer.join();
    Ok(Exec {
        code: status.and_then(|s| s.code()),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        timed_out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_images_as_the_kubelet_reads_them() {
        for image in ["foo", "foo/bar", "docker.io/foo/bar", "index.docker.io/foo/bar", "localhost/foo"] {
            assert!(is_default_registry_image(image), "{image}");
        }
        for image in ["", "registry.tld/foo/bar", "registry:5000/foo/bar", "myhostdocker.io/foo/bar", "/foo"] {
            assert!(!is_default_registry_image(image), "{image}");
        }
    }

    #[test]
    fn docker_hub_keys_serve_every_docker_hub_spelling_when_nothing_else_matches() {
        let keys: Vec<String> =
            ["https://index.docker.io/v1/", "index.docker.io", "http://index.docker.io/v2/", "quay.io"]
                .map(String::from)
                .to_vec();
        for image in ["foo", "foo/bar", "docker.io/foo/bar", "index.docker.io/foo/bar", "docker.io/library/nginx"] {
            assert!(keyring_lookup(keys.iter(), image, false).iter().all(|k| k.contains("index.docker.io")));
            let fallback = keyring_lookup(keys.iter(), image, true);
            assert_eq!(fallback.len(), 3, "{image}: {fallback:?}");
        }
        assert!(keyring_lookup(keys.iter(), "quay.io/foo", true).is_empty(), "not Docker Hub's image");
        let docker_io = ["docker.io".to_string(), "index.docker.io/team".to_string()];
        assert_eq!(keyring_lookup(docker_io.iter(), "docker.io/foo/bar", false), vec!["docker.io"]);
        assert!(keyring_lookup(docker_io.iter(), "foo/bar", true).is_empty(), "only the whole host is the default");
    }
}
