//! What differs between a Linux node and a Windows node, in one place: where
//! the cache lives and how it is kept private, how a file is opened without
//! following a link, how a replaced file is made durable, how a long-running
//! command learns it must stop, and how the docker helper is put on `PATH`.
//!
//! Every other module is the same on both; each function here has one
//! implementation per family (`platform/unix.rs`, `platform/windows.rs`) with
//! the same signature and the same promise, so that a reader of the cache or
//! the docker helper never meets a `cfg`.

use std::path::{Path, PathBuf};

#[cfg(unix)]
#[path = "platform/unix.rs"]
mod imp;
#[cfg(windows)]
#[path = "platform/windows.rs"]
mod imp;

pub use imp::{
    ask_to_stop, check_private_dir, create_private_dir, create_shared_dir, file_mode, has_mode, install_helper_file,
    is_executable, keep_owner, on_stop, open_no_follow, runs_as_system, same_file, set_private_mode, sync_dir,
    system_cache_dir, user_cache_base, with_mode,
};

/// The variable that names the user's home directory, under which docker
/// keeps its config (`.docker\\config.json`): `USERPROFILE` on Windows, as
/// docker reads it there.
pub const HOME_VARIABLE: &str = if cfg!(windows) { "USERPROFILE" } else { "HOME" };

/// The name of this family's executable for `name`: `name.exe` on Windows,
/// `name` elsewhere. Docker clients on Windows look helpers up with the
/// suffix, and the kubelet runs a plugin by the name its config gives.
pub fn executable_name(name: &str) -> String {
    format!("{name}{}", std::env::consts::EXE_SUFFIX)
}

/// A program's name without this family's executable suffix: what it was
/// invoked as (`docker-credential-ecr.exe` is the helper `ecr`).
pub fn program_name(file_name: &str) -> &str {
    let suffix = std::env::consts::EXE_SUFFIX;
    match file_name.len().checked_sub(suffix.len()) {
        Some(end) if !suffix.is_empty() && file_name[end..].eq_ignore_ascii_case(suffix) => &file_name[..end],
        _ => file_name,
    }
}

/// The command that puts the docker helper `executable` on `PATH` by hand,
/// for a hint: a symbolic link on Linux; on Windows a hard link (`mklink /H`,
/// cmd's own), since a symbolic link takes a privilege there.
pub fn helper_link_command(program: &Path, executable: &str) -> String {
    if cfg!(windows) {
        format!("mklink /H DIR\\{executable} {}", program.display())
    } else {
        format!("ln -s {} DIR/{executable}", program.display())
    }
}

/// Why a directory that holds secrets cannot be trusted, or could not be
/// examined.
#[derive(Debug)]
pub enum PrivateDirError {
    /// Someone other than this account (and the system's own) may write it,
    /// or owns it: the reason, for the operator.
    Unsafe(String),
    Io(std::io::Error),
}

/// One entry of a Windows ACL, as the privacy check reads it: a grant or a
/// denial, to whom (a SID string), of which rights (the access mask).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclEntry {
    pub allows: bool,
    pub sid: String,
    pub mask: u32,
}

/// What a directory's ACL lets accounts other than its owner, SYSTEM and
/// Administrators do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AclVerdict {
    /// Only they may use it.
    Private,
    /// Others may read or list it, not change it: it is tightened.
    ReadableByOthers,
    /// This account (a SID) may change it: it is refused.
    WritableBy(String),
}

/// The SIDs trusted with a cache directory besides its owner: LocalSystem
/// (the kubelet's account), the Administrators group (who can take any file
/// anyway), and the placeholders an inherited entry may name for a child's
/// owner (CREATOR OWNER, OWNER RIGHTS).
pub const TRUSTED_SIDS: [&str; 4] = ["S-1-5-18", "S-1-5-32-544", "S-1-3-0", "S-1-3-4"];

/// The rights that let an account change a directory or what is in it: add
/// or remove entries, write data, change the ACL or the owner
/// (`FILE_ADD_FILE`, `FILE_ADD_SUBDIRECTORY`, `FILE_DELETE_CHILD`, `DELETE`,
/// `WRITE_DAC`, `WRITE_OWNER`, `GENERIC_ALL`, `GENERIC_WRITE`).
pub const WRITE_RIGHTS: u32 =
    0x0002 | 0x0004 | 0x0040 | 0x0001_0000 | 0x0004_0000 | 0x0008_0000 | 0x1000_0000 | 0x4000_0000;

/// Judges a Windows directory's ACL as the cache's privacy requires, the way
/// a Linux directory's mode is judged: denials only take rights away, and
/// any grant to another account of a right in [`WRITE_RIGHTS`] makes it
/// shared.
pub fn judge_acl(owner: &str, entries: &[AclEntry]) -> AclVerdict {
    let mut verdict = AclVerdict::Private;
    for entry in entries.iter().filter(|e| e.allows) {
        if entry.sid == owner || TRUSTED_SIDS.contains(&entry.sid.as_str()) {
            continue;
        }
        if entry.mask & WRITE_RIGHTS != 0 {
            return AclVerdict::WritableBy(entry.sid.clone());
        }
        verdict = AclVerdict::ReadableByOthers;
    }
    verdict
}

/// Whether `profile` (`%USERPROFILE%`) is LocalSystem's,
/// `%SystemRoot%\System32\config\systemprofile`, whatever the drive and case.
pub fn is_local_system_profile(profile: &str) -> bool {
    profile.to_ascii_lowercase().trim_end_matches('\\').ends_with(r"\system32\config\systemprofile")
}

/// The default place for this account's cache: the system one for the
/// account the kubelet runs as (root; LocalSystem on Windows), else the
/// user's own cache directory, else the temporary directory.
pub fn default_cache_dir(name: &str) -> PathBuf {
    if runs_as_system() {
        return system_cache_dir(name);
    }
    user_cache_base().unwrap_or_else(std::env::temp_dir).join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: &str = "S-1-5-21-1-2-3-1001";
    const USERS: &str = "S-1-5-32-545";
    const EVERYONE: &str = "S-1-1-0";
    const FULL: u32 = 0x001F_01FF;
    const READ: u32 = 0x0012_0089;

    fn allow(sid: &str, mask: u32) -> AclEntry {
        AclEntry { allows: true, sid: sid.into(), mask }
    }

    #[test]
    fn local_system_is_told_by_its_profile() {
        assert!(is_local_system_profile(r"C:\Windows\system32\config\systemprofile"));
        assert!(is_local_system_profile(r"D:\WINDOWS\System32\Config\SystemProfile\"));
        assert!(!is_local_system_profile(r"C:\Users\ContainerAdministrator"));
        assert!(!is_local_system_profile(r"C:\Users\systemprofile"));
    }

    #[test]
    fn the_acl_the_cache_sets_is_private() {
        let set = [allow("S-1-5-18", FULL), allow("S-1-5-32-544", FULL), allow(OWNER, FULL)];
        assert_eq!(judge_acl(OWNER, &set), AclVerdict::Private);
        // An inherited CREATOR OWNER entry names each child's owner.
        assert_eq!(judge_acl(OWNER, &[allow("S-1-3-0", 0x1000_0000)]), AclVerdict::Private);
    }

    #[test]
    fn a_grant_of_any_write_right_to_another_account_is_refused() {
        for right in [0x0002, 0x0004, 0x0040, 0x0001_0000, 0x0004_0000, 0x0008_0000, 0x1000_0000, 0x4000_0000, FULL] {
            let acl = [allow(OWNER, FULL), allow(USERS, READ | right)];
            assert_eq!(judge_acl(OWNER, &acl), AclVerdict::WritableBy(USERS.into()), "right {right:#x}");
        }
        // ProgramData's own default: Users may create files and folders.
        let programdata = [allow("S-1-5-18", FULL), allow(USERS, 0x0002 | 0x0004)];
        assert_eq!(judge_acl(OWNER, &programdata), AclVerdict::WritableBy(USERS.into()));
    }

    #[test]
    fn reading_by_others_is_tightened_and_denials_grant_nothing() {
        assert_eq!(judge_acl(OWNER, &[allow(OWNER, FULL), allow(EVERYONE, READ)]), AclVerdict::ReadableByOthers);
        let denied = AclEntry { allows: false, sid: EVERYONE.into(), mask: FULL };
        assert_eq!(judge_acl(OWNER, &[allow(OWNER, FULL), denied]), AclVerdict::Private);
        // Another account's full control is refused even after the owner's.
        let other = "S-1-5-21-1-2-3-1002";
        assert_eq!(judge_acl(OWNER, &[allow(OWNER, FULL), allow(other, FULL)]), AclVerdict::WritableBy(other.into()));
    }

    #[test]
    fn executable_names_round_trip() {
        let file = executable_name("docker-credential-ecr");
        assert_eq!(program_name(&file), "docker-credential-ecr");
        assert_eq!(program_name("docker-credential-ecr"), "docker-credential-ecr");
        if cfg!(windows) {
            assert_eq!(file, "docker-credential-ecr.exe");
            assert_eq!(program_name("DOCKER-CREDENTIAL-ECR.EXE"), "DOCKER-CREDENTIAL-ECR");
        } else {
            assert_eq!(file, "docker-credential-ecr");
            assert_eq!(program_name("docker-credential-ecr.exe"), "docker-credential-ecr.exe");
        }
    }

    #[test]
    fn the_helper_hint_names_this_family_s_link() {
        let command = helper_link_command(Path::new("/opt/bin/ecr-credential-provider"), "docker-credential-ecr");
        if cfg!(windows) {
            assert_eq!(command, "mklink /H DIR\\docker-credential-ecr /opt/bin/ecr-credential-provider");
        } else {
            assert_eq!(command, "ln -s /opt/bin/ecr-credential-provider DIR/docker-credential-ecr");
        }
    }
}
