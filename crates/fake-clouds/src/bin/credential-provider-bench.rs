//! Measures the plugins as the kubelet runs them: whole processes, request on
//! stdin, response on stdout. Run `scripts/bench` (release build first).
//!
//! For each plugin: a warm exec (cache hit), a cold exec (empty cache, one
//! fetch from the fake cloud), and 64 execs started together on a cold cache
//! (wall time, and how many token calls they made between them). Medians of
//! several runs; the table is Markdown, for the README.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use credential_provider::protocol::ApiVersion;
use fake_clouds::conformance::{PluginUnderTest, request_json, sibling_binaries};
use fake_clouds::{FakeAws, FakeAzure, FakeGoogle, FakeIbm, FakeOci, FakeRegistry, Fault};

/// One plugin to measure: its binary, how to point it at a fake cloud, and an
/// image it serves. A new plugin joins the benchmark with one more entry.
struct Target {
    binary: &'static str,
    image: &'static str,
    token_calls: fn(&FakeClouds) -> usize,
    env: fn(&FakeClouds) -> Vec<(String, String)>,
}

/// Every fake cloud the targets use.
struct FakeClouds {
    aws: FakeAws,
    google: FakeGoogle,
    azure: FakeAzure,
    acr: FakeRegistry,
    ibm: FakeIbm,
    oci: FakeOci,
    ocir: FakeRegistry,
}

const TARGETS: &[Target] = &[
    Target {
        binary: "ecr-credential-provider",
        image: "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app",
        token_calls: |clouds| clouds.aws.token_calls(),
        env: |clouds| clouds.aws.env_with_static_keys(),
    },
    Target {
        binary: "gcr-credential-provider",
        image: "us-docker.pkg.dev/fake-project/images/app",
        token_calls: |clouds| clouds.google.token_calls(),
        env: |clouds| clouds.google.endpoint_env(),
    },
    Target {
        binary: "acr-credential-provider",
        image: "myacr.azurecr.io/team/app",
        token_calls: |clouds| clouds.acr.calls("exchange"),
        env: |clouds| {
            let mut env = clouds.azure.endpoint_env();
            env.push((
                "CREDENTIAL_PROVIDER_REGISTRY_ENDPOINTS".into(),
                clouds.acr.endpoints_for(&["myacr.azurecr.io"]),
            ));
            env
        },
    },
    Target {
        binary: "icr-credential-provider",
        image: "us.icr.io/team/app",
        token_calls: |clouds| clouds.ibm.calls("vpc:iam-token"),
        env: |clouds| clouds.ibm.endpoint_env(),
    },
    Target {
        binary: "ocir-credential-provider",
        image: "iad.ocir.io/tenancy-namespace/team/app",
        token_calls: |clouds| clouds.ocir.calls("ocir-token"),
        env: |clouds| {
            let mut env = clouds.oci.endpoint_env();
            env.push(("CREDENTIAL_PROVIDER_REGISTRY_ENDPOINTS".into(), clouds.ocir.endpoints_for(&["iad.ocir.io"])));
            env
        },
    },
];

fn main() {
    let mut args = std::env::args().skip(1);
    let mut runs = 100;
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--runs", Some(n)) => runs = n,
            _ => {
                eprintln!("usage: credential-provider-bench [--runs N]");
                std::process::exit(1);
            }
        }
    }
    let dir = sibling_binaries("target/release");
    let oci = FakeOci::start();
    let ocir = FakeRegistry::start_ocir(oci.signature_check());
    let azure = FakeAzure::start();
    let acr = FakeRegistry::start_acr(azure.token_check());
    let clouds =
        FakeClouds { aws: FakeAws::start(), google: FakeGoogle::start(), azure, acr, ibm: FakeIbm::start(), oci, ocir };

    println!(
        "| plugin | binary size | warm exec (median / p90) | cold exec (median) | 64 execs on a cold cache | token calls for those 64 |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut measured = 0;
    for target in TARGETS {
        let binary = dir.join(target.binary);
        if !binary.is_file() {
            eprintln!("skipping {}: not built in {}", target.binary, dir.display());
            continue;
        }
        measure(&clouds, target, &binary, runs);
        measured += 1;
    }
    if measured == 0 {
        eprintln!("no plugin binaries in {}; run scripts/bench", dir.display());
        std::process::exit(1);
    }
    println!("\n{} runs each; machine: {}", runs, machine());
}

fn measure(clouds: &FakeClouds, target: &Target, binary: &Path, runs: usize) {
    let request = request_json(ApiVersion::V1, target.image, None, false);
    let plugin = PluginUnderTest::new(binary).with_env((target.env)(clouds));

    // Warm: prime the cache once, then every exec is a hit.
    expect_success(&plugin, &[], &request);
    let warm: Vec<Duration> = (0..runs).map(|_| timed(|| expect_success(&plugin, &[], &request))).collect();

    // Cold: each exec fetches (the cache is bypassed, the fetch is real).
    let cold: Vec<Duration> =
        (0..runs.div_ceil(4)).map(|_| timed(|| expect_success(&plugin, &["--no-cache"], &request))).collect();

    // A node boot: 64 execs at once on an empty cache, the cloud answering in 100 ms.
    let burst = PluginUnderTest::new(binary).with_env((target.env)(clouds));
    clouds.aws.set_fault(Some(Fault::Slow(Duration::from_millis(100))));
    let before = (target.token_calls)(clouds);
    let started = Instant::now();
    let failed = burst.exec_together(64, &[], request.as_bytes()).iter().filter(|e| e.code != Some(0)).count();
    let burst_wall = started.elapsed();
    clouds.aws.set_fault(None);
    let calls = (target.token_calls)(clouds) - before;
    assert_eq!(failed, 0, "{failed} of 64 concurrent execs failed");

    let size = std::fs::metadata(binary).map(|m| m.len()).unwrap_or(0);
    println!(
        "| {} | {:.1} MiB | {} / {} | {} | {} | {} |",
        target.binary,
        size as f64 / (1024.0 * 1024.0),
        ms(percentile(&warm, 50)),
        ms(percentile(&warm, 90)),
        ms(percentile(&cold, 50)),
        ms(burst_wall),
        calls
    );
}

fn expect_success(plugin: &PluginUnderTest, args: &[&str], request: &str) {
    let exec = plugin.exec(args, request.as_bytes());
    assert_eq!(exec.code, Some(0), "{}", exec.stderr);
}

fn timed(f: impl FnOnce()) -> Duration {
    let started = Instant::now();
    f();
    started.elapsed()
}

fn percentile(samples: &[Duration], p: usize) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted.get((sorted.len() * p / 100).min(sorted.len().saturating_sub(1))).copied().unwrap_or_default()
}

fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{cores} cores, {cpu}, Linux {kernel}")
}
