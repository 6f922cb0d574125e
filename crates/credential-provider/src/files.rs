//! Replacing a file whole: the one way this crate writes a file that another
//! process may be reading (a cache entry, a user's docker config).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::platform;

/// Tells apart the temp files of one process's writers.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `content` to `target` atomically and durably: a temp file beside it
/// (`.<name>.<pid>.<n>.tmp`, created with `mode` whatever the umask; on
/// Windows, with the ACL the directory passes on), fsync, rename over
/// `target`, fsync of the directory (where the system has one). A reader sees the old file
/// or the new one, never a mix, whatever happens to this process or the
/// power; a failed write removes its temp file.
pub fn write_atomically(target: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    let dir = target.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temp = dir.join(format!(".{name}.{}.{}.tmp", std::process::id(), TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)));
    let result = (|| {
        let mut file = platform::with_mode(OpenOptions::new().write(true).create_new(true), mode).open(&temp)?;
        platform::set_private_mode(&file, mode)?;
        file.write_all(content)?;
        file.sync_all()?;
        fs::rename(&temp, target)?;
        platform::sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(unix)]
    use std::os::unix::fs::MetadataExt;

    #[test]
    #[cfg(unix)]
    fn replaces_whole_with_the_mode_asked_for() {
        let temp = tempfile::tempdir().expect("tempdir");
        let target = temp.path().join("config.json");
        fs::write(&target, "old").expect("write");
        write_atomically(&target, b"new", 0o640).expect("replace");
        assert_eq!(fs::read_to_string(&target).expect("read"), "new");
        assert_eq!(fs::metadata(&target).expect("stat").mode() & 0o777, 0o640);
        let left: Vec<_> = fs::read_dir(temp.path()).expect("dir").collect();
        assert_eq!(left.len(), 1, "no temp file stays behind");
    }

    #[test]
    fn a_failed_write_leaves_the_target_and_no_temp_file() {
        let temp = tempfile::tempdir().expect("tempdir");
        // A directory cannot be renamed over by a file.
        let target = temp.path().join("taken");
        fs::create_dir(&target).expect("mkdir");
        assert!(write_atomically(&target, b"x", 0o600).is_err());
        assert!(target.is_dir());
        assert_eq!(fs::read_dir(temp.path()).expect("dir").count(), 1);
    }
}
