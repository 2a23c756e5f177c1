//! Confined extraction of an archive into a diff directory, on top of the base filesystem.
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
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid, XattrFlags};
use rustix::io::Errno;
use tar::EntryType;

use super::{decoder, ArchiveError, ArchiveLimits, Format};
use crate::copy::FileWriter;
use crate::merged::resolve_scoped;

const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

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
    let root = rustix::fs::open(w.diff, DIR_FLAGS, Mode::empty()).map_err(|e| ArchiveError::Read(e.into()))?;
    let budget = limits.max_bytes.min(limits.ratio_floor.max(size.saturating_mul(limits.max_ratio)));
    let mut x = Extractor {
        root: Rc::new(root),
        w,
        dest: dest.to_owned(),
        planted: HashSet::new(),
        dir_times: BTreeMap::new(),
        last: None,
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
    root: Rc<OwnedFd>,
    w: &'a FileWriter<'a>,
    /// The destination, relative to the rootfs.
    dest: PathBuf,
    /// Symlinks this archive created (relative to `dest`): never followed.
    planted: HashSet<PathBuf>,
    /// Directory mtimes (relative to the rootfs), set deepest first at the end.
    dir_times: BTreeMap<PathBuf, Timestamps>,
    /// The last parent directory opened (consecutive entries mostly share it).
    last: Option<(PathBuf, Rc<OwnedFd>)>,
    budget: u64,
    written: u64,
    entries: u64,
    limits: ArchiveLimits,
}

struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    times: Timestamps,
    xattrs: Vec<(String, Vec<u8>)>,
}

enum Link {
    None,
    Target(PathBuf),
    Planted,
}

/// Normal components of an archive path; `None` when one is `..` (a leading `/` and `.` are
/// dropped, as GNU tar and Docker do).
fn components(path: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    for comp in path.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

fn write_err(entry: &str) -> impl Fn(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Write { entry: entry.to_owned(), source }
}

fn errno_err(entry: &str) -> impl Fn(Errno) -> ArchiveError + '_ {
    move |e| ArchiveError::Write { entry: entry.to_owned(), source: e.into() }
}

fn invalid(entry: &str, field: &'static str) -> ArchiveError {
    ArchiveError::InvalidHeader { entry: entry.to_owned(), field }
}

fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
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
        let parent_rel = self.resolve(parents, &name, false)?;
        let parent = self.open_dir(&self.dest.join(&parent_rel), true, &name)?;
        let rel = parent_rel.join(OsStr::from_bytes(last));
        match kind {
            EntryType::Directory => {
                let meta = read_meta(&mut entry, &name)?;
                if !self.clear(&parent, last, &rel, true, &name)? {
                    rustix::fs::mkdirat(&*parent, last, Mode::from_raw_mode(0o700)).map_err(errno_err(&name))?;
                }
                let fd = rustix::fs::openat(&*parent, last, DIR_FLAGS, Mode::empty()).map_err(errno_err(&name))?;
                set_meta_fd(&fd, &meta, &name)?;
                self.dir_times.insert(self.dest.join(&rel), meta.times);
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let meta = read_meta(&mut entry, &name)?;
                self.clear(&parent, last, &rel, false, &name)?;
                let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let fd =
                    rustix::fs::openat(&*parent, last, flags, Mode::from_raw_mode(0o600)).map_err(errno_err(&name))?;
                let mut file = File::from(fd);
                self.copy_data(&mut entry, &mut file, &name)?;
                set_meta_fd(&file, &meta, &name)?;
                rustix::fs::futimens(&file, &meta.times).map_err(errno_err(&name))?;
            }
            EntryType::Symlink => {
                let meta = read_meta(&mut entry, &name)?;
                let target = entry.link_name_bytes().ok_or_else(|| invalid(&name, "link target"))?.into_owned();
                self.clear(&parent, last, &rel, false, &name)?;
                rustix::fs::symlinkat(target.as_slice(), &*parent, last).map_err(errno_err(&name))?;
                set_meta_at(&parent, last, &meta, &name, false)?;
                self.planted.insert(rel);
            }
            EntryType::Link => self.hardlink(&entry, &name, &parent, last, &rel)?,
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let meta = read_meta(&mut entry, &name)?;
                let (ft, dev) = match kind {
                    EntryType::Fifo => (FileType::Fifo, 0),
                    _ => {
                        let number = |v: io::Result<Option<u32>>| {
                            v.ok().flatten().ok_or_else(|| invalid(&name, "device number"))
                        };
                        let (major, minor) =
                            (number(entry.header().device_major())?, number(entry.header().device_minor())?);
                        if kind == EntryType::Char && major == 0 && minor == 0 {
                            // In a diff directory this node *is* a whiteout: it would delete the
                            // path from the image instead of creating it.
                            return Err(ArchiveError::UnsupportedEntry {
                                entry: name,
                                kind: "character device 0:0".into(),
                            });
                        }
                        let ft =
                            if kind == EntryType::Char { FileType::CharacterDevice } else { FileType::BlockDevice };
                        (ft, rustix::fs::makedev(major, minor))
                    }
                };
                self.clear(&parent, last, &rel, false, &name)?;
                rustix::fs::mknodat(&*parent, last, ft, Mode::from_raw_mode(meta.mode), dev)
                    .map_err(errno_err(&name))?;
                set_meta_at(&parent, last, &meta, &name, true)?;
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
    fn resolve(&self, comps: &[&[u8]], name: &str, hardlink: bool) -> Result<PathBuf, ArchiveError> {
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
            (Err(_), Some(link)) if hardlink => {
                Err(ArchiveError::HardlinkOutside { entry: name.to_owned(), target: link.display().to_string() })
            }
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
        if let Some((p, fd)) = &self.last {
            if p == rel {
                return Ok(Rc::clone(fd));
            }
        }
        let mut fd = Rc::clone(&self.root);
        let mut cur = PathBuf::new();
        for comp in rel.components() {
            let Component::Normal(c) = comp else { continue };
            cur.push(c);
            let shown = || cur.display().to_string();
            let next = match rustix::fs::openat(&*fd, c, DIR_FLAGS, Mode::empty()) {
                Ok(next) => next,
                Err(Errno::NOENT) if create => self.create_dir(&fd, c, &cur, name)?,
                Err(Errno::NOENT) => {
                    return Err(ArchiveError::ParentNotDirectory { entry: name.to_owned(), parent: shown() })
                }
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    let st = rustix::fs::statat(&*fd, c, AtFlags::SYMLINK_NOFOLLOW).map_err(errno_err(name))?;
                    return Err(if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                        ArchiveError::SymlinkParent { entry: name.to_owned(), parent: shown() }
                    } else {
                        ArchiveError::ParentNotDirectory { entry: name.to_owned(), parent: shown() }
                    });
                }
                Err(e) => return Err(errno_err(name)(e)),
            };
            fd = Rc::new(next);
        }
        self.last = Some((rel.to_owned(), Rc::clone(&fd)));
        Ok(fd)
    }

    fn create_dir(&mut self, parent: &OwnedFd, c: &OsStr, cur: &Path, name: &str) -> Result<OwnedFd, ArchiveError> {
        let base = self.w.base.lstat(cur).map_err(write_err(name))?;
        let (uid, gid, mode, times) = match &base {
            Some(f) if f.meta.is_dir() => {
                let m = &f.meta;
                let t = Timespec { tv_sec: m.mtime(), tv_nsec: m.mtime_nsec() };
                (m.uid(), m.gid(), m.mode() & 0o7777, Some(Timestamps { last_access: t, last_modification: t }))
            }
            Some(_) => {
                return Err(ArchiveError::ParentNotDirectory {
                    entry: name.to_owned(),
                    parent: cur.display().to_string(),
                });
            }
            None => (0, 0, 0o755, None),
        };
        rustix::fs::mkdirat(parent, c, Mode::from_raw_mode(0o700)).map_err(errno_err(name))?;
        let fd = rustix::fs::openat(parent, c, DIR_FLAGS, Mode::empty()).map_err(errno_err(name))?;
        rustix::fs::fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).map_err(errno_err(name))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)).map_err(errno_err(name))?;
        if let Some(t) = times {
            self.dir_times.insert(cur.to_owned(), t);
        }
        Ok(fd)
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
        let st = match rustix::fs::statat(parent, last, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(false),
            Err(e) => return Err(errno_err(name)(e)),
        };
        let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
        if keep_dir && is_dir {
            return Ok(true);
        }
        self.last = None;
        remove_at(parent, last, is_dir).map_err(write_err(name))?;
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
        let target = entry.link_name_bytes().ok_or_else(|| invalid(name, "link target"))?.into_owned();
        let shown = String::from_utf8_lossy(&target).into_owned();
        let outside = || ArchiveError::HardlinkOutside { entry: name.to_owned(), target: shown.clone() };
        let missing = || ArchiveError::HardlinkTargetMissing { entry: name.to_owned(), target: shown.clone() };
        let tcomps = components(&target).ok_or_else(outside)?;
        let Some((&tlast, tparents)) = tcomps.split_last() else {
            return Err(ArchiveError::HardlinkToDirectory { entry: name.to_owned(), target: shown });
        };
        let tparent_rel = self.resolve(tparents, name, true)?;
        let trel = tparent_rel.join(OsStr::from_bytes(tlast));
        if trel == rel {
            return Ok(()); // a link to itself changes nothing
        }
        let tdir = match self.open_dir(&self.dest.join(&tparent_rel), false, name) {
            Ok(fd) => fd,
            Err(ArchiveError::SymlinkParent { .. }) => return Err(outside()),
            Err(ArchiveError::ParentNotDirectory { .. }) => return Err(missing()),
            Err(e) => return Err(e),
        };
        match rustix::fs::statat(&*tdir, tlast, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                return Err(ArchiveError::HardlinkToDirectory { entry: name.to_owned(), target: shown });
            }
            Ok(_) => {}
            Err(Errno::NOENT) => return Err(missing()),
            Err(e) => return Err(errno_err(name)(e)),
        }
        self.clear(parent, last, rel, false, name)?;
        // No AT_SYMLINK_FOLLOW: linking a symlink links the symlink itself.
        rustix::fs::linkat(&*tdir, tlast, parent, last, AtFlags::empty()).map_err(errno_err(name))
    }

    /// Sets directory mtimes, deepest first, reaching each without following symlinks.
    fn finish(mut self) -> Result<(), ArchiveError> {
        let times = std::mem::take(&mut self.dir_times);
        for (rel, ts) in times.iter().rev() {
            let shown = rel.display().to_string();
            let Ok(fd) = self.open_dir(rel, false, &shown) else { continue };
            rustix::fs::futimens(&*fd, ts).map_err(errno_err(&shown))?;
        }
        Ok(())
    }
}

/// Removes `name` in `dir`, recursively for a directory, never following a symlink.
fn remove_at(dir: &OwnedFd, name: &[u8], is_dir: bool) -> io::Result<()> {
    if !is_dir {
        return rustix::fs::unlinkat(dir, name, AtFlags::empty()).map_err(Into::into);
    }
    let child = rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())?;
    let mut names = Vec::new();
    let mut listing = rustix::fs::Dir::read_from(child.as_fd())?;
    while let Some(entry) = listing.read() {
        let entry = entry?;
        let n = entry.file_name().to_bytes().to_vec();
        if n != b"." && n != b".." {
            names.push((n, entry.file_type() == FileType::Directory));
        }
    }
    for (n, d) in names {
        remove_at(&child, &n, d)?;
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(Into::into)
}

/// Owner, mode, times and xattrs of an entry; blank numeric fields read as 0 (as Go's
/// `archive/tar` reads them).
fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>, name: &str) -> Result<Meta, ArchiveError> {
    let header = entry.header();
    let old = header.as_old();
    let lenient = |v: io::Result<u64>, raw: &[u8]| match v {
        Ok(v) => Some(v),
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Some(0),
        Err(_) => None,
    };
    let id = |v, raw, field| {
        lenient(v, raw)
            .and_then(|v| u32::try_from(v).ok())
            .filter(|&v| v != u32::MAX)
            .ok_or_else(|| invalid(name, field))
    };
    let uid = id(header.uid(), &old.uid[..], "uid")?;
    let gid = id(header.gid(), &old.gid[..], "gid")?;
    let mode = lenient(header.mode().map(u64::from), &old.mode).ok_or_else(|| invalid(name, "mode"))? as u32 & 0o7777;
    let mut mtime = (
        lenient(header.mtime(), &old.mtime)
            .and_then(|t| i64::try_from(t).ok())
            .ok_or_else(|| invalid(name, "mtime"))?,
        0,
    );
    let mut xattrs = Vec::new();
    if let Some(pax) = entry.pax_extensions().map_err(ArchiveError::Read)? {
        for record in pax {
            let record = record.map_err(|_| invalid(name, "PAX record"))?;
            let Ok(key) = record.key() else { continue };
            if key == "mtime" {
                mtime = parse_pax_time(record.value_bytes()).ok_or_else(|| invalid(name, "PAX mtime"))?;
            } else if let Some(x) = key.strip_prefix("SCHILY.xattr.") {
                // Overlay's own xattrs would change what the layer means (opaque directories).
                if !x.is_empty() && !x.starts_with("trusted.overlay.") && !x.starts_with("user.overlay.") {
                    xattrs.push((x.to_owned(), record.value_bytes().to_vec()));
                }
            }
        }
    }
    let t = Timespec { tv_sec: mtime.0, tv_nsec: mtime.1 };
    Ok(Meta { uid, gid, mode, times: Timestamps { last_access: t, last_modification: t }, xattrs })
}

/// A PAX time (`-?\d+(\.\d*)?`) as (seconds, nanoseconds).
fn parse_pax_time(value: &[u8]) -> Option<(i64, i64)> {
    let text = std::str::from_utf8(value).ok()?;
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let negative = secs.starts_with('-');
    let secs: i64 = secs.parse().ok()?;
    let mut nanos = 0i64;
    for (i, c) in frac.chars().enumerate() {
        let digit = i64::from(c.to_digit(10)?);
        if i < 9 {
            nanos += digit * 10i64.pow(8 - i as u32);
        }
    }
    Some(if negative && nanos > 0 { (secs - 1, 1_000_000_000 - nanos) } else { (secs, nanos) })
}

/// Owner, then mode (chown clears setuid), then xattrs, on an open file or directory.
fn set_meta_fd(fd: &impl AsFd, meta: &Meta, name: &str) -> Result<(), ArchiveError> {
    rustix::fs::fchown(fd, Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid))).map_err(errno_err(name))?;
    rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode)).map_err(errno_err(name))?;
    for (key, value) in &meta.xattrs {
        // Best effort, as BuildKit's untar (`BestEffortXattrs`).
        let _ = rustix::fs::fsetxattr(fd, key.as_str(), value, XattrFlags::empty());
    }
    Ok(())
}

/// Owner (and mode, for nodes) and times of a symlink or node, by name in `parent`.
fn set_meta_at(parent: &OwnedFd, last: &[u8], meta: &Meta, name: &str, chmod: bool) -> Result<(), ArchiveError> {
    let (uid, gid) = (Uid::from_raw(meta.uid), Gid::from_raw(meta.gid));
    rustix::fs::chownat(parent, last, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW).map_err(errno_err(name))?;
    if chmod {
        // A node we just created, not a symlink, so following is harmless.
        rustix::fs::chmodat(parent, last, Mode::from_raw_mode(meta.mode), AtFlags::empty()).map_err(errno_err(name))?;
    }
    rustix::fs::utimensat(parent, last, &meta.times, AtFlags::SYMLINK_NOFOLLOW).map_err(errno_err(name))
}
