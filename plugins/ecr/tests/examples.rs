//! The example kubelet configs send every ECR host to the plugin, and nothing else.

use credential_provider::matching::urls_match;
use ecr_credential_provider::hosts::EcrRegistry;
use fake_clouds::examples::match_images;

#[test]
fn the_full_example_covers_every_host_form_and_no_lookalike() {
    let patterns = match_images("ecr/credential-provider-config.yaml");
    let a = "123456789012";
    let served = [
        format!("{a}.dkr.ecr.us-east-1.amazonaws.com/app"),
        format!("{a}.dkr.ecr-fips.us-gov-west-1.amazonaws.com/app"),
        format!("{a}.dkr.ecr.cn-north-1.amazonaws.com.cn/app"),
        format!("{a}.dkr.ecr.eusc-de-east-1.amazonaws.eu/app"),
        format!("{a}.dkr.ecr.us-iso-east-1.c2s.ic.gov/app"),
        format!("{a}.dkr.ecr.us-isob-east-1.sc2s.sgov.gov/app"),
        format!("{a}.dkr.ecr.eu-isoe-west-1.cloud.adc-e.uk/app"),
        format!("{a}.dkr.ecr.us-isof-south-1.csp.hci.ic.gov/app"),
        format!("{a}.dkr.ecr-fips.eusc-de-east-1.amazonaws.eu/app"),
        format!("{a}.dkr.ecr-fips.us-iso-east-1.c2s.ic.gov/app"),
        format!("{a}.dkr.ecr-fips.us-isob-east-1.sc2s.sgov.gov/app"),
        format!("{a}.dkr.ecr-fips.eu-isoe-west-1.cloud.adc-e.uk/app"),
        format!("{a}.dkr.ecr-fips.us-isof-south-1.csp.hci.ic.gov/app"),
        format!("{a}.dkr-ecr.eu-west-1.on.aws/app"),
        format!("{a}.dkr-ecr-fips.us-east-1.on.aws/app"),
        format!("{a}.dkr-ecr.cn-northwest-1.on.amazonwebservices.com.cn/app"),
        "public.ecr.aws/nginx/nginx".to_string(),
        "ecr-public.aws.com/nginx/nginx".to_string(),
    ];
    for image in &served {
        let host = image.split('/').next().unwrap_or_default();
        assert!(EcrRegistry::from_host(host).is_some(), "the plugin serves {host}");
        assert!(patterns.iter().any(|p| urls_match(p, image)), "no matchImages entry sends {image} to the plugin");
    }
    for image in [
        format!("{a}.dkr.ecr.us-east-1.amazonaws.com.evil.io/app"),
        format!("evil.io/{a}.dkr.ecr.us-east-1.amazonaws.com/app"),
        "docker.io/library/nginx".to_string(),
        "public.ecr.aws.evil.io/x".to_string(),
    ] {
        assert!(!patterns.iter().any(|p| urls_match(p, &image)), "{image} must not reach the plugin");
    }
}

#[test]
fn the_service_account_example_is_a_subset_of_what_the_plugin_serves() {
    for pattern in match_images("ecr/credential-provider-config-service-account.yaml") {
        // Each wildcard stands for one label: the account, then the region.
        let host = pattern.replacen('*', "123456789012", 1).replacen('*', "us-east-1", 1);
        assert!(EcrRegistry::from_host(&host).is_some(), "{pattern} (as {host}) is not an ECR host");
    }
}

#[test]
fn the_example_config_works_through_the_kubelet_simulator() {
    let aws = fake_clouds::FakeAws::start();
    let mut env = aws.env_with_static_keys();
    let cache = tempfile::tempdir().expect("cache");
    env.push(("CREDENTIAL_PROVIDER_CACHE_DIR".into(), cache.path().join("c").display().to_string()));
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_ecr-credential-provider"));
    let image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app";
    let simulation =
        fake_clouds::examples::simulate_example("ecr/credential-provider-config.yaml", binary, &env, None, image);
    assert!(simulation.succeeded(), "{simulation:?}");
    assert_eq!(simulation.credentials.len(), 1);
    assert_eq!(simulation.credentials[0].auth_key, "123456789012.dkr.ecr.eu-west-1.amazonaws.com");
    assert_eq!(simulation.credentials[0].username, "AWS");
    assert!(simulation.credentials[0].kubelet_cache_seconds.is_some_and(|s| s > 6 * 3600 - 120));
}
