//! Google's token calls that this plugin makes itself: the Security Token
//! Service exchange (workload identity, KEP-4412 and `external_account`
//! files), IAM Credentials impersonation, and the OAuth refresh-token grant
//! of authorized-user files.

use credential_provider::cache::unix_now;
use credential_provider::endpoints::validate_url;
use credential_provider::http::Http;
use credential_provider::{Error, Secret};
use serde::Deserialize;

/// The scope every token is asked for: it covers reading from registries.
pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Google STS's token endpoint.
pub const STS_URL: &str = "https://sts.googleapis.com/v1/token";
/// IAM Credentials' base URL.
pub const IAM_CREDENTIALS_URL: &str = "https://iamcredentials.googleapis.com";
/// Google OAuth's token endpoint, for files that do not name one.
pub const OAUTH_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

/// An OAuth access token and when it expires.
#[derive(Clone, Debug)]
pub struct AccessToken {
    pub token: Secret,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
}

/// The subject token types STS takes from us.
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// The answer of STS and of the OAuth token endpoint.
#[derive(Deserialize)]
struct OAuthAnswer {
    access_token: Secret,
    expires_in: Option<i64>,
}

impl OAuthAnswer {
    fn into_token(self, service: &str) -> Result<AccessToken, Error> {
        let expires_in =
            self.expires_in.ok_or_else(|| Error::cloud(service, "the answer gives no expires_in for its token"))?;
        Ok(AccessToken { token: self.access_token, expires_at: unix_now().saturating_add_signed(expires_in) })
    }
}

/// Trades `subject_token` at STS (`url`) for a federated access token for
/// `audience` (RFC 8693).
pub async fn exchange(
    http: &Http,
    url: &str,
    audience: &str,
    subject_token: &Secret,
    subject_token_type: &str,
) -> Result<AccessToken, Error> {
    const SERVICE: &str = "sts.googleapis.com token exchange";
    validate_url("the STS token URL", url)?;
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
        ("audience", audience),
        ("scope", CLOUD_PLATFORM),
        ("requested_token_type", "urn:ietf:params:oauth:token-type:access_token"),
        ("subject_token", subject_token.expose()),
        ("subject_token_type", subject_token_type),
    ];
    let reply = http.send(SERVICE, http.post(url).form(&form)).await?;
    if !reply.is_success() {
        let hint = format!("does the workload identity provider of audience {audience} trust this token's issuer?");
        return Err(reply.error(SERVICE).bad_request_as_denial().with_denial_hint(&hint));
    }
    reply.json::<OAuthAnswer>(SERVICE)?.into_token(SERVICE)
}

/// The IAM Credentials URL that makes a token for `email`.
pub fn impersonation_url(base: &str, email: &str) -> String {
    format!("{base}/v1/projects/-/serviceAccounts/{email}:generateAccessToken")
}

/// Trades a federated token for `email`'s access token at `url`
/// (IAM Credentials `generateAccessToken`).
pub async fn impersonate(http: &Http, url: &str, email: &str, federated: &AccessToken) -> Result<AccessToken, Error> {
    const SERVICE: &str = "iamcredentials.googleapis.com generateAccessToken";
    validate_url("the impersonation URL", url)?;
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Answer {
        access_token: Secret,
        expire_time: String,
    }
    let body = serde_json::json!({ "scope": [CLOUD_PLATFORM], "lifetime": "3600s" });
    let request = http.post(url).bearer_auth(federated.token.expose()).json(&body);
    let reply = http.send(SERVICE, request).await?;
    if !reply.is_success() {
        let hint = format!("does the identity hold roles/iam.workloadIdentityUser on {email}?");
        return Err(reply.error(SERVICE).bad_request_as_denial().with_denial_hint(&hint));
    }
    let answer: Answer = reply.json(SERVICE)?;
    let expires = humantime::parse_rfc3339_weak(&answer.expire_time)
        .map_err(|_| Error::cloud(SERVICE, format!("expireTime {:?} is not an RFC 3339 time", answer.expire_time)))?;
    let expires_at = expires.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Ok(AccessToken { token: answer.access_token, expires_at })
}

/// An authorized-user file's refresh token traded for an access token.
pub async fn refresh(
    http: &Http,
    url: &str,
    client_id: &str,
    client_secret: &Secret,
    refresh_token: &Secret,
) -> Result<AccessToken, Error> {
    const SERVICE: &str = "Google OAuth refresh";
    validate_url("the token_uri", url)?;
    let form = [
        ("grant_type", "refresh_token"),
        ("client_id", client_id),
        ("client_secret", client_secret.expose()),
        ("refresh_token", refresh_token.expose()),
    ];
    let reply = http.send(SERVICE, http.post(url).form(&form)).await?;
    let answer: OAuthAnswer = reply.success_json(SERVICE)?;
    answer.into_token(SERVICE)
}
