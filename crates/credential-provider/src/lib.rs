//! The core every kubelet credential provider plugin in this workspace links.
//!
//! A plugin implements [`Provider`] (which registries it serves, how it turns
//! an identity into a registry credential, and its `check`) and hands it to
//! [`run`]. Everything else lives here, once:
//!
//! - [`protocol`]: the kubelet's request and response, every API version;
//! - [`image`] and [`matching`]: image references and the kubelet's glob rules;
//! - [`cache`]: the on-disk cache shared by every exec, with its locking;
//! - [`endpoints`]: where each call goes, and the overrides tests use;
//! - [`check`]: the permission report of `check`;
//! - [`http`]: the HTTP client, with its timeouts, retries and budget;
//! - [`registry`]: the OCI token handshake that proves a credential grants pull;
//! - [`jwt`]: the claims of tokens the clouds issue (their expiry);
//! - [`secret`]: keeping secrets out of logs and errors;
//! - [`session`]: the cache of intermediate credentials (OCI's federation token);
//! - [`runner`]: the command line and the flow of one request;
//! - [`refresh`]: renewing the cache ahead of the kubelet.

pub mod cache;
pub mod check;
pub mod endpoints;
pub mod error;
pub mod http;
pub mod image;
pub mod jwt;
pub mod matching;
mod memo;
pub mod protocol;
pub mod provider;
pub mod refresh;
pub mod registry;
pub mod runner;
pub mod secret;
pub mod session;

pub use check::{CheckReport, CheckStep, Outcome};
pub use endpoints::Endpoints;
pub use error::Error;
pub use image::ImageRef;
pub use protocol::ServiceAccount;
pub use provider::{Credential, Plan, Provider, ResponseOverrides};
pub use runner::run;
pub use secret::Secret;
pub use session::{Session, Sessions};
