//! Mount stubs: the files and directories the init creates so that something can be mounted
//! there, recorded so the host removes exactly those from the upper dir afterwards (and
//! restores the times of the directories they were made in).
//!
//! Only stubs on the overlay are recorded (same device as the rootfs): one created inside
//! `/dev` (a tmpfs) or inside a bind-mounted directory is not in the upper dir. Paths are
//! recorded canonical (symlinks of the image resolved), since that is where they are in the
//! upper dir.

use std::fs::Metadata;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use super::mounts::MountError;
use crate::protocol::{Created, ParentTimes};

/// Records stubs made on the filesystem of `root_dev`.
#[derive(Debug)]
pub(crate) struct Stubs {
    root_dev: u64,
    pub(crate) created: Created,
}

fn times(path: String, meta: &Metadata) -> ParentTimes {
    ParentTimes { path, atime: (meta.atime(), meta.atime_nsec()), mtime: (meta.mtime(), meta.mtime_nsec()) }
}

fn err_create(path: &Path) -> impl FnOnce(std::io::Error) -> MountError + '_ {
    move |e| MountError::Create { path: path.to_owned(), source: e.into() }
}

/// `canonical` (an absolute path in the current root) relative to the root.
fn relative(canonical: &Path) -> String {
    canonical.strip_prefix("/").unwrap_or(canonical).to_string_lossy().into_owned()
}

impl Stubs {
    /// Stubs on the filesystem that holds `root` (the overlay's root).
    pub(crate) fn new(root: &Path) -> Result<Stubs, MountError> {
        let meta = std::fs::metadata(root).map_err(err_create(root))?;
        Ok(Stubs { root_dev: meta.dev(), created: Created::default() })
    }

    /// Takes what was recorded so far (to report it), leaving the record empty.
    pub(crate) fn take(&mut self) -> Created {
        std::mem::take(&mut self.created)
    }

    /// Creates `path`'s missing components under `base` (the root of the view they are
    /// resolved in: `/` after `pivot_root`, or the merged dir before) — directories 0755,
    /// and the last one a directory if `dir`, else an empty file — recording each.
    pub(crate) fn create(&mut self, base: &Path, path: &Path, dir: bool) -> Result<(), MountError> {
        let names: Vec<_> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(name) => Some(name),
                _ => None, // validated on the host: absolute, no `..`
            })
            .collect();
        let mut current = base.to_path_buf();
        for (i, name) in names.iter().enumerate() {
            let last = i + 1 == names.len();
            let next = current.join(name);
            match std::fs::metadata(&next) {
                Ok(meta) if last || meta.is_dir() => {
                    current = next;
                    continue;
                }
                Ok(_) => return Err(MountError::NotADirectory { path: next }),
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err_create(&next)(e)),
                Err(_) => {}
            }
            if std::fs::symlink_metadata(&next).is_ok() {
                // A dangling symlink: creating through it would put the stub wherever it
                // points, which we could not clean up reliably.
                return Err(MountError::DanglingSymlink { path: next });
            }
            self.note_parent(base, &current)?;
            if dir || !last {
                std::fs::DirBuilder::new().mode(0o755).create(&next).map_err(err_create(&next))?;
            } else {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .open(&next)
                    .map_err(err_create(&next))?;
            }
            self.note_created(base, &next)?;
            current = next;
        }
        Ok(())
    }

    /// Records the times of `parent` before the first stub is created in it, unless it is
    /// itself one of ours or not on the overlay.
    fn note_parent(&mut self, base: &Path, parent: &Path) -> Result<(), MountError> {
        let canonical = canonical_in(base, parent)?;
        let meta = std::fs::metadata(parent).map_err(err_create(parent))?;
        let rel = relative(&canonical);
        let ours = self.created.paths.contains(&rel);
        let known = self.created.parents.iter().any(|p| p.path == rel);
        if meta.dev() == self.root_dev && !ours && !known {
            self.created.parents.push(times(rel, &meta));
        }
        Ok(())
    }

    fn note_created(&mut self, base: &Path, path: &Path) -> Result<(), MountError> {
        let meta = std::fs::symlink_metadata(path).map_err(err_create(path))?;
        if meta.dev() == self.root_dev {
            let canonical = canonical_in(base, path)?;
            self.created.paths.push(relative(&canonical));
        }
        Ok(())
    }
}

/// The canonical form of `path` relative to `base`, as an absolute path ("/a/b").
fn canonical_in(base: &Path, path: &Path) -> Result<PathBuf, MountError> {
    let canonical = std::fs::canonicalize(path).map_err(err_create(path))?;
    let base = std::fs::canonicalize(base).map_err(err_create(base))?;
    Ok(Path::new("/").join(canonical.strip_prefix(&base).unwrap_or(&canonical)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_created_components_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc/real")).unwrap();
        std::os::unix::fs::symlink("real", root.join("etc/link")).unwrap();
        let mut stubs = Stubs::new(root).unwrap();
        stubs.create(root, Path::new("/etc/link/a/b"), false).unwrap();
        stubs.create(root, Path::new("/etc/real/a/c"), true).unwrap();
        assert!(root.join("etc/real/a/b").is_file());
        let created = stubs.take();
        assert_eq!(created.paths, ["etc/real/a", "etc/real/a/b", "etc/real/a/c"]);
        assert_eq!(created.parents.len(), 1);
        assert_eq!(created.parents[0].path, "etc/real");
        std::os::unix::fs::symlink("nowhere", root.join("dangling")).unwrap();
        assert!(matches!(stubs.create(root, Path::new("/dangling/x"), true), Err(MountError::DanglingSymlink { .. })));
    }
}
