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

/// The Artifact Registry repository that serves an image, as IAM names it
/// (`//artifactregistry.googleapis.com/projects/P/locations/L/repositories/R`):
/// `<location>-docker.pkg.dev/P/R/…` and `docker.<location>.rep.pkg.dev/P/R/…`,
/// and Container Registry's hosts, which Artifact Registry serves from its
/// `gcr.io` repositories (`gcr.io/P/…` is `locations/us/repositories/gcr.io`).
/// A domain-scoped project (`example.com:p`) is written `example.com/p` in
/// a gcr.io path. `None` for a path that names no repository.
pub fn repository_resource(host: &str, path: &str) -> Option<String> {
    let mut segments = path.split('/');
    let (project, location, repository) = match host {
        "gcr.io" | "us.gcr.io" | "eu.gcr.io" | "asia.gcr.io" => {
            let first = segments.next()?;
            let project = match first.contains('.') {
                true => format!("{first}:{}", segments.next()?),
                false => first.to_string(),
            };
            let location = match host {
                "eu.gcr.io" => "europe",
                "asia.gcr.io" => "asia",
                _ => "us",
            };
            (project, location.to_string(), host.to_string())
        }
        _ => {
            let first = host.strip_suffix(".pkg.dev")?;
            let location = first
                .strip_suffix("-docker")
                .or_else(|| first.strip_prefix("docker.").and_then(|rest| rest.strip_suffix(".rep")))?;
            let (project, repository) = (segments.next()?, segments.next()?);
            (project.to_string(), location.to_string(), repository.to_string())
        }
    };
    (!project.is_empty() && !repository.is_empty()).then(|| {
        format!("//artifactregistry.googleapis.com/projects/{project}/locations/{location}/repositories/{repository}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_as_iam_names_them() {
        let resource = |host, path| repository_resource(host, path);
        let name = |p: &str, l: &str, r: &str| {
            Some(format!("//artifactregistry.googleapis.com/projects/{p}/locations/{l}/repositories/{r}"))
        };
        assert_eq!(resource("us-docker.pkg.dev", "proj/images/app"), name("proj", "us", "images"));
        assert_eq!(resource("europe-west1-docker.pkg.dev", "proj/r/a/b"), name("proj", "europe-west1", "r"));
        assert_eq!(resource("docker.us-central1.rep.pkg.dev", "proj/r/a"), name("proj", "us-central1", "r"));
        assert_eq!(resource("gcr.io", "proj/app"), name("proj", "us", "gcr.io"));
        assert_eq!(resource("eu.gcr.io", "proj/app"), name("proj", "europe", "eu.gcr.io"));
        assert_eq!(resource("gcr.io", "example.com/proj/app"), name("example.com:proj", "us", "gcr.io"));
        assert_eq!(resource("us-docker.pkg.dev", "proj"), None);
        assert_eq!(resource("container.cloud.google.com", "x/y"), None);
        assert_eq!(resource("marketplace.gcr.io", "x/y"), None);
    }

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
