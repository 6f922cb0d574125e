//! `check`: who the node is to Google, whether its token can be had, whether
//! the token's scopes cover registries, and whether the registry grants pull
//! on the repository (the core's registry handshake).

use credential_provider::clock::unix_now;
use credential_provider::http::Http;
use credential_provider::registry::prove_pull;
use credential_provider::{CheckReport, CheckStep, Error, ImageRef, Outcome, Secret};

use crate::credentials_file::CredentialsFile;
use crate::{Gcr, Identity, USERNAME};

/// Scope prefixes that let a token read from registries.
const REGISTRY_SCOPES: &[&str] =
    &["https://www.googleapis.com/auth/devstorage", "https://www.googleapis.com/auth/cloud-platform"];

pub async fn run(
    gcr: &Gcr,
    image: &ImageRef,
    identity: &Identity,
    service_account_token: Option<&Secret>,
) -> CheckReport {
    let mut steps = Vec::new();
    let mut who = identity.describe();
    match identity {
        Identity::Metadata => match gcr.metadata() {
            Ok(metadata) => {
                match metadata.email().await {
                    Ok(email) => who = format!("{email} (metadata server)"),
                    Err(e) => steps.push(CheckStep::new("metadata:email", Outcome::of_error(&e), e.to_string())),
                }
                steps.push(match metadata.scopes().await {
                    Ok(scopes) if scopes.iter().any(|s| REGISTRY_SCOPES.iter().any(|p| s.starts_with(p))) => {
                        CheckStep::new("metadata:scopes", Outcome::Allowed, scopes.join(" "))
                    }
                    Ok(scopes) => CheckStep::new(
                        "metadata:scopes",
                        Outcome::Denied,
                        format!(
                            "no devstorage or cloud-platform scope ({}); set the node pool's access scopes",
                            if scopes.is_empty() { "none".to_string() } else { scopes.join(" ") }
                        ),
                    ),
                    Err(e) => CheckStep::new("metadata:scopes", Outcome::of_error(&e), e.to_string()),
                });
            }
            Err(e) => steps.push(CheckStep::new("metadata", Outcome::Unknown, e.to_string())),
        },
        Identity::CredentialsFile(path) => match CredentialsFile::read(path) {
            Ok(file) => who = format!("{} ({})", file.describe(), path.display()),
            Err(e) => steps.push(CheckStep::new("credentials file", Outcome::Denied, e.to_string())),
        },
        Identity::WorkloadIdentity { .. } | Identity::Dockercfg { .. } => {}
    }

    let login = match identity {
        Identity::Dockercfg { flow, image } => gcr.dockercfg_login(*flow, image).await,
        _ => gcr.access_token(identity, service_account_token).await.map(|token| {
            let left = token.expires_at.saturating_sub(unix_now());
            steps.push(CheckStep::new("token", Outcome::Allowed, format!("an access token valid for {left}s more")));
            (USERNAME.to_string(), token.token)
        }),
    };
    match login {
        Ok((username, password)) => steps.extend(prove_pull(&gcr.endpoints, image, &username, &password).await),
        Err(e) => steps.push(CheckStep::new("token", Outcome::of_error(&e), e.to_string())),
    }
    CheckReport { image: image.to_string(), identity: who, steps }
}

/// The Policy Troubleshooter's endpoint.
pub const POLICY_TROUBLESHOOTER_URL: &str = "https://policytroubleshooter.googleapis.com";

/// The permission a pull from Artifact Registry (and Container Registry, which
/// it serves) needs on the repository.
const DOWNLOAD: &str = "artifactregistry.repositories.downloadArtifacts";

/// `check --as PRINCIPAL`: Google's Policy Troubleshooter explains whether
/// the principal (a service account's or a user's email) holds the download
/// permission on the image's repository, through allow and deny policies,
/// inherited ones included; asked as the runner's own identity, which needs
/// to read those policies (`roles/iam.securityReviewer` and
/// `roles/iam.denyReviewer` on the project).
pub async fn run_as(gcr: &Gcr, image: &ImageRef, runner: &Identity, principal: &str) -> Result<CheckReport, Error> {
    let report = |steps| CheckReport {
        image: image.to_string(),
        identity: format!("{principal} (evaluated by Google's Policy Troubleshooter)"),
        steps,
    };
    let host = image.registry();
    let Some(resource) = crate::hosts::repository_resource(&host, &image.path) else {
        let detail = format!("{host} is not an Artifact Registry repository the troubleshooter can evaluate");
        return Ok(report(vec![CheckStep::new(DOWNLOAD, Outcome::Unknown, detail)]));
    };
    let token = gcr.access_token(runner, None).await?;
    let http = Http::new()?;
    let base = gcr.endpoints.resolve("policytroubleshooter", None, POLICY_TROUBLESHOOTER_URL);
    const SERVICE: &str = "policytroubleshooter.googleapis.com iam:troubleshoot";
    let body = serde_json::json!({
        "accessTuple": { "principal": principal, "fullResourceName": resource, "permission": DOWNLOAD }
    });
    let url = format!("{base}/v3/iam:troubleshoot");
    let request = http.post(&url).bearer_auth(token.token.expose()).json(&body);
    let reply = http.send(SERVICE, request).await?;
    if !reply.is_success() {
        let error = reply.error(SERVICE);
        let detail = format!("the runner's troubleshooting failed: {error}");
        return Ok(report(vec![CheckStep::new(DOWNLOAD, Outcome::Unknown, detail)]));
    }
    let answer: Troubleshooting = reply.json(SERVICE)?;
    Ok(report(vec![answer.step(&resource)]))
}

/// What the Policy Troubleshooter answers, as far as the verdict goes.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Troubleshooting {
    overall_access_state: String,
    #[serde(default)]
    allow_policy_explanation: AllowExplanation,
    #[serde(default)]
    deny_policy_explanation: DenyExplanation,
}

#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AllowExplanation {
    #[serde(default)]
    explained_policies: Vec<ExplainedAllowPolicy>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExplainedAllowPolicy {
    #[serde(default)]
    full_resource_name: String,
    #[serde(default)]
    binding_explanations: Vec<AllowBinding>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct AllowBinding {
    #[serde(default)]
    allow_access_state: String,
    #[serde(default)]
    role: String,
}

#[derive(Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct DenyExplanation {
    #[serde(default)]
    explained_resources: Vec<ExplainedDenyResource>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExplainedDenyResource {
    #[serde(default)]
    deny_access_state: String,
    #[serde(default)]
    full_resource_name: String,
    #[serde(default)]
    explained_policies: Vec<ExplainedDenyPolicy>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExplainedDenyPolicy {
    #[serde(default)]
    deny_access_state: String,
    #[serde(default)]
    policy: serde_json::Value,
}

impl Troubleshooting {
    /// The report's row: the overall verdict, and the bindings or deny
    /// policies that made it.
    fn step(&self, resource: &str) -> CheckStep {
        let granting: Vec<String> = self
            .allow_policy_explanation
            .explained_policies
            .iter()
            .flat_map(|policy| {
                policy
                    .binding_explanations
                    .iter()
                    .filter(|b| b.allow_access_state == "ALLOW_ACCESS_STATE_GRANTED")
                    .map(move |b| format!("{} on {}", b.role, policy.full_resource_name))
            })
            .collect();
        let denying: Vec<String> = self
            .deny_policy_explanation
            .explained_resources
            .iter()
            .filter(|r| r.deny_access_state == "DENY_ACCESS_STATE_DENIED")
            .flat_map(|r| {
                r.explained_policies.iter().filter(|p| p.deny_access_state == "DENY_ACCESS_STATE_DENIED").map(
                    move |p| {
                        format!("{} on {}", p.policy["name"].as_str().unwrap_or("a deny policy"), r.full_resource_name)
                    },
                )
            })
            .collect();
        match self.overall_access_state.as_str() {
            "CAN_ACCESS" => CheckStep::new(DOWNLOAD, Outcome::Allowed, format!("granted by {}", granting.join("; "))),
            "CANNOT_ACCESS" if !denying.is_empty() => {
                CheckStep::new(DOWNLOAD, Outcome::Denied, format!("denied by the deny policy {}", denying.join("; ")))
            }
            "CANNOT_ACCESS" => CheckStep::new(
                DOWNLOAD,
                Outcome::Denied,
                format!("no role binding on {resource} or above grants it (roles/artifactregistry.reader does)"),
            ),
            other => CheckStep::new(
                DOWNLOAD,
                Outcome::Unknown,
                format!(
                    "{other}: the troubleshooter could not decide (a condition, or policies the runner may not read)"
                ),
            ),
        }
    }
}
