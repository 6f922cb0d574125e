//! AKS identity bindings: on a cluster with service-account image pull, the
//! pod's service-account token is exchanged for an Entra token of the
//! application the service account names, at a token endpoint the cluster's
//! API server serves under a name of its own (`--ib-sni-name`), reached at
//! the API server's address (`--ib-apiserver-ip`), trusting the cluster's CA.
//!
//! The flags and their rules are upstream's (`acr-credential-provider`'s
//! `--ib-*`), so AgentBaker's config works unchanged. The call never goes
//! through a proxy (none could reach the API server's private address), and
//! its answer is capped like every other.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use credential_provider::http::Http;
use credential_provider::{Error, Secret};
use serde::Deserialize;

use crate::identity::EntraToken;

/// Where the cluster's CA is on an AKS node.
pub const CLUSTER_CA_FILE: &str = "/etc/kubernetes/certs/ca.crt";

/// The identity-binding settings of the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityBindings {
    /// The token endpoint's TLS name: the endpoint is `https://<sni_name>`.
    pub sni_name: String,
    /// The API server: an IP address, or a name resolved when a token is needed.
    pub apiserver: String,
    /// The application of a service account that names none.
    pub default_client_id: Option<String>,
    /// The tenant of a service account that names none.
    pub default_tenant_id: Option<String>,
    /// The cluster's CA certificates (PEM).
    pub ca_file: PathBuf,
}

impl IdentityBindings {
    /// The settings from upstream's four flags, by upstream's rules: the SNI
    /// name carries no scheme and needs the API server's address; each of the
    /// others needs the SNI name. `None` when no flag is given.
    pub fn from_flags(
        sni_name: Option<&str>,
        default_client_id: Option<&str>,
        default_tenant_id: Option<&str>,
        apiserver: Option<&str>,
        ca_file: PathBuf,
    ) -> Result<Option<IdentityBindings>, Error> {
        let given = |value: Option<&str>| value.map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
        let (sni_name, client, tenant, apiserver) =
            (given(sni_name), given(default_client_id), given(default_tenant_id), given(apiserver));
        let usage = |message: String| Err(Error::Usage(message));
        let Some(sni_name) = sni_name else {
            for (flag, value) in [
                ("--ib-default-client-id", &client),
                ("--ib-default-tenant-id", &tenant),
                ("--ib-apiserver-ip", &apiserver),
            ] {
                if value.is_some() {
                    return usage(format!("--ib-sni-name must be set when {flag} is"));
                }
            }
            return Ok(None);
        };
        if sni_name.starts_with("https://") || sni_name.starts_with("http://") {
            return usage(format!("--ib-sni-name must not carry a scheme (https:// or http://), got {sni_name:?}"));
        }
        if !is_host_name(&sni_name) {
            return usage(format!("--ib-sni-name {sni_name:?} is not a host name"));
        }
        let Some(apiserver) = apiserver else {
            return usage("--ib-apiserver-ip must be set when --ib-sni-name is".into());
        };
        if apiserver.parse::<IpAddr>().is_err() && !is_host_name(&apiserver) {
            return usage(format!("--ib-apiserver-ip {apiserver:?} is neither an IP address nor a host name"));
        }
        for (flag, id) in [("--ib-default-client-id", &client), ("--ib-default-tenant-id", &tenant)] {
            if let Some(id) = id {
                crate::validate_id(flag, id).map_err(|e| Error::Usage(e.to_string()))?;
            }
        }
        Ok(Some(IdentityBindings {
            sni_name,
            apiserver,
            default_client_id: client,
            default_tenant_id: tenant,
            ca_file,
        }))
    }

    /// The Entra token of `client_id` for `scope`, for the service-account
    /// token `assertion` (a client-credentials grant with the token as a
    /// JWT-bearer client assertion).
    pub async fn token(&self, client_id: &str, assertion: &Secret, scope: &str) -> Result<EntraToken, Error> {
        let service = format!("AKS identity binding at {}", self.sni_name);
        let roots = std::fs::read(&self.ca_file)
            .map_err(|e| Error::Config(format!("cannot read the cluster's CA {}: {e}", self.ca_file.display())))?;
        let http = Http::pinned(&self.sni_name, self.address(&service).await?, &roots)?;
        let form = [
            ("grant_type", "client_credentials"),
            ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            ("scope", scope),
            ("client_assertion", assertion.expose()),
            ("client_id", client_id),
        ];
        let url = format!("https://{}", self.sni_name);
        let reply = http.send(&service, http.post(&url).form(&form)).await?;
        #[derive(Deserialize)]
        struct Answer {
            access_token: Secret,
            expires_in: u64,
        }
        let answer: Answer = reply.success_json(&service).map_err(|e| {
            e.bad_request_as_denial().with_denial_hint(&format!(
                "is client {client_id} bound to this service account (an identity binding)?"
            ))
        })?;
        let expires_at = credential_provider::clock::unix_now().saturating_add(answer.expires_in);
        Ok(EntraToken { token: answer.access_token, expires_at })
    }

    /// The API server's address, port 443: the IP given, or the first address
    /// its name resolves to.
    async fn address(&self, service: &str) -> Result<SocketAddr, Error> {
        if let Ok(ip) = self.apiserver.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, 443));
        }
        let mut addresses = tokio::net::lookup_host((self.apiserver.as_str(), 443))
            .await
            .map_err(|e| Error::cloud(service, format!("cannot resolve the API server {}: {e}", self.apiserver)))?;
        addresses
            .next()
            .ok_or_else(|| Error::cloud(service, format!("the API server {} resolves to no address", self.apiserver)))
    }
}

/// A DNS name: dot-separated labels of letters, digits and dashes.
fn is_host_name(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(credential_provider::image::is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(sni: Option<&str>, client: Option<&str>, tenant: Option<&str>, ip: Option<&str>) -> Result<bool, String> {
        IdentityBindings::from_flags(sni, client, tenant, ip, CLUSTER_CA_FILE.into())
            .map(|bindings| bindings.is_some())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn upstreams_rules_for_the_flags() {
        assert_eq!(flags(None, None, None, None), Ok(false));
        assert_eq!(flags(Some("ib.aks.example"), None, None, Some("10.0.0.1")), Ok(true));
        let client = "11111111-2222-3333-4444-555555555555";
        assert_eq!(flags(Some("ib.aks.example"), Some(client), Some(client), Some("api.aks.example")), Ok(true));
        for (sni, client, tenant, ip, says) in [
            (Some("https://ib.aks.example"), None, None, Some("10.0.0.1"), "must not carry a scheme"),
            (Some("ib.aks.example"), None, None, None, "--ib-apiserver-ip must be set"),
            (None, Some(client), None, None, "--ib-sni-name must be set when --ib-default-client-id"),
            (None, None, Some(client), None, "--ib-sni-name must be set when --ib-default-tenant-id"),
            (None, None, None, Some("10.0.0.1"), "--ib-sni-name must be set when --ib-apiserver-ip"),
            (Some("ib.aks.example"), None, None, Some("not an/address"), "neither an IP address"),
            (Some("ib.aks.example"), Some("x/y"), None, Some("10.0.0.1"), "is not a client or tenant id"),
        ] {
            let error = flags(sni, client, tenant, ip).expect_err(says);
            assert!(error.contains(says), "{error}");
        }
    }
}
