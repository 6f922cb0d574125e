//! The demo: every built plugin, end to end, against the bundled fake clouds.
//!
//! Run `scripts/demo` (which builds the workspace first). It needs no cloud
//! account and no network: each plugin binary is executed as the kubelet
//! would, with its endpoints pointed at fake servers on 127.0.0.1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use credential_provider::protocol::ApiVersion;
use fake_clouds::conformance::{Exec, PluginUnderTest, TestServiceAccount, request_json, sibling_binaries};
use fake_clouds::{FakeAws, FakeAzure, FakeGoogle, FakeIbm, FakeOci, FakeRegistry, Fault};

/// One plugin's part of the demo, given its binary.
type Demo = fn(&Path);

/// Each plugin's part of the demo; a new plugin joins with one line.
const PLUGINS: &[(&str, Demo)] = &[
    ("ecr-credential-provider", ecr),
    ("gcr-credential-provider", gcr),
    ("acr-credential-provider", acr),
    ("icr-credential-provider", icr),
    ("ocir-credential-provider", ocir),
];

fn main() {
    let dir = sibling_binaries("target/debug");
    let mut ran = 0;
    for (name, demo) in PLUGINS {
        if let Some(binary) = find(&dir, name) {
            demo(&binary);
            ran += 1;
        }
    }
    if let Some(binary) = find(&dir, "kubelet-simulator") {
        simulator(&binary, &dir);
    }
    if ran == 0 {
        eprintln!("no plugin binaries next to {}; run `cargo build --workspace` first", dir.display());
        std::process::exit(1);
    }
    println!("\ndemo finished: {ran} plugin(s) ran against the fake clouds");
}

fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    let path = dir.join(name);
    path.is_file().then_some(path)
}

fn heading(text: &str) {
    println!("\n=== {text} ===");
}

/// Runs one exec, prints what the kubelet would see, and returns it.
fn show(plugin: &PluginUnderTest, args: &[&str], stdin: &str, secrets: &dyn Fn() -> Vec<String>) -> Exec {
    let started = Instant::now();
    let exec = plugin.exec(args, stdin.as_bytes());
    let elapsed = started.elapsed();
    if !stdin.is_empty() {
        println!("stdin : {stdin}");
    }
    if !args.is_empty() {
        println!("args  : {}", args.join(" "));
    }
    let status = exec.code.map_or_else(|| "killed by a signal".to_string(), |code| code.to_string());
    println!("exit  : {status} in {:.1} ms", elapsed.as_secs_f64() * 1000.0);
    if !exec.stdout.is_empty() {
        println!("stdout: {}", redact(exec.stdout.trim_end(), &secrets()));
    }
    for line in exec.stderr.lines() {
        println!("stderr: {line}");
    }
    exec
}

/// The demo's fake passwords are not secret, but a demo that prints
/// credentials teaches the wrong habit.
fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for secret in secrets.iter().filter(|s| s.len() >= 6) {
        out = out.replace(secret.as_str(), &format!("{}…", &secret[..secret.len().min(14)]));
    }
    out
}

fn ecr(binary: &Path) {
    heading("ecr-credential-provider against a fake ECR, ECR Public, STS and IMDS");
    let aws = FakeAws::start();
    let plugin = PluginUnderTest::new(binary).with_env(aws.endpoint_env());
    let private = "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app";

    println!("\n-- a cold exec: the node's identity from IMDSv2, one GetAuthorizationToken");
    show(&plugin, &[], &request_json(ApiVersion::V1, private, None, false), &|| aws.secrets());
    println!("\n-- the same image again: answered from the cache, no network");
    show(&plugin, &[], &request_json(ApiVersion::V1Beta1, private, None, false), &|| aws.secrets());
    println!("token calls so far: {}", aws.token_calls());

    println!("\n-- ECR Public");
    show(&plugin, &["--image", "public.ecr.aws/nginx/nginx:1.27"], "", &|| aws.secrets());

    println!("\n-- KEP-4412: a tenant's service-account token assumes the tenant's role");
    let sa = TestServiceAccount {
        token: Some("eyJhbGciOi.tenant-a-service-account-token.sig".to_string()),
        annotations: BTreeMap::from([(
            "eks.amazonaws.com/ecr-role-arn".to_string(),
            "arn:aws:iam::123456789012:role/tenant-a-puller".to_string(),
        )]),
    };
    aws.add_secret("eyJhbGciOi.tenant-a-service-account-token.sig");
    show(&plugin, &["-v"], &request_json(ApiVersion::V1, private, Some(&sa), false), &|| aws.secrets());
    println!("roles assumed: {:?}", aws.assumed_roles().iter().map(|(r, _)| r).collect::<Vec<_>>());

    println!("\n-- 32 execs at once on a cold cache for another region");
    let cold = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app";
    aws.set_fault(Some(Fault::Slow(std::time::Duration::from_millis(300))));
    let before = aws.token_calls();
    let body = request_json(ApiVersion::V1, cold, None, false);
    let started = Instant::now();
    let ok = plugin.exec_together(32, &[], body.as_bytes()).iter().filter(|e| e.code == Some(0)).count();
    aws.set_fault(None);
    println!(
        "{ok}/32 answered in {:.0} ms with {} token call(s)",
        started.elapsed().as_secs_f64() * 1000.0,
        aws.token_calls() - before
    );

    println!("\n-- check: every permission a pull needs, as this node");
    aws.deny("ecr:BatchGetImage");
    show(&plugin, &["check", "--image", &format!("{private}:1.0")], "", &|| aws.secrets());

    println!("\n-- bad input: a lookalike host gets one line on stderr and nothing on stdout");
    show(
        &plugin,
        &[],
        &request_json(ApiVersion::V1, "123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.io/x", None, false),
        &|| aws.secrets(),
    );
}

fn gcr(binary: &Path) {
    heading("gcr-credential-provider against a fake metadata server, STS, IAM Credentials and registry");
    let google = FakeGoogle::start();
    let registry = FakeRegistry::start();
    let mut plugin = PluginUnderTest::new(binary).with_env(google.endpoint_env());
    plugin.set_env("CREDENTIAL_PROVIDER_REGISTRY_ENDPOINTS", &registry.endpoints_for(&["us-docker.pkg.dev"]));
    let image = "us-docker.pkg.dev/fake-project/images/app";

    println!("\n-- a cold exec, as auth-provider-gcp is configured: the node's token from the metadata server");
    show(&plugin, &["get-credentials", "-v"], &request_json(ApiVersion::V1, image, None, false), &|| google.secrets());
    println!("\n-- again: answered from the cache");
    show(&plugin, &["get-credentials"], &request_json(ApiVersion::V1, image, None, false), &|| google.secrets());

    println!("\n-- KEP-4412: a tenant's token exchanged at STS, then impersonating its Google service account");
    let audience =
        "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/tenants/providers/cluster-a";
    let token = "eyJhbGciOi.tenant-b-service-account-token.sig";
    google.trust(audience, token);
    let sa = TestServiceAccount {
        token: Some(token.to_string()),
        annotations: BTreeMap::from([(
            "iam.gke.io/gcp-service-account".to_string(),
            "puller@tenant-b.iam.gserviceaccount.com".to_string(),
        )]),
    };
    show(&plugin, &["--audience", audience, "-v"], &request_json(ApiVersion::V1, image, Some(&sa), false), &|| {
        google.secrets()
    });
    println!("impersonated: {:?}", google.impersonated());

    println!("\n-- check: scopes, token, and the registry's own pull handshake");
    registry.deny("fake-project/secret");
    show(&plugin, &["check", "--image", &format!("{image}:1.0")], "", &|| google.secrets());
    show(&plugin, &["check", "--image", "us-docker.pkg.dev/fake-project/secret"], "", &|| google.secrets());
}

fn acr(binary: &Path) {
    heading("acr-credential-provider against a fake Entra ID, IMDS and ACR");
    let azure = FakeAzure::start();
    let registry = FakeRegistry::start_acr(azure.token_check());
    let secrets = || [azure.secrets(), registry.secrets()].concat();
    let plugin = PluginUnderTest::new(binary).with_env(azure.endpoint_env()).with_env([(
        "CREDENTIAL_PROVIDER_REGISTRY_ENDPOINTS",
        registry.endpoints_for(&["myacr.azurecr.io", "myacr.westeurope.geo.azurecr.io"]),
    )]);
    let config = plugin.home().join("azure.json");
    let _ = std::fs::write(&config, r#"{"cloud":"AzurePublicCloud","useManagedIdentityExtension":true}"#);
    let config = config.display().to_string();
    let image = "myacr.azurecr.io/team/app";

    println!("\n-- a cold exec with upstream's argument (azure.json): managed identity, then the registry's exchange");
    show(&plugin, &[&config, "-v"], &request_json(ApiVersion::V1, image, None, false), &secrets);
    println!("\n-- a geo-replica host, and a mirror: mcr.microsoft.com served with myacr's credential");
    show(
        &plugin,
        &[&config],
        &request_json(ApiVersion::V1, "myacr.westeurope.geo.azurecr.io/team/app", None, false),
        &secrets,
    );
    show(
        &plugin,
        &[&config, "--registry-mirror", "mcr.microsoft.com:myacr.azurecr.io"],
        &request_json(ApiVersion::V1, "mcr.microsoft.com/dotnet/runtime", None, false),
        &secrets,
    );

    println!("\n-- KEP-4412: the pod's service-account token as a client assertion for its own application");
    let app = "11111111-2222-3333-4444-555555555555";
    let token = "eyJhbGciOi.tenant-c-service-account-token.sig";
    azure.trust_assertion(fake_clouds::azure::TENANT, app, token);
    let sa = TestServiceAccount {
        token: Some(token.to_string()),
        annotations: BTreeMap::from([("kubernetes.azure.com/acr-client-id".to_string(), app.to_string())]),
    };
    let with_tenant = plugin.with_env([("AZURE_TENANT_ID", fake_clouds::azure::TENANT)]);
    show(&with_tenant, &[&config, "-v"], &request_json(ApiVersion::V1, image, Some(&sa), false), &secrets);

    println!("\n-- check, and a lookalike host");
    registry.deny("team/secret");
    show(&with_tenant, &[&config, "check", "--image", "myacr.azurecr.io/team/secret:1.0"], "", &secrets);
    show(
        &with_tenant,
        &[&config],
        &request_json(ApiVersion::V1, "myacr.azurecr.io.evil.com/app", None, false),
        &secrets,
    );
}

fn icr(binary: &Path) {
    heading("icr-credential-provider against a fake IAM, VPC metadata service and registry");
    let ibm = FakeIbm::start();
    let registry = FakeRegistry::start();
    registry.accept(ibm.registry_check());
    let mut plugin = PluginUnderTest::new(binary).with_env(ibm.endpoint_env());
    plugin.set_env("CREDENTIAL_PROVIDER_REGISTRY_ENDPOINTS", &registry.endpoints_for(&["us.icr.io"]));
    let image = "us.icr.io/team/app";

    println!("\n-- a cold exec: the VPC instance's identity for its linked trusted profile (no pull secret anywhere)");
    show(&plugin, &["-v"], &request_json(ApiVersion::V1, image, None, false), &|| ibm.secrets());

    println!("\n-- KEP-4412: a tenant's service-account token for the tenant's trusted profile");
    let profile = "Profile-aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";
    let token = "eyJhbGciOi.tenant-d-service-account-token.sig";
    ibm.trust(&format!("id:{profile}"), token);
    let sa = TestServiceAccount {
        token: Some(token.to_string()),
        annotations: BTreeMap::from([("iam.cloud.ibm.com/trusted-profile-id".to_string(), profile.to_string())]),
    };
    show(&plugin, &["-v"], &request_json(ApiVersion::V1, image, Some(&sa), false), &|| ibm.secrets());

    println!("\n-- check, and cp.icr.io (entitled software) refused");
    show(&plugin, &["check", "--image", &format!("{image}:1.0")], "", &|| ibm.secrets());
    show(&plugin, &[], &request_json(ApiVersion::V1, "cp.icr.io/cp/ibm-mq", None, false), &|| ibm.secrets());
}

fn ocir(binary: &Path) {
    heading(
        "ocir-credential-provider against a fake OCI metadata service, federation and OCIR (all signatures verified)",
    );
    let oci = FakeOci::start();
    let registry = FakeRegistry::start_ocir(oci.signature_check());
    let secrets = || [oci.secrets(), registry.secrets()].concat();
    let plugin = PluginUnderTest::new(binary).with_env(oci.endpoint_env()).with_env([(
        "CREDENTIAL_PROVIDER_REGISTRY_ENDPOINTS",
        registry.endpoints_for(&["iad.ocir.io", "ocir.us-ashburn-1.oci.oraclecloud.com"]),
    )]);
    let image = "iad.ocir.io/tenancy-namespace/team/app";

    println!(
        "\n-- a cold exec as the instance principal: certificates from the metadata service, x509 federation, a signed token call"
    );
    show(&plugin, &["-v"], &request_json(ApiVersion::V1, image, None, false), &secrets);
    println!("\n-- another registry form: the federation token comes from its session cache");
    show(
        &plugin,
        &["-v"],
        &request_json(ApiVersion::V1, "ocir.us-ashburn-1.oci.oraclecloud.com/tenancy-namespace/team/app", None, false),
        &secrets,
    );
    println!("federations: {}", oci.calls("auth:x509"));

    println!("\n-- upstream's issue #5: no policy yet, then the policy, then check");
    registry.deny_principal("instance");
    show(&plugin, &["--no-cache"], &request_json(ApiVersion::V1, image, None, false), &secrets);
    registry.allow_principal("instance");
    show(&plugin, &["check", "--image", &format!("{image}:1.0")], "", &secrets);
}

fn simulator(binary: &Path, bin_dir: &Path) {
    heading("kubelet-simulator: every plugin's example config, as one config directory, against the fake clouds");
    let aws = FakeAws::start();
    let google = FakeGoogle::start();
    let azure = FakeAzure::start();
    let acr = FakeRegistry::start_acr(azure.token_check());
    let ibm = FakeIbm::start();
    // The ICR example names this trusted profile; the fake instance is linked to it.
    ibm.link_instance_profile("id:Profile-00000000-0000-0000-0000-000000000000");
    let oci = FakeOci::start();
    let ocir = FakeRegistry::start_ocir(oci.signature_check());
    let secrets = || {
        [aws.secrets(), google.secrets(), azure.secrets(), acr.secrets(), ibm.secrets(), oci.secrets(), ocir.secrets()]
            .concat()
    };
    let simulator = PluginUnderTest::new(binary);
    let node = simulator.home();
    let azure_json = node.join("azure.json");
    let _ = std::fs::write(&azure_json, r#"{"cloud":"AzurePublicCloud","useManagedIdentityExtension":true}"#);
    let cache = ("CREDENTIAL_PROVIDER_CACHE_DIR".to_string(), node.join("cache").display().to_string());
    let registries = |fake: &FakeRegistry, hosts: &[&str]| {
        ("CREDENTIAL_PROVIDER_REGISTRY_ENDPOINTS".to_string(), fake.endpoints_for(hosts))
    };
    // Each provider's `env` points it at its fake cloud, as an operator would
    // point a node at an emulator; ACR's argument is this node's azure.json.
    let providers: [ExampleOnThisNode; 5] = [
        ("ecr", aws.env_with_static_keys(), None),
        ("gcr", google.endpoint_env(), None),
        (
            "acr",
            [azure.endpoint_env(), vec![registries(&acr, &["myacr.azurecr.io"])]].concat(),
            Some(azure_json.display().to_string()),
        ),
        ("icr", ibm.endpoint_env(), None),
        ("ocir", [oci.endpoint_env(), vec![registries(&ocir, &["fra.ocir.io"])]].concat(), None),
    ];
    let configs = node.join("image-credential-provider-config.d");
    let _ = std::fs::create_dir_all(&configs);
    for (plugin, mut env, argument) in providers {
        env.push(cache.clone());
        let example = fake_clouds::examples::path(&format!("{plugin}/credential-provider-config.yaml"));
        match example_for_this_node(&example, &env, argument.as_deref()) {
            Ok(text) => {
                let _ = std::fs::write(configs.join(format!("{plugin}.yaml")), text);
            }
            Err(e) => println!("skipping the {plugin} example: {e}"),
        }
    }
    let configs = configs.display().to_string();
    let bin_dir = bin_dir.display().to_string();
    println!("\n-- validating the config directory as the kubelet does");
    show(&simulator, &["--image-credential-provider-config", &configs], "", &secrets);
    for image in [
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app:1.0",
        "us-docker.pkg.dev/fake-project/images/app",
        "myacr.azurecr.io/team/app",
        "de.icr.io/team/app",
        "fra.ocir.io/tenancy-namespace/team/app",
        "nginx:1.27",
    ] {
        println!("\n-- what the kubelet does to pull {image}");
        show(
            &simulator,
            &[
                "--image-credential-provider-config",
                &configs,
                "--image-credential-provider-bin-dir",
                &bin_dir,
                "--image",
                image,
            ],
            "",
            &secrets,
        );
    }
}

/// A plugin's example, the `env` that points it at its fake cloud, and the
/// argument that replaces its `args`, if any.
type ExampleOnThisNode<'a> = (&'a str, Vec<(String, String)>, Option<String>);

/// An example config as this demo's node would hold it: `env` added to each
/// provider, and `argument`, if any, in place of its `args`.
fn example_for_this_node(example: &Path, env: &[(String, String)], argument: Option<&str>) -> Result<String, String> {
    use serde_yaml_ng::{Mapping, Value};
    let text = std::fs::read_to_string(example).map_err(|e| format!("{}: {e}", example.display()))?;
    let mut config: Value = serde_yaml_ng::from_str(&text).map_err(|e| format!("{}: {e}", example.display()))?;
    let providers = config.get_mut("providers").and_then(Value::as_sequence_mut).ok_or("no providers")?;
    for provider in providers.iter_mut().filter_map(Value::as_mapping_mut) {
        let entries = env.iter().map(|(name, value)| {
            let mut entry = Mapping::new();
            entry.insert("name".into(), name.as_str().into());
            entry.insert("value".into(), value.as_str().into());
            Value::Mapping(entry)
        });
        provider.insert("env".into(), Value::Sequence(entries.collect()));
        if let Some(argument) = argument {
            provider.insert("args".into(), Value::Sequence(vec![argument.into()]));
        }
    }
    serde_yaml_ng::to_string(&config).map_err(|e| e.to_string())
}
