//! The configs the managed platforms write today (`examples/platforms/`, each
//! citing its source), as a node has them: each is valid by the kubelet's
//! rules, and sends an image of every one of its `matchImages` patterns to our
//! plugin, installed under the provider's name, which answers it against the
//! fake cloud, as the kubelet simulator reads the answer.

use std::path::Path;

use credential_provider::matching::urls_match;
use fake_clouds::examples::{load, simulate_example};
use fake_clouds::plugins::plugin;

/// Runs the platform config `file` with the plugin `name` (the row of the
/// plugin table) against its fake cloud, for each of `images` the config
/// sends to it, after checking that they cover every pattern of the config.
fn every_pattern_answers(file: &str, name: &str, images: &[&str], args: Option<&[&str]>) {
    let relative = format!("platforms/{file}");
    let patterns: Vec<String> = load(&relative).into_iter().flat_map(|p| p.spec.match_images).collect();
    for pattern in &patterns {
        assert!(images.iter().any(|image| urls_match(pattern, image)), "{file}: no image for {pattern}");
    }
    // The images the config sends to the plugin (`images` may name others, of registries it leaves out).
    let images: Vec<&str> =
        images.iter().copied().filter(|image| patterns.iter().any(|pattern| urls_match(pattern, image))).collect();
    let row = plugin(name);
    let cloud = (row.start)();
    let node = tempfile::tempdir().expect("node");
    // What the node's kubelet gives the plugin besides the config's own env:
    // the fake cloud's endpoints and identity, and a cache of its own.
    let plugin = cloud.plugin(row.binary());
    let mut env = plugin.env().to_vec();
    env.push(("CREDENTIAL_PROVIDER_CACHE_DIR".into(), node.path().join("cache").display().to_string()));
    for image in images {
        let simulation = simulate_example(&relative, &row.binary(), &env, args, image);
        assert!(simulation.succeeded(), "{file}: {image}: {simulation:?}");
        let host = image.split('/').next().unwrap_or_default();
        assert_eq!(simulation.credentials[0].auth_key, host, "{file}: {image}");
    }
}

/// An image of every ECR registry form: each partition, FIPS and dual-stack
/// endpoints, and ECR Public.
const ECR_IMAGES: &[&str] = &[
    "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app",
    "123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com/team/app",
    "123456789012.dkr-ecr.eu-west-1.on.aws/team/app",
    "123456789012.dkr-ecr-fips.us-east-1.on.aws/team/app",
    "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn/team/app",
    "123456789012.dkr-ecr.cn-northwest-1.on.amazonwebservices.com.cn/team/app",
    "123456789012.dkr.ecr.eusc-de-east-1.amazonaws.eu/team/app",
    "123456789012.dkr.ecr.us-iso-east-1.c2s.ic.gov/team/app",
    "123456789012.dkr.ecr-fips.us-iso-east-1.c2s.ic.gov/team/app",
    "123456789012.dkr.ecr.us-isob-east-1.sc2s.sgov.gov/team/app",
    "123456789012.dkr.ecr-fips.us-isob-east-1.sc2s.sgov.gov/team/app",
    "123456789012.dkr.ecr.eu-isoe-west-1.cloud.adc-e.uk/team/app",
    "123456789012.dkr.ecr-fips.eu-isoe-west-1.cloud.adc-e.uk/team/app",
    "123456789012.dkr.ecr.us-isof-south-1.csp.hci.ic.gov/team/app",
    "123456789012.dkr.ecr-fips.us-isof-south-1.csp.hci.ic.gov/team/app",
    "public.ecr.aws/team/app",
];

#[test]
fn eks_al2023_nodeadm() {
    every_pattern_answers("eks-al2023-nodeadm.json", "ecr", ECR_IMAGES, None);
}

#[test]
fn bottlerocket() {
    every_pattern_answers("bottlerocket.yaml", "ecr", ECR_IMAGES, None);
}

/// An azure.json of a node whose VM has a managed identity, and the
/// config's arguments with it in place of `/etc/kubernetes/azure.json`.
fn aks_args(dir: &Path, rest: &[&str]) -> Vec<String> {
    let azure_json = dir.join("azure.json");
    std::fs::write(&azure_json, r#"{"cloud":"AzurePublicCloud","useManagedIdentityExtension":true}"#)
        .expect("azure.json");
    let mut args = vec![azure_json.display().to_string()];
    args.extend(rest.iter().map(|arg| arg.to_string()));
    args
}

#[test]
fn aks_linux() {
    let dir = tempfile::tempdir().expect("dir");
    let args = aks_args(dir.path(), &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let images = [
        "myacr.azurecr.io/team/app",
        "myacr.azurecr.cn/team/app",
        "myacr.azurecr.de/team/app",
        "other.azurecr.us/team/app",
    ];
    every_pattern_answers("aks-linux.yaml", "acr", &images, Some(&args));
}

#[test]
fn aks_linux_network_isolated() {
    let dir = tempfile::tempdir().expect("dir");
    let args = aks_args(dir.path(), &["--registry-mirror=mcr.microsoft.com:myacr.azurecr.io"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let images = [
        "myacr.azurecr.io/team/app",
        "myacr.azurecr.cn/team/app",
        "myacr.azurecr.de/team/app",
        "other.azurecr.us/team/app",
        "mcr.microsoft.com/oss/kubernetes/pause",
    ];
    every_pattern_answers("aks-linux-network-isolated.yaml", "acr", &images, Some(&args));
}

#[test]
fn gke_kube_up() {
    let images = [
        "container.cloud.google.com/fake-project/app",
        "gcr.io/fake-project/app",
        "eu.gcr.io/fake-project/app",
        "us-docker.pkg.dev/fake-project/images/app",
    ];
    every_pattern_answers("gke-kube-up.yaml", "gcr", &images, None);
}
