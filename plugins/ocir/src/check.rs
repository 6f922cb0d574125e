//! `check`: the principal, the signed token call, and a pull-scope check on
//! the repository through the core's registry handshake.

use credential_provider::clock::unix_now;
use credential_provider::registry::prove_pull;
use credential_provider::{CheckReport, CheckStep, ImageRef, Outcome, Sessions};

use crate::{Ocir, OcirTarget};

pub async fn run(ocir: &Ocir, image: &ImageRef, target: &OcirTarget, sessions: &Sessions<'_>) -> CheckReport {
    let mut steps = Vec::new();
    let report = |steps| CheckReport { image: image.to_string(), identity: target.principal.describe(), steps };
    let signer = match ocir.signer(&target.principal, sessions).await {
        Ok(signer) => {
            steps.push(CheckStep::new("principal", Outcome::Allowed, "signing key ready"));
            signer
        }
        Err(e) => {
            steps.push(CheckStep::new("principal", Outcome::of_error(&e), e.to_string()));
            return report(steps);
        }
    };
    let host = image.registry();
    let token = match ocir.docker_token(&host, &signer).await {
        Ok((token, expires_at)) => {
            let left = expires_at.saturating_sub(unix_now());
            steps.push(CheckStep::new("ocir:token", Outcome::Allowed, format!("a registry token valid for {left}s")));
            token
        }
        Err(e) => {
            steps.push(CheckStep::new("ocir:token", Outcome::of_error(&e), e.to_string()));
            return report(steps);
        }
    };
    steps.extend(prove_pull(&ocir.endpoints, image, &ocir.settings.username, &token).await);
    report(steps)
}
