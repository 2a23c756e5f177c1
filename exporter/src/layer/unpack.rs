//! Layer blob → overlay-format directory. The archive is hostile input: every
//! path is cleaned (`..` rejected), every directory is reached through
//! [`Confined`] without following symlinks, and hardlinks may only point at
//! earlier entries inside the destination.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;

use oci_spec::image::Digest;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timestamps, XattrFlags};
use tar::EntryType;

use super::apply;
use super::error::UnpackError;
use super::meta::{invalid, link_target, read_meta, Meta};
use super::resolve::{components, is_dir, join, lstat_at, remove_at, Confined, ResolveError, DIR_FLAGS};
use super::{OPAQUE_MARKER, OPAQUE_XATTR, WHITEOUT_PREFIX};
use crate::hash::{ExactReader, HashingReader};

/// Options for [`unpack`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnpackOptions {
    /// Give entries the archive's numeric owners (needs root). Default true.
    pub chown: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self { chown: true }
    }
}

impl UnpackOptions {
    /// Sets whether owners are applied.
    pub fn chown(&mut self, chown: bool) -> &mut Self {
        self.chown = chown;
        self
    }
}

/// What [`unpack`] read and applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackedLayer {
    /// sha256 of the uncompressed tar stream (compare with the config's diff id).
    pub diff_id: Digest,
    /// sha256 of the blob bytes as read (compare with the manifest digest).
    pub digest: Digest,
    /// Number of blob bytes read.
    pub size: u64,
    /// Number of tar entries applied (PAX headers not counted).
    pub entries: usize,
}

/// Applies a layer blob (gzip or zstd detected by its magic bytes, else plain tar)
/// to the empty directory `dest`, in overlayfs upper-dir format: `.wh.NAME`
/// becomes a character device 0:0 `NAME`, `.wh..wh..opq` sets
/// `trusted.overlay.opaque=y` on its directory. Owners, modes (setuid
/// included), xattrs (except overlay's own) and mtimes are applied;
/// directory mtimes are set last. A later entry replaces an earlier one at the
/// same path (directories merge), as docker does.
///
/// The whole blob is read, so `digest` covers trailing bytes too; the caller
/// compares `digest`/`diff_id` with what it expected. Creating device nodes
/// and applying owners and `trusted.*` xattrs needs root. On error `dest` is
/// left partly written (never anything outside it): discard it.
pub fn unpack<R: Read>(reader: R, dest: &Path, opts: &UnpackOptions) -> Result<UnpackedLayer, UnpackError> {
    let read_err = |source| UnpackError::ReadArchive { source };
    let open_err = |source| UnpackError::OpenDest { path: dest.to_path_buf(), source };
    let confined = Confined::open(dest).map_err(open_err)?;
    if !confined.is_empty().map_err(open_err)? {
        return Err(UnpackError::DestNotEmpty { path: dest.to_path_buf() });
    }

    let mut raw = HashingReader::new(reader);
    let (diff_id, entries) = {
        let mut buffered = BufReader::with_capacity(64 * 1024, &mut raw);
        let head = buffered.fill_buf().map_err(read_err)?;
        let format = sniff(head)?;
        let result = {
            let decoded: Box<dyn Read + '_> = match format {
                Format::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut buffered)),
                Format::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(&mut buffered).map_err(read_err)?),
                Format::Tar => Box::new(&mut buffered),
            };
            let mut tar_stream = HashingReader::new(decoded);
            let mut applier = Applier { confined, opts, dir_times: BTreeMap::new(), entries: 0 };
            {
                let mut archive = tar::Archive::new(&mut tar_stream);
                for entry in archive.entries().map_err(read_err)? {
                    applier.apply(entry.map_err(read_err)?)?;
                }
            }
            // The end-of-archive blocks and any record padding are part of the diff id.
            io::copy(&mut tar_stream, &mut io::sink()).map_err(read_err)?;
            let entries = applier.finish()?;
            (tar_stream.finish().0, entries)
        };
        io::copy(&mut buffered, &mut io::sink()).map_err(read_err)?;
        result
    };
    let (digest, size) = raw.finish();
    Ok(UnpackedLayer { diff_id, digest, size, entries })
}

/// How a blob is encoded, from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Tar,
    Gzip,
    Zstd,
}

fn sniff(head: &[u8]) -> Result<Format, UnpackError> {
    const MAGIC: [(&[u8], Result<Format, &str>); 5] = [
        (&[0x1f, 0x8b], Ok(Format::Gzip)),
        (&[0x28, 0xb5, 0x2f, 0xfd], Ok(Format::Zstd)),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0], Err("xz")),
        (b"BZh", Err("bzip2")),
        (&[0x04, 0x22, 0x4d, 0x18], Err("lz4")),
    ];
    for (magic, format) in MAGIC {
        if head.starts_with(magic) {
            return format.map_err(|format| UnpackError::UnsupportedCompression { format });
        }
    }
    Ok(Format::Tar)
}

struct Applier<'a> {
    confined: Confined,
    opts: &'a UnpackOptions,
    /// Directory mtimes, applied deepest first once everything is written.
    dir_times: BTreeMap<Vec<Vec<u8>>, Timestamps>,
    entries: usize,
}

impl Applier<'_> {
    fn apply<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw_path = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw_path).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let comps = components(&raw_path).ok_or_else(|| UnpackError::PathEscape { entry: name.clone() })?;
        self.entries += 1;
        let Some((&last, parents)) = comps.split_last() else {
            return self.apply_root(&mut entry, &name, kind);
        };

        if let Some(target) = last.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            let parent = self.dir(&name, parents, true)?;
            if last == OPAQUE_MARKER.as_bytes() {
                // In a user namespace (rootless) only the user namespace is writable, and
                // overlay mounts there (`userxattr`) read that one.
                return match rustix::fs::fsetxattr(&*parent, OPAQUE_XATTR, b"y", XattrFlags::empty()) {
                    Err(rustix::io::Errno::PERM) => {
                        rustix::fs::fsetxattr(&*parent, "user.overlay.opaque", b"y", XattrFlags::empty())
                    }
                    other => other,
                }
                .map_err(|e| set_err(&name, "opaque marker", e.into()));
            }
            if target.starts_with(WHITEOUT_PREFIX.as_bytes()) {
                return Ok(()); // other `.wh..wh.` names are aufs bookkeeping; docker skips them too
            }
            match target {
                b"" => return Err(UnpackError::InvalidWhiteout { entry: name }),
                b"." | b".." => return Err(UnpackError::PathEscape { entry: name }),
                _ => {}
            }
            let meta = read_meta(&mut entry, &name)?;
            self.clear(&parent, target, &name, false)?;
            rustix::fs::mknodat(&*parent, target, FileType::CharacterDevice, Mode::empty(), 0)
                .map_err(|e| create_err(&name, e.into()))?;
            return rustix::fs::utimensat(&*parent, target, &meta.times, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| set_err(&name, "times", e.into()));
        }

        let parent = self.dir(&name, parents, true)?;
        match kind {
            EntryType::Directory => {
                let meta = read_meta(&mut entry, &name)?;
                if !self.clear(&parent, last, &name, true)? {
                    rustix::fs::mkdirat(&*parent, last, Mode::from_raw_mode(0o700))
                        .map_err(|e| create_err(&name, e.into()))?;
                }
                let fd = rustix::fs::openat(&*parent, last, DIR_FLAGS, Mode::empty())
                    .map_err(|e| create_err(&name, e.into()))?;
                self.set_meta_fd(fd.as_fd(), &meta, &name)?;
                self.dir_times.insert(comps.iter().map(|c| c.to_vec()).collect(), meta.times);
                Ok(())
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let meta = read_meta(&mut entry, &name)?;
                self.clear(&parent, last, &name, false)?;
                let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let fd = rustix::fs::openat(&*parent, last, flags, Mode::from_raw_mode(0o600))
                    .map_err(|e| create_err(&name, e.into()))?;
                let mut file = File::from(fd);
                let size = entry.size();
                let mut data = ExactReader::new(&mut entry, size);
                if let Err(source) = io::copy(&mut data, &mut file) {
                    return Err(if data.read_failed {
                        UnpackError::ReadArchive { source }
                    } else {
                        UnpackError::WriteFile { entry: name, source }
                    });
                }
                self.set_meta_fd(file.as_fd(), &meta, &name)?;
                rustix::fs::futimens(&file, &meta.times).map_err(|e| set_err(&name, "times", e.into()))
            }
            EntryType::Symlink => {
                let meta = read_meta(&mut entry, &name)?;
                let target = link_target(&entry, &name)?;
                self.clear(&parent, last, &name, false)?;
                rustix::fs::symlinkat(target.as_slice(), &*parent, last).map_err(|e| create_err(&name, e.into()))?;
                self.set_meta_at(&parent, last, &meta, &name, false)
            }
            EntryType::Link => self.hardlink(&entry, &name, &comps, &parent),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let meta = read_meta(&mut entry, &name)?;
                let (file_type, dev) = match kind {
                    EntryType::Fifo => (FileType::Fifo, 0),
                    _ => {
                        let number = |v: io::Result<Option<u32>>| {
                            v.ok().flatten().ok_or_else(|| invalid(&name, "device number"))
                        };
                        let major = number(entry.header().device_major())?;
                        let minor = number(entry.header().device_minor())?;
                        let ft =
                            if kind == EntryType::Char { FileType::CharacterDevice } else { FileType::BlockDevice };
                        (ft, rustix::fs::makedev(major, minor))
                    }
                };
                self.clear(&parent, last, &name, false)?;
                rustix::fs::mknodat(&*parent, last, file_type, Mode::from_raw_mode(meta.mode), dev)
                    .map_err(|e| create_err(&name, e.into()))?;
                self.set_meta_at(&parent, last, &meta, &name, true)
            }
            other => Err(UnpackError::UnsupportedEntry { entry: name, kind: char::from(other.as_byte()) }),
        }
    }

    /// A `./` entry: its metadata applies to the destination itself.
    fn apply_root<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
        kind: EntryType,
    ) -> Result<(), UnpackError> {
        if kind != EntryType::Directory {
            return Err(invalid(name, "path (a non-directory names the root)"));
        }
        let meta = read_meta(entry, name)?;
        let root = self.confined.root();
        self.set_meta_fd(root.as_fd(), &meta, name)?;
        self.dir_times.insert(Vec::new(), meta.times);
        Ok(())
    }

    fn hardlink<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        name: &str,
        comps: &[&[u8]],
        parent: &Rc<OwnedFd>,
    ) -> Result<(), UnpackError> {
        let target = link_target(entry, name)?;
        let target_name = String::from_utf8_lossy(&target).into_owned();
        let outside = || UnpackError::HardlinkOutside { entry: name.to_owned(), target: target_name.clone() };
        let missing = || UnpackError::HardlinkTargetMissing { entry: name.to_owned(), target: target_name.clone() };
        let tcomps = components(&target).ok_or_else(outside)?;
        let Some((&tlast, tparents)) = tcomps.split_last() else {
            return Err(UnpackError::HardlinkToDirectory { entry: name.to_owned(), target: target_name });
        };
        if tcomps == comps {
            return Ok(()); // a link to itself changes nothing
        }
        let tdir = self.confined.dir(tparents, false).map_err(|e| match e {
            ResolveError::Symlink(_) => outside(),
            ResolveError::Missing(_) | ResolveError::NotDir(_) => missing(),
            ResolveError::Io(source) => create_err(name, source),
        })?;
        match lstat_at(&*tdir, tlast).map_err(|e| create_err(name, e))? {
            None => return Err(missing()),
            Some(st) if is_dir(&st) => {
                return Err(UnpackError::HardlinkToDirectory { entry: name.to_owned(), target: target_name })
            }
            Some(_) => {}
        }
        let last = comps[comps.len() - 1];
        self.clear(parent, last, name, false)?;
        // No AT_SYMLINK_FOLLOW: linking a symlink links the symlink itself.
        rustix::fs::linkat(&*tdir, tlast, &**parent, last, AtFlags::empty()).map_err(|e| create_err(name, e.into()))
    }

    fn dir(&mut self, name: &str, comps: &[&[u8]], create: bool) -> Result<Rc<OwnedFd>, UnpackError> {
        self.confined.dir(comps, create).map_err(|e| match e {
            ResolveError::Symlink(parent) => UnpackError::SymlinkParent { entry: name.to_owned(), parent },
            ResolveError::NotDir(parent) | ResolveError::Missing(parent) => {
                UnpackError::ParentNotDirectory { entry: name.to_owned(), parent }
            }
            ResolveError::Io(source) => create_err(name, source),
        })
    }

    /// Removes whatever is at `last` in `parent`, unless it is a directory and
    /// `keep_dir` is set; returns whether a directory was kept.
    fn clear(&mut self, parent: &OwnedFd, last: &[u8], name: &str, keep_dir: bool) -> Result<bool, UnpackError> {
        let replace_err = |source| UnpackError::Replace { entry: name.to_owned(), source };
        let Some(st) = lstat_at(parent, last).map_err(replace_err)? else {
            return Ok(false);
        };
        if keep_dir && is_dir(&st) {
            return Ok(true);
        }
        self.confined.invalidate();
        remove_at(parent, last, &st).map_err(replace_err)?;
        Ok(false)
    }

    fn set_meta_fd(&self, fd: BorrowedFd<'_>, meta: &Meta, name: &str) -> Result<(), UnpackError> {
        apply::set_meta_fd(fd, meta, self.opts.chown).map_err(|e| set_err(name, &e.what, e.source))
    }

    fn set_meta_at(
        &self,
        parent: &OwnedFd,
        last: &[u8],
        meta: &Meta,
        name: &str,
        chmod: bool,
    ) -> Result<(), UnpackError> {
        apply::set_meta_at(parent, last, meta, self.opts.chown, chmod).map_err(|e| set_err(name, &e.what, e.source))
    }

    /// Sets directory mtimes, children before parents; directories a later
    /// entry removed are skipped.
    /// Returns the number of entries applied.
    fn finish(mut self) -> Result<usize, UnpackError> {
        let times = std::mem::take(&mut self.dir_times);
        for (comps, ts) in times.iter().rev() {
            let refs: Vec<&[u8]> = comps.iter().map(Vec::as_slice).collect();
            let name = join(&refs);
            let fd = match self.confined.dir(&refs, false) {
                Ok(fd) => fd,
                Err(ResolveError::Io(source)) => return Err(set_err(&name, "times", source)),
                Err(_) => continue,
            };
            rustix::fs::futimens(&*fd, ts).map_err(|e| set_err(&name, "times", e.into()))?;
        }
        Ok(self.entries)
    }
}

fn create_err(entry: &str, source: io::Error) -> UnpackError {
    UnpackError::Create { entry: entry.to_owned(), source }
}

fn set_err(entry: &str, what: &str, source: io::Error) -> UnpackError {
    UnpackError::SetMetadata { entry: entry.to_owned(), what: what.to_owned(), source }
}
