//! Checks every plugin must pass against hostile input and a hostile node:
//! bad requests, shared cache directories, corrupt cache files, and processes
//! killed at random while others run. A plugin joins with one call to
//! [`check_all`] in its tests.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use credential_provider::protocol::ApiVersion;

use crate::conformance::{
    Exec, PluginUnderTest, expect_accepted, expect_no_secrets, expect_rejected, request_json, testing_windows_binaries,
};

/// A plugin, its fake cloud, and what the checks need to know of them.
pub struct Subject<'a> {
    pub plugin: &'a PluginUnderTest,
    /// An image the plugin serves, and one on another registry it serves.
    pub image: &'a str,
    pub other_image: &'a str,
    /// Hosts that look like the plugin's but are not.
    pub lookalikes: &'a [&'a str],
    /// Every secret the fake cloud handed out so far.
    pub secrets: &'a dyn Fn() -> Vec<String>,
    /// How many credentials the fake cloud issued so far.
    pub token_calls: &'a dyn Fn() -> usize,
    /// Makes the fake cloud answer token calls this late (`None`: at once).
    pub set_delay: &'a dyn Fn(Option<Duration>),
}

impl std::fmt::Debug for Subject<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subject").field("image", &self.image).finish_non_exhaustive()
    }
}

/// Runs every check, each on a fresh cache. Windows executables under wine
/// skip the planted links and FIFOs: wine shows a Unix symbolic link as the
/// file it leads to and has no FIFOs, while on Windows a link is a reparse
/// point, opened as itself and refused as not a regular file, which only a
/// Windows host can show.
pub fn check_all(subject: &Subject) {
    bad_requests_are_refused(subject);
    cache_files_are_private_and_shared_directories_refused(subject);
    corrupt_entries_are_replaced(subject);
    if !testing_windows_binaries() {
        planted_links_and_fifos_are_never_followed(subject);
    }
    killed_processes_leave_a_usable_cache(subject);
    repeats_are_cache_hits(subject);
    refresh_says_what_it_did_not_do(subject);
}

fn host(image: &str) -> &str {
    image.split('/').next().unwrap_or_default()
}

fn clear_cache(plugin: &PluginUnderTest) {
    let _ = std::fs::remove_dir_all(plugin.cache_dir());
}

/// Every kind of bad request: one line on stderr, exit 1, nothing on stdout,
/// no call to the cloud, and nothing cached.
pub fn bad_requests_are_refused(subject: &Subject) {
    let plugin = subject.plugin;
    clear_cache(plugin);
    let before = (subject.token_calls)();
    let v1 = |image: &str| request_json(ApiVersion::V1, image, None, false).into_bytes();
    let good = String::from_utf8(v1(subject.image)).unwrap_or_default();
    let registry = host(subject.image);
    let big = good.replacen('{', &format!("{{\"pad\":\"{}\",", "x".repeat(2 * 1024 * 1024)), 1);
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("empty stdin".into(), Vec::new()),
        ("10 MiB of stdin".into(), vec![b'{'; 10 * 1024 * 1024]),
        ("valid JSON over the size limit".into(), big.into_bytes()),
        ("invalid UTF-8".into(), vec![0xff, 0xfe, b'{']),
        ("not JSON".into(), b"image=nginx".to_vec()),
        ("JSON but not an object".into(), b"[1, 2, 3]".to_vec()),
        ("wrong kind".into(), good.replace("CredentialProviderRequest", "Pod").into_bytes()),
        ("unknown apiVersion".into(), good.replace("k8s.io/v1\"", "k8s.io/v2\"").into_bytes()),
        (
            "missing image".into(),
            br#"{"kind":"CredentialProviderRequest","apiVersion":"credentialprovider.kubelet.k8s.io/v1"}"#.to_vec(),
        ),
        ("empty image".into(), v1("")),
        ("control character".into(), v1(&format!("{registry}/a\u{1b}b"))),
        ("newline".into(), v1(&format!("{registry}/a\nb"))),
        ("space".into(), v1(&format!("{registry}/a b"))),
        ("dot-dot".into(), v1(&format!("{registry}/../x"))),
        ("a port".into(), v1(&format!("{registry}:444/x"))),
        ("its host in a foreign path".into(), v1(&format!("evil.io/{registry}/x"))),
        ("its host with a suffix".into(), v1(&format!("{registry}.evil.io/x"))),
        ("userinfo".into(), v1(&format!("{registry}@evil/x"))),
        ("Docker Hub".into(), v1("nginx")),
    ];
    for lookalike in subject.lookalikes {
        cases.push((format!("lookalike {lookalike}"), v1(lookalike)));
    }
    for (name, body) in cases {
        let exec = plugin.exec(&[], &body);
        expect_rejected(&exec, &(subject.secrets)());
        assert_eq!(exec.code, Some(1), "{name}: request errors exit 1: {}", exec.stderr);
    }
    assert_eq!((subject.token_calls)(), before, "no bad request reached the cloud");
    let cached = std::fs::read_dir(plugin.cache_dir()).map(|d| d.count()).unwrap_or(0);
    assert_eq!(cached, 0, "no bad request left anything in the cache");
}

/// Entries are 0600 in a 0700 directory, named without secrets; a directory
/// writable by others, or owned by another user, is refused before any call.
/// A Windows executable under wine sees a mode as wine turns it into an ACL
/// (a world-writable directory grants Everyone, S-1-1-0, write): it must
/// refuse that, and its entries' names must hold no secret; the ACL it sets
/// is wine's to keep, which it keeps as a mode of its own choosing.
pub fn cache_files_are_private_and_shared_directories_refused(subject: &Subject) {
    let plugin = subject.plugin;
    let windows = testing_windows_binaries();
    clear_cache(plugin);
    let request = request_json(ApiVersion::V1, subject.image, None, false);
    expect_accepted(&plugin.exec(&["-vvv"], request.as_bytes()), ApiVersion::V1, subject.image, &(subject.secrets)());
    let dir = plugin.cache_dir();
    if !windows {
        assert_eq!(std::fs::metadata(&dir).expect("cache dir").permissions().mode() & 0o777, 0o700);
    }
    for entry in std::fs::read_dir(&dir).expect("list").flatten() {
        let path = entry.path();
        if !windows {
            assert_eq!(std::fs::metadata(&path).expect("file").permissions().mode() & 0o777, 0o600, "{path:?}");
        }
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        expect_no_secrets(&name, &(subject.secrets)());
    }

    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let before = (subject.token_calls)();
    let exec = plugin.request(&request);
    expect_rejected(&exec, &(subject.secrets)());
    let refusal = if windows { "writable by S-1-1-0" } else { "writable by others" };
    assert!(exec.stderr.contains(refusal), "{}", exec.stderr);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");

    if is_root(&dir) {
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).expect("chown");
        let exec = plugin.request(&request);
        expect_rejected(&exec, &(subject.secrets)());
        assert!(exec.stderr.contains("owned by"), "{}", exec.stderr);
        std::os::unix::fs::chown(&dir, Some(0), Some(0)).expect("chown back");
    }
    assert_eq!((subject.token_calls)(), before, "a refused cache directory stops the exec before the cloud");
}

/// Whether this process can give a directory to another user.
fn is_root(dir: &Path) -> bool {
    std::fs::metadata(dir).is_ok_and(|m| m.uid() == 0)
}

/// A corrupt, truncated, foreign or future-format entry is replaced, never
/// trusted and never fatal.
pub fn corrupt_entries_are_replaced(subject: &Subject) {
    let plugin = subject.plugin;
    clear_cache(plugin);
    let request = request_json(ApiVersion::V1, subject.image, None, false);
    expect_accepted(&plugin.request(&request), ApiVersion::V1, subject.image, &(subject.secrets)());
    let entries: Vec<_> = std::fs::read_dir(plugin.cache_dir())
        .expect("list")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json") && !is_session(p))
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let before = (subject.token_calls)();
    let garbage =
        ["", "{\"format\":2", "\u{0}\u{1}binary", "{\"format\":1}", "[]", "{\"format\":2,\"plugin\":\"other\"}"];
    for content in garbage {
        std::fs::write(&entries[0], content).expect("corrupt");
        expect_accepted(&plugin.request(&request), ApiVersion::V1, subject.image, &(subject.secrets)());
        let body = std::fs::read_to_string(&entries[0]).expect("rewritten");
        let parsed: serde_json::Value = serde_json::from_str(&body).expect("a valid entry again");
        assert_eq!(parsed["format"], credential_provider::cache::FORMAT_VERSION);
    }
    assert_eq!((subject.token_calls)(), before + garbage.len());
}

/// A symbolic link or a FIFO planted in the cache directory as an entry or a
/// lock file is never followed, read through or waited on: the exec fetches
/// anew within seconds, creates nothing outside the directory, leaves the
/// link's target as it was, and replaces the plant with a regular file.
pub fn planted_links_and_fifos_are_never_followed(subject: &Subject) {
    let plugin = subject.plugin;
    clear_cache(plugin);
    let request = request_json(ApiVersion::V1, subject.image, None, false);
    expect_accepted(&plugin.request(&request), ApiVersion::V1, subject.image, &(subject.secrets)());
    let cache = plugin.cache_dir();
    let files: Vec<_> = std::fs::read_dir(&cache).expect("list").flatten().map(|e| e.path()).collect();
    let entry = files.iter().find(|p| p.extension().is_some_and(|e| e == "json") && !is_session(p)).expect("entry");
    let lock = entry.with_extension("lock");
    assert!(lock.is_file(), "{files:?}");
    let outside = tempfile::tempdir().expect("outside");
    // A valid entry of this very key, outside the directory: never to be answered from.
    let planted_entry = outside.path().join("entry.json");
    let mut foreign: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(entry).expect("entry")).expect("entry JSON");
    foreign["password"] = "planted-password-never-answered".into();
    std::fs::write(&planted_entry, foreign.to_string()).expect("plant");
    let planted_lock = outside.path().join("created-through-the-link");
    // (where, a link to where; or a FIFO)
    let plants = [
        (entry.as_path(), Some(&planted_entry)),
        (entry.as_path(), None),
        (lock.as_path(), Some(&planted_lock)),
        (lock.as_path(), None),
    ];
    for (path, link_to) in plants {
        std::fs::remove_file(entry).expect("remove the entry, so the exec renews");
        if path == lock.as_path() {
            std::fs::remove_file(&lock).expect("remove the lock");
        }
        match link_to {
            Some(target) => std::os::unix::fs::symlink(target, path).expect("link"),
            None => make_fifo(path),
        }
        let started = Instant::now();
        let exec = plugin.request(&request);
        let response = expect_accepted(&exec, ApiVersion::V1, subject.image, &(subject.secrets)());
        assert!(started.elapsed() < Duration::from_secs(10), "the exec waited on a plant: {:?}", started.elapsed());
        assert_ne!(response.auth[host(subject.image)].password, "planted-password-never-answered");
        for file in [entry.as_path(), lock.as_path()] {
            let meta = std::fs::symlink_metadata(file).expect("there");
            assert!(meta.is_file(), "{file:?} is a regular file again");
            if !testing_windows_binaries() {
                assert_eq!(meta.mode() & 0o777, 0o600, "{file:?}");
            }
        }
        assert!(!planted_lock.exists(), "a file was created through the planted link");
        assert!(std::fs::read_to_string(&planted_entry).expect("kept").contains("planted-password"));
    }
    // refresh meets a FIFO too, and neither waits on it nor keeps it.
    make_fifo(entry);
    let started = Instant::now();
    let refresh = plugin.exec(&["refresh"], b"");
    assert!(started.elapsed() < Duration::from_secs(10), "refresh waited on a FIFO");
    assert!(refresh.code.is_some(), "{}", refresh.stderr);
    assert!(!std::fs::symlink_metadata(entry).is_ok_and(|m| !m.is_file()), "the FIFO is gone");
}

/// A FIFO at `path` (`mkfifo`).
fn make_fifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    rustix::fs::mknodat(rustix::fs::CWD, path, rustix::fs::FileType::Fifo, rustix::fs::Mode::from_raw_mode(0o600), 0)
        .expect("mkfifo");
}

/// Session files (`<plugin>.<name>-…`) are not registry entries.
fn is_session(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.split('-').next().is_some_and(|p| p.contains('.')))
}

/// 16 processes on two registries, some killed at random moments while the
/// others run: every survivor answers, the cache holds only valid entries,
/// and the next execs are cache hits.
pub fn killed_processes_leave_a_usable_cache(subject: &Subject) {
    let plugin = subject.plugin;
    clear_cache(plugin);
    (subject.set_delay)(Some(Duration::from_millis(300)));
    let images = [subject.image, subject.other_image];
    let mut children = Vec::new();
    for index in 0..16 {
        let image = images[index % 2];
        children.push((index, image, plugin.spawn(&[], request_json(ApiVersion::V1, image, None, false).as_bytes())));
    }
    // Kill every third process at a random moment in the first 600 ms.
    let started = Instant::now();
    let mut survivors = Vec::new();
    let mut victims = Vec::new();
    for (index, image, child) in children {
        if index % 3 == 0 { victims.push(child) } else { survivors.push((image, child)) }
    }
    for mut victim in victims {
        let at = Duration::from_millis(random_below(600));
        if let Some(wait) = at.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        let _ = victim.kill();
        let _ = victim.wait();
    }
    for (image, child) in survivors {
        let exec = Exec::wait(child);
        expect_accepted(&exec, ApiVersion::V1, image, &(subject.secrets)());
    }
    (subject.set_delay)(None);
    for entry in std::fs::read_dir(plugin.cache_dir()).expect("list").flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json") {
            let body = std::fs::read_to_string(&path).expect("read");
            let parsed: serde_json::Value =
                serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path:?} is corrupt: {e}"));
            assert_eq!(parsed["format"], credential_provider::cache::FORMAT_VERSION, "{path:?}");
        }
    }
    let before = (subject.token_calls)();
    for image in images {
        expect_accepted(
            &plugin.request(&request_json(ApiVersion::V1, image, None, false)),
            ApiVersion::V1,
            image,
            &(subject.secrets)(),
        );
    }
    assert_eq!((subject.token_calls)(), before, "both registries are cache hits after the kills");
    // A lock dies with its holder. Every process is gone now, so with the
    // entries removed (their lock files kept) the next fetch of each
    // registry takes its lock at once; waiting it out, as the plugin would
    // say, could only mean a lock that outlived a killed holder. (Asked of
    // the plugin rather than timed: under qemu a live holder of the 16 can
    // rightly hold a lock longer than the wait.)
    for entry in std::fs::read_dir(plugin.cache_dir()).expect("list").flatten() {
        if entry.path().extension().is_some_and(|e| e == "json") {
            std::fs::remove_file(entry.path()).expect("remove an entry");
        }
    }
    for image in images {
        let exec = plugin.request(&request_json(ApiVersion::V1, image, None, false));
        expect_accepted(&exec, ApiVersion::V1, image, &(subject.secrets)());
        assert!(
            !exec.stderr.contains(credential_provider::flow::LOCK_WAITED_OUT),
            "a lock outlived its killed holder: {}",
            exec.stderr
        );
    }
}

/// A number in [0, bound) that differs from run to run.
fn random_below(bound: u64) -> u64 {
    u64::from_str_radix(&crate::server::nonce(), 16).unwrap_or(0) % bound.max(1)
}

/// A repeated request is answered from the cache, with no call to the cloud
/// and no file in the cache directory but the entry and its lock; `-v` says
/// so. `--help` with a pipe that stays open ends at once: only a request
/// reads stdin.
pub fn repeats_are_cache_hits(subject: &Subject) {
    let plugin = subject.plugin;
    clear_cache(plugin);
    let request = request_json(ApiVersion::V1, subject.image, None, false);
    let accepted = |exec: &Exec| expect_accepted(exec, ApiVersion::V1, subject.image, &(subject.secrets)());
    let first = accepted(&plugin.request(&request));
    let before = (subject.token_calls)();
    let repeat = accepted(&plugin.request(&request));
    assert_eq!(repeat.auth, first.auth);
    let verbose = plugin.exec(&["-v"], request.as_bytes());
    assert_eq!(accepted(&verbose).auth, first.auth);
    assert!(verbose.stderr.contains("answered from the cache"), "{}", verbose.stderr);
    assert_eq!((subject.token_calls)(), before, "repeats are cache hits");
    let registry_files: Vec<_> = std::fs::read_dir(plugin.cache_dir())
        .expect("list")
        .flatten()
        .map(|e| e.path())
        .filter(|p| !is_session(p))
        .collect();
    assert!(registry_files.len() <= 2, "one entry and its lock: {registry_files:?}");

    let (mut child, held) = plugin.spawn_holding_stdin(&["--help"]);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "--help waited for stdin");
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(held);
    assert!(status.success(), "--help exits 0");
}

/// `refresh` on an empty cache, and on one where nothing is due, says there
/// was nothing to renew (once), exits 0 and calls no cloud; a period under a
/// second is refused as a command-line error.
pub fn refresh_says_what_it_did_not_do(subject: &Subject) {
    let plugin = subject.plugin;
    clear_cache(plugin);
    let before = (subject.token_calls)();
    let empty = plugin.exec(&["refresh"], b"");
    assert_eq!(empty.code, Some(0), "{}", empty.stderr);
    assert_eq!(empty.stderr.matches("nothing to renew").count(), 1, "{}", empty.stderr);
    assert!(empty.stderr.contains("no credential of this plugin is cached"), "{}", empty.stderr);
    expect_accepted(
        &plugin.request(&request_json(ApiVersion::V1, subject.image, None, false)),
        ApiVersion::V1,
        subject.image,
        &(subject.secrets)(),
    );
    let fresh = plugin.exec(&["refresh"], b"");
    assert_eq!(fresh.code, Some(0), "{}", fresh.stderr);
    assert!(fresh.stderr.contains("nothing to renew: 1 cached credential(s), none past"), "{}", fresh.stderr);
    assert_eq!((subject.token_calls)(), before + 1, "only the request's fetch");
    for short in ["0s", "500ms"] {
        let exec = plugin.exec(&["refresh", "--every", short], b"");
        assert_eq!(exec.code, Some(1), "--every {short}: {}", exec.stderr);
        assert!(exec.stderr.contains("too short") && exec.stderr.lines().count() == 1, "{}", exec.stderr);
    }
}

/// A plugin whose identity endpoint cannot be reached fails with one line
/// that says which endpoint and why, in well under the kubelet's 60 s, and
/// says at `-v` which attempt it is on. `point_at` gives the environment that
/// sends the plugin's identity calls to an address; `endpoint_path` is the
/// path it calls there first.
pub fn unreachable_identity_is_said_with_its_cause(
    plugin: &PluginUnderTest,
    image: &str,
    point_at: &dyn Fn(&str) -> Vec<(String, String)>,
    endpoint_path: &str,
    within: Duration,
) {
    let refusing = crate::server::refusing_address();
    let started = Instant::now();
    let exec = plugin
        .with_program(plugin.binary())
        .with_env(point_at(&refusing.to_string()))
        .exec(&["-v", "--no-cache"], request_json(ApiVersion::V1, image, None, false).as_bytes());
    let took = started.elapsed();
    assert_eq!(exec.code, Some(2), "{}", exec.stderr);
    assert!(exec.stdout.is_empty());
    let last = exec.stderr.lines().last().unwrap_or_default();
    assert!(last.contains(&format!("cannot reach http://{refusing}{endpoint_path}")), "{last}");
    assert!(last.contains("refused"), "the cause: {last}");
    assert!(exec.stderr.contains("attempt 2"), "-v says which attempt is running: {}", exec.stderr);
    assert!(took < within, "a refused endpoint fails fast: {took:?}");
}
