//! IAM's policy simulator, as the fake AWS answers it: `SimulatePrincipalPolicy`
//! (Query API, version 2010-05-08) for a principal whose identity policies
//! the test gave, with the caller's resource policy, evaluated as IAM does
//! for what a pull needs (an explicit deny wins, then an allow, else an
//! implicit deny), and answered a page at a time (`MaxItems`, `Marker`,
//! `IsTruncated`), with IAM's error codes (`NoSuchEntity`, `InvalidInput`).

use std::collections::BTreeMap;

use serde_json::Value;

/// The most results the fake puts on a page, whatever `MaxItems` asks: small
/// enough that a check's seven actions take two pages.
const PAGE: usize = 4;

/// One request the simulator was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Simulation {
    pub principal: String,
    pub actions: Vec<String>,
    pub resources: Vec<String>,
    /// Whether a resource policy came with it.
    pub resource_policy: bool,
    pub marker: Option<String>,
}

/// A policy document and where it comes from, as IAM names it in `MatchedStatements`.
#[derive(Clone, Debug)]
pub struct SourcePolicy {
    pub id: String,
    /// `role`, `user`, `aws-managed`, `user-managed`, `resource`…
    pub kind: String,
    pub document: String,
}

/// One action's verdict on one resource.
struct Evaluation {
    decision: &'static str,
    /// (policy id, kind, line) of the statements that decided it.
    matched: Vec<(String, String, usize)>,
}

/// The answer to one `SimulatePrincipalPolicy`: the XML body, or IAM's
/// error (status, code, message).
pub fn simulate(
    policies: &BTreeMap<String, Vec<SourcePolicy>>,
    form: &BTreeMap<String, String>,
) -> Result<(String, Simulation), (u16, &'static str, String)> {
    let principal = form.get("PolicySourceArn").cloned().unwrap_or_default();
    let members =
        |name: &str| -> Vec<String> { (1..).map_while(|n| form.get(&format!("{name}.member.{n}")).cloned()).collect() };
    let actions = members("ActionNames");
    let resources = match members("ResourceArns") {
        resources if resources.is_empty() => vec!["*".to_string()],
        resources => resources,
    };
    if !principal.starts_with("arn:aws:iam::") || actions.is_empty() {
        return Err((400, "InvalidInput", "PolicySourceArn must be an IAM ARN and ActionNames not empty".into()));
    }
    let Some(identity) = policies.get(&principal) else {
        let name = principal.rsplit('/').next().unwrap_or_default();
        return Err((404, "NoSuchEntity", format!("The role with name {name} cannot be found.")));
    };
    let resource_policy = form.get("ResourcePolicy").map(|document| SourcePolicy {
        id: "ResourcePolicy".into(),
        kind: "resource".into(),
        document: document.clone(),
    });
    let simulation = Simulation {
        principal: principal.clone(),
        actions: actions.clone(),
        resources: resources.clone(),
        resource_policy: resource_policy.is_some(),
        marker: form.get("Marker").cloned(),
    };
    let all: Vec<(String, String)> =
        actions.iter().flat_map(|a| resources.iter().map(move |r| (a.clone(), r.clone()))).collect();
    let start: usize =
        form.get("Marker").and_then(|m| m.strip_prefix("page-")).and_then(|n| n.parse().ok()).unwrap_or(0);
    let size = form.get("MaxItems").and_then(|m| m.parse::<usize>().ok()).unwrap_or(100).clamp(1, PAGE);
    let page = all.iter().skip(start).take(size);
    let mut members_xml = String::new();
    for (action, resource) in page {
        let evaluation = evaluate(identity, resource_policy.as_ref(), &principal, action, resource);
        let statements: String = evaluation
            .matched
            .iter()
            .map(|(id, kind, line)| {
                format!(
                    "<member><SourcePolicyId>{id}</SourcePolicyId><SourcePolicyType>{kind}</SourcePolicyType><StartPosition><Line>{line}</Line><Column>1</Column></StartPosition><EndPosition><Line>{line}</Line><Column>80</Column></EndPosition></member>"
                )
            })
            .collect();
        members_xml.push_str(&format!(
            "<member><EvalActionName>{action}</EvalActionName><EvalResourceName>{resource}</EvalResourceName><EvalDecision>{}</EvalDecision><MatchedStatements>{statements}</MatchedStatements><MissingContextValues/></member>",
            evaluation.decision
        ));
    }
    let next = start + size;
    let (truncated, marker) = match next < all.len() {
        true => ("true", format!("<Marker>page-{next}</Marker>")),
        false => ("false", String::new()),
    };
    let body = format!(
        r#"<SimulatePrincipalPolicyResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/"><SimulatePrincipalPolicyResult><IsTruncated>{truncated}</IsTruncated>{marker}<EvaluationResults>{members_xml}</EvaluationResults></SimulatePrincipalPolicyResult><ResponseMetadata><RequestId>fake</RequestId></ResponseMetadata></SimulatePrincipalPolicyResponse>"#
    );
    Ok((body, simulation))
}

/// IAM's verdict for `principal` doing `action` on `resource`: an explicit
/// deny in any policy wins; then an allow in its identity policies, or in the
/// resource policy for a principal it names; else an implicit deny.
fn evaluate(
    identity: &[SourcePolicy],
    resource_policy: Option<&SourcePolicy>,
    principal: &str,
    action: &str,
    resource: &str,
) -> Evaluation {
    let mut allows = Vec::new();
    let mut denies = Vec::new();
    for (policy, is_resource) in identity.iter().map(|p| (p, false)).chain(resource_policy.map(|p| (p, true))) {
        let document: Value = serde_json::from_str(&policy.document).unwrap_or_default();
        let statements = match &document["Statement"] {
            Value::Array(statements) => statements.clone(),
            statement @ Value::Object(_) => vec![statement.clone()],
            _ => Vec::new(),
        };
        for statement in &statements {
            let applies = list(&statement["Action"]).iter().any(|pattern| glob(pattern, action))
                && (is_resource || list(&statement["Resource"]).iter().any(|pattern| glob(pattern, resource)))
                && (!is_resource || names_principal(&statement["Principal"], principal));
            if !applies {
                continue;
            }
            let line = statement_line(&policy.document, statement);
            let matched = (policy.id.clone(), policy.kind.clone(), line);
            match statement["Effect"].as_str() {
                Some("Deny") => denies.push(matched),
                Some("Allow") => allows.push(matched),
                _ => {}
            }
        }
    }
    match (denies.is_empty(), allows.is_empty()) {
        (false, _) => Evaluation { decision: "explicitDeny", matched: denies },
        (true, false) => Evaluation { decision: "allowed", matched: allows },
        (true, true) => Evaluation { decision: "implicitDeny", matched: Vec::new() },
    }
}

fn list(value: &Value) -> Vec<String> {
    match value {
        Value::String(one) => vec![one.clone()],
        Value::Array(many) => many.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    }
}

/// Whether a resource policy's `Principal` names `principal` (itself, its
/// account's root, or everyone).
fn names_principal(value: &Value, principal: &str) -> bool {
    let account = principal.split(':').nth(4).unwrap_or_default();
    let root = format!("arn:aws:iam::{account}:root");
    let names =
        |candidates: Vec<String>| candidates.iter().any(|c| c == "*" || c == principal || *c == root || c == account);
    match value {
        Value::String(star) => star == "*",
        Value::Object(map) => map.get("AWS").is_some_and(|aws| names(list(aws))),
        _ => false,
    }
}

/// IAM's wildcards: `*` any run of characters, `?` any one; actions are
/// matched without regard to case.
fn glob(pattern: &str, text: &str) -> bool {
    fn matches(p: &[char], t: &[char]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some('*'), _) => matches(&p[1..], t) || (!t.is_empty() && matches(p, &t[1..])),
            (Some('?'), Some(_)) => matches(&p[1..], &t[1..]),
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b) && matches(&p[1..], &t[1..]),
            _ => false,
        }
    }
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    matches(&p, &t)
}

/// The line of the policy text where `statement` starts: where its `Sid` is,
/// else the first line.
fn statement_line(document: &str, statement: &Value) -> usize {
    let Some(sid) = statement["Sid"].as_str() else { return 1 };
    let needle = format!("\"{sid}\"");
    document.lines().position(|line| line.contains(&needle)).map_or(1, |index| index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_and_decisions() {
        assert!(glob("ecr:*", "ecr:BatchGetImage"));
        assert!(glob("ecr:batch*", "ecr:BatchGetImage"));
        assert!(!glob("ecr:Get*", "ecr:BatchGetImage"));
        assert!(glob("arn:aws:ecr:*:123:repository/shop/*", "arn:aws:ecr:us-east-1:123:repository/shop/web"));
        let role = "arn:aws:iam::123:role/node";
        let identity = vec![SourcePolicy {
            id: "pull".into(),
            kind: "role".into(),
            document: r#"{"Statement":[{"Sid":"Pull","Effect":"Allow","Action":"ecr:*","Resource":"*"}]}"#.into(),
        }];
        let deny = SourcePolicy {
            id: "ResourcePolicy".into(),
            kind: "resource".into(),
            document: r#"{"Statement":{"Effect":"Deny","Principal":"*","Action":"ecr:BatchGetImage"}}"#.into(),
        };
        assert_eq!(evaluate(&identity, None, role, "ecr:BatchGetImage", "x").decision, "allowed");
        assert_eq!(evaluate(&identity, Some(&deny), role, "ecr:BatchGetImage", "x").decision, "explicitDeny");
        assert_eq!(evaluate(&[], None, role, "ecr:ListImages", "x").decision, "implicitDeny");
    }
}
