//! The files under `examples/`, for the tests that keep them true.

use std::path::{Path, PathBuf};

/// The path of `relative` under the workspace's `examples/`.
pub fn path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(relative)
}

/// The example CredentialProviderConfig `relative` under `examples/`, read
/// and validated by the kubelet's rules (a test fails on an invalid one).
pub fn load(relative: &str) -> Vec<kubelet_config::Provider> {
    kubelet_config::load(&path(relative)).unwrap_or_else(|errors| panic!("{relative} is invalid: {errors:?}"))
}

/// The `matchImages` entries of every provider of the example config `relative`.
pub fn match_images(relative: &str) -> Vec<String> {
    let patterns: Vec<String> = load(relative).into_iter().flat_map(|provider| provider.spec.match_images).collect();
    assert!(!patterns.is_empty(), "{relative} has no matchImages");
    patterns
}

/// Runs the example kubelet config `relative` through the kubelet simulator
/// for `image`, with the plugin at `binary` in a bin dir of its own and `env`
/// added to every provider's `env` (as an operator would point a node at an
/// emulator). `args`, when given, replaces the providers' `args` (a path the
/// example names that exists on a node only). The kubelet's view of the result.
pub fn simulate_example(
    relative: &str,
    binary: &Path,
    env: &[(String, String)],
    args: Option<&[&str]>,
    image: &str,
) -> kubelet_simulator::simulate::Simulation {
    simulate_example_as(relative, binary, env, args, image, &Default::default())
}

/// [`simulate_example`] for a pod with `service_account` (KEP-4412: the
/// kubelet sends its token and annotations as the config's `tokenAttributes` say).
pub fn simulate_example_as(
    relative: &str,
    binary: &Path,
    env: &[(String, String)],
    args: Option<&[&str]>,
    image: &str,
    service_account: &kubelet_simulator::simulate::ServiceAccountInput,
) -> kubelet_simulator::simulate::Simulation {
    use kubelet_config::EnvVar;
    use kubelet_simulator::simulate::{EXEC_TIMEOUT, simulate};

    let mut providers = load(relative);
    let bin = tempfile::tempdir().expect("bin dir");
    for provider in &mut providers {
        let binary = crate::conformance::binary_under_test(binary.to_path_buf());
        std::os::unix::fs::symlink(binary, bin.path().join(&provider.spec.name)).expect("link the plugin");
        provider.spec.env.extend(env.iter().map(|(name, value)| EnvVar { name: name.clone(), value: value.clone() }));
        if let Some(args) = args {
            provider.spec.args = args.iter().map(|a| a.to_string()).collect();
        }
    }
    simulate(&providers, bin.path(), image, service_account, EXEC_TIMEOUT, false)
}

/// A kubelet config of one provider, as YAML, for the tests and tools that
/// build a node of their own: `name` with its `matchImages`, `args` and `env`.
pub fn provider_config(
    name: &str,
    default_cache_duration: &str,
    match_images: &[&str],
    args: &[&str],
    env: &[(String, String)],
) -> String {
    // JSON strings are YAML's double-quoted scalars: any value reads back as written.
    let quote = |text: &str| serde_json::Value::from(text).to_string();
    let list = |items: Vec<String>| match items.is_empty() {
        true => "      []\n".to_string(),
        false => items.concat(),
    };
    let matches = list(match_images.iter().map(|m| format!("      - {}\n", quote(m))).collect());
    let args = list(args.iter().map(|a| format!("      - {}\n", quote(a))).collect());
    let env =
        list(env.iter().map(|(n, v)| format!("      - name: {}\n        value: {}\n", quote(n), quote(v))).collect());
    format!(
        "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\nproviders:\n  - name: {name}\n    apiVersion: credentialprovider.kubelet.k8s.io/v1\n    defaultCacheDuration: {default_cache_duration}\n    matchImages:\n{matches}    args:\n{args}    env:\n{env}"
    )
}

/// A release's manifests, as a CI pipeline checks them before a rollout:
/// the Deployment `shop/web` (service account `web`) with `containers`
/// (name, image), a Service, which deploys no image, and the CronJob
/// `shop/report` whose one container (`report`) runs `job_image`.
pub fn release_manifests(containers: &[(&str, &str)], job_image: &str) -> String {
    let containers: String =
        containers.iter().map(|(name, image)| format!("        - {{name: {name}, image: \"{image}\"}}\n")).collect();
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: shop}}
spec:
  template:
    spec:
      serviceAccountName: web
      containers:
{containers}---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec: {{ports: [{{port: 80}}]}}
---
apiVersion: batch/v1
kind: CronJob
metadata: {{name: report, namespace: shop}}
spec:
  schedule: "@daily"
  jobTemplate:
    spec:
      template:
        spec:
          containers: [{{name: report, image: "{job_image}"}}]
"#
    )
}
