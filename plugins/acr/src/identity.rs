//! The Entra ID identity a request uses, and its token for the registry scope,
//! through azure_identity's credentials.

use std::path::PathBuf;
use std::sync::Arc;

use azure_core::cloud::CloudConfiguration;
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientMethodOptions, ClientOptions, ExponentialRetryOptions, RetryOptions, Transport};
use azure_identity::{
    ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions, ClientSecretCredential,
    ClientSecretCredentialOptions, ManagedIdentityCredential, ManagedIdentityCredentialOptions, UserAssignedId,
    WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use credential_provider::http::{SendError, Unreachable, find_source};
use credential_provider::{Error, Secret};

use crate::config::{AzureConfig, Cloud};

/// Who the plugin is to Entra ID for one request (and as it enters the cache key).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum AzureIdentity {
    /// KEP-4412: the request's service-account token as a client assertion
    /// for the application named by the service account's annotations.
    ServiceAccount { tenant_id: String, client_id: String },
    /// A federated token file (workload identity), read at each fetch.
    FederatedTokenFile { tenant_id: String, client_id: String, path: PathBuf },
    /// A service principal's client secret.
    ClientSecret { tenant_id: String, client_id: String },
    /// The VM's managed identity, through IMDS: system assigned, or the user
    /// assigned one named by client id or resource id.
    ManagedIdentity { user_assigned: Option<String> },
    /// AKS identity bindings: the request's service-account token exchanged
    /// for the application's token at the cluster's token endpoint
    /// (`crate::identity_binding`).
    IdentityBinding { client_id: String, tenant_id: Option<String>, endpoint: String, apiserver: String },
}

impl AzureIdentity {
    pub fn describe(&self) -> String {
        match self {
            AzureIdentity::ServiceAccount { tenant_id, client_id } => {
                format!("service-account token as client {client_id} in tenant {tenant_id}")
            }
            AzureIdentity::FederatedTokenFile { tenant_id, client_id, path } => {
                format!("federated token file {} as client {client_id} in tenant {tenant_id}", path.display())
            }
            AzureIdentity::ClientSecret { tenant_id, client_id } => {
                format!("client secret of {client_id} in tenant {tenant_id}")
            }
            AzureIdentity::ManagedIdentity { user_assigned: Some(id) } => format!("managed identity {id}"),
            AzureIdentity::ManagedIdentity { user_assigned: None } => "system-assigned managed identity".to_string(),
            AzureIdentity::IdentityBinding { client_id, endpoint, .. } => {
                format!("service-account token as client {client_id} through the identity binding at {endpoint}")
            }
        }
    }

    /// The tenant, where the identity names one.
    pub fn tenant_id(&self) -> Option<&str> {
        match self {
            AzureIdentity::ServiceAccount { tenant_id, .. }
            | AzureIdentity::FederatedTokenFile { tenant_id, .. }
            | AzureIdentity::ClientSecret { tenant_id, .. } => Some(tenant_id),
            AzureIdentity::IdentityBinding { tenant_id, .. } => tenant_id.as_deref(),
            AzureIdentity::ManagedIdentity { .. } => None,
        }
    }
}

/// An Entra ID access token.
#[derive(Debug)]
pub struct EntraToken {
    pub token: Secret,
    pub expires_at: u64,
}

/// The service-account token as a client assertion.
#[derive(Debug)]
struct ServiceAccountAssertion(Secret);

#[async_trait::async_trait]
impl ClientAssertion for ServiceAccountAssertion {
    async fn secret(&self, _options: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        Ok(self.0.expose().to_string())
    }
}

/// Gets `identity`'s token for `scope` (the registry's of `config.cloud`,
/// or for `check --as`, Resource Manager's or Graph's).
pub async fn entra_token(
    identity: &AzureIdentity,
    config: &AzureConfig,
    service_account_token: Option<&Secret>,
    transport: Transport,
    scope: &str,
) -> Result<EntraToken, Error> {
    let client_options = client_options(config.cloud, transport);
    let credential: Arc<dyn TokenCredential> = match identity {
        AzureIdentity::ServiceAccount { tenant_id, client_id } => {
            let token = service_account_token
                .ok_or_else(|| Error::Config("this identity needs the request's service-account token".into()))?;
            ClientAssertionCredential::new(
                tenant_id.clone(),
                client_id.clone(),
                ServiceAccountAssertion(token.clone()),
                Some(ClientAssertionCredentialOptions { client_options }),
            )
            .map_err(|e| configuration_error(identity, &e))?
        }
        AzureIdentity::FederatedTokenFile { tenant_id, client_id, path } => {
            WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions { client_options },
                client_id: Some(client_id.clone()),
                tenant_id: Some(tenant_id.clone()),
                token_file_path: Some(path.clone()),
            }))
            .map_err(|e| configuration_error(identity, &e))?
        }
        AzureIdentity::ClientSecret { tenant_id, client_id } => {
            let secret =
                config.client_secret.as_ref().ok_or_else(|| Error::Config("no client secret is configured".into()))?;
            ClientSecretCredential::new(
                tenant_id,
                client_id.clone(),
                azure_core::credentials::Secret::new(secret.expose().to_string()),
                Some(ClientSecretCredentialOptions { client_options }),
            )
            .map_err(|e| configuration_error(identity, &e))?
        }
        AzureIdentity::ManagedIdentity { user_assigned } => {
            let user_assigned_id = user_assigned.as_ref().map(|id| {
                if id.to_ascii_lowercase().starts_with("/subscriptions/") {
                    UserAssignedId::ResourceId(id.clone())
                } else {
                    UserAssignedId::ClientId(id.clone())
                }
            });
            ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions { user_assigned_id, client_options }))
                .map_err(|e| configuration_error(identity, &e))?
        }
        AzureIdentity::IdentityBinding { .. } => {
            return Err(Error::Config("an identity binding needs --ib-sni-name and the request's token".into()));
        }
    };
    let token = credential.get_token(&[scope], None).await.map_err(|e| azure_error("Entra ID", identity, &e))?;
    let expires_at = u64::try_from(token.expires_on.unix_timestamp()).unwrap_or(0);
    Ok(EntraToken { token: Secret::new(token.token.secret().to_string()), expires_at })
}

/// The pipeline options: the cloud (which fixes the authority host and keeps
/// azure_identity from reading `AZURE_AUTHORITY_HOST` itself), our transport,
/// and retries that fit inside the exec's budget.
fn client_options(cloud: Cloud, transport: Transport) -> ClientOptions {
    let cloud = match cloud {
        Cloud::Public => CloudConfiguration::AzurePublic,
        Cloud::UsGovernment => CloudConfiguration::AzureGovernment,
        Cloud::China => CloudConfiguration::AzureChina,
        Cloud::Germany => {
            let mut custom = azure_core::cloud::CustomConfiguration::default();
            custom.authority_host = Cloud::Germany.authority_host().to_string();
            CloudConfiguration::Custom(custom)
        }
    };
    ClientOptions {
        transport: Some(transport),
        cloud: Some(Arc::new(cloud)),
        retry: RetryOptions::exponential(ExponentialRetryOptions {
            initial_delay: azure_core::time::Duration::milliseconds(250),
            max_retries: 3,
            max_total_elapsed: azure_core::time::Duration::seconds(20),
            max_delay: azure_core::time::Duration::seconds(4),
        }),
        ..ClientOptions::default()
    }
}

fn configuration_error(identity: &AzureIdentity, e: &azure_core::Error) -> Error {
    Error::Config(format!("{}: {}", identity.describe(), one_line(&e.to_string())))
}

/// An azure_core error as ours: a refusal (400, 401, 403 anywhere in its
/// chain) is `Denied`, anything else a cloud failure. An endpoint that could
/// not be reached, or whose answer was too large to read, is said as such,
/// whatever azure_identity wrapped it in.
pub fn azure_error(service: &str, identity: &AzureIdentity, e: &azure_core::Error) -> Error {
    let mut status = e.http_status();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        status = status.or_else(|| inner.downcast_ref::<azure_core::Error>().and_then(azure_core::Error::http_status));
        source = inner.source();
    }
    if let Some(unreachable) = find_source::<Unreachable>(e) {
        return Error::unreachable(service, format!("{unreachable} ({})", identity.describe()));
    }
    let what = match find_source::<SendError>(e) {
        Some(refused) => refused.to_string(),
        None => one_line(&e.to_string()),
    };
    let message = format!("{what} ({})", identity.describe());
    match status.map(u16::from) {
        // Entra ID answers 400 (`invalid_client`, `invalid_grant`) to an
        // identity it refuses, as every OAuth token endpoint does.
        Some(status) => Error::http(service, status, message).bad_request_as_denial(),
        None => Error::cloud(service, message),
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
