//! `acr-credential-provider`: registry credentials for Azure Container Registry.
//!
//! An Entra ID token for the registry scope comes from, the first that
//! applies: the pod's service-account token (KEP-4412) as a client assertion
//! for the application its annotations name; a federated token file; a client
//! secret; the VM's managed identity. The registry then exchanges it for an
//! ACR refresh token, which is what the kubelet gets, cached until half its
//! real lifetime has passed.

mod check;
mod check_as;
pub mod config;
pub mod exchange;
pub mod hosts;
pub mod identity;
pub mod identity_binding;
pub mod transport;

use std::collections::BTreeMap;
use std::path::PathBuf;

use credential_provider::http::Http;
use credential_provider::{
    CheckReport, Credential, Endpoints, Error, ImageRef, KeyInputs, Plan, Provider, Secret, ServiceAccount, Sessions,
};

use crate::config::AzureConfig;
use crate::identity::AzureIdentity;
use crate::identity_binding::IdentityBindings;
use crate::transport::{IMDS_ORIGIN, RoutedTransport};

/// The annotation naming the Entra application a service account pulls as (KEP-4412).
pub const CLIENT_ID_ANNOTATION: &str = "kubernetes.azure.com/acr-client-id";
/// The annotation naming that application's tenant; the node's tenant by default.
pub const TENANT_ID_ANNOTATION: &str = "kubernetes.azure.com/acr-tenant-id";

/// The flags of upstream's `acr-credential-provider`, so that its kubelet config works unchanged.
#[derive(Debug, clap::Args)]
pub struct AcrArgs {
    /// The node's azure.json (upstream's one argument); AZURE_TENANT_ID, AZURE_CLIENT_ID,
    /// AZURE_CLIENT_SECRET and AZURE_FEDERATED_TOKEN_FILE override its fields.
    #[arg(value_name = "AZURE_JSON")]
    pub config: Option<PathBuf>,

    /// Registries served from an ACR mirror, SOURCE:TARGET[,SOURCE:TARGET…]
    /// (e.g. mcr.microsoft.com:myacr.azurecr.io): TARGET's credential is returned for SOURCE.
    #[arg(long = "registry-mirror", value_name = "SOURCE:TARGET,...")]
    pub registry_mirror: Option<String>,

    /// AKS identity bindings: the TLS name of the token endpoint the API server serves
    /// (no scheme); a service account's token is exchanged there. Needs --ib-apiserver-ip.
    #[arg(long = "ib-sni-name", value_name = "NAME")]
    pub ib_sni_name: Option<String>,

    /// AKS identity bindings: the client id of a service account without the
    /// kubernetes.azure.com/acr-client-id annotation.
    #[arg(long = "ib-default-client-id", value_name = "ID")]
    pub ib_default_client_id: Option<String>,

    /// AKS identity bindings: the tenant of a service account without the
    /// kubernetes.azure.com/acr-tenant-id annotation.
    #[arg(long = "ib-default-tenant-id", value_name = "ID")]
    pub ib_default_tenant_id: Option<String>,

    /// AKS identity bindings: the API server's IP address (or a name), where the token endpoint is dialled.
    #[arg(long = "ib-apiserver-ip", value_name = "ADDRESS")]
    pub ib_apiserver_ip: Option<String>,

    /// AKS identity bindings: the cluster's CA, which the token endpoint's certificate must chain to.
    #[arg(long = "ib-ca-file", value_name = "FILE", default_value = identity_binding::CLUSTER_CA_FILE, hide = true)]
    pub ib_ca_file: PathBuf,
}

/// What one request fetches.
#[derive(Debug)]
pub struct AcrTarget {
    /// The ACR login server to exchange at: the image's host, or its mirror.
    pub login_server: String,
    pub identity: AzureIdentity,
}

/// The ACR plugin.
#[derive(Debug)]
pub struct Acr {
    config: AzureConfig,
    endpoints: Endpoints,
    mirrors: BTreeMap<String, String>,
    /// AKS identity bindings, where the flags set them.
    bindings: Option<IdentityBindings>,
}

impl Provider for Acr {
    const NAME: &'static str = "acr";
    const ABOUT: &'static str = "Kubelet credential provider for Azure Container Registry";

    type Args = AcrArgs;
    type Target = AcrTarget;

    fn new(args: AcrArgs, endpoints: Endpoints) -> Result<Acr, Error> {
        let config = AzureConfig::load(args.config.as_deref(), |name| std::env::var(name).ok())?;
        let mirrors = parse_mirrors(args.registry_mirror.as_deref().unwrap_or(""))?;
        let bindings = IdentityBindings::from_flags(
            args.ib_sni_name.as_deref(),
            args.ib_default_client_id.as_deref(),
            args.ib_default_tenant_id.as_deref(),
            args.ib_apiserver_ip.as_deref(),
            args.ib_ca_file,
        )?;
        Ok(Acr { config, endpoints, mirrors, bindings })
    }

    fn plan(&self, image: &ImageRef, service_account: Option<&ServiceAccount>) -> Result<Plan<AcrTarget>, Error> {
        let requested = image.registry();
        let login_server = match self.mirrors.get(&requested) {
            Some(target) => {
                tracing::info!("{requested} is mirrored by {target}; returning {target}'s credential for it");
                target.clone()
            }
            None if image.port.is_none() && hosts::is_acr_host(&image.host) => requested.clone(),
            None => return Err(Error::UnsupportedRegistry { host: requested, expected: hosts::EXPECTED }),
        };
        let (identity, service_account_token) = self.choose_identity(service_account)?;
        tracing::info!("identity: {}", identity.describe());
        let key = KeyInputs::new()
            .with("login-server", login_server.as_str())
            .with("cloud", self.config.cloud.name())
            .with_value("identity", &identity)?;
        let target = AcrTarget { login_server, identity };
        Ok(Plan::new(image, target, key, &self.endpoints).from_service_account_token(service_account_token))
    }

    async fn fetch(&self, plan: &Plan<AcrTarget>, _sessions: &Sessions<'_>) -> Result<Credential, Error> {
        let http = Http::new()?;
        let target = &plan.target;
        let entra = match (&target.identity, &self.bindings, &plan.service_account_token) {
            (AzureIdentity::IdentityBinding { client_id, .. }, Some(bindings), Some(token)) => {
                bindings.token(client_id, token, self.config.cloud.registry_scope()).await?
            }
            (identity, _, token) => {
                let scope = self.config.cloud.registry_scope();
                identity::entra_token(identity, &self.config, token.as_ref(), self.transport(&http), scope).await?
            }
        };
        let refresh =
            exchange::exchange(&http, &self.endpoints, &target.login_server, target.identity.tenant_id(), &entra)
                .await?;
        Ok(Credential {
            username: exchange::USERNAME.to_string(),
            password: refresh.token,
            expires_at: refresh.expires_at,
        })
    }

    async fn check(
        &self,
        plan: &Plan<Self::Target>,
        image: &ImageRef,
        _sessions: &Sessions<'_>,
    ) -> Result<CheckReport, Error> {
        Ok(check::run(self, image, &plan.target, plan.service_account_token.as_ref()).await)
    }

    async fn check_as(
        &self,
        plan: &Plan<Self::Target>,
        image: &ImageRef,
        principal: &str,
    ) -> Result<CheckReport, Error> {
        let is_object_id = principal.len() == 36
            && principal
                .chars()
                .enumerate()
                .all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() });
        if !is_object_id {
            return Err(Error::Usage(format!(
                "check --as {principal:?}: not an object id (the principal id of the nodes' managed identity, a GUID)"
            )));
        }
        check_as::run(self, image, &plan.target, principal).await
    }
}

impl Acr {
    /// The identity for a request, and the service-account token it uses.
    fn choose_identity(
        &self,
        service_account: Option<&ServiceAccount>,
    ) -> Result<(AzureIdentity, Option<Secret>), Error> {
        let config = &self.config;
        if let Some(sa) = service_account
            && let Some(token) = &sa.token
        {
            let annotation = |key: &str| sa.annotations.get(key).filter(|v| !v.is_empty());
            let default_client = self.bindings.as_ref().and_then(|b| b.default_client_id.as_ref());
            // Never the node's identity instead: that would hand every
            // service account without the annotation the node's rights,
            // which per-service-account identity exists to prevent.
            let client_id = annotation(CLIENT_ID_ANNOTATION).or(default_client).ok_or_else(|| {
                Error::Config(match self.bindings {
                    Some(_) => format!(
                        "the service account has no {CLIENT_ID_ANNOTATION} annotation and no --ib-default-client-id is set (the node's identity is never used for a service account)"
                    ),
                    None => format!(
                        "the request carries a service-account token but the service account has no {CLIENT_ID_ANNOTATION} annotation: annotate it with the client id of the application it pulls as (the node's identity is never used for a service account)"
                    ),
                })
            })?;
            validate_id(CLIENT_ID_ANNOTATION, client_id)?;
            let identity = match &self.bindings {
                // AKS identity bindings: the tenant is optional there.
                Some(bindings) => {
                    let tenant_id = annotation(TENANT_ID_ANNOTATION).or(bindings.default_tenant_id.as_ref());
                    if let Some(tenant_id) = tenant_id {
                        validate_id(TENANT_ID_ANNOTATION, tenant_id)?;
                    }
                    AzureIdentity::IdentityBinding {
                        client_id: client_id.clone(),
                        tenant_id: tenant_id.cloned(),
                        endpoint: bindings.sni_name.clone(),
                        apiserver: bindings.apiserver.clone(),
                    }
                }
                None => {
                    let tenant_id = annotation(TENANT_ID_ANNOTATION).or(config.tenant_id.as_ref()).ok_or_else(|| {
                        Error::Config(format!(
                            "the service account names client {client_id} but no tenant: annotate it with {TENANT_ID_ANNOTATION} or set tenantId in azure.json"
                        ))
                    })?;
                    validate_id(TENANT_ID_ANNOTATION, tenant_id)?;
                    AzureIdentity::ServiceAccount { tenant_id: tenant_id.clone(), client_id: client_id.clone() }
                }
            };
            return Ok((identity, Some(token.clone())));
        }
        let tenant_and_client = |what: &str| -> Result<(String, String), Error> {
            match (&config.tenant_id, &config.client_id) {
                (Some(tenant), Some(client)) => Ok((tenant.clone(), client.clone())),
                _ => Err(Error::Config(format!(
                    "{what} needs a tenant and a client id (tenantId and aadClientId in azure.json, or AZURE_TENANT_ID and AZURE_CLIENT_ID)"
                ))),
            }
        };
        if let Some(path) = &config.federated_token_file {
            let (tenant_id, client_id) = tenant_and_client("a federated token file")?;
            return Ok((AzureIdentity::FederatedTokenFile { tenant_id, client_id, path: path.clone() }, None));
        }
        if config.client_secret.is_some() {
            let (tenant_id, client_id) = tenant_and_client("a client secret")?;
            return Ok((AzureIdentity::ClientSecret { tenant_id, client_id }, None));
        }
        if !config.use_managed_identity {
            tracing::info!("no service principal is configured; using the VM's managed identity");
        }
        Ok((AzureIdentity::ManagedIdentity { user_assigned: config.user_assigned_identity.clone() }, None))
    }

    /// azure_identity's transport: the core's client, with the `login` and
    /// `imds` overrides applied to the cloud's real addresses.
    fn transport(&self, http: &Http) -> azure_core::http::Transport {
        let mut routes = Vec::new();
        if let Some(login) = self.endpoints.get("login", Some("AZURE_AUTHORITY_HOST")) {
            routes.push((self.config.cloud.authority_host().to_string(), login.to_string()));
        }
        if let Some(imds) = self.endpoints.get("imds", None) {
            routes.push((IMDS_ORIGIN.to_string(), imds.to_string()));
        }
        RoutedTransport::new(http.clone(), routes).into_transport()
    }
}

/// `--registry-mirror SOURCE:TARGET[,…]`. A source may carry a port; a target
/// is an ACR login server (which never does), so each pair splits at its last colon.
fn parse_mirrors(value: &str) -> Result<BTreeMap<String, String>, Error> {
    let mut mirrors = BTreeMap::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        // Spaces around `:` are ignored, as upstream ignores them.
        let (source, target) = pair
            .rsplit_once(':')
            .map(|(s, t)| (s.trim(), t.trim()))
            .filter(|(s, t)| !s.is_empty() && !t.is_empty())
            .ok_or_else(|| Error::Usage(format!("--registry-mirror {pair:?} is not SOURCE:TARGET")))?;
        let (source, target) = (source.to_ascii_lowercase(), target.to_ascii_lowercase());
        if !hosts::is_acr_host(&target) {
            return Err(Error::Usage(format!("--registry-mirror target {target:?} is not an ACR login server")));
        }
        mirrors.insert(source, target);
    }
    Ok(mirrors)
}

/// A client or tenant id: a GUID or a domain, nothing that could alter a URL.
pub(crate) fn validate_id(annotation: &str, id: &str) -> Result<(), Error> {
    if !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
        Ok(())
    } else {
        Err(Error::Config(format!("{annotation}={id:?} is not a client or tenant id")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors() {
        let m = parse_mirrors("mcr.microsoft.com:myacr.azurecr.io, localhost:5000:other.azurecr.io").expect("valid");
        assert_eq!(m.get("mcr.microsoft.com").map(String::as_str), Some("myacr.azurecr.io"));
        assert_eq!(m.get("localhost:5000").map(String::as_str), Some("other.azurecr.io"));
        assert!(parse_mirrors("").expect("empty").is_empty());
        let spaced =
            parse_mirrors(" aaa.example.com: bbb.azurecr.io, ccc.example.com :ddd.azurecr.io ").expect("spaces");
        assert_eq!(spaced.get("aaa.example.com").map(String::as_str), Some("bbb.azurecr.io"));
        assert_eq!(spaced.get("ccc.example.com").map(String::as_str), Some("ddd.azurecr.io"));
        for bad in ["mcr.microsoft.com", "mcr.microsoft.com:evil.io", ":myacr.azurecr.io", "a:"] {
            assert!(parse_mirrors(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids() {
        assert!(validate_id("a", "0b5e6b5e-1111-2222-3333-444455556666").is_ok());
        assert!(validate_id("a", "contoso.onmicrosoft.com").is_ok());
        for bad in ["", "a/b", "x?y", "a b"] {
            assert!(validate_id("a", bad).is_err(), "{bad}");
        }
    }
}
