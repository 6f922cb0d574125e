//! A provider's registry credentials through the [`flow`](crate::flow): the
//! cache key of a plan, and getting, renewing and forgetting the credential
//! a plan names. The runner's request path, `check` and `refresh` all come
//! here; nothing here parses a command line or writes to stdout.

use std::time::Duration;

use crate::cache::{Cache, CacheKey, CachedCredential};
use crate::error::Error;
use crate::flow::{self, Credential, Lease, Lookup, Place, Renewal, RenewalFailure};
use crate::provider::{Plan, Provider};
use crate::session::Sessions;

/// The most one fetch from the cloud may take, retries included.
pub const FETCH_BUDGET: Duration = Duration::from_secs(30);

/// The cache key of a plan, under the provider's name.
pub fn key<P: Provider>(plan: &Plan<P::Target>) -> CacheKey {
    plan.cache_key(P::NAME)
}

fn place<'a, P: Provider>(plan: &'a Plan<P::Target>, key: &'a CacheKey, image: &'a str) -> Place<'a> {
    Place {
        plugin: P::NAME,
        key,
        image,
        label: &plan.registry,
        needs_service_account_token: plan.service_account_token.is_some(),
    }
}

/// The credential for `plan` (requested for `image`): from the cache while
/// fresh, else renewed, else stale-if-error; then proven by the plugin's
/// `verify` when it asks for that. A cache hit starts no async runtime.
pub fn get<P: Provider>(
    provider: &P,
    cache: Option<&Cache>,
    plan: &Plan<P::Target>,
    image: &str,
) -> Result<Lease, Error> {
    let key = key::<P>(plan);
    let place = place::<P>(plan, &key, image);
    let lease = lease_at(provider, cache, plan, &place)?;
    if !plan.is_verified_before_use() {
        return Ok(lease);
    }
    let sessions = Sessions::new(cache, P::NAME);
    match block_on(provider.verify(plan, &lease.credential, &sessions))? {
        Err(Error::Denied { service, message, .. }) => {
            // Refused: forget it and get one more, which must pass.
            tracing::info!("{service} refused the credential ({message}); fetching a new one");
            if let Some(cache) = cache {
                cache.forget(P::NAME, &key);
            }
            let lease = lease_at(provider, cache, plan, &place)?;
            block_on(provider.verify(plan, &lease.credential, &sessions))??;
            Ok(lease)
        }
        _ => Ok(lease),
    }
}

/// [`get`] without the plugin's `verify`: for a client that proves the
/// credential itself, with the pull it wants it for (the docker credential
/// helper, which knows a registry but no repository to verify against).
pub fn get_unverified<P: Provider>(
    provider: &P,
    cache: Option<&Cache>,
    plan: &Plan<P::Target>,
    image: &str,
) -> Result<Lease, Error> {
    let key = key::<P>(plan);
    lease_at(provider, cache, plan, &place::<P>(plan, &key, image))
}

/// The flow for the entry at `place`, with an async runtime only when the
/// cloud must be asked.
fn lease_at<P: Provider>(
    provider: &P,
    cache: Option<&Cache>,
    plan: &Plan<P::Target>,
    place: &Place,
) -> Result<Lease, Error> {
    match flow::lookup(cache, place) {
        Lookup::Fresh(entry) => Ok(Lease::of_entry(&entry)),
        Lookup::Due(previous) => {
            block_on(flow::renew_or_fall_back(cache, place, previous, || fetch(provider, cache, plan)))?
        }
    }
}

/// Renews the cached `entry` for `refresh`, if the provider, as configured
/// now, plans it again under the same key.
pub fn renew<P: Provider>(provider: &P, cache: &Cache, entry: &CachedCredential) -> Result<Renewal, RenewalError> {
    let image = crate::image::ImageRef::parse(&entry.image).map_err(|e| RenewalError::Unplanned(e.into()))?;
    let plan = provider.plan(&image, None).map_err(RenewalError::Unplanned)?;
    let key = key::<P>(&plan);
    if key.as_str() != entry.key {
        return Err(RenewalError::OtherSettings);
    }
    let place = place::<P>(&plan, &key, &entry.image);
    let renewal = block_on(flow::renew(cache, &place, Some(entry.clone()), || fetch(provider, Some(cache), &plan)));
    match renewal {
        Ok(renewal) => renewal.map_err(RenewalError::Failed),
        Err(error) => Err(RenewalError::Failed(Box::new(RenewalFailure { error, previous: Some(entry.clone()) }))),
    }
}

/// Why `refresh` did not renew an entry.
#[derive(Debug)]
pub enum RenewalError {
    /// The provider no longer plans the entry's image (its configuration changed).
    Unplanned(Error),
    /// The provider plans it under another key: the entry was written under
    /// other flags or variables than this process has.
    OtherSettings,
    /// The renewal ran and failed.
    Failed(Box<RenewalFailure>),
}

/// Forgets the cached credential of `plan`: the next get fetches.
pub fn forget<P: Provider>(cache: Option<&Cache>, plan: &Plan<P::Target>) {
    if let Some(cache) = cache {
        cache.forget(P::NAME, &key::<P>(plan));
    }
}

/// One call to the cloud for `plan`, within [`FETCH_BUDGET`].
async fn fetch<P: Provider>(provider: &P, cache: Option<&Cache>, plan: &Plan<P::Target>) -> Result<Credential, Error> {
    let sessions = Sessions::new(cache, P::NAME);
    match tokio::time::timeout(FETCH_BUDGET, provider.fetch(plan, &sessions)).await {
        Ok(result) => result,
        Err(_) => Err(Error::cloud(
            P::NAME,
            format!(
                "no credential within {}s; is the cloud's endpoint reachable from this node?",
                FETCH_BUDGET.as_secs()
            ),
        )),
    }
}

/// Runs a future on a fresh single-threaded runtime: only when the cloud must
/// be asked (a cache hit never starts one). Fails only when the process
/// cannot have one (out of file descriptors, say).
pub fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("cannot start the async runtime: {e}")))?;
    Ok(runtime.block_on(future))
}
