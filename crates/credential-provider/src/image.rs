//! Image references: what the kubelet sends and what a person types.
//!
//! The kubelet sends its normalized repository name with no tag or digest
//! (`nginx:1.25` arrives as `docker.io/library/nginx`), but a person testing a
//! plugin with `--image` will paste tags and digests. Both are accepted; the
//! grammar is Docker's reference grammar, strict enough that a lookalike such
//! as `x.azurecr.io@evil` or a path with `..` is refused rather than guessed at.

use std::fmt;

/// The longest reference accepted; Docker's own limit on a name is 255, and
/// anything much longer is an attack or an accident.
const MAX_REFERENCE_LEN: usize = 1024;

/// The registry that names without a host belong to.
pub const DOCKER_HUB: &str = "docker.io";

/// Why an image reference was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct ImageError {
    /// The reference, with any control characters escaped by `Debug`.
    pub reference: String,
    pub reason: &'static str,
}

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry host, lower-cased.
    pub host: String,
    pub port: Option<u16>,
    /// The repository path inside the registry, without a leading slash.
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses an image reference, normalized or as a person would type it.
    pub fn parse(reference: &str) -> Result<ImageRef, ImageError> {
        let fail = |reason| ImageError { reference: truncate(reference), reason };
        if reference.is_empty() {
            return Err(fail("it is empty"));
        }
        if reference.len() > MAX_REFERENCE_LEN {
            return Err(fail("it is too long"));
        }
        if reference.chars().any(|c| !c.is_ascii_graphic()) {
            return Err(fail("it contains spaces, control or non-ASCII characters"));
        }
        if reference.contains("://") {
            return Err(fail("an image reference has no scheme; drop the https:// prefix"));
        }

        let (name, digest) = match reference.split_once('@') {
            Some((name, digest)) => {
                if !valid_digest(digest) {
                    return Err(fail("the part after '@' is not a digest such as sha256:<64 hex>"));
                }
                (name, Some(digest.to_string()))
            }
            None => (reference, None),
        };

        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &name[last_slash + i + 1..];
                if !valid_tag(tag) {
                    return Err(fail("the tag is not valid"));
                }
                (&name[..last_slash + i], Some(tag.to_string()))
            }
            None => (name, None),
        };

        let (authority, path) = match name.split_once('/') {
            Some((first, rest)) if looks_like_host(first) => (first, rest.to_string()),
            _ => {
                // No host: Docker Hub, where one-word names live under library/.
                if name.contains('/') {
                    (DOCKER_HUB, name.to_string())
                } else {
                    (DOCKER_HUB, format!("library/{name}"))
                }
            }
        };

        let (host, port) = split_port(authority).ok_or_else(|| fail("the port is not a number from 1 to 65535"))?;
        let host = host.to_ascii_lowercase();
        if !valid_host(&host) {
            return Err(fail("the registry host is not a valid DNS name"));
        }
        // index.docker.io is Docker Hub's old name; the kubelet treats both alike.
        let host = if host == "index.docker.io" && port.is_none() { DOCKER_HUB.to_string() } else { host };
        if path.is_empty() {
            return Err(fail("it names a registry but no repository"));
        }
        if !path.split('/').all(valid_path_component) {
            return Err(fail(
                "each path component must be lower-case letters, digits and single separators (. _ -), with no empty or '..' parts",
            ));
        }
        let image = ImageRef { host, port, path, tag, digest };
        // The limit holds for the normalized form too, the one the kubelet
        // sends: `name` must not parse if `docker.io/library/name` would not.
        if image.to_string().len() > MAX_REFERENCE_LEN {
            return Err(fail("it is too long once normalized"));
        }
        Ok(image)
    }

    /// The registry, as the kubelet names it in auth keys: `host[:port]`.
    pub fn registry(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.clone(),
        }
    }

    /// The normalized repository name, as the kubelet would send it.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.registry(), self.path)
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.repository())?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// One lower-case DNS label: letters, digits and inner hyphens, at most 63.
/// The plugins recognize their registries' hosts label by label with it.
pub fn is_dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

fn truncate(reference: &str) -> String {
    reference.chars().take(200).collect()
}

/// Docker's rule: the first component is a host when it has a dot or a port,
/// or is `localhost`.
fn looks_like_host(first: &str) -> bool {
    first.contains('.') || first.contains(':') || first == "localhost"
}

fn split_port(authority: &str) -> Option<(&str, Option<u16>)> {
    match authority.split_once(':') {
        None => Some((authority, None)),
        Some((host, port)) => {
            if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            match port.parse::<u16>() {
                Ok(0) | Err(_) => None,
                Ok(port) => Some((host, Some(port))),
            }
        }
    }
}

fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn valid_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    // Separators are '.', '_', '__' or runs of '-', always between alphanumerics.
    let mut previous_separator: Option<u8> = None;
    for &b in bytes {
        if alnum(b) {
            previous_separator = None;
            continue;
        }
        match (b, previous_separator) {
            (b'.' | b'_' | b'-', None) => previous_separator = Some(b),
            (b'_', Some(b'_')) => previous_separator = Some(0), // "__", and no third
            (b'-', Some(b'-')) => {}
            _ => return false,
        }
    }
    true
}

fn valid_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

fn valid_digest(digest: &str) -> bool {
    let Some((algorithm, encoded)) = digest.split_once(':') else {
        return false;
    };
    !algorithm.is_empty()
        && algorithm.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
        && encoded.len() >= 32
        && encoded.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the image_parse fuzz target: a short name under the limit
    /// whose Docker Hub form is over it parsed, and its own printing did not.
    #[test]
    fn what_parses_prints_back_to_something_that_parses() {
        let name = format!("{}:2", "z6".repeat(505));
        assert!(name.len() <= MAX_REFERENCE_LEN);
        assert!(ImageRef::parse(&name).is_err(), "docker.io/library/{name} is over the limit");
        let fits = format!("{}:2", "z".repeat(MAX_REFERENCE_LEN - "docker.io/library/:2".len()));
        let image = ImageRef::parse(&fits).expect("at the limit");
        assert_eq!(ImageRef::parse(&image.to_string()), Ok(image));
    }

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parsed(reference: &str) -> (String, Option<String>, Option<String>) {
        let image = ImageRef::parse(reference).unwrap_or_else(|e| panic!("{reference}: {e}"));
        (image.repository(), image.tag, image.digest)
    }

    #[test]
    fn normalizes_like_docker() {
        assert_eq!(parsed("nginx").0, "docker.io/library/nginx");
        assert_eq!(parsed("nginx:1.25"), ("docker.io/library/nginx".into(), Some("1.25".into()), None));
        assert_eq!(parsed("bitnami/redis").0, "docker.io/bitnami/redis");
        assert_eq!(parsed("index.docker.io/library/nginx").0, "docker.io/library/nginx");
        assert_eq!(parsed("localhost/app").0, "localhost/app");
        assert_eq!(parsed("localhost:5000/app:v1").1.as_deref(), Some("v1"));
        assert_eq!(
            parsed("123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app"),
            ("123456789012.dkr.ecr.us-east-1.amazonaws.com/team/app".into(), None, None)
        );
        let with_digest = format!("Registry.Example.com:5000/a/b:tag@{DIGEST}");
        assert_eq!(
            parsed(&with_digest),
            ("registry.example.com:5000/a/b".into(), Some("tag".into()), Some(DIGEST.into()))
        );
    }

    #[test]
    fn registry_keeps_the_port() {
        let image = ImageRef::parse("r.example:5000/a").expect("parses");
        assert_eq!(image.registry(), "r.example:5000");
        assert_eq!(image.port, Some(5000));
    }

    #[test]
    fn refuses_hostile_and_malformed_references() {
        for bad in [
            "",
            " nginx",
            "ngi nx",
            "nginx\n",
            "a.example/b\u{7}",
            "a.example/é",
            "https://a.example/b",
            "x.azurecr.io@evil",
            "x.azurecr.io/repo@sha256:short",
            "a.example/../etc",
            "a.example/a/./b",
            "a.example/a//b",
            "a.example/UPPER",
            "a.example/-lead",
            "a.example/trail_",
            "a.example/a___b",
            "a.example:99999/b",
            "a.example:0/b",
            "a.example:/b",
            "a..example/b",
            "-a.example/b",
            "a.example/",
            "a.example/b:",
            "a.example/b:-bad",
        ] {
            let err = ImageRef::parse(bad).expect_err(bad);
            assert!(!err.to_string().contains('\n'), "one line for {bad:?}");
        }
        assert!(ImageRef::parse(&"a".repeat(2000)).is_err());
    }
}
