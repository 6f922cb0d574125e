//! Instance principals: the instance's X.509 identity from the metadata
//! service (v2, `Authorization: Bearer Oracle`) traded at the realm's auth
//! service (`POST /v1/x509`, signed with the instance's own key) for a security
//! token bound to a fresh session key.

use std::sync::Arc;

use base64::Engine as _;
use credential_provider::http::Http;
use credential_provider::{Error, Secret, Session, jwt};
use reqwest::Url;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use serde::{Deserialize, Serialize};

use crate::keys::PrivateKey;
use crate::signer::{JSON, RequestSigner};

/// The metadata service.
pub const IMDS: &str = "http://169.254.169.254";
const SERVICE: &str = "OCI instance metadata";

/// What a federated principal signs with: the security token and its key.
#[derive(Debug)]
pub struct Federated {
    pub token: Secret,
    pub key: Arc<PrivateKey>,
    pub tenancy: String,
}

/// How a session is kept in the cache: the token, its key, and the tenancy.
#[derive(Serialize, Deserialize)]
struct Stored {
    token: String,
    key: String,
    tenancy: String,
}

impl Federated {
    /// The signer of requests made as this principal.
    pub fn signer(&self) -> RequestSigner {
        RequestSigner::new(format!("ST${}", self.token.expose()), self.key.clone())
    }

    pub fn to_session(&self, expires_at: u64) -> Result<Session, Error> {
        let stored = Stored {
            token: self.token.expose().to_string(),
            key: self.key.to_pkcs8_base64()?.expose().to_string(),
            tenancy: self.tenancy.clone(),
        };
        let secret = serde_json::to_string(&stored).map_err(|_| Error::Config("cannot store the session".into()))?;
        Ok(Session { secret: Secret::new(secret), expires_at })
    }

    pub fn from_session(session: &Session) -> Result<Federated, Error> {
        let stored: Stored = serde_json::from_str(session.secret.expose())
            .map_err(|_| Error::Config("the cached federation session is not readable".into()))?;
        Ok(Federated {
            token: Secret::new(stored.token),
            key: Arc::new(PrivateKey::from_pkcs8_base64(&stored.key)?),
            tenancy: stored.tenancy,
        })
    }
}

/// Where the instance lives, from `/opc/v2/instance/regionInfo`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegionInfo {
    realm_domain_component: String,
    region_identifier: String,
}

async fn imds_get(http: &Http, imds: &str, path: &str) -> Result<String, Error> {
    let request = http.get(&format!("{imds}/opc/v2/{path}")).header("Authorization", "Bearer Oracle");
    let reply = http.send(SERVICE, request).await?;
    reply.success_text(SERVICE).map_err(|e| e.with_cloud_context(|m| format!("{path}: {m} (is this an OCI instance?)")))
}

fn certificate(pem: &str, what: &str) -> Result<Vec<u8>, Error> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|der| der.as_ref().to_vec())
        .map_err(|_| Error::cloud(SERVICE, format!("the {what} certificate is not PEM")))
}

/// The tenancy in a leaf certificate's subject (`OU=opc-tenant:<ocid>`, or
/// `O=opc-identity:<ocid>` on older instances).
pub fn tenancy_of(certificate: &[u8]) -> Result<String, Error> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate)
        .map_err(|_| Error::cloud(SERVICE, "the instance certificate is not X.509"))?;
    let subject = parsed.subject();
    let values = subject.iter_organizational_unit().chain(subject.iter_organization());
    for value in values.filter_map(|attribute| attribute.as_str().ok()) {
        if let Some(tenancy) = value.strip_prefix("opc-tenant:").or_else(|| value.strip_prefix("opc-identity:")) {
            return Ok(tenancy.to_string());
        }
    }
    Err(Error::cloud(SERVICE, "the instance certificate names no tenancy (opc-tenant)"))
}

/// The SHA-1 fingerprint OCI names certificates by: `AA:BB:…`.
pub fn fingerprint(certificate: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, certificate);
    digest.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// Federates this instance: its certificates and key from the metadata
/// service, a new session key, and the auth service's security token.
pub async fn federate(http: &Http, imds: &str, auth: Option<&str>) -> Result<(Federated, u64), Error> {
    let leaf_pem = imds_get(http, imds, "identity/cert.pem").await?;
    let key_pem = Secret::new(imds_get(http, imds, "identity/key.pem").await?);
    let intermediate_pem = imds_get(http, imds, "identity/intermediate.pem").await?;
    let region: RegionInfo = serde_json::from_str(&imds_get(http, imds, "instance/regionInfo").await?)
        .map_err(|e| Error::cloud(SERVICE, format!("instance/regionInfo is not what the API documents: {e}")))?;

    let leaf = certificate(&leaf_pem, "instance")?;
    let intermediate = certificate(&intermediate_pem, "intermediate")?;
    let tenancy = tenancy_of(&leaf)?;
    let leaf_key = Arc::new(PrivateKey::from_pem(key_pem.expose(), None, "the metadata service's identity/key.pem")?);
    let session_key = Arc::new(PrivateKey::generate()?);

    let b64 = |der: &[u8]| base64::engine::general_purpose::STANDARD.encode(der);
    let body = serde_json::json!({
        "certificate": b64(&leaf),
        "publicKey": session_key.public_key_base64()?,
        "intermediateCertificates": [b64(&intermediate)],
    })
    .to_string();
    let base = match auth {
        Some(url) => url.to_string(),
        None => format!("https://auth.{}.{}", region.region_identifier, region.realm_domain_component),
    };
    const AUTH: &str = "OCI auth x509 federation";
    let url = Url::parse(&format!("{base}/v1/x509")).map_err(|_| Error::Config(format!("{base} is not a URL")))?;
    let signer = RequestSigner::new(format!("{tenancy}/fed-x509/{}", fingerprint(&leaf)), leaf_key);
    let mut request = http.post(url.as_str()).body(body.clone()).header("content-type", JSON);
    for (name, value) in signer.headers("POST", &url, Some(body.as_bytes()))? {
        if name != "content-type" {
            request = request.header(name, value);
        }
    }
    let reply = http.send(AUTH, request).await?;
    #[derive(Deserialize)]
    struct Answer {
        token: Secret,
    }
    let answer: Answer = reply
        .success_json(AUTH)
        .map_err(|e| e.with_denial_hint("is the instance in a dynamic group, and is its clock right?"))?;
    let expires_at = jwt::expiry(answer.token.expose())
        .ok_or_else(|| Error::cloud(AUTH, "the security token carries no expiry (exp)"))?;
    Ok((Federated { token: answer.token, key: session_key, tenancy }, expires_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_colon_separated_upper_hex() {
        let fingerprint = fingerprint(b"certificate");
        assert_eq!(fingerprint.len(), 20 * 3 - 1);
        assert!(fingerprint.bytes().all(|b| b == b':' || b.is_ascii_digit() || (b'A'..=b'F').contains(&b)));
    }
}
