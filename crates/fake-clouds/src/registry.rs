//! A fake container registry that speaks the OCI distribution token handshake:
//! `GET /v2/` answers 401 with a Bearer challenge whose realm is its own
//! `/v2/token`; the realm takes Basic credentials and issues a token scoped to
//! the repositories they may pull; `GET /v2/<repo>/tags/list` wants that token.
//!
//! Which credentials may pull what is the test's to say: a check function sees
//! each username and password, and `deny` refuses repositories outright.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use crate::server::{FakeServer, lock, nonce};

type CredentialCheck = Box<dyn Fn(&str, &str) -> bool + Send>;

struct RegistryState {
    url: String,
    accepts: CredentialCheck,
    denied: BTreeSet<String>,
    /// Issued token → the repository it may pull.
    tokens: BTreeMap<String, String>,
    calls: BTreeMap<String, usize>,
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
            accepts: Box::new(|user, password| !user.is_empty() && !password.is_empty()),
            denied: BTreeSet::new(),
            tokens: BTreeMap::new(),
            calls: BTreeMap::new(),
        }));
        let router = Router::new().fallback(handle).with_state(state.clone());
        let server = FakeServer::start(router);
        lock(&state).url = server.url();
        FakeRegistry { server, state }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// `CREDENTIAL_PROVIDER_REGISTRY_ENDPOINTS` entries that send each of `hosts` here.
    pub fn endpoints_for(&self, hosts: &[&str]) -> String {
        hosts.iter().map(|h| format!("{h}={}", self.url())).collect::<Vec<_>>().join(",")
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

async fn handle(State(state): State<Shared>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_string();
    let query: BTreeMap<String, String> =
        form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect();
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let mut state = lock(&state);
    if path == "/v2/" {
        *state.calls.entry("challenge".into()).or_default() += 1;
        let challenge = format!(r#"Bearer realm="{}/v2/token",service="fake-registry""#, state.url);
        let mut response = problem(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "authentication required");
        if let Ok(value) = challenge.parse() {
            response.headers_mut().insert("www-authenticate", value);
        }
        return response;
    }
    if path == "/v2/token" {
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
        if !(state.accepts)(&user, &password) {
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

fn basic_credentials(authorization: &str) -> Option<(String, String)> {
    let encoded = authorization.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}
