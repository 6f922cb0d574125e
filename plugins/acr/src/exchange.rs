//! ACR's token exchange: an Entra ID access token becomes an ACR refresh token
//! at the registry itself (`GET /v2/` for the challenge, then
//! `POST /oauth2/exchange` on the login server). The kubelet gets the refresh
//! token, never the Entra token and never a client secret.
//!
//! The Entra token goes to the login server and nowhere else, whatever realm
//! the challenge names: as upstream does, and so that a registry (or anyone
//! who can answer for it) cannot send the node's Entra token to another host.

use credential_provider::http::Http;
use credential_provider::registry::{Greeting, Registry};
use credential_provider::{Endpoints, Error, Secret, jwt};
use serde::Deserialize;

use crate::identity::EntraToken;

/// The username ACR expects with a refresh token.
pub const USERNAME: &str = "00000000-0000-0000-0000-000000000000";

/// An ACR refresh token and its expiry.
#[derive(Debug)]
pub struct RefreshToken {
    pub token: Secret,
    pub expires_at: u64,
}

/// Exchanges `entra` for a refresh token of the registry at `login_server`.
/// `tenant` is sent when known; otherwise the Entra token's own `tid` is.
pub async fn exchange(
    http: &Http,
    endpoints: &Endpoints,
    login_server: &str,
    tenant: Option<&str>,
    entra: &EntraToken,
) -> Result<RefreshToken, Error> {
    let service_name = format!("ACR exchange at {login_server}");
    let registry = Registry::new(http, endpoints, login_server);
    let challenge = match registry.greet().await? {
        Greeting::Challenge(challenge) if challenge.scheme == "bearer" => challenge,
        Greeting::Challenge(challenge) => {
            return Err(Error::cloud(
                service_name,
                format!("GET /v2/ asked for {} authentication, not an ACR bearer token", challenge.scheme),
            ));
        }
        Greeting::Open => {
            return Err(Error::cloud(service_name, "GET /v2/ needs no credential: is this an ACR registry?"));
        }
    };
    let url = registry.url("/oauth2/exchange");

    let token_tenant = jwt::unverified_claims(entra.token.expose())
        .and_then(|claims| claims.get("tid").and_then(|t| t.as_str()).map(str::to_string));
    let tenant = tenant.map(str::to_string).or(token_tenant);
    let service = challenge.param("service").unwrap_or(login_server);
    let mut form = vec![("grant_type", "access_token"), ("service", service), ("access_token", entra.token.expose())];
    if let Some(tenant) = &tenant {
        form.push(("tenant", tenant));
    }
    let reply = http.send(&service_name, http.post(&url).form(&form)).await?;
    #[derive(Deserialize)]
    struct Answer {
        refresh_token: Secret,
    }
    let answer: Answer = reply
        .success_json(&service_name)
        .map_err(|e| e.with_denial_hint(&format!("does the identity hold AcrPull on {login_server}?")))?;
    let expires_at = jwt::expiry(answer.refresh_token.expose()).ok_or_else(|| {
        Error::cloud(&service_name, "the refresh token carries no expiry (exp); it cannot be cached safely")
    })?;
    Ok(RefreshToken { token: answer.refresh_token, expires_at })
}
