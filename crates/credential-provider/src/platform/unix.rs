//! Linux (and any Unix): modes, owners, `O_NOFOLLOW`, signals.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::PrivateDirError;

/// Whether this process runs as root, the account the kubelet runs plugins as.
pub fn runs_as_system() -> bool {
    rustix::process::geteuid().is_root()
}

/// `/var/cache/NAME`: root's cache, which the packages leave in place.
pub fn system_cache_dir(name: &str) -> PathBuf {
    Path::new("/var/cache").join(name)
}

/// `$XDG_CACHE_HOME`, else `~/.cache`.
pub fn user_cache_base() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
}

/// Creates `dir` and its missing parents, mode 0700 whatever the umask says
/// (an existing one is left for [`check_private_dir`]).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Creates `dir` and its missing parents for programs every user runs:
/// mode 0755 whatever the umask.
pub fn create_shared_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o755).create(dir)
}

/// Refuses a directory that another user owns or that others may write;
/// tightens one that is ours but readable by others to 0700.
pub fn check_private_dir(dir: &Path) -> Result<(), PrivateDirError> {
    let meta = fs::symlink_metadata(dir).map_err(PrivateDirError::Io)?;
    if !meta.is_dir() {
        return Err(PrivateDirError::Unsafe("is not a directory (symbolic links are refused)".into()));
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(PrivateDirError::Unsafe(format!("is owned by uid {}, not by this process's uid {me}", meta.uid())));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(PrivateDirError::Unsafe(format!("is writable by others (mode {mode:o})")));
    }
    if mode != 0o700 {
        // Ours and not writable by others, but readable: tighten it.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(PrivateDirError::Io)?;
    }
    Ok(())
}

/// `options` creating a file with `mode`, whatever the umask.
pub fn with_mode(options: &mut OpenOptions, mode: u32) -> &mut OpenOptions {
    options.mode(mode)
}

/// Whether a file's mode is exactly `mode` (its permission bits).
pub fn has_mode(meta: &fs::Metadata, mode: u32) -> bool {
    meta.permissions().mode() & 0o777 == mode
}

/// The mode a replaced file had, for its replacement.
pub fn file_mode(meta: &fs::Metadata) -> u32 {
    meta.permissions().mode() & 0o7777
}

/// Sets `file`'s mode to exactly `mode` (the umask may have taken bits off).
pub fn set_private_mode(file: &File, mode: u32) -> io::Result<()> {
    file.set_permissions(fs::Permissions::from_mode(mode))
}

/// Opens `path` with `options`, never following a symbolic link in its last
/// component (`O_NOFOLLOW`) nor blocking on a FIFO (`O_NONBLOCK`). A link is
/// `InvalidData`, as anything that is not a regular file is to the caller.
pub fn open_no_follow(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    use rustix::fs::OFlags;
    let flags = OFlags::NOFOLLOW | OFlags::NONBLOCK;
    options.custom_flags(flags.bits() as i32).open(path).map_err(|e| {
        // ELOOP: O_NOFOLLOW's refusal of a link.
        if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
            io::Error::new(io::ErrorKind::InvalidData, "a symbolic link")
        } else {
            e
        }
    })
}

/// Makes a rename in `dir` durable: fsync of the directory.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Gives `target` the owner of the file it replaced (`old`): root editing a
/// user's file leaves it the user's.
pub fn keep_owner(target: &Path, old: &fs::Metadata) -> io::Result<()> {
    let now = fs::metadata(target)?;
    if (now.uid(), now.gid()) != (old.uid(), old.gid()) {
        std::os::unix::fs::chown(target, Some(old.uid()), Some(old.gid()))?;
    }
    Ok(())
}

/// Whether two paths are the same file (one inode, through links).
pub fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

/// Puts `program` at `temp` as the helper docker runs: a symbolic link, so
/// that an upgrade of the program is the helper's upgrade too.
pub fn install_helper_file(program: &Path, temp: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(program, temp)
}

/// Sets `stop` on SIGTERM or SIGINT.
pub fn on_stop(stop: &Arc<AtomicBool>) -> Result<(), String> {
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(stop)).map_err(|e| format!("signal {signal}: {e}"))?;
    }
    Ok(())
}

/// Asks a child to stop as a service manager would: SIGTERM.
pub fn ask_to_stop(child: &Child) {
    let pid = rustix::process::Pid::from_child(child);
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
}

/// Whether a file found on `PATH` may be run: any execute bit.
pub fn is_executable(meta: &fs::Metadata) -> bool {
    meta.is_file() && meta.permissions().mode() & 0o111 != 0
}
