//! `check`: call, read-only, every action a pull needs, as this node.
//!
//! Each call targets the image's repository with arguments that read nothing
//! of value (an all-zero layer digest, one image id), so that AWS evaluates the
//! IAM and repository policies and answers allowed, denied or not found.

use aws_config::SdkConfig;
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_ecr::types::ImageIdentifier;
use credential_provider::{CheckReport, CheckStep, ImageRef, Outcome, Secret};

use crate::aws_error::{AwsFailure, no_credentials_message};
use crate::hosts::EcrRegistry;
use crate::{Ecr, StsSigning};

/// A digest no layer has: the calls that take one then answer "not found"
/// when allowed, and "access denied" when not.
const ABSENT_DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// Turns one call's result into a report row.
fn step<T, E>(
    action: &str,
    result: Result<T, aws_sdk_ecr::error::SdkError<E, aws_sdk_ecr::config::http::HttpResponse>>,
) -> CheckStep
where
    E: aws_sdk_ecr::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    match result {
        Ok(_) => CheckStep::new(action, Outcome::Allowed, ""),
        Err(error) => {
            let (outcome, detail) = AwsFailure::from_sdk(&error).outcome();
            CheckStep::new(action, outcome, detail)
        }
    }
}

/// Every permission a pull of `image` needs, as the node, or as `role`
/// assumed with a pod's service-account token (KEP-4412).
pub(crate) async fn run(
    ecr: &Ecr,
    sdk: &SdkConfig,
    image: &ImageRef,
    registry: &EcrRegistry,
    role: Option<(&str, &Secret)>,
) -> CheckReport {
    let report = |identity: String, steps| CheckReport { image: image.to_string(), identity, steps };
    let assumed = match role {
        Some((role, token)) => match ecr.assume_role(sdk, role, token).await {
            Ok(credentials) => Some(credentials),
            Err(error) => {
                let step =
                    CheckStep::new("sts:AssumeRoleWithWebIdentity", Outcome::of_error(&error), error.to_string());
                return report(format!("{role} (not assumed)"), vec![step]);
            }
        },
        None => None,
    };
    // Without an identity every call would fail the same way: say it once.
    if assumed.is_none()
        && let Some(provider) = sdk.credentials_provider()
        && let Err(error) = provider.provide_credentials().await
    {
        let message = no_credentials_message(&error);
        tracing::info!("the AWS credentials chain failed: {}", credential_provider::http::innermost_cause(&error));
        return CheckReport {
            image: image.to_string(),
            identity: "none".to_string(),
            steps: vec![CheckStep::new("AWS credentials", Outcome::Unknown, message)],
        };
    }
    let signing = match &assumed {
        Some(credentials) => StsSigning::As(credentials.clone()),
        None => StsSigning::Node,
    };
    let identity = match ecr.sts_client(sdk, signing).get_caller_identity().send().await {
        Ok(output) => output.arn().unwrap_or("unknown").to_string(),
        Err(error) => format!("unknown ({})", AwsFailure::from_sdk(&error).message),
    };
    let mut steps = Vec::new();
    if role.is_some() {
        steps.push(CheckStep::new(
            "sts:AssumeRoleWithWebIdentity",
            Outcome::Allowed,
            "with the service account's token",
        ));
    }
    steps.extend(match registry {
        EcrRegistry::Private { account, fips, dual_stack, .. } => {
            private_steps(&ecr.ecr_client(sdk, *fips, *dual_stack, assumed), account, image).await
        }
        EcrRegistry::Public { dual_stack } => public_steps(&ecr.ecr_public_client(sdk, *dual_stack, assumed)).await,
    });
    report(identity, steps)
}

async fn private_steps(client: &aws_sdk_ecr::Client, account: &str, image: &ImageRef) -> Vec<CheckStep> {
    let repository = image.path.as_str();
    let image_id = match (&image.digest, &image.tag) {
        (Some(digest), _) => ImageIdentifier::builder().image_digest(digest).build(),
        (None, tag) => ImageIdentifier::builder().image_tag(tag.as_deref().unwrap_or("latest")).build(),
    };
    vec![
        step("ecr:GetAuthorizationToken", client.get_authorization_token().send().await),
        step(
            "ecr:BatchCheckLayerAvailability",
            client
                .batch_check_layer_availability()
                .registry_id(account)
                .repository_name(repository)
                .layer_digests(ABSENT_DIGEST)
                .send()
                .await,
        ),
        step(
            "ecr:GetDownloadUrlForLayer",
            client
                .get_download_url_for_layer()
                .registry_id(account)
                .repository_name(repository)
                .layer_digest(ABSENT_DIGEST)
                .send()
                .await,
        ),
        step(
            "ecr:GetRepositoryPolicy",
            client.get_repository_policy().registry_id(account).repository_name(repository).send().await,
        ),
        step(
            "ecr:DescribeRepositories",
            client.describe_repositories().registry_id(account).repository_names(repository).send().await,
        ),
        step(
            "ecr:ListImages",
            client.list_images().registry_id(account).repository_name(repository).max_results(1).send().await,
        ),
        step(
            "ecr:BatchGetImage",
            client.batch_get_image().registry_id(account).repository_name(repository).image_ids(image_id).send().await,
        ),
    ]
}

/// ECR Public needs two permissions for one call: its own
/// GetAuthorizationToken, and sts:GetServiceBearerToken, which AWS evaluates
/// inside it. A denial names the one that failed.
async fn public_steps(client: &aws_sdk_ecrpublic::Client) -> Vec<CheckStep> {
    const TOKEN: &str = "ecr-public:GetAuthorizationToken";
    const BEARER: &str = "sts:GetServiceBearerToken";
    match client.get_authorization_token().send().await {
        Ok(_) => vec![
            CheckStep::new(TOKEN, Outcome::Allowed, ""),
            CheckStep::new(BEARER, Outcome::Allowed, "granted (evaluated inside ecr-public:GetAuthorizationToken)"),
        ],
        Err(error) => {
            let (outcome, detail) = AwsFailure::from_sdk(&error).outcome();
            if outcome == Outcome::Denied && detail.contains(BEARER) {
                vec![
                    CheckStep::new(TOKEN, Outcome::Allowed, "granted; the call failed on sts:GetServiceBearerToken"),
                    CheckStep::new(BEARER, Outcome::Denied, detail),
                ]
            } else {
                vec![
                    CheckStep::new(TOKEN, outcome, detail),
                    CheckStep::new(
                        BEARER,
                        Outcome::Unknown,
                        "not reached: ecr-public:GetAuthorizationToken did not pass",
                    ),
                ]
            }
        }
    }
}

/// `check --as PRINCIPAL`: IAM's policy simulator evaluates the principal's
/// policies (and the repository's own) for every action a pull needs,
/// without acting as it. The runner needs `iam:SimulatePrincipalPolicy` and,
/// for a private repository, `ecr:GetRepositoryPolicy` on it.
pub(crate) async fn run_as(
    ecr: &Ecr,
    sdk: &SdkConfig,
    image: &ImageRef,
    registry: &EcrRegistry,
    principal: &str,
) -> CheckReport {
    let iam = ecr.iam_client(sdk);
    let mut steps = Vec::new();
    match registry {
        EcrRegistry::Private { account, fips, dual_stack, .. } => {
            let partition = registry.partition();
            let repository = image.path.as_str();
            let arn = format!("arn:{partition}:ecr:{}:{account}:repository/{repository}", registry.region());
            // The repository's own policy decides cross-account pulls: read as the runner.
            let client = ecr.ecr_client(sdk, *fips, *dual_stack, None);
            let policy = match client
                .get_repository_policy()
                .registry_id(account)
                .repository_name(repository)
                .send()
                .await
            {
                Ok(output) => {
                    steps.push(CheckStep::new(
                        "repository policy",
                        Outcome::Allowed,
                        "read by the runner; IAM evaluates it with the principal's",
                    ));
                    output.policy_text().map(str::to_string)
                }
                Err(error) => {
                    let failure = AwsFailure::from_sdk(&error);
                    let (outcome, detail) = match failure.code.as_deref() {
                        Some("RepositoryPolicyNotFoundException") => {
                            (Outcome::Allowed, "none: the principal's own policies decide".to_string())
                        }
                        _ => (
                            Outcome::Unknown,
                            format!(
                                "the runner could not read it ({}); evaluated without it, which cannot judge a pull from another account",
                                failure.message
                            ),
                        ),
                    };
                    steps.push(CheckStep::new("repository policy", outcome, detail));
                    None
                }
            };
            let owner = format!("arn:{partition}:iam::{account}:root");
            steps.extend(simulate(&iam, principal, &PRIVATE_ACTIONS[..1], "*", None, None).await);
            steps.extend(simulate(&iam, principal, &PRIVATE_ACTIONS[1..], &arn, policy, Some(owner)).await);
        }
        EcrRegistry::Public { .. } => {
            steps.extend(simulate(&iam, principal, &PUBLIC_ACTIONS, "*", None, None).await);
        }
    }
    CheckReport {
        image: image.to_string(),
        identity: format!("{principal} (evaluated by IAM's policy simulator)"),
        steps,
    }
}

/// The actions a pull of a private image needs, the token's first (on `*`):
/// what `check` calls one by one, and `check --as` has IAM evaluate.
const PRIVATE_ACTIONS: [&str; 7] = [
    "ecr:GetAuthorizationToken",
    "ecr:BatchCheckLayerAvailability",
    "ecr:GetDownloadUrlForLayer",
    "ecr:GetRepositoryPolicy",
    "ecr:DescribeRepositories",
    "ecr:ListImages",
    "ecr:BatchGetImage",
];

/// The actions a pull from ECR Public needs.
const PUBLIC_ACTIONS: [&str; 2] = ["ecr-public:GetAuthorizationToken", "sts:GetServiceBearerToken"];

/// One `SimulatePrincipalPolicy` of `actions` on `resource`, every page: a
/// row per action with IAM's decision and the statement that made it.
async fn simulate(
    iam: &aws_sdk_iam::Client,
    principal: &str,
    actions: &[&str],
    resource: &str,
    resource_policy: Option<String>,
    resource_owner: Option<String>,
) -> Vec<CheckStep> {
    let mut pages = iam
        .simulate_principal_policy()
        .policy_source_arn(principal)
        .set_action_names(Some(actions.iter().map(|a| a.to_string()).collect()))
        .resource_arns(resource)
        .set_resource_policy(resource_policy)
        .set_resource_owner(resource_owner)
        .into_paginator()
        .items()
        .send();
    let mut steps = Vec::new();
    while let Some(item) = pages.next().await {
        match item {
            Ok(result) => steps.push(evaluation_step(&result)),
            Err(error) => {
                // The runner's own failure (no such principal, no permission to
                // simulate): nothing is known of the principal's rights.
                let failure = AwsFailure::from_sdk(&error);
                let detail = format!("iam:SimulatePrincipalPolicy failed: {}", failure.message);
                let done: Vec<String> = steps.iter().map(|s: &CheckStep| s.action.clone()).collect();
                steps.extend(
                    actions
                        .iter()
                        .filter(|a| !done.iter().any(|d| d == *a))
                        .map(|a| CheckStep::new(*a, Outcome::Unknown, detail.clone())),
                );
                break;
            }
        }
    }
    steps
}

/// IAM's verdict on one action, and the statement that decided it.
fn evaluation_step(result: &aws_sdk_iam::types::EvaluationResult) -> CheckStep {
    use aws_sdk_iam::types::PolicyEvaluationDecisionType as Decision;
    let statements: Vec<String> = result
        .matched_statements()
        .iter()
        .map(|statement| {
            let kind = statement.source_policy_type().map(|t| t.as_str()).unwrap_or("policy");
            let line = statement.start_position().map(|p| p.line()).unwrap_or(0);
            format!("{} ({kind} policy), line {line}", statement.source_policy_id().unwrap_or("?"))
        })
        .collect();
    let action = result.eval_action_name();
    match result.eval_decision() {
        Decision::Allowed => CheckStep::new(action, Outcome::Allowed, format!("allowed by {}", statements.join("; "))),
        Decision::ExplicitDeny => {
            CheckStep::new(action, Outcome::Denied, format!("explicit deny: {}", statements.join("; ")))
        }
        Decision::ImplicitDeny => CheckStep::new(
            action,
            Outcome::Denied,
            "implicit deny: no statement of the principal's policies, or of the repository's, allows it",
        ),
        other => CheckStep::new(action, Outcome::Unknown, format!("IAM's decision: {}", other.as_str())),
    }
}
