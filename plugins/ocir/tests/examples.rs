//! The example kubelet config sends every OCIR host form to the plugin, and no lookalike.

use credential_provider::matching::urls_match;
use fake_clouds::examples::match_images;
use ocir_credential_provider::hosts::{REALM_DOMAINS, is_ocir_host};

#[test]
fn the_example_covers_both_host_forms_and_no_lookalike() {
    let patterns = match_images("ocir/credential-provider-config.yaml");
    // Every realm the host recognizer knows, and the numbered ones.
    let mut images: Vec<String> = REALM_DOMAINS.iter().map(|d| format!("ocir.us-region-1.oci.{d}/ns/app")).collect();
    images.extend(
        ["iad.ocir.io", "fra.ocir.io", "ocir.us-somewhere-1.oci.oraclecloud8.com", "ocir.eu-x-2.oci.oraclecloud10.com"]
            .map(|host| format!("{host}/ns/app")),
    );
    for image in &images {
        let host = image.split('/').next().unwrap_or_default();
        assert!(is_ocir_host(host), "the plugin serves {host}");
        assert!(patterns.iter().any(|p| urls_match(p, image)), "no matchImages entry sends {image}");
    }
    for image in [
        "iad.ocir.io.evil.com/x",
        "evil.com/iad.ocir.io/x",
        "ocir.us-ashburn-1.oci.oraclecloud.com.evil.io/x",
        "ocir.us-ashburn-1.oci.oraclecloudevil.com/x",
    ] {
        assert!(!patterns.iter().any(|p| urls_match(p, image)), "{image} must not reach the plugin");
    }
}

#[test]
fn the_example_config_works_through_the_kubelet_simulator() {
    let oci = fake_clouds::FakeOci::start();
    let registry = fake_clouds::FakeRegistry::start_ocir(oci.signature_check());
    let mut env = oci.endpoint_env();
    env.push(("CREDENTIAL_PROVIDER_REGISTRY_ENDPOINTS".into(), registry.endpoints_for(&["fra.ocir.io"])));
    let cache = tempfile::tempdir().expect("cache");
    env.push(("CREDENTIAL_PROVIDER_CACHE_DIR".into(), cache.path().join("c").display().to_string()));
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_ocir-credential-provider"));
    let simulation = fake_clouds::examples::simulate_example(
        "ocir/credential-provider-config.yaml",
        binary,
        &env,
        None,
        "fra.ocir.io/ns/app",
    );
    assert!(simulation.succeeded(), "{simulation:?}");
    assert_eq!(simulation.credentials[0].username, "BEARER_TOKEN");
}
