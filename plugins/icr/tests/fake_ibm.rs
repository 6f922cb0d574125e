//! The real `icr-credential-provider` binary against the in-process fake IBM
//! Cloud IAM and VPC metadata service (`FakeIbm`) and a fake registry.

use std::collections::BTreeMap;

use credential_provider::protocol::ApiVersion;
use fake_clouds::conformance::{
    PluginUnderTest, TestServiceAccount, check_as_service_account, expect_accepted, expect_no_secrets, expect_rejected,
    request_json, run_conformance,
};
use fake_clouds::ibm::LINKED_PROFILE;
use fake_clouds::server::nonce;
use fake_clouds::{FakeIbm, FakeRegistry, Fault};

const BINARY: &str = env!("CARGO_BIN_EXE_icr-credential-provider");
const IMAGE: &str = "us.icr.io/team/app";
const PROFILE: &str = "Profile-aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";

fn plugin(ibm: &FakeIbm) -> PluginUnderTest {
    PluginUnderTest::new(BINARY).with_env(ibm.endpoint_env())
}

fn request(image: &str) -> String {
    request_json(ApiVersion::V1, image, None, false)
}

fn host(image: &str) -> &str {
    image.split('/').next().unwrap_or_default()
}

#[test]
fn the_vpc_instance_identity_serves_every_api_version_and_host() {
    let ibm = FakeIbm::start();
    let plugin = plugin(&ibm);
    for image in [IMAGE, "icr.io/team/app", "private.de.icr.io/team/app", "registry.ng.bluemix.net/team/app"] {
        for response in run_conformance(&plugin, image, None, || ibm.secrets()) {
            let auth = &response.auth[host(image)];
            assert_eq!(auth.username, "iambearer");
            assert!(ibm.issued_tokens().contains(&auth.password));
            // IAM tokens live an hour; the kubelet may keep this one for half of that.
            let seconds = response.cache_seconds();
            assert!((1700.0..=1800.0).contains(&seconds), "{seconds}");
        }
    }
    assert_eq!(ibm.calls("vpc:iam-token"), 4, "one token per registry; every other exec hit the cache");
    assert!(ibm.grants().iter().all(|g| g == &("vpc".to_string(), format!("id:{LINKED_PROFILE}"))));
}

#[test]
fn the_vpc_flow_takes_a_profile_by_id_or_crn_but_not_by_name() {
    let ibm = FakeIbm::start();
    let crn = "crn:v1:bluemix:public:iam-identity::a/123::profile:Profile-1";
    ibm.link_instance_profile(&format!("id:{PROFILE}"));
    ibm.link_instance_profile(&format!("crn:{crn}"));
    let plugin = plugin(&ibm);
    expect_accepted(
        &plugin.exec(&["--profile-id", PROFILE, "-vvv"], request(IMAGE).as_bytes()),
        ApiVersion::V1,
        IMAGE,
        &ibm.secrets(),
    );
    expect_accepted(
        &plugin.exec(&["--profile-crn", crn], request(IMAGE).as_bytes()),
        ApiVersion::V1,
        IMAGE,
        &ibm.secrets(),
    );
    assert_eq!(
        ibm.grants(),
        vec![("vpc".to_string(), format!("id:{PROFILE}")), ("vpc".to_string(), format!("crn:{crn}"))]
    );
    let exec = plugin.exec(&["--profile-name", "pullers"], request(IMAGE).as_bytes());
    expect_rejected(&exec, &ibm.secrets());
    assert!(exec.stderr.contains("--profile-id or --profile-crn"), "{}", exec.stderr);

    // A profile the instance is not linked to is refused, with the reason.
    let exec = plugin.exec(&["--profile-id", "Profile-unlinked"], request(IMAGE).as_bytes());
    expect_rejected(&exec, &ibm.secrets());
    assert_eq!(exec.code, Some(2));
    assert!(exec.stderr.contains("linked"), "{}", exec.stderr);
}

#[test]
fn an_api_key_is_traded_for_a_short_lived_token_never_handed_over() {
    let ibm = FakeIbm::start();
    let key = ibm.add_api_key();
    let plugin = plugin(&ibm).with_env([("IBMCLOUD_API_KEY", key.as_str())]);
    let exec = plugin.exec(&["-vvv"], request(IMAGE).as_bytes());
    let response = expect_accepted(&exec, ApiVersion::V1, IMAGE, &ibm.secrets());
    assert_ne!(response.auth[host(IMAGE)].password, key);
    assert_eq!(ibm.grants(), vec![("apikey".to_string(), String::new())]);

    // From a file, and a rotated key is not served the old key's token.
    let file = plugin.home().join("apikey");
    let other = ibm.add_api_key();
    std::fs::write(&file, format!("{other}\n")).expect("write key");
    let exec = plugin.exec(&["--api-key-file", file.to_str().unwrap_or_default()], request(IMAGE).as_bytes());
    expect_accepted(&exec, ApiVersion::V1, IMAGE, &ibm.secrets());
    assert_eq!(ibm.calls("iam:token"), 2);
}

#[test]
fn a_rotated_api_key_file_is_noticed_by_the_very_next_exec() {
    let ibm = FakeIbm::start();
    let plugin = plugin(&ibm);
    let file = plugin.home().join("apikey");
    std::fs::write(&file, ibm.add_api_key()).expect("write key");
    let args = ["--api-key-file", file.to_str().unwrap_or_default()];
    let first = expect_accepted(&plugin.exec(&args, request(IMAGE).as_bytes()), ApiVersion::V1, IMAGE, &ibm.secrets());
    let repeat = expect_accepted(&plugin.exec(&args, request(IMAGE).as_bytes()), ApiVersion::V1, IMAGE, &ibm.secrets());
    assert_eq!(repeat.auth, first.auth);
    assert_eq!(ibm.calls("iam:token"), 1, "the repeat is a cache hit");

    // Rotated the way a mounted secret is: a new file renamed over the old.
    let rotated = plugin.home().join("apikey.new");
    std::fs::write(&rotated, ibm.add_api_key()).expect("write key");
    std::fs::rename(&rotated, &file).expect("rotate");
    let after = expect_accepted(&plugin.exec(&args, request(IMAGE).as_bytes()), ApiVersion::V1, IMAGE, &ibm.secrets());
    assert_eq!(ibm.calls("iam:token"), 2, "the new key's token, not the old one's");
    assert_ne!(after.auth[host(IMAGE)].password, first.auth[host(IMAGE)].password);
}

#[test]
fn a_wrong_api_key_is_a_denial_that_says_what_to_check() {
    let ibm = FakeIbm::start();
    let key = format!("not-a-known-key-{}", nonce());
    let plugin = plugin(&ibm).with_env([("IBMCLOUD_API_KEY", key.as_str())]);
    let verbose = plugin.exec(&["-vvv"], request(IMAGE).as_bytes());
    expect_no_secrets(&verbose.stderr, std::slice::from_ref(&key));
    let exec = plugin.request(&request(IMAGE));
    expect_rejected(&exec, &[key]);
    assert_eq!(exec.code, Some(2));
    assert!(exec.stderr.contains("BXNIM0415E") || exec.stderr.contains("could not be found"), "{}", exec.stderr);
    assert!(exec.stderr.contains("API key"), "{}", exec.stderr);
}

#[test]
fn kep_4412_trades_the_service_account_token_for_the_annotated_profile() {
    let ibm = FakeIbm::start();
    let token = format!("eyJhbGciOi.sa-{}.sig", nonce());
    ibm.trust(&format!("id:{PROFILE}"), &token);
    let sa = TestServiceAccount {
        token: Some(token),
        annotations: BTreeMap::from([("iam.cloud.ibm.com/trusted-profile-id".to_string(), PROFILE.to_string())]),
    };
    run_conformance(&plugin(&ibm), IMAGE, Some(&sa), || ibm.secrets());
    let grants = ibm.grants();
    assert!(grants.contains(&("cr-token".to_string(), format!("id:{PROFILE}"))), "{grants:?}");
    assert_eq!(grants.len(), 2, "one for the token (then cached by its hash), one for the node: {grants:?}");

    // `check` as the service account: its token traded for the profile once more, the registry proven with it.
    let registry = FakeRegistry::start();
    registry.accept(ibm.registry_check());
    let mut plugin = plugin(&ibm);
    plugin.set_env("CREDENTIAL_PROVIDER_REGISTRY_ENDPOINTS", &registry.endpoints_for(&["us.icr.io"]));
    let (exec, report) = check_as_service_account(&plugin, &[], IMAGE, &sa);
    assert_eq!(exec.code, Some(0), "{}{}", exec.stdout, exec.stderr);
    assert!(report["images"][0]["identity"].as_str().is_some_and(|i| i.contains(PROFILE)), "{report}");
    assert_eq!(ibm.grants().iter().filter(|g| g.0 == "cr-token").count(), 2, "{:?}", ibm.grants());
}

#[test]
fn kep_4412_by_profile_name_from_the_flags() {
    let ibm = FakeIbm::start();
    let token = format!("eyJhbGciOi.sa-{}.sig", nonce());
    ibm.trust("name:tenant-a-pullers", &token);
    let sa = TestServiceAccount { token: Some(token), annotations: BTreeMap::new() };
    let exec = plugin(&ibm).exec(
        &["--profile-name", "tenant-a-pullers", "-vvv"],
        request_json(ApiVersion::V1, IMAGE, Some(&sa), false).as_bytes(),
    );
    expect_accepted(&exec, ApiVersion::V1, IMAGE, &ibm.secrets());
    assert_eq!(ibm.grants(), vec![("cr-token".to_string(), "name:tenant-a-pullers".to_string())]);
}

#[test]
fn an_untrusted_service_account_token_never_falls_back_to_the_node() {
    let ibm = FakeIbm::start();
    let token = format!("untrusted-{}", nonce());
    let sa = TestServiceAccount {
        token: Some(token.clone()),
        annotations: BTreeMap::from([("iam.cloud.ibm.com/trusted-profile-id".to_string(), PROFILE.to_string())]),
    };
    let exec = plugin(&ibm).exec(&["-vvv"], request_json(ApiVersion::V1, IMAGE, Some(&sa), false).as_bytes());
    assert_eq!(exec.code, Some(2), "{}", exec.stderr);
    assert_eq!(exec.stdout, "");
    expect_no_secrets(&exec.stderr, &[token]);
    assert!(exec.stderr.contains("compute resource rule"), "{}", exec.stderr);
    assert_eq!(ibm.calls("vpc:iam-token"), 0);
}

#[test]
fn a_compute_resource_token_file_needs_a_profile() {
    let ibm = FakeIbm::start();
    let token = format!("projected-{}", nonce());
    ibm.trust(&format!("id:{PROFILE}"), &token);
    let plugin = plugin(&ibm);
    let file = plugin.home().join("token");
    std::fs::write(&file, &token).expect("write token");
    let path = file.to_str().unwrap_or_default();
    let exec = plugin.exec(&["--cr-token-file", path, "--profile-id", PROFILE, "-vvv"], request(IMAGE).as_bytes());
    expect_accepted(&exec, ApiVersion::V1, IMAGE, &ibm.secrets());
    assert_eq!(ibm.grants(), vec![("cr-token".to_string(), format!("id:{PROFILE}"))]);
    let exec = plugin.exec(&["--cr-token-file", path], request(IMAGE).as_bytes());
    expect_rejected(&exec, &ibm.secrets());
    assert_eq!(exec.code, Some(1));
}

#[test]
fn the_entitled_software_registry_is_refused_with_the_reason() {
    let ibm = FakeIbm::start();
    let exec = plugin(&ibm).request(&request("cp.icr.io/cp/app"));
    expect_rejected(&exec, &ibm.secrets());
    assert!(exec.stderr.contains("entitlement key"), "{}", exec.stderr);
    assert_eq!(ibm.calls("iam:token") + ibm.calls("vpc:iam-token"), 0);
}

#[test]
fn cloud_faults_are_retried_then_end_in_one_line() {
    let ibm = FakeIbm::start();
    let key = ibm.add_api_key();
    let plugin = plugin(&ibm).with_env([("IBMCLOUD_API_KEY", key.as_str())]);
    for (fault, attempts) in [
        (Fault::Status(503), 4),
        (Fault::Reset, 4),
        (Fault::Garbage, 1),
        (Fault::Truncated, 1),
        (Fault::Status(400), 1),
    ] {
        let before = ibm.calls("iam:token");
        ibm.set_fault(Some(fault.clone()));
        let exec = plugin.exec(&["--no-cache"], request(IMAGE).as_bytes());
        expect_rejected(&exec, &ibm.secrets());
        assert_eq!(exec.code, Some(2), "{fault:?}");
        assert_eq!(ibm.calls("iam:token") - before, attempts, "{fault:?}");
    }
    ibm.set_fault(Some(Fault::Expired));
    let response = expect_accepted(&plugin.request(&request(IMAGE)), ApiVersion::V1, IMAGE, &ibm.secrets());
    assert_eq!(response.cache_seconds(), 0.0);
}

#[test]
fn check_proves_pull_with_the_iam_token() {
    let ibm = FakeIbm::start();
    let registry = FakeRegistry::start();
    registry.accept(ibm.registry_check());
    let mut plugin = plugin(&ibm);
    plugin.set_env("CREDENTIAL_PROVIDER_REGISTRY_ENDPOINTS", &registry.endpoints_for(&["us.icr.io"]));
    let exec = plugin.exec(&["check", "--image", "us.icr.io/team/app:1.0", "--output", "json"], b"");
    assert_eq!(exec.code, Some(0), "{}{}", exec.stdout, exec.stderr);
    let report: serde_json::Value = serde_json::from_str(&exec.stdout).expect("json");
    assert_eq!(report["images"][0]["identity"], "VPC instance identity for its linked trusted profile");
    let actions: Vec<&str> =
        report["images"][0]["checks"].as_array().expect("checks").iter().filter_map(|c| c["action"].as_str()).collect();
    assert_eq!(
        actions,
        ["iam:token", "registry:challenge", "registry:token repository:team/app:pull", "registry:pull team/app"]
    );
    expect_no_secrets(&exec.stdout, &ibm.secrets());

    registry.deny("team/secret");
    let exec = plugin.exec(&["check", "--image", "us.icr.io/team/secret"], b"");
    assert_eq!(exec.code, Some(2));
    assert!(exec.stdout.contains("denied"), "{}", exec.stdout);
}

#[test]
fn thirty_two_processes_on_a_cold_cache_make_one_token_call() {
    let ibm = FakeIbm::start();
    let plugin = plugin(&ibm);
    for exec in plugin.exec_together(32, &[], request(IMAGE).as_bytes()) {
        expect_accepted(&exec, ApiVersion::V1, IMAGE, &ibm.secrets());
    }
    assert_eq!(ibm.calls("vpc:iam-token"), 1);
}

#[test]
fn a_named_file_that_cannot_be_read_fails_instead_of_using_the_instance() {
    let ibm = FakeIbm::start();
    let plugin = plugin(&ibm);
    let missing = plugin.home().join("nonexistent");
    let missing = missing.to_str().unwrap_or_default();
    for args in [vec!["--api-key-file", missing], vec!["--cr-token-file", missing, "--profile-id", "Profile-1"]] {
        let exec = plugin.exec(&args, request_json(ApiVersion::V1, IMAGE, None, false).as_bytes());
        expect_rejected(&exec, &ibm.secrets());
        assert!(exec.stderr.contains(missing), "{args:?}: {}", exec.stderr);
    }
    assert_eq!(ibm.calls("vpc:instance-token"), 0, "never the instance's identity instead");
}
