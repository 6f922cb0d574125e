//! Which hosts are OCI Registry endpoints.
//!
//! `<region key>.ocir.io` (`iad`, `phx`, `fra`, … every region's three-letter
//! key, dedicated regions' included), and `ocir.<region id>.oci.<realm domain>`
//! (`ocir.us-ashburn-1.oci.oraclecloud.com`), which Oracle now recommends. The
//! whole host must match, so that a signed request never reaches a lookalike.

/// The realm domains of the `ocir.<region>.oci.<domain>` form, beside the
/// numbered realms' `oraclecloud<N>.com`.
pub const REALM_DOMAINS: &[&str] = &["oraclecloud.com", "oraclecloud.eu", "oraclegovcloud.com", "oraclegovcloud.uk"];

/// What the plugin says when a host is not OCIR.
pub const EXPECTED: &str = "expected <region key>.ocir.io (e.g. iad.ocir.io) or ocir.<region>.oci.<realm domain> (e.g. ocir.us-ashburn-1.oci.oraclecloud.com)";

/// Whether `host` (lower-case, without a port) is an OCIR endpoint.
pub fn is_ocir_host(host: &str) -> bool {
    if let Some(key) = host.strip_suffix(".ocir.io") {
        return key.len() == 3 && key.bytes().all(|b| b.is_ascii_lowercase());
    }
    let Some(rest) = host.strip_prefix("ocir.") else {
        return false;
    };
    let Some((region, domain)) = rest.split_once(".oci.") else {
        return false;
    };
    is_region_id(region) && (REALM_DOMAINS.contains(&domain) || is_numbered_realm(domain))
}

/// `us-ashburn-1`, `eu-frankfurt-2`, `us-gov-ashburn-1`: words, then a number.
fn is_region_id(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts.last().is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        && parts[..parts.len() - 1].iter().all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
}

/// The numbered realms' domains: `oraclecloud8.com`, `oraclecloud10.com`…
fn is_numbered_realm(domain: &str) -> bool {
    domain
        .strip_prefix("oraclecloud")
        .and_then(|rest| rest.strip_suffix(".com"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_ocir_hosts_only() {
        for host in [
            "iad.ocir.io",
            "phx.ocir.io",
            "fra.ocir.io",
            "lhr.ocir.io",
            "ocir.us-ashburn-1.oci.oraclecloud.com",
            "ocir.eu-frankfurt-1.oci.oraclecloud.com",
            "ocir.us-langley-1.oci.oraclegovcloud.com",
            "ocir.uk-gov-london-1.oci.oraclegovcloud.uk",
            "ocir.us-somewhere-1.oci.oraclecloud8.com",
        ] {
            assert!(is_ocir_host(host), "{host}");
        }
        for host in [
            "ocir.io",
            "iadx.ocir.io",
            "ia.ocir.io",
            "iad.ocir.io.evil.com",
            "evil.com",
            "x.iad.ocir.io",
            "ocir.us-ashburn-1.oci.oraclecloud.com.evil.com",
            "ocir.us-ashburn.oci.oraclecloud.com",
            "ocir.us-ashburn-1.oci.evil.com",
            "container-registry.oracle.com",
        ] {
            assert!(!is_ocir_host(host), "{host}");
        }
    }
}
