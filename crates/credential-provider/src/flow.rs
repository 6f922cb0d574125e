//! The one flow by which a cached credential is got, whoever asks: a kubelet
//! exec, `refresh`, or a plugin's session on its way to a registry.
//!
//! 1. *lookup*: read the entry without a lock; a fresh one is the answer.
//! 2. *renew*: take the entry's lock (so that of N processes that found it due
//!    only one asks the cloud), read it again (another process may have
//!    renewed it meanwhile), *fetch* from the cloud, write the new entry.
//! 3. *fall back*: if the fetch failed, an entry that is stale but still
//!    valid is served for a short while; an expired or missing one fails.
//!
//! The words are used in this sense everywhere in the workspace: *fetch* is
//! one call to the cloud, *renew* is a fetch under the lock that stores its
//! result, *get* is the whole flow. The flow knows nothing of plugins: it is
//! handed an entry's place and a future that fetches.

use std::future::Future;
use std::time::Duration;

use crate::cache::{Cache, CacheKey, CachedCredential, FORMAT_VERSION, Freshness};
use crate::clock;
use crate::error::Error;
use crate::secret::{self, Secret};

/// How long a renewal waits for another process renewing the same entry.
/// With the fetch budget it stays well inside the kubelet's 60 s exec limit.
pub const LOCK_WAIT: Duration = Duration::from_secs(15);
/// What a renewal says when it stops waiting for another process's lock, so
/// that a test can tell a lock waited out from one released by a death.
pub const LOCK_WAITED_OUT: &str = "fetching without waiting longer";
/// How long a stale credential, served because the cloud failed, may be
/// kept: short, so that the next pull tries the cloud again soon.
pub const STALE_KEEP: Duration = Duration::from_secs(30);

/// The longest a credential is believed to live, whatever the cloud says: a
/// day. The longest-lived registry credential a cloud issues is ECR's, 12
/// hours; an expiry years away is a cloud's (or a clock's) mistake, and
/// passed on it would pin the credential in the cache and give the kubelet a
/// `cacheDuration` past what a Go duration holds, which fails the response.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A credential fresh from the cloud.
#[derive(Clone, Debug)]
pub struct Credential {
    pub username: String,
    pub password: Secret,
    /// When the cloud says it stops working, in seconds since the Unix epoch.
    pub expires_at: u64,
}

impl Credential {
    fn of_entry(entry: &CachedCredential) -> Credential {
        Credential { username: entry.username.clone(), password: entry.password.clone(), expires_at: entry.expires_at }
    }

    /// This credential, believed to live at most [`MAX_LIFETIME`] from `now`.
    fn bounded(mut self, now: u64, label: &str) -> Credential {
        let latest = now.saturating_add(MAX_LIFETIME.as_secs());
        if self.expires_at > latest {
            tracing::warn!(
                "the cloud says the credential for {label} expires at {}, more than {}h from now; treating it as expiring at {latest}",
                self.expires_at,
                MAX_LIFETIME.as_secs() / 3600
            );
            self.expires_at = latest;
        }
        self
    }
}

/// Where an entry lives and what it records beside its credential.
#[derive(Clone, Copy, Debug)]
pub struct Place<'a> {
    /// Whose entry it is, as the cache names it (its file prefix and the
    /// entry's `plugin`): the plugin's name, or `<plugin>.<session>` for a
    /// session ([`crate::cache::owner_plugin`] reads the plugin back).
    pub plugin: &'a str,
    pub key: &'a CacheKey,
    /// The image a registry credential was got for (`refresh` plans from it
    /// again); empty for a session.
    pub image: &'a str,
    /// The auth key of a registry credential, or the name of a session: what
    /// logs and errors call the entry.
    pub label: &'a str,
    /// Whether the credential came from a request's service-account token,
    /// which `refresh` does not have.
    pub needs_service_account_token: bool,
}

/// A credential got through the flow, and how long whoever asked may keep it
/// before asking again.
#[derive(Clone, Debug)]
pub struct Lease {
    pub credential: Credential,
    pub keep_for: Duration,
}

impl Lease {
    /// A cached entry: kept until its refresh point.
    pub fn of_entry(entry: &CachedCredential) -> Lease {
        let keep_for = Duration::from_secs(entry.refresh_at.saturating_sub(clock::unix_now()));
        Lease { credential: Credential::of_entry(entry), keep_for }
    }
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// An entry before its refresh point: the answer.
    Fresh(CachedCredential),
    /// Nothing fresh: the entry must be renewed. Carries what was there, if
    /// anything, to fall back on.
    Due(Option<CachedCredential>),
}

/// Step 1: reads the entry at `place`, without a lock.
pub fn lookup(cache: Option<&Cache>, place: &Place) -> Lookup {
    let Some(entry) = cache.and_then(|cache| cache.read(place.plugin, place.key)) else {
        return Lookup::Due(None);
    };
    if entry.freshness(clock::unix_now()) == Freshness::Fresh {
        tracing::info!(entry = place.label, "answered from the cache");
        Lookup::Fresh(entry)
    } else {
        Lookup::Due(Some(entry))
    }
}

/// What a renewal came to.
#[derive(Debug)]
pub enum Renewal {
    /// Another process renewed the entry while this one waited for the lock.
    ByAnother(CachedCredential),
    /// This process fetched and stored a new credential.
    Fetched(CachedCredential),
    /// The cloud's credential was already past its expiry (a skewed clock, or
    /// an emulator): usable once, not worth caching.
    AlreadyExpired(Credential),
}

/// A renewal that failed, with the entry that was there before it, if any.
#[derive(Debug)]
pub struct RenewalFailure {
    pub error: Error,
    pub previous: Option<CachedCredential>,
}

/// Step 2: renews the entry at `place` under its lock. `previous` is what
/// the renewal was decided on (the lookup's entry, or a fresh one `refresh`
/// renews ahead of its time); `fetch` asks the cloud.
pub async fn renew<F, Fut>(
    cache: &Cache,
    place: &Place<'_>,
    previous: Option<CachedCredential>,
    fetch: F,
) -> Result<Renewal, Box<RenewalFailure>>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Credential, Error>>,
{
    let _lock = match cache.lock(place.plugin, place.key, LOCK_WAIT) {
        Ok(lock) => {
            if lock.is_none() {
                tracing::warn!(
                    "another process has been renewing {} for {}s; {LOCK_WAITED_OUT}",
                    place.label,
                    LOCK_WAIT.as_secs()
                );
            }
            lock
        }
        Err(e) => {
            tracing::warn!("cannot lock the cache entry of {} ({e}); fetching without the lock", place.label);
            None
        }
    };
    // Renewed by another process while this one waited: an entry issued after
    // the one this renewal was decided on, and fresh.
    let current = cache.read(place.plugin, place.key);
    let renewed_meanwhile = current.as_ref().filter(|entry| {
        entry.freshness(clock::unix_now()) == Freshness::Fresh
            && previous.as_ref().is_none_or(|seen| entry.issued_at > seen.issued_at)
    });
    if let Some(entry) = renewed_meanwhile {
        tracing::info!(entry = place.label, "renewed by another process; answered from the cache");
        return Ok(Renewal::ByAnother(entry.clone()));
    }
    let previous = current.or(previous);
    let now = clock::unix_now();
    let credential = match fetch().await {
        Ok(credential) => credential.bounded(now, place.label),
        Err(error) => return Err(Box::new(RenewalFailure { error, previous })),
    };
    if credential.expires_at <= now {
        tracing::warn!(
            "the credential for {} from the cloud expired already (at {}, now {now}); is the clock skewed? using it without caching it",
            place.label,
            credential.expires_at
        );
        return Ok(Renewal::AlreadyExpired(credential));
    }
    let entry = CachedCredential {
        format: FORMAT_VERSION,
        plugin: place.plugin.to_string(),
        key: place.key.as_str().to_string(),
        image: place.image.to_string(),
        registry: place.label.to_string(),
        needs_service_account_token: place.needs_service_account_token,
        issued_at: now,
        refresh_at: CachedCredential::refresh_point(now, credential.expires_at),
        expires_at: credential.expires_at,
        username: credential.username,
        password: credential.password,
    };
    if let Err(e) = cache.write(&entry) {
        tracing::warn!("cannot write the cache ({e}); using the credential anyway");
    }
    tracing::info!(entry = place.label, expires_at = entry.expires_at, "fetched a new credential");
    Ok(Renewal::Fetched(entry))
}

/// Steps 2 and 3, after a lookup that found nothing fresh: renews, and if
/// that fails serves what was there while it is still valid. Without a cache,
/// fetches.
pub async fn renew_or_fall_back<F, Fut>(
    cache: Option<&Cache>,
    place: &Place<'_>,
    previous: Option<CachedCredential>,
    fetch: F,
) -> Result<Lease, Error>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Credential, Error>>,
{
    let Some(cache) = cache else {
        let now = clock::unix_now();
        let credential = fetch().await?.bounded(now, place.label);
        let keep_for = Duration::from_secs(CachedCredential::refresh_point(now, credential.expires_at) - now);
        return Ok(Lease { credential, keep_for });
    };
    match renew(cache, place, previous, fetch).await {
        Ok(Renewal::ByAnother(entry) | Renewal::Fetched(entry)) => Ok(Lease::of_entry(&entry)),
        Ok(Renewal::AlreadyExpired(credential)) => Ok(Lease { credential, keep_for: Duration::ZERO }),
        Err(failure) => fall_back(place, *failure),
    }
}

/// The whole flow: the fresh entry, else a renewal, else the stale entry.
pub async fn get<F, Fut>(cache: Option<&Cache>, place: &Place<'_>, fetch: F) -> Result<Lease, Error>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Credential, Error>>,
{
    match lookup(cache, place) {
        Lookup::Fresh(entry) => Ok(Lease::of_entry(&entry)),
        Lookup::Due(previous) => renew_or_fall_back(cache, place, previous, fetch).await,
    }
}

/// Step 3: stale-if-error. A stale entry is served, for [`STALE_KEEP`] at
/// most, with a warning; an expired or missing one leaves the error.
fn fall_back(place: &Place, failure: RenewalFailure) -> Result<Lease, Error> {
    let now = clock::unix_now();
    let Some(entry) = failure.previous.filter(|e| e.freshness(now) == Freshness::Stale) else {
        return Err(failure.error);
    };
    let left = entry.expires_at - now;
    tracing::warn!(
        "renewing the credential for {} failed ({}); serving the cached one, valid for {left}s more",
        place.label,
        secret::scrub(&failure.error.to_string()),
    );
    Ok(Lease { credential: Credential::of_entry(&entry), keep_for: STALE_KEEP.min(Duration::from_secs(left)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(password: &str, lifetime: u64) -> Credential {
        Credential {
            username: "u".into(),
            password: Secret::new(password.to_string()),
            expires_at: clock::unix_now() + lifetime,
        }
    }

    fn place(key: &CacheKey) -> Place<'_> {
        Place { plugin: "test", key, image: "r.example/a", label: "r.example", needs_service_account_token: false }
    }

    fn refused() -> Error {
        Error::http("test", 503, "unavailable")
    }

    /// Rewrites the entry's times as if it had been issued `age` seconds ago
    /// with a `lifetime`.
    fn age_entry(cache: &Cache, key: &CacheKey, age: u64, lifetime: u64) {
        let mut entry = cache.read("test", key).expect("entry");
        let now = clock::unix_now();
        entry.issued_at = now - age;
        entry.expires_at = entry.issued_at + lifetime;
        entry.refresh_at = CachedCredential::refresh_point(entry.issued_at, entry.expires_at);
        cache.write(&entry).expect("write");
    }

    #[tokio::test]
    async fn fetches_once_then_answers_from_the_cache() {
        let dir = tempfile::tempdir().expect("dir");
        let cache = Cache::open(dir.path()).expect("cache");
        let key = CacheKey::derive("test", &["a"]);
        let first = get(Some(&cache), &place(&key), || async { Ok(credential("first-secret", 600)) }).await;
        let first = first.expect("fetched");
        assert!(first.keep_for <= Duration::from_secs(300) && first.keep_for >= Duration::from_secs(298));
        let second = get(Some(&cache), &place(&key), || async { Err(refused()) }).await.expect("cached");
        assert_eq!(second.credential.password.expose(), "first-secret");
        let entry = cache.read("test", &key).expect("written");
        assert_eq!((entry.image.as_str(), entry.registry.as_str()), ("r.example/a", "r.example"));
    }

    #[tokio::test]
    async fn a_stale_entry_is_renewed_or_served_for_a_short_while() {
        let dir = tempfile::tempdir().expect("dir");
        let cache = Cache::open(dir.path()).expect("cache");
        let key = CacheKey::derive("test", &["a"]);
        get(Some(&cache), &place(&key), || async { Ok(credential("old-secret", 600)) }).await.expect("fetched");
        age_entry(&cache, &key, 400, 600);
        let stale = get(Some(&cache), &place(&key), || async { Err(refused()) }).await.expect("stale served");
        assert_eq!(stale.credential.password.expose(), "old-secret");
        assert_eq!(stale.keep_for, STALE_KEEP);
        let renewed = get(Some(&cache), &place(&key), || async { Ok(credential("new-secret", 600)) }).await;
        assert_eq!(renewed.expect("renewed").credential.password.expose(), "new-secret");
        age_entry(&cache, &key, 700, 600);
        let expired = get(Some(&cache), &place(&key), || async { Err(refused()) }).await;
        assert_eq!(expired.expect_err("expired is never served").status(), Some(503));
    }

    #[tokio::test]
    async fn an_expired_credential_is_used_once_and_not_cached() {
        let dir = tempfile::tempdir().expect("dir");
        let cache = Cache::open(dir.path()).expect("cache");
        let key = CacheKey::derive("test", &["a"]);
        let lease = get(Some(&cache), &place(&key), || async { Ok(credential("late-secret", 0)) }).await;
        assert_eq!(lease.expect("used").keep_for, Duration::ZERO);
        assert!(cache.read("test", &key).is_none());
    }

    #[tokio::test]
    async fn a_renewal_by_another_process_is_read_under_the_lock() {
        let dir = tempfile::tempdir().expect("dir");
        let cache = Cache::open(dir.path()).expect("cache");
        let key = CacheKey::derive("test", &["a"]);
        // This process looked up and found nothing; another then renewed.
        let Lookup::Due(previous) = lookup(Some(&cache), &place(&key)) else { panic!("nothing cached yet") };
        get(Some(&cache), &place(&key), || async { Ok(credential("other-secret", 600)) }).await.expect("other");
        let renewal = renew(&cache, &place(&key), previous, || async { Err(refused()) }).await.expect("renewed");
        assert!(matches!(renewal, Renewal::ByAnother(entry) if entry.password.expose() == "other-secret"));
    }

    #[tokio::test]
    async fn without_a_cache_every_get_fetches() {
        let key = CacheKey::derive("test", &["a"]);
        let lease = get(None, &place(&key), || async { Ok(credential("direct-secret", 100)) }).await.expect("fetched");
        assert!((49..=50).contains(&lease.keep_for.as_secs()), "half its life: {:?}", lease.keep_for);
        assert!(get(None, &place(&key), || async { Err(refused()) }).await.is_err());
    }
}
