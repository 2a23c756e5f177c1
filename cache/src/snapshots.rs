//! Snapshots: filesystem diffs in overlayfs upper-dir format, published by renaming a prepared
//! directory into `snapshots/<id>`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::blobs::Digest;
use crate::error::{IoContext, Result};
use crate::fsutil::disk_usage;

/// File beside `diff/` caching the disk usage of `diff/` in bytes (decimal), written at commit.
pub(crate) const SIZE_FILE: &str = "size";

/// What is known about a snapshot besides its files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// sha256 of the uncompressed layer tar of this diff, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff_id: Option<Digest>,
    /// The compressed layer blob in the store, once packed or pulled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<Digest>,
    /// Size of the compressed blob.
    #[serde(default)]
    pub blob_size: u64,
    /// Media type of the compressed blob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

/// A snapshot being created: `diff()` is where its files go, `work()` an empty sibling directory
/// on the same filesystem (what overlayfs needs as `workdir`). Dropped without
/// [`Store::commit_snapshot`](crate::Store::commit_snapshot), it is removed.
#[derive(Debug)]
pub struct PreparedSnapshot {
    pub(crate) root: PathBuf,
    pub(crate) committed: bool,
}

impl PreparedSnapshot {
    pub(crate) fn create(tmp_dir: &Path) -> Result<PreparedSnapshot> {
        let root = crate::store::unique_tmp_path(tmp_dir, "snap");
        std::fs::create_dir(&root).at(&root)?;
        let snap = PreparedSnapshot { root, committed: false };
        std::fs::create_dir(snap.diff()).at(snap.diff())?;
        std::fs::create_dir(snap.work()).at(snap.work())?;
        Ok(snap)
    }

    /// The directory that receives the diff.
    pub fn diff(&self) -> PathBuf {
        self.root.join("diff")
    }

    /// An empty scratch directory on the same filesystem (overlayfs `workdir`).
    pub fn work(&self) -> PathBuf {
        self.root.join("work")
    }

    /// True when the diff directory has no entries.
    pub fn is_empty(&self) -> Result<bool> {
        let d = self.diff();
        Ok(std::fs::read_dir(&d).at(&d)?.next().is_none())
    }
}

impl Drop for PreparedSnapshot {
    fn drop(&mut self) {
        if !self.committed {
            remove_tree(&self.root);
        }
    }
}

/// Writes the size cache of a snapshot being committed (`root` holds `diff/`). Best effort:
/// without it, [`size_of`] walks the snapshot when asked.
pub(crate) fn write_size(root: &Path) {
    if let Ok(bytes) = disk_usage(&root.join("diff")) {
        let _ = std::fs::write(root.join(SIZE_FILE), bytes.to_string());
    }
}

/// Disk usage of a published snapshot's files: the cached value, or a walk of `diff/` for
/// snapshots committed without one.
pub(crate) fn size_of(root: &Path) -> Result<u64> {
    let cached = std::fs::read_to_string(root.join(SIZE_FILE)).ok().and_then(|s| s.trim().parse().ok());
    match cached {
        Some(n) => Ok(n),
        None => disk_usage(&root.join("diff")),
    }
}

/// Removes a directory tree, best effort. Overlay work dirs contain a `work/` directory with mode
/// 000 that `remove_dir_all` handles as root; as a non-root user we make it writable first.
pub(crate) fn remove_tree(path: &Path) {
    if std::fs::remove_dir_all(path).is_ok() {
        return;
    }
    for entry in walk_dirs(path) {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(0o700));
    }
    let _ = std::fs::remove_dir_all(path);
}

fn walk_dirs(path: &Path) -> Vec<PathBuf> {
    let mut out = vec![path.to_owned()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(rd) = std::fs::read_dir(&out[i]) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path());
                }
            }
        }
        i += 1;
    }
    out
}
