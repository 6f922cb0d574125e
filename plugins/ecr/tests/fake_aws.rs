//! The real `ecr-credential-provider` binary against the in-process fake AWS.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use credential_provider::protocol::ApiVersion;
use fake_clouds::conformance::{
    PluginUnderTest, TestServiceAccount, check_as_service_account, expect_accepted, expect_no_secrets, expect_rejected,
    request_json, run_conformance,
};
use fake_clouds::{FakeAws, Fault};

const BINARY: &str = env!("CARGO_BIN_EXE_ecr-credential-provider");
const PRIVATE: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app";
const PUBLIC: &str = "public.ecr.aws/team/app";
const ROLE: &str = "arn:aws:iam::123456789012:role/tenant-a-puller";

fn plugin(aws: &FakeAws) -> PluginUnderTest {
    PluginUnderTest::new(BINARY).with_env(aws.env_with_static_keys())
}

fn request(image: &str) -> String {
    request_json(ApiVersion::V1, image, None, false)
}

#[test]
fn every_api_version_is_answered_as_the_kubelet_expects() {
    let aws = FakeAws::start();
    let plugin = plugin(&aws).with_env([("CREDENTIAL_PROVIDER_NO_CACHE_HINT", "x")]);
    for image in [PRIVATE, PUBLIC] {
        let responses = run_conformance(&plugin, image, None, || aws.secrets());
        let host = image.split('/').next().unwrap_or_default();
        for response in &responses {
            assert_eq!(response.cache_key_type, "Registry");
            assert_eq!(response.auth.keys().collect::<Vec<_>>(), vec![host]);
            let auth = &response.auth[host];
            assert_eq!(auth.username, "AWS");
            // ECR tokens live 12 hours; the kubelet may keep this one until our
            // refresh point, half of that.
            let seconds = response.cache_seconds();
            assert!((6.0 * 3600.0 - 60.0..=6.0 * 3600.0).contains(&seconds), "{seconds}");
        }
    }
    // One token per registry: every later exec was a cache hit.
    assert_eq!(aws.calls("ecr:GetAuthorizationToken"), 1);
    assert_eq!(aws.calls("ecr-public:GetAuthorizationToken"), 1);
    let passwords = aws.issued_passwords();
    let exec = plugin.request(&request(PRIVATE));
    let response = expect_accepted(&exec, ApiVersion::V1, PRIVATE, &aws.secrets());
    assert!(passwords.contains(&response.auth["123456789012.dkr.ecr.us-east-1.amazonaws.com"].password));
}

#[test]
fn service_account_fields_are_ignored_before_v1_and_used_in_v1() {
    let aws = FakeAws::start();
    let plugin = plugin(&aws);
    let token = format!("sa-token-{}", fake_clouds::server::nonce());
    aws.add_secret(&token);
    let sa = TestServiceAccount {
        token: Some(token.clone()),
        annotations: BTreeMap::from([("eks.amazonaws.com/ecr-role-arn".to_string(), ROLE.to_string())]),
    };
    run_conformance(&plugin, PRIVATE, Some(&sa), || aws.secrets());
    // Only the v1 requests carried the token: they assumed the role, once, and
    // every other v1 request was answered from the cache keyed by the token.
    assert_eq!(aws.assumed_roles(), vec![(ROLE.to_string(), token)]);
    // Upstream's session name, which a role's trust policy may require.
    assert_eq!(aws.role_session_names(), ["ecr-credential-provider"]);
    assert_eq!(aws.token_calls(), 2, "one token for the node, one for the role");
}

#[test]
fn a_cache_hit_makes_no_call_and_no_cache_makes_one_every_time() {
    let aws = FakeAws::start();
    let plugin = plugin(&aws);
    for _ in 0..3 {
        expect_accepted(&plugin.request(&request(PRIVATE)), ApiVersion::V1, PRIVATE, &aws.secrets());
    }
    assert_eq!(aws.token_calls(), 1);
    for _ in 0..2 {
        let exec = plugin.exec(&["--no-cache"], request(PRIVATE).as_bytes());
        expect_accepted(&exec, ApiVersion::V1, PRIVATE, &aws.secrets());
    }
    assert_eq!(aws.token_calls(), 3);
}

#[test]
fn a_stale_entry_is_renewed_at_half_its_life() {
    let aws = FakeAws::start();
    aws.set_token_lifetime(Duration::from_secs(4));
    let plugin = plugin(&aws);
    let first = expect_accepted(&plugin.request(&request(PRIVATE)), ApiVersion::V1, PRIVATE, &aws.secrets());
    assert!(first.cache_seconds() <= 2.0, "cacheDuration stops at the refresh point: {:?}", first.cache_duration);
    std::thread::sleep(Duration::from_millis(2500));
    expect_accepted(&plugin.request(&request(PRIVATE)), ApiVersion::V1, PRIVATE, &aws.secrets());
    assert_eq!(aws.token_calls(), 2, "past its refresh point the entry is renewed");
}

#[test]
fn a_stale_entry_is_served_when_the_cloud_fails() {
    let aws = FakeAws::start();
    // Long enough that the SDK's retries with backoff end before expiry.
    aws.set_token_lifetime(Duration::from_secs(16));
    let plugin = plugin(&aws);
    let first = expect_accepted(&plugin.request(&request(PRIVATE)), ApiVersion::V1, PRIVATE, &aws.secrets());
    std::thread::sleep(Duration::from_millis(8500));
    aws.set_fault(Some(Fault::Status(500)));
    let exec = plugin.request(&request(PRIVATE));
    let second = expect_accepted(&exec, ApiVersion::V1, PRIVATE, &aws.secrets());
    let host = "123456789012.dkr.ecr.us-east-1.amazonaws.com";
    assert_eq!(second.auth[host].password, first.auth[host].password, "the cached credential is served");
    assert!(second.cache_seconds() <= 8.0, "a short cacheDuration: {:?}", second.cache_duration);
    assert!(exec.stderr.contains("serving the cached one"), "a warning: {}", exec.stderr);
    assert!(aws.token_calls() >= 2);

    // Once it has expired, a failing cloud is a failed exec: never an empty answer.
    std::thread::sleep(Duration::from_millis(8000));
    let exec = plugin.request(&request(PRIVATE));
    expect_rejected(&exec, &aws.secrets());
    assert_eq!(exec.code, Some(2), "cloud errors exit 2");
}

#[test]
fn cloud_faults_end_in_a_one_line_error_and_an_empty_stdout() {
    let aws = FakeAws::start();
    let plugin = plugin(&aws);
    for fault in [Fault::Status(500), Fault::Status(403), Fault::Garbage, Fault::Truncated, Fault::Reset] {
        aws.set_fault(Some(fault.clone()));
        let exec = plugin.request(&request(PRIVATE));
        expect_rejected(&exec, &aws.secrets());
        assert_eq!(exec.code, Some(2), "{fault:?}: {}", exec.stderr);
        assert!(exec.stderr.contains("ecr:GetAuthorizationToken"), "{}", exec.stderr);
    }
    // Throttling is retried, with backoff, within the budget.
    aws.set_fault(Some(Fault::Status(429)));
    let before = aws.token_calls();
    let started = Instant::now();
    let exec = plugin.request(&request(PRIVATE));
    expect_rejected(&exec, &aws.secrets());
    assert_eq!(aws.token_calls() - before, 3, "three attempts");
    assert!(started.elapsed() < Duration::from_secs(40));
    // Nothing was cached by all that.
    aws.set_fault(None);
    expect_accepted(&plugin.request(&request(PRIVATE)), ApiVersion::V1, PRIVATE, &aws.secrets());
}

#[test]
fn an_already_expired_token_is_answered_but_not_cached() {
    let aws = FakeAws::start();
    aws.set_fault(Some(Fault::Expired));
    let plugin = plugin(&aws);
    let exec = plugin.request(&request(PRIVATE));
    let response = expect_accepted(&exec, ApiVersion::V1, PRIVATE, &aws.secrets());
    assert_eq!(response.cache_duration.as_deref(), Some("0s"));
    assert!(exec.stderr.contains("expired already"), "{}", exec.stderr);
    plugin.request(&request(PRIVATE));
    assert_eq!(aws.token_calls(), 2);
}

#[test]
fn thirty_two_processes_on_a_cold_cache_make_one_token_call() {
    let aws = FakeAws::start();
    // A slow answer keeps every process waiting on the same renewal.
    aws.set_fault(Some(Fault::Slow(Duration::from_millis(500))));
    let plugin = plugin(&aws);
    let body = request(PRIVATE);
    let mut passwords = std::collections::BTreeSet::new();
    for exec in plugin.exec_together(32, &[], body.as_bytes()) {
        let response = expect_accepted(&exec, ApiVersion::V1, PRIVATE, &aws.secrets());
        passwords.extend(response.auth.into_values().map(|a| a.password));
    }
    assert_eq!(aws.token_calls(), 1, "single flight across processes");
    assert_eq!(passwords.len(), 1, "every process answered with the one credential");
}

#[test]
fn kep_4412_assumes_the_annotated_role_with_the_token() {
    let aws = FakeAws::start();
    let plugin = plugin(&aws);
    let sa = |token: &str| TestServiceAccount {
        token: Some(token.to_string()),
        annotations: BTreeMap::from([("eks.amazonaws.com/ecr-role-arn".to_string(), ROLE.to_string())]),
    };
    let (a, b) =
        (format!("token-a-{}", fake_clouds::server::nonce()), format!("token-b-{}", fake_clouds::server::nonce()));
    aws.add_secret(&a);
    aws.add_secret(&b);
    let exec = plugin.exec(&["-vvv"], request_json(ApiVersion::V1, PRIVATE, Some(&sa(&a)), false).as_bytes());
    expect_accepted(&exec, ApiVersion::V1, PRIVATE, &aws.secrets());
    assert_eq!(aws.assumed_roles(), vec![(ROLE.to_string(), a.clone())]);
    let signer = aws.signers().last().cloned().unwrap_or_default();
    assert!(signer.starts_with("ASIAFAKEROLE"), "ECR was called with the role's credentials, not the node's: {signer}");

    // The same token is a cache hit; another token is another identity.
    expect_accepted(
        &plugin.request(&request_json(ApiVersion::V1, PRIVATE, Some(&sa(&a)), false)),
        ApiVersion::V1,
        PRIVATE,
        &aws.secrets(),
    );
    assert_eq!(aws.calls("sts:AssumeRoleWithWebIdentity"), 1);
    expect_accepted(
        &plugin.request(&request_json(ApiVersion::V1, PRIVATE, Some(&sa(&b)), false)),
        ApiVersion::V1,
        PRIVATE,
        &aws.secrets(),
    );
    assert_eq!(aws.calls("sts:AssumeRoleWithWebIdentity"), 2);

    // The node's own entry is separate from the tenants'.
    expect_accepted(&plugin.request(&request(PRIVATE)), ApiVersion::V1, PRIVATE, &aws.secrets());
    assert_eq!(aws.signers().last().map(String::as_str), Some("AKIAFAKESTATICKEY001"));

    // `check` as the service account: the role assumed with its token, every call made as the role.
    let (exec, report) = check_as_service_account(&plugin, &[], PRIVATE, &sa(&a));
    assert_eq!(exec.code, Some(0), "{}{}", exec.stdout, exec.stderr);
    let image = &report["images"][0];
    assert_eq!(image["identity"], "arn:aws:sts::123456789012:assumed-role/tenant-a-puller/ecr-credential-provider");
    assert_eq!(image["checks"][0]["action"], "sts:AssumeRoleWithWebIdentity");
    assert_eq!(image["checks"].as_array().map(Vec::len), Some(8), "{report}");
    assert_eq!(aws.calls("sts:AssumeRoleWithWebIdentity"), 3);
    assert!(aws.signers().last().is_some_and(|s| s.starts_with("ASIAFAKEROLE")), "as the role, not the node");
    expect_no_secrets(&exec.stderr, &aws.secrets());
    // A token the role's trust policy refuses: said as the one step, denied.
    aws.deny("sts:AssumeRoleWithWebIdentity");
    let (exec, report) = check_as_service_account(&plugin, &[], PRIVATE, &sa(&b));
    assert_eq!(exec.code, Some(2), "{}", exec.stderr);
    assert_eq!(report["images"][0]["checks"][0]["result"], "denied", "{report}");
    expect_no_secrets(&exec.stdout, &aws.secrets());
}

#[test]
fn kep_4412_without_a_role_uses_the_node_identity_and_says_so() {
    let aws = FakeAws::start();
    let plugin = plugin(&aws);
    let sa = TestServiceAccount { token: Some("token-without-role-0001".into()), annotations: BTreeMap::new() };
    let exec = plugin.exec(&["-v"], request_json(ApiVersion::V1, PRIVATE, Some(&sa), false).as_bytes());
    expect_accepted(&exec, ApiVersion::V1, PRIVATE, &aws.secrets());
    assert!(exec.stderr.contains("using the node's credentials"), "{}", exec.stderr);
    assert_eq!(aws.calls("sts:AssumeRoleWithWebIdentity"), 0);

    // AWS_ECR_ROLE_ARN names a role for every service account.
    let mut plugin = plugin;
    plugin.set_env("AWS_ECR_ROLE_ARN", ROLE);
    expect_accepted(
        &plugin.request(&request_json(ApiVersion::V1, PRIVATE, Some(&sa), false)),
        ApiVersion::V1,
        PRIVATE,
        &aws.secrets(),
    );
    assert_eq!(aws.calls("sts:AssumeRoleWithWebIdentity"), 1);
}

#[test]
fn a_failed_role_assumption_never_falls_back_to_the_node() {
    let aws = FakeAws::start();
    aws.deny("sts:AssumeRoleWithWebIdentity");
    let plugin = plugin(&aws);
    let sa = TestServiceAccount {
        token: Some("token-denied-000001".into()),
        annotations: BTreeMap::from([("eks.amazonaws.com/ecr-role-arn".to_string(), ROLE.to_string())]),
    };
    aws.add_secret("token-denied-000001");
    let exec = plugin.request(&request_json(ApiVersion::V1, PRIVATE, Some(&sa), false));
    // The fake echoes the token in its error; the plugin's line must not.
    expect_rejected(&exec, &aws.secrets());
    assert!(exec.stderr.contains("sts:AssumeRoleWithWebIdentity"), "{}", exec.stderr);
    assert!(exec.stderr.contains("with token [redacted]"), "{}", exec.stderr);
    assert_eq!(aws.token_calls(), 0);
}

#[test]
fn the_instance_metadata_service_is_the_node_identity_when_nothing_else_is() {
    let aws = FakeAws::start();
    let plugin = PluginUnderTest::new(BINARY).with_env(aws.endpoint_env());
    let exec = plugin.exec(&["-vvv"], request(PRIVATE).as_bytes());
    expect_accepted(&exec, ApiVersion::V1, PRIVATE, &aws.secrets());
    assert!(aws.calls("imds:token") >= 1);
    assert_eq!(aws.signers(), vec![fake_clouds::aws::IMDS_ACCESS_KEY_ID.to_string()]);
}

#[test]
fn no_secret_reaches_stderr_at_the_highest_verbosity() {
    let aws = FakeAws::start();
    aws.set_token_lifetime(Duration::from_secs(4));
    let plugin = plugin(&aws);
    let token = format!("sa-token-{}", fake_clouds::server::nonce());
    aws.add_secret(&token);
    let sa = TestServiceAccount {
        token: Some(token),
        annotations: BTreeMap::from([("eks.amazonaws.com/ecr-role-arn".to_string(), ROLE.to_string())]),
    };
    let mut stderr = String::new();
    for body in [request(PRIVATE), request(PUBLIC), request_json(ApiVersion::V1, PRIVATE, Some(&sa), false)] {
        for _ in 0..2 {
            let exec = plugin.exec(&["-vvv"], body.as_bytes());
            assert_eq!(exec.code, Some(0), "{}", exec.stderr);
            stderr.push_str(&exec.stderr);
        }
    }
    std::thread::sleep(Duration::from_millis(2200));
    let exec = plugin.exec(&["-vvv", "refresh"], b"");
    stderr.push_str(&exec.stderr);
    for fault in [Fault::Status(500), Fault::Garbage] {
        aws.set_fault(Some(fault));
        stderr.push_str(&plugin.exec(&["-vvv", "--no-cache"], request(PRIVATE).as_bytes()).stderr);
    }
    assert!(stderr.contains("DEBUG") || stderr.contains("TRACE"), "the run was verbose");
    expect_no_secrets(&stderr, &aws.secrets());
}

#[test]
fn image_flag_accepts_what_a_person_types() {
    let aws = FakeAws::start();
    let plugin = plugin(&aws);
    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    for image in [format!("{PRIVATE}:1.0"), format!("{PRIVATE}@{digest}"), format!("{PUBLIC}:latest")] {
        let exec = plugin.exec(&["--image", &image], b"");
        let normalized =
            image.split(['@']).next().unwrap_or_default().rsplit_once(':').map_or(image.as_str(), |(n, _)| n);
        expect_accepted(&exec, ApiVersion::V1, normalized, &aws.secrets());
    }
    let token_file = plugin.home().join("token");
    std::fs::write(&token_file, "file-token-0000001\n").expect("token");
    aws.add_secret("file-token-0000001");
    let exec = plugin.exec(
        &[
            "--image",
            PRIVATE,
            "--service-account-token-file",
            token_file.to_str().unwrap_or_default(),
            "--service-account-annotation",
            &format!("eks.amazonaws.com/ecr-role-arn={ROLE}"),
        ],
        b"",
    );
    expect_accepted(&exec, ApiVersion::V1, PRIVATE, &aws.secrets());
    assert_eq!(aws.assumed_roles(), vec![(ROLE.to_string(), "file-token-0000001".to_string())]);
    let exec = plugin.exec(&["--image", "quay.io/x"], b"");
    expect_rejected(&exec, &aws.secrets());
}

#[test]
fn fips_and_dual_stack_hosts_go_through_an_endpoint_override() {
    let aws = FakeAws::start();
    let plugin = plugin(&aws);
    for image in [
        "123456789012.dkr.ecr-fips.us-east-1.amazonaws.com/team/app",
        "123456789012.dkr-ecr.us-east-1.on.aws/team/app",
        "123456789012.dkr-ecr-fips.us-gov-west-1.on.aws/team/app",
        "ecr-public.aws.com/team/app",
    ] {
        let exec = plugin.request(&request(image));
        let response = expect_accepted(&exec, ApiVersion::V1, image, &aws.secrets());
        let host = image.split('/').next().unwrap_or_default();
        assert_eq!(response.auth.keys().collect::<Vec<_>>(), vec![host], "{image}");
    }
    assert_eq!(aws.token_calls(), 4, "each through the override, none refused by the SDK");
    // The SDK's variable for every service is an override too.
    let mut env: Vec<(String, String)> =
        aws.env_with_static_keys().into_iter().filter(|(name, _)| name != "AWS_ENDPOINT_URL_ECR").collect();
    env.push(("AWS_ENDPOINT_URL".into(), aws.url()));
    let global = PluginUnderTest::new(BINARY).with_env(env);
    let image = "123456789012.dkr.ecr-fips.us-west-2.amazonaws.com/team/app";
    expect_accepted(&global.request(&request(image)), ApiVersion::V1, image, &aws.secrets());
}

#[test]
fn a_registry_named_with_its_default_port_is_the_same_registry() {
    let aws = FakeAws::start();
    let plugin = plugin(&aws);
    for image in ["123456789012.dkr.ecr.us-east-1.amazonaws.com:443/team/app", "public.ecr.aws:443/team/app"] {
        let response = expect_accepted(&plugin.request(&request(image)), ApiVersion::V1, image, &aws.secrets());
        let host = image.split('/').next().unwrap_or_default();
        assert_eq!(response.auth.keys().collect::<Vec<_>>(), vec![host], "the key as the request spelt it");
    }
    let exec = plugin.request(&request("123456789012.dkr.ecr.us-east-1.amazonaws.com:5000/team/app"));
    expect_rejected(&exec, &aws.secrets());
    assert_eq!(exec.code, Some(1));
}

#[test]
fn refresh_renews_stale_entries_so_execs_stay_offline() {
    let aws = FakeAws::start();
    aws.set_token_lifetime(Duration::from_secs(6));
    let plugin = plugin(&aws);
    expect_accepted(&plugin.request(&request(PRIVATE)), ApiVersion::V1, PRIVATE, &aws.secrets());
    expect_accepted(&plugin.request(&request(PUBLIC)), ApiVersion::V1, PUBLIC, &aws.secrets());
    // Fresh entries are left alone.
    let exec = plugin.exec(&["refresh"], b"");
    assert_eq!(exec.code, Some(0), "{}", exec.stderr);
    assert_eq!(aws.token_calls(), 2);
    std::thread::sleep(Duration::from_millis(3600));
    let exec = plugin.exec(&["refresh"], b"");
    assert_eq!(exec.code, Some(0), "{}", exec.stderr);
    assert_eq!(exec.stdout, "");
    assert_eq!(exec.stderr.matches("ecr-credential-provider: renewed ").count(), 2, "{}", exec.stderr);
    assert!(exec.stderr.contains("refresh pass [ecr]: 2 renewed, 0 failed, 0 skipped"), "{}", exec.stderr);
    assert_eq!(aws.token_calls(), 4);
    expect_accepted(&plugin.request(&request(PRIVATE)), ApiVersion::V1, PRIVATE, &aws.secrets());
    expect_accepted(&plugin.request(&request(PUBLIC)), ApiVersion::V1, PUBLIC, &aws.secrets());
    assert_eq!(aws.token_calls(), 4, "after a refresh pass an exec makes no call");
    // A failing cloud makes refresh fail, and say which entry.
    std::thread::sleep(Duration::from_millis(3600));
    aws.set_fault(Some(Fault::Status(500)));
    let exec = plugin.exec(&["refresh"], b"");
    assert_eq!(exec.code, Some(2), "{}", exec.stderr);
    assert!(exec.stderr.contains("failed to renew 123456789012.dkr.ecr.us-east-1.amazonaws.com"), "{}", exec.stderr);
}

#[test]
fn check_reports_every_pull_permission() {
    let aws = FakeAws::start();
    let plugin = plugin(&aws);
    let exec = plugin.exec(&["check", "--image", &format!("{PRIVATE}:1.0")], b"");
    assert_eq!(exec.code, Some(0), "{}\n{}", exec.stdout, exec.stderr);
    for action in [
        "ecr:GetAuthorizationToken",
        "ecr:BatchCheckLayerAvailability",
        "ecr:GetDownloadUrlForLayer",
        "ecr:GetRepositoryPolicy",
        "ecr:DescribeRepositories",
        "ecr:ListImages",
        "ecr:BatchGetImage",
    ] {
        let row = exec
            .stdout
            .lines()
            .find(|l| l.starts_with(action))
            .unwrap_or_else(|| panic!("{action} in {}", exec.stdout));
        assert!(row.contains("allowed"), "{row}");
    }
    assert!(exec.stdout.contains("arn:aws:iam::123456789012:user/fake"), "{}", exec.stdout);

    aws.deny("ecr:ListImages");
    aws.deny("ecr:BatchGetImage");
    let exec = plugin.exec(&["check", "--image", PRIVATE, "--output", "json"], b"");
    assert_eq!(exec.code, Some(2), "{}", exec.stderr);
    let report: serde_json::Value = serde_json::from_str(&exec.stdout).expect("json report");
    assert_eq!(report["allowed"], false);
    let results: BTreeMap<String, String> = report["images"][0]["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (c["action"].as_str().unwrap_or_default().to_string(), c["result"].as_str().unwrap_or_default().to_string())
        })
        .collect();
    assert_eq!(results["ecr:ListImages"], "denied");
    assert_eq!(results["ecr:BatchGetImage"], "denied");
    assert_eq!(results["ecr:GetRepositoryPolicy"], "allowed");
    assert_eq!(results.len(), 7);
    assert_eq!(exec.stderr.lines().count(), 1, "{}", exec.stderr);

    let exec = plugin.exec(&["check", "--image", PUBLIC, "--output", "json"], b"");
    assert_eq!(exec.code, Some(0), "{}", exec.stderr);
    aws.deny("ecr-public:GetAuthorizationToken");
    let exec = plugin.exec(&["check", "--image", PUBLIC], b"");
    assert_eq!(exec.code, Some(2));
    assert!(exec.stdout.contains("ecr-public:GetAuthorizationToken  denied"), "{}", exec.stdout);
}

#[test]
fn version_and_help_need_no_request() {
    let plugin = PluginUnderTest::new(BINARY);
    let exec = plugin.exec(&["--version"], b"");
    assert_eq!(exec.code, Some(0));
    assert!(exec.stdout.starts_with("ecr-credential-provider "), "{}", exec.stdout);
    let exec = plugin.exec(&["--help"], b"");
    assert_eq!(exec.code, Some(0));
    assert!(exec.stdout.contains("check"));
    for args in [&["--no-such-flag"][..], &["check"], &["refresh", "--every", "soon"], &["surprise"]] {
        let exec = plugin.exec(args, b"");
        expect_rejected(&exec, &[]);
        assert_eq!(exec.code, Some(1), "{args:?}");
        assert!(exec.stderr.contains("see --help"), "{}", exec.stderr);
    }
}

#[test]
fn a_role_annotation_that_is_not_an_arn_is_refused() {
    let aws = FakeAws::start();
    let sa = TestServiceAccount {
        token: Some("t0ken-for-bad-role".into()),
        annotations: BTreeMap::from([("eks.amazonaws.com/ecr-role-arn".to_string(), "not-an-arn".to_string())]),
    };
    let exec = plugin(&aws).request(&request_json(ApiVersion::V1, PRIVATE, Some(&sa), false));
    expect_rejected(&exec, &aws.secrets());
    assert_eq!(exec.code, Some(1));
    assert_eq!(aws.token_calls(), 0);
}

#[test]
fn an_unreachable_metadata_service_leads_the_error_line_and_check_says_it_once() {
    let aws = FakeAws::start();
    let refusing = fake_clouds::server::refusing_address();
    let env: Vec<(String, String)> = aws
        .endpoint_env()
        .into_iter()
        .map(|(name, value)| match name.as_str() {
            "AWS_EC2_METADATA_SERVICE_ENDPOINT" => (name, format!("http://{refusing}")),
            _ => (name, value),
        })
        .collect();
    let plugin = PluginUnderTest::new(BINARY).with_env(env);
    let started = Instant::now();
    let exec = plugin.request(&request(PRIVATE));
    assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
    expect_rejected(&exec, &aws.secrets());
    assert_eq!(exec.code, Some(2));
    let last = exec.stderr.lines().last().unwrap_or_default();
    let expected = format!(
        "ecr-credential-provider: error: ecr:GetAuthorizationToken: no AWS credentials: the instance metadata service is unreachable (cannot reach http://{refusing}/latest/api/token:"
    );
    assert!(last.starts_with(&expected), "{last}");
    assert!(
        last.contains("refused")
            && last.ends_with("give the node an instance profile, or set AWS_* variables or a profile"),
        "{last}"
    );
    assert!(last.len() < 400, "one short line: {} characters", last.len());
    let verbose = plugin.exec(&["-v"], request(PRIVATE).as_bytes());
    assert!(verbose.stderr.contains("no credentials found in chain"), "-v keeps the SDK's chain: {}", verbose.stderr);

    let exec = plugin.exec(&["check", "--image", PRIVATE, "--output", "json"], b"");
    assert_eq!(exec.code, Some(2), "{}", exec.stderr);
    let report: serde_json::Value = serde_json::from_str(&exec.stdout).expect("a JSON report");
    let steps = report["images"][0]["checks"].as_array().cloned().unwrap_or_default();
    assert_eq!(steps.len(), 1, "the identity's failure, once: {steps:?}");
    assert_eq!(steps[0]["action"], "AWS credentials");
    assert_eq!(steps[0]["result"], "unknown");
    assert!(steps[0]["detail"].as_str().unwrap_or_default().contains("instance metadata service is unreachable"));
}

#[test]
fn refresh_says_what_it_skips_and_removes_dead_service_account_entries() {
    let aws = FakeAws::start();
    aws.set_token_lifetime(Duration::from_secs(6));
    let plugin = plugin(&aws);
    // Written by an exec with another environment than the refresh below has.
    let kubelet_like = plugin.with_program(plugin.binary()).with_env([("AWS_EC2_METADATA_DISABLED", "true")]);
    expect_accepted(&kubelet_like.request(&request(PRIVATE)), ApiVersion::V1, PRIVATE, &aws.secrets());
    std::thread::sleep(Duration::from_millis(3600));
    let exec = plugin.exec(&["refresh"], b"");
    assert_eq!(exec.code, Some(2), "a skipped entry fails the pass: {}", exec.stderr);
    assert!(exec.stderr.contains("skipped 123456789012.dkr.ecr.us-east-1.amazonaws.com"), "{}", exec.stderr);
    assert!(exec.stderr.contains("kubelet's config"), "it says what to do: {}", exec.stderr);
    assert!(exec.stderr.contains("refresh pass [ecr]: 0 renewed, 0 failed, 1 skipped"), "{}", exec.stderr);
    assert_eq!(aws.token_calls(), 1);
    // With the same environment as the exec, it is renewed.
    let exec = kubelet_like.exec(&["refresh"], b"");
    assert_eq!(exec.code, Some(0), "{}", exec.stderr);
    assert!(exec.stderr.contains("refresh pass [ecr]: 1 renewed, 0 failed, 0 skipped"), "{}", exec.stderr);
    assert_eq!(aws.token_calls(), 2);

    // A service-account entry long expired goes, with its lock file.
    let token = format!("token-sa-{}", fake_clouds::server::nonce());
    aws.add_secret(&token);
    let sa = TestServiceAccount {
        token: Some(token),
        annotations: BTreeMap::from([("eks.amazonaws.com/ecr-role-arn".to_string(), ROLE.to_string())]),
    };
    expect_accepted(
        &plugin.request(&request_json(ApiVersion::V1, PRIVATE, Some(&sa), false)),
        ApiVersion::V1,
        PRIVATE,
        &aws.secrets(),
    );
    let files = || -> Vec<std::path::PathBuf> {
        let mut files: Vec<_> =
            std::fs::read_dir(plugin.cache_dir()).expect("list").flatten().map(|e| e.path()).collect();
        files.sort();
        files
    };
    let entry = files()
        .into_iter()
        .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("\"needsServiceAccountToken\":true")))
        .expect("the service account's entry");
    let lock = entry.with_extension("lock");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&entry).expect("entry")).expect("entry is JSON");
    let long_ago = json["issuedAt"].as_u64().unwrap_or(0) - 3 * 3600;
    for field in ["issuedAt", "refreshAt", "expiresAt"] {
        json[field] = serde_json::Value::from(long_ago);
    }
    std::fs::write(&entry, json.to_string()).expect("age the entry");
    std::fs::write(&lock, "").expect("its lock file, as a renewal leaves it");
    kubelet_like.exec(&["refresh"], b"");
    assert!(!entry.exists() && !lock.exists(), "removed with its lock: {:?}", files());
}

#[test]
fn eks_pod_identity_is_called_direct_and_ecr_through_the_nodes_proxy() {
    const TEST: &str = "eks_pod_identity_is_called_direct_and_ecr_through_the_nodes_proxy";
    if !fake_clouds::netns::in_private_namespaces(TEST, &[]) {
        return;
    }
    // The Pod Identity agent at its IPv6 address, in this test's network namespace only.
    fake_clouds::netns::add_loopback_address("fd00:ec2::23/128");
    let agent = FakeAws::start_at("[fd00:ec2::23]:80");
    let aws = FakeAws::start();
    let proxy = fake_clouds::proxy::RecordingProxy::start();
    let plugin = PluginUnderTest::new(BINARY)
        .with_env(aws.endpoint_env())
        .with_env(agent.pod_identity_env("http://[fd00:ec2::23]/v1/credentials"))
        .with_env([("HTTP_PROXY", proxy.url()), ("HTTPS_PROXY", proxy.url())]);
    let secrets = || [agent.secrets(), aws.secrets()].concat();

    // ECR's API honours the proxy (which forwards nothing) ...
    let exec = plugin.exec(&[], request(PRIVATE).as_bytes());
    expect_rejected(&exec, &secrets());
    let requests = proxy.requests();
    assert!(!requests.is_empty() && requests.iter().all(|r| r.starts_with(&aws.url())), "{requests:?}");
    // ... and with ECR's fake exempted, the pod's credentials come direct.
    let plugin = plugin.with_env([("NO_PROXY", "127.0.0.1")]);
    let exec = plugin.exec(&["-vvv"], request(PRIVATE).as_bytes());
    expect_accepted(&exec, ApiVersion::V1, PRIVATE, &secrets());
    assert_eq!(agent.calls("pod-identity:credentials"), 2);
    assert!(proxy.requests().iter().all(|r| !r.contains("fd00:ec2")), "{:?}", proxy.requests());
    assert_eq!(aws.signers(), vec!["ASIAFAKEPOD".to_string()]);
}

#[test]
fn an_absurd_expiry_from_the_cloud_is_cut_to_a_day() {
    let aws = FakeAws::start();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    // `"expiresAt": 99999999999`, a date in the year 5138.
    aws.set_token_lifetime(Duration::from_secs(99_999_999_999 - now));
    let plugin = plugin(&aws);
    for _ in 0..2 {
        // The simulator's reader refuses a cacheDuration a Go duration cannot hold.
        let response = expect_accepted(&plugin.request(&request(PRIVATE)), ApiVersion::V1, PRIVATE, &aws.secrets());
        let seconds = response.cache_seconds();
        assert!((12.0 * 3600.0 - 60.0..=12.0 * 3600.0).contains(&seconds), "{seconds}");
    }
    assert_eq!(aws.calls("ecr:GetAuthorizationToken"), 1, "the second exec was a cache hit");
    let entry = std::fs::read_dir(plugin.cache_dir())
        .expect("cache")
        .flatten()
        .find(|e| e.path().extension().is_some_and(|x| x == "json"))
        .expect("an entry");
    let entry: serde_json::Value = serde_json::from_slice(&std::fs::read(entry.path()).expect("read")).expect("JSON");
    let lifetime = entry["expiresAt"].as_u64().expect("expiresAt") - entry["issuedAt"].as_u64().expect("issuedAt");
    assert_eq!(lifetime, 24 * 3600, "the cached expiry is cut too");
}

#[test]
fn check_as_the_nodes_role_asks_iams_policy_simulator() {
    const NODE_ROLE: &str = "arn:aws:iam::123456789012:role/eks-node-role";
    let aws = FakeAws::start();
    let plugin = plugin(&aws);
    aws.add_principal_policy(
        NODE_ROLE,
        "AmazonEC2ContainerRegistryPullOnly",
        "aws-managed",
        r#"{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Sid": "Pull",
      "Effect": "Allow",
      "Action": ["ecr:GetAuthorizationToken", "ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"],
      "Resource": "*"
    }
  ]
}"#,
    );
    aws.set_repository_policy(
        "team/app",
        r#"{"Version": "2012-10-17", "Statement": [{"Sid": "NoListing", "Effect": "Deny", "Principal": "*", "Action": "ecr:ListImages"}]}"#,
    );
    let exec = plugin.exec(&["check", "--as", NODE_ROLE, "--image", PRIVATE, "--output", "json"], b"");
    assert_eq!(exec.code, Some(2), "{}{}", exec.stdout, exec.stderr);
    let report: serde_json::Value = serde_json::from_str(&exec.stdout).expect("a JSON report");
    let image = &report["images"][0];
    assert_eq!(image["identity"], format!("{NODE_ROLE} (evaluated by IAM's policy simulator)"));
    let verdicts: BTreeMap<String, (String, String)> = image["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| {
            (
                c["action"].as_str().unwrap_or("").to_string(),
                (c["result"].as_str().unwrap_or("").to_string(), c["detail"].as_str().unwrap_or("").to_string()),
            )
        })
        .collect();
    assert_eq!(verdicts.len(), 8, "the repository's policy and the seven actions: {verdicts:?}");
    assert_eq!(verdicts["repository policy"].0, "allowed");
    let allowed = |action: &str| {
        let (result, detail) = &verdicts[action];
        assert_eq!(result, "allowed", "{action}: {detail}");
        assert!(detail.contains("AmazonEC2ContainerRegistryPullOnly (aws-managed policy), line 5"), "{detail}");
    };
    for action in [
        "ecr:GetAuthorizationToken",
        "ecr:BatchCheckLayerAvailability",
        "ecr:GetDownloadUrlForLayer",
        "ecr:BatchGetImage",
    ] {
        allowed(action);
    }
    // The repository's own policy denies listing: an explicit deny, with the deciding statement.
    assert_eq!(
        verdicts["ecr:ListImages"],
        ("denied".into(), "explicit deny: ResourcePolicy (resource policy), line 1".into())
    );
    // Nothing allows describing: an implicit deny.
    assert_eq!(verdicts["ecr:DescribeRepositories"].0, "denied");
    assert!(verdicts["ecr:DescribeRepositories"].1.starts_with("implicit deny"), "{verdicts:?}");

    // What IAM was asked: the token on "*", the repository's six on its ARN with
    // its policy, every page of the answer read; nothing done as the role.
    let simulations = aws.simulations();
    assert_eq!(simulations.len(), 3, "{simulations:?}");
    assert_eq!(simulations[0].resources, ["*"]);
    assert_eq!(simulations[1].resources, ["arn:aws:ecr:us-east-1:123456789012:repository/team/app"]);
    assert!(simulations[1].resource_policy);
    assert_eq!(simulations[2].marker.as_deref(), Some("page-4"), "the second page of the six");
    assert!(simulations.iter().all(|s| s.principal == NODE_ROLE));
    assert!(aws.assumed_roles().is_empty());
    assert_eq!(aws.calls("ecr:BatchGetImage"), 0, "nothing is pulled, as anybody");
    expect_no_secrets(&exec.stdout, &aws.secrets());

    // A role IAM does not know, and a runner that may not simulate: unknown, with IAM's reason.
    let exec = plugin
        .exec(&["check", "--as", "arn:aws:iam::123456789012:role/typo", "--image", PRIVATE, "--output", "json"], b"");
    assert_eq!(exec.code, Some(2));
    assert!(exec.stdout.contains("NoSuchEntity: The role with name typo cannot be found."), "{}", exec.stdout);
    aws.deny("iam:SimulatePrincipalPolicy");
    let exec = plugin.exec(&["check", "--as", NODE_ROLE, "--image", PUBLIC, "--output", "json"], b"");
    assert_eq!(exec.code, Some(2));
    let report: serde_json::Value = serde_json::from_str(&exec.stdout).expect("a JSON report");
    let checks = report["images"][0]["checks"].as_array().cloned().unwrap_or_default();
    assert_eq!(checks.len(), 2, "ECR Public's two actions: {checks:?}");
    assert!(
        checks
            .iter()
            .all(|c| c["result"] == "unknown" && c["detail"].as_str().is_some_and(|d| d.contains("AccessDenied"))),
        "{checks:?}"
    );

    // Not a role or a user: refused before any call.
    let exec = plugin.exec(&["check", "--as", "eks-node-role", "--image", PRIVATE], b"");
    assert_eq!(exec.code, Some(1), "{}", exec.stderr);
    assert!(exec.stderr.contains("not an IAM role or user ARN"), "{}", exec.stderr);
    assert_eq!(exec.stdout, "");
}
