//! The real `ecr-credential-provider` binary against moto, a third-party AWS
//! emulator: its ECR token API, its STS web identity, and its IAM enforcement.

use std::collections::BTreeMap;
use std::path::Path;

use credential_provider::protocol::ApiVersion;
use fake_clouds::conformance::{PluginUnderTest, TestServiceAccount, expect_accepted, expect_rejected, request_json};
use fake_clouds::moto::Moto;

const BINARY: &str = env!("CARGO_BIN_EXE_ecr-credential-provider");
const IMAGE: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app";

fn workspace() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// The plugin pointed at moto for ECR and STS, with IMDS switched off so that
/// nothing ever leaves the machine.
fn plugin(moto: &Moto, key_id: &str, secret: &str) -> PluginUnderTest {
    PluginUnderTest::new(BINARY).with_env([
        ("AWS_ENDPOINT_URL_ECR", moto.url()),
        ("AWS_ENDPOINT_URL_STS", moto.url()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ("AWS_ACCESS_KEY_ID", key_id.to_string()),
        ("AWS_SECRET_ACCESS_KEY", secret.to_string()),
    ])
}

#[test]
fn token_and_web_identity_through_moto() {
    let moto = Moto::start(workspace());
    let secret = "moto-static-secret-key";
    let plugin = plugin(&moto, "AKIAMOTOTEST00000001", secret);
    let secrets = vec![secret.to_string()];

    // moto's token is "AWS:<account>-auth-token", already expired (it dates
    // from 2015): the plugin answers it but tells the kubelet not to cache it.
    let exec = plugin.request(&request_json(ApiVersion::V1, IMAGE, None, false));
    let response = expect_accepted(&exec, ApiVersion::V1, IMAGE, &secrets);
    let host = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
    assert_eq!(response.auth[host].username, "AWS");
    assert_eq!(response.auth[host].password, "123456789012-auth-token");
    assert_eq!(response.cache_duration.as_deref(), Some("0s"));
    assert!(exec.stderr.contains("expired already"), "{}", exec.stderr);

    // KEP-4412: the service-account token is exchanged at moto's STS.
    let token = "eyJhbGciOiJSUzI1NiJ9.moto-web-identity-token.signature";
    let sa = TestServiceAccount {
        token: Some(token.to_string()),
        annotations: BTreeMap::from([(
            "eks.amazonaws.com/ecr-role-arn".to_string(),
            "arn:aws:iam::123456789012:role/tenant-a-puller".to_string(),
        )]),
    };
    let exec = plugin.exec(&["-vvv"], request_json(ApiVersion::V1, IMAGE, Some(&sa), false).as_bytes());
    let mut secrets = secrets;
    secrets.push(token.to_string());
    let response = expect_accepted(&exec, ApiVersion::V1, IMAGE, &secrets);
    assert_eq!(response.auth[host].password, "123456789012-auth-token");
    assert!(exec.stderr.contains("assuming the service account's role"), "{}", exec.stderr);
}

#[test]
fn check_against_moto_iam_enforcement() {
    let moto = Moto::start(workspace());
    let setup = moto.run_script(&workspace().join("plugins/ecr/tests/support/moto_setup.py"));
    let keys: serde_json::Value = serde_json::from_str(&setup).expect("setup output");
    let key = |user: &str| {
        (
            keys[user]["id"].as_str().unwrap_or_default().to_string(),
            keys[user]["secret"].as_str().unwrap_or_default().to_string(),
        )
    };
    let (puller_id, puller_secret) = key("puller");
    let (nobody_id, nobody_secret) = key("nobody");
    let secrets = vec![puller_secret.clone(), nobody_secret.clone()];

    // The allowed principal: every action moto implements is allowed. Older
    // moto releases do not implement BatchCheckLayerAvailability or
    // GetDownloadUrlForLayer and answer 500, which `check` must report as
    // unknown, never as allowed.
    let allowed = plugin(&moto, &puller_id, &puller_secret);
    let exec = allowed.exec(&["check", "--image", IMAGE, "--output", "json"], b"");
    let report: serde_json::Value =
        serde_json::from_str(&exec.stdout).unwrap_or_else(|e| panic!("{e}: {}", exec.stdout));
    fake_clouds::conformance::expect_no_secrets(&exec.stderr, &secrets);
    assert_eq!(report["images"][0]["identity"], "arn:aws:iam::123456789012:user/puller");
    let checks = report["images"][0]["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 7);
    for check in checks {
        let (action, result) =
            (check["action"].as_str().unwrap_or_default(), check["result"].as_str().unwrap_or_default());
        let detail = check["detail"].as_str().unwrap_or_default();
        match action {
            "ecr:BatchCheckLayerAvailability" | "ecr:GetDownloadUrlForLayer" if result == "unknown" => {
                assert!(detail.starts_with("HTTP 500"), "{action}: {detail}");
            }
            _ => assert_eq!(result, "allowed", "{action}: {detail}"),
        }
    }
    let all_allowed = checks.iter().all(|c| c["result"] == "allowed");
    assert_eq!(report["allowed"], all_allowed);
    assert_eq!(exec.code, Some(if all_allowed { 0 } else { 2 }), "{}", exec.stderr);
    // And its credentials work for a pull.
    let exec = allowed.request(&request_json(ApiVersion::V1, IMAGE, None, false));
    expect_accepted(&exec, ApiVersion::V1, IMAGE, &secrets);

    // The denied principal: every action denied (moto answers 403 with XML).
    let denied = plugin(&moto, &nobody_id, &nobody_secret);
    let exec = denied.exec(&["check", "--image", IMAGE], b"");
    assert_eq!(exec.code, Some(2));
    let rows: Vec<&str> = exec.stdout.lines().filter(|l| l.starts_with("ecr:")).collect();
    assert_eq!(rows.len(), 7, "{}", exec.stdout);
    for row in rows {
        assert!(row.contains(" denied ") && row.contains("not authorized"), "{row}");
    }
    // Its exec fails with one line naming the missing permission.
    let exec = denied.request(&request_json(ApiVersion::V1, IMAGE, None, false));
    expect_rejected(&exec, &secrets);
    assert_eq!(exec.code, Some(2));
    assert!(exec.stderr.contains("ecr:GetAuthorizationToken"), "{}", exec.stderr);
}
