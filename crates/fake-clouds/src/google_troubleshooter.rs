//! Google's Policy Troubleshooter (v3, `POST /v3/iam:troubleshoot`), as the
//! fake Google answers it: the access of a principal (an email) to a
//! permission on a resource, from the allow bindings and deny rules a test
//! gave, with the explanation's shape (overall state, the allow policies'
//! role bindings, the deny policies) and its errors (`INVALID_ARGUMENT` for
//! a principal that is not an email, `PERMISSION_DENIED` for a caller that
//! may not troubleshoot).

use serde_json::{Value, json};

/// An allow binding: `role` (with its permissions) for `members` on `resource`.
#[derive(Clone, Debug)]
pub struct Binding {
    pub resource: String,
    pub role: String,
    pub permissions: Vec<String>,
    pub members: Vec<String>,
}

/// A deny rule: `permission` denied to `principal` under `resource`, by `policy`.
#[derive(Clone, Debug)]
pub struct DenyRule {
    pub resource: String,
    pub policy: String,
    pub principal: String,
    pub permission: String,
}

/// The answer to a troubleshooting request: its JSON, or (status, status name, message).
pub fn troubleshoot(
    bindings: &[Binding],
    denies: &[DenyRule],
    request: &Value,
) -> Result<Value, (u16, &'static str, String)> {
    let tuple = &request["accessTuple"];
    let (Some(principal), Some(resource), Some(permission)) =
        (tuple["principal"].as_str(), tuple["fullResourceName"].as_str(), tuple["permission"].as_str())
    else {
        return Err((400, "INVALID_ARGUMENT", "accessTuple needs principal, fullResourceName and permission".into()));
    };
    if !principal.contains('@') {
        return Err((400, "INVALID_ARGUMENT", format!("principal {principal:?} is not an email address")));
    }
    // A resource's own policies apply, and its project's.
    let applies = |on: &str| {
        resource == on
            || on
                .strip_prefix("//cloudresourcemanager.googleapis.com/projects/")
                .is_some_and(|project| resource.contains(&format!("/projects/{project}/")))
    };
    let member = format!("serviceAccount:{principal}");
    let mut explained = Vec::new();
    let mut granted = false;
    for binding in bindings.iter().filter(|b| applies(&b.resource)) {
        let has_permission = binding.permissions.iter().any(|p| p == permission);
        let is_member = binding.members.iter().any(|m| *m == member || m == "allUsers");
        let state =
            if has_permission && is_member { "ALLOW_ACCESS_STATE_GRANTED" } else { "ALLOW_ACCESS_STATE_NOT_GRANTED" };
        granted |= has_permission && is_member;
        explained.push(json!({
            "allowAccessState": state,
            "fullResourceName": binding.resource,
            "bindingExplanations": [{
                "allowAccessState": state,
                "role": binding.role,
                "rolePermission": if has_permission { "ROLE_PERMISSION_INCLUDED" } else { "ROLE_PERMISSION_NOT_INCLUDED" },
                "combinedMembership": { "membership": if is_member { "MEMBERSHIP_MATCHED" } else { "MEMBERSHIP_NOT_MATCHED" }, "relevance": "HEURISTIC_RELEVANCE_HIGH" },
            }],
            "relevance": "HEURISTIC_RELEVANCE_HIGH",
        }));
    }
    let denying: Vec<&DenyRule> = denies
        .iter()
        .filter(|d| applies(&d.resource) && d.permission == permission && (d.principal == member || d.principal == "*"))
        .collect();
    let overall = match (granted, denying.is_empty()) {
        (true, true) => "CAN_ACCESS",
        _ => "CANNOT_ACCESS",
    };
    let deny_resources: Vec<Value> = denying
        .iter()
        .map(|d| {
            json!({
                "denyAccessState": "DENY_ACCESS_STATE_DENIED",
                "fullResourceName": d.resource,
                "explainedPolicies": [{ "denyAccessState": "DENY_ACCESS_STATE_DENIED", "policy": { "name": d.policy }, "ruleExplanations": [{ "denyAccessState": "DENY_ACCESS_STATE_DENIED" }] }],
            })
        })
        .collect();
    Ok(json!({
        "overallAccessState": overall,
        "accessTuple": tuple,
        "allowPolicyExplanation": {
            "allowAccessState": if granted { "ALLOW_ACCESS_STATE_GRANTED" } else { "ALLOW_ACCESS_STATE_NOT_GRANTED" },
            "explainedPolicies": explained,
            "relevance": "HEURISTIC_RELEVANCE_HIGH",
        },
        "denyPolicyExplanation": {
            "denyAccessState": if denying.is_empty() { "DENY_ACCESS_STATE_NOT_DENIED" } else { "DENY_ACCESS_STATE_DENIED" },
            "explainedResources": deny_resources,
            "permissionDeniable": true,
        },
    }))
}
