//! Creating entries in a diff directory with exact metadata (owner, mode, mtime).

use std::fs::Metadata;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use rustix::fs::{AtFlags, Timespec, Timestamps, UTIME_OMIT};

/// Owner, permission bits and modification time to give an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attrs {
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
    /// Permission bits including setuid/setgid/sticky (ignored for symlinks).
    pub mode: u32,
    /// Modification time: seconds and nanoseconds.
    pub mtime: (i64, i64),
}

impl Attrs {
    /// The attributes an entry has on disk.
    pub fn of(md: &Metadata) -> Attrs {
        Attrs { uid: md.uid(), gid: md.gid(), mode: md.mode() & 0o7777, mtime: (md.mtime(), md.mtime_nsec()) }
    }

    /// Attributes for something created now.
    pub fn new_now(uid: u32, gid: u32, mode: u32) -> Attrs {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Attrs { uid, gid, mode, mtime: (now.as_secs() as i64, i64::from(now.subsec_nanos())) }
    }
}

/// Applies `attrs` to `path` without following a final symlink. Order matters: chown clears
/// setuid/setgid bits, so the mode is set after it; the mtime last.
pub fn apply(path: &Path, attrs: &Attrs, is_symlink: bool) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(attrs.uid), Some(attrs.gid))?;
    if !is_symlink {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(attrs.mode))?;
    }
    set_mtime(path, attrs.mtime)
}

/// Sets the modification time of `path` (not following symlinks), leaving atime alone.
pub fn set_mtime(path: &Path, mtime: (i64, i64)) -> io::Result<()> {
    let times = Timestamps {
        last_access: Timespec { tv_sec: 0, tv_nsec: UTIME_OMIT },
        last_modification: Timespec { tv_sec: mtime.0, tv_nsec: mtime.1 },
    };
    rustix::fs::utimensat(rustix::fs::CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(io::Error::from)
}
