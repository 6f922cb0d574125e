//! CI validation of a release, as a pipeline runs it before a rollout:
//! `kubelet-simulator check` over the release's manifests, each image checked
//! by the provider the kubelet would run for it (here ECR's and Google's
//! plugins, against their fake clouds), as the node or as a pod's service
//! account, in one report a CI server reads.

use std::path::Path;
use std::process::Command;

use fake_clouds::FakeAws;
use fake_clouds::examples::provider_config;
use fake_clouds::plugins::{FakeCloud, built_binary, google_with_registry};

const ECR_IMAGE: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/shop/web:1.0";
const ECR_JOB: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/shop/report";
const GCR_IMAGE: &str = "gcr.io/fake-project/proxy:2.0";
const PUBLIC_IMAGE: &str = "nginx:1.27";
const ROLE: &str = "arn:aws:iam::123456789012:role/shop-puller";

/// A node's bin dir and config: ECR's provider (service-account image pull
/// on, the role optional) and Google's, each with its fake cloud's env.
fn node(dir: &Path, aws: &FakeAws, google: &dyn FakeCloud) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    for name in ["ecr-credential-provider", "gcr-credential-provider"] {
        std::os::unix::fs::symlink(built_binary(name), bin.join(name)).expect("install");
    }
    let ecr = provider_config(
        "ecr-credential-provider",
        "12h",
        &["*.dkr.ecr.*.amazonaws.com"],
        &[],
        &aws.env_with_static_keys(),
    );
    let token_attributes = "    tokenAttributes:\n      serviceAccountTokenAudience: sts.amazonaws.com\n      cacheType: ServiceAccount\n      requireServiceAccount: false\n      optionalServiceAccountAnnotationKeys: [eks.amazonaws.com/ecr-role-arn]\n";
    let gcr_env = google.plugin(built_binary("gcr-credential-provider")).env().to_vec();
    let gcr = provider_config(
        "gcr-credential-provider",
        "1m",
        &["gcr.io", "*.gcr.io", "*.pkg.dev"],
        &["get-credentials"],
        &gcr_env,
    );
    let (_, gcr_provider) = gcr.split_once("providers:\n").expect("a providers list");
    std::fs::write(dir.join("config.yaml"), format!("{ecr}{token_attributes}{gcr_provider}")).expect("config");
    let containers = [("web", ECR_IMAGE), ("proxy", GCR_IMAGE), ("cache", PUBLIC_IMAGE)];
    let manifests = fake_clouds::examples::release_manifests(&containers, ECR_JOB);
    std::fs::write(dir.join("release.yaml"), manifests).expect("manifests");
}

/// `kubelet-simulator check` over the node's config and the release, with `extra` arguments.
fn simulator_check(dir: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(built_binary("kubelet-simulator"))
        .arg("check")
        .args(["--image-credential-provider-config", &dir.join("config.yaml").display().to_string()])
        .args(["--image-credential-provider-bin-dir", &dir.join("bin").display().to_string()])
        .args(["--manifest", &dir.join("release.yaml").display().to_string()])
        .args(extra)
        .env("CREDENTIAL_PROVIDER_CACHE_DIR", dir.join("cache"))
        .output()
        .expect("run kubelet-simulator");
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status.code(), text(output.stdout), text(output.stderr))
}

#[test]
fn a_release_across_two_clouds_is_checked_in_one_command() {
    let aws = FakeAws::start();
    let google = google_with_registry();
    let dir = tempfile::tempdir().expect("dir");
    node(dir.path(), &aws, &google);

    // As the node: each image by its cloud's provider; the public image needs none.
    let (code, stdout, stderr) = simulator_check(dir.path(), &["--output", "json"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("a JSON report");
    let images = report["images"].as_array().expect("images");
    let seen: Vec<(&str, &str, &str)> = images
        .iter()
        .map(|i| {
            (
                i["image"].as_str().unwrap_or(""),
                i["provider"].as_str().unwrap_or("-"),
                i["status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (ECR_IMAGE, "ecr-credential-provider", "checked"),
            (GCR_IMAGE, "gcr-credential-provider", "checked"),
            (PUBLIC_IMAGE, "-", "no_provider"),
            (ECR_JOB, "ecr-credential-provider", "checked"),
        ]
    );
    assert_eq!(images[0]["sources"][0], "Deployment shop/web, container web");
    assert_eq!(images[0]["identity"], "arn:aws:iam::123456789012:user/fake");
    assert_eq!(aws.calls("ecr:GetAuthorizationToken"), 2, "one check run for both ECR images, a token each");

    // JUnit for the CI server: a suite per image, the public image skipped.
    let (code, stdout, _) = simulator_check(dir.path(), &["--output", "junit"]);
    assert_eq!(code, Some(0));
    let junit = fake_clouds::junit::read(&stdout);
    assert_eq!(junit.suites.len(), 4, "{junit:?}");
    assert_eq!((junit.failures, junit.errors, junit.skipped), (0, 0, 1), "{junit:?}");

    // An image named on the command line that the manifests deploy too: reported for each.
    let (code, stdout, stderr) = simulator_check(dir.path(), &["--image", ECR_IMAGE, "--output", "json"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("a JSON report");
    let checked: Vec<&str> = report["images"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["image"] == ECR_IMAGE && i["status"] == "checked")
        .filter_map(|i| i["image"].as_str())
        .collect();
    assert_eq!(checked.len(), 2, "{report}");

    // As the tenant's service account: ECR's provider assumes its role; Google's has no tokenAttributes.
    let token_file = dir.path().join("token");
    let token = format!("eyJhbGciOi.shop-web-{}.sig", fake_clouds::server::nonce());
    aws.add_secret(&token);
    std::fs::write(&token_file, &token).expect("token");
    let role = format!("eks.amazonaws.com/ecr-role-arn={ROLE}");
    let token_arg = token_file.display().to_string();
    let sa_args = ["--service-account-token-file", token_arg.as_str(), "--service-account-annotation", role.as_str()];
    let (code, stdout, stderr) = simulator_check(dir.path(), &[&sa_args[..], &["--output", "json"]].concat());
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("a JSON report");
    assert_eq!(
        report["images"][0]["identity"],
        "arn:aws:sts::123456789012:assumed-role/shop-puller/ecr-credential-provider"
    );
    assert_eq!(report["images"][1]["identity"].as_str().map(|i| i.contains("metadata server")), Some(true));
    assert_eq!(aws.assumed_roles().len(), 2, "the role assumed for each ECR image: {:?}", aws.assumed_roles());
    assert!(!stdout.contains(&token) && !stderr.contains(&token), "the token is nowhere in the report or the log");

    // As the nodes' identities, from the runner: each cloud evaluates its own principal.
    const NODE_ROLE: &str = "arn:aws:iam::123456789012:role/eks-node-role";
    const NODE_SA: &str = "nodes@fake-project.iam.gserviceaccount.com";
    let pull = r#"{"Statement": [{"Sid": "Pull", "Effect": "Allow", "Action": "ecr:*", "Resource": "*"}]}"#;
    aws.add_principal_policy(NODE_ROLE, "pull", "role", pull);
    let download = ["artifactregistry.repositories.downloadArtifacts"];
    let member = format!("serviceAccount:{NODE_SA}");
    google.cloud.bind(
        "//cloudresourcemanager.googleapis.com/projects/fake-project",
        "roles/artifactregistry.reader",
        &download,
        &[&member],
    );
    let (as_ecr, as_gcr) =
        (format!("ecr-credential-provider={NODE_ROLE}"), format!("gcr-credential-provider={NODE_SA}"));
    let (code, stdout, stderr) = simulator_check(dir.path(), &["--as", &as_ecr, "--as", &as_gcr, "--output", "json"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).expect("a JSON report");
    let identities: Vec<&str> =
        report["images"].as_array().into_iter().flatten().filter_map(|i| i["identity"].as_str()).collect();
    assert_eq!(
        identities,
        [
            format!("{NODE_ROLE} (evaluated by IAM's policy simulator)"),
            format!("{NODE_SA} (evaluated by Google's Policy Troubleshooter)"),
            format!("{NODE_ROLE} (evaluated by IAM's policy simulator)"),
        ]
    );
    let (code, stdout, _) = simulator_check(dir.path(), &["--as", &as_ecr, "--as", &as_gcr, "--output", "junit"]);
    assert_eq!(code, Some(0));
    let junit = fake_clouds::junit::read(&stdout);
    assert_eq!((junit.suites.len(), junit.failures, junit.errors, junit.skipped), (4, 0, 0, 1), "{junit:?}");
    let (code, _, stderr) = simulator_check(dir.path(), &["--as", "nobody=x"]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no provider of the config is named nobody"), "{stderr}");

    // The node may not read the images: the ECR images fail, with AWS's reason; the others pass.
    aws.deny("ecr:BatchGetImage");
    let (code, stdout, _) = simulator_check(dir.path(), &["--output", "github"]);
    assert_eq!(code, Some(2), "{stdout}");
    let errors: Vec<&str> = stdout.lines().filter(|line| line.starts_with("::error")).collect();
    assert_eq!(errors.len(), 2, "one per ECR image: {stdout}");
    assert!(
        errors.iter().all(|line| line.contains("ecr%3ABatchGetImage denied") && line.contains("not authorized")),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|line| line.starts_with("::notice title=nginx%3A1.27::pulled without credentials")),
        "{stdout}"
    );
    let (code, stdout, _) = simulator_check(dir.path(), &["--output", "junit"]);
    assert_eq!(code, Some(2));
    let junit = fake_clouds::junit::read(&stdout);
    assert_eq!(junit.failures, 2, "{junit:?}");
    assert!(junit.not_passed.iter().all(|case| case.ends_with("ecr:BatchGetImage")), "{junit:?}");
}
