//! The core every kubelet credential provider plugin in this workspace links.
//!
//! A plugin implements [`Provider`] (which registries it serves, how it turns
//! an identity into a registry credential, and its `check`) and hands it to
//! [`run`]. Everything else lives here, once:
//!
//! - [`clock`]: Unix time as entries count it, and jitter;
//! - [`secret`]: keeping secrets out of logs and errors;
//! - [`image`] and [`matching`]: image references and the kubelet's glob rules;
//! - [`jwt`]: the claims of tokens the clouds issue (their expiry);
//! - [`endpoints`]: where each call goes, and the overrides tests use;
//! - [`protocol`]: the kubelet's request and response, every API version;
//! - [`platform`]: what differs between Linux and Windows nodes (the cache's
//!   place and privacy, links, signals), each behind one function;
//! - [`files`]: replacing a file whole, atomically and durably;
//! - [`docker_config`]: `credHelpers` entries in a docker config file, and
//!   the `docker-credential-<name>` link to a plugin;
//! - [`cache`]: the on-disk cache shared by every exec, with its locking;
//! - [`error`]: the errors a run can end with, and their exit codes;
//! - [`stdio`]: the one read of stdin, the one write of stdout, the one
//!   error line and the exit code;
//! - [`manifest`]: the images a release's Kubernetes manifests deploy;
//! - [`check`]: the permission report of `check`, and what it takes;
//! - [`http`]: the HTTP client, with its timeouts, retries and budget;
//! - [`registry`]: the OCI token handshake that proves a credential grants pull;
//! - [`flow`]: how a cached credential is got: lookup, renewal under the
//!   entry's lock, stale-if-error;
//! - [`session`]: intermediate credentials (OCI's federation token) through
//!   that flow;
//! - [`provider`]: the trait a plugin implements;
//! - [`credentials`]: a provider's registry credentials through the flow;
//! - [`refresh`]: renewing the cache ahead of the kubelet;
//! - [`logging`]: the scrubbed logger;
//! - [`docker_helper`]: the docker credential-helper protocol, from the same
//!   credentials and cache;
//! - [`runner`]: the command line and what each command does.
//!
//! Each module uses only modules listed before it, so the core reads from
//! the top of this list down, and no module reaches into one that uses it.

pub mod cache;
pub mod check;
pub mod clock;
pub mod credentials;
pub mod docker_config;
pub mod docker_helper;
pub mod endpoints;
pub mod error;
pub mod files;
pub mod flow;
pub mod http;
pub mod image;
pub mod jwt;
pub mod logging;
pub mod manifest;
pub mod matching;
pub mod platform;
pub mod protocol;
pub mod provider;
pub mod refresh;
pub mod registry;
pub mod runner;
pub mod secret;
pub mod session;
pub mod stdio;

pub use check::{CheckReport, CheckRun, CheckStep, ImageCheck, Outcome, Verdict};
pub use endpoints::Endpoints;
pub use error::{Error, FailureClass};
pub use flow::Credential;
pub use image::ImageRef;
pub use protocol::ServiceAccount;
pub use provider::{KeyInputs, Plan, Provider, ResponseOverrides};
pub use runner::run;
pub use secret::Secret;
pub use session::{Session, Sessions};
