//! Running a plugin binary the way the kubelet does, and judging its answers
//! the way the kubelet would.
//!
//! The kubelet execs the plugin with the request on stdin, reads stdout, and
//! since 1.32 decodes it strictly: an unknown, duplicate or wrong-case field
//! discards the whole response. The checks here are written independently of
//! the core's encoder, from the kubelet's rules, so that a bug in one is not
//! mirrored in the other.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use credential_provider::matching::RegistryPattern;
use credential_provider::protocol::ApiVersion;
pub use credential_provider::protocol::parse_go_duration;
use kubelet_simulator::wire::decode_response;
pub use kubelet_simulator::wire::{KubeletAuth, KubeletResponse};

/// A plugin binary with the environment it runs in and a private cache.
#[derive(Debug)]
pub struct PluginUnderTest {
    binary: PathBuf,
    env: Vec<(String, String)>,
    cache: tempfile::TempDir,
    home: tempfile::TempDir,
}

/// What one exec produced.
#[derive(Debug)]
pub struct Exec {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Exec {
    /// Waits for a spawned plugin and collects what it printed.
    pub fn wait(child: Child) -> Exec {
        let output = child.wait_with_output().expect("wait for plugin");
        Exec {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

/// The variable that points the tests at other builds of the binaries: a
/// directory holding a file of the same name (the release's static binaries,
/// or wrappers that run them in an empty root or under qemu) replaces the
/// one Cargo built. `scripts/check-release` sets it.
pub const BIN_DIR_VARIABLE: &str = "CREDENTIAL_PROVIDER_TEST_BIN_DIR";

/// The variable that says the binaries under test are Windows executables
/// (run under wine by [`BIN_DIR_VARIABLE`]'s wrappers): `windows`. The
/// checks of what only Linux has (modes, FIFOs, uids) then check Windows'
/// counterpart, as wine shows it.
pub const TARGET_VARIABLE: &str = "CREDENTIAL_PROVIDER_TEST_TARGET";

/// Whether the binaries under test are Windows executables.
pub fn testing_windows_binaries() -> bool {
    std::env::var(TARGET_VARIABLE).is_ok_and(|target| target == "windows")
}

/// `binary`, or its namesake in [`BIN_DIR_VARIABLE`]'s directory.
pub fn binary_under_test(binary: PathBuf) -> PathBuf {
    let replacement = std::env::var_os(BIN_DIR_VARIABLE)
        .filter(|dir| !dir.is_empty())
        .and_then(|dir| binary.file_name().map(|name| Path::new(&dir).join(name)))
        .filter(|path| path.is_file());
    replacement.unwrap_or(binary)
}

/// The directory of the running executable, where Cargo also puts the plugin
/// binaries of the same build (for the demo and the benchmark).
pub fn sibling_binaries(fallback: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from(fallback))
}

/// A service account as the kubelet sends it (KEP-4412).
#[derive(Clone, Debug, Default)]
pub struct TestServiceAccount {
    pub token: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

impl PluginUnderTest {
    /// The plugin at `binary`, with an empty environment but for `PATH`, a
    /// throw-away `HOME` (no developer's cloud config leaks in) and a private
    /// cache directory.
    pub fn new(binary: impl Into<PathBuf>) -> PluginUnderTest {
        PluginUnderTest {
            binary: binary_under_test(binary.into()),
            env: Vec::new(),
            cache: tempfile::tempdir().expect("cache dir"),
            home: tempfile::tempdir().expect("home dir"),
        }
    }

    /// The same environment, cache and home, running `program` instead (a
    /// wrapper such as GNU time, given the plugin in its arguments).
    pub fn with_program(&self, program: &Path) -> PluginUnderTest {
        let mut other = PluginUnderTest::new(program).with_env(self.env.clone());
        other.set_env("CREDENTIAL_PROVIDER_CACHE_DIR", &self.cache_dir().display().to_string());
        other.set_env("HOME", &self.home().display().to_string());
        other
    }

    /// The same plugin and environment with a new, empty cache.
    pub fn with_fresh_cache(&self) -> PluginUnderTest {
        let env = self.env.iter().filter(|(k, _)| k != "CREDENTIAL_PROVIDER_CACHE_DIR").cloned();
        let mut other = PluginUnderTest::new(&self.binary).with_env(env.collect::<Vec<_>>());
        if !other.env.iter().any(|(k, _)| k == "HOME") {
            other.set_env("HOME", &self.home().display().to_string());
        }
        other
    }

    /// The plugin binary.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Adds environment variables.
    pub fn with_env<K: Into<String>, V: Into<String>>(mut self, vars: impl IntoIterator<Item = (K, V)>) -> Self {
        self.env.extend(vars.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// Sets one environment variable, replacing an earlier value.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// The environment given on top of `PATH`, `HOME` and the cache directory.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// The cache directory the plugin uses (created on its first run).
    pub fn cache_dir(&self) -> PathBuf {
        self.cache.path().join("cache")
    }

    pub fn home(&self) -> &Path {
        self.home.path()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.home.path())
            .env("CREDENTIAL_PROVIDER_CACHE_DIR", self.cache_dir())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Starts the plugin with `stdin` written and closed; the caller waits.
    pub fn spawn(&self, args: &[&str], stdin: &[u8]) -> Child {
        let mut child = self.command(args).spawn().expect("spawn plugin");
        let mut pipe = child.stdin.take().expect("stdin");
        // A plugin that refuses early may close stdin before reading it all.
        let _ = pipe.write_all(stdin);
        drop(pipe);
        child
    }

    /// Starts the plugin and keeps its stdin open, as a caller that never
    /// closes its end would (a CI job's inherited pipe).
    pub fn spawn_holding_stdin(&self, args: &[&str]) -> (Child, ChildStdin) {
        let mut child = self.command(args).spawn().expect("spawn plugin");
        let stdin = child.stdin.take().expect("stdin");
        (child, stdin)
    }

    /// Runs the plugin to completion.
    pub fn exec(&self, args: &[&str], stdin: &[u8]) -> Exec {
        Exec::wait(self.spawn(args, stdin))
    }

    /// Runs the plugin to completion in the working directory `dir`, with
    /// nothing on stdin.
    pub fn exec_in(&self, dir: &Path, args: &[&str]) -> Exec {
        let child = self.command(args).current_dir(dir).stdin(Stdio::null()).spawn().expect("spawn plugin");
        Exec::wait(child)
    }

    /// Starts `count` plugins at once, as the kubelet does at node boot, and
    /// waits for them all.
    pub fn exec_together(&self, count: usize, args: &[&str], stdin: &[u8]) -> Vec<Exec> {
        let children: Vec<Child> = (0..count).map(|_| self.spawn(args, stdin)).collect();
        children.into_iter().map(Exec::wait).collect()
    }

    /// Sends one request on stdin, as the kubelet does.
    pub fn request(&self, request: &str) -> Exec {
        self.exec(&[], request.as_bytes())
    }
}

/// `check --image IMAGE --output json` as the pod's service account `sa`
/// (its token in a file, its annotations as flags), with `args` before the
/// subcommand: the exec, and its report (`Null` when there is none).
pub fn check_as_service_account(
    plugin: &PluginUnderTest,
    args: &[&str],
    image: &str,
    sa: &TestServiceAccount,
) -> (Exec, serde_json::Value) {
    let dir = tempfile::tempdir().expect("a directory for the token");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, sa.token.as_deref().unwrap_or_default()).expect("token file");
    let token_file = token_file.display().to_string();
    let annotations: Vec<String> = sa.annotations.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["check", "--image", image, "--output", "json", "--service-account-token-file", &token_file]);
    for annotation in &annotations {
        all.extend(["--service-account-annotation", annotation.as_str()]);
    }
    let exec = plugin.exec(&all, b"");
    let report = serde_json::from_str(&exec.stdout).unwrap_or_default();
    (exec, report)
}

/// A request as the kubelet writes it. `unknown_fields` adds fields a later
/// kubelet might send, which a plugin must ignore.
pub fn request_json(
    version: ApiVersion,
    image: &str,
    service_account: Option<&TestServiceAccount>,
    unknown_fields: bool,
) -> String {
    let mut request = serde_json::json!({
        "kind": "CredentialProviderRequest",
        "apiVersion": version.as_str(),
        "image": image,
    });
    if let Some(sa) = service_account {
        if let Some(token) = &sa.token {
            request["serviceAccountToken"] = token.clone().into();
        }
        request["serviceAccountAnnotations"] = serde_json::to_value(&sa.annotations).expect("annotations");
    }
    if unknown_fields {
        request["someFutureField"] = serde_json::json!({ "nested": [1, 2, 3] });
        request["anotherOne"] = "x".into();
    }
    request.to_string()
}

/// Asserts the kubelet would accept this exec's answer for `image`, and that
/// no secret reached stderr. Returns the decoded response.
pub fn expect_accepted(exec: &Exec, version: ApiVersion, image: &str, secrets: &[String]) -> KubeletResponse {
    assert_eq!(exec.code, Some(0), "exit code; stderr: {}", exec.stderr);
    expect_no_secrets(&exec.stderr, secrets);
    // The kubelet's own reading: one document, the request's apiVersion, strict fields.
    let response = decode_response(&exec.stdout, version)
        .unwrap_or_else(|e| panic!("the kubelet would reject {:?}: {e}", exec.stdout));
    if let Some(duration) = &response.cache_duration {
        assert!(response.cache_seconds() >= 0.0, "negative cacheDuration {duration}");
    }
    assert!(!response.auth.is_empty(), "an empty auth would be cached by the kubelet as 'no credentials'");
    for (key, auth) in &response.auth {
        assert!(
            !key.contains(['*', '?', '[']),
            "auth key {key} is a wildcard that would hand the secret to other registries"
        );
        assert!(
            RegistryPattern::parse_auth_key(key).matches(image),
            "auth key {key} does not match {image} by the kubelet's rules"
        );
        assert!(!auth.username.is_empty() && !auth.password.is_empty(), "empty credential under {key}");
    }
    response
}

/// Asserts the exec failed the way bad input must: a non-zero exit, nothing on
/// stdout, exactly one line on stderr naming the binary, and no secret.
pub fn expect_rejected(exec: &Exec, secrets: &[String]) {
    assert_ne!(exec.code, Some(0), "must fail; stdout: {}", exec.stdout);
    assert!(exec.code.is_some(), "killed by a signal (a panic?); stderr: {}", exec.stderr);
    assert_eq!(exec.stdout, "", "nothing may reach stdout on failure");
    let lines: Vec<&str> = exec.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr, got: {:?}", exec.stderr);
    assert!(lines[0].contains(": error: "), "stderr: {}", lines[0]);
    expect_no_secrets(&exec.stderr, secrets);
}

/// Asserts none of `secrets` appears in `text`.
pub fn expect_no_secrets(text: &str, secrets: &[String]) {
    for secret in secrets.iter().filter(|s| s.len() >= 6) {
        assert!(!text.contains(secret.as_str()), "a secret reached stderr: {text}");
    }
}

/// Runs every request shape the kubelet may send for `image` (each apiVersion,
/// with and without unknown fields, and on v1 with the service account when
/// given) and asserts each answer is accepted. `secrets` is asked after the
/// runs, so it sees what the fake clouds issued meanwhile.
pub fn run_conformance(
    plugin: &PluginUnderTest,
    image: &str,
    service_account: Option<&TestServiceAccount>,
    secrets: impl Fn() -> Vec<String>,
) -> Vec<KubeletResponse> {
    let mut responses = Vec::new();
    for version in ApiVersion::ALL {
        for unknown_fields in [false, true] {
            // Older versions have no service-account fields: sent anyway, they
            // are unknown fields that must be ignored.
            for sa in [None, service_account] {
                if sa.is_none() && service_account.is_some() && version == ApiVersion::V1 {
                    continue;
                }
                let request = request_json(version, image, sa, unknown_fields);
                // At the highest verbosity: whatever is logged, no secret.
                let exec = plugin.exec(&["-vvv"], request.as_bytes());
                responses.push(expect_accepted(&exec, version, image, &secrets()));
            }
        }
    }
    responses
}
