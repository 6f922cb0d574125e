//! Windows: ACLs for modes, `%ProgramData%` and `%LOCALAPPDATA%` for the
//! cache, console control events for signals, a hard link (or a copy) for
//! the docker helper.
//!
//! The cache directory's privacy is an explicit, protected ACL set before the
//! directory takes its name: full control for SYSTEM, Administrators and the
//! account that created it, nothing inherited from the parent and nothing for
//! anyone else; the entries inside inherit it. A directory found in place is
//! refused when another account owns it or its ACL lets anyone else write it,
//! as a Linux cache directory is refused when another uid owns it or its mode
//! lets others write it. The ACL calls go through `windows-permissions` (a
//! safe wrapper: our crates forbid unsafe code) and the owner check through
//! gitoxide's `gix-sec`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::windows::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use windows_permissions::constants::{AceType, SeObjectType, SecurityInformation};
use windows_permissions::{LocalBox, SecurityDescriptor, wrappers};

use super::{AclEntry, AclVerdict, PrivateDirError, judge_acl};

/// `FILE_FLAG_OPEN_REPARSE_POINT`: open a symbolic link or junction itself,
/// never what it points to.
const FILE_FLAG_OPEN_REPARSE_POINT: u32 = 0x0020_0000;

/// Whether this process runs as LocalSystem, the account the kubelet service
/// runs plugins as. Told by the profile Windows gives that account
/// (`%SystemRoot%\System32\config\systemprofile`): a wrong answer only picks
/// the other directory, which is checked all the same.
pub fn runs_as_system() -> bool {
    std::env::var_os("USERPROFILE").is_some_and(|profile| super::is_local_system_profile(&profile.to_string_lossy()))
}

/// `%ProgramData%\NAME`: LocalSystem's cache, on the system drive.
pub fn system_cache_dir(name: &str) -> PathBuf {
    std::env::var_os("ProgramData")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(r"C:\ProgramData"))
        .join(name)
}

/// `%LOCALAPPDATA%`: the user's own, unroamed application data.
pub fn user_cache_base() -> Option<PathBuf> {
    std::env::var_os("LOCALAPPDATA").filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// Creates `dir` (and its missing parents, as Windows makes them) with the
/// protected ACL: made under a temporary name, protected, then renamed into
/// place, so that the name never stands for a directory others could write.
/// An existing `dir` is left for [`check_private_dir`].
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    if fs::symlink_metadata(dir).is_ok() {
        return Ok(());
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(parent)?;
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("dir");
    let temp = parent.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = fs::remove_dir(&temp);
    fs::create_dir(&temp)?;
    let result = protect(&temp).and_then(|()| fs::rename(&temp, dir));
    if result.is_err() {
        let _ = fs::remove_dir(&temp);
        // Another process made it meanwhile: that one is checked.
        if fs::symlink_metadata(dir).is_ok() {
            return Ok(());
        }
    }
    result
}

/// Creates `dir` and its missing parents for programs every user runs: the
/// ACL its parent passes on.
pub fn create_shared_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
}

/// Sets `dir`'s ACL to full control for SYSTEM, Administrators and its owner
/// (this process's account, which created it), inherited by everything in
/// it, and nothing inherited from above.
fn protect(dir: &Path) -> io::Result<()> {
    let current =
        wrappers::GetNamedSecurityInfo(dir.as_os_str(), SeObjectType::SE_FILE_OBJECT, SecurityInformation::Owner)?;
    let owner = current.owner().ok_or_else(|| io::Error::other("the new directory has no owner"))?;
    let owner = wrappers::ConvertSidToStringSid(owner)?;
    let owner = owner.to_string_lossy();
    let sddl = format!("D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)(A;OICI;FA;;;{owner})");
    let wanted: LocalBox<SecurityDescriptor> = sddl.parse()?;
    let dacl = wanted.dacl().ok_or_else(|| io::Error::other("the protected ACL did not parse"))?;
    wrappers::SetNamedSecurityInfo(
        dir.as_os_str(),
        SeObjectType::SE_FILE_OBJECT,
        SecurityInformation::Dacl | SecurityInformation::ProtectedDacl,
        None,
        None,
        Some(dacl),
        None,
    )
}

/// Refuses a directory that another account owns, that has no ACL (which
/// lets everyone in), or whose ACL lets another account write it; re-protects
/// one that is ours and safe but lets others read it.
pub fn check_private_dir(dir: &Path) -> Result<(), PrivateDirError> {
    let meta = fs::symlink_metadata(dir).map_err(PrivateDirError::Io)?;
    if !meta.is_dir() {
        return Err(PrivateDirError::Unsafe("is not a directory (links and junctions are refused)".into()));
    }
    match gix_sec::identity::is_path_owned_by_current_user(dir) {
        Ok(true) => {}
        Ok(false) => return Err(PrivateDirError::Unsafe("is owned by another account, not by this process's".into())),
        Err(e) => return Err(PrivateDirError::Io(e)),
    }
    let info = SecurityInformation::Owner | SecurityInformation::Dacl;
    let sd = wrappers::GetNamedSecurityInfo(dir.as_os_str(), SeObjectType::SE_FILE_OBJECT, info)
        .map_err(PrivateDirError::Io)?;
    let owner = match sd.owner() {
        Some(owner) => wrappers::ConvertSidToStringSid(owner).map_err(PrivateDirError::Io)?,
        None => return Err(PrivateDirError::Unsafe("has no owner".into())),
    };
    let Some(dacl) = sd.dacl() else {
        return Err(PrivateDirError::Unsafe("has no ACL, which lets every account in".into()));
    };
    let mut entries = Vec::new();
    for index in 0..dacl.len() {
        let Some(ace) = dacl.get_ace(index) else { continue };
        let Some(sid) = ace.sid() else { continue };
        entries.push(AclEntry {
            allows: !matches!(ace.ace_type(), AceType::ACCESS_DENIED_ACE_TYPE | AceType::ACCESS_DENIED_OBJECT_ACE_TYPE),
            sid: wrappers::ConvertSidToStringSid(sid).map_err(PrivateDirError::Io)?.to_string_lossy().into_owned(),
            mask: ace.mask().bits(),
        });
    }
    match judge_acl(&owner.to_string_lossy(), &entries) {
        AclVerdict::Private => {}
        AclVerdict::WritableBy(sid) => {
            return Err(PrivateDirError::Unsafe(format!("is writable by {sid} (its ACL grants it)")));
        }
        // Ours and not writable by others, but readable: tighten it.
        AclVerdict::ReadableByOthers => protect(dir).map_err(PrivateDirError::Io)?,
    }
    Ok(())
}

/// Windows has no mode: a new file takes the ACL its directory passes on.
pub fn with_mode(options: &mut OpenOptions, _mode: u32) -> &mut OpenOptions {
    options
}

/// Windows has no mode: any file has the one asked for.
pub fn has_mode(_meta: &fs::Metadata, _mode: u32) -> bool {
    true
}

/// Windows has no mode: what a replaced file had is its ACL, which its
/// replacement takes from the directory.
pub fn file_mode(_meta: &fs::Metadata) -> u32 {
    0o600
}

/// Windows has no mode: the file keeps the ACL its directory passed on.
pub fn set_private_mode(_file: &File, _mode: u32) -> io::Result<()> {
    Ok(())
}

/// Opens `path` with `options`, a symbolic link or junction as itself
/// (`FILE_FLAG_OPEN_REPARSE_POINT`), never what it points to: the caller
/// then finds it is not a regular file.
pub fn open_no_follow(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    options.custom_flags(FILE_FLAG_OPEN_REPARSE_POINT).open(path)
}

/// Windows cannot open a directory to flush it: NTFS journals the rename
/// itself, and the file's own flush has already run.
pub fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// A replaced file on Windows takes its directory's ACL; its owner is whoever
/// replaced it, which an administrator editing a user's file may change with
/// `icacls /setowner`.
pub fn keep_owner(_target: &Path, _old: &fs::Metadata) -> io::Result<()> {
    Ok(())
}

/// Whether two files are one: Windows' metadata has no stable file id in the
/// standard library, so the same size and the same bytes.
pub fn same_file(_a: &fs::Metadata, _b: &fs::Metadata) -> bool {
    false
}

/// Puts `program` at `temp` as the helper docker runs: a hard link where the
/// volume allows one, else a copy (symbolic links need a privilege that
/// ordinary accounts lack on Windows).
pub fn install_helper_file(program: &Path, temp: &Path) -> io::Result<()> {
    fs::hard_link(program, temp).or_else(|_| fs::copy(program, temp).map(drop))
}

/// Sets `stop` on the console's control events: Ctrl-C, Ctrl-Break, the
/// console closing, logoff and shutdown. Service wrappers and containerd's
/// HostProcess containers stop a process by sending one of them.
pub fn on_stop(stop: &Arc<AtomicBool>) -> Result<(), String> {
    let stop = Arc::clone(stop);
    ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed)).map_err(|e| e.to_string())
}

/// A console control event reaches every process attached to the console,
/// the child included, so there is nothing more to send: the caller kills it
/// after its grace.
pub fn ask_to_stop(_child: &Child) {}

/// Whether a file found on `PATH` may be run: Windows runs any file (the
/// suffix, not a mode, makes a program).
pub fn is_executable(meta: &fs::Metadata) -> bool {
    meta.is_file()
}
