//! The errors a plugin can end with, and the exit code each maps to.
//!
//! Exit codes, the same for every plugin:
//! - `0`: success (a response on stdout, or a `check` where every step passed);
//! - `1`: the request, the command line, the configuration or the cache is at
//!   fault: retrying the same exec will fail the same way;
//! - `2`: the cloud refused or could not be reached, or `check` found a
//!   permission missing: fix the identity or retry later.

use crate::cache::CacheError;
use crate::docker_config::DockerConfigError;
use crate::endpoints::EndpointError;
use crate::image::ImageError;
use crate::protocol::RequestError;

/// Exit code for request, usage, configuration and cache errors.
pub const EXIT_USAGE: i32 = 1;
/// Exit code for cloud and authorization errors.
pub const EXIT_CLOUD: i32 = 2;

/// Everything that can end a plugin run early.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line is wrong.
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Request(#[from] RequestError),
    #[error("{0}")]
    Image(#[from] ImageError),
    #[error("registry {host:?} is not one this plugin serves: {expected}")]
    UnsupportedRegistry { host: String, expected: &'static str },
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Endpoint(#[from] EndpointError),
    #[error("{0}")]
    Cache(#[from] CacheError),
    #[error("cannot write the response: {0}")]
    Output(std::io::Error),
    /// The cloud said no, or could not be asked. `service` names the API,
    /// `status` is the HTTP status of its answer when there was one, and
    /// `message` says what happened and, where it can, what to do.
    #[error("{service}: {message}")]
    Cloud { service: String, status: Option<u16>, message: String },
    /// The cloud could not be asked: no connection, a timeout, a reset.
    /// `message` names the endpoint and the transport's reason.
    #[error("{service}: {message}")]
    Unreachable { service: String, message: String },
    /// The cloud refused the identity (HTTP 401 or 403, or a refusal the
    /// plugin recognized): a permission or trust problem to fix, not a
    /// failure to retry.
    #[error("{service}: {message}")]
    Denied { service: String, status: Option<u16>, message: String },
    /// `check` ran and found steps that did not pass.
    #[error("{0}")]
    CheckFailed(String),
    #[error("{0}")]
    DockerConfig(#[from] DockerConfigError),
    /// The docker credential-helper protocol has already told the client
    /// what failed, on stdout as it requires: the run ends with `exit_code`
    /// and says nothing more.
    #[error("the docker credential helper answered with an error")]
    AnsweredOnStdout { exit_code: i32 },
}

/// What kind of failure a cloud error is, as an operator sorts them (the
/// refresh agent's metrics label failed renewals with it): a refusal to fix
/// in IAM, a network to fix on the node, or anything else.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureClass {
    Denied,
    Unreachable,
    Other,
}

impl FailureClass {
    pub const ALL: [FailureClass; 3] = [FailureClass::Denied, FailureClass::Unreachable, FailureClass::Other];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Denied => "denied",
            FailureClass::Unreachable => "unreachable",
            FailureClass::Other => "other",
        }
    }
}

impl Error {
    /// A cloud failure of `service` with no HTTP answer behind it that is
    /// not a transport failure (an answer that does not parse, one too large).
    pub fn cloud(service: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Cloud { service: service.into(), status: None, message: message.into() }
    }

    /// `service` could not be reached (`message` says where and why).
    pub fn unreachable(service: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Unreachable { service: service.into(), message: message.into() }
    }

    /// A refusal by `service` that no HTTP status expresses.
    pub fn denied(service: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Denied { service: service.into(), status: None, message: message.into() }
    }

    /// The error an HTTP answer with `status` means: 401 and 403 refuse the
    /// identity, anything else is a failure of the cloud.
    pub fn http(service: impl Into<String>, status: u16, message: impl Into<String>) -> Error {
        let (service, status, message) = (service.into(), Some(status), message.into());
        match status {
            Some(401 | 403) => Error::Denied { service, status, message },
            _ => Error::Cloud { service, status, message },
        }
    }

    /// Which kind of failure this is.
    pub fn class(&self) -> FailureClass {
        match self {
            Error::Denied { .. } => FailureClass::Denied,
            Error::Unreachable { .. } => FailureClass::Unreachable,
            _ => FailureClass::Other,
        }
    }

    /// The HTTP status of the cloud's answer, if this error came from one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Cloud { status, .. } | Error::Denied { status, .. } => *status,
            _ => None,
        }
    }

    /// Adds what to check next to a refusal; any other error passes unchanged.
    pub fn with_denial_hint(self, hint: &str) -> Error {
        match self {
            Error::Denied { service, status, message } => {
                Error::Denied { service, status, message: format!("{message} ({hint})") }
            }
            other => other,
        }
    }

    /// Rewrites the message of a cloud failure (not of a refusal), to say
    /// where it happened or what usually causes it.
    pub fn with_cloud_context(self, context: impl FnOnce(String) -> String) -> Error {
        match self {
            Error::Cloud { service, status, message } => Error::Cloud { service, status, message: context(message) },
            Error::Unreachable { service, message } => Error::Unreachable { service, message: context(message) },
            other => other,
        }
    }

    /// OAuth token endpoints answer 400 (`invalid_grant`, `invalid_client`)
    /// to credentials they refuse: for them such an answer is a refusal too.
    pub fn bad_request_as_denial(self) -> Error {
        match self {
            Error::Cloud { service, status: Some(400), message } => {
                Error::Denied { service, status: Some(400), message }
            }
            other => other,
        }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Cloud { .. } | Error::Unreachable { .. } | Error::Denied { .. } | Error::CheckFailed(_) => {
                EXIT_CLOUD
            }
            Error::AnsweredOnStdout { exit_code } => *exit_code,
            _ => EXIT_USAGE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_decides_and_the_text_does_not() {
        assert!(matches!(Error::http("s", 403, "x"), Error::Denied { status: Some(403), .. }));
        assert!(matches!(Error::http("s", 401, "x"), Error::Denied { .. }));
        assert!(matches!(Error::http("s", 500, "x"), Error::Cloud { status: Some(500), .. }));
        assert!(matches!(Error::http("s", 400, "x").bad_request_as_denial(), Error::Denied { status: Some(400), .. }));
        // A message that merely reads like a 400 is not one.
        assert!(matches!(Error::cloud("s", "HTTP 400 Bad Request").bad_request_as_denial(), Error::Cloud { .. }));
        assert_eq!(Error::http("s", 404, "x").status(), Some(404));
        assert_eq!(Error::http("s", 403, "x").class(), FailureClass::Denied);
        assert_eq!(Error::unreachable("s", "cannot reach x").class(), FailureClass::Unreachable);
        assert_eq!(Error::http("s", 500, "x").class(), FailureClass::Other);
        assert_eq!(Error::unreachable("s", "x").exit_code(), EXIT_CLOUD);
        assert_eq!(Error::cloud("s", "x").exit_code(), EXIT_CLOUD);
        assert_eq!(Error::Config("x".into()).exit_code(), EXIT_USAGE);
    }

    #[test]
    fn context_and_hints_keep_the_status() {
        let e = Error::http("s", 503, "busy").with_cloud_context(|m| format!("{m} (retry later)"));
        assert_eq!(e.to_string(), "s: busy (retry later)");
        assert_eq!(e.status(), Some(503));
        let d = Error::http("s", 403, "no").with_denial_hint("grant it");
        assert_eq!(d.to_string(), "s: no (grant it)");
        assert_eq!(d.status(), Some(403));
        assert_eq!(Error::http("s", 403, "no").with_cloud_context(|_| "changed".into()).to_string(), "s: no");
    }
}
