//! The example kubelet configs send every Google registry host to the plugin,
//! and no lookalike.

use credential_provider::matching::urls_match;
use fake_clouds::examples::match_images;
use gcr_credential_provider::hosts::is_google_registry;

const SERVED: &[&str] = &[
    "gcr.io/p/app",
    "us.gcr.io/p/app",
    "eu.gcr.io/p/app",
    "asia.gcr.io/p/app",
    "marketplace.gcr.io/p/app",
    "us-docker.pkg.dev/p/r/app",
    "europe-west4-docker.pkg.dev/p/r/app",
    "docker.us-central1.rep.pkg.dev/p/r/app",
    "container.cloud.google.com/p/app",
];

const LOOKALIKES: &[&str] =
    &["gcr.io.evil.io/x", "evil.io/gcr.io/x", "us-docker.pkg.dev.evil.io/x", "docker.io/library/nginx"];

#[test]
fn the_examples_cover_every_host_form_and_no_lookalike() {
    for file in ["gcr/credential-provider-config.yaml", "gcr/credential-provider-config-workload-identity.yaml"] {
        let patterns = match_images(file);
        for image in SERVED {
            let host = image.split('/').next().unwrap_or_default();
            assert!(is_google_registry(host), "the plugin serves {host}");
            // The workload identity example leaves out container.cloud.google.com.
            if file.contains("workload") && host == "container.cloud.google.com" {
                continue;
            }
            assert!(patterns.iter().any(|p| urls_match(p, image)), "{file}: no matchImages entry sends {image}");
        }
        for image in LOOKALIKES {
            assert!(!patterns.iter().any(|p| urls_match(p, image)), "{file}: {image} must not reach the plugin");
        }
    }
}

#[test]
fn the_example_config_works_through_the_kubelet_simulator() {
    let google = fake_clouds::FakeGoogle::start();
    let mut env = google.endpoint_env();
    let cache = tempfile::tempdir().expect("cache");
    env.push(("CREDENTIAL_PROVIDER_CACHE_DIR".into(), cache.path().join("c").display().to_string()));
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_gcr-credential-provider"));
    for image in ["europe-west4-docker.pkg.dev/p/r/app", "docker.us-central1.rep.pkg.dev/p/r/app", "gcr.io/p/app"] {
        let simulation =
            fake_clouds::examples::simulate_example("gcr/credential-provider-config.yaml", binary, &env, None, image);
        assert!(simulation.succeeded(), "{image}: {simulation:?}");
        assert_eq!(simulation.credentials[0].username, "oauth2accesstoken");
    }
}
