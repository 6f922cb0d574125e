//! The errors a plugin can end with, and the exit code each maps to.
//!
//! Exit codes, the same for every plugin:
//! - `0`: success (a response on stdout, or a `check` where every step passed);
//! - `1`: the request, the command line, the configuration or the cache is at
//!   fault: retrying the same exec will fail the same way;
//! - `2`: the cloud refused or could not be reached, or `check` found a
//!   permission missing: fix the identity or retry later.

use crate::cache::CacheError;
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
    /// The cloud said no, or could not be asked. `service` names the API, and
    /// `message` says what happened and, where it can, what to do.
    #[error("{service}: {message}")]
    Cloud { service: String, message: String },
    /// The cloud refused the identity (HTTP 401 or 403): a permission or trust
    /// problem to fix, not a failure to retry.
    #[error("{service}: {message}")]
    Denied { service: String, message: String },
    /// `check` ran and found steps that did not pass.
    #[error("{0}")]
    CheckFailed(String),
}

impl Error {
    /// A cloud error for `service`.
    pub fn cloud(service: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Cloud { service: service.into(), message: message.into() }
    }

    /// A refusal by `service`.
    pub fn denied(service: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Denied { service: service.into(), message: message.into() }
    }

    /// Adds what to check next to a refusal; any other error passes unchanged.
    pub fn with_denial_hint(self, hint: &str) -> Error {
        match self {
            Error::Denied { service, message } => Error::Denied { service, message: format!("{message} ({hint})") },
            other => other,
        }
    }

    /// OAuth token endpoints answer 400 (`invalid_grant`, `invalid_client`)
    /// to credentials they refuse: for them such an answer is a refusal too.
    pub fn bad_request_as_denial(self) -> Error {
        match self {
            Error::Cloud { service, message } if message.starts_with("HTTP 400") => Error::Denied { service, message },
            other => other,
        }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Cloud { .. } | Error::Denied { .. } | Error::CheckFailed(_) => EXIT_CLOUD,
            _ => EXIT_USAGE,
        }
    }
}
