//! The example kubelet configs send every ICR host to the plugin, and neither
//! a lookalike nor the entitled-software registry.

use credential_provider::matching::urls_match;
use fake_clouds::examples::match_images;
use icr_credential_provider::hosts::{IcrRegistry, REGIONS};

#[test]
fn the_examples_cover_every_host_and_no_lookalike() {
    let mut served = vec!["icr.io/ns/app".to_string(), "private.icr.io/ns/app".to_string()];
    for region in REGIONS {
        served.push(format!("{region}.icr.io/ns/app"));
        served.push(format!("private.{region}.icr.io/ns/app"));
    }
    served.push("registry.ng.bluemix.net/ns/app".to_string());
    served.push("registry.bluemix.net/ns/app".to_string());
    let patterns = match_images("icr/credential-provider-config.yaml");
    for image in &served {
        let host = image.split('/').next().unwrap_or_default();
        assert!(IcrRegistry::from_host(host).is_some(), "the plugin serves {host}");
        assert!(patterns.iter().any(|p| urls_match(p, image)), "no matchImages entry sends {image}");
    }
    for image in ["icr.io.evil.com/x", "evil.com/icr.io/x", "registry.bluemix.net.evil.com/x"] {
        assert!(!patterns.iter().any(|p| urls_match(p, image)), "{image} must not reach the plugin");
    }
    assert!(!patterns.iter().any(|p| urls_match(p, "cp.icr.io/cp/app")), "entitled software must not reach the plugin");
    assert!(IcrRegistry::from_host("cp.icr.io").is_none());
}

#[test]
fn the_service_account_example_is_a_subset_of_what_the_plugin_serves() {
    for pattern in match_images("icr/credential-provider-config-service-account.yaml") {
        let host = pattern.replace('*', "us");
        assert!(IcrRegistry::from_host(&host).is_some(), "{pattern} (as {host}) is not an ICR host");
    }
}

#[test]
fn the_example_config_works_through_the_kubelet_simulator() {
    let ibm = fake_clouds::FakeIbm::start();
    // The example names this trusted profile; the fake instance is linked to it.
    ibm.link_instance_profile("id:Profile-00000000-0000-0000-0000-000000000000");
    let mut env = ibm.endpoint_env();
    let cache = tempfile::tempdir().expect("cache");
    env.push(("CREDENTIAL_PROVIDER_CACHE_DIR".into(), cache.path().join("c").display().to_string()));
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_icr-credential-provider"));
    let simulation = fake_clouds::examples::simulate_example(
        "icr/credential-provider-config.yaml",
        binary,
        &env,
        None,
        "de.icr.io/ns/app",
    );
    assert!(simulation.succeeded(), "{simulation:?}");
    assert_eq!(simulation.credentials[0].username, "iambearer");
    // cp.icr.io never reaches the plugin.
    let simulation = fake_clouds::examples::simulate_example(
        "icr/credential-provider-config.yaml",
        binary,
        &env,
        None,
        "cp.icr.io/cp/app",
    );
    assert!(simulation.credentials.is_empty());
}
