//! `credential-provider-refresh`: the node agent that keeps the kubelet's
//! credentials fresh.
//!
//! It reads the kubelet's own `--image-credential-provider-config` (with the
//! `kubelet-config` crate: one definition of a valid config) and, for every
//! provider, runs `<bin-dir>/<name> <args…> refresh` with the environment the
//! kubelet gives that exec (this process's own, plus the provider's `env`).
//! The entries a plugin's `refresh` renews are keyed by its flags and
//! environment, so only an exec made this way renews the very entries the
//! kubelet's execs read. One line per provider says what its pass did.
//!
//! Entries that no configured provider claims (a provider removed from the
//! config, an entry written by hand with other flags) are reported, and
//! deleted once expired.
//!
//! Each plugin run has a deadline (`--plugin-timeout`, the kubelet's own 60 s
//! by default), after which it is killed; SIGTERM or SIGINT is passed on to
//! the running plugin (on Windows, the console's Ctrl-C or Ctrl-Break reaches
//! it with the agent), which stops between entries, and the agent exits
//! within a few seconds (a plugin that does not stop in that grace is
//! killed): a DaemonSet's grace period is never outlived.
//!
//! The config is read again before every pass, so that a provider added or
//! removed (a drop-in file of a config directory, say) is taken up without a
//! restart; a config that no longer loads is said, and the last good one kept.
//!
//! What it learns is exported as Prometheus metrics (`metrics`): served on
//! `--metrics-address` and written to `--metrics-textfile` after each pass.
//!
//! Exit codes: 0 every provider renewed what was due; 1 a bad command line or
//! config; 2 a provider failed or skipped an entry, or could not be run.

mod metrics;

use std::collections::BTreeSet;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use credential_provider::cache::{self, Cache, Freshness};
use credential_provider::refresh::{self, PassReport};
use kubelet_config::{self as config, Provider};
use metrics::{Metrics, RunOutcome};

/// Renew the cached credentials of every provider the kubelet is configured with.
#[derive(Debug, Parser)]
#[command(name = "credential-provider-refresh", version)]
struct Cli {
    /// The kubelet's --image-credential-provider-config: a file, or a directory (kubelet 1.34+).
    #[arg(long = "image-credential-provider-config", value_name = "PATH")]
    config: PathBuf,

    /// The kubelet's --image-credential-provider-bin-dir.
    #[arg(long = "image-credential-provider-bin-dir", value_name = "DIR")]
    bin_dir: PathBuf,

    /// Keep running, a pass every DURATION (at least 1s; e.g. 5m) with a little jitter.
    #[arg(long, value_name = "DURATION", value_parser = refresh::parse_period)]
    every: Option<Duration>,

    /// How long one provider's refresh may run before it is killed.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = refresh::parse_period)]
    plugin_timeout: Duration,

    /// Serve Prometheus metrics at http://ADDR/metrics (HOST:PORT, [IPv6]:PORT, or :PORT for every address).
    #[arg(long, value_name = "ADDR", requires = "every", value_parser = parse_address)]
    metrics_address: Option<SocketAddr>,

    /// After each pass, write the same metrics to PATH atomically (for node_exporter's textfile collector).
    #[arg(long, value_name = "PATH")]
    metrics_textfile: Option<PathBuf>,
}

/// `--metrics-address`: an address to listen on, `:PORT` meaning every IPv4 address.
fn parse_address(text: &str) -> Result<SocketAddr, String> {
    let text = match text.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => text.to_string(),
    };
    let mut addresses = text.to_socket_addrs().map_err(|e| format!("{text:?} is not HOST:PORT ({e})"))?;
    addresses.next().ok_or_else(|| format!("{text:?} names no address"))
}

const NAME: &str = "credential-provider-refresh";

/// How long a plugin asked to stop may take to finish the entry it is on
/// before it is killed (its writes are atomic: a kill leaves the cache valid).
const STOP_GRACE: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    let cli = match credential_provider::runner::parse_tool_command_line::<Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let mut providers = match config::load(&cli.config) {
        Ok(providers) => providers,
        Err(errors) => {
            for error in errors {
                eprintln!("{NAME}: {error}");
            }
            return ExitCode::from(1);
        }
    };
    let metrics = match &cli.metrics_textfile {
        Some(textfile) => Metrics::resume(textfile, unix_seconds(), cli.every),
        None => Metrics::new(unix_seconds(), cli.every),
    };
    let metrics = Arc::new(Mutex::new(metrics));
    if let Some(address) = cli.metrics_address {
        match tiny_http::Server::http(address) {
            Ok(server) => metrics::serve(server, Arc::clone(&metrics)),
            Err(e) => {
                eprintln!("{NAME}: cannot serve metrics on {address}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    let passes = refresh::repeat(NAME, cli.every, |stop| {
        reload(&cli.config, &mut providers);
        let all_well = pass(&providers, &cli.bin_dir, cli.plugin_timeout, stop, &metrics);
        if let Some(textfile) = &cli.metrics_textfile {
            let written =
                metrics.lock().map_err(|_| std::io::Error::other("poisoned")).and_then(|m| m.write_textfile(textfile));
            if let Err(e) = written {
                eprintln!("{NAME}: cannot write the metrics to {}: {e}", textfile.display());
            }
        }
        all_well
    });
    match passes {
        Some(false) => ExitCode::from(2),
        _ => ExitCode::SUCCESS,
    }
}

/// Reads the config again; one that no longer loads is said, and `providers` kept.
fn reload(path: &Path, providers: &mut Vec<Provider>) {
    match config::load(path) {
        Ok(loaded) => *providers = loaded,
        Err(errors) => {
            for error in errors {
                eprintln!("{NAME}: {error}");
            }
            eprintln!("{NAME}: the config no longer loads; this pass uses the last one that did");
        }
    }
}

fn unix_seconds() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// One pass over every provider, then over the entries none of them claims.
/// True when every provider renewed all that was due.
fn pass(
    providers: &[Provider],
    bin_dir: &Path,
    timeout: Duration,
    stop: &AtomicBool,
    metrics: &Mutex<Metrics>,
) -> bool {
    let mut all_well = true;
    let mut claimed = BTreeSet::new();
    let mut every_provider_said = true;
    for provider in providers {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let name = &provider.spec.name;
        let started = Instant::now();
        let outcome: RunOutcome = refresh_provider(provider, bin_dir, timeout, stop);
        match &outcome {
            Ok(report) => {
                let summary = report.summary();
                println!("{NAME}: {name}: {summary}");
                all_well &= summary.is_clean();
                claimed.insert(report.plugin.clone());
            }
            Err(why) => {
                println!("{NAME}: {name}: failed: {why}");
                all_well = false;
                every_provider_said = false;
            }
        }
        if let Ok(mut metrics) = metrics.lock() {
            metrics.record(name, &outcome, unix_seconds(), started.elapsed().as_secs_f64());
        }
    }
    if let Ok(mut metrics) = metrics.lock() {
        metrics.retain(&providers.iter().map(|p| p.spec.name.as_str()).collect());
    }
    // Which plugins the cache's other entries belong to is known only when
    // every provider said which it is.
    if every_provider_said {
        unclaimed_entries(&claimed);
    }
    all_well
}

/// Runs one provider's `refresh --json` as the kubelet would exec it, for
/// at most `timeout`: what its pass reported on stdout.
fn refresh_provider(provider: &Provider, bin_dir: &Path, timeout: Duration, stop: &AtomicBool) -> RunOutcome {
    let binary = kubelet_config::plugin_path(bin_dir, &provider.spec.name);
    let mut child = Command::new(&binary)
        .args(&provider.spec.args)
        .args(["refresh", "--json"])
        .envs(provider.spec.env.iter().map(|var| (&var.name, &var.value)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    // Each pipe read on a thread of its own, so that a plugin that writes
    // much never blocks on a full pipe while this one waits for it.
    let stdout = read_all(child.stdout.take());
    let stderr = read_all(child.stderr.take());
    let ended = wait(&mut child, timeout, stop);
    // A process the plugin left behind may hold a pipe open: not waited for.
    let collect = |pipe: std::sync::mpsc::Receiver<Vec<u8>>| {
        String::from_utf8_lossy(&pipe.recv_timeout(Duration::from_secs(1)).unwrap_or_default()).into_owned()
    };
    let (stdout, stderr) = (collect(stdout), collect(stderr));
    // The plugin's own lines (what it renewed, failed or skipped, and why).
    for line in stderr.lines() {
        eprintln!("{line}");
    }
    let report = stdout.lines().rev().find_map(|line| serde_json::from_str::<PassReport>(line).ok());
    match (report, ended) {
        (Some(report), Ended::Exited(_)) => Ok(report),
        (_, Ended::TimedOut) => Err(format!("its refresh did not finish within {}s; killed", timeout.as_secs())),
        (_, Ended::Stopped) => Err("its refresh was stopped: the agent was asked to terminate".into()),
        (None, Ended::Exited(Some(code))) => Err(format!("its refresh exited {code} without a report (see above)")),
        (None, Ended::Exited(None)) => Err("its refresh was killed".into()),
    }
}

/// Reads `pipe` to its end on a thread; the bytes arrive on the receiver.
fn read_all(pipe: Option<impl std::io::Read + Send + 'static>) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = std::sync::mpsc::channel();
    if let Some(mut pipe) = pipe {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = std::io::Read::read_to_end(&mut pipe, &mut bytes);
            let _ = sender.send(bytes);
        });
    }
    receiver
}

/// How a plugin's run ended.
enum Ended {
    /// By itself, with this exit code (none when a signal ended it).
    Exited(Option<i32>),
    /// Killed at its deadline.
    TimedOut,
    /// Asked to stop (SIGTERM passed on), because the agent was.
    Stopped,
}

/// Waits for `child` for at most `timeout`, passing SIGTERM on (on Linux) as soon as
/// `stop` is set and killing it [`STOP_GRACE`] later if it has not ended.
fn wait(child: &mut Child, timeout: Duration, stop: &AtomicBool) -> Ended {
    let deadline = Instant::now() + timeout;
    let mut stopped_at: Option<Instant> = None;
    loop {
        match child.try_wait() {
            Ok(Some(_)) if stopped_at.is_some() => return Ended::Stopped,
            Ok(Some(status)) => return Ended::Exited(status.code()),
            Ok(None) => {}
            Err(_) => return Ended::Exited(None),
        }
        let now = Instant::now();
        if now >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ended::TimedOut;
        }
        match stopped_at {
            None if stop.load(Ordering::Relaxed) => {
                credential_provider::platform::ask_to_stop(child);
                stopped_at = Some(now);
            }
            Some(at) if now.duration_since(at) >= STOP_GRACE => {
                let _ = child.kill();
                let _ = child.wait();
                return Ended::Stopped;
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reports the entries of plugins that no configured provider is, and
/// deletes those that have expired: nothing would ever renew or read them.
fn unclaimed_entries(claimed: &BTreeSet<String>) {
    let dir = std::env::var_os(credential_provider::runner::CACHE_DIR_VARIABLE)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(cache::default_dir);
    let Ok(cache) = Cache::open(&dir) else {
        return;
    };
    let now = credential_provider::clock::unix_now();
    for (path, entry) in cache.all_entries() {
        let Some(entry) = entry else { continue };
        let plugin = cache::owner_plugin(&entry.plugin);
        if claimed.contains(plugin) {
            continue;
        }
        if entry.freshness(now) == Freshness::Expired {
            cache.remove_with_lock(&path);
            println!(
                "{NAME}: deleted {}: an expired entry of {plugin}, which no configured provider is",
                path.display()
            );
        } else {
            println!(
                "{NAME}: {}: an entry of {plugin} for {}, which no configured provider is; deleted once it expires",
                path.display(),
                entry.registry
            );
        }
    }
}
