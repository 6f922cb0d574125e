//! The example kubelet configs send every ACR host form to the plugin, and no lookalike.

use acr_credential_provider::hosts::is_acr_host;
use credential_provider::matching::urls_match;
use fake_clouds::examples::match_images;

#[test]
fn the_full_example_covers_every_host_form_and_no_lookalike() {
    let patterns = match_images("acr/credential-provider-config.yaml");
    for image in [
        "myacr.azurecr.io/app",
        "myacr-abc123.azurecr.io/app",
        "myacr.azurecr.us/app",
        "myacr.azurecr.cn/app",
        "myacr.azurecr.de/app",
        "myacr.eastus.geo.azurecr.io/app",
        "myacr.usgovvirginia.geo.azurecr.us/app",
        "myacr.chinanorth3.geo.azurecr.cn/app",
    ] {
        let host = image.split('/').next().unwrap_or_default();
        assert!(is_acr_host(host), "the plugin serves {host}");
        assert!(patterns.iter().any(|p| urls_match(p, image)), "no matchImages entry sends {image}");
    }
    for image in ["x.azurecr.io.evil.com/app", "evil.com/x.azurecr.io", "azurecr.io/app", "mcr.microsoft.com/x"] {
        assert!(!patterns.iter().any(|p| urls_match(p, image)), "{image} must not reach the plugin");
    }
}

#[test]
fn the_service_account_example_is_a_subset_of_what_the_plugin_serves() {
    for pattern in match_images("acr/credential-provider-config-service-account.yaml") {
        let host = pattern.replacen('*', "myacr", 1).replacen('*', "eastus", 1);
        assert!(is_acr_host(&host), "{pattern} (as {host}) is not an ACR host");
    }
}

#[test]
fn the_example_config_works_through_the_kubelet_simulator() {
    let azure = fake_clouds::FakeAzure::start();
    let registry = fake_clouds::FakeRegistry::start_acr(azure.token_check());
    let node = tempfile::tempdir().expect("node");
    // The example's one argument is the node's azure.json: here, a managed identity.
    let azure_json = node.path().join("azure.json");
    std::fs::write(&azure_json, r#"{"cloud":"AzurePublicCloud","useManagedIdentityExtension":true}"#).expect("write");
    let mut env = azure.endpoint_env();
    env.push((
        "CREDENTIAL_PROVIDER_REGISTRY_ENDPOINTS".into(),
        registry.endpoints_for(&["myacr.westeurope.geo.azurecr.io"]),
    ));
    env.push(("CREDENTIAL_PROVIDER_CACHE_DIR".into(), node.path().join("cache").display().to_string()));
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_acr-credential-provider"));
    let args = [azure_json.to_str().unwrap_or_default()];
    let image = "myacr.westeurope.geo.azurecr.io/team/app";
    let simulation = fake_clouds::examples::simulate_example(
        "acr/credential-provider-config.yaml",
        binary,
        &env,
        Some(&args),
        image,
    );
    assert!(simulation.succeeded(), "{simulation:?}");
    assert_eq!(simulation.credentials[0].username, "00000000-0000-0000-0000-000000000000");
    assert_eq!(simulation.credentials[0].auth_key, "myacr.westeurope.geo.azurecr.io");
}
