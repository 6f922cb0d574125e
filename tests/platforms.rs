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

/// Runs the AKS config `file` with the node's azure.json and `rest` as its arguments.
fn aks_config_answers(file: &str, rest: &[&str]) {
    let dir = tempfile::tempdir().expect("dir");
    let args = aks_args(dir.path(), rest);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    every_pattern_answers(file, "acr", ACR_IMAGES, Some(&args));
}

/// An image of each ACR cloud's registries, global and geo-replicated
/// (`name.region.geo.azurecr.*`), and of MCR (which a network-isolated cluster mirrors).
const ACR_IMAGES: &[&str] = &[
    "myacr.azurecr.io/team/app",
    "myacr.azurecr.cn/team/app",
    "myacr.azurecr.de/team/app",
    "other.azurecr.us/team/app",
    "myacr.westeurope.geo.azurecr.io/team/app",
    "myacr.chinanorth3.geo.azurecr.cn/team/app",
    "myacr.germanywestcentral.geo.azurecr.de/team/app",
    "other.usgovvirginia.geo.azurecr.us/team/app",
    "mcr.microsoft.com/oss/kubernetes/pause",
];

#[test]
fn aks_linux() {
    aks_config_answers("aks-linux.yaml", &[]);
}

#[test]
fn aks_linux_network_isolated() {
    aks_config_answers("aks-linux-network-isolated.yaml", &["--registry-mirror=mcr.microsoft.com:myacr.azurecr.io"]);
}

/// An image of each Google registry form: the legacy host, GCR and Artifact Registry.
const GCR_IMAGES: &[&str] = &[
    "container.cloud.google.com/fake-project/app",
    "gcr.io/fake-project/app",
    "eu.gcr.io/fake-project/app",
    "us-docker.pkg.dev/fake-project/images/app",
];

#[test]
fn eks_windows() {
    every_pattern_answers("eks-windows.yaml", "ecr", ECR_IMAGES, None);
}

#[test]
fn aks_windows() {
    aks_config_answers("aks-windows.yaml", &[]);
}

/// GCE Windows names the provider `auth-provider-gcp.exe`: the plugin runs
/// under that name, with the config's own arguments.
#[test]
fn gce_windows() {
    every_pattern_answers("gce-windows.yaml", "gcr", GCR_IMAGES, None);
}

#[test]
fn gke_kube_up() {
    every_pattern_answers("gke-kube-up.yaml", "gcr", GCR_IMAGES, None);
}

#[test]
fn aks_linux_with_service_account_image_pull() {
    const TEST: &str = "aks_linux_with_service_account_image_pull";
    if !fake_clouds::netns::in_private_namespaces(TEST, &[]) {
        return;
    }
    let file = "platforms/aks-linux-service-account.yaml";
    let providers = load(file);
    let attributes = providers[0].spec.token_attributes.as_ref().expect("tokenAttributes");
    assert_eq!(attributes.service_account_token_audience, "api://AKSIdentityBinding");
    // The cluster's token endpoint at the API server's address (here 127.0.0.2) under
    // the binding's name, Entra ID's IMDS for the node, and an ACR that trusts both.
    let binding = fake_clouds::azure::FakeIdentityBinding::start_at("127.0.0.2:443", "test.sni.local");
    let azure = fake_clouds::FakeAzure::start();
    let (from_binding, from_imds) = (binding.token_check(), azure.token_check());
    let registry = fake_clouds::FakeRegistry::start_acr(move |token| from_binding(token) || from_imds(token));
    let node = tempfile::tempdir().expect("node");
    let ca_file = node.path().join("ca.crt");
    std::fs::write(&ca_file, binding.ca_pem()).expect("CA");
    let mut env = azure.endpoint_env();
    env.push(("CREDENTIAL_PROVIDER_REGISTRY_ENDPOINTS".into(), registry.endpoints_for(&["myacr.azurecr.io"])));
    env.push(("CREDENTIAL_PROVIDER_CACHE_DIR".into(), node.path().join("cache").display().to_string()));
    // The config's flags, with the test's API server and CA in place of the node's.
    let args = aks_args(
        node.path(),
        &[
            "--ib-sni-name=test.sni.local",
            "--ib-default-client-id=11111111-2222-3333-4444-555555555555",
            "--ib-default-tenant-id=72f988bf-0000-4000-8000-000000000001",
            "--ib-apiserver-ip=127.0.0.2",
        ],
    );
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ca_arg = format!("--ib-ca-file={}", ca_file.display());
    args.push(&ca_arg);
    let acr = plugin("acr").binary();
    let image = "myacr.azurecr.io/team/app";

    // A pod with a service account: its token, through the identity binding.
    let token = format!("projected-sa-token-{}", fake_clouds::server::nonce());
    let pod = kubelet_simulator::simulate::ServiceAccountInput {
        name: Some("team/puller".into()),
        token: Some(token.clone()),
        annotations: Default::default(),
    };
    let simulation = fake_clouds::examples::simulate_example_as(file, &acr, &env, Some(&args), image, &pod);
    assert!(simulation.succeeded(), "{simulation:?}");
    assert_eq!(binding.grants(), [("11111111-2222-3333-4444-555555555555".to_string(), token)]);
    // A pod without one (requireServiceAccount: false): the node's managed identity.
    let simulation = simulate_example(file, &acr, &env, Some(&args), image);
    assert!(simulation.succeeded(), "{simulation:?}");
    assert_eq!(azure.grants(), [("system".to_string(), "imds".to_string())]);
    assert_eq!(binding.grants().len(), 1);
}
