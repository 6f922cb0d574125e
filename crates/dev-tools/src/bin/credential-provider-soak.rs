//! The node agent's soak test: `credential-provider-refresh --every 1s` for
//! minutes against the fake clouds, whose credentials live one minute, over
//! three providers (ECR, GCR, ICR) of three registries each, while
//! kubelet-like execs read the cache. Run `scripts/soak [MINUTES]`, which
//! soaks the static binaries that ship (dist/linux-amd64).
//!
//! It checks what an operator relies on: every exec after a registry's first
//! is answered from the cache; no exec is answered with a credential past its
//! expiry; the agent's peak RSS after the first minute stays within 10 % of
//! its value at one minute; its open file descriptors stay flat; its
//! `/metrics`, scraped through the run, always answers and holds no more
//! series in the last minute than at one minute (label cardinality does not
//! grow with the passes); and it stops cleanly on SIGTERM. It prints the
//! figures for the README.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use credential_provider::cache::Cache;
use credential_provider::clock::unix_now;
use credential_provider::protocol::ApiVersion;
use fake_clouds::conformance::{PluginUnderTest, request_json, sibling_binaries};
use fake_clouds::{FakeAws, FakeGoogle, FakeIbm};

/// A provider of the soak's kubelet config.
struct SoakProvider {
    binary: &'static str,
    args: &'static [&'static str],
    env: Vec<(String, String)>,
    images: [&'static str; 3],
}

/// What the agent looked like at one moment.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: usize,
    /// The samples its `/metrics` held, if it answered.
    series: Option<usize>,
}

fn main() {
    let minutes: u64 = std::env::args().nth(1).and_then(|m| m.parse().ok()).unwrap_or(10);
    // The binaries to soak: those in the directory named, else this build's.
    let built = std::env::args().nth(2).map(PathBuf::from).unwrap_or_else(|| sibling_binaries("target/release"));
    let aws = FakeAws::start();
    let google = FakeGoogle::start();
    let ibm = FakeIbm::start();
    aws.set_token_lifetime(Duration::from_secs(60));
    google.set_token_lifetime(60);
    ibm.set_token_lifetime(60);
    let providers = [
        SoakProvider {
            binary: "ecr-credential-provider",
            args: &[],
            env: aws.env_with_static_keys(),
            images: [
                "111111111111.dkr.ecr.us-east-1.amazonaws.com/team/app",
                "222222222222.dkr.ecr.eu-west-1.amazonaws.com/team/app",
                "public.ecr.aws/team/app",
            ],
        },
        SoakProvider {
            binary: "gcr-credential-provider",
            args: &["get-credentials", "--authFlow", "gcr"],
            env: google.endpoint_env(),
            images: ["gcr.io/project/app", "eu.gcr.io/project/app", "us-docker.pkg.dev/project/repo/app"],
        },
        SoakProvider {
            binary: "icr-credential-provider",
            args: &[],
            env: ibm.endpoint_env(),
            images: ["us.icr.io/team/app", "de.icr.io/team/app", "uk.icr.io/team/app"],
        },
    ];
    let node = tempfile::tempdir().unwrap_or_else(|e| fail(&format!("no temporary directory: {e}")));
    let (bin, config, cache) = (node.path().join("bin"), node.path().join("config.d"), node.path().join("cache"));
    for dir in [&bin, &config] {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| fail(&format!("{}: {e}", dir.display())));
    }
    for provider in &providers {
        let binary = built.join(provider.binary);
        if !binary.is_file() {
            fail(&format!("{} is not built: run scripts/soak", binary.display()));
        }
        let _ = std::os::unix::fs::symlink(&binary, bin.join(provider.binary));
        let _ = std::fs::write(config.join(format!("{}.yaml", provider.binary)), config_file(provider));
    }
    let agent_binary = built.join("credential-provider-refresh");
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", fake_clouds::prometheus::free_port())
        .parse()
        .unwrap_or_else(|e| fail(&format!("no loopback port: {e}")));
    let log = std::fs::File::create(node.path().join("agent.log")).unwrap_or_else(|e| fail(&format!("agent log: {e}")));
    let mut agent = Command::new(&agent_binary)
        .args(["--image-credential-provider-config", &config.display().to_string()])
        .args(["--image-credential-provider-bin-dir", &bin.display().to_string(), "--every", "1s"])
        .args(["--metrics-address", &metrics.to_string()])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CREDENTIAL_PROVIDER_CACHE_DIR", &cache)
        .stdout(log.try_clone().unwrap_or_else(|e| fail(&e.to_string())))
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| fail(&format!("cannot start {}: {e}", agent_binary.display())));

    println!(
        "soaking for {minutes} minutes: the agent every 1s, credentials that live 60s, 3 providers x 3 registries"
    );
    let started = Instant::now();
    let mut samples = Vec::new();
    let (mut execs, mut hits, mut misses_after_first, mut past_expiry) = (0u64, 0u64, 0u64, 0u64);
    let mut seen = std::collections::BTreeSet::new();
    let mut credentials = Seen::new();
    while started.elapsed() < Duration::from_secs(minutes * 60) {
        for provider in &providers {
            let plugin = kubelet_exec(&bin, provider, &cache);
            for image in provider.images {
                let args: Vec<&str> = provider.args.iter().copied().chain(["-v"]).collect();
                remember_cache(&cache, &mut credentials);
                let at = unix_now();
                let exec = plugin.exec(&args, request_json(ApiVersion::V1, image, None, false).as_bytes());
                remember_cache(&cache, &mut credentials);
                execs += 1;
                if exec.code != Some(0) {
                    fail(&format!("{image}: exec failed: {}", exec.stderr));
                }
                let hit = exec.stderr.contains("answered from the cache");
                if hit {
                    hits += 1;
                } else if !seen.insert(image) {
                    misses_after_first += 1;
                }
                if served_past_expiry(&credentials, &exec.stdout, at) {
                    past_expiry += 1;
                }
            }
        }
        samples.push(sample(&agent, started.elapsed(), metrics));
        std::thread::sleep(Duration::from_secs(2));
    }
    let stopped = stop(&mut agent);

    let at_one_minute = samples.iter().find(|s| s.at >= Duration::from_secs(60)).copied();
    let later: Vec<Sample> = samples.iter().filter(|s| s.at >= Duration::from_secs(60)).copied().collect();
    let peak = later.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    // The agent holds a few more descriptors while a provider's refresh runs
    // (its pipes); flat means its baseline does not rise.
    let (fds_min, fds_max) =
        (samples.iter().map(|s| s.fds).min().unwrap_or(0), samples.iter().map(|s| s.fds).max().unwrap_or(0));
    // Between its passes it holds its baseline: a leak raises the least seen.
    let last_minute = started.elapsed().saturating_sub(Duration::from_secs(60));
    let fds_first_minute = samples.iter().filter(|s| s.at < Duration::from_secs(60)).map(|s| s.fds).min().unwrap_or(0);
    let fds_later = samples.iter().filter(|s| s.at >= last_minute).map(|s| s.fds).min().unwrap_or(0);
    let token_calls = aws.token_calls() + google.token_calls() + ibm.calls("vpc:iam-token");
    // The first pass may not have ended at the first sample: from one minute on, every scrape answers.
    let unanswered = later.iter().filter(|s| s.series.is_none()).count();
    let series_at_one_minute = at_one_minute.and_then(|s| s.series).unwrap_or(0);
    let series_last_minute = samples.iter().filter(|s| s.at >= last_minute).filter_map(|s| s.series).max().unwrap_or(0);
    println!(
        "execs: {execs}, answered from the cache: {hits}, fetched after a registry's first exec: {misses_after_first}"
    );
    println!("answered past the credential's expiry: {past_expiry}");
    println!("token calls to the fake clouds (the agent's renewals and the first fetches): {token_calls}");
    if let Some(base) = at_one_minute {
        println!(
            "agent RSS: {} KiB at one minute, peak {} KiB after it ({:+.1} %)",
            base.rss_kib,
            peak,
            (peak as f64 / base.rss_kib.max(1) as f64 - 1.0) * 100.0
        );
    }
    println!(
        "agent open file descriptors: {fds_min} to {fds_max} (at least {fds_first_minute} in the first minute, {fds_later} in the last)"
    );
    println!(
        "agent /metrics: {} scrapes, {unanswered} unanswered after the first minute; {series_at_one_minute} series at one minute, at most {series_last_minute} in the last",
        samples.len()
    );
    println!("agent on SIGTERM: {}", if stopped { "stopped cleanly" } else { "DID NOT STOP CLEANLY" });

    let mut failures = Vec::new();
    if misses_after_first > 0 {
        failures.push("an exec after a registry's first was not answered from the cache");
    }
    if past_expiry > 0 {
        failures.push("an exec was answered with an expired credential");
    }
    if at_one_minute.is_none_or(|base| peak as f64 > base.rss_kib as f64 * 1.10) {
        failures.push("the agent's RSS grew by more than 10 % after the first minute");
    }
    if fds_later > fds_first_minute {
        failures.push("the agent's open file descriptors grew");
    }
    if unanswered > 0 {
        failures.push("the agent's /metrics did not answer a scrape");
    }
    if series_at_one_minute == 0 || series_last_minute > series_at_one_minute {
        failures.push("the agent's metrics grew in series (label cardinality) with the passes");
    }
    if !stopped {
        failures.push("the agent did not stop cleanly on SIGTERM");
    }
    if failures.is_empty() {
        println!("soak passed");
    } else {
        for failure in failures {
            println!("FAILED: {failure}");
        }
        std::process::exit(1);
    }
}

/// The provider's entry of the kubelet config: its args and env.
fn config_file(provider: &SoakProvider) -> String {
    let matches: Vec<&str> = provider.images.iter().map(|image| registry(image)).collect();
    fake_clouds::examples::provider_config(provider.binary, "1m", &matches, provider.args, &provider.env)
}

/// The plugin as the kubelet execs it: the config's env, the shared cache.
fn kubelet_exec(bin: &Path, provider: &SoakProvider, cache: &Path) -> PluginUnderTest {
    let mut plugin = PluginUnderTest::new(bin.join(provider.binary)).with_env(provider.env.clone());
    plugin.set_env("CREDENTIAL_PROVIDER_CACHE_DIR", &cache.display().to_string());
    plugin
}

fn registry(image: &str) -> &str {
    image.split('/').next().unwrap_or_default()
}

/// Every credential the cache has held, by password: its expiry. Read
/// before and after each exec, so that a credential the agent renewed (and
/// so replaced) while the exec ran is still known.
type Seen = std::collections::BTreeMap<String, u64>;

fn remember_cache(cache: &Path, seen: &mut Seen) {
    let Ok(cache) = Cache::open(cache) else { return };
    for entry in cache.all_entries().into_iter().filter_map(|(_, e)| e) {
        seen.insert(entry.password.expose().to_string(), entry.expires_at);
    }
}

/// Whether a response's credential had expired when the exec began (`at`):
/// its expiry as the cache held it, or no such credential at all.
fn served_past_expiry(seen: &Seen, response: &str, at: u64) -> bool {
    let Ok(response) = serde_json::from_str::<serde_json::Value>(response) else { return true };
    let Some(password) =
        response["auth"].as_object().and_then(|auth| auth.values().next()).and_then(|a| a["password"].as_str())
    else {
        return true;
    };
    seen.get(password).is_none_or(|expires_at| *expires_at <= at)
}

/// The agent's resident memory and open descriptors, from /proc, and how
/// many samples its `/metrics` at `metrics` holds.
fn sample(agent: &Child, at: Duration, metrics: std::net::SocketAddr) -> Sample {
    let series = fake_clouds::prometheus::get(metrics, "/metrics")
        .filter(|(status, _)| *status == 200)
        .map(|(_, body)| body.lines().filter(|line| !line.starts_with('#') && !line.is_empty()).count());
    let proc = PathBuf::from(format!("/proc/{}", agent.id()));
    let status = std::fs::read_to_string(proc.join("status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(proc.join("fd")).map(|d| d.count()).unwrap_or(0);
    Sample { at, rss_kib, fds, series }
}

/// SIGTERM, then whether the agent exited 0 within five seconds.
fn stop(agent: &mut Child) -> bool {
    let _ = Command::new("kill").args(["-TERM", &agent.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = agent.try_wait() {
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = agent.kill();
    false
}

fn fail(message: &str) -> ! {
    eprintln!("credential-provider-soak: {message}");
    std::process::exit(1)
}
