//! What a plugin implements: the part that is specific to one cloud.

use std::fmt::Debug;

use crate::check::CheckReport;
use crate::endpoints::Endpoints;
use crate::error::Error;
use crate::flow::Credential;
use crate::image::ImageRef;
use crate::protocol::{CacheKeyType, ServiceAccount};
use crate::secret::Secret;
use crate::session::Sessions;

/// What one request needs, decided before any network call: which registry
/// the credential is for, what the plugin will fetch, and every input that
/// changes the answer (for the cache key).
#[derive(Clone, Debug)]
pub struct Plan<T> {
    /// The auth key of the response: the requested registry host, with its
    /// port. Never a wildcard, which would hand this secret to other registries.
    pub registry: String,
    /// The plugin's own description of what to fetch.
    pub target: T,
    /// Non-secret inputs that select the credential: region, account, role,
    /// identity settings, endpoint overrides.
    pub key_parts: Vec<String>,
    /// The service-account token the credential is derived from, if any. Such a
    /// credential is cached by the token's hash only and never renewed by
    /// `refresh`, which has no token.
    pub service_account_token: Option<Secret>,
}

/// What a plugin imposes on every response, where its upstream counterpart
/// let users choose (the GCP plugin's `KUBE_SIDECAR_CACHE_*` variables).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResponseOverrides {
    /// Instead of `Registry`.
    pub cache_key_type: Option<CacheKeyType>,
    /// Instead of the time left until the refresh point; never beyond the
    /// credential's expiry.
    pub cache_duration: Option<std::time::Duration>,
}

/// One cloud's plugin. The core's runner does everything else: the protocol,
/// the command line, the cache, logging and exit codes.
///
/// `new` and `plan` must not touch the network or build SDK clients: on a cache
/// hit they are all of the plugin that runs. `Sync`, because `refresh` renews several
/// entries at once.
#[allow(async_fn_in_trait)] // The runner drives these on its own single-threaded runtime.
pub trait Provider: Sized + Sync {
    /// Short name: cache file prefix and log label (`ecr`).
    const NAME: &'static str;
    /// The binary's name (`ecr-credential-provider`).
    const BINARY: &'static str;
    /// One line for `--help`.
    const ABOUT: &'static str;
    /// Subcommands of the upstream plugin that mean "answer a request" and are
    /// accepted as the first argument so that its kubelet config works unchanged
    /// (`get-credentials` for the GCP plugin).
    const COMPAT_SUBCOMMANDS: &'static [&'static str] = &[];

    /// Long flags the upstream plugin takes with one dash, as Go's `flag`
    /// package allows (`-config FILE`): rewritten to `--config` before parsing.
    const COMPAT_SINGLE_DASH_FLAGS: &'static [&'static str] = &[];

    /// The plugin's own command-line flags.
    type Args: clap::Args + Debug;
    /// What `plan` decides and `fetch` uses.
    type Target: Debug;

    /// Builds the plugin from its flags and the endpoint overrides.
    fn new(args: Self::Args, endpoints: Endpoints) -> Result<Self, Error>;

    /// Decides, without any network call, how to serve `image`; refuses images
    /// this plugin does not serve.
    fn plan(&self, image: &ImageRef, service_account: Option<&ServiceAccount>) -> Result<Plan<Self::Target>, Error>;

    /// Gets a fresh credential from the cloud. `sessions` caches whatever
    /// intermediate credential the plugin needs on the way.
    async fn fetch(&self, plan: &Plan<Self::Target>, sessions: &Sessions<'_>) -> Result<Credential, Error>;

    /// Checks, with this node's identity, every permission a pull of `image`
    /// needs. It runs with fresh credentials: the runner forgets the cached
    /// one for `image` afterwards, and a plugin forgets its sessions.
    async fn check(&self, image: &ImageRef, sessions: &Sessions<'_>) -> Result<CheckReport, Error>;

    /// Whether `verify` must run on every answer (a plugin option that costs
    /// a network call per exec; off by default, and then no runtime starts on
    /// a cache hit).
    fn verifies_credentials(&self) -> bool {
        false
    }

    /// Proves `credential` works before the kubelet gets it. A `Denied` makes
    /// the runner forget the cached credential and fetch once more.
    async fn verify(
        &self,
        _plan: &Plan<Self::Target>,
        _credential: &Credential,
        _sessions: &Sessions<'_>,
    ) -> Result<(), Error> {
        Ok(())
    }

    /// What every response must say regardless of the credential.
    fn response_overrides(&self) -> ResponseOverrides {
        ResponseOverrides::default()
    }
}
