//! The parts of Azure Resource Manager and Microsoft Graph that `check --as`
//! reads, as the fake Azure answers them, from what a test set up: the
//! subscription's container registries, role assignments and deny
//! assignments at a scope (`$filter=atScope()`, those of the scope and of
//! its ancestors), role definitions, and a principal's group memberships
//! (`getMemberObjects`). Lists come a page at a time (`nextLink`, two items a
//! page), errors in ARM's and Graph's shapes (`AuthorizationFailed`,
//! `Authorization_RequestDenied`, `ResourceNotFound`).

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// AcrPull's role definition, as every subscription has it.
pub const ACR_PULL: &str = "7f951dda-4ed3-4680-a7ca-43fe172d538d";
/// How many items the fake puts on a page of a list.
const PAGE: usize = 2;

/// A role assignment.
#[derive(Clone, Debug)]
pub struct RoleAssignment {
    pub scope: String,
    pub principal: String,
    pub role_definition: String,
    pub condition: Option<String>,
}

/// A deny assignment.
#[derive(Clone, Debug)]
pub struct DenyAssignment {
    pub name: String,
    pub scope: String,
    pub actions: Vec<String>,
    pub data_actions: Vec<String>,
    pub principals: Vec<String>,
}

/// What the fake ARM and Graph know.
#[derive(Debug, Default)]
pub struct ArmState {
    /// (id, login server, role assignment mode) of each registry.
    pub registries: Vec<(String, String, String)>,
    pub role_assignments: Vec<RoleAssignment>,
    /// Role definition id → (name, actions, data actions).
    pub role_definitions: BTreeMap<String, (String, Vec<String>, Vec<String>)>,
    pub deny_assignments: Vec<DenyAssignment>,
    /// Principal → the groups it belongs to, transitively.
    pub memberships: BTreeMap<String, Vec<String>>,
    /// Whether the caller may not read role and deny assignments.
    pub authorization_denied: bool,
}

/// The ARM answer to `GET path` (with `query`), on the fake at `url`, or
/// `None` for a path that is not ARM's.
pub fn arm(arm: &ArmState, url: &str, path: &str, query: &BTreeMap<String, String>) -> Option<Response> {
    let skip: usize = query.get("$skipToken").and_then(|s| s.parse().ok()).unwrap_or(0);
    let page = |items: Vec<Value>| -> Response {
        let next = skip + PAGE;
        let mut body = json!({ "value": items.iter().skip(skip).take(PAGE).cloned().collect::<Vec<_>>() });
        if next < items.len() {
            let version = query.get("api-version").map(String::as_str).unwrap_or_default();
            let filter = query.get("$filter").map(|f| format!("&$filter={}", encode(f))).unwrap_or_default();
            body["nextLink"] = format!("{url}{path}?api-version={version}{filter}&$skipToken={next}").into();
        }
        axum::Json(body).into_response()
    };
    if let Some(subscription) = path
        .strip_prefix("/subscriptions/")
        .and_then(|rest| rest.strip_suffix("/providers/Microsoft.ContainerRegistry/registries"))
    {
        let items = arm
            .registries
            .iter()
            .filter(|(id, _, _)| id.starts_with(&format!("/subscriptions/{subscription}/")))
            .map(|(id, login_server, mode)| {
                let name = id.rsplit('/').next().unwrap_or_default();
                json!({ "id": id, "name": name, "type": "Microsoft.ContainerRegistry/registries",
                        "properties": { "loginServer": login_server, "roleAssignmentMode": mode } })
            })
            .collect();
        return Some(page(items));
    }
    let at_scope =
        |scope: &str, of: &str| lower(scope) == lower(of) || lower(of).starts_with(&format!("{}/", lower(scope)));
    if let Some(scope) = path.strip_suffix("/providers/Microsoft.Authorization/roleAssignments") {
        if arm.authorization_denied {
            return Some(authorization_failed("Microsoft.Authorization/roleAssignments/read", scope));
        }
        let items = arm
            .role_assignments
            .iter()
            .enumerate()
            .filter(|(_, a)| at_scope(&a.scope, scope))
            .map(|(i, a)| {
                json!({ "id": format!("{}/providers/Microsoft.Authorization/roleAssignments/assignment-{i}", a.scope),
                        "name": format!("assignment-{i}"),
                        "properties": { "scope": a.scope, "principalId": a.principal, "roleDefinitionId": a.role_definition,
                                        "condition": a.condition, "principalType": "ServicePrincipal" } })
            })
            .collect();
        return Some(page(items));
    }
    if let Some(scope) = path.strip_suffix("/providers/Microsoft.Authorization/denyAssignments") {
        if arm.authorization_denied {
            return Some(authorization_failed("Microsoft.Authorization/denyAssignments/read", scope));
        }
        let items = arm
            .deny_assignments
            .iter()
            .filter(|d| at_scope(&d.scope, scope))
            .map(|d| {
                let principals: Vec<Value> = d.principals.iter().map(|p| json!({ "id": p, "type": "ServicePrincipal" })).collect();
                json!({ "id": format!("{}/providers/Microsoft.Authorization/denyAssignments/{}", d.scope, d.name),
                        "properties": { "denyAssignmentName": d.name, "scope": d.scope,
                                        "permissions": [{ "actions": d.actions, "notActions": [], "dataActions": d.data_actions, "notDataActions": [] }],
                                        "principals": principals, "excludePrincipals": [], "doNotApplyToChildScopes": false } })
            })
            .collect();
        return Some(page(items));
    }
    if path.contains("/providers/Microsoft.Authorization/roleDefinitions/") {
        let id = path.rsplit('/').next().unwrap_or_default();
        return Some(match arm.role_definitions.iter().find(|(key, _)| key.rsplit('/').next() == Some(id)) {
            Some((key, (name, actions, data_actions))) => axum::Json(json!({
                "id": key, "name": id,
                "properties": { "roleName": name, "type": "BuiltInRole",
                                "permissions": [{ "actions": actions, "notActions": [], "dataActions": data_actions, "notDataActions": [] }] }
            }))
            .into_response(),
            None => arm_error(StatusCode::NOT_FOUND, "RoleDefinitionDoesNotExist", "The specified role definition does not exist."),
        });
    }
    None
}

/// Graph's `POST /v1.0/directoryObjects/{id}/getMemberObjects`.
pub fn member_objects(arm: &ArmState, principal: &str) -> Response {
    if arm.authorization_denied {
        let body = json!({ "error": { "code": "Authorization_RequestDenied", "message": "Insufficient privileges to complete the operation." } });
        return (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
    }
    let groups = arm.memberships.get(principal).cloned().unwrap_or_default();
    axum::Json(json!({ "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(Edm.String)", "value": groups }))
        .into_response()
}

fn authorization_failed(action: &str, scope: &str) -> Response {
    arm_error(
        StatusCode::FORBIDDEN,
        "AuthorizationFailed",
        &format!(
            "The client does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid."
        ),
    )
}

fn arm_error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(json!({ "error": { "code": code, "message": message } }))).into_response()
}

fn lower(text: &str) -> String {
    text.to_ascii_lowercase()
}

fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
