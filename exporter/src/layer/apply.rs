//! Applying owner, mode, xattrs and times to something just created, by fd
//! or by name relative to its parent's fd (never following a symlink).
//! Shared by layer unpacking and root filesystem output.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;

use rustix::fs::{AtFlags, Gid, Mode, Uid, XattrFlags};
use rustix::io::Errno;

use super::meta::Meta;

/// Which piece of metadata could not be set, and why.
#[derive(Debug)]
pub(crate) struct SetMetaError {
    pub(crate) what: String,
    pub(crate) source: io::Error,
}

fn failed(what: &str) -> impl FnOnce(Errno) -> SetMetaError + '_ {
    move |e| SetMetaError { what: what.to_owned(), source: e.into() }
}

/// Owner (with `chown`), then mode (chown clears setuid), then xattrs (chown
/// clears `security.capability`), on an open file or directory. Times are
/// left to the caller.
pub(crate) fn set_meta_fd(fd: BorrowedFd<'_>, meta: &Meta, chown: bool) -> Result<(), SetMetaError> {
    if chown {
        rustix::fs::fchown(fd, Some(Uid::from_raw_unchecked(meta.uid)), Some(Gid::from_raw_unchecked(meta.gid)))
            .map_err(failed("owner"))?;
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode)).map_err(failed("mode"))?;
    for (key, value) in &meta.xattrs {
        match rustix::fs::fsetxattr(fd, key.as_str(), value, XattrFlags::empty()) {
            Ok(()) | Err(Errno::NOTSUP) => {}
            Err(e) => return Err(failed(&format!("xattr {key}"))(e)),
        }
    }
    Ok(())
}

/// The same for a symlink or node that cannot be opened, by name in
/// `parent`, then its times. `chmod` must be false for symlinks.
pub(crate) fn set_meta_at(
    parent: &OwnedFd,
    last: &[u8],
    meta: &Meta,
    chown: bool,
    chmod: bool,
) -> Result<(), SetMetaError> {
    if chown {
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
                Err(e) => return Err(failed(&format!("xattr {key}"))(e)),
            }
        }
    }
    rustix::fs::utimensat(parent, last, &meta.times, AtFlags::SYMLINK_NOFOLLOW).map_err(failed("times"))
}
