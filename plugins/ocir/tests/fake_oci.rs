//! The real `ocir-credential-provider` binary against the in-process fake
//! Oracle Cloud (`FakeOci`: metadata service and X.509 federation) and a fake
//! OCIR (`FakeRegistry::start_ocir`), both of which verify every signature.

use credential_provider::protocol::ApiVersion;
use fake_clouds::conformance::{
    PluginUnderTest, expect_accepted, expect_no_secrets, expect_rejected, request_json, run_conformance,
};
use fake_clouds::oci::{RP_KEY, RP_KEY_ENCRYPTED, RP_PASSPHRASE};
use fake_clouds::{FakeOci, FakeRegistry, Fault};

const BINARY: &str = env!("CARGO_BIN_EXE_ocir-credential-provider");
const IMAGE: &str = "iad.ocir.io/tenancy-namespace/team/app";
const LONG_FORM: &str = "ocir.us-ashburn-1.oci.oraclecloud.com/tenancy-namespace/team/app";

struct Clouds {
    oci: FakeOci,
    registry: FakeRegistry,
}

impl Clouds {
    fn start() -> Clouds {
        let oci = FakeOci::start();
        let registry = FakeRegistry::start_ocir(oci.signature_check());
        Clouds { oci, registry }
    }

    fn secrets(&self) -> Vec<String> {
        [self.oci.secrets(), self.registry.secrets()].concat()
    }

    fn plugin(&self) -> PluginUnderTest {
        PluginUnderTest::new(BINARY).with_env(self.oci.endpoint_env()).with_env([(
            "CREDENTIAL_PROVIDER_REGISTRY_ENDPOINTS",
            self.registry.endpoints_for(&["iad.ocir.io", "phx.ocir.io", "ocir.us-ashburn-1.oci.oraclecloud.com"]),
        )])
    }
}

fn request(image: &str) -> String {
    request_json(ApiVersion::V1, image, None, false)
}

fn host(image: &str) -> &str {
    image.split('/').next().unwrap_or_default()
}

#[test]
fn the_instance_principal_serves_every_api_version() {
    let clouds = Clouds::start();
    let plugin = clouds.plugin();
    for response in run_conformance(&plugin, IMAGE, None, || clouds.secrets()) {
        let auth = &response.auth[host(IMAGE)];
        assert_eq!(auth.username, "BEARER_TOKEN");
        assert!(clouds.registry.secrets().contains(&auth.password));
        let seconds = response.cache_seconds();
        assert!((1700.0..=1800.0).contains(&seconds), "half of the token's hour: {seconds}");
    }
    assert_eq!(clouds.oci.calls("auth:x509"), 1);
    assert_eq!(clouds.registry.calls("ocir-token"), 1);
    assert_eq!(clouds.registry.docker_token_principals(), vec!["instance".to_string()]);
}

#[test]
fn the_federation_token_is_cached_and_shared_across_registries() {
    let clouds = Clouds::start();
    let plugin = clouds.plugin();
    for image in [IMAGE, LONG_FORM, "phx.ocir.io/ns/app"] {
        expect_accepted(&plugin.request(&request(image)), ApiVersion::V1, image, &clouds.secrets());
    }
    assert_eq!(clouds.oci.calls("auth:x509"), 1, "one federation for three registries");
    assert_eq!(clouds.oci.calls("imds:identity/cert.pem"), 1, "the metadata service is asked once");
    assert_eq!(clouds.registry.calls("ocir-token"), 3);
}

#[test]
fn thirty_two_processes_at_boot_federate_once_and_fetch_once() {
    let clouds = Clouds::start();
    let plugin = clouds.plugin();
    for exec in plugin.exec_together(32, &[], request(IMAGE).as_bytes()) {
        expect_accepted(&exec, ApiVersion::V1, IMAGE, &clouds.secrets());
    }
    assert_eq!(clouds.oci.calls("auth:x509"), 1);
    assert_eq!(clouds.registry.calls("ocir-token"), 1);
}

#[test]
fn a_user_principal_from_the_oci_cli_config() {
    let clouds = Clouds::start();
    let plugin = clouds.plugin();
    let oci_dir = plugin.home().join(".oci");
    std::fs::create_dir_all(&oci_dir).expect("mkdir");
    let config = clouds.oci.user_config(&oci_dir);
    // Found in ~/.oci/config by default.
    let exec = plugin.exec(&["-vvv"], request(IMAGE).as_bytes());
    expect_accepted(&exec, ApiVersion::V1, IMAGE, &clouds.secrets());
    assert!(exec.stderr.contains("user principal"), "{}", exec.stderr);
    // And named explicitly, as the upstream plugin's USER_PRINCIPAL.
    let exec = plugin.with_env([("OCIR_AUTH_METHOD", "USER_PRINCIPAL")]).exec(
        &["--config-file", config.to_str().unwrap_or_default(), "--profile", "DEFAULT", "--no-cache"],
        request(IMAGE).as_bytes(),
    );
    expect_accepted(&exec, ApiVersion::V1, IMAGE, &clouds.secrets());
    assert_eq!(clouds.registry.docker_token_principals(), vec!["user".to_string(), "user".to_string()]);
    assert_eq!(clouds.oci.calls("auth:x509"), 0);
}

#[test]
fn a_named_oci_config_that_cannot_be_read_fails_instead_of_using_the_instance() {
    let clouds = Clouds::start();
    let plugin = clouds.plugin();
    let missing = plugin.home().join("nonexistent-config");
    let missing = missing.to_str().unwrap_or_default();
    let named = [
        (plugin.exec(&["--config-file", missing], request(IMAGE).as_bytes()), "--config-file"),
        (clouds.plugin().with_env([("OCI_CLI_CONFIG_FILE", missing)]).request(&request(IMAGE)), "OCI_CLI_CONFIG_FILE"),
        (clouds.plugin().with_env([("OCI_CONFIG_FILE", missing)]).request(&request(IMAGE)), "OCI_CONFIG_FILE"),
    ];
    for (exec, named_by) in named {
        expect_rejected(&exec, &clouds.secrets());
        assert_eq!(exec.code, Some(1), "{}", exec.stderr);
        assert!(exec.stderr.contains(missing) && exec.stderr.contains(named_by), "{}", exec.stderr);
    }
    assert_eq!(clouds.oci.calls("auth:x509"), 0, "never the instance principal instead");
    assert!(clouds.registry.docker_token_principals().is_empty());
}

#[test]
fn an_oci_config_that_appears_is_used_by_the_very_next_exec() {
    let clouds = Clouds::start();
    let plugin = clouds.plugin();
    for _ in 0..2 {
        expect_accepted(&plugin.request(&request(IMAGE)), ApiVersion::V1, IMAGE, &clouds.secrets());
    }
    assert_eq!(clouds.registry.docker_token_principals(), vec!["instance".to_string()], "then a cache hit");
    // Its presence picks the user principal over the instance principal.
    let oci_dir = plugin.home().join(".oci");
    std::fs::create_dir_all(&oci_dir).expect("mkdir");
    clouds.oci.user_config(&oci_dir);
    expect_accepted(&plugin.request(&request(IMAGE)), ApiVersion::V1, IMAGE, &clouds.secrets());
    let mut principals = clouds.registry.docker_token_principals();
    principals.sort();
    assert_eq!(principals, vec!["instance".to_string(), "user".to_string()], "not the first exec's instance principal");
}

#[test]
fn a_wrong_key_fails_the_signature_check() {
    let clouds = Clouds::start();
    let plugin = clouds.plugin();
    let config = clouds.oci.user_config(plugin.home());
    // Replace the registered API key with another one: the signature no longer verifies.
    std::fs::write(plugin.home().join("oci_api_key.pem"), RP_KEY).expect("write key");
    let exec = plugin.exec(&["--config-file", config.to_str().unwrap_or_default()], request(IMAGE).as_bytes());
    expect_rejected(&exec, &clouds.secrets());
    assert_eq!(exec.code, Some(2));
    assert!(exec.stderr.contains("signature does not verify"), "{}", exec.stderr);
}

#[test]
fn a_resource_principal_from_values_and_from_files() {
    let clouds = Clouds::start();
    let rpst = clouds.oci.resource_principal_token();
    let plugin = clouds.plugin().with_env([
        ("OCI_RESOURCE_PRINCIPAL_VERSION", "2.2"),
        ("OCI_RESOURCE_PRINCIPAL_RPST", rpst.as_str()),
        ("OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM", RP_KEY),
        ("OCI_RESOURCE_PRINCIPAL_REGION", "us-ashburn-1"),
    ]);
    let exec = plugin.exec(&["-vvv"], request(IMAGE).as_bytes());
    expect_accepted(&exec, ApiVersion::V1, IMAGE, &clouds.secrets());

    // Files, and a passphrase-protected key.
    let dir = tempfile::tempdir().expect("dir");
    let write = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).expect("write");
        path.display().to_string()
    };
    let mut plugin = clouds.plugin().with_env([("OCI_RESOURCE_PRINCIPAL_VERSION", "2.2")]);
    plugin.set_env("OCI_RESOURCE_PRINCIPAL_RPST", &write("rpst", &rpst));
    plugin.set_env("OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM", &write("key.pem", RP_KEY_ENCRYPTED));
    plugin.set_env("OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM_PASSPHRASE", &write("passphrase", RP_PASSPHRASE));
    let exec = plugin.exec(&["--no-cache", "-vvv"], request(IMAGE).as_bytes());
    expect_accepted(&exec, ApiVersion::V1, IMAGE, &clouds.secrets());
    assert_eq!(clouds.registry.docker_token_principals(), vec!["resource-principal".to_string(); 2]);

    // Without the passphrase the key cannot be read: a one-line configuration error.
    plugin.set_env("OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM_PASSPHRASE", "");
    let exec = plugin.exec(&["--no-cache"], request(IMAGE).as_bytes());
    expect_rejected(&exec, &clouds.secrets());
    assert!(exec.stderr.contains("passphrase"), "{}", exec.stderr);

    plugin.set_env("OCI_RESOURCE_PRINCIPAL_VERSION", "1.1");
    let exec = plugin.exec(&["--no-cache"], request(IMAGE).as_bytes());
    expect_rejected(&exec, &clouds.secrets());
    assert!(exec.stderr.contains("2.2"), "{}", exec.stderr);
}

#[test]
fn the_upstream_config_file_and_variables_work_unchanged() {
    let clouds = Clouds::start();
    let plugin = clouds.plugin();
    let config = clouds.oci.user_config(plugin.home());
    let yaml = plugin.home().join("config.yaml");
    std::fs::write(
        &yaml,
        "registryTokenPath: /20180419/docker/token\ndefaultUser: BEARER_TOKEN\nregistryProtocol: https\nocirAuthMethod: USER_PRINCIPAL\n",
    )
    .expect("write yaml");
    let exec = plugin
        .with_env([("OCI_CONFIG_FILE", config.to_str().unwrap_or_default())])
        .exec(&["-config", yaml.to_str().unwrap_or_default(), "-vvv"], request(IMAGE).as_bytes());
    expect_accepted(&exec, ApiVersion::V1, IMAGE, &clouds.secrets());
    assert_eq!(clouds.registry.docker_token_principals(), vec!["user".to_string()]);

    // Upstream's example kubelet config, by variables.
    let upstream = clouds.plugin().with_env([
        ("REGISTRY_TOKEN_PATH", "/20180419/docker/token"),
        ("DEFAULT_USER", "BEARER_TOKEN"),
        ("REGISTRY_PROTOCOL", "https"),
        ("OCIR_AUTH_METHOD", "INSTANCE_PRINCIPAL"),
        ("VERIFY_TOKEN_AUTH", "false"),
    ]);
    expect_accepted(&upstream.request(&request(IMAGE)), ApiVersion::V1, IMAGE, &clouds.secrets());

    let insecure = clouds.plugin().with_env([("REGISTRY_PROTOCOL", "http")]);
    let exec = insecure.request(&request(IMAGE));
    expect_rejected(&exec, &clouds.secrets());
    assert_eq!(exec.code, Some(1));
}

#[test]
fn federation_faults_are_retried_then_end_in_one_line() {
    let clouds = Clouds::start();
    let plugin = clouds.plugin();
    clouds.oci.set_fault(Some(Fault::Status(503)));
    let exec = plugin.exec(&["-vvv"], request(IMAGE).as_bytes());
    assert_eq!(exec.code, Some(2), "{}", exec.stderr);
    assert_eq!(exec.stdout, "");
    expect_no_secrets(&exec.stderr, &clouds.secrets());
    assert_eq!(clouds.oci.calls("auth:x509"), 4);
    clouds.oci.set_fault(None);
    expect_accepted(&plugin.request(&request(IMAGE)), ApiVersion::V1, IMAGE, &clouds.secrets());
}

#[test]
fn a_token_refused_before_a_policy_is_not_stuck_after_check() {
    let clouds = Clouds::start();
    let plugin = clouds.plugin();
    clouds.registry.deny_principal("instance");
    let exec = plugin.request(&request(IMAGE));
    expect_rejected(&exec, &clouds.secrets());
    assert!(exec.stderr.contains("policy"), "{}", exec.stderr);
    // The refusal also forgot the federation: the next exec federates afresh.
    let exec = plugin.request(&request(IMAGE));
    expect_rejected(&exec, &clouds.secrets());
    assert_eq!(clouds.oci.calls("auth:x509"), 2, "a refused token's federation is not reused");

    // The policy is granted; check shows it, and forgets what was cached.
    clouds.registry.allow_principal("instance");
    let exec = plugin.exec(&["check", "--image", &format!("{IMAGE}:1.0"), "--output", "json"], b"");
    assert_eq!(exec.code, Some(0), "{}{}", exec.stdout, exec.stderr);
    let report: serde_json::Value = serde_json::from_str(&exec.stdout).expect("json");
    let actions: Vec<&str> =
        report["images"][0]["checks"].as_array().expect("checks").iter().filter_map(|c| c["action"].as_str()).collect();
    assert_eq!(
        actions,
        [
            "principal",
            "ocir:token",
            "registry:challenge",
            "registry:token repository:tenancy-namespace/team/app:pull",
            "registry:pull tenancy-namespace/team/app"
        ]
    );
    assert_eq!(clouds.oci.calls("auth:x509"), 3, "check federates afresh");
    expect_no_secrets(&exec.stdout, &clouds.secrets());
    let tokens = clouds.registry.calls("ocir-token");
    expect_accepted(&plugin.request(&request(IMAGE)), ApiVersion::V1, IMAGE, &clouds.secrets());
    assert_eq!(clouds.registry.calls("ocir-token"), tokens + 1, "the exec after check fetched a new token");
}

#[test]
fn token_validation_refetches_a_refused_token_and_fails_if_still_refused() {
    let clouds = Clouds::start();
    let plugin = clouds.plugin().with_env([("TOKEN_VALIDATION", "true")]);
    expect_accepted(&plugin.request(&request(IMAGE)), ApiVersion::V1, IMAGE, &clouds.secrets());
    assert_eq!(clouds.registry.calls("tags"), 1, "the answer was proven at the registry");
    clouds.registry.deny("tenancy-namespace/team/app");
    let exec = plugin.request(&request(IMAGE));
    expect_rejected(&exec, &clouds.secrets());
    assert_eq!(exec.code, Some(2));
    assert_eq!(clouds.registry.calls("ocir-token"), 2, "the refused token was replaced once, then the exec failed");
}

#[test]
fn check_reports_a_denied_principal() {
    let clouds = Clouds::start();
    clouds.registry.deny_principal("instance");
    let exec = clouds.plugin().exec(&["check", "--image", IMAGE], b"");
    assert_eq!(exec.code, Some(2));
    assert!(exec.stdout.contains("ocir:token") && exec.stdout.contains("denied"), "{}", exec.stdout);
}
