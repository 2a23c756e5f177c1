//! The final merged filesystem of an image, for the `type=local` and
//! `type=tar` outputs: a stack of overlay-format diff directories (the
//! snapshots' upper dirs, top layer first) flattened into one tree.
//!
//! Whiteouts and opaque directories are applied, never emitted; owners,
//! modes, mtimes, xattrs (overlay's own excepted), symlinks, hardlinks,
//! devices and fifos are kept; sockets are dropped, as in layers. See
//! `merge.rs` for the exact overlay rules.

mod dir;
mod merge;

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::layer::{PackError, Walker};

pub use dir::write_rootfs_dir;

/// Writing a merged root filesystem failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootfsError {
    /// Reading a layer directory, or writing a tar entry, failed.
    #[error(transparent)]
    Layer(#[from] PackError),
    /// Creating or opening the destination directory failed.
    #[error("opening destination {path}")]
    OpenDest {
        /// The destination.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Creating, replacing or filling an entry of the destination failed.
    #[error("writing {path}")]
    Write {
        /// The entry in the destination.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Setting an entry's owner, mode, xattrs or times failed.
    #[error("setting {what} of {path}")]
    SetMetadata {
        /// The entry in the destination.
        path: PathBuf,
        /// Which piece of metadata.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Ending the tar stream failed.
    #[error("finishing the root filesystem tar")]
    Finish {
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Streams the merged filesystem of `layers_top_first` (overlay-format diff
/// directories, top layer first) to `out` as a tar, and returns `out`.
///
/// Entries and headers are exactly as [`pack`](crate::layer::pack) writes
/// them (PAX where needed, xattrs as `SCHILY.xattr.*`, hardlinks as link
/// entries to the first path written), in the same order: a directory, then
/// its children by name. The root directory itself is not written. Mtimes are
/// kept as on disk.
pub fn write_rootfs_tar<W: Write>(layers_top_first: &[PathBuf], out: W) -> Result<W, RootfsError> {
    let mut builder = tar::Builder::new(out);
    let mut walker = Walker::new(None);
    merge::walk_merged(layers_top_first, |entry| walker.emit(&entry.node, &mut builder).map(|_opaque| ()))?;
    builder.into_inner().map_err(|source| RootfsError::Finish { source })
}

/// Several merged filesystems in one tar, each under a directory of its own
/// (`linux_amd64/bin/sh`, `linux_arm64/bin/sh`), as BuildKit writes the
/// `type=tar` output of a multi-platform build. Each top directory is an entry
/// of its own (mode 0755, root, mtime 0); below it, entries are as
/// [`write_rootfs_tar`] writes them. Hardlinks never cross filesystems.
pub fn write_rootfs_tars<W: Write>(filesystems: &[(String, Vec<PathBuf>)], out: W) -> Result<W, RootfsError> {
    let mut builder = tar::Builder::new(out);
    for (dir, layers_top_first) in filesystems {
        let dir = dir.trim_matches('/');
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        let write_err = |source| RootfsError::Write { path: PathBuf::from(dir), source };
        header.set_path(format!("{dir}/")).map_err(write_err)?;
        header.set_cksum();
        builder.append(&header, io::empty()).map_err(write_err)?;
        let mut walker = Walker::new(None);
        merge::walk_merged_under(layers_top_first, dir.as_bytes(), |entry| {
            walker.emit(&entry.node, &mut builder).map(|_opaque| ())
        })?;
    }
    builder.into_inner().map_err(|source| RootfsError::Finish { source })
}

/// `dest` joined with an archive-style relative path, for error messages.
fn dest_path(dest: &Path, tar_path: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    dest.join(std::ffi::OsStr::from_bytes(tar_path))
}
