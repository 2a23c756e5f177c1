//! Writing the merged filesystem into a directory, confined to it: every
//! entry is created relative to its parent's fd, reached from `dest` one
//! component at a time without following symlinks, so nothing the tree (or
//! a stale `dest`) holds can redirect a write outside `dest`.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};

use super::merge::{walk_merged, Merged};
use super::{dest_path, RootfsError};
use crate::layer::{
    is_dir, lstat_at, read_xattrs, remove_at, set_meta_at, set_meta_fd, Confined, Kind, Meta, MetaPolicy, PackError,
    ResolveError, SetMetaError, DIR_FLAGS,
};

/// Writes the merged filesystem of `layers_top_first` (overlay-format diff
/// directories, top layer first) into `dest`, which is created if missing.
///
/// An existing `dest` is merged into: directories are kept (their metadata
/// updated), anything else at a path the image has is replaced (a symlink is
/// removed, never followed), and paths the image does not have are left
/// alone. `dest`'s own metadata is not changed. Owners are applied when
/// running as root; directory mtimes are set last, deepest first.
pub fn write_rootfs_dir(layers_top_first: &[PathBuf], dest: &Path) -> Result<(), RootfsError> {
    let open_err = |source| RootfsError::OpenDest { path: dest.to_path_buf(), source };
    fs::create_dir_all(dest).map_err(open_err)?;
    let mut writer = DirWriter {
        dest,
        confined: Confined::open(dest).map_err(open_err)?,
        policy: MetaPolicy { chown: rustix::process::geteuid().is_root(), best_effort_xattrs: false },
        links: HashMap::new(),
        dir_times: BTreeMap::new(),
    };
    walk_merged(layers_top_first, |entry| writer.write(entry))?;
    writer.finish()
}

struct DirWriter<'a> {
    dest: &'a Path,
    confined: Confined,
    policy: MetaPolicy,
    /// (dev, ino) of multiply-linked source inodes → components of the first path written.
    links: HashMap<(u64, u64), Vec<Vec<u8>>>,
    /// Directory times, applied deepest first at the end.
    dir_times: BTreeMap<Vec<Vec<u8>>, Timestamps>,
}

impl DirWriter<'_> {
    fn write(&mut self, entry: &Merged) -> Result<(), RootfsError> {
        let node = &entry.node;
        let path = dest_path(self.dest, &node.tar_path);
        let write_err = |source| RootfsError::Write { path: path.clone(), source };
        let comps: Vec<&[u8]> = node.tar_path.split(|&b| b == b'/').collect();
        let Some((&last, parents)) = comps.split_last() else {
            return Ok(());
        };
        let parent = self.parent(parents).map_err(write_err)?;
        let meta = self.meta(entry)?;
        let set_err = |e: SetMetaError| RootfsError::SetMetadata { path: path.clone(), what: e.what, source: e.source };

        if node.kind != Kind::Dir && node.meta.nlink() > 1 {
            let key = (node.meta.dev(), node.meta.ino());
            if let Some(first) = self.links.get(&key).cloned() {
                let first: Vec<&[u8]> = first.iter().map(Vec::as_slice).collect();
                let (&first_last, first_parents) = first.split_last().unwrap_or((&last, &[]));
                let first_parent = self.parent(first_parents).map_err(write_err)?;
                self.clear(&parent, last, false).map_err(write_err)?;
                return rustix::fs::linkat(&*first_parent, first_last, &*parent, last, AtFlags::empty())
                    .map_err(|e| write_err(e.into()));
            }
            self.links.insert(key, comps.iter().map(|c| c.to_vec()).collect());
        }

        match node.kind {
            Kind::Dir => {
                if !self.clear(&parent, last, true).map_err(write_err)? {
                    rustix::fs::mkdirat(&*parent, last, Mode::from_raw_mode(0o700)).map_err(|e| write_err(e.into()))?;
                }
                let fd =
                    rustix::fs::openat(&*parent, last, DIR_FLAGS, Mode::empty()).map_err(|e| write_err(e.into()))?;
                set_meta_fd(fd.as_fd(), &meta, self.policy).map_err(set_err)?;
                self.dir_times.insert(comps.iter().map(|c| c.to_vec()).collect(), meta.times);
                Ok(())
            }
            Kind::File => {
                self.clear(&parent, last, false).map_err(write_err)?;
                let mut source = File::options()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&node.fs_path)
                    .map_err(|source| PackError::ReadFile { path: node.fs_path.clone(), source })?;
                let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let fd = rustix::fs::openat(&*parent, last, flags, Mode::from_raw_mode(0o600))
                    .map_err(|e| write_err(e.into()))?;
                let mut file = File::from(fd);
                io::copy(&mut source, &mut file).map_err(write_err)?;
                set_meta_fd(file.as_fd(), &meta, self.policy).map_err(set_err)?;
                rustix::fs::futimens(&file, &meta.times)
                    .map_err(|e| set_err(SetMetaError { what: "times".into(), source: e.into() }))
            }
            Kind::Symlink => {
                let target = fs::read_link(&node.fs_path)
                    .map_err(|source| PackError::ReadLink { path: node.fs_path.clone(), source })?;
                self.clear(&parent, last, false).map_err(write_err)?;
                rustix::fs::symlinkat(target.as_os_str().as_bytes(), &*parent, last)
                    .map_err(|e| write_err(e.into()))?;
                set_meta_at(&parent, last, &meta, self.policy, false).map_err(set_err)
            }
            Kind::Char | Kind::Block | Kind::Fifo => {
                let file_type = match node.kind {
                    Kind::Char => FileType::CharacterDevice,
                    Kind::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                self.clear(&parent, last, false).map_err(write_err)?;
                rustix::fs::mknodat(&*parent, last, file_type, Mode::from_raw_mode(meta.mode), node.meta.rdev())
                    .map_err(|e| write_err(e.into()))?;
                set_meta_at(&parent, last, &meta, self.policy, true).map_err(set_err)
            }
            // Whiteouts are resolved by the merge and never reach here.
            Kind::Whiteout => Ok(()),
        }
    }

    /// The destination directory at `comps`, which the walk has already written.
    fn parent(&mut self, comps: &[&[u8]]) -> io::Result<Rc<OwnedFd>> {
        self.confined.dir(comps, false).map_err(|e| match e {
            ResolveError::Io(e) => e,
            ResolveError::Symlink(p) | ResolveError::NotDir(p) | ResolveError::Missing(p) => {
                io::Error::other(format!("parent {p} is not a directory written by this walk"))
            }
        })
    }

    /// Removes whatever is at `last` in `parent`, unless it is a directory
    /// and `keep_dir` is set; returns whether a directory was kept.
    fn clear(&mut self, parent: &OwnedFd, last: &[u8], keep_dir: bool) -> io::Result<bool> {
        let Some(st) = lstat_at(parent, last)? else {
            return Ok(false);
        };
        if keep_dir && is_dir(&st) {
            return Ok(true);
        }
        self.confined.invalidate();
        remove_at(parent, last, &st)?;
        Ok(false)
    }

    /// Owner, mode, times and xattrs of the source entry.
    fn meta(&self, entry: &Merged) -> Result<Meta, RootfsError> {
        let m = &entry.node.meta;
        let (xattrs, _opaque) = read_xattrs(&entry.node.fs_path)?;
        let ts = Timespec { tv_sec: m.mtime(), tv_nsec: m.mtime_nsec() };
        Ok(Meta {
            uid: m.uid(),
            gid: m.gid(),
            mode: m.mode() & 0o7777,
            times: Timestamps { last_access: ts, last_modification: ts },
            xattrs: xattrs.into_iter().collect(),
        })
    }

    /// Sets directory times, children before parents.
    fn finish(mut self) -> Result<(), RootfsError> {
        let times = std::mem::take(&mut self.dir_times);
        for (comps, ts) in times.iter().rev() {
            let refs: Vec<&[u8]> = comps.iter().map(Vec::as_slice).collect();
            let path = dest_path(self.dest, &refs.join(&b'/'));
            let set_err = |source| RootfsError::SetMetadata { path: path.clone(), what: "times".into(), source };
            let fd = self.parent(&refs).map_err(set_err)?;
            rustix::fs::futimens(&*fd, ts).map_err(|e| set_err(e.into()))?;
        }
        Ok(())
    }
}
