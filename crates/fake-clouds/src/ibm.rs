//! A fake of the IBM Cloud endpoints the ICR plugin calls, on one loopback
//! port: IAM's token endpoint (`POST /identity/token`, API key and compute
//! resource token grants) and the VPC instance identity service
//! (`PUT /instance_identity/v1/token`, `POST /instance_identity/v1/iam_token`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::server::{FakeServer, Fault, apply_fault, fake_jwt, lock, nonce, unix_now};

/// The trusted profile linked to the fake VPC instance by default.
pub const LINKED_PROFILE: &str = "Profile-00000000-1111-4222-8333-444444444444";

#[derive(Debug, Default)]
struct IbmState {
    calls: BTreeMap<String, usize>,
    fault: Option<Fault>,
    token_lifetime: i64,
    api_keys: BTreeSet<String>,
    /// "id:…", "name:…" or "crn:…" → compute resource tokens it trusts.
    profiles: BTreeMap<String, BTreeSet<String>>,
    /// Profiles the VPC instance may assume ("id:…" or "crn:…").
    instance_profiles: BTreeSet<String>,
    instance_tokens: BTreeSet<String>,
    /// (grant, profile) of each IAM token issued.
    grants: Vec<(String, String)>,
    issued: Vec<String>,
    secrets: Vec<String>,
}

type Shared = Arc<Mutex<IbmState>>;

/// The fake IBM Cloud, running until dropped.
#[derive(Debug)]
pub struct FakeIbm {
    server: FakeServer,
    state: Shared,
}

impl Default for FakeIbm {
    fn default() -> Self {
        FakeIbm::start()
    }
}

impl FakeIbm {
    pub fn start() -> FakeIbm {
        let state = Shared::default();
        {
            let mut state = lock(&state);
            state.token_lifetime = 3600;
            state.instance_profiles.insert(format!("id:{LINKED_PROFILE}"));
        }
        let router = Router::new().fallback(handle).with_state(state.clone());
        FakeIbm { server: FakeServer::start(router), state }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// `CREDENTIAL_PROVIDER_ENDPOINTS` sending IAM and VPC metadata calls here.
    pub fn endpoint_env(&self) -> Vec<(String, String)> {
        vec![("CREDENTIAL_PROVIDER_ENDPOINTS".into(), format!("iam={url},imds={url}", url = self.url()))]
    }

    /// A new API key IAM accepts.
    pub fn add_api_key(&self) -> String {
        let key = format!("fake-api-key-{}", nonce());
        let mut state = lock(&self.state);
        state.api_keys.insert(key.clone());
        state.secrets.push(key.clone());
        key
    }

    /// Lets the trusted profile `profile` ("id:…", "name:…" or "crn:…") accept `cr_token`.
    pub fn trust(&self, profile: &str, cr_token: &str) {
        let mut state = lock(&self.state);
        state.profiles.entry(profile.to_string()).or_default().insert(cr_token.to_string());
        state.secrets.push(cr_token.to_string());
    }

    /// Lets the VPC instance get tokens for `profile` ("id:…" or "crn:…").
    pub fn link_instance_profile(&self, profile: &str) {
        lock(&self.state).instance_profiles.insert(profile.to_string());
    }

    pub fn set_fault(&self, fault: Option<Fault>) {
        lock(&self.state).fault = fault;
    }

    pub fn set_token_lifetime(&self, seconds: i64) {
        lock(&self.state).token_lifetime = seconds;
    }

    /// Calls to `iam:token`, `vpc:instance-token` or `vpc:iam-token`.
    pub fn calls(&self, what: &str) -> usize {
        lock(&self.state).calls.get(what).copied().unwrap_or(0)
    }

    /// (grant, profile) of each IAM token issued: ("apikey", ""), ("cr-token", "id:…"), ("vpc", "id:…").
    pub fn grants(&self) -> Vec<(String, String)> {
        lock(&self.state).grants.clone()
    }

    /// The IAM tokens issued, in order.
    pub fn issued_tokens(&self) -> Vec<String> {
        lock(&self.state).issued.clone()
    }

    /// A check a fake registry uses to accept exactly `iambearer` with tokens issued here.
    pub fn registry_check(&self) -> impl Fn(&str, &str) -> bool + Send + 'static {
        let state = self.state.clone();
        move |user, password| user == "iambearer" && lock(&state).issued.iter().any(|t| t == password)
    }

    /// Every secret handed out or given.
    pub fn secrets(&self) -> Vec<String> {
        let state = lock(&self.state);
        state.secrets.iter().chain(&state.issued).chain(&state.instance_tokens).cloned().collect()
    }
}

fn iam_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "errorCode": code, "errorMessage": message, "context": { "requestId": nonce() } });
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}

/// Counts a call and applies the fault in force: `Err` is the answer to send.
async fn count(state: &Shared, what: &str) -> Result<i64, Response> {
    let (fault, lifetime) = {
        let mut state = lock(state);
        *state.calls.entry(what.to_string()).or_default() += 1;
        (state.fault.clone(), state.token_lifetime)
    };
    apply_fault(fault, lifetime, |status| iam_error(status, "BXNIM0503E", "the fake was told to fail")).await
}

fn issue(state: &Shared, grant: &str, profile: &str, lifetime: i64) -> (String, i64) {
    let expiration = unix_now() as i64 + lifetime;
    let token = fake_jwt(&serde_json::json!({ "iam_id": profile, "exp": expiration, "jti": nonce() }));
    let mut state = lock(state);
    state.issued.push(token.clone());
    state.grants.push((grant.to_string(), profile.to_string()));
    (token, expiration)
}

async fn handle(State(state): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    match (method, uri.path()) {
        (Method::POST, "/identity/token") => {
            let form: BTreeMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
            iam(&state, &form).await
        }
        (Method::PUT, "/instance_identity/v1/token") => instance_token(&state, &headers).await,
        (Method::POST, "/instance_identity/v1/iam_token") => instance_iam_token(&state, &headers, &body).await,
        _ => iam_error(StatusCode::NOT_FOUND, "BXNIM0404E", "no such route in the fake"),
    }
}

async fn iam(state: &Shared, form: &BTreeMap<String, String>) -> Response {
    let lifetime = match count(state, "iam:token").await {
        Ok(lifetime) => lifetime,
        Err(response) => return response,
    };
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    let (grant, profile) = match field("grant_type") {
        "urn:ibm:params:oauth:grant-type:apikey" => {
            if !lock(state).api_keys.contains(field("apikey")) {
                return iam_error(StatusCode::BAD_REQUEST, "BXNIM0415E", "Provided API key could not be found.");
            }
            ("apikey", String::new())
        }
        "urn:ibm:params:oauth:grant-type:cr-token" => {
            let profile = [("profile_id", "id"), ("profile_name", "name"), ("profile_crn", "crn")]
                .iter()
                .find_map(|(param, kind)| form.get(*param).map(|v| format!("{kind}:{v}")))
                .unwrap_or_default();
            let trusted = lock(state).profiles.get(&profile).is_some_and(|tokens| tokens.contains(field("cr_token")));
            if !trusted {
                return iam_error(
                    StatusCode::BAD_REQUEST,
                    "BXNIM0538E",
                    "The compute resource token is not trusted by the trusted profile.",
                );
            }
            ("cr-token", profile)
        }
        other => return iam_error(StatusCode::BAD_REQUEST, "BXNIM0109E", &format!("unsupported grant type {other:?}")),
    };
    let (token, expiration) = issue(state, grant, &profile, lifetime);
    let refresh = format!("not-a-real-refresh-token-{}", nonce());
    lock(state).secrets.push(refresh.clone());
    axum::Json(serde_json::json!({
        "access_token": token,
        "refresh_token": refresh,
        "token_type": "Bearer",
        "expires_in": lifetime,
        "expiration": expiration,
        "scope": "ibm openid",
    }))
    .into_response()
}

fn vpc_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "errors": [{ "code": code, "message": message }], "trace": nonce() });
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}

fn rfc3339(unix: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

async fn instance_token(state: &Shared, headers: &HeaderMap) -> Response {
    if headers.get("metadata-flavor").and_then(|v| v.to_str().ok()) != Some("ibm") {
        return vpc_error(StatusCode::BAD_REQUEST, "missing_metadata_flavor", "Metadata-Flavor: ibm is required");
    }
    *lock(state).calls.entry("vpc:instance-token".into()).or_default() += 1;
    let token = format!("fake-instance-identity-{}", nonce());
    lock(state).instance_tokens.insert(token.clone());
    let expires = unix_now() as i64 + 300;
    axum::Json(serde_json::json!({
        "access_token": token,
        "created_at": rfc3339(unix_now() as i64),
        "expires_at": rfc3339(expires),
        "expires_in": 300,
    }))
    .into_response()
}

async fn instance_iam_token(state: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    let lifetime = match count(state, "vpc:iam-token").await {
        Ok(lifetime) => lifetime,
        Err(response) => return response,
    };
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if !bearer.is_some_and(|t| lock(state).instance_tokens.contains(t)) {
        return vpc_error(StatusCode::UNAUTHORIZED, "unauthorized", "an instance identity token is required");
    }
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let profile = match (&request["trusted_profile"]["id"], &request["trusted_profile"]["crn"]) {
        (serde_json::Value::String(id), _) => format!("id:{id}"),
        (_, serde_json::Value::String(crn)) => format!("crn:{crn}"),
        _ => format!("id:{LINKED_PROFILE}"),
    };
    if !lock(state).instance_profiles.contains(&profile) {
        return vpc_error(
            StatusCode::FORBIDDEN,
            "profile_not_linked",
            "the trusted profile is not linked to this instance",
        );
    }
    let (token, expiration) = issue(state, "vpc", &profile, lifetime);
    axum::Json(serde_json::json!({
        "access_token": token,
        "created_at": rfc3339(unix_now() as i64),
        "expires_at": rfc3339(expiration),
        "expires_in": lifetime,
    }))
    .into_response()
}
