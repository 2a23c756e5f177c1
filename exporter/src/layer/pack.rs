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
use std::sync::Arc;

use oci_spec::image::{Descriptor, Digest, MediaType};
use tar::EntryType;

use super::compress::{BlockCache, Compression, Compressor, GzipBlock};
use super::error::PackError;
use super::header::{append_entry, EntrySpec};
use super::pipe::TarTap;
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
    let diff = TarHasher::new(compressor);
    let mut builder = tar::Builder::new(diff);
    let mut hint = |b: &mut tar::Builder<TarHasher<Compressor<HashingWriter<W>>>>, spec: &EntrySpec| {
        b.get_mut().inner.entry_boundary(spec.size, &spec.path)
    };
    let entries = Walker::new(opts.source_date_epoch).run(diff_dir, &mut builder, &mut hint)?;
    let diff = builder.into_inner().map_err(finish)?;
    let (compressor, diff_id) = diff.finish();
    let blob = compressor.finish().map_err(finish)?;
    let (mut out, digest, size) = blob.finish();
    out.flush().map_err(finish)?;
    Ok(PackedLayer { diff_id, digest, size, media_type: opts.compression.media_type(), entries })
}

/// What [`pack_with`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PackedBlob {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// sha256 of the bytes written to `out`, when asked for.
    pub digest: Option<Digest>,
    /// Number of bytes written to `out`.
    pub size: u64,
    /// Layer media type matching the compression.
    pub media_type: MediaType,
    /// Number of tar entries, as [`PackedLayer::entries`].
    pub entries: usize,
    /// gzip: every block of the blob, in order (see [`BlockCache`]); empty for other formats.
    pub blocks: Vec<GzipBlock>,
}

/// [`pack`] for a layer store, with the same bytes out: the gzip blocks are reported (under
/// which key, where in `out`), and blocks `cache` knows are copied from it instead of being
/// compressed again (see [`BlockCache`]). The tar's hash runs on a thread of its own; the
/// blob's digest is computed only with `digest_output` (a store that hashes what it is given
/// need not have it done twice).
pub fn pack_with<W: Write>(
    diff_dir: &Path,
    out: W,
    opts: &PackOptions,
    cache: Option<Arc<dyn BlockCache>>,
    digest_output: bool,
) -> Result<PackedBlob, PackError> {
    let finish = |source| PackError::Finish { source };
    let blob = MaybeHashing { inner: out, hasher: digest_output.then(sha2::Digest::new), count: 0 };
    let mut compressor = Compressor::with_threads(opts.compression, opts.threads, blob)
        .map_err(|source| PackError::StartCompressor { source })?;
    compressor.record_blocks(cache);
    let diff = TarTap::new(compressor).map_err(|source| PackError::StartCompressor { source })?;
    let mut builder = tar::Builder::new(diff);
    let mut hint = |b: &mut tar::Builder<TarTap<Compressor<MaybeHashing<W>>>>, spec: &EntrySpec| {
        b.get_mut().get_mut().entry_boundary(spec.size, &spec.path)
    };
    let entries = Walker::new(opts.source_date_epoch).run(diff_dir, &mut builder, &mut hint)?;
    let diff = builder.into_inner().map_err(finish)?;
    let (compressor, diff_id) = diff.finish().map_err(finish)?;
    let (mut blob, blocks) = compressor.finish_with_blocks().map_err(finish)?;
    blob.inner.flush().map_err(finish)?;
    let digest = blob.hasher.map(|h| {
        let hex = hex::encode(sha2::Digest::finalize(h));
        Digest::try_from(format!("sha256:{hex}")).expect("sha256 hex is a valid digest")
    });
    Ok(PackedBlob { diff_id, digest, size: blob.count, media_type: opts.compression.media_type(), entries, blocks })
}

/// Counts (and hashes, if asked) what reaches the inner writer.
struct MaybeHashing<W> {
    inner: W,
    hasher: Option<sha2::Sha256>,
    count: u64,
}

impl<W: Write> Write for MaybeHashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(h) = &mut self.hasher {
            sha2::Digest::update(h, &buf[..n]);
        }
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes the tar stream on its way to the compressor (whose entry hints
/// stay reachable through it).
struct TarHasher<W> {
    inner: W,
    hasher: sha2::Sha256,
}

impl<W: Write> TarHasher<W> {
    fn new(inner: W) -> Self {
        Self { inner, hasher: sha2::Digest::new() }
    }

    fn finish(self) -> (W, Digest) {
        let hex = hex::encode(sha2::Digest::finalize(self.hasher));
        let digest = Digest::try_from(format!("sha256:{hex}")).expect("sha256 hex is a valid digest");
        (self.inner, digest)
    }
}

impl<W: Write> Write for TarHasher<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        sha2::Digest::update(&mut self.hasher, &buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Called before each entry is written (for the compressor's block cuts).
type EntryHook<'h, W> = dyn FnMut(&mut tar::Builder<W>, &EntrySpec) -> io::Result<()> + 'h;

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
    /// File data is read through this, [`READ_CHUNK`] bytes a call.
    read_buf: Vec<u8>,
}

/// Bytes read from a file per `read` call while packing: the tar writer copies in 8 KiB
/// pieces, which as `read` calls would cost more in syscalls than in copying.
const READ_CHUNK: usize = 256 * 1024;

/// Serves a reader's bytes from a buffer refilled [`READ_CHUNK`] bytes at a time.
struct Chunked<'a, R> {
    inner: R,
    /// `READ_CHUNK` bytes long once used; unread bytes are `buf[pos..filled]`.
    buf: &'a mut Vec<u8>,
    pos: usize,
    filled: usize,
}

impl<'a, R> Chunked<'a, R> {
    fn new(inner: R, buf: &'a mut Vec<u8>) -> Self {
        Self { inner, buf, pos: 0, filled: 0 }
    }
}

impl<R: io::Read> io::Read for Chunked<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.filled {
            if self.buf.len() < READ_CHUNK {
                self.buf.resize(READ_CHUNK, 0);
            }
            self.pos = 0;
            self.filled = 0;
            self.filled = self.inner.read(self.buf)?;
        }
        let n = out.len().min(self.filled - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Walker {
    pub(crate) fn new(source_date_epoch: Option<i64>) -> Self {
        Self { source_date_epoch, links: HashMap::new(), entries: 0, read_buf: Vec::new() }
    }

    fn run<W: Write>(
        mut self,
        root: &Path,
        builder: &mut tar::Builder<W>,
        hook: &mut EntryHook<'_, W>,
    ) -> Result<usize, PackError> {
        // Explicit stack: a hostile RUN can nest directories deeper than the
        // thread stack would allow recursion.
        let mut stack = children(root, &[])?;
        stack.reverse();
        while let Some(node) = stack.pop() {
            let opaque = self.emit_with(&node, builder, hook)?;
            if node.kind == Kind::Dir {
                if opaque {
                    self.emit_opaque_marker(&node, builder, hook)?;
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
        self.emit_with(node, builder, &mut |_, _| Ok(()))
    }

    fn emit_with<W: Write>(
        &mut self,
        node: &Node,
        builder: &mut tar::Builder<W>,
        hook: &mut EntryHook<'_, W>,
    ) -> Result<bool, PackError> {
        let meta = &node.meta;
        let mtime = self.mtime(meta);
        if node.kind == Kind::Whiteout {
            let mut spec = EntrySpec::new(node.tar_path.clone(), EntryType::Regular);
            spec.mtime = mtime;
            return self.write(builder, node, &spec, None, hook).map(|()| false);
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
                return self.write(builder, node, &spec, None, hook).map(|()| false);
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
            self.write(builder, node, &spec, Some(file), hook)?;
        } else {
            self.write(builder, node, &spec, None, hook)?;
        }
        Ok(opaque)
    }

    fn emit_opaque_marker<W: Write>(
        &mut self,
        dir: &Node,
        builder: &mut tar::Builder<W>,
        hook: &mut EntryHook<'_, W>,
    ) -> Result<(), PackError> {
        let mut path = dir.tar_path.clone();
        path.push(b'/');
        path.extend_from_slice(OPAQUE_MARKER.as_bytes());
        let mut spec = EntrySpec::new(path, EntryType::Regular);
        spec.mtime = self.mtime(&dir.meta);
        self.write(builder, dir, &spec, None, hook)
    }

    fn write<W: Write>(
        &mut self,
        builder: &mut tar::Builder<W>,
        node: &Node,
        spec: &EntrySpec,
        file: Option<fs::File>,
        hook: &mut EntryHook<'_, W>,
    ) -> Result<(), PackError> {
        hook(builder, spec).map_err(|source| PackError::WriteEntry { path: node.fs_path.clone(), source })?;
        let result = match file {
            Some(file) => {
                let mut data = Chunked::new(ExactReader::new(file, spec.size), &mut self.read_buf);
                let r = append_entry(builder, spec, &mut data);
                match r {
                    Err(source) if data.inner.read_failed => {
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::layer::compress::{BlockKey, CachedBlock};

    /// Blocks of an earlier blob, as a store would serve them.
    struct FromBlob(Vec<u8>, HashMap<BlockKey, GzipBlock>, AtomicUsize);

    impl BlockCache for FromBlob {
        fn get(&self, key: &BlockKey, input_len: u64) -> Option<CachedBlock> {
            let b = self.1.get(key).filter(|b| b.input_len == input_len)?;
            self.2.fetch_add(1, Ordering::Relaxed);
            let (o, l) = (b.offset as usize, b.len as usize);
            Some(CachedBlock { deflated: self.0[o..o + l].to_vec(), crc: b.crc })
        }
    }

    fn text(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 9 == 8 {
                    b'\n'
                } else {
                    b"abcdefgh  "[(x % 10) as usize]
                }
            })
            .collect()
    }

    #[test]
    fn pack_with_writes_what_pack_writes_and_reuses_blocks() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        for i in 0..400 {
            let p = d.join(format!("src/m{}/f{i:03}.txt", i % 7));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, text(1000 + i * 13, i as u64)).unwrap();
        }
        fs::write(d.join("big.bin"), text(3 << 20, 99)).unwrap();
        let mut opts = PackOptions::default();
        opts.threads(2);
        let mut plain = Vec::new();
        let reference = pack(d, &mut plain, &opts).unwrap();

        let mut out = Vec::new();
        let first = pack_with(d, &mut out, &opts, None, true).unwrap();
        assert!(out == plain, "same bytes as pack");
        assert_eq!(
            (first.diff_id.clone(), first.digest.clone(), first.size),
            (reference.diff_id, Some(reference.digest), reference.size)
        );
        assert!(first.blocks.len() > 4, "{} blocks", first.blocks.len());
        let mut end = 10;
        for b in &first.blocks {
            assert_eq!(b.offset, end, "blocks are contiguous after the header");
            end += b.len;
        }
        assert_eq!(end + 8, out.len() as u64, "then the trailer");

        // Change one small file: everything but a block or two comes from the cache, and the
        // output is what a fresh pack gives.
        fs::write(d.join("src/m3/f010.txt"), b"changed\n").unwrap();
        let mut fresh = Vec::new();
        let expected = pack(d, &mut fresh, &opts).unwrap();
        let map = first.blocks.iter().map(|b| (b.key, b.clone())).collect();
        let cache = Arc::new(FromBlob(out, map, AtomicUsize::new(0)));
        let mut again = Vec::new();
        let second = pack_with(d, &mut again, &opts, Some(cache.clone()), false).unwrap();
        assert!(again == fresh, "cached blocks give the same bytes");
        assert_eq!((second.diff_id, second.digest, second.size), (expected.diff_id, None, expected.size));
        let hits = cache.2.load(Ordering::Relaxed);
        assert!(hits + 3 >= second.blocks.len(), "{hits} hits of {} blocks", second.blocks.len());
    }
}
