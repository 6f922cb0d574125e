//! `ocir-credential-provider`: registry credentials for Oracle Cloud
//! Infrastructure Registry.
//!
//! The plugin signs `GET https://<registry>/20180419/docker/token` as a
//! principal, the first that applies: a resource principal (v2.2, from the
//! `OCI_RESOURCE_PRINCIPAL_*` variables); a user principal (an API key from an
//! OCI CLI config file); an instance principal (the default on OKE nodes:
//! federated from the instance's certificate, its security token cached and
//! shared by every exec). The kubelet gets `BEARER_TOKEN` and the registry's
//! token, cached until half its `expires_in` has passed.

mod check;
pub mod config;
pub mod federation;
pub mod hosts;
pub mod keys;
pub mod signer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use credential_provider::clock::unix_now;
use credential_provider::http::Http;
use credential_provider::registry::Registry;
use credential_provider::{
    CheckReport, Credential, Endpoints, Error, ImageRef, KeyInputs, Outcome, Plan, Provider, Secret, Sessions,
};
use reqwest::Url;
use serde::Deserialize;

use crate::config::{AuthMethod, OciProfile, UpstreamSettings};
use crate::federation::Federated;
use crate::keys::PrivateKey;
use crate::signer::RequestSigner;

/// The name of the cached federation session.
const FEDERATION_SESSION: &str = "federation";

/// The plugin's flags, and upstream's `-config`.
#[derive(Debug, clap::Args)]
pub struct OcirArgs {
    /// The upstream plugin's YAML config (registryTokenPath, defaultUser, registryProtocol,
    /// ocirAuthMethod, tokenValidation); also accepted as `-config`.
    #[arg(long = "config", value_name = "FILE")]
    pub upstream_config: Option<PathBuf>,
    /// The OCI CLI config file for a user principal [default: OCI_CLI_CONFIG_FILE, OCI_CONFIG_FILE, ~/.oci/config].
    #[arg(long, value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// The profile of that file [default: OCI_CLI_PROFILE, else DEFAULT].
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
}

/// The principal a request signs as (and as it enters the cache key).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Principal {
    /// Resource principal v2.2, from the `OCI_RESOURCE_PRINCIPAL_*` variables.
    Resource,
    /// An API key from an OCI CLI config file's profile.
    User { config_file: PathBuf, profile: String },
    /// The instance's own identity, federated.
    Instance,
}

impl Principal {
    pub fn describe(&self) -> String {
        match self {
            Principal::Resource => "resource principal".to_string(),
            Principal::User { config_file, profile } => {
                format!("user principal [{profile}] of {}", config_file.display())
            }
            Principal::Instance => "instance principal".to_string(),
        }
    }
}

/// What one request fetches.
#[derive(Debug)]
pub struct OcirTarget {
    pub principal: Principal,
    /// The repository, for `verify` (not part of the cache key).
    pub repository: String,
}

/// The OCIR plugin.
#[derive(Debug)]
pub struct Ocir {
    args: OcirArgs,
    settings: UpstreamSettings,
    endpoints: Endpoints,
}

impl Provider for Ocir {
    const NAME: &'static str = "ocir";
    const CHECK_AS_INSTEAD: &'static str = "OCI has no policy simulator: run ocir-credential-provider check on an instance of the nodes' \
        dynamic group, or review the policies that grant it `read repos` (oci iam policy list --compartment-id TENANCY_OCID)";
    const ABOUT: &'static str = "Kubelet credential provider for Oracle Cloud Infrastructure Registry";
    const COMPAT_SINGLE_DASH_FLAGS: &'static [&'static str] = &["config"];

    type Args = OcirArgs;
    type Target = OcirTarget;

    fn new(args: OcirArgs, endpoints: Endpoints) -> Result<Ocir, Error> {
        let settings = UpstreamSettings::load(args.upstream_config.as_deref(), |name| std::env::var(name).ok())?;
        Ok(Ocir { args, settings, endpoints })
    }

    fn plan(
        &self,
        image: &ImageRef,
        _service_account: Option<&credential_provider::ServiceAccount>,
    ) -> Result<Plan<OcirTarget>, Error> {
        if image.port.is_some() || !hosts::is_ocir_host(&image.host) {
            return Err(Error::UnsupportedRegistry { host: image.registry(), expected: hosts::EXPECTED });
        }
        let principal = self.choose_principal()?;
        tracing::info!("principal: {}", principal.describe());
        let mut key =
            KeyInputs::new().with_value("principal", &principal)?.with("token-path", self.settings.token_path.as_str());
        // The resource principal variables that select the identity (never the key itself).
        for name in ["OCI_RESOURCE_PRINCIPAL_VERSION", "OCI_RESOURCE_PRINCIPAL_REGION"] {
            if let Ok(value) = std::env::var(name) {
                key = key.with(name, value);
            }
        }
        let target = OcirTarget { principal, repository: image.path.clone() };
        Ok(Plan::new(image, target, key, &self.endpoints).verified_before_use(self.settings.validate_tokens))
    }

    async fn fetch(&self, plan: &Plan<OcirTarget>, sessions: &Sessions<'_>) -> Result<Credential, Error> {
        let signer = self.signer(&plan.target.principal, sessions).await?;
        let (token, expires_at) = match self.docker_token(&plan.registry, &signer).await {
            Ok(answer) => answer,
            Err(refused @ Error::Denied { .. }) => {
                // A security token federated before a policy or dynamic group
                // changed must not be reused for its whole life (upstream's
                // issue #5): the next exec federates afresh.
                if plan.target.principal == Principal::Instance {
                    sessions.forget(FEDERATION_SESSION, &self.federation_parts());
                }
                return Err(refused);
            }
            Err(other) => return Err(other),
        };
        Ok(Credential { username: self.settings.username.clone(), password: token, expires_at })
    }

    async fn check(
        &self,
        plan: &Plan<Self::Target>,
        image: &ImageRef,
        sessions: &Sessions<'_>,
    ) -> Result<CheckReport, Error> {
        // A check starts from a fresh federation: a token made before a
        // policy changed must not decide the outcome (or outlive the check).
        sessions.forget(FEDERATION_SESSION, &self.federation_parts());
        Ok(check::run(self, image, &plan.target, sessions).await)
    }

    async fn verify(
        &self,
        plan: &Plan<OcirTarget>,
        credential: &Credential,
        sessions: &Sessions<'_>,
    ) -> Result<(), Error> {
        let http = Http::new()?;
        let registry = Registry::new(&http, &self.endpoints, &plan.registry);
        let steps = registry.check_pull(&plan.target.repository, &credential.username, &credential.password).await;
        match steps.iter().find(|step| step.outcome == Outcome::Denied) {
            Some(step) => {
                sessions.forget(FEDERATION_SESSION, &self.federation_parts());
                Err(Error::denied(format!("registry {}", plan.registry), format!("{}: {}", step.action, step.detail)))
            }
            None => Ok(()),
        }
    }
}

/// A variable's value, when it is set and not empty.
fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Ocir {
    fn choose_principal(&self) -> Result<Principal, Error> {
        let profile = || {
            self.args.profile.clone().or_else(|| env_value("OCI_CLI_PROFILE")).unwrap_or_else(|| "DEFAULT".to_string())
        };
        let config_file = config::config_file(self.args.config_file.as_deref(), env_value);
        match self.settings.auth_method {
            Some(AuthMethod::ResourcePrincipal) => Ok(Principal::Resource),
            Some(AuthMethod::InstancePrincipal) => Ok(Principal::Instance),
            Some(AuthMethod::UserPrincipal) => match config_file {
                Some((config_file, _)) => Ok(Principal::User { config_file, profile: profile() }),
                None => Err(Error::Config("USER_PRINCIPAL needs an OCI config file (--config-file)".into())),
            },
            None if env_value("OCI_RESOURCE_PRINCIPAL_VERSION").is_some() => Ok(Principal::Resource),
            None => match config_file {
                Some((config_file, _)) if config_file.is_file() => {
                    Ok(Principal::User { config_file, profile: profile() })
                }
                // A file the user named is read, or the exec fails: the
                // instance principal instead would be the wrong identity.
                Some((config_file, Some(named_by))) => Err(Error::Config(format!(
                    "the OCI config file {} ({named_by}) is not a readable file; fix the path, or drop {named_by} to use the instance principal",
                    config_file.display()
                ))),
                _ => Ok(Principal::Instance),
            },
        }
    }

    /// What selects the federation session: where it comes from.
    fn federation_parts(&self) -> Vec<String> {
        let mut parts = vec![format!("imds={}", self.imds())];
        parts.extend(self.endpoints.get("auth", None).map(|auth| format!("auth={auth}")));
        parts
    }

    fn imds(&self) -> String {
        self.endpoints.resolve("imds", None, federation::IMDS)
    }

    /// The signer for `principal`.
    async fn signer(&self, principal: &Principal, sessions: &Sessions<'_>) -> Result<RequestSigner, Error> {
        match principal {
            Principal::Resource => resource_principal_signer(),
            Principal::User { config_file, profile } => user_principal_signer(config_file, profile),
            Principal::Instance => {
                let session = sessions
                    .get(FEDERATION_SESSION, &self.federation_parts(), || async {
                        tracing::info!("federating the instance principal");
                        let (federated, expires_at) =
                            federation::federate(&Http::new()?, &self.imds(), self.endpoints.get("auth", None)).await?;
                        federated.to_session(expires_at)
                    })
                    .await?;
                Ok(Federated::from_session(&session)?.signer())
            }
        }
    }

    /// The registry's token, fetched with a signed request.
    async fn docker_token(&self, registry: &str, signer: &RequestSigner) -> Result<(Secret, u64), Error> {
        let service = format!("OCIR token at {registry}");
        let http = Http::new()?;
        let base = self.endpoints.registry(registry);
        let url = Url::parse(&format!("{base}{}", self.settings.token_path))
            .map_err(|_| Error::Config(format!("{base}{} is not a URL", self.settings.token_path)))?;
        let mut request = http.get(url.as_str());
        for (name, value) in signer.headers("GET", &url, None)? {
            request = request.header(name, value);
        }
        let reply = http.send(&service, request).await?;
        #[derive(Deserialize)]
        struct Answer {
            token: Option<Secret>,
            access_token: Option<Secret>,
            expires_in: Option<i64>,
        }
        let answer: Answer = reply
            .success_json(&service)
            .map_err(|e| e.with_denial_hint("does a policy allow this principal to read repos in the compartment?"))?;
        let token =
            answer.token.or(answer.access_token).ok_or_else(|| Error::cloud(&service, "the answer holds no token"))?;
        let expires_in = answer.expires_in.ok_or_else(|| Error::cloud(&service, "the answer gives no expires_in"))?;
        Ok((token, unix_now().saturating_add_signed(expires_in)))
    }
}

/// A variable's value, or the content of the file it names (OCI's resource
/// principal variables may hold either).
fn value_or_file(name: &str) -> Result<Option<Secret>, Error> {
    let Some(value) = env_value(name) else {
        return Ok(None);
    };
    let path = Path::new(&value);
    if path.is_absolute() && path.is_file() {
        let content = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {name} ({}): {e}", path.display())))?;
        return Ok(Some(Secret::new(content.trim().to_string())));
    }
    Ok(Some(Secret::new(value)))
}

/// Resource principal v2.2: the RPST signs as `ST$<rpst>` with its private key.
fn resource_principal_signer() -> Result<RequestSigner, Error> {
    let version = std::env::var("OCI_RESOURCE_PRINCIPAL_VERSION").unwrap_or_default();
    if version != "2.2" {
        return Err(Error::Config(format!(
            "OCI_RESOURCE_PRINCIPAL_VERSION {version:?}: only version 2.2 (RPST and private key in variables or files) is supported"
        )));
    }
    let missing = |name: &str| Error::Config(format!("a resource principal needs {name}"));
    let rpst = value_or_file("OCI_RESOURCE_PRINCIPAL_RPST")?.ok_or_else(|| missing("OCI_RESOURCE_PRINCIPAL_RPST"))?;
    let pem = value_or_file("OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM")?
        .ok_or_else(|| missing("OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM"))?;
    let passphrase = value_or_file("OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM_PASSPHRASE")?;
    let key = PrivateKey::from_pem(pem.expose(), passphrase.as_ref(), "OCI_RESOURCE_PRINCIPAL_PRIVATE_PEM")?;
    Ok(RequestSigner::new(format!("ST${}", rpst.expose()), Arc::new(key)))
}

/// A user principal: `<tenancy>/<user>/<fingerprint>` with the profile's key.
fn user_principal_signer(config_file: &Path, profile: &str) -> Result<RequestSigner, Error> {
    let profile = OciProfile::read(config_file, profile)?;
    let pem = std::fs::read_to_string(&profile.key_file)
        .map_err(|e| Error::Config(format!("cannot read the key_file {}: {e}", profile.key_file.display())))?;
    let passphrase = profile.pass_phrase.map(Secret::new);
    let key = PrivateKey::from_pem(&pem, passphrase.as_ref(), &profile.key_file.display().to_string())?;
    Ok(RequestSigner::new(format!("{}/{}/{}", profile.tenancy, profile.user, profile.fingerprint), Arc::new(key)))
}
