//! The simulation for a person (a table) or for CI (JSON).

use std::fmt::Write as _;

use crate::simulate::{ProviderOutcome, Simulation};
use kubelet_config::{ConfigError, Provider};

/// A config's validation, for a person.
pub fn config_table(path: &std::path::Path, providers: &[Provider]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}: valid, {} provider(s)", path.display(), providers.len());
    for provider in providers {
        let _ = writeln!(
            out,
            "  {} ({}), matchImages {}, defaultCacheDuration {}s{}",
            provider.spec.name,
            provider.api_version.as_str(),
            provider.spec.match_images.join(" "),
            provider.default_cache_duration.as_secs(),
            if provider.spec.token_attributes.is_some() { ", service-account tokens" } else { "" }
        );
    }
    out
}

/// A config's problems, one per line.
pub fn config_errors(errors: &[ConfigError]) -> String {
    errors.iter().map(|e| format!("{e}\n")).collect()
}

/// The problems as JSON.
pub fn config_errors_json(errors: &[ConfigError]) -> String {
    let list: Vec<serde_json::Value> = errors
        .iter()
        .map(|e| serde_json::json!({ "file": e.file, "line": e.line, "field": e.field, "message": e.message }))
        .collect();
    let mut text =
        serde_json::to_string_pretty(&serde_json::json!({ "valid": false, "errors": list })).unwrap_or_default();
    text.push('\n');
    text
}

fn seconds(value: Option<u64>) -> String {
    value.map_or_else(|| "not cached".to_string(), |s| format!("cached {s}s"))
}

/// The simulation, for a person.
pub fn simulation_table(simulation: &Simulation) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "image: {}", simulation.image);
    for provider in &simulation.providers {
        let _ = write!(out, "\nprovider {} ({}): ", provider.name, provider.api_version);
        match &provider.outcome {
            ProviderOutcome::NotMatched => {
                let _ = writeln!(out, "not run: no matchImages entry matches the image");
            }
            ProviderOutcome::Skipped { reason } => {
                let _ = writeln!(out, "not run: {reason}");
            }
            ProviderOutcome::Failed { kubelet_log, elapsed_ms, stderr, .. } => {
                let _ = writeln!(out, "FAILED after {elapsed_ms} ms");
                let _ = writeln!(out, "  the kubelet would log: {kubelet_log}");
                if !stderr.is_empty() && !kubelet_log.contains(stderr.as_str()) {
                    let _ = writeln!(out, "  stderr: {stderr}");
                }
            }
            ProviderOutcome::Answered {
                cache_key_type,
                kubelet_cache_key,
                kubelet_cache_seconds,
                elapsed_ms,
                stderr,
                response,
            } => {
                let _ = writeln!(
                    out,
                    "answered in {elapsed_ms} ms; cacheKeyType {cache_key_type}, {} under {kubelet_cache_key:?}; {} auth entr{}",
                    seconds(*kubelet_cache_seconds),
                    response.auth.len(),
                    if response.auth.len() == 1 { "y" } else { "ies" }
                );
                for line in stderr.lines() {
                    let _ = writeln!(out, "  stderr: {line}");
                }
            }
        }
    }
    let _ = writeln!(out, "\ncredentials the kubelet would try, in order:");
    if simulation.credentials.is_empty() {
        let _ = writeln!(out, "  none: the pull would go without credentials");
    }
    for (index, credential) in simulation.credentials.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {}. {} from {}: username {:?}, password {} ({})",
            index + 1,
            credential.auth_key,
            credential.provider,
            credential.username,
            credential.password,
            seconds(credential.kubelet_cache_seconds)
        );
    }
    out
}

/// The simulation as JSON.
pub fn simulation_json(simulation: &Simulation) -> String {
    let mut value = serde_json::to_value(simulation).unwrap_or_default();
    value["succeeded"] = simulation.succeeded().into();
    let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
    text.push('\n');
    text
}
