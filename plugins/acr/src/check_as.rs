//! `check --as PRINCIPAL`: whether another principal (the nodes' managed
//! identity or a service principal, by object id) may pull from the image's
//! registry, from Azure's own records of its rights: the registry's resource
//! (its id and role assignment mode, found by login server in the
//! subscription), the principal's groups (Graph's `getMemberObjects`), the
//! role assignments that apply at the registry's scope (its own and its
//! ancestors', `atScope()`) to the principal or a group of it, their role
//! definitions, and the deny assignments that apply. A pull needs
//! `Microsoft.ContainerRegistry/registries/pull/read`, or, on a registry with
//! repository permissions (ABAC), the repositories' content and metadata read
//! data actions. Everything is read as the runner, which needs Reader on the
//! registry (or `Microsoft.Authorization/*/read`) and Graph's
//! `Directory.Read.All`.

use std::collections::{BTreeMap, BTreeSet};

use credential_provider::http::Http;
use credential_provider::{CheckReport, CheckStep, Error, ImageRef, Outcome, Secret};
use serde::Deserialize;
use serde_json::Value;

use crate::{Acr, AcrTarget, identity};

/// What a pull needs on a registry whose roles apply to the whole registry.
const PULL_ACTION: &str = "Microsoft.ContainerRegistry/registries/pull/read";
/// What a pull needs on a registry with repository permissions (ABAC).
const PULL_DATA_ACTIONS: [&str; 2] = [
    "Microsoft.ContainerRegistry/registries/repositories/content/read",
    "Microsoft.ContainerRegistry/registries/repositories/metadata/read",
];
const ARM_VERSION: &str = "2022-04-01";
const REGISTRY_VERSION: &str = "2023-07-01";
/// Enough pages of any list for a subscription's registries or a scope's assignments.
const MAX_PAGES: usize = 50;

pub async fn run(acr: &Acr, image: &ImageRef, target: &AcrTarget, principal: &str) -> Result<CheckReport, Error> {
    let report = |steps| CheckReport {
        image: image.to_string(),
        identity: format!("{principal} (evaluated from Azure's role and deny assignments)"),
        steps,
    };
    let subscription = acr.config.subscription_id.clone().ok_or_else(|| {
        Error::Config(
            "check --as needs the registry's subscription: subscriptionId in azure.json, or AZURE_SUBSCRIPTION_ID"
                .into(),
        )
    })?;
    let http = Http::new()?;
    let (arm_base, arm_scope) = acr.config.cloud.resource_manager();
    let (graph_base, graph_scope) = acr.config.cloud.graph();
    let arm = Api {
        http: &http,
        base: acr.endpoints.resolve("management", None, arm_base).to_string(),
        token: identity::entra_token(&target.identity, &acr.config, None, acr.transport(&http), arm_scope).await?.token,
        service: "Azure Resource Manager",
    };
    let graph = Api {
        http: &http,
        base: acr.endpoints.resolve("graph", None, graph_base).to_string(),
        token: identity::entra_token(&target.identity, &acr.config, None, acr.transport(&http), graph_scope)
            .await?
            .token,
        service: "Microsoft Graph",
    };
    let unknown = |what: &str, e: Error| {
        vec![CheckStep::new(what, Outcome::Unknown, format!("the runner could not read it: {e}"))]
    };

    // The registry, by login server.
    let registries = match arm
        .list(&format!("/subscriptions/{subscription}/providers/Microsoft.ContainerRegistry/registries?api-version={REGISTRY_VERSION}"))
        .await
    {
        Ok(registries) => registries,
        Err(e) => return Ok(report(unknown("registry", e))),
    };
    let name = target.login_server.split('.').next().unwrap_or_default();
    let found = registries.iter().find(|r| {
        r["properties"]["loginServer"].as_str().is_some_and(|s| s.eq_ignore_ascii_case(&target.login_server))
            || r["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name))
    });
    let Some(registry) = found else {
        let detail = format!("no registry of subscription {subscription} serves {}", target.login_server);
        return Ok(report(vec![CheckStep::new("registry", Outcome::Unknown, detail)]));
    };
    let id = registry["id"].as_str().unwrap_or_default().to_string();
    let abac = registry["properties"]["roleAssignmentMode"].as_str() == Some("AbacRepositoryPermissions");
    let mut steps = vec![CheckStep::new(
        "registry",
        Outcome::Allowed,
        format!("{id} ({})", if abac { "repository permissions" } else { "registry permissions" }),
    )];
    let needed: Vec<(&str, bool)> = match abac {
        true => PULL_DATA_ACTIONS.iter().map(|a| (*a, true)).collect(),
        false => vec![(PULL_ACTION, false)],
    };
    let unknown_all = |e: &Error| -> Vec<CheckStep> {
        needed
            .iter()
            .map(|(a, _)| CheckStep::new(*a, Outcome::Unknown, format!("the runner could not read it: {e}")))
            .collect()
    };

    // Who the principal is, for Azure's records: itself and its groups.
    let mut members = BTreeSet::from([principal.to_ascii_lowercase()]);
    let groups: Result<MemberObjects, Error> = graph
        .post_json(
            &format!("/v1.0/directoryObjects/{principal}/getMemberObjects"),
            &serde_json::json!({ "securityEnabledOnly": false }),
        )
        .await;
    match groups {
        Ok(groups) => members.extend(groups.value.iter().map(|g| g.to_ascii_lowercase())),
        Err(e) => {
            steps.extend(unknown_all(&e));
            return Ok(report(steps));
        }
    }
    let filter = "%24filter=atScope()";
    let assignments = arm
        .list(&format!("{id}/providers/Microsoft.Authorization/roleAssignments?api-version={ARM_VERSION}&{filter}"))
        .await;
    let denies = arm
        .list(&format!("{id}/providers/Microsoft.Authorization/denyAssignments?api-version={ARM_VERSION}&{filter}"))
        .await;
    let (assignments, denies) = match (assignments, denies) {
        (Ok(a), Ok(d)) => (a, d),
        (Err(e), _) | (_, Err(e)) => {
            steps.extend(unknown_all(&e));
            return Ok(report(steps));
        }
    };
    let mine: Vec<&Value> = assignments
        .iter()
        .filter(|a| a["properties"]["principalId"].as_str().is_some_and(|p| members.contains(&p.to_ascii_lowercase())))
        .collect();
    // Each role definition once.
    let mut roles: BTreeMap<String, Value> = BTreeMap::new();
    for assignment in &mine {
        let role = assignment["properties"]["roleDefinitionId"].as_str().unwrap_or_default().to_string();
        if let std::collections::btree_map::Entry::Vacant(entry) = roles.entry(role) {
            match arm.get(&format!("{}?api-version={ARM_VERSION}", entry.key())).await {
                Ok(definition) => {
                    entry.insert(definition);
                }
                Err(e) => {
                    steps.extend(unknown_all(&e));
                    return Ok(report(steps));
                }
            }
        }
    }
    for (action, data) in &needed {
        steps.push(verdict(action, *data, &mine, &roles, &denies, &members));
    }
    Ok(report(steps))
}

/// Whether the assignments grant `action` (a data action if `data`), and no
/// deny assignment takes it back.
fn verdict(
    action: &str,
    data: bool,
    assignments: &[&Value],
    roles: &BTreeMap<String, Value>,
    denies: &[Value],
    members: &BTreeSet<String>,
) -> CheckStep {
    let (key, not_key) = if data { ("dataActions", "notDataActions") } else { ("actions", "notActions") };
    let grants = |permissions: &Value| {
        permissions.as_array().into_iter().flatten().any(|p| {
            patterns(&p[key]).iter().any(|pattern| matches(pattern, action))
                && !patterns(&p[not_key]).iter().any(|pattern| matches(pattern, action))
        })
    };
    for deny in denies {
        let properties = &deny["properties"];
        let applies = properties["principals"].as_array().into_iter().flatten().any(|p| {
            p["id"].as_str().is_some_and(|id| {
                id == "00000000-0000-0000-0000-000000000000" || members.contains(&id.to_ascii_lowercase())
            })
        }) && !properties["excludePrincipals"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["id"].as_str().is_some_and(|id| members.contains(&id.to_ascii_lowercase())));
        if applies && grants(&properties["permissions"]) {
            let name = properties["denyAssignmentName"].as_str().unwrap_or("a deny assignment");
            let scope = properties["scope"].as_str().unwrap_or_default();
            return CheckStep::new(action, Outcome::Denied, format!("denied by the deny assignment {name} at {scope}"));
        }
    }
    let mut conditional = Vec::new();
    for assignment in assignments {
        let properties = &assignment["properties"];
        let role_id = properties["roleDefinitionId"].as_str().unwrap_or_default();
        let Some(role) = roles.get(role_id) else { continue };
        if !grants(&role["properties"]["permissions"]) {
            continue;
        }
        let role_name = role["properties"]["roleName"].as_str().unwrap_or(role_id);
        let scope = properties["scope"].as_str().unwrap_or_default();
        match properties["condition"].as_str().filter(|c| !c.trim().is_empty()) {
            None => return CheckStep::new(action, Outcome::Allowed, format!("granted by {role_name} at {scope}")),
            Some(condition) => conditional.push(format!("{role_name} at {scope}, on the condition {condition}")),
        }
    }
    match conditional.is_empty() {
        true => CheckStep::new(
            action,
            Outcome::Denied,
            format!(
                "no role assignment to the principal or its groups at the registry or above grants it ({})",
                if data { "Container Registry Repository Reader does" } else { "AcrPull does" }
            ),
        ),
        false => CheckStep::new(
            action,
            Outcome::Unknown,
            format!(
                "granted only conditionally ({}): check that the condition covers this repository",
                conditional.join("; ")
            ),
        ),
    }
}

/// A permission list's patterns.
fn patterns(value: &Value) -> Vec<&str> {
    value.as_array().into_iter().flatten().filter_map(Value::as_str).collect()
}

/// Azure RBAC's wildcards: `*` any run of characters; case does not matter.
fn matches(pattern: &str, action: &str) -> bool {
    fn glob(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => glob(&p[1..], t) || (!t.is_empty() && glob(p, &t[1..])),
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b) && glob(&p[1..], &t[1..]),
            _ => false,
        }
    }
    glob(pattern.as_bytes(), action.as_bytes())
}

/// Graph's answer to getMemberObjects.
#[derive(Deserialize)]
struct MemberObjects {
    #[serde(default)]
    value: Vec<String>,
}

/// A JSON API read as the runner, with its token.
struct Api<'a> {
    http: &'a Http,
    base: String,
    token: Secret,
    service: &'static str,
}

impl Api<'_> {
    async fn get(&self, path: &str) -> Result<Value, Error> {
        self.get_url(&format!("{}{path}", self.base)).await
    }

    async fn get_url(&self, url: &str) -> Result<Value, Error> {
        let request = self.http.get(url).bearer_auth(self.token.expose());
        let reply = self.http.send(self.service, request).await?;
        if !reply.is_success() {
            return Err(reply.error(self.service));
        }
        reply.json(self.service)
    }

    async fn post_json<T: serde::de::DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T, Error> {
        let request = self.http.post(&format!("{}{path}", self.base)).bearer_auth(self.token.expose()).json(body);
        let reply = self.http.send(self.service, request).await?;
        if !reply.is_success() {
            return Err(reply.error(self.service));
        }
        reply.json(self.service)
    }

    /// Every item of a paged list, following `nextLink` on this API's own
    /// host only (the token goes nowhere else).
    async fn list(&self, path: &str) -> Result<Vec<Value>, Error> {
        let mut items = Vec::new();
        let mut url = format!("{}{path}", self.base);
        for _ in 0..MAX_PAGES {
            let page = self.get_url(&url).await?;
            items.extend(page["value"].as_array().cloned().unwrap_or_default());
            match page["nextLink"].as_str() {
                Some(next) if next.starts_with(&format!("{}/", self.base)) => url = next.to_string(),
                Some(next) => {
                    return Err(Error::cloud(
                        self.service,
                        format!("a nextLink to another host ({next}) was not followed"),
                    ));
                }
                None => return Ok(items),
            }
        }
        Err(Error::cloud(self.service, format!("more than {MAX_PAGES} pages")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rbac_wildcards() {
        assert!(matches("Microsoft.ContainerRegistry/registries/pull/read", PULL_ACTION));
        assert!(matches("microsoft.containerregistry/*", PULL_ACTION));
        assert!(matches("*", PULL_ACTION));
        assert!(matches("*/read", PULL_ACTION));
        assert!(matches("Microsoft.ContainerRegistry/*/read", PULL_ACTION));
        assert!(!matches("Microsoft.ContainerRegistry/registries/push/write", PULL_ACTION));
        assert!(!matches("Microsoft.Storage/*", PULL_ACTION));
    }
}
