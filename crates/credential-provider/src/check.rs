//! The report `check` prints: for each image, one row per permission a pull
//! needs.
//!
//! Each plugin decides which steps to run and how to read its cloud's answers
//! (a [`CheckReport`] per image); a [`CheckRun`] gathers them, with the images
//! that are not the plugin's, and prints them the same way for every plugin
//! (and for `kubelet-simulator check`, which merges the plugins' JSON): a
//! table for a person, JSON for a program, JUnit XML for a CI server's test
//! reporter, GitHub Actions annotations for a workflow's log.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::manifest::{self, ManifestError, ManifestImage};

/// What `check` takes in every plugin and in `kubelet-simulator check`:
/// which images, as which service account, and how to print the report.
#[derive(Clone, Debug, clap::Args)]
pub struct CheckArgs {
    /// An image to check, e.g. 123456789012.dkr.ecr.us-east-1.amazonaws.com/app:1.0 (may be repeated).
    #[arg(long = "image", value_name = "IMAGE", required_unless_present = "manifests")]
    pub images: Vec<String>,
    /// Check every image the Kubernetes manifests in FILE deploy (YAML or JSON, - for stdin; may be repeated).
    #[arg(long = "manifest", value_name = "FILE")]
    pub manifests: Vec<PathBuf>,
    /// Check as a pod's service account: a file holding its token (KEP-4412), e.g. from `kubectl create token`.
    #[arg(long, value_name = "FILE")]
    pub service_account_token_file: Option<PathBuf>,
    /// The service account's annotation, as the kubelet would send it (may be repeated).
    #[arg(long = "service-account-annotation", value_name = "KEY=VALUE")]
    pub service_account_annotations: Vec<String>,
    /// How to print the report.
    #[arg(long, value_enum, default_value = "table")]
    pub output: OutputFormat,
}

/// An image `check` was asked about, and where a manifest uses it.
#[derive(Clone, Debug)]
pub struct Wanted {
    pub image: String,
    pub used: Option<ManifestImage>,
}

impl CheckArgs {
    /// The images asked about: those named, then those the manifests deploy.
    pub fn wanted(&self) -> Result<Vec<Wanted>, ManifestError> {
        let mut wanted: Vec<Wanted> =
            self.images.iter().map(|image| Wanted { image: image.clone(), used: None }).collect();
        for path in &self.manifests {
            wanted.extend(manifest::read(path)?.into_iter().map(|m| Wanted { image: m.image.clone(), used: Some(m) }));
        }
        Ok(wanted)
    }

    /// `--service-account-annotation`s, as a map.
    pub fn annotations(&self) -> Result<BTreeMap<String, String>, String> {
        parse_annotations(&self.service_account_annotations)
    }
}

/// `--service-account-annotation KEY=VALUE` flags, as a map; the first that
/// is not `KEY=VALUE` is the error.
pub fn parse_annotations(flags: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut annotations = BTreeMap::new();
    for annotation in flags {
        let (key, value) = annotation
            .split_once('=')
            .ok_or_else(|| format!("--service-account-annotation {annotation:?} is not KEY=VALUE"))?;
        annotations.insert(key.to_string(), value.to_string());
    }
    Ok(annotations)
}

/// What one step found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The identity holds this permission.
    Allowed,
    /// The cloud refused it.
    Denied,
    /// The step could not tell (network error, throttling, an answer not understood).
    Unknown,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::Unknown => "unknown",
        }
    }

    /// How a failed step reads: a refusal is `Denied`, anything else `Unknown`.
    pub fn of_error(error: &crate::error::Error) -> Outcome {
        match error {
            crate::error::Error::Denied { .. } => Outcome::Denied,
            _ => Outcome::Unknown,
        }
    }
}

/// One permission and what the cloud said about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckStep {
    pub action: String,
    #[serde(rename = "result")]
    pub outcome: Outcome,
    pub detail: String,
}

impl CheckStep {
    pub fn new(action: impl Into<String>, outcome: Outcome, detail: impl Into<String>) -> CheckStep {
        CheckStep { action: action.into(), outcome, detail: detail.into() }
    }
}

/// What a plugin found for one image.
#[derive(Clone, Debug)]
pub struct CheckReport {
    pub image: String,
    /// Who the checks ran as (an ARN, a service account, a principal).
    pub identity: String,
    pub steps: Vec<CheckStep>,
}

/// How to print a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A table per image, for a person.
    Table,
    /// One JSON document.
    Json,
    /// JUnit XML: a test suite per image, a test case per permission.
    Junit,
    /// GitHub Actions workflow commands: an annotation per permission that did not pass.
    Github,
}

/// What became of one image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Verdict {
    /// The plugin checked every permission a pull needs.
    Checked { identity: String, checks: Vec<CheckStep> },
    /// The plugin does not serve this image's registry: some other provider's, or none's.
    NotThisPlugins { reason: String },
    /// No provider of the kubelet's config matches the image: the kubelet
    /// pulls it without credentials (`kubelet-simulator check`).
    NoProvider,
    /// The check could not run (a bad image reference, a plugin that failed).
    Failed { error: String },
}

/// One image of a check, where it comes from, and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageCheck {
    pub image: String,
    /// The manifests' workloads and containers that use it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// The service accounts their pods run as (`namespace/name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    /// The kubelet config's provider that checked it (`kubelet-simulator check`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Whether the image passed: every permission allowed, or nothing of this
    /// plugin's to check.
    pub allowed: bool,
    #[serde(flatten)]
    pub verdict: Verdict,
}

impl ImageCheck {
    pub fn new(image: impl Into<String>, verdict: Verdict) -> ImageCheck {
        let allowed = match &verdict {
            Verdict::Checked { checks, .. } => {
                !checks.is_empty() && checks.iter().all(|s| s.outcome == Outcome::Allowed)
            }
            Verdict::NotThisPlugins { .. } | Verdict::NoProvider => true,
            Verdict::Failed { .. } => false,
        };
        ImageCheck {
            image: image.into(),
            sources: Vec::new(),
            service_accounts: Vec::new(),
            provider: None,
            allowed,
            verdict,
        }
    }

    /// Says where a manifest uses the image, and as which service accounts.
    pub fn used_by(&mut self, used: &ManifestImage) {
        self.sources.clone_from(&used.sources);
        self.service_accounts.clone_from(&used.service_accounts);
    }

    /// The image a plugin checked.
    pub fn checked(report: CheckReport) -> ImageCheck {
        ImageCheck::new(report.image, Verdict::Checked { identity: report.identity, checks: report.steps })
    }

    /// The permissions checked (none unless [`Verdict::Checked`]).
    pub fn steps(&self) -> &[CheckStep] {
        match &self.verdict {
            Verdict::Checked { checks, .. } => checks,
            _ => &[],
        }
    }

    /// What the image's status says in a sentence, for a person.
    fn status_line(&self) -> String {
        match &self.verdict {
            Verdict::Checked { identity, .. } => format!("checked as {identity}"),
            Verdict::NotThisPlugins { reason } => format!("not this plugin's: {reason}"),
            Verdict::NoProvider => "pulled without credentials: no provider of the config matches it".to_string(),
            Verdict::Failed { error } => format!("could not be checked: {error}"),
        }
    }
}

/// A whole check: every image, and whether all passed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRun {
    /// Whether every image passed: the only case `check` exits 0.
    pub allowed: bool,
    pub images: Vec<ImageCheck>,
}

impl CheckRun {
    pub fn new(images: Vec<ImageCheck>) -> CheckRun {
        let allowed = !images.is_empty() && images.iter().all(|i| i.allowed);
        CheckRun { allowed, images }
    }

    /// How many images did not pass, and how many checks of theirs.
    pub fn failures(&self) -> (usize, usize) {
        let images = self.images.iter().filter(|i| !i.allowed).count();
        let checks = self.images.iter().flat_map(|i| i.steps()).filter(|s| s.outcome != Outcome::Allowed).count();
        (images, checks)
    }

    pub fn render(&self, format: OutputFormat) -> String {
        match format {
            OutputFormat::Table => self.to_table(),
            OutputFormat::Json => self.to_json(),
            OutputFormat::Junit => self.to_junit(),
            OutputFormat::Github => self.to_github(),
        }
    }

    /// For a person: per image, where it is used and an aligned table.
    pub fn to_table(&self) -> String {
        let width = self.images.iter().flat_map(|i| i.steps()).map(|s| s.action.len()).max().unwrap_or(0).max(6);
        let mut out = String::new();
        for image in &self.images {
            let _ = writeln!(out, "image:    {}", image.image);
            if let Some(provider) = &image.provider {
                let _ = writeln!(out, "provider: {provider}");
            }
            for source in &image.sources {
                let _ = writeln!(out, "used by:  {source}");
            }
            if !image.service_accounts.is_empty() {
                let _ = writeln!(out, "pods run as: {}", image.service_accounts.join(", "));
            }
            match &image.verdict {
                Verdict::Checked { identity, checks } => {
                    let _ = writeln!(out, "identity: {identity}");
                    let _ = writeln!(out);
                    let _ = writeln!(out, "{:<width$}  {:<7}  DETAIL", "ACTION", "RESULT");
                    for step in checks {
                        let _ = writeln!(
                            out,
                            "{:<width$}  {:<7}  {}",
                            step.action,
                            step.outcome.as_str(),
                            one_line(&step.detail)
                        );
                    }
                }
                _ => {
                    let _ = writeln!(out, "{}", image.status_line());
                }
            }
            let _ = writeln!(out);
        }
        let (images, checks) = self.failures();
        let verdict = match (self.allowed, self.images.len()) {
            (_, 0) => "no image to check".to_string(),
            (true, 1) => "every permission a pull needs is granted".to_string(),
            (true, n) => format!("every permission a pull needs is granted, for all {n} images"),
            (false, n) => {
                format!("{images} of {n} images cannot be shown to pull: {checks} permissions missing or not checked")
            }
        };
        let _ = writeln!(out, "{verdict}");
        out
    }

    /// For a program.
    pub fn to_json(&self) -> String {
        let mut json = serde_json::to_string_pretty(self).unwrap_or_default();
        json.push('\n');
        json
    }

    /// JUnit XML, as GitLab, Jenkins and GitHub's test reporters read it: a
    /// suite per image, a case per permission (a denial a failure, an
    /// unknown an error); an image that is not the plugin's, or that no
    /// provider serves, one skipped case.
    pub fn to_junit(&self) -> String {
        let cases: usize = self.images.iter().map(|i| i.steps().len().max(1)).sum();
        let count =
            |outcome: Outcome| self.images.iter().flat_map(|i| i.steps()).filter(|s| s.outcome == outcome).count();
        let failed_images = self.images.iter().filter(|i| matches!(i.verdict, Verdict::Failed { .. })).count();
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            out,
            "<testsuites name=\"credential provider check\" tests=\"{cases}\" failures=\"{}\" errors=\"{}\">",
            count(Outcome::Denied),
            count(Outcome::Unknown) + failed_images
        );
        for image in &self.images {
            let steps = image.steps();
            let denied = steps.iter().filter(|s| s.outcome == Outcome::Denied).count();
            let unknown = steps.iter().filter(|s| s.outcome == Outcome::Unknown).count();
            let errors = unknown + usize::from(matches!(image.verdict, Verdict::Failed { .. }));
            let skipped = usize::from(matches!(image.verdict, Verdict::NotThisPlugins { .. } | Verdict::NoProvider));
            let _ = writeln!(
                out,
                "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{denied}\" errors=\"{errors}\" skipped=\"{skipped}\">",
                xml(&image.image),
                steps.len().max(1)
            );
            let mut properties = Vec::new();
            if let Verdict::Checked { identity, .. } = &image.verdict {
                properties.push(("identity", identity.as_str()));
            }
            if let Some(provider) = &image.provider {
                properties.push(("provider", provider.as_str()));
            }
            properties.extend(image.sources.iter().map(|s| ("used by", s.as_str())));
            properties.extend(image.service_accounts.iter().map(|s| ("service account", s.as_str())));
            if !properties.is_empty() {
                let _ = writeln!(out, "    <properties>");
                for (name, value) in properties {
                    let _ = writeln!(out, "      <property name=\"{name}\" value=\"{}\"/>", xml(value));
                }
                let _ = writeln!(out, "    </properties>");
            }
            let classname = xml(&image.image);
            match &image.verdict {
                Verdict::Checked { checks, .. } => {
                    for step in checks {
                        let name = xml(&step.action);
                        let detail = xml(&one_line(&step.detail));
                        match step.outcome {
                            Outcome::Allowed => {
                                let _ = writeln!(out, "    <testcase classname=\"{classname}\" name=\"{name}\"/>");
                            }
                            outcome => {
                                let element = if outcome == Outcome::Denied { "failure" } else { "error" };
                                let _ = writeln!(
                                    out,
                                    "    <testcase classname=\"{classname}\" name=\"{name}\">\n      <{element} type=\"{}\" message=\"{detail}\">{detail}</{element}>\n    </testcase>",
                                    outcome.as_str()
                                );
                            }
                        }
                    }
                }
                Verdict::NotThisPlugins { .. } | Verdict::NoProvider => {
                    let _ = writeln!(
                        out,
                        "    <testcase classname=\"{classname}\" name=\"pull\">\n      <skipped message=\"{}\"/>\n    </testcase>",
                        xml(&image.status_line())
                    );
                }
                Verdict::Failed { error } => {
                    let _ = writeln!(
                        out,
                        "    <testcase classname=\"{classname}\" name=\"pull\">\n      <error type=\"failed\" message=\"{0}\">{0}</error>\n    </testcase>",
                        xml(&one_line(error))
                    );
                }
            }
            let _ = writeln!(out, "  </testsuite>");
        }
        let _ = writeln!(out, "</testsuites>");
        out
    }

    /// GitHub Actions workflow commands: an error per denial and per image
    /// that could not be checked, a warning per permission that could not be
    /// told, a notice per image passed over, and the verdict.
    pub fn to_github(&self) -> String {
        let mut out = String::new();
        for image in &self.images {
            match &image.verdict {
                Verdict::Checked { identity, checks } => {
                    for step in checks.iter().filter(|s| s.outcome != Outcome::Allowed) {
                        let level = if step.outcome == Outcome::Denied { "error" } else { "warning" };
                        let title = format!("{}: {} {}", image.image, step.action, step.outcome.as_str());
                        let message = format!("{} (as {identity}): {}", step.action, one_line(&step.detail));
                        let _ = writeln!(out, "::{level} title={}::{}", github_property(&title), github_data(&message));
                    }
                }
                Verdict::Failed { error } => {
                    let title = format!("{}: not checked", image.image);
                    let _ = writeln!(out, "::error title={}::{}", github_property(&title), github_data(error));
                }
                _ => {
                    let _ = writeln!(
                        out,
                        "::notice title={}::{}",
                        github_property(&image.image),
                        github_data(&image.status_line())
                    );
                }
            }
        }
        let (images, checks) = self.failures();
        let _ = match self.allowed {
            true => writeln!(out, "every permission a pull needs is granted, for all {} images", self.images.len()),
            false => {
                writeln!(out, "{images} of {} images cannot be shown to pull ({checks} permissions)", self.images.len())
            }
        };
        out
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Text as XML 1.0 attribute or element content: the markup characters
/// escaped, and the control characters XML cannot hold dropped.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
    out
}

/// A workflow command's message: `%`, CR and LF escaped as GitHub reads them.
fn github_data(text: &str) -> String {
    text.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

/// A workflow command's property value: also `:` and `,`.
fn github_property(text: &str) -> String {
    github_data(text).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> CheckRun {
        let denied = CheckReport {
            image: "r.example/a".into(),
            identity: "arn:aws:iam::1:user/x".into(),
            steps: vec![
                CheckStep::new("ecr:GetAuthorizationToken", Outcome::Allowed, ""),
                CheckStep::new("ecr:BatchGetImage", Outcome::Denied, "AccessDenied:\nnot <authorized> & 100%"),
                CheckStep::new("ecr:ListImages", Outcome::Unknown, "throttled"),
            ],
        };
        let mut checked = ImageCheck::checked(denied);
        checked.sources = vec!["Deployment shop/web, container app".into()];
        let other = ImageCheck::new("gcr.io/p/x", Verdict::NotThisPlugins { reason: "a Google registry".into() });
        CheckRun::new(vec![checked, other])
    }

    #[test]
    fn a_run_passes_only_when_every_image_does() {
        let run = run();
        assert!(!run.allowed);
        assert_eq!(run.failures(), (1, 2));
        let other = ImageCheck::new("gcr.io/p/x", Verdict::NotThisPlugins { reason: "r".into() });
        assert!(CheckRun::new(vec![other]).allowed, "what is not the plugin's does not fail");
        assert!(!CheckRun::new(Vec::new()).allowed, "nothing checked is not a pass");
        assert!(!CheckRun::new(vec![ImageCheck::new("x", Verdict::Failed { error: "e".into() })]).allowed);
    }

    #[test]
    fn renders_table_and_json() {
        let run = run();
        let table = run.to_table();
        assert!(table.contains("ecr:BatchGetImage          denied   AccessDenied: not <authorized> & 100%"), "{table}");
        assert!(table.contains("used by:  Deployment shop/web, container app"), "{table}");
        assert!(table.contains("not this plugin's: a Google registry"), "{table}");
        assert!(
            table.contains("1 of 2 images cannot be shown to pull: 2 permissions missing or not checked"),
            "{table}"
        );
        let json: serde_json::Value = serde_json::from_str(&run.to_json()).expect("json");
        assert_eq!(json["allowed"], false);
        assert_eq!(json["images"][0]["status"], "checked");
        assert_eq!(json["images"][0]["checks"][1]["result"], "denied");
        assert_eq!(json["images"][1]["status"], "not_this_plugins");
        let back: CheckRun = serde_json::from_str(&run.to_json()).expect("reads back");
        assert_eq!(back, run);
    }

    #[test]
    fn renders_junit_and_github_escaped() {
        let run = run();
        let junit = run.to_junit();
        assert!(
            junit.contains("<testsuites name=\"credential provider check\" tests=\"4\" failures=\"1\" errors=\"1\">"),
            "{junit}"
        );
        assert!(junit.contains("message=\"AccessDenied: not &lt;authorized&gt; &amp; 100%\""), "{junit}");
        assert!(junit.contains("<skipped message=\"not this plugin&apos;s: a Google registry\"/>"), "{junit}");
        let github = run.to_github();
        assert!(
            github.contains("::error title=r.example/a%3A ecr%3ABatchGetImage denied::ecr:BatchGetImage (as arn:aws:iam::1:user/x): AccessDenied: not <authorized> & 100%25"),
            "{github}"
        );
        assert!(github.contains("::warning title=r.example/a%3A ecr%3AListImages unknown::"), "{github}");
        assert!(github.contains("::notice title=gcr.io/p/x::not this plugin's"), "{github}");
        assert_eq!(xml("a\u{1}b\nc"), "ab c");
    }
}
