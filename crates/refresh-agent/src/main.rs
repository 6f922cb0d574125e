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
//! the running plugin, which stops between entries, and the agent exits
//! within a few seconds (a plugin that does not stop in that grace is
//! killed): a DaemonSet's grace period is never outlived.
//!
//! Exit codes: 0 every provider renewed what was due; 1 a bad command line or
//! config; 2 a provider failed or skipped an entry, or could not be run.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use credential_provider::cache::{self, Cache, Freshness};
use credential_provider::refresh::{self, PASS_MARKER, PassSummary};
use kubelet_config::{self as config, Provider};

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
    let providers = match config::load(&cli.config) {
        Ok(providers) => providers,
        Err(errors) => {
            for error in errors {
                eprintln!("{NAME}: {error}");
            }
            return ExitCode::from(1);
        }
    };
    match refresh::repeat(NAME, cli.every, |stop| pass(&providers, &cli.bin_dir, cli.plugin_timeout, stop)) {
        Some(false) => ExitCode::from(2),
        _ => ExitCode::SUCCESS,
    }
}

/// One pass over every provider, then over the entries none of them claims.
/// True when every provider renewed all that was due.
fn pass(providers: &[Provider], bin_dir: &Path, timeout: Duration, stop: &AtomicBool) -> bool {
    let mut all_well = true;
    let mut claimed = BTreeSet::new();
    let mut every_provider_said = true;
    for provider in providers {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let name = &provider.spec.name;
        match refresh_provider(provider, bin_dir, timeout, stop) {
            Ok((plugin, summary)) => {
                println!("{NAME}: {name}: {summary}");
                all_well &= summary.is_clean();
                claimed.insert(plugin);
            }
            Err(why) => {
                println!("{NAME}: {name}: failed: {why}");
                all_well = false;
                every_provider_said = false;
            }
        }
    }
    // Which plugins the cache's other entries belong to is known only when
    // every provider said which it is.
    if every_provider_said {
        unclaimed_entries(&claimed);
    }
    all_well
}

/// Runs one provider's `refresh` as the kubelet would exec it, for at most
/// `timeout`; its plugin name and what its pass did, from the pass's last line.
fn refresh_provider(
    provider: &Provider,
    bin_dir: &Path,
    timeout: Duration,
    stop: &AtomicBool,
) -> Result<(String, PassSummary), String> {
    let binary = bin_dir.join(&provider.spec.name);
    let mut child = Command::new(&binary)
        .args(&provider.spec.args)
        .arg("refresh")
        .envs(provider.spec.env.iter().map(|var| (&var.name, &var.value)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    // Read on a thread of its own, so that a plugin that writes much never
    // blocks on a full pipe while this one waits for it.
    let mut pipe = child.stderr.take().ok_or("no stderr pipe")?;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        let _ = sender.send(bytes);
    });
    let ended = wait(&mut child, timeout, stop);
    // A process the plugin left behind may hold the pipe open: not waited for.
    let stderr = receiver.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
    let stderr = String::from_utf8_lossy(&stderr);
    // The plugin's own lines (what it renewed, failed or skipped, and why).
    for line in stderr.lines() {
        eprintln!("{line}");
    }
    let last = stderr.lines().rev().find_map(|line| line.split_once(PASS_MARKER).map(|(_, rest)| rest));
    let parsed = last.and_then(|rest| {
        let (plugin, summary) = rest.split_once("]: ")?;
        Some((plugin.to_string(), PassSummary::parse(summary)?))
    });
    match (parsed, ended) {
        (Some(parsed), Ended::Exited(_)) => Ok(parsed),
        (_, Ended::TimedOut) => Err(format!("its refresh did not finish within {}s; killed", timeout.as_secs())),
        (_, Ended::Stopped) => Err("its refresh was stopped: the agent was asked to terminate".into()),
        (None, Ended::Exited(Some(code))) => Err(format!("its refresh exited {code} without a pass (see above)")),
        (None, Ended::Exited(None)) => Err("its refresh was killed".into()),
    }
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

/// Waits for `child` for at most `timeout`, passing SIGTERM on as soon as
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
                let pid = rustix::process::Pid::from_child(child);
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
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
