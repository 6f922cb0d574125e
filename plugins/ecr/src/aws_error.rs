//! Reading the AWS SDK's errors: one line for a person, and a verdict for `check`.

use aws_config::meta::ProviderChainError;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ecr::config::http::HttpResponse;
use aws_sdk_ecr::error::{ProvideErrorMetadata, SdkError};
use credential_provider::Outcome;
use credential_provider::http::{Unreachable, find_source};

/// Error codes that mean "the identity may not do this".
const DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "ExpiredTokenException",
    "ExpiredToken",
];

/// Error codes that mean "allowed, but there is nothing there": the
/// permission was granted, which is all `check` asks.
const NOT_FOUND_CODES: &[&str] = &[
    "RepositoryNotFoundException",
    "RepositoryPolicyNotFoundException",
    "LayersNotFoundException",
    "LayerInaccessibleException",
    "ImageNotFoundException",
    "RegistryPolicyNotFoundException",
];

/// What one failed call says, reduced to what `check` and the error line need.
#[derive(Debug)]
pub struct AwsFailure {
    pub code: Option<String>,
    pub status: Option<u16>,
    pub message: String,
    /// Whether the call failed because the node has no usable AWS identity
    /// (the message then says what to do).
    pub no_credentials: bool,
    /// Whether no answer came: an endpoint (AWS's, or the node's identity
    /// source) could not be reached, or did not answer in time.
    pub unreachable: bool,
    /// The SDK's whole chain of errors, for `-v`.
    pub chain: String,
}

impl AwsFailure {
    /// Reads an SDK error. When the body is not the JSON the SDK expects (moto
    /// answers some denials with XML), the code and message are taken from it.
    pub fn from_sdk<E>(error: &SdkError<E, HttpResponse>) -> AwsFailure
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let status = error.raw_response().map(|r| r.status().as_u16());
        let body = error.raw_response().and_then(|r| r.body().bytes()).map(|b| String::from_utf8_lossy(b).into_owned());
        let (code, message) = match error {
            SdkError::ServiceError(service) => {
                let inner = service.err();
                (
                    inner.code().map(str::to_string).or_else(|| body.as_deref().and_then(|b| xml_field(b, "Code"))),
                    inner
                        .message()
                        .map(str::to_string)
                        .or_else(|| body.as_deref().and_then(|b| xml_field(b, "Message"))),
                )
            }
            _ => (None, None),
        };
        let message = match (&code, message) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.clone(),
            (None, Some(message)) => message,
            (None, None) => match (status, body) {
                (Some(status), Some(body)) if !body.trim().is_empty() => {
                    format!("HTTP {status}, an answer that is not AWS's: {:?}", snippet(&body))
                }
                (Some(status), _) => format!("HTTP {status}"),
                (None, _) => error_chain(error),
            },
        };
        let no_credentials = find_source::<CredentialsError>(error);
        let message = match no_credentials {
            Some(credentials) => no_credentials_message(credentials),
            None => one_line(&message),
        };
        let unreachable = status.is_none()
            && (find_source::<Unreachable>(error).is_some()
                || matches!(error, SdkError::TimeoutError(_) | SdkError::DispatchFailure(_)));
        AwsFailure {
            code,
            status,
            message,
            no_credentials: no_credentials.is_some(),
            unreachable,
            chain: error_chain(error),
        }
    }

    /// The verdict of `check` for a call that failed this way.
    pub fn outcome(&self) -> (Outcome, String) {
        let code = self.code.as_deref().unwrap_or("");
        if NOT_FOUND_CODES.contains(&code) {
            (Outcome::Allowed, format!("permission granted ({code}: nothing to read there)"))
        } else if DENIED_CODES.contains(&code) || self.status == Some(403) {
            (Outcome::Denied, self.message.clone())
        } else {
            (Outcome::Unknown, self.message.clone())
        }
    }

    /// The error that ends an exec: the action, what AWS said, and a hint;
    /// the SDK's whole chain goes to `-v`.
    pub fn into_error(self, action: &str) -> credential_provider::Error {
        let hint = self.hint();
        self.into_error_with(action, hint)
    }

    /// [`AwsFailure::into_error`] with the caller's `hint` after what AWS
    /// said: a refusal stays `Denied`, and the status stays, whatever the hint.
    pub fn into_error_with(self, action: &str, hint: &str) -> credential_provider::Error {
        tracing::info!("{action} failed: {}", self.chain);
        let (service, status, message) = (action.to_string(), self.status, format!("{}{hint}", self.message));
        match self.outcome().0 {
            Outcome::Denied => credential_provider::Error::Denied { service, status, message },
            _ if self.unreachable => credential_provider::Error::Unreachable { service, message },
            _ => credential_provider::Error::Cloud { service, status, message },
        }
    }

    /// A hint for the error line, where the cause is a common one.
    pub fn hint(&self) -> &'static str {
        match self.outcome().0 {
            Outcome::Denied => " (the identity lacks this permission; run `check --image IMAGE` to see which)",
            // The message says what to do already.
            _ if self.no_credentials => "",
            _ => "",
        }
    }
}

/// What to tell an operator when the node has no usable AWS identity: what
/// went wrong first (the endpoint the chain could not reach, if one), then
/// what to do.
pub fn no_credentials_message(error: &CredentialsError) -> String {
    const WHAT_TO_DO: &str = "give the node an instance profile, or set AWS_* variables or a profile";
    let chain = find_source::<ProviderChainError<CredentialsError>>(error);
    let unreachable = chain.into_iter().flat_map(|chain| chain.attempts()).find_map(|attempt| {
        find_source::<Unreachable>(attempt.error()).map(|unreachable| (source_name(attempt.name()), unreachable))
    });
    match (unreachable, chain) {
        (Some((source, unreachable)), _) => {
            format!("no AWS credentials: {source} is unreachable ({unreachable}); {WHAT_TO_DO}")
        }
        (None, Some(chain)) => {
            let tried: Vec<&str> = chain.attempts().iter().map(|a| source_name(a.name())).collect();
            format!("no AWS credentials found (tried {}); {WHAT_TO_DO}", tried.join(", "))
        }
        // One source of the chain failed outright (a profile that does not
        // parse, an instance with no role): its own words.
        (None, None) => format!(
            "no AWS credentials: {}; {WHAT_TO_DO}",
            one_line(&credential_provider::http::innermost_cause(error))
        ),
    }
}

/// A source of the SDK's default chain, as an operator knows it.
fn source_name(name: &str) -> &str {
    match name {
        "Environment" => "the AWS_* variables",
        "Profile" => "the AWS profile",
        "WebIdentityToken" => "web identity (AWS_WEB_IDENTITY_TOKEN_FILE)",
        "EcsContainer" => "the ECS container credentials endpoint",
        "Ec2InstanceMetadata" => "the instance metadata service",
        other => other,
    }
}

/// The text of `<name>…</name>` in an XML error body.
fn xml_field(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{name}>"))? + start;
    Some(body[start..end].trim().to_string())
}

/// An error and its sources, each once, on one line: the SDK's own rendering
/// appends debug dumps of whole responses.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = inner.source();
    }
    parts.join(": ")
}

/// The start of an unexpected body, for the error line.
fn snippet(body: &str) -> String {
    let line = one_line(body);
    match line.char_indices().nth(120) {
        Some((end, _)) => format!("{}…", &line[..end]),
        None => line,
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: Option<&str>, status: Option<u16>) -> AwsFailure {
        AwsFailure {
            code: code.map(str::to_string),
            status,
            message: "m".into(),
            no_credentials: false,
            unreachable: false,
            chain: String::new(),
        }
    }

    #[test]
    fn verdicts() {
        assert_eq!(failure(Some("AccessDeniedException"), Some(400)).outcome().0, Outcome::Denied);
        assert_eq!(failure(None, Some(403)).outcome().0, Outcome::Denied);
        assert_eq!(failure(Some("RepositoryPolicyNotFoundException"), Some(400)).outcome().0, Outcome::Allowed);
        assert_eq!(failure(Some("ThrottlingException"), Some(400)).outcome().0, Outcome::Unknown);
        assert_eq!(failure(None, Some(500)).outcome().0, Outcome::Unknown);
    }

    #[test]
    fn errors_keep_their_status_and_verdict_whatever_the_hint() {
        use credential_provider::Error;
        let sts = "sts:AssumeRoleWithWebIdentity";
        match failure(Some("AccessDenied"), Some(403)).into_error_with(sts, " (role r: trusted?)") {
            Error::Denied { service, status, message } => {
                assert_eq!((service.as_str(), status, message.as_str()), (sts, Some(403), "m (role r: trusted?)"));
            }
            other => panic!("{other:?}"),
        }
        match failure(Some("ServiceUnavailable"), Some(503)).into_error_with(sts, "") {
            Error::Cloud { status, .. } => assert_eq!(status, Some(503)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_xml_error_bodies() {
        let body = "<ErrorResponse><Error><Code>AccessDenied</Code><Message>User: x is not\n authorized</Message></Error></ErrorResponse>";
        assert_eq!(xml_field(body, "Code").as_deref(), Some("AccessDenied"));
        assert_eq!(one_line(&xml_field(body, "Message").unwrap_or_default()), "User: x is not authorized");
    }
}
