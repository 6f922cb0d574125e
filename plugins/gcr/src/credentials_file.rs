//! Application default credentials files: `GOOGLE_APPLICATION_CREDENTIALS`,
//! else gcloud's well-known file.
//!
//! Three kinds: `service_account` key files (a JWT assertion signed with the
//! key, traded at the file's `token_uri`); `authorized_user` files (an OAuth
//! refresh token); and `external_account` files (workload identity
//! federation: a subject token from a file or URL exchanged at STS, then
//! optionally impersonation). Every call goes through the core's client.

use std::path::{Path, PathBuf};

use credential_provider::http::{Http, is_metadata_service};
use credential_provider::{Error, Secret};
use serde::Deserialize;

use crate::token::{self, AccessToken};

/// Google's variable naming a credentials file.
pub const VARIABLE: &str = "GOOGLE_APPLICATION_CREDENTIALS";

/// The credentials file in force, if any: the variable, else gcloud's
/// well-known file when it exists.
pub fn locate() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(VARIABLE).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let config_dir = std::env::var_os("CLOUDSDK_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".config/gcloud")))?;
    Some(config_dir.join("application_default_credentials.json")).filter(|path| path.is_file())
}

/// A credentials file, read.
#[derive(Debug)]
pub enum CredentialsFile {
    ServiceAccount { private_key: Secret, client_email: String, token_uri: String },
    AuthorizedUser { client_id: String, client_secret: Secret, refresh_token: Secret, token_uri: String },
    ExternalAccount(ExternalAccount),
}

/// An `external_account` file's fields that this plugin uses.
#[derive(Debug, Deserialize)]
pub struct ExternalAccount {
    pub audience: String,
    pub subject_token_type: String,
    pub token_url: Option<String>,
    pub service_account_impersonation_url: Option<String>,
    pub credential_source: CredentialSource,
}

/// Where an external account's subject token comes from.
#[derive(Debug, Deserialize)]
pub struct CredentialSource {
    pub file: Option<PathBuf>,
    pub url: Option<String>,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub format: SourceFormat,
    pub executable: Option<serde_json::Value>,
    pub environment_id: Option<String>,
}

/// How the subject token is written in its source.
#[derive(Debug, Default, Deserialize)]
pub struct SourceFormat {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    pub subject_token_field_name: Option<String>,
}

impl CredentialsFile {
    /// Reads and recognizes `path`. Errors say which file and what is wrong,
    /// never what it holds.
    pub fn read(path: &Path) -> Result<CredentialsFile, Error> {
        let shown = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config(format!("cannot read {shown}: {e}")))?;
        let text = Secret::new(text);
        let value: serde_json::Value = serde_json::from_str(text.expose())
            .map_err(|e| Error::Config(format!("{shown} is not JSON ({})", json_problem(&e))))?;
        let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_string);
        let missing = |name: &str| Error::Config(format!("{shown} has no {name:?}"));
        match field("type").as_deref() {
            Some("service_account") => Ok(CredentialsFile::ServiceAccount {
                private_key: Secret::new(field("private_key").ok_or_else(|| missing("private_key"))?),
                client_email: field("client_email").ok_or_else(|| missing("client_email"))?,
                token_uri: field("token_uri").unwrap_or_else(|| token::OAUTH_TOKEN_URL.to_string()),
            }),
            Some("authorized_user") => Ok(CredentialsFile::AuthorizedUser {
                client_id: field("client_id").ok_or_else(|| missing("client_id"))?,
                client_secret: Secret::new(field("client_secret").ok_or_else(|| missing("client_secret"))?),
                refresh_token: Secret::new(field("refresh_token").ok_or_else(|| missing("refresh_token"))?),
                token_uri: field("token_uri").unwrap_or_else(|| token::OAUTH_TOKEN_URL.to_string()),
            }),
            Some("external_account") => serde_json::from_value(value)
                .map(CredentialsFile::ExternalAccount)
                .map_err(|e| Error::Config(format!("{shown} is not a usable external_account file: {e}"))),
            Some(other) => Err(Error::Config(format!(
                "{shown} is a {other:?} credentials file; expected service_account, authorized_user or external_account"
            ))),
            None => Err(missing("type")),
        }
    }

    /// Who the file makes the plugin, for logs and `check`.
    pub fn describe(&self) -> String {
        match self {
            CredentialsFile::ServiceAccount { client_email, .. } => format!("service account key of {client_email}"),
            CredentialsFile::AuthorizedUser { client_id, .. } => format!("authorized user (OAuth client {client_id})"),
            CredentialsFile::ExternalAccount(account) => match &account.service_account_impersonation_url {
                Some(url) => format!("external account {} impersonating {}", account.audience, impersonated_email(url)),
                None => format!("external account {}", account.audience),
            },
        }
    }

    /// An access token from this file's identity.
    pub async fn token(&self, http: &Http, sts_url: &str) -> Result<AccessToken, Error> {
        match self {
            CredentialsFile::ServiceAccount { private_key, client_email, token_uri } => {
                token::service_account_grant(http, token_uri, client_email, private_key).await
            }
            CredentialsFile::AuthorizedUser { client_id, client_secret, refresh_token, token_uri } => {
                token::refresh(http, token_uri, client_id, client_secret, refresh_token).await
            }
            CredentialsFile::ExternalAccount(account) => {
                let subject = account.subject_token(http).await?;
                let url = account.token_url.as_deref().unwrap_or(sts_url);
                let federated =
                    token::exchange(http, url, &account.audience, &subject, &account.subject_token_type).await?;
                match &account.service_account_impersonation_url {
                    Some(url) => token::impersonate(http, url, &impersonated_email(url), &federated).await,
                    None => Ok(federated),
                }
            }
        }
    }
}

/// The email in an impersonation URL (`…/serviceAccounts/<email>:generateAccessToken`).
fn impersonated_email(url: &str) -> String {
    url.rsplit('/').next().and_then(|last| last.split(':').next()).unwrap_or(url).to_string()
}

impl ExternalAccount {
    /// Reads the subject token from its file or URL.
    async fn subject_token(&self, http: &Http) -> Result<Secret, Error> {
        let source = &self.credential_source;
        let raw = if let Some(path) = &source.file {
            std::fs::read_to_string(path)
                .map_err(|e| Error::Config(format!("cannot read the subject token file {}: {e}", path.display())))?
        } else if let Some(url) = &source.url {
            // Workload identity federation from another cloud reads the
            // subject token from that cloud's metadata service, which speaks
            // plain http (Azure's IMDS, say): the one plain-http host such a
            // file may name, and the core calls it direct.
            if !is_metadata_service(url) {
                credential_provider::endpoints::validate_url("the credential_source url", url)?;
            }
            let mut request = http.get(url);
            for (name, value) in &source.headers {
                request = request.header(name, value);
            }
            let reply = http.send("subject token source", request).await?;
            if !reply.is_success() {
                return Err(reply.error("subject token source"));
            }
            String::from_utf8(reply.body).map_err(|_| Error::cloud("subject token source", "the answer is not text"))?
        } else if source.executable.is_some() || source.environment_id.is_some() {
            return Err(Error::Config(
                "external_account files with an executable or AWS credential source are not supported; use a file or url source".into(),
            ));
        } else {
            return Err(Error::Config("the external_account file's credential_source names no file or url".into()));
        };
        let raw = Secret::new(raw);
        let token = match source.format.kind.as_deref() {
            Some("json") => {
                let field = source.format.subject_token_field_name.as_deref().unwrap_or("access_token");
                let value: serde_json::Value = serde_json::from_str(raw.expose())
                    .map_err(|_| Error::Config("the subject token source is not JSON".into()))?;
                value
                    .get(field)
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
                    .ok_or_else(|| Error::Config(format!("the subject token source has no {field:?} field")))?
            }
            _ => raw.expose().trim().to_string(),
        };
        if token.is_empty() {
            return Err(Error::Config("the subject token source is empty".into()));
        }
        Ok(Secret::new(token))
    }
}

/// What kind of JSON problem `e` is: serde's own message may quote the input.
fn json_problem(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "cannot be read",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected data",
        serde_json::error::Category::Eof => "truncated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_from_impersonation_urls() {
        assert_eq!(
            impersonated_email(
                "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/sa@p.iam.gserviceaccount.com:generateAccessToken"
            ),
            "sa@p.iam.gserviceaccount.com"
        );
    }

    #[test]
    fn refuses_unknown_and_broken_files() {
        let dir = tempfile::tempdir().expect("dir");
        for (content, expect) in [
            ("not json", "is not JSON (syntax error)"),
            (r#"{"type":"impersonated_service_account"}"#, "expected service_account"),
            (r#"{"type":"authorized_user","client_id":"x"}"#, "has no \"client_secret\""),
            (r#"{}"#, "has no \"type\""),
        ] {
            let path = dir.path().join("f.json");
            std::fs::write(&path, content).expect("write");
            let error = CredentialsFile::read(&path).expect_err(content).to_string();
            assert!(error.contains(expect), "{content}: {error}");
        }
    }
}
