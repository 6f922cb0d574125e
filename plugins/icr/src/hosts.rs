//! Which hosts are IBM Cloud Container Registry registries.
//!
//! The global `icr.io`, the regional `<region>.icr.io`, their `private.`
//! variants (reached over IBM Cloud's private network), and the deprecated
//! `registry.<region>.bluemix.net` names. Not `cp.icr.io`: IBM's entitled
//! software registry takes an entitlement key, not an IAM token.

/// The regional prefixes of `<region>.icr.io`.
pub const REGIONS: &[&str] = &["us", "uk", "de", "au", "br", "ca", "ca2", "es", "fr2", "in", "in2", "jp", "jp2"];

/// The regions of the deprecated `registry.<region>.bluemix.net` hosts.
const BLUEMIX_REGIONS: &[&str] = &["ng", "eu-gb", "eu-de", "au-syd", "jp-tok", "jp-osa", "br-sao", "ca-tor"];

/// What the plugin says when a host is not ICR.
pub const EXPECTED: &str = "expected icr.io, <region>.icr.io (us, uk, de, au, br, ca, ca2, es, fr2, in, in2, jp, jp2), their private. variants, or registry.<region>.bluemix.net; cp.icr.io takes an entitlement key, not this plugin";

/// An ICR registry, as its host names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcrRegistry {
    /// Reached over the private network (and so through private IAM by default).
    pub private: bool,
}

impl IcrRegistry {
    /// Recognizes an ICR host (lower-case, without a port).
    pub fn from_host(host: &str) -> Option<IcrRegistry> {
        let (private, rest) = match host.strip_prefix("private.") {
            Some(rest) => (true, rest),
            None => (false, host),
        };
        let served = rest == "icr.io"
            || rest.strip_suffix(".icr.io").is_some_and(|region| REGIONS.contains(&region))
            || rest
                .strip_prefix("registry.")
                .and_then(|r| r.strip_suffix(".bluemix.net"))
                .is_some_and(|region| BLUEMIX_REGIONS.contains(&region))
            || rest == "registry.bluemix.net";
        served.then_some(IcrRegistry { private })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_icr_hosts_only() {
        for host in [
            "icr.io",
            "us.icr.io",
            "jp2.icr.io",
            "ca2.icr.io",
            "private.icr.io",
            "private.de.icr.io",
            "registry.ng.bluemix.net",
            "registry.eu-gb.bluemix.net",
            "registry.bluemix.net",
        ] {
            assert!(IcrRegistry::from_host(host).is_some(), "{host}");
        }
        assert_eq!(IcrRegistry::from_host("private.us.icr.io"), Some(IcrRegistry { private: true }));
        for host in [
            "cp.icr.io",
            "xx.icr.io",
            "icr.io.evil.com",
            "evil-icr.io",
            "private.cp.icr.io",
            "private.private.icr.io",
            "registry.mars.bluemix.net",
            "bluemix.net",
        ] {
            assert!(IcrRegistry::from_host(host).is_none(), "{host}");
        }
    }
}
