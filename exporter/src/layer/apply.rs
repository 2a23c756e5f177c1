//! Creating an entry in its parent directory's fd and applying owner, mode,
//! xattrs and times to it, by fd or by name relative to the parent (never
//! following a symlink). Shared by layer unpacking, `ADD` extraction and
//! root filesystem output.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;

use rustix::fs::{AtFlags, Gid, Mode, OFlags, Uid, XattrFlags};
use rustix::io::Errno;

use super::meta::{Meta, NodeSpec};
use super::resolve::DIR_FLAGS;

/// How an entry's metadata is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaPolicy {
    /// Give entries their numeric owners (needs root).
    pub chown: bool,
    /// Ignore every error setting an xattr, as BuildKit's `ADD` untar
    /// (`BestEffortXattrs`); otherwise only an unsupported one (and, on a
    /// symlink or node, a forbidden one) is skipped.
    pub best_effort_xattrs: bool,
}

/// Which piece of metadata could not be set, and why.
#[derive(Debug, thiserror::Error)]
#[error("setting {what}")]
pub struct SetMetaError {
    /// `owner`, `mode`, `xattr <name>` or `times`.
    pub what: String,
    /// The cause.
    #[source]
    pub source: io::Error,
}

/// Creating an entry, or applying its metadata, failed.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// Making the directory, file, link or node failed.
    #[error("creating the entry")]
    Create(#[source] io::Error),
    /// Applying its metadata failed.
    #[error(transparent)]
    SetMeta(#[from] SetMetaError),
}

fn failed(what: &str) -> impl FnOnce(Errno) -> SetMetaError + '_ {
    move |e| SetMetaError { what: what.to_owned(), source: e.into() }
}

fn create_failed(e: Errno) -> CreateError {
    CreateError::Create(e.into())
}

/// Makes directory `last` in `parent` unless `exists` (mode 0700 until its
/// metadata is applied), applies its metadata but not its times (a
/// directory's mtime changes with every entry written in it), and returns it
/// opened with [`DIR_FLAGS`].
pub fn make_dir(
    parent: BorrowedFd<'_>,
    last: &[u8],
    exists: bool,
    meta: &Meta,
    policy: MetaPolicy,
) -> Result<OwnedFd, CreateError> {
    if !exists {
        rustix::fs::mkdirat(parent, last, Mode::from_raw_mode(0o700)).map_err(create_failed)?;
    }
    let fd = rustix::fs::openat(parent, last, DIR_FLAGS, Mode::empty()).map_err(create_failed)?;
    set_meta_fd(fd.as_fd(), meta, policy)?;
    Ok(fd)
}

/// Creates the regular file `last` in `parent` (it must not exist), mode 0600
/// until [`finish_file`].
pub fn make_file(parent: BorrowedFd<'_>, last: &[u8]) -> io::Result<File> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(File::from(rustix::fs::openat(parent, last, flags, Mode::from_raw_mode(0o600))?))
}

/// Applies a written file's metadata, times last.
pub fn finish_file(file: &File, meta: &Meta, policy: MetaPolicy) -> Result<(), SetMetaError> {
    set_meta_fd(file.as_fd(), meta, policy)?;
    rustix::fs::futimens(file, &meta.times).map_err(failed("times"))
}

/// Makes the symlink `last` → `target` in `parent` (it must not exist) and
/// applies its metadata.
pub fn make_symlink(
    parent: &OwnedFd,
    last: &[u8],
    target: &[u8],
    meta: &Meta,
    policy: MetaPolicy,
) -> Result<(), CreateError> {
    rustix::fs::symlinkat(target, parent, last).map_err(create_failed)?;
    Ok(set_meta_at(parent, last, meta, policy, false)?)
}

/// Makes the device or FIFO `last` in `parent` (it must not exist) and
/// applies its metadata.
pub fn make_node(
    parent: &OwnedFd,
    last: &[u8],
    node: &NodeSpec,
    meta: &Meta,
    policy: MetaPolicy,
) -> Result<(), CreateError> {
    rustix::fs::mknodat(parent, last, node.file_type, Mode::from_raw_mode(meta.mode), node.dev())
        .map_err(create_failed)?;
    Ok(set_meta_at(parent, last, meta, policy, true)?)
}

/// Owner (with `chown`), then mode (chown clears setuid), then xattrs (chown
/// clears `security.capability`), on an open file or directory. Times are
/// left to the caller.
pub fn set_meta_fd(fd: BorrowedFd<'_>, meta: &Meta, policy: MetaPolicy) -> Result<(), SetMetaError> {
    if policy.chown {
        rustix::fs::fchown(fd, Some(Uid::from_raw_unchecked(meta.uid)), Some(Gid::from_raw_unchecked(meta.gid)))
            .map_err(failed("owner"))?;
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode)).map_err(failed("mode"))?;
    for (key, value) in &meta.xattrs {
        match rustix::fs::fsetxattr(fd, key.as_str(), value, XattrFlags::empty()) {
            Ok(()) | Err(Errno::NOTSUP) => {}
            Err(_) if policy.best_effort_xattrs => {}
            Err(e) => return Err(failed(&format!("xattr {key}"))(e)),
        }
    }
    Ok(())
}

/// The same for a symlink or node that cannot be opened, by name in
/// `parent`, then its times. `chmod` must be false for symlinks.
pub fn set_meta_at(
    parent: &OwnedFd,
    last: &[u8],
    meta: &Meta,
    policy: MetaPolicy,
    chmod: bool,
) -> Result<(), SetMetaError> {
    if policy.chown {
        let (uid, gid) = (Uid::from_raw_unchecked(meta.uid), Gid::from_raw_unchecked(meta.gid));
        rustix::fs::chownat(parent, last, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW).map_err(failed("owner"))?;
    }
    if chmod {
        // Not a symlink (the caller just made the node), so following is harmless.
        rustix::fs::chmodat(parent, last, Mode::from_raw_mode(meta.mode), AtFlags::empty()).map_err(failed("mode"))?;
    }
    if !meta.xattrs.is_empty() {
        // The parent is reached through its fd's magic link, the final
        // component is not followed (lsetxattr).
        let mut path = format!("/proc/self/fd/{}/", parent.as_raw_fd()).into_bytes();
        path.extend_from_slice(last);
        let path = OsString::from_vec(path);
        for (key, value) in &meta.xattrs {
            match rustix::fs::lsetxattr(path.as_os_str(), key.as_str(), value, XattrFlags::empty()) {
                Ok(()) | Err(Errno::NOTSUP | Errno::PERM) => {}
                Err(_) if policy.best_effort_xattrs => {}
                Err(e) => return Err(failed(&format!("xattr {key}"))(e)),
            }
        }
    }
    rustix::fs::utimensat(parent, last, &meta.times, AtFlags::SYMLINK_NOFOLLOW).map_err(failed("times"))
}
