//! Running a plugin as a docker credential helper, the way docker, podman and
//! skopeo do (`docker-credential-NAME get`, the server URL on stdin), and
//! judging its answers by the rules of their client library: a `get` answer
//! is one JSON object with exactly `ServerURL`, `Username` and `Secret`; "no
//! credentials here" is exactly "credentials not found in native keychain"
//! on stdout with a non-zero exit; any other error is a line on stdout.
//! Written from those rules, not from the core's encoder.

use std::fs;

use serde::Deserialize;

use crate::conformance::{Exec, PluginUnderTest, expect_no_secrets, request_json};
use credential_provider::protocol::ApiVersion;
use kubelet_simulator::wire::decode_response;

/// What clients compare stdout with to tell "no credentials here".
pub const NOT_FOUND: &str = "credentials not found in native keychain";

/// A plugin linked as `docker-credential-NAME`, sharing its cache and
/// environment.
#[derive(Debug)]
pub struct Helper {
    run: PluginUnderTest,
    /// Holds the link.
    _dir: tempfile::TempDir,
}

impl Helper {
    /// Links `docker-credential-<name>` to `plugin`'s binary in a directory
    /// of its own.
    pub fn link(plugin: &PluginUnderTest, name: &str) -> Helper {
        let dir = tempfile::tempdir().expect("link dir");
        let link = dir.path().join(format!("docker-credential-{name}"));
        let target = fs::canonicalize(plugin.binary()).expect("plugin binary");
        std::os::unix::fs::symlink(target, &link).expect("symlink");
        Helper { run: plugin.with_program(&link), _dir: dir }
    }

    /// One operation, with `input` on stdin, as clients run it.
    pub fn exec(&self, operation: &str, input: &str) -> Exec {
        self.run.exec(&[operation], input.as_bytes())
    }
}

/// A `get` answer, read as docker's client library reads it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelperCredential {
    #[serde(rename = "ServerURL")]
    pub server_url: String,
    #[serde(rename = "Username")]
    pub username: String,
    #[serde(rename = "Secret")]
    pub secret: String,
}

/// Asserts `exec` answered `get` for `server_url` with a credential, and that
/// no secret reached stderr.
pub fn expect_credential(exec: &Exec, server_url: &str, secrets: &[String]) -> HelperCredential {
    assert_eq!(exec.code, Some(0), "get {server_url}: stdout {:?}, stderr {:?}", exec.stdout, exec.stderr);
    expect_no_secrets(&exec.stderr, secrets);
    assert_eq!(exec.stdout.lines().count(), 1, "one JSON line: {:?}", exec.stdout);
    let credential: HelperCredential =
        serde_json::from_str(&exec.stdout).unwrap_or_else(|e| panic!("not a helper answer: {e}: {:?}", exec.stdout));
    assert_eq!(credential.server_url, server_url, "ServerURL echoes the request");
    assert!(!credential.username.is_empty() && !credential.secret.is_empty(), "empty credential");
    credential
}

/// Asserts `exec` said "no credentials here" as clients recognize it.
pub fn expect_not_found(exec: &Exec) {
    assert_eq!(exec.code, Some(1), "stdout {:?}, stderr {:?}", exec.stdout, exec.stderr);
    assert_eq!(exec.stdout.trim_end(), NOT_FOUND);
}

/// Asserts `exec` failed with one line on stdout that is not "not found",
/// naming no secret anywhere; returns that line.
pub fn expect_helper_error(exec: &Exec, secrets: &[String]) -> String {
    assert!(exec.code.is_some_and(|code| code != 0), "must fail; stdout {:?}", exec.stdout);
    let lines: Vec<&str> = exec.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stdout, where clients read errors: {:?}", exec.stdout);
    assert_ne!(lines[0], NOT_FOUND, "an error is not 'no credentials here'");
    expect_no_secrets(&exec.stdout, secrets);
    expect_no_secrets(&exec.stderr, secrets);
    lines[0].to_string()
}

/// The protocol through `plugin` linked as a helper, for `image` (which it
/// serves): `version`, `get` under every spelling of the server URL, the
/// same credential as a kubelet exec from the same cache, `list`, "not
/// found" for registries it does not serve, and `store`/`erase` taken and
/// dropped (so that `docker login` still works) without changing what `get` answers.
/// `secrets` is asked after the runs, so it sees what the fake clouds issued.
pub fn run_protocol(plugin: &PluginUnderTest, image: &str, secrets: impl Fn() -> Vec<String>) -> HelperCredential {
    let host = image.split('/').next().expect("host").to_string();
    let helper = Helper::link(plugin, "test");

    let version = helper.exec("version", "");
    assert_eq!(version.code, Some(0), "{version:?}");
    assert!(version.stdout.starts_with("docker-credential-test ("), "{:?}", version.stdout);

    let first = expect_credential(&helper.exec("get", &host), &host, &secrets());
    for server_url in [format!("https://{host}"), format!("https://{host}/v2/\n"), host.to_uppercase()] {
        let again = expect_credential(&helper.exec("get", &server_url), server_url.trim(), &secrets());
        assert_eq!((&again.username, &again.secret), (&first.username, &first.secret), "{server_url}");
    }

    // The kubelet's exec reads the credential the helper cached, and the
    // other way round: one cache for both.
    let exec = plugin.exec(&[], request_json(ApiVersion::V1, image, None, false).as_bytes());
    assert_eq!(exec.code, Some(0), "{}", exec.stderr);
    let response = decode_response(&exec.stdout, ApiVersion::V1).expect("kubelet response");
    let auth = response.auth.get(&host).expect("auth for the host");
    assert_eq!((&auth.username, &auth.password), (&first.username, &first.secret), "one cache for both sides");

    let list = helper.exec("list", "");
    assert_eq!(list.code, Some(0), "{list:?}");
    let listed: std::collections::BTreeMap<String, String> = serde_json::from_str(&list.stdout).expect("list JSON");
    assert_eq!(listed.get(&host), Some(&first.username), "{listed:?}");

    for unserved in ["https://index.docker.io/v1/", "quay.io", "localhost:5000", "", "not a url"] {
        expect_not_found(&helper.exec("get", unserved));
    }

    // A configuration error is the protocol's error too: on stdout.
    let mut misconfigured = plugin.with_fresh_cache();
    misconfigured.set_env("CREDENTIAL_PROVIDER_ENDPOINTS", "not-a-mapping");
    let line = expect_helper_error(&Helper::link(&misconfigured, "test").exec("get", &host), &secrets());
    assert!(line.contains("CREDENTIAL_PROVIDER_ENDPOINTS"), "{line}");

    // `docker login` and `docker logout` call these: they succeed and change nothing.
    let stored = format!(r#"{{"ServerURL":"{host}","Username":"u","Secret":"store-secret-0451"}}"#);
    let mut dropped_secrets = secrets();
    dropped_secrets.push("store-secret-0451".into());
    for (operation, input) in [("store", stored.as_str()), ("erase", host.as_str())] {
        let exec = helper.exec(operation, input);
        assert_eq!((exec.code, exec.stdout.as_str()), (Some(0), ""), "{operation}: {exec:?}");
        expect_no_secrets(&exec.stderr, &dropped_secrets);
        let after = expect_credential(&helper.exec("get", &host), &host, &secrets());
        assert_eq!((&after.username, &after.secret), (&first.username, &first.secret), "{operation} changed nothing");
    }
    first
}

/// `get` when the cloud fails (the caller broke it): an error line on
/// stdout, the cloud's exit code, no secret, and no credential.
pub fn expect_cloud_failure(plugin: &PluginUnderTest, host: &str, secrets: &[String]) {
    let helper = Helper::link(&plugin.with_fresh_cache(), "test");
    let exec = helper.exec("get", host);
    let line = expect_helper_error(&exec, secrets);
    assert_eq!(exec.code, Some(2), "a cloud failure: {line}");
}

/// What [`check_all`] runs a plugin's helper against.
pub struct Subject<'a> {
    pub plugin: &'a PluginUnderTest,
    /// An image of a registry the plugin serves.
    pub image: &'a str,
    /// What the fake clouds issued so far.
    pub secrets: &'a dyn Fn() -> Vec<String>,
    /// Makes the cloud refuse every call from then on.
    pub break_cloud: &'a dyn Fn(),
}

impl std::fmt::Debug for Subject<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subject").field("image", &self.image).finish_non_exhaustive()
    }
}

/// The protocol ([`run_protocol`]) and, once the cloud is broken, a cloud
/// failure.
pub fn check_all(subject: &Subject) {
    run_protocol(subject.plugin, subject.image, subject.secrets);
    (subject.break_cloud)();
    let host = subject.image.split('/').next().expect("host");
    expect_cloud_failure(subject.plugin, host, &(subject.secrets)());
}

/// `install-docker-helper` through the plugin: it links the helper and adds
/// `credHelpers` entries for `hosts` (which it serves) to a config that has
/// other settings, keeping them; it refuses `unserved` and a helper name
/// that is another program's, changing nothing.
pub fn run_install(plugin: &PluginUnderTest, hosts: &[&str], unserved: &str) {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("docker").join("config.json");
    fs::create_dir_all(config.parent().expect("parent")).expect("mkdir");
    // Every other member as written: its order, a number no float holds, an escape.
    let original = r#"{"zzz":"first","auths":{"quay.io":{"auth":"dTpw"}},"big":123456789012345678901234567890,
        "credsStore":"pass","note":"caf\u00e9","credHelpers":{"existing.example":"theirs"}}"#;
    fs::write(&config, original).expect("write config");
    let bin = dir.path().join("bin");
    let config_arg = config.display().to_string();
    let bin_arg = bin.display().to_string();

    let mut args = vec!["install-docker-helper", "--config", &config_arg, "--bin-dir", &bin_arg, "--helper", "mine"];
    args.extend(hosts);
    let exec = plugin.exec(&args, b"");
    assert_eq!(exec.code, Some(0), "{exec:?}");
    let text = fs::read_to_string(&config).expect("read");
    let written: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(written["auths"]["quay.io"]["auth"], "dTpw");
    assert_eq!(written["credsStore"], "pass");
    assert_eq!(written["credHelpers"]["existing.example"], "theirs");
    assert!(text.contains("123456789012345678901234567890") && text.contains(r"caf\u00e9"), "{text}");
    let order: Vec<usize> =
        ["\"zzz\"", "\"auths\"", "\"big\"", "\"credsStore\"", "\"note\"", "\"credHelpers\"", "existing.example"]
            .iter()
            .map(|key| text.find(key).unwrap_or_else(|| panic!("{key} in {text}")))
            .collect();
    assert!(order.windows(2).all(|pair| pair[0] < pair[1]), "keys keep their order: {text}");
    for host in hosts {
        assert_eq!(written["credHelpers"][host], "mine", "{written}");
    }
    let link = bin.join("docker-credential-mine");
    assert_eq!(fs::canonicalize(&link).expect("link"), fs::canonicalize(plugin.binary()).expect("binary"));
    assert!(exec.stdout.contains("added"), "{}", exec.stdout);

    assert!(exec.stderr.contains("is not on PATH"), "the test's bin dir is not: {}", exec.stderr);

    // Again: nothing to change, and it says so.
    let again = plugin.exec(&args, b"");
    assert_eq!(again.code, Some(0), "{again:?}");
    assert!(again.stdout.contains("already") && !again.stdout.contains("added"), "{}", again.stdout);

    // A relative --bin-dir is on PATH when the directory it names is, and only then.
    let mut on_path = plugin.with_fresh_cache();
    on_path.set_env("PATH", &format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()));
    let relative = ["install-docker-helper", "--config", &config_arg, "--helper", "mine", "--bin-dir", "bin", hosts[0]];
    let exec = on_path.exec_in(dir.path(), &relative);
    assert_eq!(exec.code, Some(0), "{exec:?}");
    assert!(!exec.stderr.contains("not on PATH"), "{}", exec.stderr);
    let elsewhere =
        ["install-docker-helper", "--config", &config_arg, "--helper", "mine", "--bin-dir", "off-path", hosts[0]];
    let exec = on_path.exec_in(dir.path(), &elsewhere);
    assert_eq!(exec.code, Some(0), "{exec:?}");
    assert!(exec.stderr.contains("is not on PATH"), "{}", exec.stderr);

    let before = fs::read(&config).expect("read");
    let refused = plugin.exec(&["install-docker-helper", "--config", &config_arg, hosts[0], unserved], b"");
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("not one this plugin serves"), "{}", refused.stderr);
    assert_eq!(fs::read(&config).expect("read"), before, "a refused install changes nothing");

    // A different program answers to the name on PATH: refused.
    let foreign = dir.path().join("foreign");
    fs::create_dir(&foreign).expect("mkdir");
    let impostor = foreign.join("docker-credential-other");
    fs::write(&impostor, "#!/bin/sh\necho hi\n").expect("write");
    fs::set_permissions(&impostor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let mut with_path = plugin.with_fresh_cache();
    with_path.set_env("PATH", &foreign.display().to_string());
    let taken = with_path.exec(&["install-docker-helper", "--config", &config_arg, "--helper", "other", hosts[0]], b"");
    assert_eq!(taken.code, Some(1), "{taken:?}");
    assert!(taken.stderr.contains("another program"), "{}", taken.stderr);
    assert_eq!(fs::read(&config).expect("read"), before, "a refused install changes nothing");

    // The same with --bin-dir elsewhere: a link there would be shadowed.
    let elsewhere = dir.path().join("elsewhere");
    let elsewhere_arg = elsewhere.display().to_string();
    let args =
        ["install-docker-helper", "--config", &config_arg, "--helper", "other", "--bin-dir", &elsewhere_arg, hosts[0]];
    let shadowed = with_path.exec(&args, b"");
    assert_eq!(shadowed.code, Some(1), "{shadowed:?}");
    assert!(shadowed.stderr.contains("first on PATH"), "{}", shadowed.stderr);
    assert!(!elsewhere.exists(), "no link made");
    assert_eq!(fs::read(&config).expect("read"), before, "a refused install changes nothing");
}
