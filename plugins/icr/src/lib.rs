//! `icr-credential-provider`: registry credentials for IBM Cloud Container
//! Registry, in place of the `all-icr-io` pull secrets clusters copy into
//! every namespace.
//!
//! The kubelet always gets a short-lived IAM access token (username
//! `iambearer`), never an API key. Where the IAM token comes from, the first
//! that applies: the pod's service-account token (KEP-4412) as a compute
//! resource token for a trusted profile; a compute resource token file; an API
//! key; the VPC instance's identity.

mod check;
pub mod hosts;
pub mod iam;

use std::path::PathBuf;

use credential_provider::cache::secret_digest;
use credential_provider::http::Http;
use credential_provider::{
    CheckReport, Credential, Endpoints, Error, ImageRef, KeyInputs, Plan, Provider, Secret, ServiceAccount, Sessions,
};

use crate::hosts::IcrRegistry;
use crate::iam::{Grant, IamToken, Profile};

/// The username ICR expects with an IAM access token.
pub const USERNAME: &str = "iambearer";
/// Service-account annotations naming the trusted profile a pod pulls as (KEP-4412).
pub const PROFILE_ID_ANNOTATION: &str = "iam.cloud.ibm.com/trusted-profile-id";
pub const PROFILE_NAME_ANNOTATION: &str = "iam.cloud.ibm.com/trusted-profile-name";
/// The variable holding an API key.
pub const API_KEY_VARIABLE: &str = "IBMCLOUD_API_KEY";

/// Which IAM to call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum IamEndpoint {
    /// Private IAM for `private.` registries, public IAM otherwise.
    Auto,
    /// iam.cloud.ibm.com
    Public,
    /// private.iam.cloud.ibm.com
    Private,
}

#[derive(Debug, clap::Args)]
pub struct IcrArgs {
    /// The trusted profile to get tokens for, by id (KEP-4412 tokens, --cr-token-file, VPC instances).
    #[arg(long, value_name = "ID", group = "profile")]
    pub profile_id: Option<String>,
    /// The trusted profile, by name (KEP-4412 tokens and --cr-token-file).
    #[arg(long, value_name = "NAME", group = "profile")]
    pub profile_name: Option<String>,
    /// The trusted profile, by CRN.
    #[arg(long, value_name = "CRN", group = "profile")]
    pub profile_crn: Option<String>,
    /// A compute resource token file (e.g. a projected service-account token) to trade for the profile.
    #[arg(long, value_name = "FILE")]
    pub cr_token_file: Option<PathBuf>,
    /// A file holding an API key [default: the IBMCLOUD_API_KEY variable].
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Which IAM endpoint to call.
    #[arg(long, value_enum, default_value = "auto")]
    pub iam_endpoint: IamEndpoint,
}

/// Where an API key is kept.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ApiKeySource {
    Variable,
    File(PathBuf),
}

/// How one request gets its IAM token (and as it enters the cache key).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum IbmIdentity {
    /// KEP-4412: the request's service-account token for a trusted profile.
    ServiceAccount(Profile),
    /// A compute resource token file for a trusted profile.
    ComputeResourceTokenFile { path: PathBuf, profile: Profile },
    /// An API key.
    ApiKey(ApiKeySource),
    /// The VPC instance's identity, for a trusted profile or its linked default.
    VpcInstance(Option<Profile>),
}

impl IbmIdentity {
    pub fn describe(&self) -> String {
        match self {
            IbmIdentity::ServiceAccount(profile) => format!("service-account token for {}", profile.describe()),
            IbmIdentity::ComputeResourceTokenFile { path, profile } => {
                format!("compute resource token {} for {}", path.display(), profile.describe())
            }
            IbmIdentity::ApiKey(ApiKeySource::Variable) => format!("API key from {API_KEY_VARIABLE}"),
            IbmIdentity::ApiKey(ApiKeySource::File(path)) => format!("API key from {}", path.display()),
            IbmIdentity::VpcInstance(Some(profile)) => format!("VPC instance identity for {}", profile.describe()),
            IbmIdentity::VpcInstance(None) => "VPC instance identity for its linked trusted profile".to_string(),
        }
    }
}

/// What one request fetches.
#[derive(Debug)]
pub struct IcrTarget {
    pub identity: IbmIdentity,
    /// The IAM base URL.
    pub iam: String,
}

/// The ICR plugin.
#[derive(Debug)]
pub struct Icr {
    args: IcrArgs,
    endpoints: Endpoints,
}

impl Provider for Icr {
    const NAME: &'static str = "icr";
    const CHECK_AS_INSTEAD: &'static str = "IBM Cloud IAM has no API for it: run icr-credential-provider check on a node with that identity \
        (or as the service account, with --service-account-token-file), or list its policies: ibmcloud iam trusted-profile-policies PROFILE";
    const ABOUT: &'static str = "Kubelet credential provider for IBM Cloud Container Registry";

    type Args = IcrArgs;
    type Target = IcrTarget;

    fn new(args: IcrArgs, endpoints: Endpoints) -> Result<Icr, Error> {
        credential_provider::secret::register_env(&[API_KEY_VARIABLE]);
        Ok(Icr { args, endpoints })
    }

    fn plan(&self, image: &ImageRef, service_account: Option<&ServiceAccount>) -> Result<Plan<IcrTarget>, Error> {
        let registry = (image.port.is_none())
            .then(|| IcrRegistry::from_host(&image.host))
            .flatten()
            .ok_or_else(|| Error::UnsupportedRegistry { host: image.registry(), expected: hosts::EXPECTED })?;
        let (identity, service_account_token) = self.choose_identity(service_account)?;
        tracing::info!("identity: {}", identity.describe());
        let iam = self.iam_url(&registry);
        let mut key = KeyInputs::new().with_value("identity", &identity)?.with("iam", iam.as_str());
        if let IbmIdentity::ApiKey(source) = &identity {
            // A rotated key must not be served the old key's token.
            key = key.with("api-key-sha256", secret_digest(&read_api_key(source)?));
        }
        let target = IcrTarget { identity, iam };
        Ok(Plan::new(image, target, key, &self.endpoints).from_service_account_token(service_account_token))
    }

    async fn fetch(&self, plan: &Plan<IcrTarget>, _sessions: &Sessions<'_>) -> Result<Credential, Error> {
        let token = self.iam_token(&plan.target, plan.service_account_token.as_ref()).await?;
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
}

impl Icr {
    /// The profile named by the flags, if any.
    fn flag_profile(&self) -> Option<Profile> {
        let args = &self.args;
        args.profile_id
            .clone()
            .map(Profile::Id)
            .or_else(|| args.profile_name.clone().map(Profile::Name))
            .or_else(|| args.profile_crn.clone().map(Profile::Crn))
    }

    fn choose_identity(
        &self,
        service_account: Option<&ServiceAccount>,
    ) -> Result<(IbmIdentity, Option<Secret>), Error> {
        if let Some(sa) = service_account
            && let Some(token) = &sa.token
        {
            let annotated = sa
                .annotations
                .get(PROFILE_ID_ANNOTATION)
                .filter(|v| !v.is_empty())
                .map(|id| Profile::Id(id.clone()))
                .or_else(|| {
                    sa.annotations
                        .get(PROFILE_NAME_ANNOTATION)
                        .filter(|v| !v.is_empty())
                        .map(|n| Profile::Name(n.clone()))
                });
            match annotated.or_else(|| self.flag_profile()) {
                Some(profile) => {
                    validate_profile(&profile)?;
                    return Ok((IbmIdentity::ServiceAccount(profile), Some(token.clone())));
                }
                None => tracing::info!(
                    "the request carries a service-account token but names no trusted profile ({PROFILE_ID_ANNOTATION}, {PROFILE_NAME_ANNOTATION} or --profile-id); using the node's identity"
                ),
            }
        }
        if let Some(path) = &self.args.cr_token_file {
            let profile = self.flag_profile().ok_or_else(|| {
                Error::Config(
                    "--cr-token-file needs the trusted profile: --profile-id, --profile-name or --profile-crn".into(),
                )
            })?;
            validate_profile(&profile)?;
            return Ok((IbmIdentity::ComputeResourceTokenFile { path: path.clone(), profile }, None));
        }
        if let Some(path) = &self.args.api_key_file {
            return Ok((IbmIdentity::ApiKey(ApiKeySource::File(path.clone())), None));
        }
        if std::env::var(API_KEY_VARIABLE).is_ok_and(|k| !k.is_empty()) {
            return Ok((IbmIdentity::ApiKey(ApiKeySource::Variable), None));
        }
        let profile = self.flag_profile();
        if let Some(profile) = &profile {
            validate_profile(profile)?;
        }
        Ok((IbmIdentity::VpcInstance(profile), None))
    }

    /// The IAM base URL: the `iam` override, else public or private IAM.
    fn iam_url(&self, registry: &IcrRegistry) -> String {
        let default = match self.args.iam_endpoint {
            IamEndpoint::Public => iam::PUBLIC_IAM,
            IamEndpoint::Private => iam::PRIVATE_IAM,
            IamEndpoint::Auto if registry.private => iam::PRIVATE_IAM,
            IamEndpoint::Auto => iam::PUBLIC_IAM,
        };
        self.endpoints.resolve("iam", None, default)
    }

    async fn iam_token(&self, target: &IcrTarget, service_account_token: Option<&Secret>) -> Result<IamToken, Error> {
        match &target.identity {
            IbmIdentity::ServiceAccount(profile) => {
                let token = service_account_token
                    .ok_or_else(|| Error::Config("this identity needs the request's service-account token".into()))?;
                iam::token(&Http::new()?, &target.iam, &Grant::ComputeResource { token, profile }).await
            }
            IbmIdentity::ComputeResourceTokenFile { path, profile } => {
                let token = std::fs::read_to_string(path).map_err(|e| {
                    Error::Config(format!("cannot read the compute resource token {}: {e}", path.display()))
                })?;
                let token = Secret::new(token.trim().to_string());
                iam::token(&Http::new()?, &target.iam, &Grant::ComputeResource { token: &token, profile }).await
            }
            IbmIdentity::ApiKey(source) => {
                let key = read_api_key(source)?;
                iam::token(&Http::new()?, &target.iam, &Grant::ApiKey(&key)).await
            }
            IbmIdentity::VpcInstance(profile) => {
                let metadata = self.endpoints.resolve("imds", None, iam::VPC_METADATA);
                iam::vpc_token(&Http::new()?, &metadata, profile.as_ref()).await
            }
        }
    }
}

fn read_api_key(source: &ApiKeySource) -> Result<Secret, Error> {
    let key = match source {
        ApiKeySource::Variable => std::env::var(API_KEY_VARIABLE).unwrap_or_default(),
        ApiKeySource::File(path) => std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read the API key file {}: {e}", path.display())))?,
    };
    let key = Secret::new(key.trim().to_string());
    if key.expose().is_empty() {
        return Err(Error::Config("the API key is empty".into()));
    }
    Ok(key)
}

/// A profile id, name or CRN: printable, no separators that could alter a form.
fn validate_profile(profile: &Profile) -> Result<(), Error> {
    let (Profile::Id(value) | Profile::Name(value) | Profile::Crn(value)) = profile;
    if !value.is_empty() && value.len() <= 512 && value.bytes().all(|b| b.is_ascii_graphic() && b != b'&' && b != b'=')
    {
        Ok(())
    } else {
        Err(Error::Config(format!("{value:?} is not a trusted profile id, name or CRN")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn icr(iam_endpoint: IamEndpoint) -> Icr {
        let args = IcrArgs {
            profile_id: None,
            profile_name: None,
            profile_crn: None,
            cr_token_file: None,
            api_key_file: None,
            iam_endpoint,
        };
        Icr { args, endpoints: Endpoints::default() }
    }

    #[test]
    fn private_registries_use_private_iam_unless_told_otherwise() {
        let public = IcrRegistry { private: false };
        let private = IcrRegistry { private: true };
        assert_eq!(icr(IamEndpoint::Auto).iam_url(&public), iam::PUBLIC_IAM);
        assert_eq!(icr(IamEndpoint::Auto).iam_url(&private), iam::PRIVATE_IAM);
        assert_eq!(icr(IamEndpoint::Public).iam_url(&private), iam::PUBLIC_IAM);
        assert_eq!(icr(IamEndpoint::Private).iam_url(&public), iam::PRIVATE_IAM);
    }

    #[test]
    fn profiles() {
        assert!(validate_profile(&Profile::Id("Profile-9f3c2b1a-0000-4000-8000-000000000000".into())).is_ok());
        assert!(
            validate_profile(&Profile::Crn("crn:v1:bluemix:public:iam-identity::a/123::profile:Profile-1".into()))
                .is_ok()
        );
        for bad in ["", "a b", "a&b=c", "x\n"] {
            assert!(validate_profile(&Profile::Name(bad.into())).is_err(), "{bad:?}");
        }
    }
}
