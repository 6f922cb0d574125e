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

use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::cache::{Cache, CachedCredential, Freshness};
use crate::clock;
use crate::credentials::{self, RenewalError};
use crate::error::Error;
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

/// Runs one pass, or passes every `every` until SIGTERM or SIGINT.
pub fn run<P: Provider>(provider: &P, cache: &Cache, every: Option<Duration>) -> Result<(), Error> {
    let last = repeat(&binary_name::<P>(), every, |stop| pass(provider, cache, stop));
    match last {
        Some(summary) if !summary.is_clean() => Err(Error::cloud(
            P::NAME,
            format!(
                "{} cached credential(s) could not be renewed and {} were skipped",
                summary.failed, summary.skipped
            ),
        )),
        _ => Ok(()),
    }
}

/// Runs `pass` once, or every `every` (jittered) until SIGTERM or SIGINT,
/// which end the wait at once and the pass between entries. Returns the last
/// pass's result for a single pass, `None` when looping (a loop ends only
/// when asked to).
pub fn repeat<T>(label: &str, every: Option<Duration>, mut pass: impl FnMut(&AtomicBool) -> T) -> Option<T> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            tracing::warn!("cannot handle signal {signal} ({e}); it will end the process abruptly");
        }
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

/// The line that ends a plugin's refresh pass, for whoever runs it (the
/// node agent reads it): `<binary>: refresh pass [<plugin>]: …`.
pub const PASS_MARKER: &str = "refresh pass [";

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

    /// Reads what a pass's last line says (`2 renewed, 0 failed, 1 skipped,
    /// 0 removed`, or `nothing to renew: …`).
    pub fn parse(text: &str) -> Option<PassSummary> {
        if text.starts_with("nothing to renew") {
            return Some(PassSummary::default());
        }
        let mut counts = text.split(", ").map(|part| part.split_once(' '));
        let mut count = |word: &str| match counts.next()? {
            Some((n, w)) if w == word => n.parse().ok(),
            _ => None,
        };
        Some(PassSummary {
            renewed: count("renewed")?,
            failed: count("failed")?,
            skipped: count("skipped")?,
            removed: count("removed")?,
        })
    }
}

/// What became of one due entry.
enum EntryOutcome {
    Renewed,
    Failed,
    Skipped,
    Removed,
}

/// One pass, ended by one line on stderr that says what it did.
fn pass<P: Provider>(provider: &P, cache: &Cache, stop: &AtomicBool) -> PassSummary {
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
        return PassSummary::default();
    }
    let queue = Mutex::new(due);
    let summary = Mutex::new(PassSummary::default());
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
                    let outcome = renew_entry(provider, cache, &path, &entry);
                    if let Ok(mut summary) = summary.lock() {
                        match outcome {
                            EntryOutcome::Renewed => summary.renewed += 1,
                            EntryOutcome::Failed => summary.failed += 1,
                            EntryOutcome::Skipped => summary.skipped += 1,
                            EntryOutcome::Removed => summary.removed += 1,
                        }
                    }
                }
            });
        }
    });
    let summary = summary.into_inner().unwrap_or_default();
    eprintln!("{}: {PASS_MARKER}{}]: {summary}", binary_name::<P>(), P::NAME);
    summary
}

/// Renews one entry, saying so on stderr unless another process did.
fn renew_entry<P: Provider>(provider: &P, cache: &Cache, path: &Path, entry: &CachedCredential) -> EntryOutcome {
    let result = credentials::renew(provider, cache, entry);
    let not_ours = matches!(result, Err(RenewalError::OtherSettings | RenewalError::Unplanned(_)));
    if not_ours && entry.freshness(clock::unix_now()) == Freshness::Expired {
        cache.remove_with_lock(path);
        eprintln!(
            "{}: removed {}: expired, and written under settings this refresh does not have, so no exec reads it",
            binary_name::<P>(),
            entry.registry
        );
        return EntryOutcome::Removed;
    }
    match result {
        Ok(Renewal::ByAnother(_)) => EntryOutcome::Renewed,
        Ok(Renewal::Fetched(renewed)) => {
            eprintln!(
                "{}: renewed {} (valid until {})",
                binary_name::<P>(),
                entry.registry,
                format_time(renewed.expires_at)
            );
            EntryOutcome::Renewed
        }
        Ok(Renewal::AlreadyExpired(_)) => {
            eprintln!(
                "{}: failed to renew {}: the cloud returned an expired credential",
                binary_name::<P>(),
                entry.registry
            );
            EntryOutcome::Failed
        }
        Err(RenewalError::OtherSettings) => {
            tracing::warn!(
                "skipped {}: its cache entry was written under other flags or environment than this refresh has; \
                 run refresh with the provider's args and env from the kubelet's config \
                 (credential-provider-refresh does), else the kubelet's next exec renews it",
                entry.registry
            );
            EntryOutcome::Skipped
        }
        Err(RenewalError::Unplanned(e)) => {
            tracing::warn!(
                "skipped {}: this refresh does not serve its image any more ({}); the kubelet's next exec decides",
                entry.registry,
                secret::scrub(&e.to_string())
            );
            EntryOutcome::Skipped
        }
        Err(RenewalError::Failed(failure)) => {
            eprintln!(
                "{}: failed to renew {}: {}",
                binary_name::<P>(),
                entry.registry,
                secret::scrub(&failure.error.to_string()).replace('\n', " ")
            );
            EntryOutcome::Failed
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
    fn a_pass_summary_reads_back() {
        let summary = PassSummary { renewed: 2, failed: 0, skipped: 1, removed: 3 };
        assert_eq!(summary.to_string(), "2 renewed, 0 failed, 1 skipped, 3 removed");
        assert_eq!(PassSummary::parse(&summary.to_string()), Some(summary));
        assert_eq!(PassSummary::parse("nothing to renew: 3 cached"), Some(PassSummary::default()));
        assert_eq!(PassSummary::parse("2 renewed, 0 failed"), None);
        assert_eq!(PassSummary::parse("x renewed, 0 failed, 0 skipped, 0 removed"), None);
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
