//! Which hosts are Google registries.
//!
//! Container Registry: `gcr.io` and its regional hosts (`us.gcr.io`,
//! `eu.gcr.io`, `asia.gcr.io`, `marketplace.gcr.io`…). Artifact Registry:
//! `<location>-docker.pkg.dev` and the regional endpoints
//! `docker.<location>.rep.pkg.dev`. And `container.cloud.google.com`. The whole
//! host must match, so that a Google token is never sent to a lookalike.

use credential_provider::image::is_dns_label;

/// What the plugin says when a host is not a Google registry.
pub const EXPECTED: &str = "expected gcr.io, <region>.gcr.io, <location>-docker.pkg.dev, docker.<location>.rep.pkg.dev or container.cloud.google.com";

/// Whether `host` (lower-case, without a port) is a Google registry.
pub fn is_google_registry(host: &str) -> bool {
    if host == "gcr.io" || host == "container.cloud.google.com" {
        return true;
    }
    if let Some(region) = host.strip_suffix(".gcr.io") {
        return is_dns_label(region);
    }
    if let Some(first) = host.strip_suffix(".pkg.dev") {
        if let Some(location) = first.strip_suffix("-docker") {
            return is_dns_label(first) && !location.is_empty();
        }
        if let Some(location) = first.strip_prefix("docker.").and_then(|rest| rest.strip_suffix(".rep")) {
            return is_dns_label(location);
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_google_registries_only() {
        for host in [
            "gcr.io",
            "us.gcr.io",
            "eu.gcr.io",
            "asia.gcr.io",
            "marketplace.gcr.io",
            "us-docker.pkg.dev",
            "europe-west4-docker.pkg.dev",
            "docker.us-central1.rep.pkg.dev",
            "docker.europe-west1.rep.pkg.dev",
            "container.cloud.google.com",
        ] {
            assert!(is_google_registry(host), "{host}");
        }
        for host in [
            "evil.io",
            "gcr.io.evil.io",
            "evilgcr.io",
            "a.b.gcr.io",
            "-us.gcr.io",
            ".gcr.io",
            "pkg.dev",
            "docker.pkg.dev",
            "-docker.pkg.dev",
            "us-python.pkg.dev",
            "us-docker.pkg.dev.evil.io",
            "docker.rep.pkg.dev",
            "docker.a.b.rep.pkg.dev",
            "docker.us-central1.rep.pkg.dev.evil.io",
            "cloud.google.com",
            "x.container.cloud.google.com",
        ] {
            assert!(!is_google_registry(host), "{host}");
        }
    }
}
