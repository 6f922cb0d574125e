//! Intermediate credentials a plugin needs on its way to a registry's (OCI's
//! federation token and its session key), cached like registry credentials:
//! one private file each, shared by every exec, and fetched by one process at
//! a time, so that a node boot does not stampede a throttled metadata service.
//!
//! A session is one opaque secret and its expiry; the plugin decides what the
//! secret holds. Session files are named `<plugin>.<name>-<key>.json`, apart
//! from the registry entries `refresh` renews.

use std::future::Future;

use crate::cache::{self, Cache, CacheKey, CachedCredential, FORMAT_VERSION, Freshness};
use crate::error::Error;
use crate::runner::LOCK_WAIT;
use crate::secret::Secret;

/// A cached intermediate credential.
#[derive(Clone, Debug)]
pub struct Session {
    pub secret: Secret,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
}

/// The session cache of one exec: the runner's cache directory, or none with
/// `--no-cache` (every session is then fetched).
#[derive(Debug)]
pub struct Sessions<'a> {
    cache: Option<&'a Cache>,
    plugin: &'static str,
}

impl<'a> Sessions<'a> {
    pub fn new(cache: Option<&'a Cache>, plugin: &'static str) -> Sessions<'a> {
        Sessions { cache, plugin }
    }

    /// Sessions that are never cached, for tests and `--no-cache`.
    pub fn uncached(plugin: &'static str) -> Sessions<'static> {
        Sessions { cache: None, plugin }
    }

    fn locate(&self, name: &str, parts: &[String]) -> (String, CacheKey) {
        let store = format!("{}.{name}", self.plugin);
        let key = CacheKey::derive(&store, parts);
        (store, key)
    }

    /// The session `name` for `parts`: the cached one while it is fresh (before
    /// half its life), else the one `fetch` makes, under the entry's lock so
    /// that of many processes only one fetches.
    pub async fn get_or_fetch<F, Fut>(&self, name: &str, parts: &[String], fetch: F) -> Result<Session, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Session, Error>>,
    {
        let Some(cache) = self.cache else {
            return fetch().await;
        };
        let (store, key) = self.locate(name, parts);
        let fresh = |entry: &CachedCredential| entry.freshness(cache::unix_now()) == Freshness::Fresh;
        if let Some(entry) = cache.read(&store, &key).filter(fresh) {
            tracing::debug!(session = name, "session from the cache");
            return Ok(Session { secret: entry.password, expires_at: entry.expires_at });
        }
        let _lock = cache.lock(&store, &key, LOCK_WAIT).unwrap_or_else(|e| {
            tracing::warn!("cannot lock the {name} session ({e}); fetching without the lock");
            None
        });
        if let Some(entry) = cache.read(&store, &key).filter(fresh) {
            return Ok(Session { secret: entry.password, expires_at: entry.expires_at });
        }
        let session = fetch().await?;
        let now = cache::unix_now();
        if session.expires_at > now {
            let entry = CachedCredential {
                format: FORMAT_VERSION,
                plugin: store,
                key: key.as_str().to_string(),
                image: String::new(),
                registry: name.to_string(),
                needs_service_account_token: false,
                issued_at: now,
                refresh_at: CachedCredential::refresh_point(now, session.expires_at, 0.5),
                expires_at: session.expires_at,
                username: String::new(),
                password: session.secret.clone(),
            };
            if let Err(e) = cache.write(&entry) {
                tracing::warn!("cannot cache the {name} session ({e})");
            }
        }
        Ok(session)
    }

    /// Forgets the session `name` for `parts`, so that the next exec fetches
    /// one: after the cloud refused what it allowed.
    pub fn invalidate(&self, name: &str, parts: &[String]) {
        if let Some(cache) = self.cache {
            let (store, key) = self.locate(name, parts);
            cache.remove_entry(&store, &key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(secret: &str, lifetime: u64) -> Session {
        Session { secret: Secret::new(secret.to_string()), expires_at: cache::unix_now() + lifetime }
    }

    #[tokio::test]
    async fn fetches_once_then_serves_then_forgets() {
        let dir = tempfile::tempdir().expect("dir");
        let cache = Cache::open(&dir.path().join("c")).expect("cache");
        let sessions = Sessions::new(Some(&cache), "test");
        let parts = vec!["a".to_string()];
        let first =
            sessions.get_or_fetch("fed", &parts, || async { Ok(session("one-secret", 600)) }).await.expect("first");
        let second = sessions
            .get_or_fetch("fed", &parts, || async { Err(Error::Config("must not fetch".into())) })
            .await
            .expect("cached");
        assert_eq!(first.secret.expose(), second.secret.expose());
        assert!(cache.entries("test").is_empty(), "sessions are not registry entries");
        sessions.invalidate("fed", &parts);
        let third =
            sessions.get_or_fetch("fed", &parts, || async { Ok(session("two-secret", 600)) }).await.expect("third");
        assert_eq!(third.secret.expose(), "two-secret");
        // An expired session is handed over but never cached.
        let other = vec!["b".to_string()];
        sessions.get_or_fetch("fed", &other, || async { Ok(session("old-secret", 0)) }).await.expect("expired");
        let fresh =
            sessions.get_or_fetch("fed", &other, || async { Ok(session("new-secret", 600)) }).await.expect("new");
        assert_eq!(fresh.secret.expose(), "new-secret");
    }
}
