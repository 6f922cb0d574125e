//! `gcr-credential-provider`: registry credentials for Google Container
//! Registry and Artifact Registry.
//!
//! Where the token comes from, the first that applies:
//! 1. the pod's service-account token (KEP-4412), exchanged at Google STS for
//!    the configured workload identity audience, then optionally impersonating
//!    the Google service account the pod's service account is annotated with;
//! 2. an application default credentials file (`GOOGLE_APPLICATION_CREDENTIALS`
//!    or gcloud's well-known file): a service-account key, an authorized user,
//!    or an external account;
//! 3. the metadata server's default service account, as GCE and GKE nodes do.
//!
//! `--authFlow dockercfg` and `dockercfg-url` select the upstream plugin's
//! legacy flows instead. The kubelet gets `oauth2accesstoken` and the access
//! token, cached until half its real lifetime has passed.

mod check;
pub mod credentials_file;
pub mod dockercfg;
pub mod hosts;
pub mod metadata;
pub mod token;

use std::path::PathBuf;
use std::time::Duration;

use credential_provider::clock::unix_now;
use credential_provider::http::Http;
use credential_provider::protocol::{CacheKeyType, parse_go_duration};
use credential_provider::{
    CheckReport, Credential, Endpoints, Error, ImageRef, KeyInputs, Plan, Provider, ResponseOverrides, Secret,
    ServiceAccount, Sessions,
};

use crate::credentials_file::CredentialsFile;
use crate::metadata::MetadataServer;
use crate::token::AccessToken;

/// The username registries expect with an OAuth access token.
pub const USERNAME: &str = "oauth2accesstoken";
/// The annotation naming the Google service account to impersonate (GKE's).
pub const SERVICE_ACCOUNT_ANNOTATION: &str = "iam.gke.io/gcp-service-account";
/// The upstream plugin's opt-in annotation for workload identity pulls.
pub const ENABLE_ANNOTATION: &str = "iam.gke.io/enable-wi-image-pull";
/// The upstream plugin's variables that fix the response's cache duration and key type.
pub const CACHE_DURATION_VARIABLE: &str = "KUBE_SIDECAR_CACHE_DURATION";
pub const CACHE_TYPE_VARIABLE: &str = "KUBE_SIDECAR_CACHE_TYPE";
/// How long a login from a dockercfg attribute is kept: it carries no expiry,
/// and an operator who changes the attribute expects it to apply soon.
const DOCKERCFG_LIFETIME: u64 = 600;

/// The upstream plugin's flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum AuthFlow {
    /// An access token (workload identity, credentials file or metadata server).
    Gcr,
    /// The `.dockercfg` in the instance attribute `google-dockercfg`.
    Dockercfg,
    /// The `.dockercfg` at the URL in the instance attribute `google-dockercfg-url`.
    #[value(name = "dockercfg-url")]
    DockercfgUrl,
}

/// The plugin's flags: those of `auth-provider-gcp`, so that its kubelet
/// config works unchanged, and `--audience` for workload identity federation.
#[derive(Debug, clap::Args)]
pub struct GcrArgs {
    /// Where the credential comes from (auth-provider-gcp's flag).
    #[arg(long = "authFlow", short = 'a', value_enum, default_value = "gcr")]
    pub auth_flow: AuthFlow,

    /// KEP-4412: the cluster's identity provider URL; with the project, the STS audience
    /// is identitynamespace:<project>.svc.id.goog:<identity-provider>.
    #[arg(long = "identity-provider", value_name = "URL")]
    pub identity_provider: Option<String>,

    /// The project of the workload identity pool [default: the node's, from the metadata server].
    #[arg(long = "project-id", value_name = "PROJECT", requires = "identity_provider")]
    pub project_id: Option<String>,

    /// KEP-4412: a full workload identity pool provider audience
    /// (//iam.googleapis.com/projects/N/locations/global/workloadIdentityPools/POOL/providers/PROVIDER).
    #[arg(long, value_name = "AUDIENCE", conflicts_with = "identity_provider")]
    pub audience: Option<String>,
}

/// Where the STS audience comes from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Audience {
    /// Given whole with `--audience`.
    Full(String),
    /// GKE's identity namespace; the project is read from the metadata server when not given.
    IdentityNamespace { project: Option<String>, identity_provider: String },
}

/// How one request gets its token (and as it enters the cache key).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Identity {
    /// KEP-4412: the request's service-account token at STS.
    WorkloadIdentity { audience: Audience, impersonate: Option<String> },
    /// An application default credentials file.
    CredentialsFile(PathBuf),
    /// The metadata server's default service account.
    Metadata,
    /// A legacy `.dockercfg` from the instance attributes; its keys may name
    /// paths, so the whole image is matched.
    Dockercfg { flow: AuthFlow, image: String },
}

impl Identity {
    fn describe(&self) -> String {
        match self {
            Identity::WorkloadIdentity { audience, impersonate } => {
                let audience = match audience {
                    Audience::Full(audience) => audience.clone(),
                    Audience::IdentityNamespace { project: Some(project), identity_provider } => {
                        identity_namespace(project, identity_provider)
                    }
                    Audience::IdentityNamespace { project: None, identity_provider } => {
                        format!("identitynamespace:<node project>.svc.id.goog:{identity_provider}")
                    }
                };
                match impersonate {
                    Some(email) => format!("workload identity audience={audience} impersonating={email}"),
                    None => format!("workload identity audience={audience}"),
                }
            }
            Identity::CredentialsFile(path) => format!("credentials file {}", path.display()),
            Identity::Metadata => "metadata server default service account".to_string(),
            Identity::Dockercfg { flow: AuthFlow::DockercfgUrl, image } => {
                format!("instance attribute google-dockercfg-url for {image}")
            }
            Identity::Dockercfg { image, .. } => format!("instance attribute google-dockercfg for {image}"),
        }
    }
}

fn identity_namespace(project: &str, identity_provider: &str) -> String {
    format!("identitynamespace:{project}.svc.id.goog:{identity_provider}")
}

/// The GCR plugin.
#[derive(Debug)]
pub struct Gcr {
    args: GcrArgs,
    endpoints: Endpoints,
    metadata_url: String,
    overrides: ResponseOverrides,
}

impl Provider for Gcr {
    const NAME: &'static str = "gcr";
    const ABOUT: &'static str = "Kubelet credential provider for Google Container Registry and Artifact Registry";
    const COMPAT_SUBCOMMANDS: &'static [&'static str] = &["get-credentials"];

    type Args = GcrArgs;
    type Target = Identity;

    fn new(args: GcrArgs, endpoints: Endpoints) -> Result<Gcr, Error> {
        let metadata_url = metadata::base_url(&endpoints)?;
        let overrides = overrides_from_env(|name| std::env::var(name).ok())?;
        Ok(Gcr { args, endpoints, metadata_url, overrides })
    }

    fn plan(&self, image: &ImageRef, service_account: Option<&ServiceAccount>) -> Result<Plan<Identity>, Error> {
        if image.port.is_some() || !hosts::is_google_registry(&image.host) {
            return Err(Error::UnsupportedRegistry { host: image.registry(), expected: hosts::EXPECTED });
        }
        let (identity, service_account_token) = self.choose_identity(image, service_account)?;
        tracing::info!("identity: {}", identity.describe());
        let key = KeyInputs::new().with_value("identity", &identity)?.with("metadata", self.metadata_url.as_str());
        Ok(Plan::new(image, identity, key, &self.endpoints).from_service_account_token(service_account_token))
    }

    async fn fetch(&self, plan: &Plan<Identity>, _sessions: &Sessions<'_>) -> Result<Credential, Error> {
        if let Identity::Dockercfg { flow, image } = &plan.target {
            let (username, password) = self.dockercfg_login(*flow, image).await?;
            return Ok(Credential { username, password, expires_at: unix_now() + DOCKERCFG_LIFETIME });
        }
        let token = self.access_token(&plan.target, plan.service_account_token.as_ref()).await?;
        Ok(Credential { username: USERNAME.to_string(), password: token.token, expires_at: token.expires_at })
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
        if !principal.contains('@') {
            return Err(Error::Usage(format!(
                "check --as {principal:?}: not an email (such as node-pool@my-project.iam.gserviceaccount.com)"
            )));
        }
        if matches!(plan.target, Identity::Dockercfg { .. } | Identity::WorkloadIdentity { .. }) {
            return Err(Error::Usage(
                "check --as asks the Policy Troubleshooter as this machine's Google identity (the metadata server or a credentials file): run it with --authFlow gcr".into(),
            ));
        }
        check::run_as(self, image, &plan.target, principal).await
    }

    fn response_overrides(&self) -> ResponseOverrides {
        self.overrides
    }
}

impl Gcr {
    /// The identity for a request, and the service-account token it uses.
    fn choose_identity(
        &self,
        image: &ImageRef,
        service_account: Option<&ServiceAccount>,
    ) -> Result<(Identity, Option<Secret>), Error> {
        if self.args.auth_flow != AuthFlow::Gcr {
            let image = image.repository();
            return Ok((Identity::Dockercfg { flow: self.args.auth_flow, image }, None));
        }
        let annotations = service_account.map(|sa| &sa.annotations);
        let annotation = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
        let impersonate = annotation(SERVICE_ACCOUNT_ANNOTATION).filter(|e| !e.is_empty()).map(str::to_string);
        let opted_in = annotation(ENABLE_ANNOTATION) == Some("true") || impersonate.is_some();
        let token = service_account.and_then(|sa| sa.token.clone());
        let audience = match (&self.args.audience, &self.args.identity_provider) {
            (Some(audience), _) => Some(Audience::Full(audience.clone())),
            (None, Some(provider)) => Some(Audience::IdentityNamespace {
                project: self.args.project_id.clone(),
                identity_provider: provider.clone(),
            }),
            (None, None) => None,
        };
        match (token, audience) {
            (Some(token), Some(audience)) => {
                if let Some(email) = &impersonate {
                    validate_email(email)?;
                }
                Ok((Identity::WorkloadIdentity { audience, impersonate }, Some(token)))
            }
            (Some(_), None) if opted_in => Err(Error::Config(format!(
                "the service account opts in to workload identity ({ENABLE_ANNOTATION} or {SERVICE_ACCOUNT_ANNOTATION}) but the plugin has no audience: pass --identity-provider (and --project-id) or --audience in the kubelet's credential provider config"
            ))),
            (None, _) if opted_in => Err(Error::Config(format!(
                "the service account opts in to workload identity ({ENABLE_ANNOTATION} or {SERVICE_ACCOUNT_ANNOTATION}) but the kubelet sent no service-account token: add tokenAttributes to the provider's kubelet config"
            ))),
            (token, _) => {
                if token.is_some() {
                    tracing::info!(
                        "the request carries a service-account token but no audience is configured; using the node's identity"
                    );
                }
                match credentials_file::locate() {
                    Some(path) => Ok((Identity::CredentialsFile(path), None)),
                    None => Ok((Identity::Metadata, None)),
                }
            }
        }
    }

    fn metadata(&self) -> Result<MetadataServer, Error> {
        MetadataServer::new(self.metadata_url.clone())
    }

    fn sts_url(&self) -> String {
        match self.endpoints.get("sts", None) {
            Some(base) => format!("{base}/v1/token"),
            None => token::STS_URL.to_string(),
        }
    }

    /// An access token for `identity`.
    async fn access_token(
        &self,
        identity: &Identity,
        service_account_token: Option<&Secret>,
    ) -> Result<AccessToken, Error> {
        let http = Http::new()?;
        match identity {
            Identity::WorkloadIdentity { audience, impersonate } => {
                let token = service_account_token.ok_or_else(|| {
                    Error::Config("workload identity needs the request's service-account token".into())
                })?;
                let audience = match audience {
                    Audience::Full(audience) => audience.clone(),
                    Audience::IdentityNamespace { project: Some(project), identity_provider } => {
                        identity_namespace(project, identity_provider)
                    }
                    Audience::IdentityNamespace { project: None, identity_provider } => {
                        identity_namespace(&self.metadata()?.project_id().await?, identity_provider)
                    }
                };
                let federated =
                    token::exchange(&http, &self.sts_url(), &audience, token, token::JWT_TOKEN_TYPE).await?;
                match impersonate {
                    Some(email) => {
                        let base = self.endpoints.resolve("iamcredentials", None, token::IAM_CREDENTIALS_URL);
                        token::impersonate(&http, &token::impersonation_url(&base, email), email, &federated).await
                    }
                    None => Ok(federated),
                }
            }
            Identity::CredentialsFile(path) => CredentialsFile::read(path)?.token(&http, &self.sts_url()).await,
            Identity::Metadata => self.metadata()?.token().await,
            Identity::Dockercfg { .. } => {
                Err(Error::Config("the dockercfg flows give logins, not access tokens".into()))
            }
        }
    }

    /// The login a dockercfg flow holds for `image`.
    async fn dockercfg_login(&self, flow: AuthFlow, image: &str) -> Result<(String, Secret), Error> {
        let metadata = self.metadata()?;
        let (attribute, document) = match flow {
            AuthFlow::DockercfgUrl => {
                let attribute = "instance attribute google-dockercfg-url";
                let url = metadata
                    .attribute("google-dockercfg-url")
                    .await?
                    .ok_or_else(|| Error::cloud(attribute, "is not set on this instance"))?;
                let url = url.trim();
                // Upstream fetches any http URL; plain http is accepted here only
                // from the metadata server itself or loopback.
                let on_metadata_server = url.starts_with(&format!("{}/", metadata.base()));
                if !on_metadata_server {
                    credential_provider::endpoints::validate_url(attribute, url)?;
                }
                let http = Http::new()?;
                let reply = http.send("dockercfg URL", http.get(url)).await?;
                let document = reply.success_text("dockercfg URL")?;
                (attribute, document)
            }
            _ => {
                let attribute = "instance attribute google-dockercfg";
                let document = metadata
                    .attribute("google-dockercfg")
                    .await?
                    .ok_or_else(|| Error::cloud(attribute, "is not set on this instance"))?;
                (attribute, document)
            }
        };
        dockercfg::login_for(&document, image, attribute)
    }
}

/// A Google service account's email: `name@project.iam.gserviceaccount.com`
/// and the like. It becomes part of a URL path, so nothing else gets through.
fn validate_email(email: &str) -> Result<(), Error> {
    let valid = email.split_once('@').is_some_and(|(name, domain)| {
        !name.is_empty()
            && domain.contains('.')
            && email.bytes().all(|b| b.is_ascii_alphanumeric() || b"@.-_".contains(&b))
    });
    if valid {
        Ok(())
    } else {
        Err(Error::Config(format!("{SERVICE_ACCOUNT_ANNOTATION}={email:?} is not a service account email")))
    }
}

/// The upstream plugin's `KUBE_SIDECAR_CACHE_DURATION` (a Go duration) and
/// `KUBE_SIDECAR_CACHE_TYPE` (`image`, `registry` or `global`).
fn overrides_from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<ResponseOverrides, Error> {
    let mut overrides = ResponseOverrides::default();
    if let Some(value) = lookup(CACHE_DURATION_VARIABLE).filter(|v| !v.is_empty()) {
        let seconds = parse_go_duration(&value).filter(|s| *s >= 0.0).ok_or_else(|| {
            Error::Config(format!("{CACHE_DURATION_VARIABLE}={value:?} is not a duration such as 5m or 1h30m"))
        })?;
        overrides.cache_duration = Some(Duration::from_secs_f64(seconds.min(1e9)));
    }
    if let Some(value) = lookup(CACHE_TYPE_VARIABLE).filter(|v| !v.is_empty()) {
        overrides.cache_key_type = Some(match value.to_ascii_lowercase().as_str() {
            "image" => CacheKeyType::Image,
            "registry" => CacheKeyType::Registry,
            "global" => CacheKeyType::Global,
            _ => {
                return Err(Error::Config(format!(
                    "{CACHE_TYPE_VARIABLE}={value:?} is not one of image, registry, global"
                )));
            }
        });
    }
    Ok(overrides)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_overrides_from_the_upstream_variables() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        assert_eq!(overrides_from_env(env(&[])).expect("none"), ResponseOverrides::default());
        let o = overrides_from_env(env(&[(CACHE_DURATION_VARIABLE, "1h30m"), (CACHE_TYPE_VARIABLE, "global")]))
            .expect("ok");
        assert_eq!(o.cache_duration, Some(Duration::from_secs(5400)));
        assert_eq!(o.cache_key_type, Some(CacheKeyType::Global));
        assert!(overrides_from_env(env(&[(CACHE_DURATION_VARIABLE, "soon")])).is_err());
        assert!(overrides_from_env(env(&[(CACHE_DURATION_VARIABLE, "-5m")])).is_err());
        assert!(overrides_from_env(env(&[(CACHE_TYPE_VARIABLE, "pod")])).is_err());
    }

    #[test]
    fn service_account_emails() {
        assert!(validate_email("puller@my-project.iam.gserviceaccount.com").is_ok());
        for bad in ["puller", "a@b", "x@y.com/../../z", "@p.iam.gserviceaccount.com", "a b@c.d"] {
            assert!(validate_email(bad).is_err(), "{bad}");
        }
    }
}
