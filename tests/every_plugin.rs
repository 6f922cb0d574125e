//! The suites that are the same for every cloud, run over the plugin table
//! (`fake_clouds::plugins::PLUGINS`), each plugin against its own fake cloud: hostile input and a hostile node, the docker credential-helper
//! protocol and its installation, and an identity endpoint that cannot be
//! reached. What is particular to a cloud stays in `plugins/*/tests`.

use std::time::Duration;

use fake_clouds::plugins::for_every_plugin;
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
