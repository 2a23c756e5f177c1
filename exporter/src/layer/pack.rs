//! Diff directory (overlayfs upper-dir format) → layer blob.
//!
//! Writer stack, outermost first (as containers/ocidir-rs does):
//! `tar::Builder` → diff-id hasher (uncompressed) → compressor → blob hasher
//! and counter (what reaches `out`) → `out`. Nothing is buffered beyond the
//! writers' own small buffers; one directory listing at a time is held.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, Metadata};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, Digest, MediaType};
use tar::EntryType;

use super::compress::{Compression, Compressor};
use super::error::PackError;
use super::header::{append_entry, EntrySpec};
use super::{is_overlay_xattr, OPAQUE_MARKER, OPAQUE_XATTRS, WHITEOUT_PREFIX};
use crate::hash::{ExactReader, HashingWriter};

/// Options for [`pack`]. Start from `PackOptions::default()` (gzip level 6,
/// all cores, mtimes as on disk) and adjust.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PackOptions {
    /// Compression of the blob written to `out`.
    pub compression: Compression,
    /// `SOURCE_DATE_EPOCH`: mtimes later than this many seconds since the
    /// epoch are written as this value; earlier ones are kept.
    pub source_date_epoch: Option<i64>,
    /// Compression threads; 0 (the default) means one per core. The blob's
    /// bytes do not depend on it.
    pub threads: usize,
}

impl PackOptions {
    /// Sets the compression.
    pub fn compression(&mut self, compression: Compression) -> &mut Self {
        self.compression = compression;
        self
    }

    /// Sets the number of compression threads (0: one per core).
    pub fn threads(&mut self, threads: usize) -> &mut Self {
        self.threads = threads;
        self
    }

    /// Sets or clears the `SOURCE_DATE_EPOCH` mtime clamp.
    pub fn source_date_epoch(&mut self, epoch: Option<i64>) -> &mut Self {
        self.source_date_epoch = epoch;
        self
    }
}

/// What [`pack`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedLayer {
    /// sha256 of the uncompressed tar (goes into the config's `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// sha256 of the bytes written to `out` (the blob's digest in the manifest).
    pub digest: Digest,
    /// Number of bytes written to `out`.
    pub size: u64,
    /// Layer media type matching the compression.
    pub media_type: MediaType,
    /// Number of tar entries (whiteouts and opaque markers included, PAX
    /// headers not). Zero means the diff was empty: callers skip the layer.
    pub entries: usize,
}

impl PackedLayer {
    /// True when the diff had no entries (the layer would change nothing).
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The manifest descriptor of this blob.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(self.media_type.clone(), self.size, self.digest.clone())
    }
}

/// Packs `diff_dir`, an overlayfs upper-dir-format diff, into a layer blob
/// streamed to `out`.
///
/// Entries come in path order, compared component by component (a directory,
/// then its opaque marker, then its children sorted by their names in the
/// archive), so the same tree always gives the same bytes. Character devices
/// 0:0 become `.wh.<name>` files, a directory with `trusted.overlay.opaque=y`
/// is followed by `<dir>/.wh..wh..opq`, a second path to an inode already
/// written becomes a hardlink entry, and sockets are skipped. The root
/// directory itself is not written.
///
/// The diff must not change while it is packed (a file that shrinks is an
/// error, one that grows is cut at its size). Mount overlays without
/// `redirect_dir` and `metacopy`, or the upper dir is not a complete diff.
/// `out` is flushed but not synced.
pub fn pack<W: Write>(diff_dir: &Path, out: W, opts: &PackOptions) -> Result<PackedLayer, PackError> {
    let finish = |source| PackError::Finish { source };
    let blob = HashingWriter::new(out);
    let compressor = Compressor::with_threads(opts.compression, opts.threads, blob)
        .map_err(|source| PackError::StartCompressor { source })?;
    let diff = HashingWriter::new(compressor);
    let mut builder = tar::Builder::new(diff);
    let entries = Walker::new(opts.source_date_epoch).run(diff_dir, &mut builder)?;
    let diff = builder.into_inner().map_err(finish)?;
    let (compressor, diff_id, _) = diff.finish();
    let blob = compressor.finish().map_err(finish)?;
    let (mut out, digest, size) = blob.finish();
    out.flush().map_err(finish)?;
    Ok(PackedLayer { diff_id, digest, size, media_type: opts.compression.media_type(), entries })
}

/// What a directory entry on disk becomes in the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
    Symlink,
    Whiteout,
    Char,
    Block,
    Fifo,
}

/// One entry found on disk, waiting to be written.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) fs_path: PathBuf,
    /// Archive path without trailing slash.
    pub(crate) tar_path: Vec<u8>,
    pub(crate) meta: Metadata,
    pub(crate) kind: Kind,
}

/// Writes nodes as tar entries (also used for merged root filesystems).
pub(crate) struct Walker {
    source_date_epoch: Option<i64>,
    /// (dev, ino) of multiply-linked inodes → archive path of the first one.
    links: HashMap<(u64, u64), Vec<u8>>,
    entries: usize,
}

impl Walker {
    pub(crate) fn new(source_date_epoch: Option<i64>) -> Self {
        Self { source_date_epoch, links: HashMap::new(), entries: 0 }
    }

    fn run<W: Write>(mut self, root: &Path, builder: &mut tar::Builder<W>) -> Result<usize, PackError> {
        // Explicit stack: a hostile RUN can nest directories deeper than the
        // thread stack would allow recursion.
        let mut stack = children(root, &[])?;
        stack.reverse();
        while let Some(node) = stack.pop() {
            let opaque = self.emit(&node, builder)?;
            if node.kind == Kind::Dir {
                if opaque {
                    self.emit_opaque_marker(&node, builder)?;
                }
                let mut kids = children(&node.fs_path, &node.tar_path)?;
                kids.reverse();
                stack.extend(kids);
            }
        }
        Ok(self.entries)
    }

    fn mtime(&self, meta: &Metadata) -> i64 {
        match self.source_date_epoch {
            Some(epoch) if meta.mtime() > epoch => epoch,
            _ => meta.mtime(),
        }
    }

    /// Writes `node`; for a directory, returns whether it is opaque.
    pub(crate) fn emit<W: Write>(&mut self, node: &Node, builder: &mut tar::Builder<W>) -> Result<bool, PackError> {
        let meta = &node.meta;
        let mtime = self.mtime(meta);
        if node.kind == Kind::Whiteout {
            let mut spec = EntrySpec::new(node.tar_path.clone(), EntryType::Regular);
            spec.mtime = mtime;
            return self.write(builder, node, &spec, None).map(|()| false);
        }

        let mut path = node.tar_path.clone();
        if node.kind == Kind::Dir {
            path.push(b'/');
        }
        let (xattrs, opaque) = read_xattrs(&node.fs_path)?;
        let mut spec = EntrySpec::new(path, EntryType::Regular);
        spec.mode = meta.mode() & 0o7777;
        spec.uid = u64::from(meta.uid());
        spec.gid = u64::from(meta.gid());
        spec.mtime = mtime;
        spec.xattrs = xattrs;

        if node.kind != Kind::Dir && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key) {
                spec.kind = EntryType::Link;
                spec.link = Some(first.clone());
                return self.write(builder, node, &spec, None).map(|()| false);
            }
            self.links.insert(key, node.tar_path.clone());
        }

        match node.kind {
            Kind::Dir => spec.kind = EntryType::Directory,
            Kind::File => spec.size = meta.len(),
            Kind::Symlink => {
                spec.kind = EntryType::Symlink;
                let target = fs::read_link(&node.fs_path)
                    .map_err(|source| PackError::ReadLink { path: node.fs_path.clone(), source })?;
                spec.link = Some(target.as_os_str().as_bytes().to_vec());
            }
            Kind::Char | Kind::Block => {
                spec.kind = if node.kind == Kind::Char { EntryType::Char } else { EntryType::Block };
                spec.device = Some((rustix::fs::major(meta.rdev()), rustix::fs::minor(meta.rdev())));
            }
            Kind::Fifo => spec.kind = EntryType::Fifo,
            Kind::Whiteout => {}
        }

        if node.kind == Kind::File {
            let file = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&node.fs_path)
                .map_err(|source| PackError::ReadFile { path: node.fs_path.clone(), source })?;
            self.write(builder, node, &spec, Some(file))?;
        } else {
            self.write(builder, node, &spec, None)?;
        }
        Ok(opaque)
    }

    fn emit_opaque_marker<W: Write>(&mut self, dir: &Node, builder: &mut tar::Builder<W>) -> Result<(), PackError> {
        let mut path = dir.tar_path.clone();
        path.push(b'/');
        path.extend_from_slice(OPAQUE_MARKER.as_bytes());
        let mut spec = EntrySpec::new(path, EntryType::Regular);
        spec.mtime = self.mtime(&dir.meta);
        self.write(builder, dir, &spec, None)
    }

    fn write<W: Write>(
        &mut self,
        builder: &mut tar::Builder<W>,
        node: &Node,
        spec: &EntrySpec,
        file: Option<fs::File>,
    ) -> Result<(), PackError> {
        let result = match file {
            Some(file) => {
                let mut data = ExactReader::new(file, spec.size);
                let r = append_entry(builder, spec, &mut data);
                match r {
                    Err(source) if data.read_failed => {
                        return Err(PackError::ReadFile { path: node.fs_path.clone(), source })
                    }
                    r => r,
                }
            }
            None => append_entry(builder, spec, io::empty()),
        };
        result.map_err(|source| PackError::WriteEntry { path: node.fs_path.clone(), source })?;
        self.entries += 1;
        Ok(())
    }
}

/// Lists `dir`, classifies each entry and sorts by archive name.
pub(crate) fn children(dir: &Path, dir_tar: &[u8]) -> Result<Vec<Node>, PackError> {
    let read_dir_err = |source| PackError::ReadDir { path: dir.to_path_buf(), source };
    let mut nodes = Vec::new();
    for dirent in fs::read_dir(dir).map_err(read_dir_err)? {
        let dirent = dirent.map_err(read_dir_err)?;
        let name = dirent.file_name();
        let fs_path = dirent.path();
        let meta =
            fs::symlink_metadata(&fs_path).map_err(|source| PackError::Stat { path: fs_path.clone(), source })?;
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_char_device() && meta.rdev() == 0 {
            Kind::Whiteout
        } else if ft.is_char_device() {
            Kind::Char
        } else if ft.is_block_device() {
            Kind::Block
        } else if ft.is_fifo() {
            Kind::Fifo
        } else {
            continue; // sockets: meaningless in an image, BuildKit drops them too
        };
        let mut tar_path = dir_tar.to_vec();
        if !tar_path.is_empty() {
            tar_path.push(b'/');
        }
        if kind == Kind::Whiteout {
            tar_path.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
        }
        tar_path.extend_from_slice(name.as_bytes());
        nodes.push(Node { fs_path, tar_path, meta, kind });
    }
    nodes.sort_by(|a, b| a.tar_path.cmp(&b.tar_path));
    Ok(nodes)
}

/// Reads the xattrs of `path` (not following symlinks), minus overlay's own,
/// and whether they mark the directory opaque.
pub(crate) fn read_xattrs(path: &Path) -> Result<(BTreeMap<String, Vec<u8>>, bool), PackError> {
    let err = |source: io::Error| PackError::ReadXattrs { path: path.to_path_buf(), source };
    let names = match read_sized(|buf| rustix::fs::llistxattr(path, buf)) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok((BTreeMap::new(), false)),
        Err(e) => return Err(err(e)),
    };
    let mut xattrs = BTreeMap::new();
    let mut opaque = false;
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let value = match read_sized(|buf| rustix::fs::lgetxattr(path, name, buf)) {
            Ok(v) => v,
            // Removed between list and get.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => continue,
            Err(e) => return Err(err(e)),
        };
        let name = std::str::from_utf8(name).map_err(|_| PackError::XattrName {
            path: path.to_path_buf(),
            name: String::from_utf8_lossy(name).into_owned(),
        })?;
        if OPAQUE_XATTRS.contains(&name) && value == b"y" {
            opaque = true;
        }
        if !is_overlay_xattr(name) {
            xattrs.insert(name.to_owned(), value);
        }
    }
    Ok((xattrs, opaque))
}

/// Calls a size-returning syscall with a growing buffer until it fits.
fn read_sized(mut call: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match call(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(e.into()),
        }
    }
}
