//! The real `credential-provider-refresh` with the real GCR plugin against the
//! fake Google, from a kubelet config whose provider has args and env.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use credential_provider::Secret;
use credential_provider::cache::{Cache, CacheKey, CachedCredential, FORMAT_VERSION};
use credential_provider::protocol::ApiVersion;
use fake_clouds::conformance::request_json;
use fake_clouds::prometheus::{PrometheusServer, get, mentions, promtool, sample, wait_for};
use fake_clouds::{FakeGoogle, Fault};

fn agent() -> PathBuf {
    fake_clouds::plugins::built_binary("credential-provider-refresh")
}
const PLUGIN: &str = "gcr-credential-provider";
const IMAGE: &str = "gcr.io/project/app";
const ARGS: [&str; 3] = ["get-credentials", "--authFlow", "gcr"];

/// A node: the kubelet's bin dir, config and the plugins' cache.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        let node = Node { dir: tempfile::tempdir().expect("node") };
        std::fs::create_dir_all(node.path("bin")).expect("bin dir");
        // The plugin as the workspace built it.
        let built = fake_clouds::plugins::built_binary(PLUGIN);
        std::os::unix::fs::symlink(&built, node.path("bin").join(PLUGIN)).expect("install the plugin");
        node
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn write_config(&self, env: &[(String, String)]) {
        let config = fake_clouds::examples::provider_config(PLUGIN, "10m", &["gcr.io"], &ARGS, env);
        std::fs::write(self.path("config.yaml"), config).expect("config");
    }

    /// What the kubelet does for IMAGE: the plugin with the config's args and env.
    fn kubelet_exec(&self, env: &[(String, String)]) -> String {
        let mut child = Command::new(self.path("bin").join(PLUGIN))
            .args(ARGS)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().cloned())
            .env("CREDENTIAL_PROVIDER_CACHE_DIR", self.path("cache"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("exec");
        use std::io::Write as _;
        let request = request_json(ApiVersion::V1, IMAGE, None, false);
        child.stdin.take().expect("stdin").write_all(request.as_bytes()).expect("request");
        let output = child.wait_with_output().expect("wait");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let response: serde_json::Value = serde_json::from_slice(&output.stdout).expect("a response");
        response["auth"]["gcr.io"]["password"].as_str().unwrap_or_default().to_string()
    }

    /// One pass of the agent: its exit code and what it printed.
    fn agent(&self) -> (Option<i32>, String, String) {
        self.agent_with(&[])
    }

    /// One pass of the agent with `extra` arguments.
    fn agent_with(&self, extra: &[&str]) -> (Option<i32>, String, String) {
        let output = Command::new(agent())
            .args(["--image-credential-provider-config", &self.path("config.yaml").display().to_string()])
            .args(["--image-credential-provider-bin-dir", &self.path("bin").display().to_string()])
            .args(extra)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CREDENTIAL_PROVIDER_CACHE_DIR", self.path("cache"))
            .output()
            .expect("run the agent");
        let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
        (output.status.code(), text(output.stdout), text(output.stderr))
    }
}

#[test]
fn one_pass_renews_what_the_kubelets_execs_read_and_says_what_it_skips() {
    let google = FakeGoogle::start();
    google.set_token_lifetime(6);
    let node = Node::new();
    let env = google.endpoint_env();
    node.write_config(&env);
    let first = node.kubelet_exec(&env);
    assert_eq!(google.token_calls(), 1);

    // Past its refresh point: one agent pass renews it, with the config's args and env.
    std::thread::sleep(Duration::from_millis(3200));
    let (code, stdout, stderr) = node.agent();
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("{PLUGIN}: 1 renewed, 0 failed, 0 skipped, 0 removed")), "{stdout}");
    assert_eq!(google.token_calls(), 2);
    let renewed = node.kubelet_exec(&env);
    assert_ne!(renewed, first, "the kubelet's next exec reads the renewed credential");
    assert_eq!(google.token_calls(), 2, "and makes no call");

    // A config whose env differs from what the entry was written under: skipped, said, and a failing pass.
    std::thread::sleep(Duration::from_millis(3200));
    let other: Vec<(String, String)> = env.iter().filter(|(name, _)| name != "GCE_METADATA_HOST").cloned().collect();
    node.write_config(&other);
    let (code, stdout, stderr) = node.agent();
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("{PLUGIN}: 0 renewed, 0 failed, 1 skipped, 0 removed")), "{stdout}");
    assert!(stderr.contains("skipped gcr.io"), "the plugin says why: {stderr}");
    assert_eq!(google.token_calls(), 2);

    // Once that entry has expired no exec will read it: removed and said, and the pass is clean again.
    std::thread::sleep(Duration::from_millis(3200));
    let (code, stdout, stderr) = node.agent();
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("{PLUGIN}: 0 renewed, 0 failed, 0 skipped, 1 removed")), "{stdout}");
    assert!(stderr.contains("removed gcr.io: expired"), "{stderr}");
    let (code, stdout, _) = node.agent();
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(google.token_calls(), 2);
    let left = Cache::open(&node.path("cache")).expect("cache").all_entries();
    assert!(left.is_empty(), "{left:?}");
}

/// A node whose providers are `names`, each a script in the bin dir that
/// hangs (as a plugin blocked on a cloud that never answers would).
fn node_with_hanging_plugins(names: &[&str]) -> Node {
    let node = Node { dir: tempfile::tempdir().expect("node") };
    std::fs::create_dir_all(node.path("bin")).expect("bin dir");
    let mut config = String::from("apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n");
    for name in names {
        let script = node.path("bin").join(name);
        std::fs::write(&script, "#!/bin/sh\nexec sleep 600\n").expect("script");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("mode");
        config.push_str(&format!(
            "  - name: {name}\n    matchImages: [\"{name}.example\"]\n    defaultCacheDuration: 10m\n    apiVersion: credentialprovider.kubelet.k8s.io/v1\n"
        ));
    }
    std::fs::write(node.path("config.yaml"), config).expect("config");
    node
}

fn spawn_agent(node: &Node, extra: &[&str]) -> std::process::Child {
    Command::new(agent())
        .args(["--image-credential-provider-config", &node.path("config.yaml").display().to_string()])
        .args(["--image-credential-provider-bin-dir", &node.path("bin").display().to_string()])
        .args(extra)
        .env("CREDENTIAL_PROVIDER_CACHE_DIR", node.path("cache"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the agent")
}

#[test]
fn sigterm_stops_the_agent_and_its_plugin_within_seconds() {
    let node = node_with_hanging_plugins(&["first", "second", "third"]);
    let agent = spawn_agent(&node, &["--every", "5m"]);
    std::thread::sleep(Duration::from_millis(500));
    let started = std::time::Instant::now();
    rustix::process::kill_process(rustix::process::Pid::from_child(&agent), rustix::process::Signal::TERM)
        .expect("SIGTERM");
    let output = agent.wait_with_output().expect("wait");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(6), "the agent took {took:?} to stop");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("first: failed: its refresh was stopped"), "{stdout}");
    assert!(!stdout.contains("second") && !stdout.contains("third"), "no plugin runs after SIGTERM: {stdout}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("stopping: asked to terminate"));
}

#[test]
fn a_plugin_that_hangs_is_killed_at_its_deadline() {
    let node = node_with_hanging_plugins(&["stuck"]);
    let started = std::time::Instant::now();
    let output = spawn_agent(&node, &["--plugin-timeout", "2s"]).wait_with_output().expect("wait");
    let took = started.elapsed();
    assert!((Duration::from_secs(2)..Duration::from_secs(6)).contains(&took), "{took:?}");
    assert_eq!(output.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("stuck: failed: its refresh did not finish within 2s; killed"), "{stdout}");
}

#[test]
fn entries_no_configured_provider_claims_are_reported_and_deleted_once_expired() {
    let google = FakeGoogle::start();
    let node = Node::new();
    let env = google.endpoint_env();
    node.write_config(&env);
    node.kubelet_exec(&env);
    // Left by a provider removed from the config: one still valid, one expired.
    let cache = Cache::open(&node.path("cache")).expect("cache");
    let now = credential_provider::clock::unix_now();
    let entry = |name: &str, expires_at: u64| {
        let key = CacheKey::derive("ecr", &[name]);
        let entry = CachedCredential {
            format: FORMAT_VERSION,
            plugin: "ecr".into(),
            key: key.as_str().into(),
            image: format!("{name}/app"),
            registry: name.into(),
            needs_service_account_token: false,
            issued_at: now - 7200,
            refresh_at: now - 3600,
            expires_at,
            username: "AWS".into(),
            password: Secret::new("password-of-a-removed-provider".into()),
        };
        cache.write(&entry).expect("write");
    };
    entry("111111111111.dkr.ecr.us-east-1.amazonaws.com", now + 3600);
    entry("222222222222.dkr.ecr.us-east-1.amazonaws.com", now - 60);
    let (code, stdout, stderr) = node.agent();
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("an entry of ecr for 111111111111.dkr.ecr.us-east-1.amazonaws.com"), "{stdout}");
    assert!(stdout.contains("deleted") && stdout.contains("an expired entry of ecr"), "{stdout}");
    let left: Vec<String> = cache.all_entries().into_iter().filter_map(|(_, e)| e.map(|e| e.registry)).collect();
    assert!(left.contains(&"111111111111.dkr.ecr.us-east-1.amazonaws.com".to_string()), "{left:?}");
    assert!(!left.contains(&"222222222222.dkr.ecr.us-east-1.amazonaws.com".to_string()), "{left:?}");
    assert!(left.contains(&"gcr.io".to_string()), "the configured provider's entry stays: {left:?}");
}

/// The sample of `name` for the node's provider (and `labels`), in `text`.
fn provider_sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut all = vec![("provider", PLUGIN)];
    all.extend_from_slice(labels);
    sample(text, &format!("credential_provider_{name}"), &all)
}

#[test]
fn the_textfile_says_when_each_credential_expires_and_how_renewals_failed() {
    let google = FakeGoogle::start();
    google.set_token_lifetime(6);
    let node = Node::new();
    let env = google.endpoint_env();
    node.write_config(&env);
    node.kubelet_exec(&env);
    std::fs::create_dir_all(node.path("textfiles")).expect("node_exporter's directory");
    let textfile = node.path("textfiles/kubelet-credential-providers.prom");
    let textfile_arg = format!("--metrics-textfile={}", textfile.display());
    let read = || std::fs::read_to_string(&textfile).expect("the textfile");
    let cached = || {
        let entries = Cache::open(&node.path("cache")).expect("cache").all_entries();
        let entry = entries.into_iter().find_map(|(_, e)| e).expect("an entry");
        (entry.issued_at as f64, entry.refresh_at as f64, entry.expires_at as f64)
    };

    // A pass with nothing due: the entry's times, exactly; a clean pass.
    let (code, stdout, stderr) = node.agent_with(&[&textfile_arg]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let text = read();
    let (code, output) = promtool(&["check", "metrics"], Some(&text));
    assert_eq!(code, Some(0), "promtool check metrics: {output}\n{text}");
    let (issued, refresh, expiry) = cached();
    let this_entry = [("registry", "gcr.io"), ("kind", "node")];
    assert_eq!(provider_sample(&text, "credential_expiry_timestamp_seconds", &this_entry), Some(expiry), "{text}");
    assert_eq!(provider_sample(&text, "credential_refresh_timestamp_seconds", &this_entry), Some(refresh));
    assert_eq!(provider_sample(&text, "credential_issued_timestamp_seconds", &this_entry), Some(issued));
    assert_eq!(provider_sample(&text, "credential_last_renewal_failed", &this_entry), Some(0.0));
    assert_eq!(provider_sample(&text, "cache_entries", &[("kind", "node")]), Some(1.0));
    assert_eq!(provider_sample(&text, "cache_entries", &[("kind", "service_account")]), Some(0.0));
    assert_eq!(provider_sample(&text, "passes_total", &[("result", "success")]), Some(1.0));
    assert!(sample(&text, "credential_provider_build_info", &[("version", env!("CARGO_PKG_VERSION"))]).is_some());
    // Nothing secret, in a value or a label: the password is nowhere.
    let password = node.kubelet_exec(&env);
    assert!(!text.contains(&password), "{text}");

    // Past its refresh point, the cloud refuses the node: a failed renewal of class denied.
    std::thread::sleep(Duration::from_millis(3200));
    google.set_fault(Some(Fault::Status(403)));
    let (code, stdout, stderr) = node.agent_with(&[&textfile_arg]);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    let text = read();
    assert_eq!(provider_sample(&text, "renewals_total", &[("result", "failed")]), Some(1.0), "{text}");
    assert_eq!(provider_sample(&text, "renewal_failures_total", &[("class", "denied")]), Some(1.0));
    assert_eq!(provider_sample(&text, "renewal_failures_total", &[("class", "unreachable")]), Some(0.0));
    assert_eq!(provider_sample(&text, "credential_last_renewal_failed", &this_entry), Some(1.0));
    // The counts carry over from the earlier run (a timer's runs are processes of their own).
    assert_eq!(provider_sample(&text, "passes_total", &[("result", "success")]), Some(1.0));
    assert_eq!(provider_sample(&text, "passes_total", &[("result", "failure")]), Some(1.0));
    let last_success = provider_sample(&text, "last_successful_pass_timestamp_seconds", &[]).expect("last success");
    assert!(provider_sample(&text, "last_pass_timestamp_seconds", &[]) > Some(last_success));

    // The connection is reset: class unreachable.
    google.set_fault(Some(Fault::Reset));
    let (code, stdout, stderr) = node.agent_with(&[&textfile_arg]);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    let text = read();
    assert_eq!(provider_sample(&text, "renewal_failures_total", &[("class", "unreachable")]), Some(1.0), "{text}");

    // The cloud answers again: renewed, the failure cleared, the times those of the new entry.
    google.set_fault(None);
    let (code, stdout, stderr) = node.agent_with(&[&textfile_arg]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let text = read();
    assert_eq!(provider_sample(&text, "renewals_total", &[("result", "renewed")]), Some(1.0), "{text}");
    assert_eq!(provider_sample(&text, "credential_last_renewal_failed", &this_entry), Some(0.0));
    let (_, _, expiry) = cached();
    assert_eq!(provider_sample(&text, "credential_expiry_timestamp_seconds", &this_entry), Some(expiry));
    assert!(provider_sample(&text, "last_successful_pass_timestamp_seconds", &[]) > Some(last_success));
    let (code, output) = promtool(&["check", "metrics"], Some(&text));
    assert_eq!(code, Some(0), "{output}");
}

#[test]
fn prometheus_scrapes_the_agent_and_a_removed_providers_series_go() {
    let google = FakeGoogle::start();
    let node = Node::new();
    // A second provider: the same plugin under another name, as a config may have it.
    const OTHER: &str = "auth-provider-gcp";
    let built = fake_clouds::plugins::built_binary(PLUGIN);
    std::os::unix::fs::symlink(&built, node.path("bin").join(OTHER)).expect("install the second");
    let env = google.endpoint_env();
    let one = fake_clouds::examples::provider_config(PLUGIN, "10m", &["gcr.io"], &ARGS, &env);
    let other = fake_clouds::examples::provider_config(OTHER, "10m", &["*.gcr.io"], &ARGS, &env);
    let (_, other_provider) = other.split_once("providers:\n").expect("a providers list");
    std::fs::write(node.path("config.yaml"), format!("{one}{other_provider}")).expect("config");
    node.kubelet_exec(&env);

    let address: std::net::SocketAddr =
        format!("127.0.0.1:{}", fake_clouds::prometheus::free_port()).parse().expect("address");
    let mut agent = spawn_agent(&node, &["--every", "1s", "--metrics-address", &address.to_string()]);
    let scrape = || get(address, "/metrics").filter(|(status, _)| *status == 200).map(|(_, body)| body);
    let both = wait_for(Duration::from_secs(30), || scrape().filter(|text| mentions(text, "provider", OTHER)));
    let text = both.expect("the agent serves both providers' metrics");
    assert_eq!(provider_sample(&text, "cache_entries", &[("kind", "node")]), Some(1.0), "{text}");
    assert_eq!(get(address, "/other").map(|(status, _)| status), Some(404));

    // A real Prometheus, scraping every second, has the agent's series.
    let prometheus = PrometheusServer::start("kubelet-credential-providers", address);
    let query = format!("credential_provider_credential_expiry_timestamp_seconds{{provider=\"{PLUGIN}\"}}");
    let found = wait_for(Duration::from_secs(30), || {
        let result = prometheus.query(&query);
        (!result.as_array().is_none_or(Vec::is_empty)).then_some(result)
    });
    let result = found.unwrap_or_else(|| panic!("prometheus never had {query}: {}", prometheus.log()));
    assert_eq!(result[0]["metric"]["registry"], "gcr.io", "{result}");
    assert_eq!(result[0]["metric"]["job"], "kubelet-credential-providers");

    // The provider removed from the config: its series go at the next pass.
    std::fs::write(node.path("config.yaml"), &one).expect("config");
    let gone = wait_for(Duration::from_secs(30), || scrape().filter(|text| !mentions(text, "provider", OTHER)));
    let text = gone.expect("the removed provider's series go");
    assert!(mentions(&text, "provider", PLUGIN), "{text}");
    let _ = agent.kill();
    let _ = agent.wait();
}

#[test]
fn metrics_flags_are_refused_where_they_cannot_work() {
    let node = Node::new();
    node.write_config(&[]);
    // A server for a process that exits after one pass would never be scraped.
    let (code, stdout, stderr) = node.agent_with(&["--metrics-address", "127.0.0.1:9477"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("--every"), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    let (code, _, stderr) = node.agent_with(&["--every", "1m", "--metrics-address", "nowhere"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("\"nowhere\" is not HOST:PORT"), "{stderr}");
    // An address already taken: said, before any pass.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a listener");
    let address = taken.local_addr().expect("address").to_string();
    let (code, stdout, stderr) = node.agent_with(&["--every", "1m", "--metrics-address", &address]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stderr.contains(&format!("cannot serve metrics on {address}")), "{stderr}");
    assert!(stdout.is_empty(), "no pass ran: {stdout}");
    // A textfile in a directory that does not exist: the pass still runs, and says why there is no file.
    let (code, stdout, stderr) = node.agent_with(&["--metrics-textfile", "/nonexistent/dir/kcp.prom"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stderr.contains("cannot write the metrics to /nonexistent/dir/kcp.prom"), "{stderr}");
}
