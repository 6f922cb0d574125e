//! The real `acr-credential-provider` binary against the in-process fake Entra
//! ID and IMDS (`FakeAzure`) and a fake ACR (`FakeRegistry::start_acr`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use credential_provider::protocol::ApiVersion;
use fake_clouds::azure::TENANT;
use fake_clouds::conformance::{
    PluginUnderTest, TestServiceAccount, check_as_service_account, expect_accepted, expect_no_secrets, expect_rejected,
    request_json, run_conformance,
};
use fake_clouds::registry::ACR_USERNAME;
use fake_clouds::server::nonce;
use fake_clouds::{FakeAzure, FakeRegistry, Fault};

const BINARY: &str = env!("CARGO_BIN_EXE_acr-credential-provider");
const IMAGE: &str = "myacr.azurecr.io/team/app";
const HOSTS: &[&str] =
    &["myacr.azurecr.io", "myacr-abc123.azurecr.io", "myacr.westeurope.geo.azurecr.io", "other.azurecr.us"];
const APP: &str = "11111111-2222-3333-4444-555555555555";

/// A fake Azure and a fake ACR that trusts its tokens.
struct Clouds {
    azure: FakeAzure,
    registry: FakeRegistry,
}

impl Clouds {
    fn start() -> Clouds {
        let azure = FakeAzure::start();
        let registry = FakeRegistry::start_acr(azure.token_check());
        Clouds { azure, registry }
    }

    fn secrets(&self) -> Vec<String> {
        let mut secrets = self.azure.secrets();
        secrets.extend(self.registry.secrets());
        secrets
    }

    /// The plugin with every endpoint pointed at the fakes and no azure.json.
    fn plugin(&self) -> PluginUnderTest {
        PluginUnderTest::new(BINARY)
            .with_env(self.azure.endpoint_env())
            .with_env([("CREDENTIAL_PROVIDER_REGISTRY_ENDPOINTS", self.registry.endpoints_for(HOSTS))])
    }
}

fn request(image: &str) -> String {
    request_json(ApiVersion::V1, image, None, false)
}

fn host(image: &str) -> &str {
    image.split('/').next().unwrap_or_default()
}

/// Writes `json` as an azure.json in the plugin's home and returns its path.
fn azure_json(plugin: &PluginUnderTest, json: &serde_json::Value) -> PathBuf {
    let path = plugin.home().join("azure.json");
    std::fs::write(&path, json.to_string()).expect("write azure.json");
    path
}

#[test]
fn a_managed_identity_serves_every_api_version() {
    let clouds = Clouds::start();
    let plugin = clouds.plugin();
    for response in run_conformance(&plugin, IMAGE, None, || clouds.secrets()) {
        let auth = &response.auth[host(IMAGE)];
        assert_eq!(auth.username, ACR_USERNAME);
        assert!(clouds.registry.secrets().contains(&auth.password), "the password is the ACR refresh token");
        // Refresh tokens live 3 hours; the kubelet may keep this one for half of that.
        let seconds = response.cache_seconds();
        assert!((5300.0..=5400.0).contains(&seconds), "{seconds}");
    }
    assert_eq!(clouds.azure.grants(), vec![("system".to_string(), "imds".to_string())]);
    assert_eq!(clouds.registry.calls("exchange"), 1);
    assert_eq!(clouds.registry.exchange_tenants(), vec![Some(TENANT.to_string())], "the tenant from the token's tid");
}

#[test]
fn every_acr_host_form_is_served_and_keyed_by_itself() {
    let clouds = Clouds::start();
    let plugin = clouds.plugin();
    for host in HOSTS {
        let image = format!("{host}/team/app");
        let response = expect_accepted(&plugin.request(&request(&image)), ApiVersion::V1, &image, &clouds.secrets());
        assert_eq!(response.auth.keys().collect::<Vec<_>>(), vec![host]);
    }
}

#[test]
fn user_assigned_identities_by_client_id_and_resource_id() {
    let clouds = Clouds::start();
    let resource =
        "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/puller";
    for id in ["99999999-8888-7777-6666-555555555555", resource] {
        clouds.azure.add_user_assigned_identity(id);
        let plugin = clouds.plugin();
        let config = azure_json(
            &plugin,
            &serde_json::json!({ "useManagedIdentityExtension": true, "userAssignedIdentityID": id }),
        );
        let exec = plugin.exec(&[config.to_str().unwrap_or_default(), "-vvv"], request(IMAGE).as_bytes());
        expect_accepted(&exec, ApiVersion::V1, IMAGE, &clouds.secrets());
    }
    let who: Vec<String> = clouds.azure.grants().into_iter().map(|(who, _)| who).collect();
    assert_eq!(who, vec!["99999999-8888-7777-6666-555555555555".to_string(), resource.to_string()]);
}

#[test]
fn an_edited_azure_json_is_obeyed_by_the_very_next_exec() {
    let clouds = Clouds::start();
    let (first, second) = ("99999999-8888-7777-6666-555555555555", "88888888-7777-6666-5555-444444444444");
    clouds.azure.add_user_assigned_identity(first);
    clouds.azure.add_user_assigned_identity(second);
    let plugin = clouds.plugin();
    let identity = |id: &str| serde_json::json!({ "useManagedIdentityExtension": true, "userAssignedIdentityID": id });
    let config = azure_json(&plugin, &identity(first));
    let args = [config.to_str().unwrap_or_default()];
    for _ in 0..2 {
        expect_accepted(&plugin.exec(&args, request(IMAGE).as_bytes()), ApiVersion::V1, IMAGE, &clouds.secrets());
    }
    // Replaced as a config management tool does: a new file renamed over the old.
    let edited = plugin.home().join("azure.json.new");
    std::fs::write(&edited, identity(second).to_string()).expect("write");
    std::fs::rename(&edited, &config).expect("replace azure.json");
    expect_accepted(&plugin.exec(&args, request(IMAGE).as_bytes()), ApiVersion::V1, IMAGE, &clouds.secrets());
    let who: Vec<String> = clouds.azure.grants().into_iter().map(|(who, _)| who).collect();
    assert_eq!(who, vec![first.to_string(), second.to_string()], "the repeat was a cache hit; the edit was not missed");
}

#[test]
fn a_client_secret_from_azure_json_is_exchanged_never_handed_to_the_kubelet() {
    let clouds = Clouds::start();
    let secret = clouds.azure.add_secret_app(APP);
    let plugin = clouds.plugin();
    let config = azure_json(
        &plugin,
        &serde_json::json!({ "cloud": "AzurePublicCloud", "tenantId": TENANT, "aadClientId": APP, "aadClientSecret": secret, "location": "westeurope" }),
    );
    let exec = plugin.exec(&[config.to_str().unwrap_or_default(), "-vvv"], request(IMAGE).as_bytes());
    let response = expect_accepted(&exec, ApiVersion::V1, IMAGE, &clouds.secrets());
    let auth = &response.auth[host(IMAGE)];
    assert_eq!(auth.username, ACR_USERNAME, "upstream would send the client id and secret");
    assert_ne!(auth.password, secret);
    assert_eq!(clouds.azure.grants(), vec![(APP.to_string(), "secret".to_string())]);
    assert_eq!(clouds.registry.exchange_tenants(), vec![Some(TENANT.to_string())]);
}

#[test]
fn azure_json_keys_are_read_whatever_their_case() {
    let clouds = Clouds::start();
    let secret = clouds.azure.add_secret_app(APP);
    let plugin = clouds.plugin();
    // As real files spell them: `tenantID`, and any other case upstream's decoder accepts.
    let config = azure_json(
        &plugin,
        &serde_json::json!({ "Cloud": "AzurePublicCloud", "tenantID": TENANT, "AADClientID": APP, "AADClientSecret": secret }),
    );
    let exec = plugin.exec(&[config.to_str().unwrap_or_default()], request(IMAGE).as_bytes());
    expect_accepted(&exec, ApiVersion::V1, IMAGE, &clouds.secrets());
    assert_eq!(clouds.azure.grants(), vec![(APP.to_string(), "secret".to_string())]);
    assert_eq!(clouds.registry.exchange_tenants(), vec![Some(TENANT.to_string())]);
}

#[test]
fn the_environment_overrides_azure_json_and_the_authority_host_variable_works() {
    let clouds = Clouds::start();
    let secret = clouds.azure.add_secret_app(APP);
    let plugin = PluginUnderTest::new(BINARY)
        .with_env([("AZURE_AUTHORITY_HOST", clouds.azure.url())])
        .with_env([("CREDENTIAL_PROVIDER_REGISTRY_ENDPOINTS", clouds.registry.endpoints_for(HOSTS))])
        .with_env([("AZURE_TENANT_ID", TENANT), ("AZURE_CLIENT_ID", APP), ("AZURE_CLIENT_SECRET", secret.as_str())]);
    // The file says managed identity with a placeholder secret, as AKS writes it; the variables win.
    let config = azure_json(
        &plugin,
        &serde_json::json!({ "useManagedIdentityExtension": true, "aadClientId": "msi", "aadClientSecret": "msi" }),
    );
    let exec = plugin.exec(&[config.to_str().unwrap_or_default()], request(IMAGE).as_bytes());
    expect_accepted(&exec, ApiVersion::V1, IMAGE, &clouds.secrets());
    assert_eq!(clouds.azure.grants(), vec![(APP.to_string(), "secret".to_string())]);
}

#[test]
fn a_federated_token_file_is_a_client_assertion() {
    let clouds = Clouds::start();
    let token = format!("eyJhbGciOi.federated-{}.sig", nonce());
    clouds.azure.trust_assertion(TENANT, APP, &token);
    let mut plugin = clouds.plugin();
    let file = plugin.home().join("azure-identity-token");
    std::fs::write(&file, &token).expect("write token");
    plugin.set_env("AZURE_FEDERATED_TOKEN_FILE", file.to_str().unwrap_or_default());
    plugin.set_env("AZURE_CLIENT_ID", APP);
    plugin.set_env("AZURE_TENANT_ID", TENANT);
    let exec = plugin.exec(&["-vvv"], request(IMAGE).as_bytes());
    expect_accepted(&exec, ApiVersion::V1, IMAGE, &clouds.secrets());
    assert_eq!(clouds.azure.grants(), vec![(APP.to_string(), "assertion".to_string())]);
}

#[test]
fn kep_4412_uses_the_service_accounts_application() {
    let clouds = Clouds::start();
    let tenant = "0000aaaa-1111-2222-3333-444455556666";
    let token = format!("eyJhbGciOi.sa-{}.sig", nonce());
    clouds.azure.trust_assertion(tenant, APP, &token);
    let sa = TestServiceAccount {
        token: Some(token),
        annotations: BTreeMap::from([
            ("kubernetes.azure.com/acr-client-id".to_string(), APP.to_string()),
            ("kubernetes.azure.com/acr-tenant-id".to_string(), tenant.to_string()),
        ]),
    };
    run_conformance(&clouds.plugin(), IMAGE, Some(&sa), || clouds.secrets());
    // v1 requests used the token (once; then the cache keyed by it), older ones the node.
    let grants = clouds.azure.grants();
    assert!(grants.contains(&(APP.to_string(), "assertion".to_string())), "{grants:?}");
    assert!(grants.contains(&("system".to_string(), "imds".to_string())), "{grants:?}");
    assert_eq!(grants.len(), 2, "{grants:?}");
    assert!(clouds.registry.exchange_tenants().contains(&Some(tenant.to_string())));

    // `check` as the service account: the application's assertion, never the node's identity.
    let (exec, report) = check_as_service_account(&clouds.plugin(), &[], IMAGE, &sa);
    assert_eq!(exec.code, Some(0), "{}{}", exec.stdout, exec.stderr);
    assert!(report["images"][0]["identity"].as_str().is_some_and(|i| i.contains(APP)), "{report}");
    let grants = clouds.azure.grants();
    assert_eq!(grants.iter().filter(|g| g.1 == "assertion").count(), 2, "{grants:?}");
    assert_eq!(grants.iter().filter(|g| g.1 == "imds").count(), 1, "{grants:?}");
}

#[test]
fn a_refused_assertion_never_falls_back_to_the_node() {
    let clouds = Clouds::start();
    let token = format!("eyJhbGciOi.untrusted-{}.sig", nonce());
    let mut secrets = clouds.secrets();
    secrets.push(token.clone());
    let sa = TestServiceAccount {
        token: Some(token),
        annotations: BTreeMap::from([
            ("kubernetes.azure.com/acr-client-id".to_string(), APP.to_string()),
            ("kubernetes.azure.com/acr-tenant-id".to_string(), TENANT.to_string()),
        ]),
    };
    clouds.azure.trust_assertion(TENANT, APP, "some-other-token");
    let exec = clouds.plugin().exec(&["-vvv"], request_json(ApiVersion::V1, IMAGE, Some(&sa), false).as_bytes());
    assert_eq!(exec.code, Some(2), "{}", exec.stderr);
    assert_eq!(exec.stdout, "");
    assert!(exec.stderr.contains("AADSTS7000215"), "{}", exec.stderr);
    expect_no_secrets(&exec.stderr, &secrets);
    assert_eq!(clouds.azure.calls("imds:token"), 0);
}

#[test]
fn a_token_without_the_client_annotation_is_refused_and_never_uses_the_node() {
    let clouds = Clouds::start();
    for annotations in
        [BTreeMap::new(), BTreeMap::from([(acr_credential_provider::CLIENT_ID_ANNOTATION.to_string(), String::new())])]
    {
        let sa = TestServiceAccount { token: Some(format!("sa-token-{}", nonce())), annotations };
        let mut secrets = clouds.secrets();
        secrets.extend(sa.token.clone());
        let exec = clouds.plugin().request(&request_json(ApiVersion::V1, IMAGE, Some(&sa), false));
        expect_rejected(&exec, &secrets);
        assert_eq!(exec.code, Some(1), "{}", exec.stderr);
        assert!(exec.stderr.contains("kubernetes.azure.com/acr-client-id"), "{}", exec.stderr);
    }
    assert!(clouds.azure.grants().is_empty(), "no identity was asked for a token: {:?}", clouds.azure.grants());
    assert_eq!(clouds.registry.calls("exchange"), 0);
    // The same request without a token is the node's, as before.
    let exec = clouds.plugin().request(&request_json(ApiVersion::V1, IMAGE, None, false));
    expect_accepted(&exec, ApiVersion::V1, IMAGE, &clouds.secrets());
}

#[test]
fn a_mirror_gets_its_targets_credential_under_its_own_name() {
    let clouds = Clouds::start();
    let plugin = clouds.plugin();
    let image = "mcr.microsoft.com/dotnet/runtime";
    let exec =
        plugin.exec(&["--registry-mirror", "mcr.microsoft.com:myacr.azurecr.io", "-vvv"], request(image).as_bytes());
    let response = expect_accepted(&exec, ApiVersion::V1, image, &clouds.secrets());
    assert_eq!(response.auth.keys().collect::<Vec<_>>(), vec!["mcr.microsoft.com"]);
    assert_eq!(clouds.registry.calls("exchange"), 1);
    // Without the mirror flag, the same image is not ACR's.
    let exec = plugin.request(&request(image));
    expect_rejected(&exec, &clouds.secrets());
    // Spaces around `:` and `,`, as upstream's users write them.
    let spaced = "aaa.example.com: myacr.azurecr.io, mcr.microsoft.com : myacr.azurecr.io";
    let exec = plugin.exec(&["--registry-mirror", spaced], request(image).as_bytes());
    let response = expect_accepted(&exec, ApiVersion::V1, image, &clouds.secrets());
    assert_eq!(response.auth.keys().collect::<Vec<_>>(), vec!["mcr.microsoft.com"]);
    // A mirror target must be ACR.
    let exec = plugin.exec(&["--registry-mirror", "mcr.microsoft.com:evil.io"], request(image).as_bytes());
    expect_rejected(&exec, &clouds.secrets());
}

#[test]
fn the_cache_duration_follows_the_refresh_tokens_expiry() {
    let clouds = Clouds::start();
    clouds.registry.set_refresh_lifetime(600);
    let response = expect_accepted(&clouds.plugin().request(&request(IMAGE)), ApiVersion::V1, IMAGE, &clouds.secrets());
    let seconds = response.cache_seconds();
    assert!((290.0..=300.0).contains(&seconds), "{seconds}");
}

#[test]
fn cloud_faults_end_in_one_line_with_nothing_on_stdout() {
    let clouds = Clouds::start();
    let secret = clouds.azure.add_secret_app(APP);
    let plugin = clouds.plugin().with_env([
        ("AZURE_TENANT_ID", TENANT),
        ("AZURE_CLIENT_ID", APP),
        ("AZURE_CLIENT_SECRET", secret.as_str()),
    ]);
    clouds.azure.set_fault(Some(Fault::Status(503)));
    let exec = plugin.exec(&["-vvv"], request(IMAGE).as_bytes());
    assert_eq!(exec.code, Some(2), "{}", exec.stderr);
    assert_eq!(exec.stdout, "");
    expect_no_secrets(&exec.stderr, &clouds.secrets());
    assert_eq!(clouds.azure.calls("entra:token"), 4, "the first call and three retries");
    clouds.azure.set_fault(None);

    for fault in [Fault::Status(500), Fault::Garbage] {
        clouds.registry.set_exchange_fault(Some(fault.clone()));
        let exec = plugin.exec(&["--no-cache"], request(IMAGE).as_bytes());
        expect_rejected(&exec, &clouds.secrets());
        assert_eq!(exec.code, Some(2), "{fault:?}");
    }
    clouds.registry.set_exchange_fault(None);
    expect_accepted(&plugin.request(&request(IMAGE)), ApiVersion::V1, IMAGE, &clouds.secrets());
}

#[test]
fn an_exchange_refusal_says_which_role_is_missing() {
    let azure = FakeAzure::start();
    let registry = FakeRegistry::start_acr(|_| false);
    let plugin = PluginUnderTest::new(BINARY)
        .with_env(azure.endpoint_env())
        .with_env([("CREDENTIAL_PROVIDER_REGISTRY_ENDPOINTS", registry.endpoints_for(HOSTS))]);
    let exec = plugin.request(&request(IMAGE));
    expect_rejected(&exec, &azure.secrets());
    assert_eq!(exec.code, Some(2));
    assert!(exec.stderr.contains("AcrPull"), "{}", exec.stderr);
}

#[test]
fn check_reports_the_token_the_exchange_and_pull() {
    let clouds = Clouds::start();
    let plugin = clouds.plugin();
    let exec = plugin.exec(&["check", "--image", "myacr.azurecr.io/team/app:1.0", "--output", "json"], b"");
    assert_eq!(exec.code, Some(0), "{}{}", exec.stdout, exec.stderr);
    let report: serde_json::Value = serde_json::from_str(&exec.stdout).expect("json");
    assert_eq!(report["allowed"], true);
    assert_eq!(report["images"][0]["identity"], "system-assigned managed identity");
    let actions: Vec<&str> =
        report["images"][0]["checks"].as_array().expect("checks").iter().filter_map(|c| c["action"].as_str()).collect();
    assert_eq!(
        actions,
        [
            "entra:token",
            "acr:exchange",
            "registry:challenge",
            "registry:token repository:team/app:pull",
            "registry:pull team/app"
        ]
    );
    expect_no_secrets(&exec.stdout, &clouds.secrets());
    expect_no_secrets(&exec.stderr, &clouds.secrets());

    clouds.registry.deny("team/secret");
    let exec = plugin.exec(&["check", "--image", "myacr.azurecr.io/team/secret"], b"");
    assert_eq!(exec.code, Some(2));
    assert!(exec.stdout.contains("denied"), "{}", exec.stdout);
}

#[test]
fn thirty_two_processes_on_a_cold_cache_make_one_token_call_and_one_exchange() {
    let clouds = Clouds::start();
    let plugin = clouds.plugin();
    for exec in plugin.exec_together(32, &[], request(IMAGE).as_bytes()) {
        expect_accepted(&exec, ApiVersion::V1, IMAGE, &clouds.secrets());
    }
    assert_eq!(clouds.azure.calls("imds:token"), 1);
    assert_eq!(clouds.registry.calls("exchange"), 1);
}

#[test]
fn an_unusable_azure_json_is_a_one_line_error() {
    let clouds = Clouds::start();
    let plugin = clouds.plugin();
    let config = plugin.home().join("azure.json");
    std::fs::write(&config, r#"{"aadClientSecret": "do-not-print-me-please", "tenantId": 42}"#).expect("write");
    for path in [config.to_str().unwrap_or_default(), "/nonexistent/azure.json"] {
        let exec = plugin.exec(&[path], request(IMAGE).as_bytes());
        expect_rejected(&exec, &["do-not-print-me-please".to_string()]);
        assert_eq!(exec.code, Some(1));
    }
}

#[test]
fn a_managed_identity_endpoint_that_never_answers_is_said_with_its_cause() {
    let clouds = Clouds::start();
    // An endpoint that never answers: the timeout and where, inside the exec's budget.
    // (One that refuses is checked for every plugin in tests/every_plugin.rs.)
    let silent = fake_clouds::server::SilentServer::start();
    let address = silent.address();
    let started = std::time::Instant::now();
    let exec = clouds
        .plugin()
        .with_env([("CREDENTIAL_PROVIDER_ENDPOINTS", format!("imds=http://{address},login=http://{address}"))])
        .exec(&["--no-cache"], request(IMAGE).as_bytes());
    assert!(started.elapsed() < std::time::Duration::from_secs(29), "{:?}", started.elapsed());
    expect_rejected(&exec, &clouds.secrets());
    assert!(
        exec.stderr.contains(&format!("cannot reach http://{address}/metadata/identity/oauth2/token")),
        "{}",
        exec.stderr
    );
    assert!(exec.stderr.contains("timed out"), "{}", exec.stderr);
}

#[test]
fn imds_is_called_direct_and_never_through_the_nodes_proxy() {
    const TEST: &str = "imds_is_called_direct_and_never_through_the_nodes_proxy";
    if !fake_clouds::netns::in_private_namespaces(TEST, &[]) {
        return;
    }
    // IMDS at its own address, in this test's network namespace only.
    fake_clouds::netns::add_loopback_address("169.254.169.254/32");
    let azure = FakeAzure::start_at("169.254.169.254:80");
    let registry = FakeRegistry::start_acr(azure.token_check());
    let proxy = fake_clouds::proxy::RecordingProxy::start();
    let plugin = PluginUnderTest::new(BINARY).with_env([
        ("CREDENTIAL_PROVIDER_REGISTRY_ENDPOINTS", registry.endpoints_for(HOSTS).as_str()),
        ("HTTP_PROXY", proxy.url().as_str()),
        ("HTTPS_PROXY", proxy.url().as_str()),
        ("NO_PROXY", "127.0.0.1"),
    ]);
    let exec = plugin.exec(&["-vvv"], request(IMAGE).as_bytes());
    let mut secrets = azure.secrets();
    secrets.extend(registry.secrets());
    expect_accepted(&exec, ApiVersion::V1, IMAGE, &secrets);
    assert_eq!(proxy.requests(), Vec::<String>::new(), "the proxy saw the node's identity calls");
    assert_eq!(azure.grants(), vec![("system".to_string(), "imds".to_string())]);
}

#[test]
fn the_entra_token_goes_to_the_login_server_whatever_realm_the_registry_names() {
    let clouds = Clouds::start();
    let elsewhere = FakeRegistry::start_acr(|_| true);
    clouds.registry.set_realm_base(&elsewhere.url());
    let exec = clouds.plugin().request(&request(IMAGE));
    expect_accepted(&exec, ApiVersion::V1, IMAGE, &clouds.secrets());
    assert_eq!(clouds.registry.calls("exchange"), 1);
    assert_eq!(elsewhere.calls("exchange"), 0, "the realm's host was sent the Entra token");
}

#[test]
fn an_oversized_identity_answer_is_refused_unread() {
    let clouds = Clouds::start();
    clouds.azure.set_fault(Some(Fault::Oversized));
    let exec = clouds.plugin().exec(&["--no-cache"], request(IMAGE).as_bytes());
    expect_rejected(&exec, &clouds.secrets());
    assert_eq!(exec.code, Some(2));
    assert!(exec.stderr.contains("larger than 4 MiB"), "{}", exec.stderr);
}

#[test]
fn aks_identity_bindings_exchange_the_service_account_token_at_the_clusters_endpoint() {
    const TEST: &str = "aks_identity_bindings_exchange_the_service_account_token_at_the_clusters_endpoint";
    if !fake_clouds::netns::in_private_namespaces(TEST, &[]) {
        return;
    }
    // The API server at 127.0.0.2:443 in this namespace, under the binding's own name.
    let binding = fake_clouds::azure::FakeIdentityBinding::start_at("127.0.0.2:443", "ib.aks.test");
    let registry = FakeRegistry::start_acr(binding.token_check());
    let node = tempfile::tempdir().expect("node");
    let ca_file = node.path().join("ca.crt");
    std::fs::write(&ca_file, binding.ca_pem()).expect("CA");
    let proxy = fake_clouds::proxy::RecordingProxy::start();
    let plugin = PluginUnderTest::new(BINARY).with_env([
        ("CREDENTIAL_PROVIDER_REGISTRY_ENDPOINTS", registry.endpoints_for(HOSTS)),
        ("HTTPS_PROXY", proxy.url()),
        ("HTTP_PROXY", proxy.url()),
        ("NO_PROXY", "127.0.0.1".to_string()),
    ]);
    let ca_arg = ca_file.display().to_string();
    let flags = |default_client: Option<&str>| {
        let mut flags = vec!["--ib-sni-name", "ib.aks.test", "--ib-apiserver-ip", "127.0.0.2", "--ib-ca-file"];
        flags.push(&ca_arg);
        if let Some(client) = default_client {
            flags.extend(["--ib-default-client-id", client]);
        }
        flags.into_iter().map(str::to_string).collect::<Vec<String>>()
    };
    let token = format!("sa-token-{}", nonce());
    let service_account = |annotations: &[(&str, &str)]| TestServiceAccount {
        token: Some(token.clone()),
        annotations: annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    };
    let secrets = || [registry.secrets(), binding.issued(), vec![token.clone()]].concat();
    let run = |flags: &[String], annotations: &[(&str, &str)]| {
        let args: Vec<&str> = flags.iter().map(String::as_str).collect();
        let request = request_json(ApiVersion::V1, IMAGE, Some(&service_account(annotations)), false);
        plugin.with_fresh_cache().exec(&args, request.as_bytes())
    };

    // The default client, then the one the service account names.
    expect_accepted(&run(&flags(Some(APP)), &[]), ApiVersion::V1, IMAGE, &secrets());
    let named = "99999999-8888-7777-6666-555555555555";
    expect_accepted(
        &run(&flags(Some(APP)), &[(acr_credential_provider::CLIENT_ID_ANNOTATION, named)]),
        ApiVersion::V1,
        IMAGE,
        &secrets(),
    );
    let clients: Vec<String> = binding.grants().into_iter().map(|(client, _)| client).collect();
    assert_eq!(clients, [APP, named]);
    assert!(binding.grants().iter().all(|(_, assertion)| *assertion == token));
    assert_eq!(registry.calls("exchange"), 2, "then ACR's exchange, as for any Entra token");
    assert!(proxy.requests().is_empty(), "never through a proxy: {:?}", proxy.requests());

    // No client at all: refused, never the node's identity.
    let exec = run(&flags(None), &[]);
    expect_rejected(&exec, &secrets());
    assert_eq!(exec.code, Some(1));
    assert!(exec.stderr.contains("--ib-default-client-id"), "{}", exec.stderr);
    // A certificate the cluster's CA did not sign: refused, and the token stays home.
    let other = fake_clouds::tls::TestCa::new();
    std::fs::write(&ca_file, &other.certificate_pem).expect("another CA");
    let before = binding.grants().len();
    let exec = run(&flags(Some(APP)), &[]);
    expect_rejected(&exec, &secrets());
    assert_eq!(exec.code, Some(2), "{}", exec.stderr);
    assert_eq!(binding.grants().len(), before);
    // Upstream's rules for the flags.
    let exec = plugin
        .exec(&["--ib-sni-name", "https://ib.aks.test", "--ib-apiserver-ip", "127.0.0.2"], request(IMAGE).as_bytes());
    assert_eq!(exec.code, Some(1), "{}", exec.stderr);
    assert!(exec.stderr.contains("must not carry a scheme"), "{}", exec.stderr);
}

#[test]
fn check_as_the_nodes_identity_reads_azures_role_and_deny_assignments() {
    const KUBELET: &str = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";
    const GROUP: &str = "99999999-8888-4777-8666-555555555555";
    use fake_clouds::azure::SUBSCRIPTION;
    let clouds = Clouds::start();
    let azure = &clouds.azure;
    // Three registries: the subscription's list takes two pages.
    azure.add_registry("other-rg", "another", "another.azurecr.io", "LegacyRegistryPermissions");
    azure.add_registry("other-rg", "third", "third.azurecr.io", "LegacyRegistryPermissions");
    let registry = azure.add_registry("aks-rg", "myacr", "myacr.azurecr.io", "LegacyRegistryPermissions");
    let resource_group = format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/aks-rg");
    // AcrPull to a group the kubelet identity belongs to, at the resource group.
    azure.add_membership(KUBELET, GROUP);
    azure.assign_role(&resource_group, GROUP, &azure.acr_pull(), None);
    let plugin = clouds.plugin();
    let config = azure_json(
        &plugin,
        &serde_json::json!({ "cloud": "AzurePublicCloud", "useManagedIdentityExtension": true, "subscriptionId": SUBSCRIPTION }),
    );
    let config = config.display().to_string();
    let check = |principal: &str, image: &str| {
        let exec = plugin.exec(&[&config, "check", "--as", principal, "--image", image, "--output", "json"], b"");
        let report: serde_json::Value = serde_json::from_str(&exec.stdout).unwrap_or_default();
        (exec, report["images"][0].clone())
    };

    // Through the group, inherited from the resource group.
    let (exec, image) = check(KUBELET, IMAGE);
    assert_eq!(exec.code, Some(0), "{}{}", exec.stdout, exec.stderr);
    assert_eq!(image["identity"], format!("{KUBELET} (evaluated from Azure's role and deny assignments)"));
    assert_eq!(image["checks"][0]["detail"], format!("{registry} (registry permissions)"));
    assert_eq!(image["checks"][1]["action"], "Microsoft.ContainerRegistry/registries/pull/read");
    assert_eq!(image["checks"][1]["detail"], format!("granted by AcrPull at {resource_group}"));
    assert_eq!(clouds.registry.calls("exchange"), 0, "nothing is pulled, as anybody");

    // Another identity: not granted, and what would grant it.
    let (exec, image) = check("12345678-1234-4234-8234-123456789012", IMAGE);
    assert_eq!(exec.code, Some(2));
    assert!(
        image["checks"][1]["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("no role assignment") && d.contains("AcrPull")),
        "{image}"
    );

    // A deny assignment at the registry wins over the role.
    azure.deny_assignment(&registry, "no-pulls-from-nodes", &["Microsoft.ContainerRegistry/*"], &[], &[GROUP]);
    let (exec, image) = check(KUBELET, IMAGE);
    assert_eq!(exec.code, Some(2));
    assert_eq!(
        image["checks"][1]["detail"],
        format!("denied by the deny assignment no-pulls-from-nodes at {registry}")
    );

    // A registry with repository permissions needs the data actions; a condition is not judged.
    let abac = azure.add_registry("aks-rg", "tenant", "tenant.azurecr.io", "AbacRepositoryPermissions");
    let reader = azure.define_role(
        "b93aa761-3e63-49ed-ac28-beffa264f7ac",
        "Container Registry Repository Reader",
        &[],
        &[
            "Microsoft.ContainerRegistry/registries/repositories/content/read",
            "Microsoft.ContainerRegistry/registries/repositories/metadata/read",
        ],
    );
    azure.assign_role(
        &abac,
        KUBELET,
        &reader,
        Some("@Resource[Microsoft.ContainerRegistry/registries/repositories:name] StringStartsWith 'team/'"),
    );
    let (exec, image) = check(KUBELET, "tenant.azurecr.io/team/app");
    assert_eq!(exec.code, Some(2), "{}", exec.stdout);
    let checks = image["checks"].as_array().cloned().unwrap_or_default();
    assert_eq!(checks.len(), 3, "{image}");
    assert!(
        checks[1..]
            .iter()
            .all(|c| c["result"] == "unknown" && c["detail"].as_str().is_some_and(|d| d.contains("conditionally"))),
        "{image}"
    );

    // A runner that may not read assignments: unknown, with Azure's reason.
    azure.deny_authorization_reads();
    let (exec, image) = check(KUBELET, IMAGE);
    assert_eq!(exec.code, Some(2));
    assert!(image["checks"][1]["detail"].as_str().is_some_and(|d| d.contains("Insufficient privileges")), "{image}");
    expect_no_secrets(&exec.stdout, &clouds.secrets());

    // Not an object id: refused before any call.
    let (exec, _) = check("aks-agentpool", IMAGE);
    assert_eq!(exec.code, Some(1), "{}", exec.stderr);
    assert!(exec.stderr.contains("not an object id"), "{}", exec.stderr);
}
