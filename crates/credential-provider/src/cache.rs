//! The credential cache on disk, shared by every exec of a plugin.
//!
//! The kubelet starts one process per image, so a node boot runs many at once
//! and each lives for milliseconds: the cache is the only memory they share.
//! One file per credential, written atomically (temp file, fsync, rename) so a
//! reader never sees half an entry and a killed writer leaves the old one
//! intact; read without a lock, so a cache hit costs one `open` and one `read`;
//! renewed under an exclusive per-entry lock, so N processes that all find the
//! entry stale make one call to the cloud between them.
//!
//! An entry that cannot be read, does not parse, or comes from another format
//! version is treated as missing and replaced: the cache is never trusted over
//! the cloud and never a reason to fail a pull.
//!
//! Files are opened without following links and must be regular files: a
//! symbolic link or a FIFO planted in the directory is a corrupt entry (never
//! read through, never waited on, replaced by the next write), and a planted
//! lock file is replaced by one created exclusively, so that nothing in the
//! directory can make a plugin read or create a file elsewhere.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::files;
use crate::platform::{self, PrivateDirError};
use crate::secret::Secret;

/// Bumped whenever the entry layout or the key derivation changes; entries of
/// another version are ignored and replaced. 2: keys name each input
/// (`Plan::cache_key`), never a log label.
pub const FORMAT_VERSION: u32 = 2;

/// Entries are small; anything larger is not ours.
const MAX_ENTRY_BYTES: u64 = 64 * 1024;

/// The cache directory's name, under the system's cache directory for the
/// account the kubelet runs plugins as (`/var/cache`; `%ProgramData%` on
/// Windows) or the user's own.
pub const DIR_NAME: &str = "kubelet-credential-providers";

/// Root's cache directory on Linux, which the node examples mount.
pub const SYSTEM_DIR: &str = "/var/cache/kubelet-credential-providers";

/// Why the cache could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache directory {path}: {reason}; fix it, choose another with --cache-dir, or pass --no-cache")]
    UnsafeDirectory { path: PathBuf, reason: String },
    #[error("cache directory {path}: {source}")]
    Directory { path: PathBuf, source: io::Error },
    #[error("cache entry {path}: {source}")]
    Entry { path: PathBuf, source: io::Error },
}

/// The default cache directory: the system one for the kubelet's account
/// (root, `/var/cache/kubelet-credential-providers`; LocalSystem on Windows,
/// `%ProgramData%\\kubelet-credential-providers`), else the user's own
/// (`$XDG_CACHE_HOME` or `~/.cache`; `%LOCALAPPDATA%` on Windows).
pub fn default_dir() -> PathBuf {
    platform::default_cache_dir(DIR_NAME)
}

/// The name of one entry: a hash of every input that changes the credential.
/// Secrets go into the hash, never into the name in clear.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheKey(String);

impl CacheKey {
    /// Derives a key from the plugin's name and the inputs that select its
    /// credential. Each part is length-prefixed so that no two different lists
    /// hash the same.
    pub fn derive<S: AsRef<str>>(plugin: &str, parts: &[S]) -> CacheKey {
        let mut name = NameDigest::new();
        for part in [plugin, &FORMAT_VERSION.to_string()].into_iter().chain(parts.iter().map(AsRef::as_ref)) {
            name.part(part.as_bytes());
        }
        CacheKey(name.finish())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The SHA-256 of a secret, hex-encoded: how a service-account token enters a
/// cache key. Hashing the whole token (never its unverified claims) means a
/// forged token can only ever map to its own entry.
pub fn secret_digest(secret: &Secret) -> String {
    hex(&Sha256::digest(secret.expose().as_bytes()))
}

/// SHA-256 over length-prefixed parts, so that no two lists of parts hash the
/// same; 128 bits of it, hex-encoded, name an entry's file.
struct NameDigest(Sha256);

impl NameDigest {
    fn new() -> NameDigest {
        NameDigest(Sha256::new())
    }

    fn part(&mut self, bytes: &[u8]) {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
    }

    fn finish(self) -> String {
        hex(&self.0.finalize()[..16])
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    bytes.iter().flat_map(|b| [DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]]).map(char::from).collect()
}

/// One cached credential, as stored in its file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedCredential {
    pub format: u32,
    pub plugin: String,
    pub key: String,
    /// The image of the request that fetched it: `refresh` plans from it again.
    pub image: String,
    /// The auth key it is returned under.
    pub registry: String,
    /// Whether it came from a request's service-account token, which `refresh`
    /// does not have.
    pub needs_service_account_token: bool,
    pub issued_at: u64,
    pub refresh_at: u64,
    pub expires_at: u64,
    pub username: String,
    pub password: Secret,
}

/// Where an entry stands at a given moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Before its refresh point: answer from the cache.
    Fresh,
    /// Past its refresh point but still valid: renew, or serve it if the cloud fails.
    Stale,
    /// Past its expiry: unusable.
    Expired,
}

impl CachedCredential {
    pub fn freshness(&self, now: u64) -> Freshness {
        if now < self.refresh_at {
            Freshness::Fresh
        } else if now < self.expires_at {
            Freshness::Stale
        } else {
            Freshness::Expired
        }
    }

    /// The point from which `refresh` renews an entry: a tenth of its life
    /// before the refresh point at which an exec would, so that while a
    /// refresh runs that often (every 5 minutes against tokens of an hour or
    /// more, say) every kubelet exec is answered from the cache.
    pub fn refresh_ahead_point(&self) -> u64 {
        self.refresh_at.saturating_sub(self.expires_at.saturating_sub(self.issued_at) / 10)
    }

    /// The point at which a credential issued at `issued_at` and expiring at
    /// `expires_at` is renewed: half-way through its life, so that a renewal
    /// that fails leaves the other half to try again (and to serve it stale).
    pub fn refresh_point(issued_at: u64, expires_at: u64) -> u64 {
        issued_at + expires_at.saturating_sub(issued_at) / 2
    }
}

/// An open cache directory.
#[derive(Debug)]
pub struct Cache {
    dir: PathBuf,
}

/// An exclusive lock on one entry, released when dropped (or when the process
/// dies, so a killed plugin never wedges the others).
#[derive(Debug)]
pub struct EntryLock {
    _file: File,
}

impl Cache {
    /// Opens `dir`, creating it private if needed (0700; a protected ACL on
    /// Windows). A directory that another account owns, or that others can
    /// write, is refused: whoever can write it can plant credentials that the
    /// kubelet would hand to a registry.
    pub fn open(dir: &Path) -> Result<Cache, CacheError> {
        let io_error = |source| CacheError::Directory { path: dir.to_path_buf(), source };
        platform::create_private_dir(dir).map_err(io_error)?;
        platform::check_private_dir(dir).map_err(|e| match e {
            PrivateDirError::Unsafe(reason) => CacheError::UnsafeDirectory { path: dir.to_path_buf(), reason },
            PrivateDirError::Io(source) => io_error(source),
        })?;
        Ok(Cache { dir: dir.to_path_buf() })
    }

    fn entry_path(&self, plugin: &str, key: &CacheKey) -> PathBuf {
        self.dir.join(entry_name(plugin, key.as_str()))
    }

    fn lock_path(&self, plugin: &str, key: &CacheKey) -> PathBuf {
        self.dir.join(format!("{plugin}-{}.lock", key.as_str()))
    }

    /// Reads the entry for `key`. Anything short of a valid entry of this
    /// format, plugin and key is `None`: the caller fetches and replaces it.
    pub fn read(&self, plugin: &str, key: &CacheKey) -> Option<CachedCredential> {
        let path = self.entry_path(plugin, key);
        let entry = read_entry(&path)?;
        if entry.plugin != plugin || entry.key != key.as_str() {
            tracing::debug!(path = %path.display(), "cache entry belongs to another key; ignoring it");
            return None;
        }
        Some(entry)
    }

    /// Writes an entry atomically and durably (temp file, fsync, rename, fsync
    /// of the directory), mode 0600: a reader sees the old entry or the new
    /// one, never a mix, whatever happens to this process or the power.
    pub fn write(&self, entry: &CachedCredential) -> Result<(), CacheError> {
        let name = entry_name(&entry.plugin, &entry.key);
        let path = self.dir.join(&name);
        let io_error = |source| CacheError::Entry { path: path.clone(), source };
        let body = serde_json::to_vec(entry).map_err(|e| io_error(io::Error::other(e)))?;
        files::write_atomically(&path, &body, 0o600).map_err(io_error)
    }

    /// Takes the exclusive lock on `key`, waiting at most `wait`. `None` when
    /// another process held it all that time (it may be hung): the caller then
    /// goes ahead without it rather than miss the kubelet's deadline.
    pub fn lock(&self, plugin: &str, key: &CacheKey, wait: Duration) -> Result<Option<EntryLock>, CacheError> {
        let path = self.lock_path(plugin, key);
        let file = open_lock_file(&path).map_err(|source| CacheError::Entry { path: path.clone(), source })?;
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(2);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Some(EntryLock { _file: file })),
                Err(fs::TryLockError::WouldBlock) => {}
                Err(fs::TryLockError::Error(source)) => return Err(CacheError::Entry { path, source }),
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(25));
        }
    }

    /// Removes the entry for `key`, if any: the next reader fetches anew.
    pub fn forget(&self, plugin: &str, key: &CacheKey) {
        let path = self.entry_path(plugin, key);
        // A link is removed too, not followed.
        if fs::symlink_metadata(&path).is_ok() {
            self.remove(&path);
        }
    }

    /// Every entry file of `plugin`, with its content when it parses.
    pub fn entries(&self, plugin: &str) -> Vec<(PathBuf, Option<CachedCredential>)> {
        self.files(&format!("{plugin}-"), ".json")
            .into_iter()
            .map(|path| {
                let entry = read_entry(&path);
                (path, entry)
            })
            .collect()
    }

    /// Every entry file of the directory, registry entries and sessions of
    /// every plugin alike, with its content when it parses.
    pub fn all_entries(&self) -> Vec<(PathBuf, Option<CachedCredential>)> {
        self.files("", ".json")
            .into_iter()
            .filter(|path| path.file_name().and_then(|n| n.to_str()).is_some_and(|n| !n.starts_with('.')))
            .map(|path| {
                let entry = read_entry(&path);
                (path, entry)
            })
            .collect()
    }

    /// Removes the temp files of writers that died between creating and
    /// renaming them (a kill, a power cut), once they are `older_than`.
    pub fn remove_abandoned_temp_files(&self, plugin: &str, older_than: Duration) {
        // Entries' (`.PLUGIN-…`) and sessions' (`.PLUGIN.…`).
        let temps = [self.files(&format!(".{plugin}-"), ".tmp"), self.files(&format!(".{plugin}."), ".tmp")];
        for path in temps.into_iter().flatten() {
            let abandoned = fs::metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|modified| modified.elapsed().is_ok_and(|age| age >= older_than));
            if abandoned {
                self.remove(&path);
            }
        }
    }

    /// The files of the cache directory named `<prefix>…<suffix>`, sorted.
    fn files(&self, prefix: &str, suffix: &str) -> Vec<PathBuf> {
        let Ok(dir) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = dir
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
            })
            .collect();
        paths.sort();
        paths
    }

    /// Removes an entry file and its lock file: for an entry that nothing
    /// will renew any more (a service-account entry long expired).
    pub fn remove_with_lock(&self, path: &Path) {
        self.remove(path);
        if let Some(name) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".json")) {
            self.remove(&self.dir.join(format!("{name}.lock")));
        }
    }

    /// Removes an entry file; a file already gone is not an error.
    pub fn remove(&self, path: &Path) {
        if let Err(e) = fs::remove_file(path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), "could not remove cache entry: {e}");
        }
    }
}

/// Opens the lock file at `path`: the regular file that is there, else one
/// created exclusively (mode 0600). Anything else found there (a link, a
/// FIFO, a directory) is removed first, never followed or waited on.
fn open_lock_file(path: &Path) -> io::Result<File> {
    for _ in 0..3 {
        match open_regular(path, OpenOptions::new().read(true).write(true)) {
            Ok(file) => return Ok(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                tracing::warn!(path = %path.display(), "lock file is not a regular file; replacing it");
                match fs::symlink_metadata(path) {
                    Ok(meta) if meta.is_dir() => fs::remove_dir(path)?,
                    _ => fs::remove_file(path)?,
                }
            }
            Err(e) => return Err(e),
        }
        match platform::with_mode(OpenOptions::new().read(true).write(true).create_new(true), 0o600).open(path) {
            Ok(file) => return Ok(file),
            // Another process created it meanwhile: open that one.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("the lock file keeps changing under this process"))
}

/// Opens `path` with `options`, never following a symbolic link in its last
/// component nor blocking on a FIFO. Anything that is not a regular file, a
/// link included, is `InvalidData`.
fn open_regular(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    let file = platform::open_no_follow(path, options)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "not a regular file"));
    }
    Ok(file)
}

/// The plugin an entry's `plugin` field belongs to: itself for a registry
/// credential (`ocir`), the part before the dot for a session
/// (`ocir.federation`).
pub fn owner_plugin(entry_plugin: &str) -> &str {
    entry_plugin.split('.').next().unwrap_or(entry_plugin)
}

/// The file name of the entry `key` of `plugin`.
fn entry_name(plugin: &str, key: &str) -> String {
    format!("{plugin}-{key}.json")
}

fn read_entry(path: &Path) -> Option<CachedCredential> {
    let body = match read_limited(path) {
        Ok(Some(body)) => body,
        Ok(None) => {
            tracing::warn!(path = %path.display(), "cache entry is too large, replacing it");
            return None;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            tracing::warn!(path = %path.display(), "cache entry is not a regular file, replacing it");
            return None;
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot read cache entry, fetching anew: {e}");
            return None;
        }
    };
    let entry = parse_entry(&body);
    if entry.is_none() {
        tracing::warn!(path = %path.display(), "cache entry is corrupt or of another format, replacing it");
    }
    entry
}

/// A cache file's bytes; `None` when it is larger than any file of ours.
fn read_limited(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let file = open_regular(path, OpenOptions::new().read(true))?;
    // Sized from the file, so that a cache hit reads it in one call.
    let size = file.metadata().map_or(0, |m| m.len()).min(MAX_ENTRY_BYTES);
    let mut body = Vec::with_capacity(size as usize + 1);
    file.take(MAX_ENTRY_BYTES + 1).read_to_end(&mut body)?;
    Ok((body.len() as u64 <= MAX_ENTRY_BYTES).then_some(body))
}

/// An entry from a file's bytes, if they are one of this format: anything else
/// (truncated, corrupt, foreign, another version) is `None`, and never a panic.
pub fn parse_entry(body: &[u8]) -> Option<CachedCredential> {
    // The parse error is dropped: it may quote the file, which holds a password.
    serde_json::from_slice::<CachedCredential>(body).ok().filter(|entry| entry.format == FORMAT_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::unix_now;
    #[cfg(unix)]
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn entry(key: &CacheKey, now: u64) -> CachedCredential {
        CachedCredential {
            format: FORMAT_VERSION,
            plugin: "test".into(),
            key: key.as_str().into(),
            image: "r.example/a".into(),
            registry: "r.example".into(),
            needs_service_account_token: false,
            issued_at: now,
            refresh_at: now + 50,
            expires_at: now + 100,
            username: "u".into(),
            password: Secret::new("test-password-123".into()),
        }
    }

    #[test]
    fn keys_separate_every_input() {
        let a = CacheKey::derive("ecr", &["ab", "c"]);
        assert_ne!(a, CacheKey::derive("ecr", &["a", "bc"]));
        assert_ne!(a, CacheKey::derive("gcr", &["ab", "c"]));
        assert_eq!(a, CacheKey::derive("ecr", &["ab", "c"]));
        assert_eq!(a.as_str().len(), 32);
    }

    #[test]
    #[cfg(unix)]
    fn round_trip_with_private_modes() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().join("cache");
        let cache = Cache::open(&dir).expect("open");
        let key = CacheKey::derive("test", &["x"]);
        assert!(cache.read("test", &key).is_none());
        let now = unix_now();
        cache.write(&entry(&key, now)).expect("write");
        let read = cache.read("test", &key).expect("read");
        assert_eq!(read.password.expose(), "test-password-123");
        assert_eq!(read.freshness(now), Freshness::Fresh);
        assert_eq!(read.freshness(now + 50), Freshness::Stale);
        assert_eq!(read.freshness(now + 100), Freshness::Expired);
        let dir_mode = fs::metadata(&dir).expect("meta").mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        for (path, _) in cache.entries("test") {
            assert_eq!(fs::metadata(&path).expect("meta").mode() & 0o777, 0o600);
        }
        // No temp file is left behind.
        let names: Vec<_> = fs::read_dir(&dir).expect("list").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn corrupt_foreign_and_truncated_entries_are_missing() {
        let temp = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(temp.path()).expect("open");
        let key = CacheKey::derive("test", &["x"]);
        let path = cache.entry_path("test", &key);
        let good = serde_json::to_string(&entry(&key, unix_now())).expect("json");
        for body in [
            String::new(),
            "{".to_string(),
            good[..good.len() / 2].to_string(),
            good.replace(&format!("\"format\":{FORMAT_VERSION}"), "\"format\":999"),
            good.replace(key.as_str(), "0000"),
            "x".repeat(100_000),
        ] {
            fs::write(&path, body).expect("write");
            assert!(cache.read("test", &key).is_none());
        }
        fs::write(&path, good).expect("write");
        assert!(cache.read("test", &key).is_some());
    }

    #[test]
    #[cfg(unix)]
    fn refuses_world_writable_directories_and_tightens_readable_ones() {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().join("open");
        fs::create_dir(&dir).expect("mkdir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("chmod");
        let err = Cache::open(&dir).expect_err("world-writable");
        assert!(err.to_string().contains("writable by others"), "{err}");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        Cache::open(&dir).expect("readable is tightened");
        assert_eq!(fs::metadata(&dir).expect("meta").mode() & 0o777, 0o700);
    }

    #[test]
    fn lock_is_exclusive_and_times_out() {
        let temp = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(temp.path()).expect("open");
        let key = CacheKey::derive("test", &["x"]);
        let held = cache.lock("test", &key, Duration::ZERO).expect("lock");
        assert!(held.is_some());
        let second = cache.lock("test", &key, Duration::from_millis(30)).expect("lock");
        assert!(second.is_none(), "a second lock must wait");
        drop(held);
        assert!(cache.lock("test", &key, Duration::ZERO).expect("lock").is_some());
    }

    #[test]
    fn abandoned_temp_files_are_ignored_then_removed() {
        let temp = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(temp.path()).expect("open");
        let key = CacheKey::derive("test", &["x"]);
        let abandoned = temp.path().join(format!(".test-{}.999.0.tmp", key.as_str()));
        fs::write(&abandoned, "{\"format\":1,\"plugin\":\"te").expect("partial write");
        let abandoned_session = temp.path().join(".test.federation-ab.json.999.1.tmp");
        fs::write(&abandoned_session, "{").expect("partial write");
        assert!(cache.read("test", &key).is_none());
        assert!(cache.entries("test").is_empty(), "temp files are not entries");
        cache.write(&entry(&key, unix_now())).expect("write");
        assert!(cache.read("test", &key).is_some());
        cache.remove_abandoned_temp_files("test", Duration::from_secs(3600));
        assert!(abandoned.exists(), "a recent temp file may belong to a live writer");
        cache.remove_abandoned_temp_files("test", Duration::ZERO);
        assert!(!abandoned.exists());
        assert!(!abandoned_session.exists(), "sessions' temp files are cleaned up too");
        assert!(cache.read("test", &key).is_some());
    }

    #[test]
    fn refresh_point_is_a_fraction_of_the_lifetime() {
        assert_eq!(CachedCredential::refresh_point(1000, 2000), 1500);
        let entry = CachedCredential {
            issued_at: 1000,
            refresh_at: 1500,
            expires_at: 2000,
            ..entry(&CacheKey::derive("t", &["x"]), 0)
        };
        assert_eq!(entry.refresh_ahead_point(), 1400);
        assert_eq!(CachedCredential::refresh_point(1000, 900), 1000);
    }
}
