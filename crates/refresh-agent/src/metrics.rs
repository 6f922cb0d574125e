//! What the agent knows, as Prometheus metrics: each cached credential's
//! times, each provider's renewals and passes, and the agent itself.
//!
//! The state is the agent's own (a [`Metrics`]), updated after every provider
//! run from the plugin's `refresh --json` report; the exposition is rendered
//! from it on demand, so a provider removed from the config or an entry gone
//! from the cache leaves no series behind. Labels are bounded by the node's
//! config and registries: provider, registry, the entry's kind, a result or a
//! failure class; never a secret, a key or a service account.
//!
//! With `--metrics-textfile` the state is also kept beside the file (a
//! hidden `.NAME.state.json`), so that counters and the last successful pass
//! carry over from one run of a systemd timer to the next.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use credential_provider::FailureClass;
use credential_provider::refresh::{EntryReport, PassReport, RenewalResult};
use prometheus::core::Collector;
use prometheus::{Encoder as _, GaugeVec, IntCounterVec, Opts, Registry, TextEncoder};

/// The prefix of every metric: the project's, not `kubelet_` (the kubelet's own).
const PREFIX: &str = "credential_provider";

/// The Content-Type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How one provider's run went, as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum PassResult {
    /// The plugin ran and renewed everything that was its to renew.
    Success,
    /// It could not be run, was killed, or failed or skipped an entry.
    Failure,
}

impl PassResult {
    const ALL: [PassResult; 2] = [PassResult::Success, PassResult::Failure];

    fn as_str(self) -> &'static str {
        match self {
            PassResult::Success => "success",
            PassResult::Failure => "failure",
        }
    }
}

/// What the agent knows of one provider.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct ProviderState {
    renewals: BTreeMap<RenewalResult, u64>,
    failures: BTreeMap<FailureClass, u64>,
    passes: BTreeMap<PassResult, u64>,
    /// Unix seconds.
    last_pass: Option<f64>,
    last_success: Option<f64>,
    last_pass_seconds: Option<f64>,
    /// The plugin's entries after its last pass that reported them.
    entries: Vec<EntryReport>,
    /// The registries whose last renewal failed.
    failing: BTreeSet<String>,
}

/// What the agent knows, for its metrics.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Metrics {
    providers: BTreeMap<String, ProviderState>,
    /// Not kept across runs: this process's own.
    #[serde(skip)]
    started_at: f64,
    #[serde(skip)]
    interval: Option<Duration>,
}

/// A provider run: what the plugin reported, or why there is no report.
pub type RunOutcome = Result<PassReport, String>;

impl Metrics {
    /// An agent started at `started_at` (Unix seconds) that passes every
    /// `interval` (none for a single pass).
    pub fn new(started_at: f64, interval: Option<Duration>) -> Metrics {
        Metrics { providers: BTreeMap::new(), started_at, interval }
    }

    /// The state kept beside `textfile` by an earlier run, if any: a missing
    /// or unreadable one starts afresh (it holds counts, nothing to lose sleep over).
    pub fn resume(textfile: &Path, started_at: f64, interval: Option<Duration>) -> Metrics {
        let state = std::fs::read(state_path(textfile)).ok();
        let mut metrics: Metrics = state.and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default();
        metrics.started_at = started_at;
        metrics.interval = interval;
        metrics
    }

    /// Records `provider`'s run, which ended at `now` after `seconds`.
    pub fn record(&mut self, provider: &str, outcome: &RunOutcome, now: f64, seconds: f64) {
        let state = self.providers.entry(provider.to_string()).or_default();
        state.last_pass = Some(now);
        state.last_pass_seconds = Some(seconds);
        let result = match outcome {
            Ok(report) => {
                for renewal in &report.renewals {
                    *state.renewals.entry(renewal.result).or_default() += 1;
                    match renewal.result {
                        RenewalResult::Failed => {
                            *state.failures.entry(renewal.class.unwrap_or(FailureClass::Other)).or_default() += 1;
                            state.failing.insert(renewal.registry.clone());
                        }
                        _ => {
                            state.failing.remove(&renewal.registry);
                        }
                    }
                }
                state.entries = report.entries.clone();
                let cached: BTreeSet<&str> = state.entries.iter().map(|e| e.registry.as_str()).collect();
                state.failing.retain(|registry| cached.contains(registry.as_str()));
                if report.summary().is_clean() { PassResult::Success } else { PassResult::Failure }
            }
            // The entries stay as last reported: their times still hold.
            Err(_) => PassResult::Failure,
        };
        *state.passes.entry(result).or_default() += 1;
        if result == PassResult::Success {
            state.last_success = Some(now);
        }
    }

    /// Forgets every provider not in `configured`: its series go.
    pub fn retain(&mut self, configured: &BTreeSet<&str>) {
        self.providers.retain(|name, _| configured.contains(name.as_str()));
    }

    /// The exposition, in Prometheus's text format.
    pub fn render(&self) -> String {
        let families = match self.registry() {
            Ok(registry) => registry.gather(),
            Err(e) => {
                // Only a bug (two metrics of one name) gets here.
                eprintln!("credential-provider-refresh: cannot build the metrics: {e}");
                Vec::new()
            }
        };
        let mut text = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut text) {
            eprintln!("credential-provider-refresh: cannot encode the metrics: {e}");
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    /// Writes the exposition to `textfile` atomically (for node_exporter's
    /// textfile collector, which must be able to read it), and the state beside it.
    pub fn write_textfile(&self, textfile: &Path) -> std::io::Result<()> {
        let state = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        credential_provider::files::write_atomically(&state_path(textfile), &state, 0o600)?;
        credential_provider::files::write_atomically(textfile, self.render().as_bytes(), 0o644)
    }

    fn registry(&self) -> prometheus::Result<Registry> {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<GaugeVec> {
            GaugeVec::new(Opts::new(format!("{PREFIX}_{name}"), help), labels)
        };
        let counter = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
            IntCounterVec::new(Opts::new(format!("{PREFIX}_{name}"), help), labels)
        };
        let mut collectors: Vec<Box<dyn Collector>> = Vec::new();

        let build = gauge("build_info", "The agent's version: always 1.", &["version"])?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1.0);
        let up = gauge(
            "agent_up",
            "1 while the agent runs. A failed scrape, or a textfile whose last pass is old, says it does not.",
            &[],
        )?;
        up.with_label_values(&[] as &[&str]).set(1.0);
        let started = gauge("agent_start_time_seconds", "When the agent started, in Unix seconds.", &[])?;
        started.with_label_values(&[] as &[&str]).set(self.started_at);
        collectors.extend([Box::new(build) as Box<dyn Collector>, Box::new(up), Box::new(started)]);
        if let Some(interval) = self.interval {
            let every = gauge("pass_interval_seconds", "The agent's --every: how often it passes.", &[])?;
            every.with_label_values(&[] as &[&str]).set(interval.as_secs_f64());
            collectors.push(Box::new(every));
        }

        let entry_labels = ["provider", "registry", "kind"];
        let entries = gauge(
            "cache_entries",
            "The provider's plugin's cached credentials, by kind (node: the node's identity; service_account: a pod's).",
            &["provider", "kind"],
        )?;
        let issued = gauge(
            "credential_issued_timestamp_seconds",
            "When the cached credential that expires first for this registry and kind was issued, in Unix seconds.",
            &entry_labels,
        )?;
        let refresh = gauge(
            "credential_refresh_timestamp_seconds",
            "When that credential reaches its refresh point (execs renew it from then on), in Unix seconds.",
            &entry_labels,
        )?;
        let expiry = gauge(
            "credential_expiry_timestamp_seconds",
            "When that credential expires, in Unix seconds.",
            &entry_labels,
        )?;
        let failing = gauge(
            "credential_last_renewal_failed",
            "1 when the agent's last renewal of this registry's node credential failed, else 0.",
            &entry_labels,
        )?;
        let renewals = counter(
            "renewals_total",
            "Due credentials the provider's passes dealt with, by result (renewed, failed, skipped, removed).",
            &["provider", "result"],
        )?;
        let failures = counter(
            "renewal_failures_total",
            "Failed renewals, by class (denied: the cloud refused the identity; unreachable: no answer; other).",
            &["provider", "class"],
        )?;
        let passes = counter(
            "passes_total",
            "The provider's passes, by result (success: everything due was renewed).",
            &["provider", "result"],
        )?;
        let last_pass = gauge("last_pass_timestamp_seconds", "When the provider's last pass ended.", &["provider"])?;
        let last_success = gauge(
            "last_successful_pass_timestamp_seconds",
            "When the provider's last successful pass ended; 0 if it has had none.",
            &["provider"],
        )?;
        let duration = gauge("last_pass_duration_seconds", "How long the provider's last pass took.", &["provider"])?;

        for (provider, state) in &self.providers {
            let p = provider.as_str();
            for (kind, service_account) in [("node", false), ("service_account", true)] {
                let count = state.entries.iter().filter(|e| e.service_account == service_account).count();
                entries.with_label_values(&[p, kind]).set(count as f64);
            }
            // One series per registry and kind: the entry closest to expiring
            // (a registry has one per node identity, and one per pod's token).
            let mut first: BTreeMap<(&str, &str), &EntryReport> = BTreeMap::new();
            for entry in &state.entries {
                let kind = if entry.service_account { "service_account" } else { "node" };
                let slot = first.entry((entry.registry.as_str(), kind)).or_insert(entry);
                if entry.expires_at < slot.expires_at {
                    *slot = entry;
                }
            }
            for ((registry, kind), entry) in first {
                let labels = [p, registry, kind];
                issued.with_label_values(&labels).set(entry.issued_at as f64);
                refresh.with_label_values(&labels).set(entry.refresh_at as f64);
                expiry.with_label_values(&labels).set(entry.expires_at as f64);
                if kind == "node" {
                    let failed = state.failing.contains(registry);
                    failing.with_label_values(&labels).set(if failed { 1.0 } else { 0.0 });
                }
            }
            for result in RenewalResult::ALL {
                let n = state.renewals.get(&result).copied().unwrap_or(0);
                renewals.with_label_values(&[p, result.as_str()]).inc_by(n);
            }
            for class in FailureClass::ALL {
                let n = state.failures.get(&class).copied().unwrap_or(0);
                failures.with_label_values(&[p, class.as_str()]).inc_by(n);
            }
            for result in PassResult::ALL {
                let n = state.passes.get(&result).copied().unwrap_or(0);
                passes.with_label_values(&[p, result.as_str()]).inc_by(n);
            }
            if let Some(at) = state.last_pass {
                last_pass.with_label_values(&[p]).set(at);
                // 0 for none, so that "no success for so long" holds for a provider that never had one.
                last_success.with_label_values(&[p]).set(state.last_success.unwrap_or(0.0));
            }
            if let Some(seconds) = state.last_pass_seconds {
                duration.with_label_values(&[p]).set(seconds);
            }
        }
        collectors.extend([
            Box::new(entries) as Box<dyn Collector>,
            Box::new(issued),
            Box::new(refresh),
            Box::new(expiry),
            Box::new(failing),
            Box::new(renewals),
            Box::new(failures),
            Box::new(passes),
            Box::new(last_pass),
            Box::new(last_success),
            Box::new(duration),
        ]);
        for collector in collectors {
            registry.register(collector)?;
        }
        Ok(registry)
    }
}

/// Where the state behind `textfile` is kept: beside it, hidden, and not
/// named `*.prom` (node_exporter reads only those).
fn state_path(textfile: &Path) -> PathBuf {
    let name = textfile.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    textfile.with_file_name(format!(".{name}.state.json"))
}

/// Serves `GET /metrics` from `metrics` on `server`, on a thread of its own,
/// until the process ends.
pub fn serve(server: tiny_http::Server, metrics: std::sync::Arc<std::sync::Mutex<Metrics>>) {
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            let response = match (request.method(), request.url()) {
                (tiny_http::Method::Get | tiny_http::Method::Head, "/metrics") => {
                    let body = metrics.lock().map(|m| m.render()).unwrap_or_default();
                    text_response(body, 200, CONTENT_TYPE)
                }
                (tiny_http::Method::Get | tiny_http::Method::Head, _) => {
                    text_response("not found: the metrics are at /metrics\n".into(), 404, "text/plain; charset=utf-8")
                }
                _ => text_response("only GET and HEAD\n".into(), 405, "text/plain; charset=utf-8"),
            };
            // A client that went away is no concern of ours.
            let _ = request.respond(response);
        }
    });
}

fn text_response(body: String, status: u16, content_type: &str) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let response = tiny_http::Response::from_string(body).with_status_code(status);
    match tiny_http::Header::from_bytes("Content-Type", content_type) {
        Ok(header) => response.with_header(header),
        Err(()) => response,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use credential_provider::refresh::RenewalReport;

    fn entry(registry: &str, service_account: bool, expires_at: u64) -> EntryReport {
        EntryReport { registry: registry.into(), service_account, issued_at: 100, refresh_at: 200, expires_at }
    }

    fn report(renewals: Vec<RenewalReport>, entries: Vec<EntryReport>) -> RunOutcome {
        Ok(PassReport { plugin: "ecr".into(), renewals, entries })
    }

    #[test]
    fn the_exposition_holds_each_registrys_first_expiry_and_the_counts() {
        let mut metrics = Metrics::new(50.0, Some(Duration::from_secs(300)));
        let failed = RenewalReport {
            registry: "b.example".into(),
            result: RenewalResult::Failed,
            class: Some(FailureClass::Denied),
        };
        let entries =
            vec![entry("a.example", false, 400), entry("b.example", true, 900), entry("b.example", true, 700)];
        metrics.record("ecr-credential-provider", &report(vec![failed], entries), 1000.0, 0.5);
        let text = metrics.render();
        for line in [
            r#"credential_provider_credential_expiry_timestamp_seconds{kind="service_account",provider="ecr-credential-provider",registry="b.example"} 700"#,
            r#"credential_provider_credential_expiry_timestamp_seconds{kind="node",provider="ecr-credential-provider",registry="a.example"} 400"#,
            r#"credential_provider_cache_entries{kind="service_account",provider="ecr-credential-provider"} 2"#,
            r#"credential_provider_renewal_failures_total{class="denied",provider="ecr-credential-provider"} 1"#,
            r#"credential_provider_renewals_total{provider="ecr-credential-provider",result="failed"} 1"#,
            r#"credential_provider_passes_total{provider="ecr-credential-provider",result="failure"} 1"#,
            r#"credential_provider_pass_interval_seconds 300"#,
            "# TYPE credential_provider_renewals_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
        let never =
            r#"credential_provider_last_successful_pass_timestamp_seconds{provider="ecr-credential-provider"} 0"#;
        assert!(text.lines().any(|l| l == never), "no success yet:\n{text}");
        // A provider no longer configured leaves nothing behind.
        metrics.retain(&BTreeSet::new());
        assert!(!metrics.render().contains("ecr-credential-provider"));
    }

    #[test]
    fn a_renewal_clears_its_registrys_failure_and_the_state_reads_back() {
        let dir = tempfile::tempdir().expect("dir");
        let textfile = dir.path().join("kcp.prom");
        let mut metrics = Metrics::new(0.0, None);
        let renewal = |result, class| RenewalReport { registry: "a.example".into(), result, class };
        let entries = vec![entry("a.example", false, 400)];
        metrics.record("p", &report(vec![renewal(RenewalResult::Failed, None)], entries.clone()), 10.0, 1.0);
        assert!(metrics.render().contains(
            r#"credential_provider_credential_last_renewal_failed{kind="node",provider="p",registry="a.example"} 1"#
        ));
        metrics.record("p", &report(vec![renewal(RenewalResult::Renewed, None)], entries), 20.0, 1.0);
        metrics.record("p", &Err("killed".into()), 30.0, 60.0);
        metrics.write_textfile(&textfile).expect("write");
        let resumed = Metrics::resume(&textfile, 99.0, None);
        let text = resumed.render();
        for line in [
            r#"credential_provider_credential_last_renewal_failed{kind="node",provider="p",registry="a.example"} 0"#,
            r#"credential_provider_renewal_failures_total{class="other",provider="p"} 1"#,
            r#"credential_provider_passes_total{provider="p",result="success"} 1"#,
            r#"credential_provider_passes_total{provider="p",result="failure"} 2"#,
            r#"credential_provider_last_successful_pass_timestamp_seconds{provider="p"} 20"#,
            r#"credential_provider_last_pass_timestamp_seconds{provider="p"} 30"#,
            r#"credential_provider_agent_start_time_seconds 99"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from:\n{text}");
        }
        assert_eq!(
            std::fs::read_to_string(&textfile).expect("textfile").lines().count(),
            metrics.render().lines().count()
        );
    }
}
