//! A fake container registry that speaks the OCI distribution token handshake:
//! `GET /v2/` answers 401 with a Bearer challenge whose realm is its own
//! `/v2/token`; the realm takes Basic credentials and issues a token scoped to
//! the repositories they may pull; `GET /v2/<repo>/tags/list` wants that token.
//!
//! Which credentials may pull what is the test's to say: a check function sees
//! each username and password, and `deny` refuses repositories outright.
//!
//! Started with [`FakeRegistry::start_acr`] it is an Azure Container Registry:
//! the realm is `/oauth2/token`, and `POST /oauth2/exchange` trades an Entra ID
//! access token (one the test's check trusts) for a refresh token, a JWT with a
//! real `exp`, which the realm then takes as the password of the all-zero
//! username.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use crate::server::{FakeServer, Fault, apply_fault, lock, nonce};

type CredentialCheck = Box<dyn Fn(&str, &str) -> bool + Send>;

/// The username ACR pairs with refresh tokens.
pub const ACR_USERNAME: &str = "00000000-0000-0000-0000-000000000000";

/// The path of OCIR's token endpoint.
pub const OCIR_TOKEN_PATH: &str = "/20180419/docker/token";

type SignatureCheck = Box<dyn Fn(&Method, &Uri, &HeaderMap, &[u8]) -> Result<String, String> + Send>;

/// OCIR's signed token endpoint's state.
struct OcirTokens {
    check: SignatureCheck,
    /// Issued docker token → the principal it was issued to.
    tokens: BTreeMap<String, String>,
    denied: BTreeSet<String>,
    lifetime: i64,
}

/// The ACR exchange's state.
struct AcrExchange {
    trusts: Box<dyn Fn(&str) -> bool + Send>,
    refresh_lifetime: u64,
    refresh_tokens: BTreeSet<String>,
    /// The tenant each exchange named.
    tenants: Vec<Option<String>>,
    fault: Option<Fault>,
}

struct RegistryState {
    url: String,
    /// Where the challenge's realm points: this registry, unless a test says otherwise.
    realm_base: Option<String>,
    accepts: CredentialCheck,
    denied: BTreeSet<String>,
    /// Issued token → the repository it may pull.
    tokens: BTreeMap<String, String>,
    calls: BTreeMap<String, usize>,
    acr: Option<AcrExchange>,
    ocir: Option<OcirTokens>,
}

type Shared = Arc<Mutex<RegistryState>>;

/// The fake registry, running until dropped.
pub struct FakeRegistry {
    server: FakeServer,
    state: Shared,
}

impl std::fmt::Debug for FakeRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeRegistry").field("url", &self.server.url()).finish()
    }
}

impl Default for FakeRegistry {
    fn default() -> Self {
        FakeRegistry::start()
    }
}

impl FakeRegistry {
    /// A registry that accepts any non-empty credential for any repository.
    pub fn start() -> FakeRegistry {
        let state = Arc::new(Mutex::new(RegistryState {
            url: String::new(),
            realm_base: None,
            accepts: Box::new(|user, password| !user.is_empty() && !password.is_empty()),
            denied: BTreeSet::new(),
            tokens: BTreeMap::new(),
            calls: BTreeMap::new(),
            acr: None,
            ocir: None,
        }));
        let router = Router::new().fallback(handle).with_state(state.clone());
        let server = FakeServer::start(router);
        lock(&state).url = server.url();
        FakeRegistry { server, state }
    }

    /// An Azure Container Registry whose exchange accepts the Entra ID tokens
    /// `trusts` approves. Refresh tokens live 3 hours, as ACR's do.
    pub fn start_acr(trusts: impl Fn(&str) -> bool + Send + 'static) -> FakeRegistry {
        let registry = FakeRegistry::start();
        lock(&registry.state).acr = Some(AcrExchange {
            trusts: Box::new(trusts),
            refresh_lifetime: 3 * 3600,
            refresh_tokens: BTreeSet::new(),
            tenants: Vec::new(),
            fault: None,
        });
        registry
    }

    /// An OCI Registry: `GET /20180419/docker/token` signed as a principal
    /// (verified by `check`, which names the principal) issues a docker token
    /// living an hour; the same path is the realm, taking `BEARER_TOKEN` and
    /// that token for pull-scoped tokens.
    pub fn start_ocir(
        check: impl Fn(&Method, &Uri, &HeaderMap, &[u8]) -> Result<String, String> + Send + 'static,
    ) -> FakeRegistry {
        let registry = FakeRegistry::start();
        lock(&registry.state).ocir = Some(OcirTokens {
            check: Box::new(check),
            tokens: BTreeMap::new(),
            denied: BTreeSet::new(),
            lifetime: 3600,
        });
        registry
    }

    /// Makes OCIR refuse docker tokens to `principal` (`user`, `instance`, `resource-principal`).
    pub fn deny_principal(&self, principal: &str) {
        if let Some(ocir) = lock(&self.state).ocir.as_mut() {
            ocir.denied.insert(principal.to_string());
        }
    }

    /// Lifts [`FakeRegistry::deny_principal`].
    pub fn allow_principal(&self, principal: &str) {
        if let Some(ocir) = lock(&self.state).ocir.as_mut() {
            ocir.denied.remove(principal);
        }
    }

    /// How long OCIR's docker tokens live (`expires_in`).
    pub fn set_docker_token_lifetime(&self, seconds: i64) {
        if let Some(ocir) = lock(&self.state).ocir.as_mut() {
            ocir.lifetime = seconds;
        }
    }

    /// The principal of each docker token issued, in order of issue.
    pub fn docker_token_principals(&self) -> Vec<String> {
        lock(&self.state).ocir.as_ref().map(|o| o.tokens.values().cloned().collect()).unwrap_or_default()
    }

    /// How long the refresh tokens it issues live.
    pub fn set_refresh_lifetime(&self, seconds: u64) {
        if let Some(acr) = lock(&self.state).acr.as_mut() {
            acr.refresh_lifetime = seconds;
        }
    }

    /// Makes every exchange fail this way until cleared.
    pub fn set_exchange_fault(&self, fault: Option<Fault>) {
        if let Some(acr) = lock(&self.state).acr.as_mut() {
            acr.fault = fault;
        }
    }

    /// The tenant each ACR exchange named, in order.
    pub fn exchange_tenants(&self) -> Vec<Option<String>> {
        lock(&self.state).acr.as_ref().map(|acr| acr.tenants.clone()).unwrap_or_default()
    }

    /// Every token it issued: refresh tokens and pull tokens.
    pub fn secrets(&self) -> Vec<String> {
        let state = lock(&self.state);
        let refresh = state.acr.iter().flat_map(|acr| acr.refresh_tokens.iter().cloned());
        let docker = state.ocir.iter().flat_map(|ocir| ocir.tokens.keys().cloned());
        state.tokens.keys().cloned().chain(refresh).chain(docker).collect()
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// `CREDENTIAL_PROVIDER_REGISTRY_ENDPOINTS` entries that send each of `hosts` here.
    pub fn endpoints_for(&self, hosts: &[&str]) -> String {
        hosts.iter().map(|h| format!("{h}={}", self.url())).collect::<Vec<_>>().join(",")
    }

    /// Makes the challenge name a realm at `base` (another server) instead of
    /// this registry.
    pub fn set_realm_base(&self, base: &str) {
        lock(&self.state).realm_base = Some(base.to_string());
    }

    /// Decides which credentials the realm accepts.
    pub fn accept(&self, check: impl Fn(&str, &str) -> bool + Send + 'static) {
        lock(&self.state).accepts = Box::new(check);
    }

    /// Refuses pull on `repository` to every credential.
    pub fn deny(&self, repository: &str) {
        lock(&self.state).denied.insert(repository.to_string());
    }

    /// How often `what` was asked: `challenge`, `token`, `tags`.
    pub fn calls(&self, what: &str) -> usize {
        lock(&self.state).calls.get(what).copied().unwrap_or(0)
    }
}

fn problem(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "errors": [{ "code": code, "message": message }] });
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}

async fn handle(State(state): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let body = body.to_vec();
    let path = uri.path().to_string();
    if method == Method::POST && path == "/oauth2/exchange" {
        return acr_exchange(&state, &body).await;
    }
    let query: BTreeMap<String, String> =
        form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect();
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let mut state = lock(&state);
    if path == OCIR_TOKEN_PATH && authorization.starts_with("Signature ") {
        return ocir_token(&mut state, &method, &uri, &headers, &body);
    }
    if path == "/v2/" {
        *state.calls.entry("challenge".into()).or_default() += 1;
        let realm = match (&state.acr, &state.ocir) {
            (Some(_), _) => "/oauth2/token",
            (_, Some(_)) => OCIR_TOKEN_PATH,
            _ => "/v2/token",
        };
        let base = state.realm_base.as_ref().unwrap_or(&state.url);
        let challenge = format!(r#"Bearer realm="{base}{realm}",service="fake-registry""#);
        let mut response = problem(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "authentication required");
        if let Ok(value) = challenge.parse() {
            response.headers_mut().insert("www-authenticate", value);
        }
        return response;
    }
    if path == "/v2/token" || path == "/oauth2/token" || path == OCIR_TOKEN_PATH {
        *state.calls.entry("token".into()).or_default() += 1;
        let Some((user, password)) = basic_credentials(&authorization) else {
            return problem(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "basic credentials required");
        };
        if query.get("service").map(String::as_str) != Some("fake-registry") {
            return problem(StatusCode::BAD_REQUEST, "DENIED", "unknown service");
        }
        let Some(repository) =
            query.get("scope").and_then(|s| s.strip_prefix("repository:")).and_then(|s| s.strip_suffix(":pull"))
        else {
            return problem(StatusCode::BAD_REQUEST, "DENIED", "scope must be repository:<name>:pull");
        };
        let accepted = match (&state.acr, &state.ocir) {
            (Some(acr), _) => user == ACR_USERNAME && acr.refresh_tokens.contains(&password),
            (_, Some(ocir)) => user == "BEARER_TOKEN" && ocir.tokens.contains_key(&password),
            _ => (state.accepts)(&user, &password),
        };
        if !accepted {
            return problem(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "invalid username or password");
        }
        if state.denied.contains(repository) {
            return problem(StatusCode::FORBIDDEN, "DENIED", "requested access to the resource is denied");
        }
        let token = format!("registry-token-{}", nonce());
        state.tokens.insert(token.clone(), repository.to_string());
        return axum::Json(serde_json::json!({ "token": token, "expires_in": 300 })).into_response();
    }
    if let Some(repository) = path.strip_prefix("/v2/").and_then(|p| p.strip_suffix("/tags/list")) {
        *state.calls.entry("tags".into()).or_default() += 1;
        let granted = authorization.strip_prefix("Bearer ").and_then(|t| state.tokens.get(t));
        return match granted {
            Some(scope) if scope == repository => {
                axum::Json(serde_json::json!({ "name": repository, "tags": ["latest"] })).into_response()
            }
            _ => problem(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "authentication required"),
        };
    }
    problem(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route")
}

async fn acr_exchange(state: &Shared, body: &[u8]) -> Response {
    let form: BTreeMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    let fault = {
        let mut state = lock(state);
        *state.calls.entry("exchange".into()).or_default() += 1;
        state.acr.as_ref().and_then(|acr| acr.fault.clone())
    };
    let expired =
        match apply_fault(fault, 0, |status| problem(status, "UNAVAILABLE", "the fake was told to fail")).await {
            Ok(lifetime) => lifetime < 0,
            Err(response) => return response,
        };
    let mut state = lock(state);
    let Some(acr) = state.acr.as_mut() else {
        return problem(StatusCode::NOT_FOUND, "NOT_FOUND", "not an ACR registry");
    };
    if field("grant_type") != "access_token" || field("service") != "fake-registry" {
        return problem(
            StatusCode::BAD_REQUEST,
            "UNSUPPORTED",
            "grant_type=access_token and the challenge's service are required",
        );
    }
    if !(acr.trusts)(field("access_token")) {
        return problem(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "the access token is not valid for this registry");
    }
    acr.tenants.push(form.get("tenant").cloned());
    let lifetime = if expired { -3600 } else { acr.refresh_lifetime as i64 };
    let token = crate::server::fake_jwt(&serde_json::json!({
        "jti": nonce(),
        "exp": crate::server::unix_now() as i64 + lifetime,
        "grant_type": "refresh_token",
    }));
    acr.refresh_tokens.insert(token.clone());
    axum::Json(serde_json::json!({ "refresh_token": token })).into_response()
}

fn ocir_token(state: &mut RegistryState, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
    *state.calls.entry("ocir-token".into()).or_default() += 1;
    let Some(ocir) = state.ocir.as_mut() else {
        return problem(StatusCode::NOT_FOUND, "NOT_FOUND", "not an OCI registry");
    };
    let principal = match (ocir.check)(method, uri, headers, body) {
        Ok(principal) => principal,
        Err(why) => {
            let body = serde_json::json!({ "code": "NotAuthenticated", "message": why });
            return (StatusCode::UNAUTHORIZED, [("content-type", "application/json")], body.to_string())
                .into_response();
        }
    };
    if ocir.denied.contains(&principal) {
        let body = serde_json::json!({ "code": "NotAuthorizedOrNotFound", "message": "Authorization failed or requested resource not found" });
        return (StatusCode::FORBIDDEN, [("content-type", "application/json")], body.to_string()).into_response();
    }
    let token = format!("ocir-docker-token-{}", nonce());
    ocir.tokens.insert(token.clone(), principal);
    axum::Json(serde_json::json!({ "token": token, "access_token": token, "expires_in": ocir.lifetime }))
        .into_response()
}

fn basic_credentials(authorization: &str) -> Option<(String, String)> {
    let encoded = authorization.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}
