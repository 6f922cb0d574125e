//! Memos: what one kubelet exec learned, so that the next identical exec
//! answers from the cache without parsing its command line, building its
//! plugin or starting its logger.
//!
//! A cache hit is little work, but a plugin binary is large: parsing flags
//! (clap builds the whole command), building the plugin and starting the
//! logger touch code all over it, and those page faults cost more than the
//! work itself (see the README's performance section). The kubelet runs a
//! plugin with the same command line and environment for every image, so the
//! runner keeps two kinds of memo in the cache directory:
//!
//! - an *invocation memo*, named by a digest of the command line, the whole
//!   environment (in its order) and the executable file: the plugin's response overrides and
//!   the stamps (device, inode, size, times) of the files its plan reads;
//! - a *request memo* per request, named by a digest of the invocation and of
//!   the request's bytes: the cache entry that answered it, and when that
//!   entry was issued.
//!
//! An exec whose invocation memo exists, whose files are unchanged, and whose
//! request memo names an entry that is still fresh and was issued at that same
//! time answers from that entry. Anything else (another flag or variable, an
//! edited config file, a renewed entry, a memo that does not parse) takes the
//! full path, which writes the memos again. So a memo never outlives the
//! credential generation it was written for, and never decides anything the
//! full path would decide differently.
//!
//! Only the kubelet's path writes memos: a request on stdin, the cache on, no
//! `-v` (whose logs the fast path would skip), and a plugin that does not
//! verify every answer. A command line with a memo is therefore known to carry
//! a request on stdin, and the fast path reads stdin for no other (`check`,
//! `--help`, a mistyped flag). Memos hold no secret: digests, file stamps and
//! entry names only.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cache::{Cache, CacheKey, CachedCredential, Durability, FORMAT_VERSION, NameDigest};
use crate::protocol::CacheKeyType;
use crate::provider::ResponseOverrides;

/// Memos not rewritten for this long belong to no live invocation: an active
/// one is rewritten at least once per credential generation.
const UNUSED_INVOCATION_AGE: Duration = Duration::from_secs(24 * 3600);

/// One process's invocation: its command line, environment and executable.
#[derive(Clone, Debug)]
pub(crate) struct Invocation {
    plugin: &'static str,
    digest: String,
}

impl Invocation {
    /// This process's invocation, or `None` when the executable cannot be
    /// stamped (then no memo is read or written).
    pub(crate) fn current(plugin: &'static str, args: &[OsString]) -> Option<Invocation> {
        // The kernel's link to the running executable: one `statx`, and the
        // file itself even if it was replaced since (an upgrade mid-run).
        let executable = stamp(Path::new("/proc/self/exe"))?;
        let mut digest = NameDigest::new();
        digest.part(plugin.as_bytes());
        digest.part(FORMAT_VERSION.to_string().as_bytes());
        digest.part(env!("CARGO_PKG_VERSION").as_bytes());
        digest.part(executable.as_bytes());
        digest.part(&(args.len() as u64).to_le_bytes());
        for arg in args {
            digest.part(arg.as_bytes());
        }
        // In the order the kubelet passes them, which is the same for every
        // exec of one kubelet (and a new order only costs one full path).
        for (name, value) in std::env::vars_os() {
            digest.part(name.as_bytes());
            digest.part(value.as_bytes());
        }
        Some(Invocation { plugin, digest: digest.finish() })
    }

    fn invocation_file(&self) -> String {
        format!("{}.memo-invocation-{}.json", self.plugin, self.digest)
    }

    fn request_file(&self, request: &[u8]) -> String {
        let mut digest = NameDigest::new();
        digest.part(self.digest.as_bytes());
        digest.part(request);
        format!("{}.memo-request-{}.json", self.plugin, digest.finish())
    }
}

/// What the invocation memo says about every request of its invocation.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InvocationMemo {
    format: u32,
    plugin: String,
    cache_key_type: Option<CacheKeyType>,
    cache_duration_secs: Option<u64>,
    files: Vec<FileStamp>,
}

/// A file the plan read, as it was: `stamp` is `None` when it did not exist.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStamp {
    path: PathBuf,
    stamp: Option<String>,
}

/// Which entry answered one request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RequestMemo {
    format: u32,
    plugin: String,
    entry: String,
    issued_at: u64,
}

/// The memos' verdict on an invocation: its response overrides, if its memo
/// exists and every file its plan read is unchanged.
pub(crate) fn recall_invocation(cache: &Cache, invocation: &Invocation) -> Option<ResponseOverrides> {
    let body = cache.read_file(&invocation.invocation_file())?;
    let memo: InvocationMemo = serde_json::from_slice(&body).ok()?;
    if memo.format != FORMAT_VERSION || memo.plugin != invocation.plugin {
        return None;
    }
    let unchanged = memo.files.iter().all(|file| stamp(&file.path) == file.stamp);
    unchanged.then(|| ResponseOverrides {
        cache_key_type: memo.cache_key_type,
        cache_duration: memo.cache_duration_secs.map(Duration::from_secs),
    })
}

/// The entry that answered `request` in this invocation, if it is still the
/// same generation (not renewed since). Freshness is the caller's to judge.
pub(crate) fn recall_request(cache: &Cache, invocation: &Invocation, request: &[u8]) -> Option<CachedCredential> {
    let body = cache.read_file(&invocation.request_file(request))?;
    let memo: RequestMemo = serde_json::from_slice(&body).ok()?;
    if memo.format != FORMAT_VERSION || memo.plugin != invocation.plugin {
        return None;
    }
    let entry = cache.read(invocation.plugin, &CacheKey::from_name(memo.entry)?)?;
    (entry.issued_at == memo.issued_at).then_some(entry)
}

/// Writes both memos after the full path answered `request` from `entry`.
/// `files` are those the plan read. A failure only costs the next exec time.
pub(crate) fn remember(
    cache: &Cache,
    invocation: &Invocation,
    overrides: ResponseOverrides,
    files: &[PathBuf],
    request: &[u8],
    entry: &CachedCredential,
) {
    let files: Vec<FileStamp> = files.iter().map(|path| FileStamp { path: path.clone(), stamp: stamp(path) }).collect();
    let invocation_memo = InvocationMemo {
        format: FORMAT_VERSION,
        plugin: invocation.plugin.to_string(),
        cache_key_type: overrides.cache_key_type,
        cache_duration_secs: overrides.cache_duration.map(|d| d.as_secs()),
        files,
    };
    let request_memo = RequestMemo {
        format: FORMAT_VERSION,
        plugin: invocation.plugin.to_string(),
        entry: entry.key.clone(),
        issued_at: entry.issued_at,
    };
    let written = [
        (invocation.invocation_file(), serde_json::to_vec(&invocation_memo)),
        (invocation.request_file(request), serde_json::to_vec(&request_memo)),
    ]
    .into_iter()
    .try_for_each(|(name, body)| {
        let body = body.map_err(std::io::Error::other)?;
        cache.write_file(&name, &body, Durability::Atomic)
    });
    if let Err(e) = written {
        tracing::debug!("cannot write the memos ({e}); the next exec takes the full path");
    }
}

/// Removes request memos whose entry is gone or renewed, invocation memos no
/// exec has rewritten for a day, and anything that does not parse.
pub(crate) fn prune(cache: &Cache, plugin: &str) {
    // Many requests share one entry: read each entry once.
    let mut issued: HashMap<String, Option<u64>> = HashMap::new();
    for path in cache.files(&format!("{plugin}.memo-request-"), ".json") {
        let memo = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| cache.read_file(name))
            .and_then(|body| serde_json::from_slice::<RequestMemo>(&body).ok());
        let current = memo.is_some_and(|memo| {
            let issued_at = issued.entry(memo.entry.clone()).or_insert_with(|| {
                CacheKey::from_name(memo.entry).and_then(|key| cache.read(plugin, &key)).map(|entry| entry.issued_at)
            });
            *issued_at == Some(memo.issued_at)
        });
        if !current {
            cache.remove(&path);
        }
    }
    for path in cache.files(&format!("{plugin}.memo-invocation-"), ".json") {
        let unused = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|modified| modified.elapsed().is_ok_and(|age| age >= UNUSED_INVOCATION_AGE));
        if unused {
            cache.remove(&path);
        }
    }
}

/// A file's identity and version: device, inode, size, and modification and
/// change times to the nanosecond. `None` when it does not exist (or cannot be
/// examined, which a later exec will see the same way).
fn stamp(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    Some(format!(
        "{}:{}:{}:{}.{}:{}.{}",
        meta.dev(),
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::unix_now;
    use crate::secret::Secret;

    fn invocation(args: &[&str]) -> Invocation {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        Invocation::current("test", &args).expect("the test binary can be stamped")
    }

    fn stored_entry(cache: &Cache, issued_at: u64) -> CachedCredential {
        let key = CacheKey::derive("test", &["r.example"]);
        let entry = CachedCredential {
            format: FORMAT_VERSION,
            plugin: "test".into(),
            key: key.as_str().to_string(),
            image: "r.example/a".into(),
            registry: "r.example".into(),
            needs_service_account_token: false,
            issued_at,
            refresh_at: issued_at + 600,
            expires_at: issued_at + 1200,
            username: "u".into(),
            password: Secret::new("memo-test-password".into()),
        };
        cache.write(&entry).expect("write entry");
        entry
    }

    #[test]
    fn recalls_what_was_remembered_for_the_same_invocation_and_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(dir.path()).expect("open");
        let entry = stored_entry(&cache, unix_now());
        let config = dir.path().join("config.json");
        std::fs::write(&config, "{}").expect("config");
        let overrides = ResponseOverrides { cache_key_type: Some(CacheKeyType::Image), cache_duration: None };
        let kubelet = invocation(&["plugin", "--flag=1"]);
        remember(&cache, &kubelet, overrides, std::slice::from_ref(&config), b"request-1", &entry);

        assert_eq!(recall_invocation(&cache, &kubelet), Some(overrides));
        let recalled = recall_request(&cache, &kubelet, b"request-1").expect("recalled");
        assert_eq!(recalled.key, entry.key);
        assert!(recall_request(&cache, &kubelet, b"request-2").is_none(), "another request");
        let other = invocation(&["plugin", "--flag=2"]);
        assert!(recall_invocation(&cache, &other).is_none(), "another command line");
        assert!(recall_request(&cache, &other, b"request-1").is_none());

        // The memo holds no secret.
        for file in std::fs::read_dir(dir.path()).expect("dir").flatten() {
            let name = file.file_name().to_string_lossy().to_string();
            if name.contains(".memo-") {
                let body = std::fs::read_to_string(file.path()).expect("memo");
                assert!(!body.contains("memo-test-password"), "{name}: {body}");
            }
        }
    }

    #[test]
    fn a_changed_or_created_file_or_a_renewed_entry_forgets() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(dir.path()).expect("open");
        let entry = stored_entry(&cache, unix_now());
        let config = dir.path().join("azure.json");
        let absent = dir.path().join("not-yet.json");
        std::fs::write(&config, "{\"a\":1}").expect("config");
        let kubelet = invocation(&["plugin"]);
        let files = [config.clone(), absent.clone()];
        remember(&cache, &kubelet, ResponseOverrides::default(), &files, b"r", &entry);
        assert!(recall_invocation(&cache, &kubelet).is_some());

        // Another size: within one clock tick, times alone may not move.
        std::fs::write(&config, "{\"a\":22}").expect("edit");
        assert!(recall_invocation(&cache, &kubelet).is_none(), "an edited file");
        remember(&cache, &kubelet, ResponseOverrides::default(), &files, b"r", &entry);
        assert!(recall_invocation(&cache, &kubelet).is_some());
        std::fs::write(&absent, "{}").expect("create");
        assert!(recall_invocation(&cache, &kubelet).is_none(), "a file that appeared");

        assert!(recall_request(&cache, &kubelet, b"r").is_some());
        stored_entry(&cache, entry.issued_at + 1);
        assert!(recall_request(&cache, &kubelet, b"r").is_none(), "a renewed entry");
    }

    #[test]
    fn prune_removes_stale_and_corrupt_memos_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(dir.path()).expect("open");
        let entry = stored_entry(&cache, unix_now());
        let kubelet = invocation(&["plugin"]);
        remember(&cache, &kubelet, ResponseOverrides::default(), &[], b"live", &entry);
        let renewed = CachedCredential { issued_at: entry.issued_at - 60, ..entry.clone() };
        remember(&cache, &kubelet, ResponseOverrides::default(), &[], b"old", &renewed);
        std::fs::write(dir.path().join("test.memo-request-corrupt.json"), "{").expect("corrupt");

        prune(&cache, "test");
        assert!(recall_request(&cache, &kubelet, b"live").is_some());
        assert!(!dir.path().join(kubelet.request_file(b"old")).exists());
        assert!(!dir.path().join("test.memo-request-corrupt.json").exists());
        assert!(recall_invocation(&cache, &kubelet).is_some(), "a recent invocation memo stays");
        assert!(cache.read("test", &CacheKey::derive("test", &["r.example"])).is_some(), "entries are not memos");
    }
}
