//! Google's token calls that this plugin makes itself: the Security Token
//! Service exchange (workload identity, KEP-4412 and `external_account`
//! files), IAM Credentials impersonation, and the OAuth refresh-token grant
//! of authorized-user files.

use credential_provider::clock::unix_now;
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
    let hint = format!("does the workload identity provider of audience {audience} trust this token's issuer?");
    grant(http, SERVICE, url, &form, &hint).await
}

/// Posts the grant `form` to `url` and reads the token answer. A refusal (an
/// OAuth 400 included) is a denial, said with `hint`.
async fn grant(http: &Http, service: &str, url: &str, form: &[(&str, &str)], hint: &str) -> Result<AccessToken, Error> {
    let reply = http.send(service, http.post(url).form(form)).await?;
    if !reply.is_success() {
        return Err(reply.error(service).bad_request_as_denial().with_denial_hint(hint));
    }
    reply.json::<OAuthAnswer>(service)?.into_token(service)
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

/// A service-account key's own grant: a JWT assertion signed with the key
/// (RS256), traded at the key file's `token_uri` (RFC 7523). Done here, on
/// the core's client, so that it honours the node's proxy, the cap on
/// answers and the rule that a credential endpoint is https: the key's
/// assertion is a bearer credential for an hour.
pub async fn service_account_grant(
    http: &Http,
    token_uri: &str,
    client_email: &str,
    private_key: &Secret,
) -> Result<AccessToken, Error> {
    const SERVICE: &str = "Google OAuth (service account key)";
    validate_url("the key file's token_uri", token_uri)?;
    let assertion = signed_assertion(token_uri, client_email, private_key, unix_now())?;
    let form = [("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", assertion.expose())];
    let hint = format!("is the key of {client_email} still valid (not deleted or disabled)?");
    grant(http, SERVICE, token_uri, &form, &hint).await
}

/// The JWT a service account signs to ask `token_uri` for a cloud-platform
/// token, valid for an hour from `now` (Google's maximum).
fn signed_assertion(token_uri: &str, client_email: &str, private_key: &Secret, now: u64) -> Result<Secret, Error> {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
    use base64::Engine as _;
    use rustls_pki_types::PrivatePkcs8KeyDer;
    use rustls_pki_types::pem::PemObject as _;

    let unusable = |why: &str| Error::Config(format!("the key file of {client_email} {why}"));
    let der = PrivatePkcs8KeyDer::from_pem_slice(private_key.expose().as_bytes())
        .map_err(|_| unusable("has no PKCS#8 private_key in PEM"))?;
    let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).map_err(|_| unusable("holds no usable RSA key"))?;
    let encode = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let claims = serde_json::json!({
        "iss": client_email,
        "scope": CLOUD_PLATFORM,
        "aud": token_uri,
        "iat": now,
        "exp": now + 3600,
    });
    let signed = format!("{}.{}", encode(br#"{"alg":"RS256","typ":"JWT"}"#), encode(claims.to_string().as_bytes()));
    let mut signature = vec![0; key.public_modulus_len()];
    key.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), signed.as_bytes(), &mut signature)
        .map_err(|_| unusable("cannot sign"))?;
    Ok(Secret::new(format!("{signed}.{}", encode(&signature))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key made for this test only.
    fn test_key() -> Secret {
        use aws_lc_rs::encoding::AsDer as _;
        use base64::Engine as _;
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("key");
        let der = pair.as_der().expect("pkcs8");
        let body = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let lines: Vec<&str> =
            body.as_bytes().chunks(64).map(|line| std::str::from_utf8(line).expect("base64")).collect();
        Secret::new(format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n")))
    }

    #[test]
    fn assertions_carry_the_claims_google_reads() {
        let jwt =
            signed_assertion("https://oauth2.googleapis.com/token", "sa@p.iam.gserviceaccount.com", &test_key(), 1000)
                .expect("signed");
        let claims = credential_provider::jwt::unverified_claims(jwt.expose()).expect("claims");
        assert_eq!(claims["iss"], "sa@p.iam.gserviceaccount.com");
        assert_eq!(claims["aud"], "https://oauth2.googleapis.com/token");
        assert_eq!(claims["scope"], CLOUD_PLATFORM);
        assert_eq!((claims["iat"].as_u64(), claims["exp"].as_u64()), (Some(1000), Some(4600)));
        let error =
            signed_assertion("https://x/token", "sa@p", &Secret::new("not a key".into()), 0).expect_err("no key");
        assert!(error.to_string().contains("has no PKCS#8 private_key"), "{error}");
    }
}
