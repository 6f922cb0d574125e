//! `check`: the identity's Entra token, the registry's exchange, and a pull
//! token for the repository through the core's registry handshake.

use credential_provider::clock::unix_now;
use credential_provider::http::Http;
use credential_provider::registry::Registry;
use credential_provider::{CheckReport, CheckStep, ImageRef, Outcome, Secret};

use crate::exchange::{self, USERNAME};
use crate::{Acr, AcrTarget, identity};

pub async fn run(
    acr: &Acr,
    image: &ImageRef,
    target: &AcrTarget,
    service_account_token: Option<&Secret>,
) -> CheckReport {
    let mut steps = Vec::new();
    let report = |steps| CheckReport { image: image.to_string(), identity: target.identity.describe(), steps };
    let http = match Http::new() {
        Ok(http) => http,
        Err(e) => return report(vec![CheckStep::new("http", Outcome::Unknown, e.to_string())]),
    };
    let scope = acr.config.cloud.registry_scope();
    let entra =
        match identity::entra_token(&target.identity, &acr.config, service_account_token, acr.transport(&http), scope)
            .await
        {
            Ok(token) => {
                let left = token.expires_at.saturating_sub(unix_now());
                steps.push(CheckStep::new("entra:token", Outcome::Allowed, format!("{scope}, valid for {left}s more")));
                token
            }
            Err(e) => {
                steps.push(CheckStep::new("entra:token", Outcome::of_error(&e), e.to_string()));
                return report(steps);
            }
        };
    let login_server = &target.login_server;
    let refresh =
        match exchange::exchange(&http, &acr.endpoints, login_server, target.identity.tenant_id(), &entra).await {
            Ok(refresh) => {
                let left = refresh.expires_at.saturating_sub(unix_now());
                steps.push(CheckStep::new(
                    "acr:exchange",
                    Outcome::Allowed,
                    format!("{login_server} issued a refresh token valid for {left}s"),
                ));
                refresh
            }
            Err(e) => {
                steps.push(CheckStep::new("acr:exchange", Outcome::of_error(&e), e.to_string()));
                return report(steps);
            }
        };
    let registry = Registry::new(&http, &acr.endpoints, login_server);
    steps.extend(registry.check_pull(&image.path, USERNAME, &refresh.token).await);
    report(steps)
}
