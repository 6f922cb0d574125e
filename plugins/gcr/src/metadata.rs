//! The GCE and GKE metadata server: the node's service-account token, its
//! email and scopes, the project id, and the instance attributes of the
//! dockercfg flows.
//!
//! Where it is: `GCE_METADATA_HOST` (Google's variable, `host[:port]` without a
//! scheme), else the endpoint named `metadata`, else `metadata.google.internal`.
//! It speaks plain HTTP on a link-local address, so its host must be one a
//! metadata server can live on, and the client never goes through a proxy.

use std::net::IpAddr;

use credential_provider::clock::unix_now;
use credential_provider::http::Http;
use credential_provider::{Endpoints, Error, Secret};
use serde::Deserialize;

use crate::token::AccessToken;

/// Google's variable naming the metadata server's `host[:port]`.
pub const HOST_VARIABLE: &str = "GCE_METADATA_HOST";
const DEFAULT_URL: &str = "http://metadata.google.internal";
const SERVICE: &str = "metadata server";

/// The metadata server's base URL, from the environment and the overrides.
pub fn base_url(endpoints: &Endpoints) -> Result<String, Error> {
    if let Some(host) = std::env::var(HOST_VARIABLE).ok().filter(|h| !h.trim().is_empty()) {
        let host = host.trim();
        if !is_metadata_host(host) {
            return Err(Error::Config(format!(
                "{HOST_VARIABLE}={host:?} is not a metadata server's host[:port] (a link-local or loopback address, or metadata.google.internal)"
            )));
        }
        return Ok(format!("http://{host}"));
    }
    Ok(endpoints.resolve("metadata", None, DEFAULT_URL))
}

/// Whether `authority` (`host[:port]`) can be a metadata server: it is reached
/// over plain HTTP, so only addresses that never leave the machine or the
/// hypervisor qualify.
fn is_metadata_host(authority: &str) -> bool {
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') || host.ends_with(']') => {
            if port.parse::<u16>().is_err() {
                return false;
            }
            host
        }
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback() || ip.is_link_local(),
        Ok(IpAddr::V6(ip)) => ip.is_loopback() || ip.is_unicast_link_local(),
        Err(_) => matches!(host, "metadata.google.internal" | "metadata.google.internal." | "metadata" | "localhost"),
    }
}

/// A client for one metadata server.
#[derive(Debug)]
pub struct MetadataServer {
    http: Http,
    base: String,
}

impl MetadataServer {
    pub fn new(base: String) -> Result<MetadataServer, Error> {
        Ok(MetadataServer { http: Http::new()?, base })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /computeMetadata/v1/<path>` with `Metadata-Flavor: Google`; `None` on 404.
    async fn get(&self, path: &str) -> Result<Option<String>, Error> {
        let url = format!("{}/computeMetadata/v1/{path}", self.base);
        let reply = self.http.send(SERVICE, self.http.get(&url).header("Metadata-Flavor", "Google")).await?;
        if reply.status.as_u16() == 404 {
            return Ok(None);
        }
        if !reply.is_success() {
            return Err(reply.error(SERVICE));
        }
        String::from_utf8(reply.body).map(Some).map_err(|_| Error::cloud(SERVICE, format!("{path} is not text")))
    }

    async fn require(&self, path: &str) -> Result<String, Error> {
        self.get(path).await?.ok_or_else(|| {
            Error::cloud(SERVICE, format!("{path} does not exist (is this a GCE or GKE node with a service account?)"))
        })
    }

    /// The default service account's access token.
    pub async fn token(&self) -> Result<AccessToken, Error> {
        #[derive(Deserialize)]
        struct TokenAnswer {
            access_token: Secret,
            expires_in: i64,
        }
        let text = self.require("instance/service-accounts/default/token").await?;
        let answer: TokenAnswer = serde_json::from_str(&text)
            .map_err(|e| Error::cloud(SERVICE, format!("the token answer is not what the API documents: {e}")))?;
        Ok(AccessToken { token: answer.access_token, expires_at: unix_now().saturating_add_signed(answer.expires_in) })
    }

    /// The default service account's email.
    pub async fn email(&self) -> Result<String, Error> {
        Ok(self.require("instance/service-accounts/default/email").await?.trim().to_string())
    }

    /// The default service account's OAuth scopes.
    pub async fn scopes(&self) -> Result<Vec<String>, Error> {
        let text = self.require("instance/service-accounts/default/scopes").await?;
        Ok(text.lines().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect())
    }

    /// The project the node belongs to.
    pub async fn project_id(&self) -> Result<String, Error> {
        Ok(self.require("project/project-id").await?.trim().to_string())
    }

    /// An instance attribute, if set.
    pub async fn attribute(&self, name: &str) -> Result<Option<String>, Error> {
        self.get(&format!("instance/attributes/{name}")).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_hosts() {
        for ok in [
            "169.254.169.254",
            "169.254.169.254:80",
            "169.254.169.252:988",
            "127.0.0.1:8080",
            "[::1]:80",
            "metadata.google.internal",
            "metadata.google.internal.",
            "metadata",
            "localhost:1234",
        ] {
            assert!(is_metadata_host(ok), "{ok}");
        }
        for bad in [
            "10.0.0.1",
            "example.com",
            "metadata.google.internal.evil.io",
            "127.0.0.1:x",
            "http://127.0.0.1",
            "8.8.8.8:80",
        ] {
            assert!(!is_metadata_host(bad), "{bad}");
        }
    }
}
