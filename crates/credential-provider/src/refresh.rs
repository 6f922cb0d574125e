//! `PLUGIN refresh [--every DURATION]`: renews every cached credential near
//! its refresh point (a tenth of its life ahead of it), a few at a time, so
//! that the kubelet's execs always hit a warm cache. For a systemd timer (one pass) or a DaemonSet loop (`--every`,
//! with jitter, stopping cleanly on SIGTERM).
//!
//! Entries that need a request's service-account token cannot be renewed
//! without one: they are left to the next exec (and deleted an hour after
//! they expire). An entry this refresh plans under another key (written under
//! other flags or variables) or no longer plans is skipped while it is valid,
//! and removed once expired: no exec will ever read it again, and a pass that
//! skipped forever would fail forever. One line on stderr per entry renewed,
//! failed or removed.
//!
//! With `--json`, each pass also prints a [`PassReport`] on stdout, one line
//! of JSON: what the refresh agent reads (for its own lines and its metrics)
//! instead of parsing sentences meant for people.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::cache::{Cache, CachedCredential, Freshness};
use crate::clock;
use crate::credentials::{self, RenewalError};
use crate::error::{Error, FailureClass};
use crate::flow::Renewal;
use crate::provider::{Provider, binary_name};
use crate::secret;

/// How many entries are renewed at once: enough to renew a node's registries
/// quickly, few enough not to burst a cloud's API.
pub const PARALLELISM: usize = 4;
/// Entries that need a service-account token are deleted this long after they
/// expire: nothing can renew them, and tokens rotate hourly.
const EXPIRED_ENTRY_GRACE_SECS: u64 = 3600;
/// A temp file this old belongs to no live writer: a write takes milliseconds.
const ABANDONED_TEMP_FILE_AGE: Duration = Duration::from_secs(600);

/// The shortest period `--every` accepts: a loop tighter than this would
/// only spin (and renewals happen at half a credential's life, minutes at the
/// least).
pub const MIN_PERIOD: Duration = Duration::from_secs(1);

/// `--every`'s value: a duration such as `5m`, at least [`MIN_PERIOD`].
pub fn parse_period(text: &str) -> Result<Duration, String> {
    let period = humantime::parse_duration(text).map_err(|e| format!("{text:?} is not a duration such as 5m ({e})"))?;
    if period < MIN_PERIOD {
        return Err(format!("{text:?} is too short: renew at most every {}s", MIN_PERIOD.as_secs()));
    }
    Ok(period)
}

/// Runs one pass, or passes every `every` until SIGTERM or SIGINT; with
/// `json`, each pass's report goes to stdout as one line.
pub fn run<P: Provider>(provider: &P, cache: &Cache, every: Option<Duration>, json: bool) -> Result<(), Error> {
    let last = repeat(&binary_name::<P>(), every, |stop| {
        let report = pass(provider, cache, stop);
        if json {
            print_report(&report)?;
        }
        Ok(report.summary())
    });
    match last {
        Some(Err(e)) => Err(e),
        Some(Ok(summary)) if !summary.is_clean() => Err(Error::cloud(
            P::NAME,
            format!(
                "{} cached credential(s) could not be renewed and {} were skipped",
                summary.failed, summary.skipped
            ),
        )),
        _ => Ok(()),
    }
}

/// Runs `pass` once, or every `every` (jittered) until SIGTERM or SIGINT
/// (on Windows: Ctrl-C, Ctrl-Break, the console closing, or shutdown),
/// which end the wait at once and the pass between entries. Returns the last
/// pass's result for a single pass, `None` when looping (a loop ends only
/// when asked to).
pub fn repeat<T>(label: &str, every: Option<Duration>, mut pass: impl FnMut(&AtomicBool) -> T) -> Option<T> {
    let stop = Arc::new(AtomicBool::new(false));
    if let Err(e) = crate::platform::on_stop(&stop) {
        tracing::warn!("cannot handle the request to stop ({e}); it will end the process abruptly");
    }
    let stopping = || {
        eprintln!("{label}: stopping: asked to terminate");
        None
    };
    loop {
        let result = pass(&stop);
        if stop.load(Ordering::Relaxed) {
            return stopping();
        }
        let Some(period) = every else {
            return Some(result);
        };
        let deadline = Instant::now() + jittered(period);
        while Instant::now() < deadline {
            if stop.load(Ordering::Relaxed) {
                return stopping();
            }
            std::thread::sleep(Duration::from_millis(100).min(deadline.saturating_duration_since(Instant::now())));
        }
    }
}

/// How the line that ends a pass starts, after the binary's name:
/// `<binary>: refresh pass [<plugin>]: …`.
const PASS_MARKER: &str = "refresh pass [";

/// What one pass did to the entries that were due.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassSummary {
    pub renewed: usize,
    pub failed: usize,
    /// Due, but not this refresh's to renew (written under other settings),
    /// and still valid.
    pub skipped: usize,
    /// Not this refresh's to renew, and expired: deleted.
    pub removed: usize,
}

impl std::fmt::Display for PassSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} renewed, {} failed, {} skipped, {} removed",
            self.renewed, self.failed, self.skipped, self.removed
        )
    }
}

impl PassSummary {
    /// Whether the pass renewed everything that was its to renew.
    pub fn is_clean(&self) -> bool {
        self.failed == 0 && self.skipped == 0
    }
}

/// What a pass did to one due entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RenewalResult {
    Renewed,
    Failed,
    /// Due, but written under other settings, and still valid.
    Skipped,
    /// Written under other settings, and expired: deleted.
    Removed,
}

impl RenewalResult {
    pub const ALL: [RenewalResult; 4] =
        [RenewalResult::Renewed, RenewalResult::Failed, RenewalResult::Skipped, RenewalResult::Removed];

    pub fn as_str(self) -> &'static str {
        match self {
            RenewalResult::Renewed => "renewed",
            RenewalResult::Failed => "failed",
            RenewalResult::Skipped => "skipped",
            RenewalResult::Removed => "removed",
        }
    }
}

/// One due entry's renewal.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RenewalReport {
    pub registry: String,
    pub result: RenewalResult,
    /// What kind of failure, for a failed renewal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<FailureClass>,
}

/// One entry of the cache as the pass left it: where it stands in time,
/// never what it holds.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EntryReport {
    pub registry: String,
    /// Fetched with a pod's service-account token (the kubelet's to renew),
    /// not with the node's identity.
    pub service_account: bool,
    pub issued_at: u64,
    pub refresh_at: u64,
    pub expires_at: u64,
}

/// What one pass did, and the plugin's entries after it: `refresh --json`'s
/// line on stdout.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PassReport {
    /// The plugin's name in the cache (`ecr`, `gcr`…).
    pub plugin: String,
    /// Each due entry's renewal.
    pub renewals: Vec<RenewalReport>,
    /// Every entry of this plugin still cached.
    pub entries: Vec<EntryReport>,
}

impl PassReport {
    /// The counts of [`PassReport::renewals`].
    pub fn summary(&self) -> PassSummary {
        let mut summary = PassSummary::default();
        for renewal in &self.renewals {
            match renewal.result {
                RenewalResult::Renewed => summary.renewed += 1,
                RenewalResult::Failed => summary.failed += 1,
                RenewalResult::Skipped => summary.skipped += 1,
                RenewalResult::Removed => summary.removed += 1,
            }
        }
        summary
    }
}

fn print_report(report: &PassReport) -> Result<(), Error> {
    let line = serde_json::to_string(report).map_err(|e| Error::Output(std::io::Error::other(e)))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}").and_then(|()| stdout.flush()).map_err(Error::Output)
}

/// One pass, ended by one line on stderr that says what it did.
fn pass<P: Provider>(provider: &P, cache: &Cache, stop: &AtomicBool) -> PassReport {
    cache.remove_abandoned_temp_files(P::NAME, ABANDONED_TEMP_FILE_AGE);
    let now = clock::unix_now();
    let mut due = Vec::new();
    // The entries still cached once this loop is done with them.
    let mut cached = 0;
    for (path, entry) in cache.entries(P::NAME) {
        let Some(entry) = entry else {
            tracing::info!(path = %path.display(), "removing an unreadable cache entry");
            cache.remove(&path);
            continue;
        };
        if entry.needs_service_account_token {
            // The kubelet's to renew, with the next pod's token; nothing
            // renews it once that pod is gone: removed, lock and all.
            if now > entry.expires_at + EXPIRED_ENTRY_GRACE_SECS {
                cache.remove_with_lock(&path);
            } else {
                cached += 1;
            }
            continue;
        }
        cached += 1;
        // Ahead of the kubelet's execs, which would renew it at its refresh point.
        if now >= entry.refresh_ahead_point() {
            due.push((path, entry));
        }
    }
    if due.is_empty() {
        // Said once per pass, so that a loop that renews nothing is not mistaken for a stuck one.
        let what = match cached {
            0 => "no credential of this plugin is cached".to_string(),
            n => format!("{n} cached credential(s), none past its refresh point"),
        };
        eprintln!("{}: {PASS_MARKER}{}]: nothing to renew: {what}", binary_name::<P>(), P::NAME);
        return report::<P>(cache, Vec::new());
    }
    let queue = Mutex::new(due);
    let renewals = Mutex::new(Vec::new());
    let workers = PARALLELISM.min(queue.lock().map_or(0, |q| q.len()));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Some((path, entry)) = queue.lock().ok().and_then(|mut q| q.pop()) else {
                        return;
                    };
                    let (result, class) = renew_entry(provider, cache, &path, &entry);
                    if let Ok(mut renewals) = renewals.lock() {
                        renewals.push(RenewalReport { registry: entry.registry, result, class });
                    }
                }
            });
        }
    });
    let mut renewals = renewals.into_inner().unwrap_or_default();
    renewals.sort_by(|a, b| a.registry.cmp(&b.registry));
    let report = report::<P>(cache, renewals);
    eprintln!("{}: {PASS_MARKER}{}]: {}", binary_name::<P>(), P::NAME, report.summary());
    report
}

/// The report of a pass that made `renewals`, with the entries it left.
fn report<P: Provider>(cache: &Cache, renewals: Vec<RenewalReport>) -> PassReport {
    let mut entries: Vec<EntryReport> = cache
        .entries(P::NAME)
        .into_iter()
        .filter_map(|(_, entry)| entry)
        .map(|entry| EntryReport {
            registry: entry.registry,
            service_account: entry.needs_service_account_token,
            issued_at: entry.issued_at,
            refresh_at: entry.refresh_at,
            expires_at: entry.expires_at,
        })
        .collect();
    entries.sort_by(|a, b| (&a.registry, a.expires_at).cmp(&(&b.registry, b.expires_at)));
    PassReport { plugin: P::NAME.to_string(), renewals, entries }
}

/// Renews one entry, saying so on stderr unless another process did; what
/// became of it, and the kind of failure for one that failed.
fn renew_entry<P: Provider>(
    provider: &P,
    cache: &Cache,
    path: &Path,
    entry: &CachedCredential,
) -> (RenewalResult, Option<FailureClass>) {
    let result = credentials::renew(provider, cache, entry);
    let not_ours = matches!(result, Err(RenewalError::OtherSettings | RenewalError::Unplanned(_)));
    if not_ours && entry.freshness(clock::unix_now()) == Freshness::Expired {
        cache.remove_with_lock(path);
        eprintln!(
            "{}: removed {}: expired, and written under settings this refresh does not have, so no exec reads it",
            binary_name::<P>(),
            entry.registry
        );
        return (RenewalResult::Removed, None);
    }
    match result {
        Ok(Renewal::ByAnother(_)) => (RenewalResult::Renewed, None),
        Ok(Renewal::Fetched(renewed)) => {
            eprintln!(
                "{}: renewed {} (valid until {})",
                binary_name::<P>(),
                entry.registry,
                format_time(renewed.expires_at)
            );
            (RenewalResult::Renewed, None)
        }
        Ok(Renewal::AlreadyExpired(_)) => {
            eprintln!(
                "{}: failed to renew {}: the cloud returned an expired credential",
                binary_name::<P>(),
                entry.registry
            );
            (RenewalResult::Failed, Some(FailureClass::Other))
        }
        Err(RenewalError::OtherSettings) => {
            tracing::warn!(
                "skipped {}: its cache entry was written under other flags or environment than this refresh has; \
                 run refresh with the provider's args and env from the kubelet's config \
                 (credential-provider-refresh does), else the kubelet's next exec renews it",
                entry.registry
            );
            (RenewalResult::Skipped, None)
        }
        Err(RenewalError::Unplanned(e)) => {
            tracing::warn!(
                "skipped {}: this refresh does not serve its image any more ({}); the kubelet's next exec decides",
                entry.registry,
                secret::scrub(&e.to_string())
            );
            (RenewalResult::Skipped, None)
        }
        Err(RenewalError::Failed(failure)) => {
            eprintln!(
                "{}: failed to renew {}: {}",
                binary_name::<P>(),
                entry.registry,
                secret::scrub(&failure.error.to_string()).replace('\n', " ")
            );
            (RenewalResult::Failed, Some(failure.error.class()))
        }
    }
}

fn format_time(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

/// `period` give or take 10 %, so that a fleet of nodes started together does
/// not renew in lockstep.
fn jittered(period: Duration) -> Duration {
    let spread = period.as_secs_f64() * 0.2;
    let offset = crate::clock::random_fraction() * spread - spread / 2.0;
    Duration::from_secs_f64((period.as_secs_f64() + offset).max(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_counts_its_renewals_and_reads_back() {
        let renewal = |registry: &str, result, class| RenewalReport { registry: registry.into(), result, class };
        let report = PassReport {
            plugin: "ecr".into(),
            renewals: vec![
                renewal("a", RenewalResult::Renewed, None),
                renewal("b", RenewalResult::Failed, Some(FailureClass::Denied)),
                renewal("c", RenewalResult::Renewed, None),
                renewal("d", RenewalResult::Removed, None),
            ],
            entries: vec![EntryReport {
                registry: "a".into(),
                service_account: false,
                issued_at: 1,
                refresh_at: 2,
                expires_at: 3,
            }],
        };
        let summary = report.summary();
        assert_eq!(summary.to_string(), "2 renewed, 1 failed, 0 skipped, 1 removed");
        assert!(!summary.is_clean());
        let line = serde_json::to_string(&report).expect("json");
        assert!(line.contains(r#""result":"failed","class":"denied""#), "{line}");
        assert_eq!(serde_json::from_str::<PassReport>(&line).expect("reads back"), report);
    }

    #[test]
    fn periods_below_a_second_are_refused() {
        assert_eq!(parse_period("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_period("1s"), Ok(Duration::from_secs(1)));
        for short in ["0s", "500ms", "0"] {
            assert!(parse_period(short).is_err(), "{short}");
        }
        assert!(parse_period("soon").is_err());
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(100)).as_secs_f64();
            assert!((90.0..=110.0).contains(&d), "{d}");
        }
    }
}
