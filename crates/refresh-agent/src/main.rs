//! `credential-provider-refresh`: the node agent that keeps the kubelet's
//! credentials fresh.
//!
//! It reads the kubelet's own `--image-credential-provider-config` (with the
//! simulator's loader: one definition of a valid config) and, for every
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
//! Exit codes: 0 every provider renewed what was due; 1 a bad command line or
//! config; 2 a provider failed or skipped an entry, or could not be run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use clap::Parser;
use credential_provider::cache::{self, Cache, Freshness};
use credential_provider::refresh::{self, PASS_MARKER, PassSummary};
use kubelet_simulator::config::{self, Provider};

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
}

const NAME: &str = "credential-provider-refresh";

fn main() -> ExitCode {
    let cli = match kubelet_simulator::command_line::parse::<Cli>() {
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
    match refresh::repeat(NAME, cli.every, |_| pass(&providers, &cli.bin_dir)) {
        Some(false) => ExitCode::from(2),
        _ => ExitCode::SUCCESS,
    }
}

/// One pass over every provider, then over the entries none of them claims.
/// True when every provider renewed all that was due.
fn pass(providers: &[Provider], bin_dir: &Path) -> bool {
    let mut all_well = true;
    let mut claimed = BTreeSet::new();
    let mut every_provider_said = true;
    for provider in providers {
        let name = &provider.spec.name;
        match refresh_provider(provider, bin_dir) {
            Ok((plugin, summary)) => {
                println!("{NAME}: {name}: {summary}");
                all_well &= summary.failed == 0 && summary.skipped == 0;
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

/// Runs one provider's `refresh` as the kubelet would exec it; its plugin
/// name and what its pass did, from the pass's last line.
fn refresh_provider(provider: &Provider, bin_dir: &Path) -> Result<(String, PassSummary), String> {
    let binary = bin_dir.join(&provider.spec.name);
    let output = Command::new(&binary)
        .args(&provider.spec.args)
        .arg("refresh")
        .envs(provider.spec.env.iter().map(|var| (&var.name, &var.value)))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    // The plugin's own lines (what it renewed, failed or skipped, and why).
    for line in stderr.lines() {
        eprintln!("{line}");
    }
    let last = stderr.lines().rev().find_map(|line| line.split_once(PASS_MARKER).map(|(_, rest)| rest));
    let parsed = last.and_then(|rest| {
        let (plugin, summary) = rest.split_once("]: ")?;
        Some((plugin.to_string(), PassSummary::parse(summary)?))
    });
    match (parsed, output.status.code()) {
        (Some(parsed), _) => Ok(parsed),
        (None, Some(code)) => Err(format!("its refresh exited {code} without a pass (see above)")),
        (None, None) => Err("its refresh was killed".into()),
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
    let now = cache::unix_now();
    for (path, entry) in cache.all_entries() {
        let Some(entry) = entry else { continue };
        // A session (`ocir.federation`) belongs to its plugin (`ocir`).
        let plugin = entry.plugin.split('.').next().unwrap_or_default();
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
