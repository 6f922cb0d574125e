//! The real `kubelet-simulator` binary with small shell-script plugins that
//! answer well and badly, and every example config of the repository.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_kubelet-simulator");
const V1: &str = "credentialprovider.kubelet.k8s.io/v1";

struct Node {
    dir: tempfile::TempDir,
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Node {
    fn new() -> Node {
        let node = Node { dir: tempfile::tempdir().expect("dir") };
        std::fs::create_dir_all(node.bin()).expect("bin dir");
        node
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// A plugin named `name` whose body is `script` (sh).
    fn plugin(&self, name: &str, script: &str) {
        let path = self.bin().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).expect("write plugin");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    fn write_config(&self, providers: &str) {
        let text =
            format!("apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n{providers}");
        std::fs::write(self.config(), text).expect("write config");
    }

    fn simulate(&self, image: &str, extra: &[&str]) -> Run {
        let config = self.config();
        let bin = self.bin();
        let mut args = vec![
            "--image-credential-provider-config",
            config.to_str().unwrap_or_default(),
            "--image-credential-provider-bin-dir",
            bin.to_str().unwrap_or_default(),
            "--image",
            image,
        ];
        args.extend_from_slice(extra);
        run(&args)
    }
}

fn run(args: &[&str]) -> Run {
    let output =
        Command::new(BINARY).args(args).env("KUBELET_SIDE_VARIABLE", "from-the-kubelet").output().expect("run");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn provider(name: &str, match_image: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    apiVersion: {V1}\n    defaultCacheDuration: 10m\n    matchImages:\n      - \"{match_image}\"\n{extra}"
    )
}

fn answer(auth: &str, cache: &str) -> String {
    format!(
        "cat > /dev/null\necho '{{\"kind\":\"CredentialProviderResponse\",\"apiVersion\":\"{V1}\",\"cacheKeyType\":\"Registry\",{cache}\"auth\":{auth}}}'"
    )
}

#[test]
fn a_good_plugin_is_shown_as_the_kubelet_would_use_it() {
    let node = Node::new();
    node.write_config(&provider("good", "*.example.com", ""));
    node.plugin(
        "good",
        &answer(
            r#"{"r.example.com":{"username":"u1","password":"pw-registry"},"r.example.com/team":{"username":"u2","password":"pw-team"},"other.io":{"username":"x","password":"y"}}"#,
            r#""cacheDuration":"5m0s","#,
        ),
    );
    let run = node.simulate("r.example.com/team/app:1.0", &[]);
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("image: r.example.com/team/app"), "{}", run.stdout);
    let first = run.stdout.find("1. r.example.com/team").expect("the most specific key first");
    let second = run.stdout.find("2. r.example.com from").expect("then the registry");
    assert!(first < second);
    assert!(!run.stdout.contains("other.io"), "a key that does not match the image is not tried");
    assert!(!run.stdout.contains("pw-team") && run.stdout.contains("[redacted: 7 characters]"), "{}", run.stdout);
    assert!(run.stdout.contains("cached 300s"), "{}", run.stdout);

    let run = node.simulate("r.example.com/team/app", &["--show-secrets", "--output", "json"]);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(json["succeeded"], true);
    assert_eq!(json["credentials"][0]["authKey"], "r.example.com/team");
    assert_eq!(json["credentials"][0]["password"], "pw-team");
    assert_eq!(json["providers"][0]["result"], "answered");
    assert_eq!(json["providers"][0]["kubeletCacheKey"], "r.example.com");
}

#[test]
fn the_plugin_gets_the_request_args_and_environment_the_kubelet_gives() {
    let node = Node::new();
    let seen = node.dir.path().join("seen");
    node.write_config(&provider(
        "spy",
        "r.example.com",
        "    args: [\"get-credentials\", \"--v=3\"]\n    env:\n      - name: FROM_CONFIG\n        value: config-value\n",
    ));
    node.plugin(
        "spy",
        &format!(
            "cat > {seen}.stdin\necho \"$@\" > {seen}.args\necho \"$FROM_CONFIG $KUBELET_SIDE_VARIABLE\" > {seen}.env\n{}",
            answer(r#"{"r.example.com":{"username":"u","password":"p"}}"#, ""),
            seen = seen.display()
        ),
    );
    let run = node.simulate("r.example.com/app", &[]);
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    let request: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(seen.with_extension("stdin")).expect("stdin")).expect("request");
    assert_eq!(
        request,
        serde_json::json!({ "kind": "CredentialProviderRequest", "apiVersion": V1, "image": "r.example.com/app" })
    );
    assert_eq!(std::fs::read_to_string(seen.with_extension("args")).expect("args").trim(), "get-credentials --v=3");
    assert_eq!(
        std::fs::read_to_string(seen.with_extension("env")).expect("env").trim(),
        "config-value from-the-kubelet"
    );
    // No cacheDuration: the kubelet falls back to defaultCacheDuration.
    assert!(run.stdout.contains("cached 600s"), "{}", run.stdout);
}

#[test]
fn each_failure_is_reported_as_the_kubelet_would_log_it() {
    let node = Node::new();
    node.write_config(&provider("p", "r.example.com", ""));
    let good = r#"{"r.example.com":{"username":"u","password":"p"}}"#;
    for (script, expect) in [
        ("cat > /dev/null\necho boom >&2\nexit 3".to_string(), "exit status 3: boom"),
        (answer(good, "").replace(V1, "credentialprovider.kubelet.k8s.io/v1beta1"), "did not match the expected one"),
        (answer(good, r#""extra":1,"#), "unknown field `extra`"),
        (answer(good, r#""cacheDuration":"soon","#), "not a duration"),
        (answer(good, "").replace("Registry", "Pod"), "valid cacheKeyType"),
        ("cat > /dev/null\necho not-json".to_string(), "error reading the apiVersion"),
        ("cat > /dev/null".to_string(), "stdout is empty"),
        ("sleep 5".to_string(), "deadline exceeded"),
    ] {
        node.plugin("p", &script);
        let run = node.simulate("r.example.com/app", &["--timeout", "1s"]);
        assert_eq!(run.code, Some(2), "{script}: {}", run.stdout);
        assert!(run.stdout.contains("FAILED") && run.stdout.contains(expect), "{script}: {}", run.stdout);
        assert!(run.stdout.contains("none: the pull would go without credentials"), "{}", run.stdout);
    }
    std::fs::remove_file(node.bin().join("p")).expect("rm");
    let run = node.simulate("r.example.com/app", &[]);
    assert!(run.stdout.contains("did not exist"), "{}", run.stdout);
}

#[test]
fn service_account_tokens_follow_the_token_attributes() {
    let node = Node::new();
    let seen = node.dir.path().join("request.json");
    node.write_config(&provider(
        "sa",
        "r.example.com",
        "    tokenAttributes:\n      serviceAccountTokenAudience: my-audience\n      requireServiceAccount: true\n      cacheType: Token\n      requiredServiceAccountAnnotationKeys: [\"example.com/role\"]\n      optionalServiceAccountAnnotationKeys: [\"example.com/extra\"]\n",
    ));
    node.plugin(
        "sa",
        &format!(
            "cat > {}\n{}",
            seen.display(),
            answer(r#"{"r.example.com":{"username":"u","password":"p"}}"#, "").replace("cat > /dev/null\n", "")
        ),
    );
    let token_file = node.dir.path().join("token");
    std::fs::write(&token_file, "the-service-account-token\n").expect("write token");
    let token = token_file.to_str().unwrap_or_default();

    let run = node.simulate("r.example.com/app", &[]);
    assert!(run.stdout.contains("requires a service account"), "{}", run.stdout);
    let run =
        node.simulate("r.example.com/app", &["--service-account", "ns/sa", "--service-account-token-file", token]);
    assert!(run.stdout.contains("lacks the required annotation example.com/role"), "{}", run.stdout);
    let run = node.simulate(
        "r.example.com/app",
        &[
            "--service-account",
            "ns/sa",
            "--service-account-token-file",
            token,
            "--service-account-annotation",
            "example.com/role=puller",
            "--service-account-annotation",
            "example.com/unlisted=x",
        ],
    );
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("+ token sha256:"), "the cache key includes the token: {}", run.stdout);
    let request: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&seen).expect("request")).expect("json");
    assert_eq!(request["serviceAccountToken"], "the-service-account-token");
    assert_eq!(request["serviceAccountAnnotations"], serde_json::json!({ "example.com/role": "puller" }));

    // A plugin that hands the token back is refused.
    node.plugin("sa", &answer(r#"{"r.example.com":{"username":"u","password":"the-service-account-token"}}"#, ""));
    let run = node.simulate(
        "r.example.com/app",
        &[
            "--service-account",
            "ns/sa",
            "--service-account-token-file",
            token,
            "--service-account-annotation",
            "example.com/role=r",
        ],
    );
    assert_eq!(run.code, Some(2));
    assert!(run.stdout.contains("echoes the service-account token"), "{}", run.stdout);
    assert!(!run.stdout.contains("the-service-account-token"), "{}", run.stdout);
}

#[test]
fn docker_hub_credentials_serve_every_docker_hub_image_as_the_kubelet_finds_them() {
    for key in ["https://index.docker.io/v1/", "index.docker.io"] {
        let node = Node::new();
        node.write_config(&provider("hub", "docker.io", ""));
        node.plugin("hub", &answer(&format!(r#"{{"{key}":{{"username":"hub-user","password":"pw-hub"}}}}"#), ""));
        for image in ["foo", "foo/bar", "docker.io/foo/bar", "nginx:1.27"] {
            let run = node.simulate(image, &["--output", "json"]);
            assert_eq!(run.code, Some(0), "{key} for {image}: {}{}", run.stdout, run.stderr);
            let json: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
            assert_eq!(json["credentials"][0]["authKey"], key, "{image}");
            assert_eq!(json["credentials"][0]["username"], "hub-user", "{image}");
        }
    }
    // Not for an image on another registry, even one the provider was run for.
    let node = Node::new();
    node.write_config(&provider("hub", "*.example.com", ""));
    node.plugin("hub", &answer(r#"{"https://index.docker.io/v1/":{"username":"hub-user","password":"pw-hub"}}"#, ""));
    let run = node.simulate("r.example.com/app", &[]);
    assert_eq!(run.code, Some(2), "{}", run.stdout);
    assert!(run.stdout.contains("none: the pull would go without credentials"), "{}", run.stdout);
}

#[test]
fn unmatched_providers_are_not_run_and_an_unmatched_image_fails() {
    let node = Node::new();
    node.write_config(&provider("p", "other.example.com", ""));
    node.plugin("p", "exit 9");
    let run = node.simulate("r.example.com/app", &[]);
    assert_eq!(run.code, Some(2));
    assert!(run.stdout.contains("not run: no matchImages entry matches"), "{}", run.stdout);
}

#[test]
fn an_invalid_config_is_one_line_per_problem_with_file_line_and_field() {
    let node = Node::new();
    node.write_config(
        &provider("a/b", "r.example.com", "").replace("defaultCacheDuration: 10m", "defaultCacheDuration: -5m"),
    );
    let config = node.config();
    let run = run(&["--image-credential-provider-config", config.to_str().unwrap_or_default()]);
    assert_eq!(run.code, Some(1));
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stderr);
    assert!(lines.iter().all(|l| l.starts_with(&format!("{}:4: providers[0].", config.display()))), "{}", run.stderr);
    let run =
        self::run(&["--image-credential-provider-config", config.to_str().unwrap_or_default(), "--output", "json"]);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(json["valid"], false);
    assert_eq!(json["errors"][0]["line"], 4);
}

#[test]
fn a_command_line_error_exits_1_as_every_binary_of_the_workspace_does() {
    for args in [vec![], vec!["--no-such-flag"], vec!["--image-credential-provider-config", "c.yaml", "--image", "x"]] {
        let run = run(&args);
        assert_eq!(run.code, Some(1), "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    }
    let help = run(&["--help"]);
    assert_eq!(help.code, Some(0));
    assert!(help.stdout.contains("--image-credential-provider-config"), "{}", help.stdout);
}

/// Every kubelet config under examples/.
fn example_configs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut configs = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("examples").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if std::fs::read_to_string(&path).is_ok_and(|t| t.contains("kind: CredentialProviderConfig")) {
                configs.push(path);
            }
        }
    }
    configs.sort();
    configs
}

#[test]
fn every_example_config_passes_the_kubelets_validation() {
    let configs = example_configs();
    assert!(configs.len() >= 9, "{configs:?}");
    for config in configs {
        let run = run(&["--image-credential-provider-config", config.to_str().unwrap_or_default()]);
        assert_eq!(run.code, Some(0), "{}: {}", config.display(), run.stderr);
        assert!(run.stdout.contains("valid"), "{}", run.stdout);
    }
}
