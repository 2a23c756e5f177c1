//! Confined extraction of an archive into a diff directory, on top of the base filesystem, on
//! the exporter's extraction core ([`rbuild_exporter::layer::untar`]).
//!
//! Entry paths are relative to the destination directory (`dest`, already created in the diff).
//! A parent path is resolved inside `dest` through the merged view (diff over base): symlinks
//! from the image are followed but never leave `dest` (Docker's untar runs chrooted there);
//! a symlink this archive created is never followed (`SymlinkParent`). The resolved directory
//! is then reached from the diff's fd one component at a time with `O_NOFOLLOW`, creating it
//! in the diff when only the base has it (with the base's attributes), and entries are made
//! with `*at` calls relative to it.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use rbuild_exporter::layer::untar::{
    components, finish_file, join, link_at, link_target, make_dir, make_file, make_node, make_symlink, read_meta,
    split_link_target, Confined, CreateError, LinkError, Meta, MetaError, MetaPolicy, NodeSpec, ResolveError,
};
use rustix::fs::{FileType, Timespec, Timestamps};
use tar::EntryType;

use super::{decoder, ArchiveError, ArchiveLimits, Format};
use crate::copy::FileWriter;
use crate::merged::{resolve_scoped, MergedView};

/// Entries keep the archive's owners; xattrs are best effort, as BuildKit's untar
/// (`BestEffortXattrs`).
const POLICY: MetaPolicy = MetaPolicy { chown: true, best_effort_xattrs: true };

/// Extracts the archive at `path` into `dest` (a directory of the rootfs that exists in the
/// writer's diff), keeping the archive's owners, modes, mtimes and links.
pub(crate) fn extract(
    path: &Path,
    format: Format,
    w: &FileWriter<'_>,
    dest: &Path,
    limits: &ArchiveLimits,
) -> Result<(), ArchiveError> {
    let file = File::open(path).map_err(ArchiveError::Read)?;
    let size = file.metadata().map_err(ArchiveError::Read)?.len();
    let confined = Confined::open(w.diff).map_err(ArchiveError::Read)?;
    let budget = limits.max_bytes.min(limits.ratio_floor.max(size.saturating_mul(limits.max_ratio)));
    let mut x = Extractor {
        confined,
        w,
        dest: dest.to_owned(),
        planted: HashSet::new(),
        dir_times: BTreeMap::new(),
        budget,
        written: 0,
        entries: 0,
        limits: *limits,
    };
    let mut archive = tar::Archive::new(decoder(file, format));
    for entry in archive.entries().map_err(ArchiveError::Read)? {
        x.apply(entry.map_err(ArchiveError::Read)?)?;
    }
    x.finish()
}

struct Extractor<'a> {
    /// The diff directory.
    confined: Confined,
    w: &'a FileWriter<'a>,
    /// The destination, relative to the rootfs.
    dest: PathBuf,
    /// Symlinks this archive created (relative to `dest`): never followed.
    planted: HashSet<PathBuf>,
    /// Directory mtimes (relative to the rootfs), set deepest first at the end.
    dir_times: BTreeMap<PathBuf, Timestamps>,
    budget: u64,
    written: u64,
    entries: u64,
    limits: ArchiveLimits,
}

enum Link {
    None,
    Target(PathBuf),
    Planted,
}

fn write_err(entry: &str) -> impl Fn(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Write { entry: entry.to_owned(), source }
}

/// Maps a failure to create an entry or apply its metadata.
fn entry_err(entry: &str) -> impl Fn(CreateError) -> ArchiveError + '_ {
    move |e| match e {
        CreateError::Create(source)
        | CreateError::SetMeta(rbuild_exporter::layer::untar::SetMetaError { source, .. }) => {
            ArchiveError::Write { entry: entry.to_owned(), source }
        }
    }
}

/// Maps a hardlink whose target cannot be linked.
fn link_err<'a>(entry: &'a str, target: &[u8]) -> impl Fn(LinkError) -> ArchiveError + 'a {
    let target = String::from_utf8_lossy(target).into_owned();
    move |e| {
        let (entry, target) = (entry.to_owned(), target.clone());
        match e {
            LinkError::Outside => ArchiveError::HardlinkOutside { entry, target },
            LinkError::Missing => ArchiveError::HardlinkTargetMissing { entry, target },
            LinkError::Directory => ArchiveError::HardlinkToDirectory { entry, target },
            LinkError::Io(source) => ArchiveError::Write { entry, source },
        }
    }
}

/// Maps a failure to read an entry's header or PAX records.
fn meta_err(entry: &str) -> impl Fn(MetaError) -> ArchiveError + '_ {
    move |e| match e {
        MetaError::Invalid(field) => ArchiveError::InvalidHeader { entry: entry.to_owned(), field },
        MetaError::Read(e) => ArchiveError::Read(e),
    }
}

fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// The normal components of a path relative to the rootfs, as bytes.
fn comps_of(rel: &Path) -> Vec<&[u8]> {
    rel.components()
        .filter_map(|c| match c {
            Component::Normal(c) => Some(c.as_bytes()),
            _ => None,
        })
        .collect()
}

impl Extractor<'_> {
    fn apply<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), ArchiveError> {
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(ArchiveError::TooLarge { limit: self.limits.max_entries, what: "entries" });
        }
        let comps = components(&raw).ok_or_else(|| ArchiveError::PathEscape { entry: name.clone() })?;
        // `./` itself: Docker leaves the existing destination alone.
        let Some((&last, parents)) = comps.split_last() else { return Ok(()) };
        let parent_rel = self.resolve(parents, &name)?;
        let parent = self.open_dir(&self.dest.join(&parent_rel), true, &name)?;
        let rel = parent_rel.join(OsStr::from_bytes(last));
        match kind {
            EntryType::Directory => {
                let meta = read_meta(&mut entry).map_err(meta_err(&name))?;
                let exists = self.clear(&parent, last, &rel, true, &name)?;
                make_dir(parent.as_fd(), last, exists, &meta, POLICY).map_err(entry_err(&name))?;
                self.dir_times.insert(self.dest.join(&rel), meta.times);
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let meta = read_meta(&mut entry).map_err(meta_err(&name))?;
                self.clear(&parent, last, &rel, false, &name)?;
                let mut file = make_file(parent.as_fd(), last).map_err(write_err(&name))?;
                self.copy_data(&mut entry, &mut file, &name)?;
                finish_file(&file, &meta, POLICY).map_err(|e| write_err(&name)(e.source))?;
            }
            EntryType::Symlink => {
                let meta = read_meta(&mut entry).map_err(meta_err(&name))?;
                let target = link_target(&entry).map_err(meta_err(&name))?;
                self.clear(&parent, last, &rel, false, &name)?;
                make_symlink(&parent, last, &target, &meta, POLICY).map_err(entry_err(&name))?;
                self.planted.insert(rel);
            }
            EntryType::Link => self.hardlink(&entry, &name, &parent, last, &rel)?,
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let meta = read_meta(&mut entry).map_err(meta_err(&name))?;
                let node = NodeSpec::read(entry.header()).map_err(meta_err(&name))?;
                if node.file_type == FileType::CharacterDevice && node.major == 0 && node.minor == 0 {
                    // In a diff directory this node *is* a whiteout: it would delete the path
                    // from the image instead of creating it.
                    return Err(ArchiveError::UnsupportedEntry { entry: name, kind: "character device 0:0".into() });
                }
                self.clear(&parent, last, &rel, false, &name)?;
                make_node(&parent, last, &node, &meta, POLICY).map_err(entry_err(&name))?;
            }
            other => {
                return Err(ArchiveError::UnsupportedEntry {
                    entry: name,
                    kind: format!("{:?}", char::from(other.as_byte())),
                });
            }
        }
        Ok(())
    }

    /// Copies an entry's data, charging it to the decompression budget.
    fn copy_data(&mut self, entry: &mut impl Read, out: &mut File, name: &str) -> Result<(), ArchiveError> {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ArchiveError::Read(e)),
            };
            self.written += n as u64;
            if self.written > self.budget {
                return Err(ArchiveError::TooLarge { limit: self.budget, what: "bytes written" });
            }
            io::Write::write_all(out, &buf[..n]).map_err(write_err(name))?;
        }
    }

    /// Resolves `comps` (relative to `dest`) inside `dest`, following the image's symlinks
    /// (also a final one) but never one this archive planted.
    fn resolve(&self, comps: &[&[u8]], name: &str) -> Result<PathBuf, ArchiveError> {
        let p: PathBuf = comps.iter().map(|c| OsStr::from_bytes(c)).collect();
        let mut planted = None;
        let resolved = resolve_scoped(&p, true, |rel| match self.readlink(rel)? {
            Link::Target(t) => Ok(Some(t)),
            Link::None => Ok(None),
            Link::Planted => {
                planted = Some(rel.to_owned());
                Err(io::Error::from_raw_os_error(libc::ELOOP))
            }
        });
        match (resolved, planted) {
            (Ok(p), _) => Ok(p),
            (Err(_), Some(link)) => {
                Err(ArchiveError::SymlinkParent { entry: name.to_owned(), parent: link.display().to_string() })
            }
            (Err(e), None) => Err(write_err(name)(e)),
        }
    }

    /// What is at `rel` (relative to `dest`) in the merged view, as far as symlinks go.
    fn readlink(&self, rel: &Path) -> io::Result<Link> {
        let full = self.dest.join(rel);
        let host = self.w.diff.join(&full);
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                if self.planted.contains(rel) {
                    return Ok(Link::Planted);
                }
                Ok(Link::Target(std::fs::read_link(&host)?))
            }
            Ok(_) => Ok(Link::None),
            Err(e) if is_not_found(&e) => match self.w.base.lstat(&full)? {
                Some(f) if f.meta.file_type().is_symlink() => Ok(Link::Target(std::fs::read_link(&f.host_path)?)),
                _ => Ok(Link::None),
            },
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(Link::None),
            Err(e) => Err(e),
        }
    }

    /// Opens the directory `rel` (relative to the rootfs) in the diff without following any
    /// symlink. With `create`, a directory only the base has is created with the base's
    /// attributes, and one nobody has with 0755 root:root.
    fn open_dir(&mut self, rel: &Path, create: bool, name: &str) -> Result<Rc<OwnedFd>, ArchiveError> {
        let comps = comps_of(rel);
        let opened = if create {
            let (base, dir_times) = (self.w.base, &mut self.dir_times);
            self.confined.dir_creating(&comps, |parent, missing| create_dir(base, dir_times, parent, missing))
        } else {
            self.confined.dir(&comps, false)
        };
        opened.map_err(|e| match e {
            ResolveError::Symlink(parent) => ArchiveError::SymlinkParent { entry: name.to_owned(), parent },
            ResolveError::Missing(parent) | ResolveError::NotDir(parent) => {
                ArchiveError::ParentNotDirectory { entry: name.to_owned(), parent }
            }
            ResolveError::Io(source) => ArchiveError::Write { entry: name.to_owned(), source },
        })
    }

    /// Removes what the diff has at `last` in `parent` unless it is a directory and `keep_dir`;
    /// returns whether a directory was kept.
    fn clear(
        &mut self,
        parent: &OwnedFd,
        last: &[u8],
        rel: &Path,
        keep_dir: bool,
        name: &str,
    ) -> Result<bool, ArchiveError> {
        if self.confined.clear(parent, last, keep_dir).map_err(write_err(name))? {
            return Ok(true);
        }
        self.planted.retain(|p| !p.starts_with(rel));
        let full = self.dest.join(rel);
        self.dir_times.retain(|p, _| !p.starts_with(&full));
        Ok(false)
    }

    fn hardlink<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        name: &str,
        parent: &OwnedFd,
        last: &[u8],
        rel: &Path,
    ) -> Result<(), ArchiveError> {
        let target = link_target(entry).map_err(meta_err(name))?;
        let link_err = link_err(name, &target);
        let (tparents, tlast) = split_link_target(&target).map_err(&link_err)?;
        let tparent_rel = match self.resolve(&tparents, name) {
            Err(ArchiveError::SymlinkParent { .. }) => return Err(link_err(LinkError::Outside)),
            resolved => resolved?,
        };
        if tparent_rel.join(OsStr::from_bytes(tlast)) == rel {
            return Ok(()); // a link to itself changes nothing
        }
        let tdir = self.confined.link_source(&comps_of(&self.dest.join(&tparent_rel)), tlast).map_err(&link_err)?;
        self.clear(parent, last, rel, false, name)?;
        link_at(&tdir, tlast, parent, last).map_err(write_err(name))
    }

    /// Sets directory mtimes, deepest first, reaching each without following symlinks.
    fn finish(mut self) -> Result<(), ArchiveError> {
        let times = std::mem::take(&mut self.dir_times);
        for (rel, ts) in times.iter().rev() {
            let shown = rel.display().to_string();
            let Ok(fd) = self.open_dir(rel, false, &shown) else { continue };
            rustix::fs::futimens(&*fd, ts).map_err(|e| write_err(&shown)(e.into()))?;
        }
        Ok(())
    }
}

/// Makes a parent directory the archive does not list, as the last of `comps` in `parent`:
/// with the base's owner, mode and mtime when only the base has it, else 0755 root:root.
fn create_dir(
    base: &MergedView,
    dir_times: &mut BTreeMap<PathBuf, Timestamps>,
    parent: BorrowedFd<'_>,
    comps: &[&[u8]],
) -> Result<OwnedFd, ResolveError> {
    let cur: PathBuf = comps.iter().map(|c| OsStr::from_bytes(c)).collect();
    let (meta, from_base) = match base.lstat(&cur).map_err(ResolveError::Io)? {
        Some(f) if f.meta.is_dir() => {
            let m = &f.meta;
            let t = Timespec { tv_sec: m.mtime(), tv_nsec: m.mtime_nsec() };
            let times = Timestamps { last_access: t, last_modification: t };
            (Meta { uid: m.uid(), gid: m.gid(), mode: m.mode() & 0o7777, times, xattrs: Vec::new() }, true)
        }
        Some(_) => return Err(ResolveError::NotDir(join(comps))),
        None => {
            // Times are only applied (at the end) to directories the base had.
            let t = Timespec { tv_sec: 0, tv_nsec: 0 };
            let times = Timestamps { last_access: t, last_modification: t };
            (Meta { uid: 0, gid: 0, mode: 0o755, times, xattrs: Vec::new() }, false)
        }
    };
    let last = comps.last().copied().unwrap_or_default();
    let fd = make_dir(parent, last, false, &meta, POLICY).map_err(|e| match e {
        CreateError::Create(e) => ResolveError::Io(e),
        CreateError::SetMeta(e) => ResolveError::Io(e.source),
    })?;
    if from_base {
        dir_times.insert(cur, meta.times);
    }
    Ok(fd)
}
