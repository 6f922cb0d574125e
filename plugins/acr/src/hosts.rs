//! Which hosts are Azure Container Registry login servers.
//!
//! `<name>.azurecr.io` and the sovereign suffixes `azurecr.us`, `azurecr.cn`
//! and the retired `azurecr.de`. The name may carry a domain-name-label hash
//! (`name-hash.azurecr.io`), and a geo-replica is addressed as
//! `<name>.<region>.geo.azurecr.io`. The whole host must match: a lookalike
//! such as `x.azurecr.io.evil.com` never receives a token.

use credential_provider::image::is_dns_label;

/// The login-server suffixes, one per cloud.
pub const SUFFIXES: &[&str] = &["azurecr.io", "azurecr.us", "azurecr.cn", "azurecr.de"];

/// What the plugin says when a host is not ACR.
pub const EXPECTED: &str = "expected <registry>.azurecr.io (or .azurecr.us, .azurecr.cn, .azurecr.de), <registry>-<hash>.azurecr.io or <registry>.<region>.geo.azurecr.io";

/// Whether `host` (lower-case, without a port) is an ACR login server.
pub fn is_acr_host(host: &str) -> bool {
    let Some(rest) = SUFFIXES.iter().find_map(|suffix| host.strip_suffix(suffix)?.strip_suffix('.')) else {
        return false;
    };
    let labels: Vec<&str> = rest.split('.').collect();
    match labels.as_slice() {
        [name] => is_dns_label(name),
        [name, region, "geo"] => is_dns_label(name) && is_dns_label(region),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_acr_login_servers_only() {
        for host in [
            "myregistry.azurecr.io",
            "myregistry.azurecr.us",
            "myregistry.azurecr.cn",
            "myregistry.azurecr.de",
            "myregistry-abcdefgh.azurecr.io",
            "myregistry.eastus.geo.azurecr.io",
            "myregistry.westeurope.geo.azurecr.cn",
        ] {
            assert!(is_acr_host(host), "{host}");
        }
        for host in [
            "azurecr.io",
            ".azurecr.io",
            "x.azurecr.io.evil.com",
            "evil.com",
            "xazurecr.io",
            "a.b.azurecr.io",
            "myregistry.eastus.data.azurecr.io",
            "myregistry..geo.azurecr.io",
            "-x.azurecr.io",
            "x.azurecr.com",
            "mcr.microsoft.com",
        ] {
            assert!(!is_acr_host(host), "{host}");
        }
    }
}
