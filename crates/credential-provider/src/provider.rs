//! What a plugin implements: the part that is specific to one cloud.

use std::fmt::Debug;

use crate::cache::{self, CacheKey};
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
    /// The service-account token the credential is derived from, if any. Such a
    /// credential is cached by the token's hash only and never renewed by
    /// `refresh`, which has no token.
    pub service_account_token: Option<Secret>,
    /// Whether the credential is proven with the provider's `verify` before
    /// the kubelet gets it.
    verify: bool,
    /// What the plugin named as selecting the credential.
    key: KeyInputs,
    /// The endpoint overrides in force, which the core adds to every key.
    endpoints: Vec<String>,
}

impl<T> Plan<T> {
    /// The plan for `image`'s registry: `target` is what to fetch, `key` the
    /// plugin's inputs that select the credential, `endpoints` the overrides
    /// in force (a credential from an emulator is never served for the cloud).
    pub fn new(image: &ImageRef, target: T, key: KeyInputs, endpoints: &Endpoints) -> Plan<T> {
        Plan {
            registry: image.registry(),
            target,
            service_account_token: None,
            verify: false,
            key,
            endpoints: endpoints.fingerprint(),
        }
    }

    /// The credential comes from `token` (a KEP-4412 request's): it is keyed
    /// by the token's hash.
    pub fn from_service_account_token(mut self, token: Option<Secret>) -> Plan<T> {
        self.service_account_token = token;
        self
    }

    /// The credential must be proven with the provider's `verify` before the
    /// kubelet gets it, when `verify` is true (a plugin option: it costs a
    /// network call per exec, and without it a cache hit starts no runtime).
    pub fn verified_before_use(mut self, verify: bool) -> Plan<T> {
        self.verify = verify;
        self
    }

    /// Whether the credential is proven before use.
    pub fn is_verified_before_use(&self) -> bool {
        self.verify
    }

    /// The cache key: the registry, the plugin's inputs, the endpoint
    /// overrides and the service-account token's hash, under `plugin`'s name
    /// and the cache's format version. Derived here only, so that no plugin
    /// can leave a part out.
    pub fn cache_key(&self, plugin: &str) -> CacheKey {
        // Each part is hashed length-prefixed, and each list after its
        // length: no two different plans give the same sequence.
        let mut parts = vec![self.registry.clone(), self.key.0.len().to_string()];
        for (name, value) in &self.key.0 {
            parts.extend([name.to_string(), value.clone()]);
        }
        parts.push(self.endpoints.len().to_string());
        parts.extend(self.endpoints.iter().cloned());
        parts.push(self.service_account_token.as_ref().map(cache::secret_digest).unwrap_or_default());
        CacheKey::derive(plugin, &parts)
    }
}

/// The non-secret inputs that select a plugin's credential (account, region,
/// role, identity settings), each named. Values are the inputs themselves,
/// never a log label: rewording a log line must not change a key. A value
/// that is a structure enters as its JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyInputs(Vec<(&'static str, String)>);

impl KeyInputs {
    pub fn new() -> KeyInputs {
        KeyInputs::default()
    }

    /// Adds the input `name`.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> KeyInputs {
        self.0.push((name, value.into()));
        self
    }

    /// Adds the input `name`, a structure (an identity enum, say), as its
    /// JSON. Fails only for what JSON cannot hold (a path that is not UTF-8).
    pub fn with_value(self, name: &'static str, value: &impl serde::Serialize) -> Result<KeyInputs, Error> {
        let text = serde_json::to_string(value)
            .map_err(|e| Error::Config(format!("the {name} cannot be told apart from another ({e})")))?;
        Ok(self.with(name, text))
    }
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

/// The suffix of every plugin binary's name.
pub const BINARY_SUFFIX: &str = "-credential-provider";

/// `P`'s binary: `<NAME>-credential-provider` (`ecr-credential-provider`).
pub fn binary_name<P: Provider>() -> String {
    format!("{}{BINARY_SUFFIX}", P::NAME)
}

/// One cloud's plugin. The core's runner does everything else: the protocol,
/// the command line, the cache, logging and exit codes.
///
/// `new` and `plan` must not touch the network or build SDK clients: on a cache
/// hit they are all of the plugin that runs. `Sync`, because `refresh` renews several
/// entries at once.
#[allow(async_fn_in_trait)] // The runner drives these on its own single-threaded runtime.
pub trait Provider: Sized + Sync {
    /// Short name: cache file prefix and log label (`ecr`); the binary is
    /// `<NAME>-credential-provider` ([`binary_name`]).
    const NAME: &'static str;
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
    /// needs, as `plan` (the runner's, for `image`) says to get its
    /// credential. It runs with fresh credentials: the runner forgets the
    /// cached one afterwards, and a plugin forgets its sessions.
    async fn check(
        &self,
        plan: &Plan<Self::Target>,
        image: &ImageRef,
        sessions: &Sessions<'_>,
    ) -> Result<CheckReport, Error>;

    /// How to check a principal's rights on a cloud that cannot evaluate
    /// them for another (the default `check_as` says it).
    const CHECK_AS_INSTEAD: &'static str = "run check on a node with that identity instead";

    /// Checks every permission a pull of `image` needs for another principal
    /// (a node's role, from a CI runner), through the cloud's own evaluation
    /// of that principal's policies, without acting as it: `check --as`.
    /// A cloud without such an API says so, and how to check instead.
    async fn check_as(
        &self,
        _plan: &Plan<Self::Target>,
        _image: &ImageRef,
        principal: &str,
    ) -> Result<CheckReport, Error> {
        Err(Error::Usage(format!(
            "check --as {principal}: {} cannot evaluate another principal's permissions; {}",
            binary_name::<Self>(),
            Self::CHECK_AS_INSTEAD
        )))
    }

    /// Proves `credential` works before the kubelet gets it, for a plan that
    /// asks for it ([`Plan::verified_before_use`]). A `Denied` makes the
    /// runner forget the cached credential and fetch once more.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(image: &str, key: KeyInputs, endpoints: &str, token: Option<&str>) -> Plan<()> {
        let image = ImageRef::parse(image).expect("image");
        let endpoints = Endpoints::from_lookup(|name| {
            (name == crate::endpoints::ENDPOINTS_VARIABLE && !endpoints.is_empty()).then(|| endpoints.to_string())
        })
        .expect("endpoints");
        Plan::new(&image, (), key, &endpoints).from_service_account_token(token.map(|t| Secret::new(t.to_string())))
    }

    #[test]
    fn every_input_the_core_adds_changes_the_key() {
        let inputs = || KeyInputs::new().with("region", "us-east-1");
        let base = plan("r.example/a", inputs(), "", None);
        assert_eq!(base.registry, "r.example");
        let key = base.cache_key("test");
        assert_eq!(plan("r.example/other/path", inputs(), "", None).cache_key("test"), key, "one key per registry");
        for other in [
            plan("r.example:5000/a", inputs(), "", None),
            plan("s.example/a", inputs(), "", None),
            plan("r.example/a", KeyInputs::new().with("region", "us-west-2"), "", None),
            plan("r.example/a", inputs().with("role", "x"), "", None),
            plan("r.example/a", inputs(), "sts=http://127.0.0.1:9", None),
            plan("r.example/a", inputs(), "", Some("token")),
        ] {
            assert_ne!(other.cache_key("test"), key, "{other:?}");
        }
        assert_ne!(base.cache_key("other"), key, "the plugin's name");
        // A name and a value that would run together are still told apart.
        assert_ne!(
            plan("r.example/a", KeyInputs::new().with("a", "b=c"), "", None).cache_key("test"),
            plan("r.example/a", KeyInputs::new().with("a=b", "c"), "", None).cache_key("test")
        );
    }

    #[test]
    fn structures_enter_as_their_data() {
        #[derive(serde::Serialize)]
        enum Identity {
            Managed { id: Option<String> },
        }
        let key = KeyInputs::new().with_value("identity", &Identity::Managed { id: None }).expect("json");
        assert_eq!(key, KeyInputs::new().with("identity", r#"{"Managed":{"id":null}}"#));
    }
}
