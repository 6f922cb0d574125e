//! `check`: who the node is to Google, whether its token can be had, whether
//! the token's scopes cover registries, and whether the registry grants pull
//! on the repository (the core's registry handshake).

use credential_provider::clock::unix_now;
use credential_provider::registry::prove_pull;
use credential_provider::{CheckReport, CheckStep, ImageRef, Outcome, Secret};

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
