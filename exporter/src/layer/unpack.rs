//! Layer blob → overlay-format directory. The archive is hostile input: every
//! path is cleaned (`..` rejected), every directory is reached through
//! [`Confined`] without following symlinks, and hardlinks may only point at
//! earlier entries inside the destination.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;

use oci_spec::image::Digest;
use rustix::fs::{AtFlags, FileType, Mode, Timestamps, XattrFlags};
use tar::EntryType;

use super::error::UnpackError;
use super::untar::{
    components, finish_file, join, link_at, link_target, make_dir, make_file, make_node, make_symlink, read_meta,
    set_meta_fd, split_link_target, Confined, CreateError, LinkError, MetaError, MetaPolicy, NodeSpec, ResolveError,
    SetMetaError,
};
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
            let policy = MetaPolicy { chown: opts.chown, best_effort_xattrs: false };
            let mut applier = Applier { confined, policy, dir_times: BTreeMap::new(), entries: 0 };
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

struct Applier {
    confined: Confined,
    policy: MetaPolicy,
    /// Directory mtimes, applied deepest first once everything is written.
    dir_times: BTreeMap<Vec<Vec<u8>>, Timestamps>,
    entries: usize,
}

impl Applier {
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
            let meta = read_meta(&mut entry).map_err(meta_err(&name))?;
            self.clear(&parent, target, &name, false)?;
            rustix::fs::mknodat(&*parent, target, FileType::CharacterDevice, Mode::empty(), 0)
                .map_err(|e| create_err(&name, e.into()))?;
            return rustix::fs::utimensat(&*parent, target, &meta.times, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| set_err(&name, "times", e.into()));
        }

        let parent = self.dir(&name, parents, true)?;
        match kind {
            EntryType::Directory => {
                let meta = read_meta(&mut entry).map_err(meta_err(&name))?;
                let exists = self.clear(&parent, last, &name, true)?;
                make_dir(parent.as_fd(), last, exists, &meta, self.policy).map_err(entry_err(&name))?;
                self.dir_times.insert(comps.iter().map(|c| c.to_vec()).collect(), meta.times);
                Ok(())
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let meta = read_meta(&mut entry).map_err(meta_err(&name))?;
                self.clear(&parent, last, &name, false)?;
                let mut file = make_file(parent.as_fd(), last).map_err(|e| create_err(&name, e))?;
                let size = entry.size();
                let mut data = ExactReader::new(&mut entry, size);
                if let Err(source) = io::copy(&mut data, &mut file) {
                    return Err(if data.read_failed {
                        UnpackError::ReadArchive { source }
                    } else {
                        UnpackError::WriteFile { entry: name, source }
                    });
                }
                finish_file(&file, &meta, self.policy).map_err(|e| set_meta_err(&name, e))
            }
            EntryType::Symlink => {
                let meta = read_meta(&mut entry).map_err(meta_err(&name))?;
                let target = link_target(&entry).map_err(meta_err(&name))?;
                self.clear(&parent, last, &name, false)?;
                make_symlink(&parent, last, &target, &meta, self.policy).map_err(entry_err(&name))
            }
            EntryType::Link => self.hardlink(&entry, &name, (parents, last), &parent),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let meta = read_meta(&mut entry).map_err(meta_err(&name))?;
                let node = NodeSpec::read(entry.header()).map_err(meta_err(&name))?;
                self.clear(&parent, last, &name, false)?;
                make_node(&parent, last, &node, &meta, self.policy).map_err(entry_err(&name))
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
            return Err(meta_err(name)(MetaError::Invalid("path (a non-directory names the root)")));
        }
        let meta = read_meta(entry).map_err(meta_err(name))?;
        let root = self.confined.root();
        set_meta_fd(root.as_fd(), &meta, self.policy).map_err(|e| set_meta_err(name, e))?;
        self.dir_times.insert(Vec::new(), meta.times);
        Ok(())
    }

    fn hardlink<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
        name: &str,
        (parents, last): (&[&[u8]], &[u8]),
        parent: &Rc<OwnedFd>,
    ) -> Result<(), UnpackError> {
        let target = link_target(entry).map_err(meta_err(name))?;
        let link_err = link_err(name, &target);
        let (tparents, tlast) = split_link_target(&target).map_err(&link_err)?;
        if (tparents.as_slice(), tlast) == (parents, last) {
            return Ok(()); // a link to itself changes nothing
        }
        let tdir = self.confined.link_source(&tparents, tlast).map_err(&link_err)?;
        self.clear(parent, last, name, false)?;
        link_at(&tdir, tlast, parent, last).map_err(|e| create_err(name, e))
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
        self.confined
            .clear(parent, last, keep_dir)
            .map_err(|source| UnpackError::Replace { entry: name.to_owned(), source })
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

fn set_meta_err(entry: &str, e: SetMetaError) -> UnpackError {
    set_err(entry, &e.what, e.source)
}

/// Maps a failure to create an entry or apply its metadata.
fn entry_err(entry: &str) -> impl Fn(CreateError) -> UnpackError + '_ {
    move |e| match e {
        CreateError::Create(source) => create_err(entry, source),
        CreateError::SetMeta(e) => set_meta_err(entry, e),
    }
}

/// Maps a failure to read an entry's header or PAX records.
fn meta_err(entry: &str) -> impl Fn(MetaError) -> UnpackError + '_ {
    move |e| match e {
        MetaError::Invalid(field) => UnpackError::InvalidHeader { entry: entry.to_owned(), field },
        MetaError::Read(source) => UnpackError::ReadArchive { source },
    }
}

/// Maps a hardlink whose target cannot be linked.
fn link_err<'a>(entry: &'a str, target: &[u8]) -> impl Fn(LinkError) -> UnpackError + 'a {
    let target = String::from_utf8_lossy(target).into_owned();
    move |e| {
        let (entry, target) = (entry.to_owned(), target.clone());
        match e {
            LinkError::Outside => UnpackError::HardlinkOutside { entry, target },
            LinkError::Missing => UnpackError::HardlinkTargetMissing { entry, target },
            LinkError::Directory => UnpackError::HardlinkToDirectory { entry, target },
            LinkError::Io(source) => UnpackError::Create { entry, source },
        }
    }
}

fn set_err(entry: &str, what: &str, source: io::Error) -> UnpackError {
    UnpackError::SetMetadata { entry: entry.to_owned(), what: what.to_owned(), source }
}
