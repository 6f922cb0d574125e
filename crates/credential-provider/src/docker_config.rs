//! The docker config file's `credHelpers`, and the `docker-credential-<name>`
//! link that clients run: what `install-docker-helper` changes, and nothing
//! else of the user's files.
//!
//! docker, podman, buildah, skopeo and crane all read `credHelpers` from
//! `~/.docker/config.json` (podman and friends after their own `auth.json`):
//! a registry host mapped to a helper name `NAME`, for which they run
//! `docker-credential-NAME` found on `PATH`.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::ser::SerializeMap as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::files;
use crate::platform;

/// What every credential helper's executable is called, before its name.
pub const HELPER_PREFIX: &str = "docker-credential-";

/// The variable docker reads its config directory from.
pub const DOCKER_CONFIG_VARIABLE: &str = "DOCKER_CONFIG";

/// A docker config is a few kilobytes; one much larger is not one.
const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

/// Why the docker config or the helper link could not be set up. Nothing is
/// changed when one of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum DockerConfigError {
    #[error(
        "cannot tell where the docker config is: neither DOCKER_CONFIG nor {} is set; pass --config FILE",
        platform::HOME_VARIABLE
    )]
    NoHome,
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not a docker config ({reason}); fix or move it: nothing was changed")]
    NotAConfig { path: PathBuf, reason: String },
    #[error(
        "helper name {0:?} cannot name an executable: use letters, digits, '.', '_' and '-' (docker runs docker-credential-NAME)"
    )]
    BadHelperName(String),
    #[error(
        "{path} is another program ({found}); docker would run it, not this plugin: pick another name with --helper, or remove it"
    )]
    HelperTaken { path: PathBuf, found: String },
}

impl DockerConfigError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> DockerConfigError + '_ {
        move |source| DockerConfigError::Io { path: path.to_path_buf(), source }
    }
}

/// The docker config clients read: `$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json` (`%USERPROFILE%\\.docker\\config.json` on Windows).
pub fn default_config_path() -> Result<PathBuf, DockerConfigError> {
    let non_empty = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = non_empty(DOCKER_CONFIG_VARIABLE) {
        return Ok(dir.join("config.json"));
    }
    non_empty(platform::HOME_VARIABLE)
        .map(|home| home.join(".docker").join("config.json"))
        .ok_or(DockerConfigError::NoHome)
}

/// The executable docker runs for helper `name` (with `.exe` on Windows),
/// refusing names that are not one file name.
pub fn helper_executable(name: &str) -> Result<String, DockerConfigError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !name.starts_with('.');
    match valid {
        true => Ok(platform::executable_name(&format!("{HELPER_PREFIX}{name}"))),
        false => Err(DockerConfigError::BadHelperName(name.to_string())),
    }
}

/// What became of one registry's `credHelpers` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryChange {
    Added,
    /// It already named this helper.
    Unchanged,
    /// It named another helper, given here.
    Replaced(String),
}

/// Maps each of `registries` to `helper` in the `credHelpers` of the docker
/// config at `path`, keeping everything else in the file, and its mode and
/// owner. The file is replaced atomically, and only when something changed;
/// it is created (mode 0600, in a 0700 directory) when missing. A symbolic
/// link is followed, so a config kept elsewhere stays where it is.
pub fn add_cred_helpers(
    path: &Path,
    helper: &str,
    registries: &[String],
) -> Result<Vec<(String, EntryChange)>, DockerConfigError> {
    let target = match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => fs::canonicalize(path).map_err(DockerConfigError::io(path))?,
        _ => path.to_path_buf(),
    };
    let existing = read_config(&target)?;
    let meta = existing.as_ref().map(|existing| &existing.meta);
    let mut config = existing.as_ref().map_or_else(JsonObject::default, |existing| existing.settings.clone());
    let not_a_config = |reason: &str| DockerConfigError::NotAConfig { path: target.clone(), reason: reason.into() };
    let mut helpers = match config.get("credHelpers") {
        None => JsonObject::default(),
        Some(raw) => serde_json::from_str::<JsonObject>(raw.get())
            .map_err(|_| not_a_config("its \"credHelpers\" is not an object"))?,
    };
    let named = to_raw(&helper.to_string()).map_err(|e| not_a_config(&e.to_string()))?;
    let changes: Vec<(String, EntryChange)> = registries
        .iter()
        .map(|registry| {
            let change = match helpers.insert(registry, named.clone()) {
                None => EntryChange::Added,
                Some(previous) => match serde_json::from_str::<String>(previous.get()) {
                    Ok(previous) if previous == helper => EntryChange::Unchanged,
                    Ok(previous) => EntryChange::Replaced(previous),
                    Err(_) => EntryChange::Replaced(previous.get().to_string()),
                },
            };
            (registry.clone(), change)
        })
        .collect();
    if existing.is_some() && changes.iter().all(|(_, change)| *change == EntryChange::Unchanged) {
        return Ok(changes);
    }
    config.insert("credHelpers", nested_like_docker(&helpers).map_err(|e| not_a_config(&e.to_string()))?);

    let body = encode_like_docker(&config).map_err(|e| not_a_config(&e.to_string()))?;
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        platform::create_private_dir(dir).map_err(DockerConfigError::io(dir))?;
    }
    let mode = meta.map_or(0o600, platform::file_mode);
    files::write_atomically(&target, &body, mode).map_err(DockerConfigError::io(&target))?;
    if let Some(meta) = meta {
        // Root editing a user's file: it stays the user's.
        platform::keep_owner(&target, meta).map_err(DockerConfigError::io(&target))?;
    }
    Ok(changes)
}

/// A JSON object read and written member by member, in the order written,
/// each value exactly as written: editing one member keeps every other's
/// meaning whole (a number too large for a float, key order, duplicates,
/// escapes), which a round trip through `serde_json::Value` would not.
#[derive(Clone, Debug, Default)]
struct JsonObject(Vec<(String, Box<RawValue>)>);

impl JsonObject {
    fn get(&self, name: &str) -> Option<&RawValue> {
        self.0.iter().rev().find(|(key, _)| key == name).map(|(_, value)| value.as_ref())
    }

    /// Sets `name` to `value` where it stands (its last occurrence, which is
    /// the one a JSON reader keeps), or at the end; the value it replaced.
    fn insert(&mut self, name: &str, value: Box<RawValue>) -> Option<Box<RawValue>> {
        match self.0.iter_mut().rev().find(|(key, _)| key == name) {
            Some((_, slot)) => Some(std::mem::replace(slot, value)),
            None => {
                self.0.push((name.to_string(), value));
                None
            }
        }
    }
}

impl<'de> Deserialize<'de> for JsonObject {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<JsonObject, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = JsonObject;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<JsonObject, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push(member);
                }
                Ok(JsonObject(members))
            }
        }
        deserializer.deserialize_map(Members)
    }
}

impl Serialize for JsonObject {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// `object` as a member of the top level, laid out as docker lays it out there.
fn nested_like_docker(object: &JsonObject) -> serde_json::Result<Box<RawValue>> {
    let text = String::from_utf8(encode_like_docker(object)?).map_err(serde::ser::Error::custom)?;
    RawValue::from_string(text.trim_end().replace('\n', "\n\t"))
}

fn to_raw(value: &impl Serialize) -> serde_json::Result<Box<RawValue>> {
    serde_json::value::to_raw_value(value)
}

/// A docker config file as found.
struct ExistingConfig {
    settings: JsonObject,
    meta: fs::Metadata,
}

/// The config at `path`, or `None` when there is no file. An empty file is
/// an empty config, as docker reads it.
fn read_config(path: &Path) -> Result<Option<ExistingConfig>, DockerConfigError> {
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(DockerConfigError::Io { path: path.to_path_buf(), source: e }),
    };
    let meta = file.metadata().map_err(DockerConfigError::io(path))?;
    let not_a_config = |reason: String| DockerConfigError::NotAConfig { path: path.to_path_buf(), reason };
    if !meta.is_file() {
        return Err(not_a_config("it is not a regular file".into()));
    }
    let mut body = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut body).map_err(DockerConfigError::io(path))?;
    if body.len() as u64 > MAX_CONFIG_BYTES {
        return Err(not_a_config(format!("it is larger than {} MiB", MAX_CONFIG_BYTES / 1024 / 1024)));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Some(ExistingConfig { settings: JsonObject::default(), meta }));
    }
    match serde_json::from_slice::<JsonObject>(&body) {
        Ok(settings) => Ok(Some(ExistingConfig { settings, meta })),
        Err(_) if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok() => {
            Err(not_a_config("it is JSON but not an object".into()))
        }
        Err(e) => Err(not_a_config(format!("invalid JSON: {e}"))),
    }
}

/// JSON indented with tabs and ending in a newline, as docker writes its config
/// (the members kept as they were written keep their own layout).
fn encode_like_docker(value: &impl Serialize) -> serde_json::Result<Vec<u8>> {
    let mut body = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    value.serialize(&mut serde_json::Serializer::with_formatter(&mut body, formatter))?;
    body.push(b'\n');
    Ok(body)
}

/// What became of the helper's link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkChange {
    Created,
    /// It already ran this program.
    Unchanged,
}

/// Makes `dir/docker-credential-<helper>` a symbolic link to `program` (on
/// Windows, `docker-credential-<helper>.exe`, a hard link or a copy),
/// atomically. A file there that runs `program` already is kept; a link that
/// leads nowhere is replaced; anything else is another program's and refused.
pub fn link_helper(dir: &Path, executable: &str, program: &Path) -> Result<(PathBuf, LinkChange), DockerConfigError> {
    let link = dir.join(executable);
    match fs::symlink_metadata(&link) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(DockerConfigError::Io { path: link, source: e }),
        Ok(meta) => {
            let dangling = meta.file_type().is_symlink() && fs::metadata(&link).is_err();
            if !dangling {
                if runs_program(&link, program) {
                    return Ok((link, LinkChange::Unchanged));
                }
                let found = describe_file(&link);
                return Err(DockerConfigError::HelperTaken { path: link, found });
            }
        }
    }
    platform::create_shared_dir(dir).map_err(DockerConfigError::io(dir))?;
    let temp = dir.join(format!(".{executable}.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&temp);
    let result = platform::install_helper_file(program, &temp).and_then(|()| fs::rename(&temp, &link));
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.map_err(DockerConfigError::io(&link))?;
    Ok((link, LinkChange::Created))
}

/// Whether `dir` is one of `PATH`'s directories, however either spells it
/// (relative, through links).
pub fn is_on_path(dir: &Path) -> bool {
    let (Some(path), Ok(dir)) = (std::env::var_os("PATH"), fs::canonicalize(dir)) else {
        return false;
    };
    std::env::split_paths(&path)
        .filter(|entry| !entry.as_os_str().is_empty())
        .any(|entry| fs::canonicalize(entry).is_ok_and(|entry| entry == dir))
}

/// The first `executable` on `PATH` that may be run, as clients look it up.
pub fn find_on_path(executable: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(executable))
        .find(|candidate| fs::metadata(candidate).is_ok_and(|meta| platform::is_executable(&meta)))
}

/// Whether running `file` runs `program`: the same file through links, or a
/// byte-for-byte copy of it.
pub fn runs_program(file: &Path, program: &Path) -> bool {
    let (Ok(a), Ok(b)) = (fs::metadata(file), fs::metadata(program)) else {
        return false;
    };
    if platform::same_file(&a, &b) {
        return true;
    }
    a.len() == b.len() && matches!((fs::read(file), fs::read(program)), (Ok(x), Ok(y)) if x == y)
}

/// A file for an error message: where a link leads, else that it is a file.
fn describe_file(path: &Path) -> String {
    match fs::read_link(path) {
        Ok(target) => format!("a link to {}", target.display()),
        Err(_) => "a file that is not this plugin".into(),
    }
}

// The tests make modes and symbolic links: Linux's.
#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::os::unix::fs::PermissionsExt;

    fn config_at(dir: &Path, body: &str, mode: u32) -> PathBuf {
        let path = dir.join("config.json");
        fs::write(&path, body).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    fn read(path: &Path) -> Value {
        serde_json::from_slice(&fs::read(path).expect("read")).expect("json")
    }

    #[test]
    fn adds_entries_and_keeps_the_rest_and_the_mode() {
        let temp = tempfile::tempdir().expect("tempdir");
        let path = config_at(
            temp.path(),
            r#"{"auths":{"quay.io":{"auth":"eDp5"}},"credHelpers":{"gcr.io":"gcloud","a.example":"ecr"},"psFormat":"x"}"#,
            0o640,
        );
        let registries = vec!["a.example".to_string(), "b.example:5000".to_string(), "gcr.io".to_string()];
        let changes = add_cred_helpers(&path, "ecr", &registries).expect("add");
        assert_eq!(
            changes,
            vec![
                ("a.example".to_string(), EntryChange::Unchanged),
                ("b.example:5000".to_string(), EntryChange::Added),
                ("gcr.io".to_string(), EntryChange::Replaced("gcloud".into())),
            ]
        );
        let config = read(&path);
        assert_eq!(config["auths"]["quay.io"]["auth"], "eDp5");
        assert_eq!(config["psFormat"], "x");
        assert_eq!(config["credHelpers"]["b.example:5000"], "ecr");
        assert_eq!(config["credHelpers"]["gcr.io"], "ecr");
        assert_eq!(fs::metadata(&path).expect("stat").permissions().mode() & 0o777, 0o640);
        let text = fs::read_to_string(&path).expect("read");
        assert!(text.contains("\n\t\"auths\"") && text.ends_with("}\n"), "{text}");
    }

    #[test]
    fn creates_a_private_config_and_its_directory() {
        let temp = tempfile::tempdir().expect("tempdir");
        let path = temp.path().join(".docker").join("config.json");
        add_cred_helpers(&path, "acr", &["x.azurecr.io".to_string()]).expect("add");
        assert_eq!(read(&path)["credHelpers"]["x.azurecr.io"], "acr");
        assert_eq!(fs::metadata(&path).expect("stat").permissions().mode() & 0o777, 0o600);
        let dir = path.parent().expect("dir");
        assert_eq!(fs::metadata(dir).expect("stat").permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn an_unchanged_config_is_not_rewritten() {
        let temp = tempfile::tempdir().expect("tempdir");
        let body = "{ \"credHelpers\": { \"a.example\": \"ecr\" } }";
        let path = config_at(temp.path(), body, 0o600);
        add_cred_helpers(&path, "ecr", &["a.example".to_string()]).expect("add");
        assert_eq!(fs::read_to_string(&path).expect("read"), body);
    }

    #[test]
    fn refuses_what_is_not_a_config_and_changes_nothing() {
        let temp = tempfile::tempdir().expect("tempdir");
        for body in ["{not json", "[1,2]", r#"{"credHelpers":"ecr"}"#] {
            let path = config_at(temp.path(), body, 0o600);
            let error = add_cred_helpers(&path, "ecr", &["a.example".to_string()]).expect_err(body);
            assert!(matches!(error, DockerConfigError::NotAConfig { .. }), "{error}");
            assert_eq!(fs::read_to_string(&path).expect("read"), body);
        }
        // An empty file is an empty config, as docker reads it.
        let path = config_at(temp.path(), "\n", 0o600);
        add_cred_helpers(&path, "ecr", &["a.example".to_string()]).expect("empty file");
        assert_eq!(read(&path)["credHelpers"]["a.example"], "ecr");
    }

    #[test]
    fn a_linked_config_is_edited_where_it_lives() {
        let temp = tempfile::tempdir().expect("tempdir");
        let real = config_at(temp.path(), "{}", 0o600);
        let link = temp.path().join("link.json");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        add_cred_helpers(&link, "ecr", &["a.example".to_string()]).expect("add");
        assert!(fs::symlink_metadata(&link).expect("stat").file_type().is_symlink());
        assert_eq!(read(&real)["credHelpers"]["a.example"], "ecr");
    }

    #[test]
    fn helper_names_are_one_file_name() {
        assert_eq!(helper_executable("ecr").expect("valid"), "docker-credential-ecr");
        assert!(helper_executable("gcr-kcp.2").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            assert!(helper_executable(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn links_once_and_refuses_another_program() {
        let temp = tempfile::tempdir().expect("tempdir");
        let program = temp.path().join("ecr-credential-provider");
        fs::write(&program, "#!/bin/sh\n").expect("write");
        let bin = temp.path().join("bin");
        let (link, change) = link_helper(&bin, "docker-credential-ecr", &program).expect("link");
        assert_eq!(change, LinkChange::Created);
        assert_eq!(fs::read_link(&link).expect("readlink"), program);
        assert_eq!(link_helper(&bin, "docker-credential-ecr", &program).expect("again").1, LinkChange::Unchanged);

        let other = bin.join("docker-credential-gcr");
        fs::write(&other, "#!/bin/sh\necho other\n").expect("write");
        let error = link_helper(&bin, "docker-credential-gcr", &program).expect_err("taken");
        assert!(matches!(error, DockerConfigError::HelperTaken { .. }), "{error}");
        assert_eq!(fs::read_to_string(&other).expect("read"), "#!/bin/sh\necho other\n");

        // A copy of the program is the program; a dangling link is replaced.
        let copy = bin.join("docker-credential-copy");
        fs::copy(&program, &copy).expect("copy");
        assert_eq!(link_helper(&bin, "docker-credential-copy", &program).expect("copy").1, LinkChange::Unchanged);
        let dangling = bin.join("docker-credential-old");
        std::os::unix::fs::symlink(temp.path().join("gone"), &dangling).expect("symlink");
        assert_eq!(link_helper(&bin, "docker-credential-old", &program).expect("dangling").1, LinkChange::Created);
    }
}
