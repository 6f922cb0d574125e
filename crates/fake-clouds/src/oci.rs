//! A fake of the Oracle Cloud endpoints the OCIR plugin calls, on one loopback
//! port: the instance metadata service v2 (`/opc/v2/…`, which wants
//! `Authorization: Bearer Oracle`) and the auth service's X.509 federation
//! (`POST /v1/x509`). With [`FakeRegistry::start_ocir`](crate::FakeRegistry::start_ocir)
//! and [`FakeOci::signature_check`] a fake registry serves OCIR's signed
//! `GET /20180419/docker/token`.
//!
//! Every signed request is verified as OCI does: the signing string is rebuilt
//! from the request, the signature checked with the public key the key id
//! names (an API key, the instance certificate, or the session key bound to a
//! security token), the body digest and the date's skew checked too. A plugin
//! that signs wrongly fails its tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, SubjectPublicKeyInfoDer};

use crate::server::{FakeServer, Fault, apply_fault, fake_jwt, lock, nonce, unix_now};

/// The tenancy in the fake instance certificate.
pub const TENANCY: &str = "ocid1.tenancy.oc1..faketenancy";
/// The fake user of [`FakeOci::user_config`].
pub const USER: &str = "ocid1.user.oc1..fakeuser";
/// The fingerprint the fake user's API key is registered under.
pub const USER_FINGERPRINT: &str = "12:34:56:78:9a:bc:de:f0:12:34:56:78:9a:bc:de:f0";
/// The passphrase of the encrypted resource principal key.
pub const RP_PASSPHRASE: &str = "fake-passphrase";

const LEAF_CERT: &str = include_str!("../testdata/oci/leaf.pem");
const LEAF_KEY: &str = include_str!("../testdata/oci/leaf.key");
const LEAF_PUBLIC: &str = include_str!("../testdata/oci/leaf-public.pem");
const INTERMEDIATE: &str = include_str!("../testdata/oci/intermediate.pem");
/// The fake user's API key (PKCS#8).
pub const USER_KEY: &str = include_str!("../testdata/oci/user.key");
const USER_PUBLIC: &str = include_str!("../testdata/oci/user-public.pem");
/// The resource principal's key, plain and encrypted with [`RP_PASSPHRASE`].
pub const RP_KEY: &str = include_str!("../testdata/oci/rp.key");
pub const RP_KEY_ENCRYPTED: &str = include_str!("../testdata/oci/rp-encrypted.key");
const RP_PUBLIC: &str = include_str!("../testdata/oci/rp-public.pem");

#[derive(Debug, Default)]
struct OciState {
    calls: BTreeMap<String, usize>,
    fault: Option<Fault>,
    /// key id → SubjectPublicKeyInfo DER
    keys: BTreeMap<String, Vec<u8>>,
    /// key id → who it is, for the registry's token grants
    principals: BTreeMap<String, String>,
    token_lifetime: i64,
    secrets: Vec<String>,
}

type Shared = Arc<Mutex<OciState>>;

/// The fake Oracle Cloud, running until dropped.
#[derive(Debug)]
pub struct FakeOci {
    server: FakeServer,
    state: Shared,
}

impl Default for FakeOci {
    fn default() -> Self {
        FakeOci::start()
    }
}

fn spki(pem: &str) -> Vec<u8> {
    SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes()).map(|der| der.as_ref().to_vec()).unwrap_or_default()
}

/// The SHA-1 fingerprint of the instance certificate, as OCI writes it.
fn leaf_fingerprint() -> String {
    let der = CertificateDer::from_pem_slice(LEAF_CERT.as_bytes()).map(|d| d.as_ref().to_vec()).unwrap_or_default();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &der);
    digest.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

impl FakeOci {
    pub fn start() -> FakeOci {
        let state = Shared::default();
        {
            let mut state = lock(&state);
            state.token_lifetime = 1200;
            let leaf = format!("{TENANCY}/fed-x509/{}", leaf_fingerprint());
            state.keys.insert(leaf.clone(), spki(LEAF_PUBLIC));
            state.principals.insert(leaf, "instance-certificate".into());
            state.secrets.push(LEAF_KEY.lines().nth(1).unwrap_or_default().to_string());
        }
        let router = Router::new().fallback(handle).with_state(state.clone());
        FakeOci { server: FakeServer::start(router), state }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// `CREDENTIAL_PROVIDER_ENDPOINTS` sending metadata and auth calls here.
    pub fn endpoint_env(&self) -> Vec<(String, String)> {
        vec![("CREDENTIAL_PROVIDER_ENDPOINTS".into(), format!("imds={url},auth={url}", url = self.url()))]
    }

    /// Registers the fake user's API key and writes an OCI CLI config for it
    /// (and its key file) into `dir`; returns the config's path.
    pub fn user_config(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let key_id = format!("{TENANCY}/{USER}/{USER_FINGERPRINT}");
        {
            let mut state = lock(&self.state);
            state.keys.insert(key_id.clone(), spki(USER_PUBLIC));
            state.principals.insert(key_id, "user".into());
        }
        let key_file = dir.join("oci_api_key.pem");
        std::fs::write(&key_file, USER_KEY).expect("write key");
        let config = dir.join("config");
        let text = format!(
            "[DEFAULT]\nuser={USER}\nfingerprint={USER_FINGERPRINT}\ntenancy={TENANCY}\nregion=us-ashburn-1\nkey_file={}\n",
            key_file.display()
        );
        std::fs::write(&config, text).expect("write config");
        config
    }

    /// A resource principal session token (RPST) bound to the resource
    /// principal key, as OKE workload identity hands it out.
    pub fn resource_principal_token(&self) -> String {
        let rpst = fake_jwt(&serde_json::json!({ "res_type": "workload", "exp": unix_now() + 3600, "jti": nonce() }));
        let mut state = lock(&self.state);
        state.keys.insert(format!("ST${rpst}"), spki(RP_PUBLIC));
        state.principals.insert(format!("ST${rpst}"), "resource-principal".into());
        state.secrets.push(rpst.clone());
        rpst
    }

    pub fn set_fault(&self, fault: Option<Fault>) {
        lock(&self.state).fault = fault;
    }

    /// How long the security tokens of federation live (default 20 minutes).
    pub fn set_token_lifetime(&self, seconds: i64) {
        lock(&self.state).token_lifetime = seconds;
    }

    /// Calls to `imds:<path>` (e.g. `imds:identity/cert.pem`) or `auth:x509`.
    pub fn calls(&self, what: &str) -> usize {
        lock(&self.state).calls.get(what).copied().unwrap_or(0)
    }

    /// Every secret handed out: security tokens, RPSTs, key material.
    pub fn secrets(&self) -> Vec<String> {
        let state = lock(&self.state);
        let tokens = state.keys.keys().filter_map(|k| k.strip_prefix("ST$")).map(str::to_string);
        state.secrets.iter().cloned().chain(tokens).collect()
    }

    /// The check a fake OCIR uses: verifies a signed request and names the
    /// principal (`user`, `instance`, `resource-principal`), or says why not.
    pub fn signature_check(
        &self,
    ) -> impl Fn(&Method, &Uri, &HeaderMap, &[u8]) -> Result<String, String> + Send + 'static {
        let state = self.state.clone();
        move |method, uri, headers, body| verify(&state, method, uri, headers, body)
    }
}

/// Verifies an OCI-signed request; returns the principal.
fn verify(state: &Shared, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Result<String, String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let authorization = header("authorization").ok_or("no Authorization header")?;
    let params = authorization.strip_prefix("Signature ").ok_or("not a Signature authorization")?;
    let mut fields = BTreeMap::new();
    for part in params.split("\",") {
        let (name, value) = part.split_once("=\"").ok_or("malformed Signature parameters")?;
        fields.insert(name.trim().to_string(), value.trim_end_matches('"').to_string());
    }
    let field = |name: &str| fields.get(name).cloned().ok_or(format!("Signature has no {name}"));
    if field("version")? != "1" || field("algorithm")? != "rsa-sha256" {
        return Err("version 1 and rsa-sha256 expected".into());
    }
    let names: Vec<String> = field("headers")?.split(' ').map(str::to_string).collect();
    let mut required = vec!["date", "(request-target)", "host"];
    if matches!(*method, Method::POST | Method::PUT) {
        required.extend(["content-length", "content-type", "x-content-sha256"]);
        let digest = base64::engine::general_purpose::STANDARD
            .encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body));
        if header("x-content-sha256").as_deref() != Some(digest.as_str()) {
            return Err("x-content-sha256 does not match the body".into());
        }
        if header("content-length").as_deref() != Some(body.len().to_string().as_str()) {
            return Err("content-length does not match the body".into());
        }
    }
    if names.iter().map(String::as_str).collect::<Vec<_>>() != required {
        return Err(format!("signed headers {names:?}, expected {required:?}"));
    }
    let date = header("date").ok_or("no date header")?;
    let sent = httpdate::parse_http_date(&date).map_err(|_| "the date is not an HTTP date")?;
    let skew =
        sent.duration_since(std::time::SystemTime::now()).or_else(|e| Ok::<_, ()>(e.duration())).unwrap_or_default();
    if skew > std::time::Duration::from_secs(300) {
        return Err("the date is more than 5 minutes off".into());
    }
    let target = match uri.query() {
        Some(query) => format!("{} {}?{query}", method.as_str().to_ascii_lowercase(), uri.path()),
        None => format!("{} {}", method.as_str().to_ascii_lowercase(), uri.path()),
    };
    let mut lines = Vec::new();
    for name in &names {
        let value = match name.as_str() {
            "(request-target)" => target.clone(),
            other => header(other).ok_or(format!("signed header {other} is missing"))?,
        };
        lines.push(format!("{name}: {value}"));
    }
    let key_id = field("keyId")?;
    let (key, principal) = {
        let state = lock(state);
        (state.keys.get(&key_id).cloned(), state.principals.get(&key_id).cloned())
    };
    let key = key.ok_or("unknown key id")?;
    let signature =
        base64::engine::general_purpose::STANDARD.decode(field("signature")?).map_err(|_| "signature is not base64")?;
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &key)
        .verify(lines.join("\n").as_bytes(), &signature)
        .map_err(|_| "the signature does not verify".to_string())?;
    Ok(principal.unwrap_or_default())
}

fn oci_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "code": code, "message": message });
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}

async fn handle(State(state): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    if let Some(rest) = path.strip_prefix("/opc/v2/") {
        *lock(&state).calls.entry(format!("imds:{rest}")).or_default() += 1;
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer Oracle") {
            return oci_error(StatusCode::UNAUTHORIZED, "NotAuthenticated", "Authorization: Bearer Oracle is required");
        }
        return match rest {
            "identity/cert.pem" => LEAF_CERT.into_response(),
            "identity/key.pem" => LEAF_KEY.into_response(),
            "identity/intermediate.pem" => INTERMEDIATE.into_response(),
            "instance/regionInfo" => axum::Json(serde_json::json!({
                "realmKey": "oc1", "realmDomainComponent": "oraclecloud.com", "regionKey": "IAD", "regionIdentifier": "us-ashburn-1"
            }))
            .into_response(),
            _ => oci_error(StatusCode::NOT_FOUND, "NotFound", "no such metadata"),
        };
    }
    if method == Method::POST && path == "/v1/x509" {
        return federation(&state, &method, &uri, &headers, &body).await;
    }
    oci_error(StatusCode::NOT_FOUND, "NotFound", "no such route in the fake")
}

async fn federation(state: &Shared, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
    let (fault, lifetime) = {
        let mut state = lock(state);
        *state.calls.entry("auth:x509".into()).or_default() += 1;
        (state.fault.clone(), state.token_lifetime)
    };
    let lifetime =
        match apply_fault(fault, lifetime, |status| oci_error(status, "InternalError", "the fake was told to fail"))
            .await
        {
            Ok(lifetime) => lifetime,
            Err(response) => return response,
        };
    match verify(state, method, uri, headers, body) {
        Ok(principal) if principal == "instance-certificate" => {}
        Ok(_) => {
            return oci_error(
                StatusCode::UNAUTHORIZED,
                "NotAuthenticated",
                "federation takes the instance certificate's key",
            );
        }
        Err(why) => return oci_error(StatusCode::UNAUTHORIZED, "NotAuthenticated", &why),
    }
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let leaf = CertificateDer::from_pem_slice(LEAF_CERT.as_bytes()).map(|d| d.as_ref().to_vec()).unwrap_or_default();
    if request["certificate"].as_str() != Some(&base64::engine::general_purpose::STANDARD.encode(&leaf)) {
        return oci_error(StatusCode::BAD_REQUEST, "InvalidParameter", "certificate is not the instance's");
    }
    if request["intermediateCertificates"].as_array().is_none_or(|list| list.len() != 1) {
        return oci_error(StatusCode::BAD_REQUEST, "InvalidParameter", "intermediateCertificates expected");
    }
    let Some(public_key) =
        request["publicKey"].as_str().and_then(|k| base64::engine::general_purpose::STANDARD.decode(k).ok())
    else {
        return oci_error(StatusCode::BAD_REQUEST, "InvalidParameter", "publicKey must be base64 DER");
    };
    let token = fake_jwt(
        &serde_json::json!({ "sub": "ocid1.instance.oc1.iad.fakeinstance", "tenant": TENANCY, "exp": unix_now() as i64 + lifetime, "jti": nonce() }),
    );
    {
        let mut state = lock(state);
        state.keys.insert(format!("ST${token}"), public_key);
        state.principals.insert(format!("ST${token}"), "instance".into());
    }
    axum::Json(serde_json::json!({ "token": token })).into_response()
}
