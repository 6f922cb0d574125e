//! The suites that are the same for every cloud, run over the plugin table
//! (`fake_clouds::plugins::PLUGINS`), each plugin against its own fake cloud: hostile input and a hostile node, the docker credential-helper
//! protocol and its installation, and an identity endpoint that cannot be
//! reached. What is particular to a cloud stays in `plugins/*/tests`.

use std::time::Duration;

use fake_clouds::plugins::{PLUGINS, for_every_plugin};
use fake_clouds::{Fault, docker_helper, hardening};

#[test]
fn hardening_checks() {
    for_every_plugin(|row, cloud| {
        let plugin = cloud.plugin(row.binary());
        hardening::check_all(&hardening::Subject {
            plugin: &plugin,
            image: row.image,
            other_image: row.other_image,
            lookalikes: row.lookalikes,
            secrets: &|| cloud.secrets(),
            token_calls: &|| cloud.token_calls(),
            set_delay: &|delay| cloud.set_fault(delay.map(Fault::Slow)),
        });
    });
}

#[test]
fn works_as_a_docker_credential_helper() {
    for_every_plugin(|row, cloud| {
        let plugin = cloud.plugin(row.binary());
        docker_helper::check_all(&docker_helper::Subject {
            plugin: &plugin,
            image: row.image,
            secrets: &|| cloud.secrets(),
            break_cloud: &|| cloud.set_fault(Some(Fault::Status(403))),
        });
    });
}

#[test]
fn installs_itself_as_a_docker_credential_helper() {
    for_every_plugin(|row, cloud| {
        let host = |image: &'static str| image.split('/').next().unwrap_or_default();
        docker_helper::run_install(&cloud.plugin(row.binary()), &[host(row.image), host(row.other_image)], "quay.io");
    });
}

#[test]
fn an_unreachable_identity_endpoint_is_said_with_its_cause() {
    for_every_plugin(|row, cloud| {
        // A refusal of each cloud's own; ECR's tests check the AWS SDK's wording themselves.
        let Some((_, path)) = cloud.identity_at("127.0.0.1:1") else { return };
        hardening::unreachable_identity_is_said_with_its_cause(
            &cloud.plugin(row.binary()),
            row.image,
            &|address| cloud.identity_at(address).map(|(env, _)| env).unwrap_or_default(),
            path,
            Duration::from_secs(10),
        );
    });
}

#[test]
fn the_table_names_every_plugin_of_the_workspace() {
    let plugins = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let mut crates: Vec<String> = std::fs::read_dir(&plugins)
        .expect("plugins/")
        .flatten()
        .filter(|entry| entry.path().join("Cargo.toml").is_file())
        .filter_map(|entry| entry.file_name().to_str().map(str::to_string))
        .collect();
    crates.sort();
    let mut table: Vec<&str> = fake_clouds::plugins::PLUGINS.iter().map(|row| row.name).collect();
    table.sort();
    assert_eq!(crates, table, "a plugin crate needs its row in fake_clouds::plugins::PLUGINS");
}

#[test]
fn klogs_verbosity_flag_is_accepted_as_the_upstream_configs_pass_it() {
    for_every_plugin(|row, cloud| {
        let plugin = cloud.plugin(row.binary());
        let request = fake_clouds::conformance::request_json(
            credential_provider::protocol::ApiVersion::V1,
            row.image,
            None,
            false,
        );
        for (args, logs) in [(&["--v=3"][..], true), (&["--v", "4"], true), (&["--v=0"], false)] {
            // A fresh cache each time: every exec fetches, which the flow logs at info.
            let exec = plugin.with_fresh_cache().exec(args, request.as_bytes());
            let response = fake_clouds::conformance::expect_accepted(
                &exec,
                credential_provider::protocol::ApiVersion::V1,
                row.image,
                &cloud.secrets(),
            );
            assert!(!response.auth.is_empty(), "{args:?}");
            // --v=3 and more log what the plugin does, as -v does; --v=0 is quiet.
            assert_eq!(exec.stderr.contains("fetched a new credential"), logs, "{args:?}: {}", exec.stderr);
        }
    });
}

#[test]
fn check_reads_a_releases_manifests_and_reports_in_every_format() {
    for_every_plugin(|row, cloud| {
        let plugin = cloud.plugin(row.binary());
        let foreign = PLUGINS.iter().find(|other| other.name != row.name).expect("another plugin").image;
        let dir = tempfile::tempdir().expect("dir");
        let manifests = dir.path().join("release.yaml");
        let (image, sidecar) = (format!("{}:1.0", row.image), format!("{foreign}:2.0"));
        let text = fake_clouds::examples::release_manifests(&[("app", &image), ("sidecar", &sidecar)], row.other_image);
        std::fs::write(&manifests, text).expect("manifests");
        let manifests = manifests.display().to_string();

        // JSON: every image, where it is used, what became of it.
        let exec = plugin.exec(&["check", "--manifest", &manifests, "--output", "json"], b"");
        assert_eq!(exec.code, Some(0), "{}: {}{}", row.name, exec.stdout, exec.stderr);
        let report: serde_json::Value = serde_json::from_str(&exec.stdout).expect("a JSON report");
        assert_eq!(report["allowed"], true);
        let images = report["images"].as_array().expect("images");
        let names: Vec<&str> = images.iter().filter_map(|i| i["image"].as_str()).collect();
        assert_eq!(names, [image.as_str(), sidecar.as_str(), row.other_image]);
        assert_eq!(images[0]["status"], "checked");
        assert_eq!(images[0]["sources"][0], "Deployment shop/web, container app");
        assert_eq!(images[0]["service_accounts"][0], "shop/web");
        assert_eq!(images[1]["status"], "not_this_plugins", "another cloud's image is not a failure");
        assert_eq!(images[1]["allowed"], true);
        assert_eq!(images[2]["status"], "checked");
        assert_eq!(images[2]["sources"][0], "CronJob shop/report, container report");
        fake_clouds::conformance::expect_no_secrets(&exec.stdout, &cloud.secrets());

        // The manifests on stdin, and an image named on the command line too.
        let text = std::fs::read(&manifests).expect("manifests");
        let exec = plugin.exec(&["check", "--image", row.image, "--manifest", "-", "--output", "json"], &text);
        assert_eq!(exec.code, Some(0), "{}: {}", row.name, exec.stderr);
        let report: serde_json::Value = serde_json::from_str(&exec.stdout).expect("a JSON report");
        assert_eq!(report["images"].as_array().map(Vec::len), Some(4));

        // JUnit, as a CI server's test reporter reads it: a suite per image.
        let exec = plugin.exec(&["check", "--manifest", &manifests, "--output", "junit"], b"");
        assert_eq!(exec.code, Some(0), "{}: {}", row.name, exec.stderr);
        let junit = fake_clouds::junit::read(&exec.stdout);
        assert_eq!(junit.suites.len(), 3, "{junit:?}");
        assert_eq!((junit.failures, junit.errors, junit.skipped), (0, 0, 1), "{junit:?}");
        assert!(junit.tests > 3, "a case per permission: {junit:?}");

        // Only another cloud's images: a mistake, said on stderr, nothing on stdout.
        let exec = plugin.exec(&["check", "--image", foreign], b"");
        assert_eq!(exec.code, Some(1), "{}: {}", row.name, exec.stderr);
        assert_eq!(exec.stdout, "");
        assert!(exec.stderr.contains("is not one this plugin serves"), "{}", exec.stderr);

        // The cloud refuses the node: failures with the cloud's reason, in every format.
        cloud.set_fault(Some(Fault::Status(403)));
        let exec = plugin.exec(&["check", "--manifest", &manifests, "--output", "junit"], b"");
        assert_eq!(exec.code, Some(2), "{}: {}", row.name, exec.stderr);
        let junit = fake_clouds::junit::read(&exec.stdout);
        assert!(junit.failures + junit.errors > 0, "{}: {junit:?}", row.name);
        assert!(junit.not_passed.iter().all(|case| !case.starts_with(foreign)), "{junit:?}");
        let exec = plugin.exec(&["check", "--manifest", &manifests, "--output", "github"], b"");
        assert_eq!(exec.code, Some(2));
        assert!(exec.stdout.lines().any(|line| line.starts_with("::error title=")), "{}: {}", row.name, exec.stdout);
        assert!(exec.stdout.lines().any(|line| line.starts_with("::notice title=")), "{}", exec.stdout);
        fake_clouds::conformance::expect_no_secrets(&exec.stdout, &cloud.secrets());
        cloud.set_fault(None);
    });
}

#[test]
fn check_as_where_the_cloud_cannot_evaluate_a_principal_says_how_to_check_instead() {
    for_every_plugin(|row, cloud| {
        // ECR's `--as` asks IAM's policy simulator, GCR's the Policy Troubleshooter,
        // ACR's reads Azure's role and deny assignments (their own tests).
        if ["ecr", "gcr", "acr"].contains(&row.name) {
            return;
        }
        let exec = cloud.plugin(row.binary()).exec(&["check", "--as", "some-principal", "--image", row.image], b"");
        assert_eq!(exec.code, Some(1), "{}: {}", row.name, exec.stderr);
        assert_eq!(exec.stdout, "", "{}", row.name);
        assert_eq!(exec.stderr.lines().count(), 1, "{}: {}", row.name, exec.stderr);
        assert!(exec.stderr.contains("check --as some-principal: "), "{}: {}", row.name, exec.stderr);
        assert!(exec.stderr.contains(" check "), "says how to check instead: {}", exec.stderr);
        assert_eq!(cloud.token_calls(), 0, "{}: nothing was fetched", row.name);
    });
}
