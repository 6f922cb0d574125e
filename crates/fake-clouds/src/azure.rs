//! A fake of the Azure endpoints the ACR plugin calls, on one loopback port:
//! Entra ID's token endpoint (`POST /<tenant>/oauth2/v2.0/token`, client
//! credentials with a secret or a client assertion) and the instance metadata
//! service's managed identity endpoint (`GET /metadata/identity/oauth2/token`).
//!
//! Its access tokens are JWTs carrying the tenant (`tid`), so that the registry
//! exchange can name it; [`FakeAzure::token_check`] lets a fake ACR trust
//! exactly the tokens issued here.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::azure_arm::{self, ACR_PULL, ArmState, DenyAssignment, RoleAssignment};
use crate::server::{FakeServer, Fault, apply_fault, fake_jwt, lock, nonce, unix_now};

/// The tenant of every fake identity.
pub const TENANT: &str = "72f988bf-0000-4000-8000-000000000001";
/// The subscription of every fake resource.
pub const SUBSCRIPTION: &str = "00000000-1111-2222-3333-444444444444";
/// The scope ACR's Entra tokens are for, in the public cloud.
pub const REGISTRY_SCOPE: &str = "https://containerregistry.azure.net/.default";
/// The audiences the fake issues tokens for: the registry, and the APIs
/// `check --as` reads (Resource Manager, Graph).
const AUDIENCES: [&str; 3] =
    ["https://containerregistry.azure.net", "https://management.azure.com", "https://graph.microsoft.com"];

/// How an application proves itself.
#[derive(Clone, Debug)]
enum AppCredential {
    Secret(String),
    /// Client assertions it accepts (service-account or federated tokens).
    Assertions(Vec<String>),
}

#[derive(Debug, Default)]
struct AzureState {
    calls: BTreeMap<String, usize>,
    fault: Option<Fault>,
    /// client id → (tenant, credential)
    apps: BTreeMap<String, (String, AppCredential)>,
    /// Managed identities IMDS knows: "system", or a user-assigned client or resource id.
    identities: Vec<String>,
    issued: Vec<String>,
    secrets: Vec<String>,
    /// (client id or identity, how it proved itself) of each token issued.
    grants: Vec<(String, String)>,
    /// Each token's audience.
    audiences: BTreeMap<String, String>,
    /// The fake's own URL (ARM's `nextLink`s name it).
    url: String,
    /// What Resource Manager and Graph know (`check --as`).
    arm: ArmState,
}

type Shared = Arc<Mutex<AzureState>>;

/// The fake Azure, running until dropped.
#[derive(Debug)]
pub struct FakeAzure {
    server: FakeServer,
    state: Shared,
}

impl Default for FakeAzure {
    fn default() -> Self {
        FakeAzure::start()
    }
}

impl FakeAzure {
    /// A fake whose IMDS knows the VM's system-assigned identity.
    pub fn start() -> FakeAzure {
        FakeAzure::start_at("127.0.0.1:0")
    }

    /// The fake at `address`: IMDS's own address and port inside a test's
    /// private network namespace ([`crate::netns`]).
    pub fn start_at(address: &str) -> FakeAzure {
        let state = Shared::default();
        lock(&state).identities.push("system".into());
        let router = Router::new().fallback(handle).with_state(state.clone());
        let server = FakeServer::start_at(router, address);
        {
            let mut s = lock(&state);
            s.url = server.url();
            let acr_pull =
                format!("/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/{ACR_PULL}");
            let pull = vec!["Microsoft.ContainerRegistry/registries/pull/read".to_string()];
            s.arm.role_definitions.insert(acr_pull, ("AcrPull".into(), pull, Vec::new()));
        }
        FakeAzure { server, state }
    }

    /// Adds the registry `name` to `resource_group` of the fake subscription,
    /// its login server `login_server` and its role assignment mode
    /// (`LegacyRegistryPermissions`, or `AbacRepositoryPermissions`); its id.
    pub fn add_registry(&self, resource_group: &str, name: &str, login_server: &str, mode: &str) -> String {
        let id = format!(
            "/subscriptions/{SUBSCRIPTION}/resourceGroups/{resource_group}/providers/Microsoft.ContainerRegistry/registries/{name}"
        );
        lock(&self.state).arm.registries.push((id.clone(), login_server.into(), mode.into()));
        id
    }

    /// Defines the role `id` (a GUID) named `name`, with `actions` and `data_actions`.
    pub fn define_role(&self, id: &str, name: &str, actions: &[&str], data_actions: &[&str]) -> String {
        let full = format!("/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/{id}");
        let strings = |items: &[&str]| items.iter().map(|i| i.to_string()).collect();
        lock(&self.state)
            .arm
            .role_definitions
            .insert(full.clone(), (name.into(), strings(actions), strings(data_actions)));
        full
    }

    /// AcrPull's role definition id in the fake subscription.
    pub fn acr_pull(&self) -> String {
        format!("/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/{ACR_PULL}")
    }

    /// Assigns `role_definition` to `principal` (an object id) at `scope`, on `condition` if any.
    pub fn assign_role(&self, scope: &str, principal: &str, role_definition: &str, condition: Option<&str>) {
        lock(&self.state).arm.role_assignments.push(RoleAssignment {
            scope: scope.into(),
            principal: principal.into(),
            role_definition: role_definition.into(),
            condition: condition.map(str::to_string),
        });
    }

    /// A deny assignment `name` at `scope` of `actions` and `data_actions` for `principals`.
    pub fn deny_assignment(
        &self,
        scope: &str,
        name: &str,
        actions: &[&str],
        data_actions: &[&str],
        principals: &[&str],
    ) {
        let strings = |items: &[&str]| items.iter().map(|i| i.to_string()).collect();
        lock(&self.state).arm.deny_assignments.push(DenyAssignment {
            name: name.into(),
            scope: scope.into(),
            actions: strings(actions),
            data_actions: strings(data_actions),
            principals: strings(principals),
        });
    }

    /// Makes `principal` a member of `group` (Graph's getMemberObjects answers it).
    pub fn add_membership(&self, principal: &str, group: &str) {
        lock(&self.state).arm.memberships.entry(principal.into()).or_default().push(group.into());
    }

    /// Makes Resource Manager and Graph refuse to list assignments and memberships.
    pub fn deny_authorization_reads(&self) {
        lock(&self.state).arm.authorization_denied = true;
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// `CREDENTIAL_PROVIDER_ENDPOINTS` sending Entra ID and IMDS calls here.
    pub fn endpoint_env(&self) -> Vec<(String, String)> {
        vec![(
            "CREDENTIAL_PROVIDER_ENDPOINTS".into(),
            format!("login={url},imds={url},management={url},graph={url}", url = self.url()),
        )]
    }

    /// Registers an application with a client secret; returns the secret.
    pub fn add_secret_app(&self, client_id: &str) -> String {
        let secret = format!("fake-client-secret-{}", nonce());
        let mut state = lock(&self.state);
        state.apps.insert(client_id.to_string(), (TENANT.to_string(), AppCredential::Secret(secret.clone())));
        state.secrets.push(secret.clone());
        secret
    }

    /// Lets `client_id` authenticate with `assertion` (a federated or
    /// service-account token) in `tenant`.
    pub fn trust_assertion(&self, tenant: &str, client_id: &str, assertion: &str) {
        let mut state = lock(&self.state);
        let entry = state
            .apps
            .entry(client_id.to_string())
            .or_insert_with(|| (tenant.to_string(), AppCredential::Assertions(Vec::new())));
        if let AppCredential::Assertions(list) = &mut entry.1 {
            list.push(assertion.to_string());
        }
        state.secrets.push(assertion.to_string());
    }

    /// Adds a user-assigned identity IMDS knows, by client id or resource id.
    pub fn add_user_assigned_identity(&self, id: &str) {
        lock(&self.state).identities.push(id.to_string());
    }

    /// Makes every token call fail this way until cleared.
    pub fn set_fault(&self, fault: Option<Fault>) {
        lock(&self.state).fault = fault;
    }

    /// Calls to `entra:token` or `imds:token`.
    pub fn calls(&self, what: &str) -> usize {
        lock(&self.state).calls.get(what).copied().unwrap_or(0)
    }

    /// (who, how) of every token issued: `("app-id", "secret")`,
    /// `("app-id", "assertion")`, `("system", "imds")`…
    pub fn grants(&self) -> Vec<(String, String)> {
        lock(&self.state).grants.clone()
    }

    /// Every secret handed out or given.
    pub fn secrets(&self) -> Vec<String> {
        let state = lock(&self.state);
        state.secrets.iter().chain(&state.issued).cloned().collect()
    }

    /// A check a fake ACR uses to trust exactly the tokens this fake issued.
    pub fn token_check(&self) -> impl Fn(&str) -> bool + Send + 'static {
        let state = self.state.clone();
        move |token| lock(&state).audiences.get(token).is_some_and(|audience| audience == AUDIENCES[0])
    }
}

fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response {
    let body = serde_json::json!({ "error": code, "error_description": description, "error_codes": [7000215] });
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}

/// Counts a call and applies the fault in force: `Err` is the answer to send.
async fn count(state: &Shared, what: &str) -> Result<i64, Response> {
    let fault = {
        let mut state = lock(state);
        *state.calls.entry(what.to_string()).or_default() += 1;
        state.fault.clone()
    };
    apply_fault(fault, 3599, |status| oauth_error(status, "temporarily_unavailable", "the fake was told to fail")).await
}

fn issue(state: &Shared, tenant: &str, who: &str, how: &str, lifetime: i64, audience: &str) -> String {
    let token = fake_jwt(&serde_json::json!({
        "tid": tenant,
        "appid": who,
        "aud": audience,
        "exp": unix_now() as i64 + lifetime,
        "uti": nonce(),
    }));
    let mut state = lock(state);
    state.issued.push(token.clone());
    state.audiences.insert(token.clone(), audience.to_string());
    state.grants.push((who.to_string(), how.to_string()));
    token
}

async fn handle(State(state): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    if method == Method::GET && path == "/metadata/identity/oauth2/token" {
        let query: BTreeMap<String, String> =
            form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect();
        return imds(&state, &query, &headers).await;
    }
    // Resource Manager and Graph, for `check --as`: a token of their own audience.
    let audience = if path.starts_with("/v1.0/") { AUDIENCES[2] } else { AUDIENCES[1] };
    let bearer = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let authorized = bearer.is_some_and(|token| lock(&state).audiences.get(token).is_some_and(|a| a == audience));
    if path.starts_with("/subscriptions/") || path.starts_with("/providers/") || path.starts_with("/v1.0/") {
        if !authorized {
            let body = serde_json::json!({ "error": { "code": "InvalidAuthenticationToken", "message": "The access token is invalid." } });
            return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
        }
        *lock(&state).calls.entry(format!("arm:{}", path.rsplit('/').next().unwrap_or_default())).or_default() += 1;
        if let Some(principal) =
            path.strip_prefix("/v1.0/directoryObjects/").and_then(|p| p.strip_suffix("/getMemberObjects"))
        {
            return azure_arm::member_objects(&lock(&state).arm, principal);
        }
        let query: BTreeMap<String, String> =
            form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).into_owned().collect();
        let url = lock(&state).url.clone();
        if let Some(response) = azure_arm::arm(&lock(&state).arm, &url, &path, &query) {
            return response;
        }
        let body =
            serde_json::json!({ "error": { "code": "ResourceNotFound", "message": format!("{path} was not found.") } });
        return (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    }
    let tenant = path.strip_suffix("/oauth2/v2.0/token").map(|t| t.trim_start_matches('/').to_string());
    match (method, tenant) {
        (Method::POST, Some(tenant)) => {
            let form: BTreeMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
            entra(&state, &tenant, &form).await
        }
        _ => oauth_error(StatusCode::NOT_FOUND, "not_found", "no such route in the fake"),
    }
}

async fn entra(state: &Shared, tenant: &str, form: &BTreeMap<String, String>) -> Response {
    let lifetime = match count(state, "entra:token").await {
        Ok(lifetime) => lifetime,
        Err(response) => return response,
    };
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    let audience = field("scope").strip_suffix("/.default").unwrap_or_default().to_string();
    if field("grant_type") != "client_credentials" || !AUDIENCES.contains(&audience.as_str()) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_credentials for the registry, Resource Manager or Graph expected",
        );
    }
    let client_id = field("client_id");
    let app = lock(state).apps.get(client_id).cloned();
    let Some((app_tenant, credential)) = app else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            &format!("AADSTS700016: application {client_id} not found"),
        );
    };
    if app_tenant != tenant {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("AADSTS90002: tenant {tenant} not found"),
        );
    }
    let how = match (&credential, form.get("client_secret"), form.get("client_assertion")) {
        (AppCredential::Secret(expected), Some(given), _) if expected == given => "secret",
        (AppCredential::Assertions(trusted), _, Some(assertion))
            if trusted.contains(assertion)
                && field("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" =>
        {
            "assertion"
        }
        _ => {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "AADSTS7000215: Invalid client secret or assertion provided.",
            );
        }
    };
    let token = issue(state, tenant, client_id, how, lifetime, &audience);
    axum::Json(serde_json::json!({ "token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token }))
        .into_response()
}

async fn imds(state: &Shared, query: &BTreeMap<String, String>, headers: &HeaderMap) -> Response {
    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "Required metadata header not specified");
    }
    let lifetime = match count(state, "imds:token").await {
        Ok(lifetime) => lifetime,
        Err(response) => return response,
    };
    let resource = query.get("resource").cloned().unwrap_or_default();
    if !AUDIENCES.contains(&resource.as_str()) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_resource",
            "the registry, Resource Manager or Graph expected",
        );
    }
    let who = query.get("client_id").or_else(|| query.get("msi_res_id")).cloned().unwrap_or_else(|| "system".into());
    if !lock(state).identities.contains(&who) {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "Identity not found");
    }
    let token = issue(state, TENANT, &who, "imds", lifetime, &resource);
    axum::Json(serde_json::json!({
        "access_token": token,
        "expires_in": lifetime.to_string(),
        "expires_on": (unix_now() as i64 + lifetime).to_string(),
        "ext_expires_in": lifetime.to_string(),
        "not_before": unix_now().to_string(),
        "resource": resource,
        "token_type": "Bearer",
    }))
    .into_response()
}

/// AKS's identity-binding token endpoint, as a cluster's API server serves
/// it: TLS under the binding's own name with a certificate from a CA made for
/// the test, answering a client-credentials grant whose client assertion is
/// the service-account token with an Entra token (a JWT carrying the tenant).
/// Running until dropped.
pub struct FakeIdentityBinding {
    _server: crate::tls::TlsServer,
    ca: crate::tls::TestCa,
    /// (client id, client assertion) of each grant.
    seen: Arc<Mutex<Vec<(String, String)>>>,
    issued: Arc<Mutex<Vec<String>>>,
}

impl std::fmt::Debug for FakeIdentityBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeIdentityBinding").finish_non_exhaustive()
    }
}

impl FakeIdentityBinding {
    /// The endpoint for `sni_name`, at `address` (port 443, inside a test's
    /// private network namespace).
    pub fn start_at(address: &str, sni_name: &str) -> FakeIdentityBinding {
        let (seen, issued) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        let ca = crate::tls::TestCa::new();
        let (certificate, key) = ca.leaf(sni_name);
        let (recorded, tokens) = (seen.clone(), issued.clone());
        let router = Router::new().fallback(move |body: Bytes| {
            let (recorded, tokens) = (recorded.clone(), tokens.clone());
            async move {
                let form: BTreeMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
                let field = |name: &str| form.get(name).cloned().unwrap_or_default();
                let well_formed = field("grant_type") == "client_credentials"
                    && field("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
                    && field("scope") == REGISTRY_SCOPE;
                if !well_formed {
                    return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "unexpected grant");
                }
                lock(&recorded).push((field("client_id"), field("client_assertion")));
                let token = fake_jwt(&serde_json::json!({ "tid": TENANT, "exp": unix_now() + 3600 }));
                lock(&tokens).push(token.clone());
                axum::Json(serde_json::json!({ "access_token": token, "expires_in": 3600, "token_type": "Bearer" }))
                    .into_response()
            }
        });
        let server = crate::tls::TlsServer::start(router, address, &certificate, &key);
        FakeIdentityBinding { _server: server, ca, seen, issued }
    }

    /// The cluster's CA, PEM: what the plugin must trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca.certificate_pem
    }

    /// (client id, client assertion) of each grant, oldest first.
    pub fn grants(&self) -> Vec<(String, String)> {
        lock(&self.seen).clone()
    }

    /// The tokens issued so far (secrets, for the checks on stderr).
    pub fn issued(&self) -> Vec<String> {
        lock(&self.issued).clone()
    }

    /// A check that accepts exactly the tokens issued here (for a fake ACR's exchange).
    pub fn token_check(&self) -> impl Fn(&str) -> bool + Send + 'static {
        let issued = self.issued.clone();
        move |token| lock(&issued).iter().any(|t| t == token)
    }
}
