//! `ecr-credential-provider`: registry credentials for Amazon ECR and ECR Public.
//!
//! The node's identity comes from the AWS SDK's default chain (environment,
//! profile, web identity, ECS, IMDSv2). When the kubelet sends a pod's
//! service-account token (KEP-4412) and a role is named for it, the plugin
//! assumes that role with the token first, so each tenant pulls with its own
//! role and no pull secret exists anywhere.

mod aws_error;
mod check;
pub mod hosts;
mod transport;

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use base64::Engine as _;
use credential_provider::clock::unix_now;
use credential_provider::{
    CheckReport, Credential, Endpoints, Error, ImageRef, KeyInputs, Plan, Provider, Secret, ServiceAccount, Sessions,
};

use crate::aws_error::AwsFailure;
use crate::hosts::EcrRegistry;
use crate::transport::SdkTransport;

/// The service-account annotation that names the role to assume (KEP-4412).
pub const ROLE_ANNOTATION: &str = "eks.amazonaws.com/ecr-role-arn";
/// The variable naming a role for every service account without the annotation.
pub const ROLE_VARIABLE: &str = "AWS_ECR_ROLE_ARN";

/// The `RoleSessionName` of a service account's role session, upstream's, so
/// that CloudTrail and a trust policy's `sts:RoleSessionName` condition see
/// the same name whichever plugin the node runs.
pub const ROLE_SESSION_NAME: &str = "ecr-credential-provider";

/// Variables that select the node's AWS identity: part of the cache key, so
/// that a change of identity never serves the previous identity's credential.
const IDENTITY_VARIABLES: &[&str] = &[
    "AWS_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_EC2_METADATA_DISABLED",
];

/// Variables holding secrets, scrubbed from anything printed.
const SECRET_VARIABLES: &[&str] = &["AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"];

/// The upstream plugin takes no flags but `--help` and `--version`, and so
/// neither does this one: a kubelet config written for it works unchanged.
#[derive(Debug, clap::Args)]
pub struct EcrArgs {}

/// What one request fetches.
#[derive(Debug)]
pub struct EcrTarget {
    pub registry: EcrRegistry,
    /// The role to assume with the request's service-account token, if any.
    pub role_arn: Option<String>,
}

/// The ECR plugin.
#[derive(Debug)]
pub struct Ecr {
    endpoints: Endpoints,
    default_role: Option<String>,
}

impl Provider for Ecr {
    const NAME: &'static str = "ecr";
    const ABOUT: &'static str = "Kubelet credential provider for Amazon ECR and ECR Public";

    type Args = EcrArgs;
    type Target = EcrTarget;

    fn new(_args: EcrArgs, endpoints: Endpoints) -> Result<Ecr, Error> {
        credential_provider::secret::register_env(SECRET_VARIABLES);
        let default_role = std::env::var(ROLE_VARIABLE).ok().filter(|r| !r.is_empty());
        Ok(Ecr { endpoints, default_role })
    }

    fn plan(&self, image: &ImageRef, service_account: Option<&ServiceAccount>) -> Result<Plan<EcrTarget>, Error> {
        let unsupported = || Error::UnsupportedRegistry { host: image.registry(), expected: hosts::EXPECTED };
        // A registry named with its default port is the same registry (the
        // auth key keeps the port, as the request spelt it); no other port is ECR's.
        if image.port.is_some_and(|port| port != 443) {
            return Err(unsupported());
        }
        let registry = EcrRegistry::from_host(&image.host).ok_or_else(unsupported)?;

        let token = service_account.and_then(|sa| sa.token.clone());
        let role_arn = match (&token, service_account) {
            (Some(_), Some(sa)) => {
                let role = sa.annotations.get(ROLE_ANNOTATION).cloned().or_else(|| self.default_role.clone());
                if role.is_none() {
                    tracing::info!(
                        "the request carries a service-account token but no role (annotation {ROLE_ANNOTATION} or {ROLE_VARIABLE}); using the node's credentials"
                    );
                }
                role
            }
            _ => None,
        };
        if let Some(role) = &role_arn {
            validate_role_arn(role)?;
            tracing::info!(role = %role, "assuming the service account's role with its token");
        }

        let mut key = KeyInputs::new().with_value("registry", &registry)?;
        if let Some(role) = &role_arn {
            key = key.with("role", role.as_str());
        }
        for name in IDENTITY_VARIABLES {
            if let Ok(value) = std::env::var(name) {
                key = key.with(name, value);
            }
        }
        let target = EcrTarget { registry, role_arn };
        let token = target.role_arn.as_ref().and(token);
        Ok(Plan::new(image, target, key, &self.endpoints).from_service_account_token(token))
    }

    async fn fetch(&self, plan: &Plan<EcrTarget>, _sessions: &Sessions<'_>) -> Result<Credential, Error> {
        let target = &plan.target;
        let sdk = self.sdk_config(target.registry.region()).await?;
        let assumed = match (&target.role_arn, &plan.service_account_token) {
            (Some(role), Some(token)) => Some(self.assume_role(&sdk, role, token).await?),
            _ => None,
        };
        let (token, expires_at) = match &target.registry {
            EcrRegistry::Private { fips, dual_stack, .. } => {
                let client = self.ecr_client(&sdk, *fips, *dual_stack, assumed);
                let output = client
                    .get_authorization_token()
                    .send()
                    .await
                    .map_err(|e| AwsFailure::from_sdk(&e).into_error("ecr:GetAuthorizationToken"))?;
                let data = output.authorization_data().first().ok_or_else(|| {
                    Error::cloud("ecr:GetAuthorizationToken", "the answer holds no authorization data")
                })?;
                (data.authorization_token().map(str::to_string), data.expires_at().map(|t| t.secs()))
            }
            EcrRegistry::Public { dual_stack } => {
                let client = self.ecr_public_client(&sdk, *dual_stack, assumed);
                let output = client
                    .get_authorization_token()
                    .send()
                    .await
                    .map_err(|e| AwsFailure::from_sdk(&e).into_error("ecr-public:GetAuthorizationToken"))?;
                let data = output.authorization_data().ok_or_else(|| {
                    Error::cloud("ecr-public:GetAuthorizationToken", "the answer holds no authorization data")
                })?;
                (data.authorization_token().map(str::to_string), data.expires_at().map(|t| t.secs()))
            }
        };
        let token = token.ok_or_else(|| Error::cloud("ECR", "the answer holds no authorization token"))?;
        let token = Secret::new(token);
        let (username, password) = decode_token(&token)?;
        let expires_at = match expires_at {
            Some(secs) => u64::try_from(secs).unwrap_or(0),
            None => {
                tracing::warn!("ECR gave no expiry for its token; assuming one hour");
                unix_now() + 3600
            }
        };
        Ok(Credential { username, password, expires_at })
    }

    async fn check(
        &self,
        plan: &Plan<Self::Target>,
        image: &ImageRef,
        _sessions: &Sessions<'_>,
    ) -> Result<CheckReport, Error> {
        let target = &plan.target;
        let sdk = self.sdk_config(target.registry.region()).await?;
        let role = match (&target.role_arn, &plan.service_account_token) {
            (Some(role), Some(token)) => Some((role.as_str(), token)),
            _ => None,
        };
        Ok(check::run(self, &sdk, image, &target.registry, role).await)
    }

    async fn check_as(
        &self,
        plan: &Plan<Self::Target>,
        image: &ImageRef,
        principal: &str,
    ) -> Result<CheckReport, Error> {
        let is_principal = principal.starts_with("arn:")
            && principal.split(':').nth(2) == Some("iam")
            && principal.split(':').nth(5).is_some_and(|r| r.starts_with("role/") || r.starts_with("user/"));
        if !is_principal {
            return Err(Error::Usage(format!(
                "check --as {principal:?}: not an IAM role or user ARN (such as arn:aws:iam::123456789012:role/eks-node-role)"
            )));
        }
        let target = &plan.target;
        let sdk = self.sdk_config(target.registry.region()).await?;
        Ok(check::run_as(self, &sdk, image, &target.registry, principal).await)
    }
}

/// Who signs an STS call.
enum StsSigning {
    /// Nobody: a call that carries its own proof (a web identity token).
    Unsigned,
    /// The node, by the SDK's default chain.
    Node,
    /// These credentials (a role assumed for a service account).
    As(aws_sdk_ecr::config::Credentials),
}

impl Ecr {
    /// The SDK configuration for `region`, on the core's HTTP client, with
    /// timeouts and retries sized so that a fetch always ends well inside the
    /// kubelet's 60 s exec limit (the timeouts are the core client's too).
    async fn sdk_config(&self, region: &str) -> Result<SdkConfig, Error> {
        let config = aws_config::defaults(BehaviorVersion::latest())
            .http_client(SdkTransport::new()?.into_shared())
            .region(Region::new(region.to_string()))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .read_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(Duration::from_secs(10))
                    .operation_timeout(Duration::from_secs(25))
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .load()
            .await;
        Ok(config)
    }

    /// The endpoint override for the service `name`: its SDK variable, ours, or
    /// the SDK's `AWS_ENDPOINT_URL` for every service. An override (a VPC
    /// endpoint, a proxy) also serves FIPS and dual-stack registry hosts: it
    /// says where to go, and the SDK refuses FIPS or dual-stack beside it.
    fn endpoint_override(&self, name: &str, variable: &str) -> Option<&str> {
        self.endpoints.get(name, Some(variable)).or_else(|| self.endpoints.get(name, Some("AWS_ENDPOINT_URL")))
    }

    fn ecr_client(
        &self,
        sdk: &SdkConfig,
        fips: bool,
        dual_stack: bool,
        credentials: Option<aws_sdk_ecr::config::Credentials>,
    ) -> aws_sdk_ecr::Client {
        let endpoint = self.endpoint_override("ecr", "AWS_ENDPOINT_URL_ECR");
        let mut config = aws_sdk_ecr::config::Builder::from(sdk)
            .use_fips(fips && endpoint.is_none())
            .use_dual_stack(dual_stack && endpoint.is_none());
        if let Some(url) = endpoint {
            config = config.endpoint_url(url);
        }
        if let Some(credentials) = credentials {
            config = config.credentials_provider(credentials);
        }
        aws_sdk_ecr::Client::from_conf(config.build())
    }

    fn ecr_public_client(
        &self,
        sdk: &SdkConfig,
        dual_stack: bool,
        credentials: Option<aws_sdk_ecr::config::Credentials>,
    ) -> aws_sdk_ecrpublic::Client {
        let endpoint = self.endpoint_override("ecr-public", "AWS_ENDPOINT_URL_ECR_PUBLIC");
        let mut config = aws_sdk_ecrpublic::config::Builder::from(sdk).use_dual_stack(dual_stack && endpoint.is_none());
        if let Some(url) = endpoint {
            config = config.endpoint_url(url);
        }
        if let Some(credentials) = credentials {
            config = config.credentials_provider(credentials);
        }
        aws_sdk_ecrpublic::Client::from_conf(config.build())
    }

    /// IAM, as the runner: the policy simulator of `check --as`.
    fn iam_client(&self, sdk: &SdkConfig) -> aws_sdk_iam::Client {
        let mut config = aws_sdk_iam::config::Builder::from(sdk);
        if let Some(url) = self.endpoint_override("iam", "AWS_ENDPOINT_URL_IAM") {
            config = config.endpoint_url(url);
        }
        aws_sdk_iam::Client::from_conf(config.build())
    }

    fn sts_client(&self, sdk: &SdkConfig, signing: StsSigning) -> aws_sdk_sts::Client {
        let mut config = aws_sdk_sts::config::Builder::from(sdk);
        match signing {
            // AssumeRoleWithWebIdentity is unsigned: without a credentials
            // provider the SDK sends it as is instead of first hunting for the
            // node's credentials.
            StsSigning::Unsigned => {
                config.set_credentials_provider(None);
            }
            StsSigning::Node => {}
            StsSigning::As(credentials) => config = config.credentials_provider(credentials),
        }
        if let Some(url) = self.endpoints.get("sts", Some("AWS_ENDPOINT_URL_STS")) {
            config = config.endpoint_url(url);
        }
        aws_sdk_sts::Client::from_conf(config.build())
    }

    /// Trades the service-account token for the role's temporary credentials.
    async fn assume_role(
        &self,
        sdk: &SdkConfig,
        role: &str,
        token: &Secret,
    ) -> Result<aws_sdk_ecr::config::Credentials, Error> {
        let output = self
            .sts_client(sdk, StsSigning::Unsigned)
            .assume_role_with_web_identity()
            .role_arn(role)
            // Upstream's fixed name: a trust policy may require it (`sts:RoleSessionName`).
            .role_session_name(ROLE_SESSION_NAME)
            .web_identity_token(token.expose())
            .send()
            .await
            .map_err(|e| {
                let hint =
                    format!(" (role {role}: does its trust policy accept this cluster's service-account tokens?)");
                AwsFailure::from_sdk(&e).into_error_with("sts:AssumeRoleWithWebIdentity", &hint)
            })?;
        let credentials = output
            .credentials()
            .ok_or_else(|| Error::cloud("sts:AssumeRoleWithWebIdentity", "the answer holds no credentials"))?;
        credential_provider::secret::register(credentials.secret_access_key());
        credential_provider::secret::register(credentials.session_token());
        let expiry =
            std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(credentials.expiration().secs()).unwrap_or(0));
        Ok(aws_sdk_ecr::config::Credentials::new(
            credentials.access_key_id(),
            credentials.secret_access_key(),
            Some(credentials.session_token().to_string()),
            Some(expiry),
            "AssumeRoleWithWebIdentity",
        ))
    }
}

/// An ECR token is base64 of `user:password`.
fn decode_token(token: &Secret) -> Result<(String, Secret), Error> {
    let malformed = || Error::cloud("ECR", "the authorization token is not base64 of user:password");
    let decoded = base64::engine::general_purpose::STANDARD.decode(token.expose().trim()).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (username, password) = decoded.split_once(':').ok_or_else(malformed)?;
    if username.is_empty() || password.is_empty() {
        return Err(malformed());
    }
    Ok((username.to_string(), Secret::new(password.to_string())))
}

/// A role ARN: `arn:<partition>:iam::<account>:role/<name>`.
fn validate_role_arn(role: &str) -> Result<(), Error> {
    let parts: Vec<&str> = role.splitn(6, ':').collect();
    let valid = parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "iam"
        && parts[4].len() == 12
        && parts[4].bytes().all(|b| b.is_ascii_digit())
        && parts[5].starts_with("role/")
        && parts[5].len() > "role/".len();
    if valid {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{role:?} (from {ROLE_ANNOTATION} or {ROLE_VARIABLE}) is not an IAM role ARN such as arn:aws:iam::123456789012:role/name"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_tokens() {
        let token = Secret::new(base64::engine::general_purpose::STANDARD.encode("AWS:pass:with:colons"));
        let (user, password) = decode_token(&token).expect("decodes");
        assert_eq!(user, "AWS");
        assert_eq!(password.expose(), "pass:with:colons");
        for bad in ["not base64!", "QVdT", ""] {
            assert!(decode_token(&Secret::new(bad.into())).is_err(), "{bad}");
        }
    }

    #[test]
    fn role_arns() {
        assert!(validate_role_arn("arn:aws:iam::123456789012:role/puller").is_ok());
        assert!(validate_role_arn("arn:aws-cn:iam::123456789012:role/path/puller").is_ok());
        for bad in
            ["puller", "arn:aws:iam::123:role/x", "arn:aws:iam::123456789012:user/x", "arn:aws:iam::123456789012:role/"]
        {
            assert!(validate_role_arn(bad).is_err(), "{bad}");
        }
    }
}
