//! IBM Cloud IAM's token endpoint, and the VPC instance identity service that
//! turns an instance's identity into an IAM token for a trusted profile.

use credential_provider::clock::unix_now;
use credential_provider::http::Http;
use credential_provider::{Error, Secret};
use serde::Deserialize;

/// Public IAM.
pub const PUBLIC_IAM: &str = "https://iam.cloud.ibm.com";
/// IAM over IBM Cloud's private network.
pub const PRIVATE_IAM: &str = "https://private.iam.cloud.ibm.com";
/// The VPC metadata service.
pub const VPC_METADATA: &str = "http://169.254.169.254";
/// The VPC identity API version this plugin speaks.
const VPC_VERSION: &str = "2022-03-01";

/// A trusted profile, by one of the ways IAM names it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Profile {
    Id(String),
    Name(String),
    Crn(String),
}

impl Profile {
    pub fn describe(&self) -> String {
        match self {
            Profile::Id(id) => format!("trusted profile {id}"),
            Profile::Name(name) => format!("trusted profile named {name}"),
            Profile::Crn(crn) => format!("trusted profile {crn}"),
        }
    }
}

/// How to ask IAM for a token.
#[derive(Debug)]
pub enum Grant<'a> {
    /// `urn:ibm:params:oauth:grant-type:apikey`
    ApiKey(&'a Secret),
    /// `urn:ibm:params:oauth:grant-type:cr-token` for a trusted profile.
    ComputeResource { token: &'a Secret, profile: &'a Profile },
}

/// An IAM access token and its expiry.
#[derive(Debug)]
pub struct IamToken {
    pub token: Secret,
    pub expires_at: u64,
}

/// `POST <iam>/identity/token`.
pub async fn token(http: &Http, iam: &str, grant: &Grant<'_>) -> Result<IamToken, Error> {
    const SERVICE: &str = "IBM Cloud IAM";
    let mut form: Vec<(&str, &str)> = Vec::new();
    match grant {
        Grant::ApiKey(key) => {
            form.push(("grant_type", "urn:ibm:params:oauth:grant-type:apikey"));
            form.push(("apikey", key.expose()));
        }
        Grant::ComputeResource { token, profile } => {
            form.push(("grant_type", "urn:ibm:params:oauth:grant-type:cr-token"));
            form.push(("cr_token", token.expose()));
            form.push(match profile {
                Profile::Id(id) => ("profile_id", id),
                Profile::Name(name) => ("profile_name", name),
                Profile::Crn(crn) => ("profile_crn", crn),
            });
        }
    }
    let request = http.post(&format!("{iam}/identity/token")).header("Accept", "application/json").form(&form);
    let reply = http.send(SERVICE, request).await?;
    #[derive(Deserialize)]
    struct Answer {
        access_token: Secret,
        expiration: Option<i64>,
        expires_in: Option<i64>,
    }
    let answer: Answer =
        reply.success_json(SERVICE).map_err(|e| e.bad_request_as_denial().with_denial_hint(&refusal_hint(grant)))?;
    let expires_at = answer
        .expiration
        .map(|at| u64::try_from(at).unwrap_or(0))
        .or_else(|| answer.expires_in.map(|s| unix_now().saturating_add_signed(s)))
        .ok_or_else(|| Error::cloud(SERVICE, "the answer gives no expiration for its token"))?;
    Ok(IamToken { token: answer.access_token, expires_at })
}

/// What to check when IAM refuses `grant`.
fn refusal_hint(grant: &Grant<'_>) -> String {
    match grant {
        Grant::ApiKey(_) => "is the API key valid and not expired?".to_string(),
        Grant::ComputeResource { profile, .. } => {
            format!("does {} trust this cluster's service account (a compute resource rule)?", profile.describe())
        }
    }
}

/// The VPC instance identity flow: an instance identity token from the
/// metadata service, then an IAM token for `profile` (or the instance's
/// linked default).
pub async fn vpc_token(http: &Http, metadata: &str, profile: Option<&Profile>) -> Result<IamToken, Error> {
    const SERVICE: &str = "VPC instance identity";
    #[derive(Deserialize)]
    struct Answer {
        access_token: Secret,
        expires_at: Option<String>,
        expires_in: Option<i64>,
    }
    let expiry = |answer: &Answer| -> Result<u64, Error> {
        if let Some(at) = &answer.expires_at
            && let Ok(time) = humantime::parse_rfc3339_weak(at)
        {
            return Ok(time.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()));
        }
        answer
            .expires_in
            .map(|s| unix_now().saturating_add_signed(s))
            .ok_or_else(|| Error::cloud(SERVICE, "the answer gives no expiry for its token"))
    };

    let url = format!("{metadata}/instance_identity/v1/token?version={VPC_VERSION}");
    let request = http.put(&url).header("Metadata-Flavor", "ibm").json(&serde_json::json!({ "expires_in": 300 }));
    let reply = http.send(SERVICE, request).await?;
    let identity: Answer = reply
        .success_json(SERVICE)
        .map_err(|e| e.with_cloud_context(|m| format!("{m} (is the metadata service enabled on this instance?)")))?;

    let body = match profile {
        None => serde_json::json!({}),
        Some(Profile::Id(id)) => serde_json::json!({ "trusted_profile": { "id": id } }),
        Some(Profile::Crn(crn)) => serde_json::json!({ "trusted_profile": { "crn": crn } }),
        Some(Profile::Name(_)) => {
            return Err(Error::Config(
                "the VPC identity service names trusted profiles by id or CRN: use --profile-id or --profile-crn"
                    .into(),
            ));
        }
    };
    let url = format!("{metadata}/instance_identity/v1/iam_token?version={VPC_VERSION}");
    let request = http.post(&url).bearer_auth(identity.access_token.expose()).json(&body);
    let reply = http.send(SERVICE, request).await?;
    let answer: Answer = reply
        .success_json(SERVICE)
        .map_err(|e| e.with_denial_hint("is the trusted profile linked to this instance?"))?;
    let expires_at = expiry(&answer)?;
    Ok(IamToken { token: answer.access_token, expires_at })
}
