//! Time as the cache and the clouds count it, and spreading events in time.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch: the unit of every cache entry and of the
/// clouds' expiry times.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A number in [0, 1) that differs between processes and calls: enough to
/// spread retries and refresh loops apart, not for anything secret.
pub fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    (random >> 11) as f64 / (1u64 << 53) as f64
}
