//! `check`: the IAM token of the node's identity, and a pull-scope token for
//! the repository through the core's registry handshake.

use credential_provider::clock::unix_now;
use credential_provider::registry::prove_pull;
use credential_provider::{CheckReport, CheckStep, ImageRef, Outcome, Secret};

use crate::{IbmIdentity, Icr, IcrTarget, USERNAME};

pub async fn run(
    icr: &Icr,
    image: &ImageRef,
    target: &IcrTarget,
    service_account_token: Option<&Secret>,
) -> CheckReport {
    let mut steps = Vec::new();
    let issuer = match &target.identity {
        IbmIdentity::VpcInstance(_) => "the VPC identity service".to_string(),
        _ => target.iam.clone(),
    };
    match icr.iam_token(target, service_account_token).await {
        Ok(token) => {
            let left = token.expires_at.saturating_sub(unix_now());
            steps.push(CheckStep::new(
                "iam:token",
                Outcome::Allowed,
                format!("{issuer}: an access token valid for {left}s more"),
            ));
            steps.extend(prove_pull(&icr.endpoints, image, USERNAME, &token.token).await);
        }
        Err(e) => steps.push(CheckStep::new("iam:token", Outcome::of_error(&e), e.to_string())),
    }
    CheckReport { image: image.to_string(), identity: target.identity.describe(), steps }
}
