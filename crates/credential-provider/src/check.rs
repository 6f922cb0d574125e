//! The report `check` prints: one row per permission a pull needs.
//!
//! Each plugin decides which steps to run and how to read its cloud's answers;
//! the report's shape, its table and its JSON are the same for every plugin so
//! that CI pipelines can parse any of them alike.

use std::fmt::Write as _;

use serde::Serialize;

/// What one step found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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
}

impl Outcome {
    /// How a failed step reads: a refusal is `Denied`, anything else `Unknown`.
    pub fn of_error(error: &crate::error::Error) -> Outcome {
        match error {
            crate::error::Error::Denied { .. } => Outcome::Denied,
            _ => Outcome::Unknown,
        }
    }
}

/// One permission and what the cloud said about it.
#[derive(Clone, Debug, Serialize)]
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

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct CheckReport {
    pub image: String,
    /// Who the checks ran as (an ARN, a service account, a principal).
    pub identity: String,
    pub steps: Vec<CheckStep>,
}

/// How to print a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

impl CheckReport {
    /// Whether every step passed: the only case `check` exits 0.
    pub fn all_allowed(&self) -> bool {
        !self.steps.is_empty() && self.steps.iter().all(|s| s.outcome == Outcome::Allowed)
    }

    /// The report for a person: a header and an aligned table.
    pub fn to_table(&self) -> String {
        let width = self.steps.iter().map(|s| s.action.len()).max().unwrap_or(0).max(6);
        let mut out = String::new();
        let _ = writeln!(out, "image:    {}", self.image);
        let _ = writeln!(out, "identity: {}", self.identity);
        let _ = writeln!(out);
        let _ = writeln!(out, "{:<width$}  {:<7}  DETAIL", "ACTION", "RESULT");
        for step in &self.steps {
            let _ = writeln!(out, "{:<width$}  {:<7}  {}", step.action, step.outcome.as_str(), one_line(&step.detail));
        }
        let _ = writeln!(out);
        let verdict = if self.all_allowed() {
            "every permission a pull needs is granted"
        } else {
            "some permissions a pull needs are missing or could not be checked"
        };
        let _ = writeln!(out, "{verdict}");
        out
    }

    /// The report for a machine.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Json<'a> {
            image: &'a str,
            identity: &'a str,
            allowed: bool,
            checks: &'a [CheckStep],
        }
        let mut json = serde_json::to_string_pretty(&Json {
            image: &self.image,
            identity: &self.identity,
            allowed: self.all_allowed(),
            checks: &self.steps,
        })
        .unwrap_or_default();
        json.push('\n');
        json
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_table_and_json() {
        let report = CheckReport {
            image: "r.example/a".into(),
            identity: "arn:aws:iam::1:user/x".into(),
            steps: vec![
                CheckStep::new("ecr:GetAuthorizationToken", Outcome::Allowed, ""),
                CheckStep::new("ecr:BatchGetImage", Outcome::Denied, "AccessDenied:\nnot authorized"),
            ],
        };
        assert!(!report.all_allowed());
        let table = report.to_table();
        assert!(table.contains("ecr:BatchGetImage          denied   AccessDenied: not authorized"), "{table}");
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).expect("json");
        assert_eq!(json["allowed"], false);
        assert_eq!(json["checks"][1]["result"], "denied");
    }
}
