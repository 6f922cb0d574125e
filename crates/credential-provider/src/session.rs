//! Intermediate credentials a plugin needs on its way to a registry's (OCI's
//! federation token and its session key), cached like registry credentials
//! and got through the same [`flow`](crate::flow): one private file each,
//! shared by every exec, fetched by one process at a time (so that a node
//! boot does not stampede a throttled metadata service), and served stale
//! for a while if the cloud fails.
//!
//! A session is one opaque secret and its expiry; the plugin decides what the
//! secret holds. Session files are named `<plugin>.<name>-<key>.json`, apart
//! from the registry entries `refresh` renews.

use std::future::Future;

use crate::cache::{Cache, CacheKey};
use crate::error::Error;
use crate::flow::{self, Credential, Place};
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

    fn locate(&self, name: &str, parts: &[String]) -> (String, CacheKey) {
        let owner = format!("{}.{name}", self.plugin);
        let key = CacheKey::derive(&owner, parts);
        (owner, key)
    }

    /// The session `name` for `parts`: the cached one while it is fresh (before
    /// half its life), else the one `fetch` makes.
    pub async fn get<F, Fut>(&self, name: &str, parts: &[String], fetch: F) -> Result<Session, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Session, Error>>,
    {
        let (owner, key) = self.locate(name, parts);
        let place = Place { plugin: &owner, key: &key, image: "", label: name, needs_service_account_token: false };
        let lease = flow::get(self.cache, &place, || async {
            let session = fetch().await?;
            Ok(Credential { username: String::new(), password: session.secret, expires_at: session.expires_at })
        })
        .await?;
        Ok(Session { secret: lease.credential.password, expires_at: lease.credential.expires_at })
    }

    /// Forgets the session `name` for `parts`, so that the next exec fetches
    /// one: after the cloud refused what it allowed.
    pub fn forget(&self, name: &str, parts: &[String]) {
        if let Some(cache) = self.cache {
            let (owner, key) = self.locate(name, parts);
            cache.forget(&owner, &key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock;

    fn session(secret: &str, lifetime: u64) -> Session {
        Session { secret: Secret::new(secret.to_string()), expires_at: clock::unix_now() + lifetime }
    }

    #[tokio::test]
    async fn fetches_once_then_serves_then_forgets() {
        let dir = tempfile::tempdir().expect("dir");
        let cache = Cache::open(&dir.path().join("c")).expect("cache");
        let sessions = Sessions::new(Some(&cache), "test");
        let parts = vec!["a".to_string()];
        let first = sessions.get("fed", &parts, || async { Ok(session("one-secret", 600)) }).await.expect("first");
        let second = sessions
            .get("fed", &parts, || async { Err(Error::Config("must not fetch".into())) })
            .await
            .expect("cached");
        assert_eq!(first.secret.expose(), second.secret.expose());
        assert!(cache.entries("test").is_empty(), "sessions are not registry entries");
        sessions.forget("fed", &parts);
        let third = sessions.get("fed", &parts, || async { Ok(session("two-secret", 600)) }).await.expect("third");
        assert_eq!(third.secret.expose(), "two-secret");
        // An expired session is handed over but never cached.
        let other = vec!["b".to_string()];
        sessions.get("fed", &other, || async { Ok(session("old-secret", 0)) }).await.expect("expired");
        let fresh = sessions.get("fed", &other, || async { Ok(session("new-secret", 600)) }).await.expect("new");
        assert_eq!(fresh.secret.expose(), "new-secret");
    }
}
