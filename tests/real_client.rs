//! Real OCI clients (skopeo, docker's CLI) read a manifest from a real
//! registry through a plugin installed as their credential helper, and are
//! refused with a credential the registry does not know
//! (`fake_clouds::real_client`), for ECR and for Artifact Registry.

use fake_clouds::plugins::plugin;
use fake_clouds::real_client::{in_private_namespaces, pull_through_helper};

#[test]
fn skopeo_and_docker_read_an_ecr_manifest_through_the_helper() {
    if !in_private_namespaces("skopeo_and_docker_read_an_ecr_manifest_through_the_helper") {
        return;
    }
    let row = plugin("ecr");
    let cloud = (row.start)();
    pull_through_helper(&cloud.plugin(row.binary()), row.image, || cloud.secrets());
}

#[test]
fn skopeo_and_docker_read_an_artifact_registry_manifest_through_the_helper() {
    if !in_private_namespaces("skopeo_and_docker_read_an_artifact_registry_manifest_through_the_helper") {
        return;
    }
    let row = plugin("gcr");
    let cloud = (row.start)();
    pull_through_helper(&cloud.plugin(row.binary()), row.other_image, || cloud.secrets());
}
