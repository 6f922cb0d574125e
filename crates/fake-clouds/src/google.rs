//! A fake of the Google endpoints the GCR plugin calls, on one loopback port:
//! the GCE metadata server (`/computeMetadata/v1/…`, `Metadata-Flavor: Google`),
//! Security Token Service (`POST /v1/token`, RFC 8693 token exchange), IAM
//! Credentials (`generateAccessToken`) and Google OAuth (`POST /token`, for
//! service-account JWT assertions and authorized-user refresh tokens).
//!
//! Like the other fakes it issues access tokens with real lifetimes, counts
//! calls, remembers every secret it handed out or was given, and fails token
//! calls on demand.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::google_troubleshooter::{self, Binding, DenyRule};
use crate::server::{FakeServer, Fault, apply_fault, lock, nonce};

/// The project of every fake identity.
pub const PROJECT: &str = "fake-project";
/// The node's service account on the fake metadata server.
pub const NODE_EMAIL: &str = "node@fake-project.iam.gserviceaccount.com";
/// The client email of the service-account key files [`FakeGoogle::key_file`] writes.
pub const KEY_FILE_EMAIL: &str = "key-file@fake-project.iam.gserviceaccount.com";
/// A throw-away RSA key for service-account key files: the fake does not
/// verify signatures, but the plugin must be able to sign with it.
pub const TEST_RSA_KEY: &str = include_str!("../testdata/test-rsa-key.pem");

/// The cloud-platform scope, which implies read access to registries.
pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

#[derive(Debug)]
struct GoogleState {
    url: String,
    calls: BTreeMap<String, usize>,
    fault: Option<Fault>,
    token_lifetime: u64,
    scopes: Vec<String>,
    attributes: BTreeMap<String, String>,
    dockercfg_document: Option<String>,
    trusted_subject_tokens: BTreeSet<String>,
    audiences: BTreeSet<String>,
    /// Tokens issued by STS: the only ones IAM Credentials accepts.
    federated: BTreeSet<String>,
    denied_impersonation: BTreeSet<String>,
    /// (audience, subject token) of each exchange.
    exchanges: Vec<(String, String)>,
    impersonated: Vec<String>,
    refresh_tokens: BTreeMap<String, (String, String)>,
    /// The Policy Troubleshooter's allow bindings and deny rules.
    bindings: Vec<Binding>,
    denies: Vec<DenyRule>,
    /// Whether the caller may not troubleshoot.
    troubleshooting_denied: bool,
    /// (principal, resource, permission) of each troubleshooting request.
    troubleshot: Vec<(String, String, String)>,
    issued: Vec<String>,
    secrets: Vec<String>,
}

type Shared = Arc<Mutex<GoogleState>>;

/// The fake Google, running until dropped.
#[derive(Debug)]
pub struct FakeGoogle {
    server: FakeServer,
    state: Shared,
}

impl Default for FakeGoogle {
    fn default() -> Self {
        FakeGoogle::start()
    }
}

impl FakeGoogle {
    pub fn start() -> FakeGoogle {
        let state = Arc::new(Mutex::new(GoogleState {
            url: String::new(),
            calls: BTreeMap::new(),
            fault: None,
            token_lifetime: 3599,
            scopes: vec![CLOUD_PLATFORM.to_string()],
            attributes: BTreeMap::new(),
            dockercfg_document: None,
            trusted_subject_tokens: BTreeSet::new(),
            audiences: BTreeSet::new(),
            federated: BTreeSet::new(),
            denied_impersonation: BTreeSet::new(),
            exchanges: Vec::new(),
            impersonated: Vec::new(),
            refresh_tokens: BTreeMap::new(),
            bindings: Vec::new(),
            denies: Vec::new(),
            troubleshooting_denied: false,
            troubleshot: Vec::new(),
            issued: Vec::new(),
            secrets: Vec::new(),
        }));
        let router = Router::new().fallback(handle).with_state(state.clone());
        let server = FakeServer::start(router);
        lock(&state).url = server.url();
        FakeGoogle { server, state }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    fn lock(&self) -> MutexGuard<'_, GoogleState> {
        lock(&self.state)
    }

    /// `GCE_METADATA_HOST` and `CREDENTIAL_PROVIDER_ENDPOINTS` pointing here.
    pub fn endpoint_env(&self) -> Vec<(String, String)> {
        let url = self.url();
        vec![
            ("GCE_METADATA_HOST".into(), self.server.addr().to_string()),
            (
                "CREDENTIAL_PROVIDER_ENDPOINTS".into(),
                format!("sts={url},iamcredentials={url},policytroubleshooter={url}"),
            ),
        ]
    }

    /// Grants `role` (with `permissions`) to `members` on `resource` (a
    /// repository's or a project's full resource name), for the Policy Troubleshooter.
    pub fn bind(&self, resource: &str, role: &str, permissions: &[&str], members: &[&str]) {
        let strings = |items: &[&str]| items.iter().map(|i| i.to_string()).collect();
        self.lock().bindings.push(Binding {
            resource: resource.into(),
            role: role.into(),
            permissions: strings(permissions),
            members: strings(members),
        });
    }

    /// Denies `permission` to `principal` under `resource`, by the deny policy `policy`.
    pub fn deny_permission(&self, resource: &str, policy: &str, principal: &str, permission: &str) {
        let rule = DenyRule {
            resource: resource.into(),
            policy: policy.into(),
            principal: principal.into(),
            permission: permission.into(),
        };
        self.lock().denies.push(rule);
    }

    /// Makes the Policy Troubleshooter refuse the caller (403).
    pub fn deny_troubleshooting(&self) {
        self.lock().troubleshooting_denied = true;
    }

    /// (principal, resource, permission) of every troubleshooting request.
    pub fn troubleshot(&self) -> Vec<(String, String, String)> {
        self.lock().troubleshot.clone()
    }

    /// Calls made to `what`: `metadata:token`, `metadata:email`, `metadata:scopes`,
    /// `metadata:project-id`, `metadata:attribute`, `sts:token`,
    /// `iamcredentials:generateAccessToken`, `oauth:jwt-bearer`, `oauth:refresh_token`, `dockercfg`.
    pub fn calls(&self, what: &str) -> usize {
        self.lock().calls.get(what).copied().unwrap_or(0)
    }

    /// Every call that issued an access token.
    pub fn token_calls(&self) -> usize {
        ["metadata:token", "sts:token", "iamcredentials:generateAccessToken", "oauth:jwt-bearer", "oauth:refresh_token"]
            .iter()
            .map(|what| self.calls(what))
            .sum()
    }

    pub fn set_fault(&self, fault: Option<Fault>) {
        self.lock().fault = fault;
    }

    /// The `expires_in` of the access tokens it issues (default 3599 s).
    pub fn set_token_lifetime(&self, seconds: u64) {
        self.lock().token_lifetime = seconds;
    }

    /// The scopes of the node's service account (default cloud-platform).
    pub fn set_scopes(&self, scopes: &[&str]) {
        self.lock().scopes = scopes.iter().map(|s| s.to_string()).collect();
    }

    /// Sets an instance attribute (`google-dockercfg`, `google-dockercfg-url`).
    pub fn set_attribute(&self, name: &str, value: &str) {
        self.lock().attributes.insert(name.to_string(), value.to_string());
    }

    /// Serves `document` at `/dockercfg`, for the `dockercfg-url` flow; returns its URL.
    pub fn serve_dockercfg(&self, document: &str) -> String {
        self.lock().dockercfg_document = Some(document.to_string());
        format!("{}/dockercfg", self.url())
    }

    /// Lets STS accept `token` as a subject token for `audience`.
    pub fn trust(&self, audience: &str, token: &str) {
        let mut state = self.lock();
        state.audiences.insert(audience.to_string());
        state.trusted_subject_tokens.insert(token.to_string());
        state.secrets.push(token.to_string());
    }

    /// Refuses impersonation of `email`.
    pub fn deny_impersonation(&self, email: &str) {
        self.lock().denied_impersonation.insert(email.to_string());
    }

    /// (audience, subject token) of every STS exchange, in order.
    pub fn exchanges(&self) -> Vec<(String, String)> {
        self.lock().exchanges.clone()
    }

    /// The service accounts impersonated, in order.
    pub fn impersonated(&self) -> Vec<String> {
        self.lock().impersonated.clone()
    }

    /// Every access token issued, in order.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.lock().issued.clone()
    }

    /// Every secret handed out or given: tokens, client secrets, refresh tokens.
    pub fn secrets(&self) -> Vec<String> {
        let state = self.lock();
        state.secrets.iter().chain(&state.issued).cloned().collect()
    }

    /// Writes a service-account key file whose `token_uri` is this fake.
    pub fn key_file(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let key = serde_json::json!({
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "fake-key-id",
            "private_key": TEST_RSA_KEY,
            "client_email": KEY_FILE_EMAIL,
            "client_id": "1234567890",
            "token_uri": format!("{}/token", self.url()),
        });
        write_json(dir, "service-account.json", &key)
    }

    /// Writes an authorized-user file (as `gcloud auth application-default login`
    /// does, with `token_uri` set to this fake) and accepts its refresh token.
    pub fn authorized_user_file(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let (secret, refresh) = (format!("fake-client-secret-{}", nonce()), format!("fake-refresh-{}", nonce()));
        {
            let mut state = self.lock();
            state
                .refresh_tokens
                .insert(refresh.clone(), ("fake-client.apps.googleusercontent.com".into(), secret.clone()));
            state.secrets.extend([secret.clone(), refresh.clone()]);
        }
        let user = serde_json::json!({
            "type": "authorized_user",
            "client_id": "fake-client.apps.googleusercontent.com",
            "client_secret": secret,
            "refresh_token": refresh,
            "token_uri": format!("{}/token", self.url()),
        });
        write_json(dir, "authorized-user.json", &user)
    }

    /// Writes an `external_account` file (workload identity federation) that
    /// reads its subject token from `token_file`, optionally impersonating `email`.
    pub fn external_account_file(
        &self,
        dir: &std::path::Path,
        audience: &str,
        token_file: &std::path::Path,
        impersonate: Option<&str>,
    ) -> std::path::PathBuf {
        let mut config = serde_json::json!({
            "type": "external_account",
            "audience": audience,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": format!("{}/v1/token", self.url()),
            "credential_source": { "file": token_file, "format": { "type": "text" } },
        });
        if let Some(email) = impersonate {
            config["service_account_impersonation_url"] =
                format!("{}/v1/projects/-/serviceAccounts/{email}:generateAccessToken", self.url()).into();
        }
        write_json(dir, "external-account.json", &config)
    }
}

fn write_json(dir: &std::path::Path, name: &str, value: &serde_json::Value) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, value.to_string()).expect("write credentials file");
    path
}

fn google_error(status: StatusCode, message: &str) -> Response {
    let body =
        serde_json::json!({ "error": { "code": status.as_u16(), "message": message, "status": "PERMISSION_DENIED" } });
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}

fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response {
    let body = serde_json::json!({ "error": code, "error_description": description });
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}

/// Counts a token call and applies the fault in force: `Err` is the answer to
/// send instead, `Ok` the lifetime to give the token.
async fn token_call(state: &Shared, what: &str) -> Result<i64, Response> {
    let (fault, lifetime) = {
        let mut state = lock(state);
        *state.calls.entry(what.to_string()).or_default() += 1;
        (state.fault.clone(), state.token_lifetime)
    };
    apply_fault(fault, lifetime as i64, |status| google_error(status, "the fake was told to fail")).await
}

fn issue(state: &Shared, prefix: &str) -> String {
    let token = format!("ya29.{prefix}-{}", nonce());
    lock(state).issued.push(token.clone());
    token
}

async fn handle(State(state): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    if let Some(rest) = path.strip_prefix("/computeMetadata/v1/") {
        return metadata(&state, rest, uri.query().unwrap_or(""), &headers).await;
    }
    let form: BTreeMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    match (method, path.as_str()) {
        (Method::POST, "/v1/token") => sts(&state, &form).await,
        (Method::POST, "/token") => oauth(&state, &form).await,
        (Method::POST, p)
            if p.starts_with("/v1/projects/-/serviceAccounts/") && p.ends_with(":generateAccessToken") =>
        {
            let email = &p["/v1/projects/-/serviceAccounts/".len()..p.len() - ":generateAccessToken".len()];
            impersonate(&state, email, &headers, &body).await
        }
        (Method::POST, "/v3/iam:troubleshoot") => {
            let mut state = lock(&state);
            *state.calls.entry("troubleshoot".into()).or_default() += 1;
            if state.troubleshooting_denied {
                return google_error(StatusCode::FORBIDDEN, "The caller does not have permission");
            }
            let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let tuple = &request["accessTuple"];
            let field = |name: &str| tuple[name].as_str().unwrap_or_default().to_string();
            state.troubleshot.push((field("principal"), field("fullResourceName"), field("permission")));
            match google_troubleshooter::troubleshoot(&state.bindings, &state.denies, &request) {
                Ok(answer) => axum::Json(answer).into_response(),
                Err((status, name, message)) => {
                    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
                    let body =
                        serde_json::json!({ "error": { "code": status.as_u16(), "message": message, "status": name } });
                    (status, [("content-type", "application/json")], body.to_string()).into_response()
                }
            }
        }
        (Method::GET, "/dockercfg") => {
            let mut state = lock(&state);
            *state.calls.entry("dockercfg".into()).or_default() += 1;
            match state.dockercfg_document.clone() {
                Some(document) => document.into_response(),
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
        _ => google_error(StatusCode::NOT_FOUND, "no such route in the fake"),
    }
}

async fn metadata(state: &Shared, path: &str, query: &str, headers: &HeaderMap) -> Response {
    if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("Google") {
        return (StatusCode::FORBIDDEN, "Missing Metadata-Flavor:Google header.").into_response();
    }
    if headers.contains_key("x-forwarded-for") {
        return (StatusCode::FORBIDDEN, "proxied requests are refused").into_response();
    }
    let flavored = |body: String| ([("metadata-flavor", "Google")], body).into_response();
    let count = |what: &str| *lock(state).calls.entry(what.to_string()).or_default() += 1;
    match path {
        "instance/service-accounts/default/token" => {
            let lifetime = match token_call(state, "metadata:token").await {
                Ok(lifetime) => lifetime,
                Err(response) => return response,
            };
            let token = issue(state, "metadata");
            flavored(
                serde_json::json!({ "access_token": token, "expires_in": lifetime, "token_type": "Bearer" })
                    .to_string(),
            )
        }
        "instance/service-accounts/default/email" => {
            count("metadata:email");
            flavored(NODE_EMAIL.to_string())
        }
        "instance/service-accounts/default/scopes" => {
            count("metadata:scopes");
            let scopes = lock(state).scopes.clone();
            if query.contains("alt=json") {
                flavored(serde_json::to_string(&scopes).unwrap_or_default())
            } else {
                flavored(scopes.join("\n"))
            }
        }
        "project/project-id" => {
            count("metadata:project-id");
            flavored(PROJECT.to_string())
        }
        p if p.starts_with("instance/attributes/") => {
            count("metadata:attribute");
            let name = &p["instance/attributes/".len()..];
            match lock(state).attributes.get(name).cloned() {
                Some(value) => flavored(value),
                None => (StatusCode::NOT_FOUND, "not found").into_response(),
            }
        }
        _ => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

async fn sts(state: &Shared, form: &BTreeMap<String, String>) -> Response {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    if field("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange"
        || field("requested_token_type") != "urn:ietf:params:oauth:token-type:access_token"
        || field("subject_token_type") != "urn:ietf:params:oauth:token-type:jwt"
        || field("scope") != CLOUD_PLATFORM
    {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "not an RFC 8693 exchange for an access token");
    }
    let lifetime = match token_call(state, "sts:token").await {
        Ok(lifetime) => lifetime,
        Err(response) => return response,
    };
    let (audience, subject) = (field("audience").to_string(), field("subject_token").to_string());
    {
        let mut state = lock(state);
        state.exchanges.push((audience.clone(), subject.clone()));
        if !state.audiences.contains(&audience) {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_target",
                &format!("the audience {audience} is not a known provider"),
            );
        }
        if !state.trusted_subject_tokens.contains(&subject) {
            // Echo the token, as a careless server might: the plugin must scrub it.
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                &format!("the subject token {subject} is not trusted"),
            );
        }
    }
    let token = issue(state, "sts");
    lock(state).federated.insert(token.clone());
    axum::Json(serde_json::json!({
        "access_token": token,
        "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
        "token_type": "Bearer",
        "expires_in": lifetime,
    }))
    .into_response()
}

async fn impersonate(state: &Shared, email: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let lifetime = match token_call(state, "iamcredentials:generateAccessToken").await {
        Ok(lifetime) => lifetime,
        Err(response) => return response,
    };
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    {
        let mut state = lock(state);
        if !bearer.is_some_and(|t| state.federated.contains(t)) {
            return google_error(StatusCode::UNAUTHORIZED, "Request had invalid authentication credentials.");
        }
        if state.denied_impersonation.contains(email) {
            return google_error(
                StatusCode::FORBIDDEN,
                &format!("Permission 'iam.serviceAccounts.getAccessToken' denied on {email}"),
            );
        }
        if !request["scope"].as_array().is_some_and(|s| s.iter().any(|s| s == CLOUD_PLATFORM)) {
            return google_error(StatusCode::BAD_REQUEST, "scope must include cloud-platform");
        }
        state.impersonated.push(email.to_string());
    }
    let token = issue(state, "impersonated");
    let offset = Duration::from_secs(lifetime.unsigned_abs());
    let expires = if lifetime >= 0 { SystemTime::now() + offset } else { SystemTime::now() - offset };
    axum::Json(serde_json::json!({
        "accessToken": token,
        "expireTime": humantime::format_rfc3339_seconds(expires).to_string(),
    }))
    .into_response()
}

/// Whether `jwt` is signed (RS256) with [`TEST_RSA_KEY`], as Google checks
/// an assertion against the key's public half.
fn signed_with_test_key(jwt: &str) -> bool {
    use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_2048_8192_SHA256, RsaKeyPair, UnparsedPublicKey};
    use base64::Engine as _;
    use rustls_pki_types::PrivatePkcs8KeyDer;
    use rustls_pki_types::pem::PemObject as _;
    let Some((signed, signature)) = jwt.rsplit_once('.') else { return false };
    let Ok(signature) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature) else { return false };
    let key = PrivatePkcs8KeyDer::from_pem_slice(TEST_RSA_KEY.as_bytes())
        .ok()
        .and_then(|der| RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).ok());
    let Some(key) = key else { return false };
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public_key().as_ref())
        .verify(signed.as_bytes(), &signature)
        .is_ok()
}

async fn oauth(state: &Shared, form: &BTreeMap<String, String>) -> Response {
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    match field("grant_type") {
        "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
            let lifetime = match token_call(state, "oauth:jwt-bearer").await {
                Ok(lifetime) => lifetime,
                Err(response) => return response,
            };
            let url = lock(state).url.clone();
            if !signed_with_test_key(field("assertion")) {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Invalid JWT Signature.");
            }
            let claims = credential_provider::jwt::unverified_claims(field("assertion")).unwrap_or_default();
            if claims["iss"] != KEY_FILE_EMAIL || claims["aud"] != format!("{url}/token") {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Invalid JWT: iss or aud");
            }
            if !claims["scope"].as_str().is_some_and(|s| s.split(' ').any(|s| s == CLOUD_PLATFORM)) {
                return oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", "cloud-platform scope required");
            }
            let token = issue(state, "key-file");
            axum::Json(serde_json::json!({ "access_token": token, "expires_in": lifetime, "token_type": "Bearer" }))
                .into_response()
        }
        "refresh_token" => {
            let lifetime = match token_call(state, "oauth:refresh_token").await {
                Ok(lifetime) => lifetime,
                Err(response) => return response,
            };
            let known = lock(state).refresh_tokens.get(field("refresh_token")).cloned();
            match known {
                Some((client, secret)) if client == field("client_id") && secret == field("client_secret") => {
                    let token = issue(state, "user");
                    axum::Json(
                        serde_json::json!({ "access_token": token, "expires_in": lifetime, "token_type": "Bearer" }),
                    )
                    .into_response()
                }
                _ => oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "Token has been expired or revoked."),
            }
        }
        other => oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", &format!("grant type {other:?}")),
    }
}
