//! The real `gcr-credential-provider` binary against the in-process fake
//! Google (metadata server, STS, IAM Credentials, OAuth) and a fake registry.

use std::collections::BTreeMap;
use std::path::Path;

use credential_provider::protocol::ApiVersion;
use fake_clouds::conformance::{
    PluginUnderTest, TestServiceAccount, check_as_service_account, expect_accepted, expect_no_secrets, expect_rejected,
    request_json, run_conformance,
};
use fake_clouds::google::{NODE_EMAIL, PROJECT};
use fake_clouds::server::nonce;
use fake_clouds::{FakeGoogle, FakeRegistry, Fault};

const BINARY: &str = env!("CARGO_BIN_EXE_gcr-credential-provider");
const GCR: &str = "gcr.io/fake-project/app";
const ARTIFACT_REGISTRY: &str = "us-docker.pkg.dev/fake-project/images/app";
const REGIONAL: &str = "docker.us-central1.rep.pkg.dev/fake-project/images/app";
const IDENTITY_PROVIDER: &str =
    "https://container.googleapis.com/v1/projects/fake-project/locations/us-central1/clusters/c1";
const POOL_AUDIENCE: &str =
    "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/tenants/providers/cluster-a";
const PULLER: &str = "puller@fake-project.iam.gserviceaccount.com";

fn plugin(google: &FakeGoogle) -> PluginUnderTest {
    PluginUnderTest::new(BINARY).with_env(google.endpoint_env())
}

fn request(image: &str) -> String {
    request_json(ApiVersion::V1, image, None, false)
}

fn host(image: &str) -> &str {
    image.split('/').next().unwrap_or_default()
}

/// A service account as the kubelet sends it, with a token the fake STS trusts for `audience`.
fn service_account(google: &FakeGoogle, audience: &str, annotations: &[(&str, &str)]) -> TestServiceAccount {
    let token = format!("eyJhbGciOiJSUzI1NiJ9.sa-token-{}.sig", nonce());
    google.trust(audience, &token);
    TestServiceAccount {
        token: Some(token),
        annotations: annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    }
}

#[test]
fn the_metadata_server_serves_every_google_registry_for_every_api_version() {
    let google = FakeGoogle::start();
    let plugin = plugin(&google);
    for image in [GCR, ARTIFACT_REGISTRY, REGIONAL] {
        for response in run_conformance(&plugin, image, None, || google.secrets()) {
            assert_eq!(response.cache_key_type, "Registry");
            assert_eq!(response.auth.keys().collect::<Vec<_>>(), vec![host(image)]);
            let auth = &response.auth[host(image)];
            assert_eq!(auth.username, "oauth2accesstoken");
            assert!(auth.password.starts_with("ya29.metadata-"), "{}", auth.password);
            // The token lives 3599 s; the kubelet may keep it until our refresh point.
            let seconds = response.cache_seconds();
            assert!((1700.0..=1800.0).contains(&seconds), "{seconds}");
        }
    }
    assert_eq!(google.calls("metadata:token"), 3, "one token per registry; every other exec hit the cache");
}

#[test]
fn the_cache_duration_follows_the_tokens_real_lifetime() {
    let google = FakeGoogle::start();
    google.set_token_lifetime(600);
    let response = expect_accepted(&plugin(&google).request(&request(GCR)), ApiVersion::V1, GCR, &google.secrets());
    let seconds = response.cache_seconds();
    assert!((290.0..=300.0).contains(&seconds), "{seconds}");
}

#[test]
fn kep_4412_exchanges_the_token_for_the_identity_namespace() {
    let google = FakeGoogle::start();
    let audience = format!("identitynamespace:{PROJECT}.svc.id.goog:{IDENTITY_PROVIDER}");
    let sa = service_account(&google, &audience, &[("iam.gke.io/enable-wi-image-pull", "true")]);
    let plugin = plugin(&google);
    let args = ["get-credentials", "--identity-provider", IDENTITY_PROVIDER, "--project-id", PROJECT, "-vvv"];
    for _ in 0..2 {
        let exec = plugin.exec(&args, request_json(ApiVersion::V1, GCR, Some(&sa), false).as_bytes());
        let response = expect_accepted(&exec, ApiVersion::V1, GCR, &google.secrets());
        assert!(response.auth[host(GCR)].password.starts_with("ya29.sts-"));
    }
    let token = sa.token.clone().unwrap_or_default();
    assert_eq!(
        google.exchanges(),
        vec![(audience.clone(), token.clone())],
        "one exchange; the second exec hit the cache"
    );
    assert_eq!(google.calls("metadata:token"), 0, "the node's identity was never used");
    assert_eq!(google.calls("metadata:project-id"), 0, "the project was given");

    // `check` as the service account: its token exchanged again, the registry proven with the result.
    let registry = FakeRegistry::start();
    registry.accept(|user, password| user == "oauth2accesstoken" && password.starts_with("ya29.sts-"));
    let mut plugin = plugin;
    plugin.set_env("CREDENTIAL_PROVIDER_REGISTRY_ENDPOINTS", &registry.endpoints_for(&["gcr.io"]));
    let (exec, report) = check_as_service_account(&plugin, &args, GCR, &sa);
    assert_eq!(exec.code, Some(0), "{}{}", exec.stdout, exec.stderr);
    assert!(report["images"][0]["identity"].as_str().is_some_and(|i| i.contains("svc.id.goog")), "{report}");
    assert_eq!(google.exchanges().len(), 2, "the check's own exchange");
    assert_eq!(google.calls("metadata:token"), 0, "never the node");
    expect_no_secrets(&exec.stdout, &google.secrets());
}

#[test]
fn kep_4412_reads_the_project_from_the_metadata_server_when_not_given() {
    let google = FakeGoogle::start();
    let audience = format!("identitynamespace:{PROJECT}.svc.id.goog:{IDENTITY_PROVIDER}");
    let sa = service_account(&google, &audience, &[]);
    let exec = plugin(&google).exec(
        &["--identity-provider", IDENTITY_PROVIDER, "-vvv"],
        request_json(ApiVersion::V1, GCR, Some(&sa), false).as_bytes(),
    );
    expect_accepted(&exec, ApiVersion::V1, GCR, &google.secrets());
    assert_eq!(google.calls("metadata:project-id"), 1);
    assert_eq!(google.exchanges().len(), 1);
}

#[test]
fn kep_4412_with_a_pool_audience_impersonates_the_annotated_service_account() {
    let google = FakeGoogle::start();
    let sa = service_account(&google, POOL_AUDIENCE, &[("iam.gke.io/gcp-service-account", PULLER)]);
    let plugin = plugin(&google);
    let responses =
        plugin_conformance_with_args(&plugin, &["--audience", POOL_AUDIENCE, "-vvv"], ARTIFACT_REGISTRY, &sa, &google);
    assert!(responses.iter().all(|p| p.starts_with("ya29.impersonated-")), "{responses:?}");
    assert_eq!(google.impersonated(), vec![PULLER.to_string()]);
    // v1alpha1 and v1beta1 carry no token: those used the node's identity.
    assert_eq!(google.calls("metadata:token"), 1);
}

/// Every apiVersion through `args`; returns the v1 passwords (the ones that used the token).
fn plugin_conformance_with_args(
    plugin: &PluginUnderTest,
    args: &[&str],
    image: &str,
    sa: &TestServiceAccount,
    google: &FakeGoogle,
) -> Vec<String> {
    let mut passwords = Vec::new();
    for version in ApiVersion::ALL {
        let exec = plugin.exec(args, request_json(version, image, Some(sa), true).as_bytes());
        let response = expect_accepted(&exec, version, image, &google.secrets());
        if version == ApiVersion::V1 {
            passwords.push(response.auth[host(image)].password.clone());
        }
    }
    passwords
}

#[test]
fn a_failed_exchange_never_falls_back_to_the_node() {
    let google = FakeGoogle::start();
    // A token STS does not trust: the fake even quotes it back in its error.
    let token = format!("untrusted-sa-token-{}", nonce());
    let mut secrets = google.secrets();
    secrets.push(token.clone());
    let sa = TestServiceAccount { token: Some(token), annotations: BTreeMap::new() };
    google.trust(POOL_AUDIENCE, "some-other-token");
    let exec = plugin(&google)
        .exec(&["--audience", POOL_AUDIENCE, "-vvv"], request_json(ApiVersion::V1, GCR, Some(&sa), false).as_bytes());
    assert_eq!(exec.code, Some(2), "{}", exec.stderr);
    assert_eq!(exec.stdout, "");
    assert!(exec.stderr.contains("invalid_grant"), "{}", exec.stderr);
    expect_no_secrets(&exec.stderr, &secrets);
    assert_eq!(google.calls("metadata:token"), 0, "no fallback to the node's identity");
}

#[test]
fn a_denied_impersonation_is_an_error_naming_the_missing_role() {
    let google = FakeGoogle::start();
    google.deny_impersonation(PULLER);
    let sa = service_account(&google, POOL_AUDIENCE, &[("iam.gke.io/gcp-service-account", PULLER)]);
    let exec = plugin(&google)
        .exec(&["--audience", POOL_AUDIENCE], request_json(ApiVersion::V1, GCR, Some(&sa), false).as_bytes());
    expect_rejected(&exec, &google.secrets());
    assert_eq!(exec.code, Some(2));
    assert!(exec.stderr.contains("roles/iam.workloadIdentityUser"), "{}", exec.stderr);
}

#[test]
fn an_opt_in_without_an_audience_is_a_configuration_error() {
    let google = FakeGoogle::start();
    let sa = service_account(&google, POOL_AUDIENCE, &[("iam.gke.io/enable-wi-image-pull", "true")]);
    let exec = plugin(&google).request(&request_json(ApiVersion::V1, GCR, Some(&sa), false));
    expect_rejected(&exec, &google.secrets());
    assert_eq!(exec.code, Some(1));
    assert!(exec.stderr.contains("--identity-provider"), "{}", exec.stderr);
    assert_eq!(google.token_calls(), 0);
}

#[test]
fn a_token_without_an_audience_uses_the_node_and_says_so() {
    let google = FakeGoogle::start();
    let sa = TestServiceAccount { token: Some(format!("sa-token-{}", nonce())), annotations: BTreeMap::new() };
    let mut secrets = google.secrets();
    secrets.extend(sa.token.clone());
    let exec = plugin(&google).exec(&["-v"], request_json(ApiVersion::V1, GCR, Some(&sa), false).as_bytes());
    expect_accepted(&exec, ApiVersion::V1, GCR, &secrets);
    assert!(exec.stderr.contains("no audience is configured"), "{}", exec.stderr);
    assert!(exec.stderr.contains("metadata server default service account"), "{}", exec.stderr);
    assert_eq!(google.calls("metadata:token"), 1);
}

#[test]
fn a_service_account_key_file_signs_a_jwt_for_its_token_uri() {
    let google = FakeGoogle::start();
    let dir = tempfile::tempdir().expect("dir");
    let key = google.key_file(dir.path());
    let plugin = plugin(&google).with_env([("GOOGLE_APPLICATION_CREDENTIALS", key.display().to_string())]);
    let exec = plugin.exec(&["-vvv"], request(GCR).as_bytes());
    let response = expect_accepted(&exec, ApiVersion::V1, GCR, &google.secrets());
    assert!(response.auth[host(GCR)].password.starts_with("ya29.key-file-"));
    assert_eq!(google.calls("oauth:jwt-bearer"), 1);
    assert_eq!(google.calls("metadata:token"), 0);
    assert!(!exec.stderr.contains("PRIVATE KEY"), "{}", exec.stderr);
}

#[test]
fn an_authorized_user_file_refreshes_its_token() {
    let google = FakeGoogle::start();
    let dir = tempfile::tempdir().expect("dir");
    let user = google.authorized_user_file(dir.path());
    let plugin = plugin(&google).with_env([("GOOGLE_APPLICATION_CREDENTIALS", user.display().to_string())]);
    let exec = plugin.exec(&["-vvv"], request(ARTIFACT_REGISTRY).as_bytes());
    let response = expect_accepted(&exec, ApiVersion::V1, ARTIFACT_REGISTRY, &google.secrets());
    assert!(response.auth[host(ARTIFACT_REGISTRY)].password.starts_with("ya29.user-"));
    assert_eq!(google.calls("oauth:refresh_token"), 1);
}

#[test]
fn a_well_known_file_that_appears_is_used_by_the_very_next_exec() {
    let google = FakeGoogle::start();
    let plugin = plugin(&google);
    for _ in 0..2 {
        expect_accepted(&plugin.request(&request(GCR)), ApiVersion::V1, GCR, &google.secrets());
    }
    assert_eq!(google.calls("metadata:token"), 1, "the node's identity, then a cache hit");
    // `gcloud auth application-default login` on the node.
    let gcloud = plugin.home().join(".config/gcloud");
    std::fs::create_dir_all(&gcloud).expect("mkdir");
    let user = google.authorized_user_file(&gcloud);
    std::fs::rename(&user, gcloud.join("application_default_credentials.json")).expect("rename");
    let response = expect_accepted(&plugin.request(&request(GCR)), ApiVersion::V1, GCR, &google.secrets());
    assert!(
        response.auth[host(GCR)].password.starts_with("ya29.user-"),
        "the file's identity, not the metadata server's"
    );
    assert_eq!(google.calls("oauth:refresh_token"), 1);
}

#[test]
fn gclouds_well_known_file_is_found_in_home() {
    let google = FakeGoogle::start();
    let plugin = plugin(&google);
    let gcloud = plugin.home().join(".config/gcloud");
    std::fs::create_dir_all(&gcloud).expect("mkdir");
    let user = google.authorized_user_file(&gcloud);
    std::fs::rename(&user, gcloud.join("application_default_credentials.json")).expect("rename");
    expect_accepted(&plugin.request(&request(GCR)), ApiVersion::V1, GCR, &google.secrets());
    assert_eq!(google.calls("oauth:refresh_token"), 1);
    assert_eq!(google.calls("metadata:token"), 0);
}

#[test]
fn an_external_account_file_federates_and_impersonates() {
    let google = FakeGoogle::start();
    let dir = tempfile::tempdir().expect("dir");
    let subject = format!("oidc-subject-token-{}", nonce());
    google.trust(POOL_AUDIENCE, &subject);
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{subject}\n")).expect("write token");
    let config = google.external_account_file(dir.path(), POOL_AUDIENCE, &token_file, Some(PULLER));
    let plugin = plugin(&google).with_env([("GOOGLE_APPLICATION_CREDENTIALS", config.display().to_string())]);
    let exec = plugin.exec(&["-vvv"], request(GCR).as_bytes());
    let response = expect_accepted(&exec, ApiVersion::V1, GCR, &google.secrets());
    assert!(response.auth[host(GCR)].password.starts_with("ya29.impersonated-"));
    assert_eq!(google.exchanges(), vec![(POOL_AUDIENCE.to_string(), subject)]);
    assert_eq!(google.impersonated(), vec![PULLER.to_string()]);
}

#[test]
fn unusable_credentials_files_are_one_line_errors() {
    let google = FakeGoogle::start();
    let dir = tempfile::tempdir().expect("dir");
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{\"type\": \"service_account\", \"private_key\": \"secret-ish-key-material\"")
        .expect("write");
    for path in [broken.as_path(), Path::new("/nonexistent/key.json")] {
        let plugin = plugin(&google).with_env([("GOOGLE_APPLICATION_CREDENTIALS", path.display().to_string())]);
        let exec = plugin.request(&request(GCR));
        expect_rejected(&exec, &["secret-ish-key-material".to_string()]);
        assert!(exec.stderr.contains(&path.display().to_string()), "{}", exec.stderr);
    }
}

#[test]
fn the_dockercfg_flows_read_the_instance_attributes() {
    let google = FakeGoogle::start();
    let password = format!("dockercfg-password-{}", nonce());
    let document =
        serde_json::json!({ "https://gcr.io": { "username": "_json_key", "password": password } }).to_string();
    google.set_attribute("google-dockercfg", &document);
    let plugin = plugin(&google);
    let mut secrets = google.secrets();
    secrets.push(password.clone());

    let exec = plugin.exec(&["get-credentials", "--authFlow=dockercfg", "-vvv"], request(GCR).as_bytes());
    let response = expect_accepted(&exec, ApiVersion::V1, GCR, &secrets);
    assert_eq!(response.auth[host(GCR)].username, "_json_key");
    assert_eq!(response.auth[host(GCR)].password, password);

    let url = google.serve_dockercfg(&document);
    google.set_attribute("google-dockercfg-url", &url);
    let exec = plugin.exec(&["get-credentials", "-a", "dockercfg-url"], request(GCR).as_bytes());
    let response = expect_accepted(&exec, ApiVersion::V1, GCR, &secrets);
    assert_eq!(response.auth[host(GCR)].password, password);
    assert_eq!(google.calls("dockercfg"), 1);

    // No login for this registry in the document: an error, never an empty auth.
    let exec = plugin.exec(&["-a", "dockercfg"], request(ARTIFACT_REGISTRY).as_bytes());
    expect_rejected(&exec, &secrets);
    assert!(exec.stderr.contains("holds no login"), "{}", exec.stderr);
}

#[test]
fn a_dockercfg_auth_is_decoded_as_the_kubelet_decodes_it() {
    use base64::Engine as _;
    let google = FakeGoogle::start();
    let password = format!("dockercfg-password-{}", nonce());
    let auth = base64::engine::general_purpose::STANDARD_NO_PAD.encode(format!("_json_key:{password}"));
    let (head, tail) = auth.split_at(auth.len() / 2);
    // Unpadded and broken over lines, beside username/password fields it wins over.
    let document = serde_json::json!({
        "gcr.io": { "auth": format!("{head}\r\n{tail}"), "username": "ignored", "password": "ignored-password" },
    })
    .to_string();
    google.set_attribute("google-dockercfg", &document);
    let plugin = plugin(&google);
    let mut secrets = google.secrets();
    secrets.extend([password.clone(), auth.clone()]);
    let exec = plugin.exec(&["--authFlow=dockercfg"], request(GCR).as_bytes());
    let response = expect_accepted(&exec, ApiVersion::V1, GCR, &secrets);
    assert_eq!(response.auth[host(GCR)].username, "_json_key");
    assert_eq!(response.auth[host(GCR)].password, password);
    // A stray space makes the entry invalid: an error, not the fields beside it.
    let document = serde_json::json!({
        "gcr.io": { "auth": format!("{auth} "), "username": "ignored", "password": "ignored-password" },
    })
    .to_string();
    google.set_attribute("google-dockercfg", &document);
    let exec = plugin.exec(&["--authFlow=dockercfg", "--no-cache"], request(GCR).as_bytes());
    expect_rejected(&exec, &secrets);
    assert!(exec.stderr.contains("is not base64 of user:password"), "{}", exec.stderr);
}

#[test]
fn the_upstream_command_line_and_cache_variables_work() {
    let google = FakeGoogle::start();
    let plugin =
        plugin(&google).with_env([("KUBE_SIDECAR_CACHE_DURATION", "5m"), ("KUBE_SIDECAR_CACHE_TYPE", "image")]);
    let exec = plugin.exec(&["get-credentials", "--v=3", "--authFlow", "gcr"], request(GCR).as_bytes());
    let response = expect_accepted(&exec, ApiVersion::V1, GCR, &google.secrets());
    assert_eq!(response.cache_duration.as_deref(), Some("5m0s"));
    assert_eq!(response.cache_key_type, "Image");

    // `get-credentials` wherever a subcommand may stand: after flags and their values.
    let cache_dir = plugin.home().join("other-cache");
    let cache_dir = cache_dir.to_str().unwrap_or_default();
    for args in [
        vec!["--cache-dir", cache_dir, "get-credentials"],
        vec!["--v=3", "get-credentials", "--authFlow=gcr"],
        vec!["-v", "--authFlow", "gcr", "get-credentials"],
        vec!["-a", "gcr", "--no-cache", "get-credentials", "--v", "2"],
    ] {
        let exec = plugin.exec(&args, request(GCR).as_bytes());
        expect_accepted(&exec, ApiVersion::V1, GCR, &google.secrets());
    }
    assert!(std::path::Path::new(cache_dir).is_dir(), "--cache-dir before get-credentials was obeyed");
    // Anything else where a subcommand stands is still refused, with no answer.
    for args in
        [vec!["get-credential"], vec!["--authFlow", "gcr", "refresh-credentials"], vec!["gcr", "get-credentials"]]
    {
        let exec = plugin.exec(&args, request(GCR).as_bytes());
        expect_rejected(&exec, &google.secrets());
        assert_eq!(exec.code, Some(1), "{args:?}: {}", exec.stderr);
    }

    let bad = plugin.with_env([("KUBE_SIDECAR_CACHE_TYPE", "pod")]);
    let exec = bad.request(&request(GCR));
    expect_rejected(&exec, &google.secrets());
    assert!(exec.stderr.contains("KUBE_SIDECAR_CACHE_TYPE"), "{}", exec.stderr);
}

#[test]
fn a_metadata_host_that_is_not_link_local_is_refused() {
    let google = FakeGoogle::start();
    let mut plugin = plugin(&google);
    plugin.set_env("GCE_METADATA_HOST", "metadata.example.com");
    let exec = plugin.request(&request(GCR));
    expect_rejected(&exec, &[]);
    assert!(exec.stderr.contains("GCE_METADATA_HOST"), "{}", exec.stderr);
}

#[test]
fn cloud_faults_are_retried_then_end_in_one_line() {
    let google = FakeGoogle::start();
    let plugin = plugin(&google);
    for (fault, attempts) in [
        (Fault::Status(503), 4),
        (Fault::Reset, 4),
        (Fault::Garbage, 1),
        (Fault::Truncated, 1),
        (Fault::Status(403), 1),
    ] {
        let before = google.calls("metadata:token");
        google.set_fault(Some(fault.clone()));
        let exec = plugin.exec(&["--no-cache", "-vvv"], request(GCR).as_bytes());
        assert_eq!(exec.code, Some(2), "{fault:?}: {}", exec.stderr);
        assert_eq!(exec.stdout, "", "{fault:?}");
        assert!(!exec.stderr.trim().is_empty());
        expect_no_secrets(&exec.stderr, &google.secrets());
        assert_eq!(google.calls("metadata:token") - before, attempts, "{fault:?}");
    }
    // Throttling with Retry-After: 1 is waited out, three times, inside the budget.
    google.set_fault(Some(Fault::Status(429)));
    let before = google.calls("metadata:token");
    let started = std::time::Instant::now();
    let exec = plugin.exec(&["--no-cache"], request(GCR).as_bytes());
    expect_rejected(&exec, &google.secrets());
    assert_eq!(google.calls("metadata:token") - before, 4);
    let elapsed = started.elapsed();
    assert!(elapsed >= std::time::Duration::from_millis(2900), "Retry-After was not honoured: {elapsed:?}");
    assert!(elapsed < std::time::Duration::from_secs(20), "past the call budget: {elapsed:?}");

    google.set_fault(Some(Fault::Expired));
    let exec = plugin.request(&request(GCR));
    let response = expect_accepted(&exec, ApiVersion::V1, GCR, &google.secrets());
    assert_eq!(response.cache_seconds(), 0.0, "an expired token must not be cached by the kubelet");
}

#[test]
fn a_stale_entry_is_served_when_google_fails() {
    let google = FakeGoogle::start();
    // 8 s tokens are stale after 4 s and still valid, retries included, until 8 s.
    google.set_token_lifetime(8);
    let plugin = plugin(&google);
    let first = expect_accepted(&plugin.request(&request(GCR)), ApiVersion::V1, GCR, &google.secrets());
    std::thread::sleep(std::time::Duration::from_millis(4500));
    google.set_fault(Some(Fault::Status(500)));
    let exec = plugin.request(&request(GCR));
    let second = expect_accepted(&exec, ApiVersion::V1, GCR, &google.secrets());
    assert_eq!(first.auth[host(GCR)].password, second.auth[host(GCR)].password);
    assert!(second.cache_seconds() <= 4.0, "{}", second.cache_seconds());
    assert!(exec.stderr.contains("serving the cached one"), "{}", exec.stderr);
}

#[test]
fn check_proves_pull_through_the_registry_handshake() {
    let google = FakeGoogle::start();
    let registry = FakeRegistry::start();
    registry.accept(|user, password| user == "oauth2accesstoken" && password.starts_with("ya29.metadata-"));
    let mut plugin = plugin(&google);
    plugin.set_env("CREDENTIAL_PROVIDER_REGISTRY_ENDPOINTS", &registry.endpoints_for(&["gcr.io", "us-docker.pkg.dev"]));

    let exec = plugin.exec(&["check", "--image", "gcr.io/fake-project/app:1.0", "--output", "json"], b"");
    assert_eq!(exec.code, Some(0), "{}{}", exec.stdout, exec.stderr);
    let report: serde_json::Value = serde_json::from_str(&exec.stdout).expect("json report");
    assert_eq!(report["allowed"], true);
    assert_eq!(report["images"][0]["identity"], format!("{NODE_EMAIL} (metadata server)"));
    let actions: Vec<&str> =
        report["images"][0]["checks"].as_array().expect("checks").iter().filter_map(|c| c["action"].as_str()).collect();
    assert_eq!(
        actions,
        [
            "metadata:scopes",
            "token",
            "registry:challenge",
            "registry:token repository:fake-project/app:pull",
            "registry:pull fake-project/app"
        ]
    );
    expect_no_secrets(&exec.stderr, &google.secrets());
    expect_no_secrets(&exec.stdout, &google.secrets());
    assert_eq!(registry.calls("tags"), 1);

    registry.deny("fake-project/secret");
    let exec = plugin.exec(&["check", "--image", "us-docker.pkg.dev/fake-project/secret"], b"");
    assert_eq!(exec.code, Some(2), "{}", exec.stdout);
    assert!(exec.stdout.contains("denied"), "{}", exec.stdout);

    google.set_scopes(&["https://www.googleapis.com/auth/logging.write"]);
    let exec = plugin.exec(&["check", "--image", GCR, "--output", "json"], b"");
    assert_eq!(exec.code, Some(2));
    let report: serde_json::Value = serde_json::from_str(&exec.stdout).expect("json report");
    assert_eq!(report["images"][0]["checks"][0]["result"], "denied");
}

#[test]
fn thirty_two_processes_on_a_cold_cache_make_one_token_call() {
    let google = FakeGoogle::start();
    let plugin = plugin(&google);
    for exec in plugin.exec_together(32, &[], request(GCR).as_bytes()) {
        expect_accepted(&exec, ApiVersion::V1, GCR, &google.secrets());
    }
    assert_eq!(google.calls("metadata:token"), 1);
}

#[test]
fn refresh_renews_due_entries_a_few_at_a_time_and_leaves_token_entries_to_execs() {
    let google = FakeGoogle::start();
    // 6 s tokens are due for renewal after 3 s.
    google.set_token_lifetime(6);
    let plugin = plugin(&google);
    let images = [
        "gcr.io/p/app",
        "us.gcr.io/p/app",
        "eu.gcr.io/p/app",
        "asia.gcr.io/p/app",
        "us-docker.pkg.dev/p/r/app",
        "europe-west4-docker.pkg.dev/p/r/app",
    ];
    for image in images {
        expect_accepted(&plugin.request(&request(image)), ApiVersion::V1, image, &google.secrets());
    }
    let sa = service_account(&google, POOL_AUDIENCE, &[]);
    let exec =
        plugin.exec(&["--audience", POOL_AUDIENCE], request_json(ApiVersion::V1, GCR, Some(&sa), false).as_bytes());
    expect_accepted(&exec, ApiVersion::V1, GCR, &google.secrets());
    assert_eq!(google.calls("metadata:token"), 6);
    std::thread::sleep(std::time::Duration::from_millis(3200));

    // Each renewal takes 600 ms: one at a time would take 3.6 s.
    google.set_fault(Some(Fault::Slow(std::time::Duration::from_millis(600))));
    let started = std::time::Instant::now();
    // The same flags as the kubelet config, so that the cache keys match.
    let exec = plugin.exec(&["--audience", POOL_AUDIENCE, "refresh"], b"");
    let elapsed = started.elapsed();
    google.set_fault(None);
    assert_eq!(exec.code, Some(0), "{}", exec.stderr);
    assert_eq!(exec.stdout, "");
    assert_eq!(exec.stderr.lines().filter(|l| l.contains(": renewed ")).count(), 6, "{}", exec.stderr);
    assert!(elapsed < std::time::Duration::from_millis(3000), "renewals ran one at a time: {elapsed:?}");
    assert_eq!(google.calls("metadata:token"), 12);
    assert_eq!(google.exchanges().len(), 1, "the service-account entry waits for an exec with a token");
    expect_no_secrets(&exec.stderr, &google.secrets());

    // The execs that follow find every entry fresh: no call at all.
    for image in images {
        expect_accepted(&plugin.request(&request(image)), ApiVersion::V1, image, &google.secrets());
    }
    assert_eq!(google.token_calls(), 13);
}

#[test]
fn refresh_every_stops_cleanly_on_sigterm() {
    let google = FakeGoogle::start();
    let plugin = plugin(&google);
    expect_accepted(&plugin.request(&request(GCR)), ApiVersion::V1, GCR, &google.secrets());
    let child = plugin.spawn(&["refresh", "--every", "1s"], b"");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let started = std::time::Instant::now();
    let exec = fake_clouds::Exec::wait(child);
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "it must stop promptly");
    assert_eq!(exec.code, Some(0), "{}", exec.stderr);
    assert!(exec.stderr.contains("stopping"), "{}", exec.stderr);
}

/// `google`'s key file, with its `token_uri` replaced by `token_uri`.
fn key_file_with_token_uri(google: &FakeGoogle, dir: &std::path::Path, token_uri: &str) -> std::path::PathBuf {
    let path = google.key_file(dir);
    let mut key: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read key")).expect("key JSON");
    key["token_uri"] = token_uri.into();
    std::fs::write(&path, key.to_string()).expect("write key");
    path
}

#[test]
fn a_key_files_plain_http_token_uri_is_refused_before_anything_is_sent() {
    let google = FakeGoogle::start();
    let dir = tempfile::tempdir().expect("dir");
    let key = key_file_with_token_uri(&google, dir.path(), "http://oauth2.example.invalid/token");
    let plugin = plugin(&google).with_env([("GOOGLE_APPLICATION_CREDENTIALS", key.display().to_string())]);
    let exec = plugin.exec(&[], request(GCR).as_bytes());
    expect_rejected(&exec, &google.secrets());
    assert_eq!(exec.code, Some(1), "a configuration error");
    assert!(exec.stderr.contains("token_uri") && exec.stderr.contains("https"), "{}", exec.stderr);
    assert_eq!(google.calls("oauth:jwt-bearer"), 0);
}

#[test]
fn a_key_files_token_call_goes_through_the_nodes_proxy() {
    const TEST: &str = "a_key_files_token_call_goes_through_the_nodes_proxy";
    if !fake_clouds::netns::in_private_namespaces(TEST, &[]) {
        return;
    }
    let google = FakeGoogle::start();
    let dir = tempfile::tempdir().expect("dir");
    let key = key_file_with_token_uri(&google, dir.path(), "https://oauth2.googleapis.com/token");
    let proxy = fake_clouds::proxy::RecordingProxy::start();
    let plugin = plugin(&google)
        .with_env([("GOOGLE_APPLICATION_CREDENTIALS", key.display().to_string()), ("HTTPS_PROXY", proxy.url())]);
    let exec = plugin.exec(&[], request(GCR).as_bytes());
    expect_rejected(&exec, &google.secrets());
    assert_eq!(exec.code, Some(2), "the proxy answers 502: {}", exec.stderr);
    let requests = proxy.requests();
    assert!(!requests.is_empty(), "the proxy saw nothing");
    assert!(requests.iter().all(|target| target == "oauth2.googleapis.com:443"), "{requests:?}");
}

#[test]
fn an_oversized_token_answer_is_refused_unread() {
    let google = FakeGoogle::start();
    let dir = tempfile::tempdir().expect("dir");
    let key = google.key_file(dir.path());
    google.set_fault(Some(Fault::Oversized));
    let plugin = plugin(&google).with_env([("GOOGLE_APPLICATION_CREDENTIALS", key.display().to_string())]);
    let exec = plugin.exec(&["--no-cache"], request(GCR).as_bytes());
    expect_rejected(&exec, &google.secrets());
    assert_eq!(exec.code, Some(2));
    assert!(exec.stderr.contains("larger than 4 MiB"), "{}", exec.stderr);
    assert_eq!(google.calls("oauth:jwt-bearer"), 1, "too large is not retried");
}

#[test]
fn an_external_account_may_read_its_subject_token_from_another_clouds_metadata_service() {
    const TEST: &str = "an_external_account_may_read_its_subject_token_from_another_clouds_metadata_service";
    if !fake_clouds::netns::in_private_namespaces(TEST, &[]) {
        return;
    }
    // Azure's IMDS at its own address, in this test's network namespace only,
    // answering the managed identity's token as Google's documentation has
    // an Azure VM's credentials file read it.
    fake_clouds::netns::add_loopback_address("169.254.169.254/32");
    let subject = format!("azure-managed-identity-token-{}", nonce());
    let answer = serde_json::json!({ "access_token": subject, "token_type": "Bearer" });
    let imds = fake_clouds::FakeServer::start_at(
        axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
            let answer = answer.clone();
            async move {
                use axum::response::IntoResponse as _;
                match headers.get("metadata").and_then(|v| v.to_str().ok()) {
                    Some(value) if value.eq_ignore_ascii_case("true") => axum::Json(answer).into_response(),
                    _ => axum::http::StatusCode::BAD_REQUEST.into_response(),
                }
            }
        }),
        "169.254.169.254:80",
    );
    let google = FakeGoogle::start();
    google.trust(POOL_AUDIENCE, &subject);
    let dir = tempfile::tempdir().expect("dir");
    let config = google.external_account_file(dir.path(), POOL_AUDIENCE, &dir.path().join("unused"), None);
    let mut file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).expect("read")).expect("JSON");
    file["credential_source"] = serde_json::json!({
        "url": "http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://iam.googleapis.com/x",
        "headers": { "Metadata": "True" },
        "format": { "type": "json", "subject_token_field_name": "access_token" },
    });
    std::fs::write(&config, file.to_string()).expect("write");
    // A proxy in the environment is not asked for the metadata service.
    let proxy = fake_clouds::proxy::RecordingProxy::start();
    let plugin = plugin(&google).with_env([
        ("GOOGLE_APPLICATION_CREDENTIALS", config.display().to_string()),
        ("HTTP_PROXY", proxy.url()),
        ("NO_PROXY", "127.0.0.1".to_string()),
    ]);
    let exec = plugin.exec(&[], request(GCR).as_bytes());
    expect_accepted(&exec, ApiVersion::V1, GCR, &[google.secrets(), vec![subject.clone()]].concat());
    assert_eq!(google.exchanges(), vec![(POOL_AUDIENCE.to_string(), subject)]);
    assert!(proxy.requests().is_empty(), "{:?}", proxy.requests());
    drop(imds);

    // Any other plain-http host stays refused.
    file["credential_source"]["url"] = "http://subject-tokens.example.invalid/token".into();
    std::fs::write(&config, file.to_string()).expect("write");
    let exec = plugin.exec(&["--no-cache"], request(GCR).as_bytes());
    expect_rejected(&exec, &google.secrets());
    assert!(exec.stderr.contains("plain http"), "{}", exec.stderr);
}

#[test]
fn check_as_the_node_pools_service_account_asks_the_policy_troubleshooter() {
    const NODES: &str = "node-pool@fake-project.iam.gserviceaccount.com";
    const DOWNLOAD: &str = "artifactregistry.repositories.downloadArtifacts";
    const PROJECT_RESOURCE: &str = "//cloudresourcemanager.googleapis.com/projects/fake-project";
    let google = FakeGoogle::start();
    let plugin = plugin(&google);
    google.bind(PROJECT_RESOURCE, "roles/artifactregistry.reader", &[DOWNLOAD], &[&format!("serviceAccount:{NODES}")]);
    let check = |principal: &str, image: &str| {
        let exec = plugin.exec(&["check", "--as", principal, "--image", image, "--output", "json"], b"");
        let report: serde_json::Value = serde_json::from_str(&exec.stdout).unwrap_or_default();
        (exec, report["images"][0].clone())
    };

    // Granted at the project, inherited by the repository.
    let (exec, image) = check(NODES, ARTIFACT_REGISTRY);
    assert_eq!(exec.code, Some(0), "{}{}", exec.stdout, exec.stderr);
    assert_eq!(image["identity"], format!("{NODES} (evaluated by Google's Policy Troubleshooter)"));
    assert_eq!(image["checks"][0]["action"], DOWNLOAD);
    assert_eq!(image["checks"][0]["detail"], format!("granted by roles/artifactregistry.reader on {PROJECT_RESOURCE}"));
    let repository = "//artifactregistry.googleapis.com/projects/fake-project/locations/us/repositories/images";
    assert_eq!(google.troubleshot(), [(NODES.to_string(), repository.to_string(), DOWNLOAD.to_string())]);
    assert_eq!(google.calls("metadata:token"), 1, "asked as the runner's own identity");

    // Container Registry's images are Artifact Registry's gcr.io repositories.
    let (exec, _) = check(NODES, GCR);
    assert_eq!(exec.code, Some(0), "{}", exec.stdout);
    let gcr_repository = "//artifactregistry.googleapis.com/projects/fake-project/locations/us/repositories/gcr.io";
    assert_eq!(google.troubleshot().last().map(|t| t.1.as_str()), Some(gcr_repository));

    // Another service account, bound to nothing: denied, and what would grant it.
    let (exec, image) = check("batch@fake-project.iam.gserviceaccount.com", ARTIFACT_REGISTRY);
    assert_eq!(exec.code, Some(2));
    assert_eq!(image["checks"][0]["result"], "denied");
    assert!(image["checks"][0]["detail"].as_str().is_some_and(|d| d.contains("no role binding")), "{image}");

    // A deny policy wins over the binding, and is named.
    let deny_policy = "policies/cloudresourcemanager.googleapis.com%2Fprojects%2Ffake-project/denypolicies/no-pulls";
    google.deny_permission(PROJECT_RESOURCE, deny_policy, &format!("serviceAccount:{NODES}"), DOWNLOAD);
    let (exec, image) = check(NODES, ARTIFACT_REGISTRY);
    assert_eq!(exec.code, Some(2));
    assert_eq!(image["checks"][0]["detail"], format!("denied by the deny policy {deny_policy} on {PROJECT_RESOURCE}"));

    // A runner that may not troubleshoot: unknown, with Google's reason.
    google.deny_troubleshooting();
    let (exec, image) = check(NODES, ARTIFACT_REGISTRY);
    assert_eq!(exec.code, Some(2));
    assert_eq!(image["checks"][0]["result"], "unknown");
    assert!(image["checks"][0]["detail"].as_str().is_some_and(|d| d.contains("does not have permission")), "{image}");
    expect_no_secrets(&exec.stdout, &google.secrets());

    // Not an email: refused before any call.
    let (exec, _) = check("node-pool", ARTIFACT_REGISTRY);
    assert_eq!(exec.code, Some(1), "{}", exec.stderr);
    assert!(exec.stderr.contains("not an email"), "{}", exec.stderr);
}
