//! Layer compression: the public choice ([`Compression`]) and the streaming
//! writer that implements it ([`Compressor`]), which must be finished
//! explicitly.
//!
//! Every format is deterministic: the same input and [`Compression`] give the
//! same bytes on every run, whatever the number of threads and whatever the
//! sizes of the `write` calls.
//!
//! - gzip is compressed block-parallel, as pigz does (see [`GZIP_BLOCK_SIZE`]
//!   and the `gzip` module for the exact format): one gzip member, fixed
//!   header, raw deflate per block of at most 1 MiB (cut at file boundaries
//!   when `layer::pack` reports them) primed with the previous block's last
//!   32 KiB, sync-flushed between blocks, incompressible blocks stored; the
//!   crc32s of the blocks are combined. One thread gives the same bytes as
//!   many, and compressed blocks can be reused from earlier layers
//!   ([`BlockCache`]).
//! - zstd uses libzstd's own worker threads (`ZSTD_c_nbWorkers` ≥ 1 always,
//!   whose output libzstd keeps independent of the worker count), with a
//!   content checksum.

mod gzip;

use std::fmt;
use std::io::{self, Write};
use std::num::NonZeroUsize;

use oci_spec::image::MediaType;

pub use gzip::{block_key, BlockCache, BlockKey, CachedBlock, GzipBlock, BIG_ENTRY, GZIP_BLOCK_SIZE};

/// How a layer blob is compressed.
///
/// New formats are added as variants; match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// A plain tar (`application/vnd.oci.image.layer.v1.tar`).
    None,
    /// gzip with a fixed header (no file name, mtime 0, OS "unknown"),
    /// compressed block-parallel (`...layer.v1.tar+gzip`).
    Gzip {
        /// 0 (store) to 9 (best); 6 is the usual default.
        level: u32,
    },
    /// zstd with a content checksum, multithreaded (`...layer.v1.tar+zstd`).
    Zstd {
        /// 1 (fastest) to 22 (best), or negative for zstd's "fast" levels;
        /// 0 means zstd's default (3). 3 is what BuildKit's default maps to.
        level: i32,
    },
}

impl Default for Compression {
    /// gzip at level 6, what docker and BuildKit produce by default.
    fn default() -> Self {
        Compression::Gzip { level: 6 }
    }
}

/// A compression name or level from the command line was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseCompressionError {
    /// The name is none of `uncompressed`, `gzip`, `zstd`.
    #[error("unknown compression {name:?}: expected uncompressed, gzip or zstd")]
    UnknownName {
        /// The name as given.
        name: String,
    },
    /// The level is outside what the format accepts.
    #[error("compression level {level} is out of range for {format} ({min} to {max})")]
    LevelOutOfRange {
        /// The format.
        format: &'static str,
        /// The level as given.
        level: i32,
        /// Lowest accepted level.
        min: i32,
        /// Highest accepted level.
        max: i32,
    },
}

impl Compression {
    /// The OCI media type of a layer compressed this way.
    pub fn media_type(&self) -> MediaType {
        match self {
            Compression::None => MediaType::ImageLayer,
            Compression::Gzip { .. } => MediaType::ImageLayerGzip,
            Compression::Zstd { .. } => MediaType::ImageLayerZstd,
        }
    }

    /// Parses BuildKit's exporter options `compression=NAME` and
    /// `compression-level=N`: `uncompressed` (or `none`), `gzip` (levels 0–9,
    /// default 6) or `zstd` (levels −7–22, default 3). A level given for
    /// `uncompressed` is ignored, as BuildKit does.
    pub fn from_options(name: &str, level: Option<i32>) -> Result<Self, ParseCompressionError> {
        let check = |format, min, max, level: i32| {
            if (min..=max).contains(&level) {
                Ok(level)
            } else {
                Err(ParseCompressionError::LevelOutOfRange { format, level, min, max })
            }
        };
        match name {
            "uncompressed" | "none" => Ok(Compression::None),
            "gzip" => {
                let level = check("gzip", 0, 9, level.unwrap_or(6))?;
                Ok(Compression::Gzip { level: level.unsigned_abs() })
            }
            "zstd" => Ok(Compression::Zstd { level: check("zstd", -7, 22, level.unwrap_or(3))? }),
            other => Err(ParseCompressionError::UnknownName { name: other.to_owned() }),
        }
    }
}

/// The number of threads "0 = all cores" stands for.
pub(crate) fn resolve_threads(threads: usize) -> usize {
    if threads > 0 {
        threads
    } else {
        std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
    }
}

/// A streaming compressing writer; call [`finish`](Self::finish) to write
/// the trailer and get the inner writer back (dropping it loses the end of
/// the stream).
///
/// Work is spread over threads (gzip: a small pool of its own, started on
/// the first full block; zstd: libzstd's workers) while `out` is only ever
/// written from the calling thread, so `W` need not be `Send`. At most
/// `2 × threads + 1` blocks are in flight: memory stays bounded whatever the
/// input size.
///
/// [`flush`](Write::flush) flushes `out` with whatever is already
/// compressed; it never cuts a block, so it cannot change the output bytes.
///
/// ```
/// use std::io::Write;
/// use rbuild_exporter::layer::{Compression, Compressor};
///
/// let mut gz = Compressor::with_threads(Compression::Gzip { level: 6 }, 2, Vec::new())?;
/// gz.write_all(b"hello")?;
/// let bytes = gz.finish()?;
/// assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Compressor<W: Write> {
    inner: Inner<W>,
}

enum Inner<W: Write> {
    Plain(W),
    Gzip(Box<gzip::ParallelGzip<W>>),
    Zstd(Box<zstd::stream::write::Encoder<'static, W>>),
}

impl<W: Write> fmt::Debug for Compressor<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.inner {
            Inner::Plain(_) => "none",
            Inner::Gzip(_) => "gzip",
            Inner::Zstd(_) => "zstd",
        };
        f.debug_struct("Compressor").field("format", &kind).finish()
    }
}

impl<W: Write> Compressor<W> {
    /// A compressor using all cores.
    pub fn new(compression: Compression, out: W) -> io::Result<Self> {
        Self::with_threads(compression, 0, out)
    }

    /// A compressor using `threads` threads (0: all cores). The output does
    /// not depend on `threads`.
    pub fn with_threads(compression: Compression, threads: usize, out: W) -> io::Result<Self> {
        let threads = resolve_threads(threads);
        let inner = match compression {
            Compression::None => Inner::Plain(out),
            Compression::Gzip { level } => Inner::Gzip(Box::new(gzip::ParallelGzip::new(out, level.min(9), threads))),
            Compression::Zstd { level } => {
                let mut enc = zstd::stream::write::Encoder::new(out, level)?;
                // Always at least one worker: libzstd's multithreaded format
                // is the same for any worker count, its single-threaded one
                // is not.
                enc.multithread(u32::try_from(threads).unwrap_or(u32::MAX))?;
                enc.include_checksum(true)?;
                Inner::Zstd(Box::new(enc))
            }
        };
        Ok(Self { inner })
    }

    /// gzip only: compute every block's key, report the blocks from
    /// [`finish_with_blocks`](Self::finish_with_blocks), and take blocks
    /// `cache` knows from it. Other formats ignore this.
    pub(crate) fn record_blocks(&mut self, cache: Option<std::sync::Arc<dyn BlockCache>>) {
        if let Inner::Gzip(g) = &mut self.inner {
            g.record_blocks(cache);
        }
    }

    /// A tar entry with `data_len` bytes of data and archive path `path`
    /// starts here (gzip cuts its blocks along entries; other formats ignore
    /// it).
    pub(crate) fn entry_boundary(&mut self, data_len: u64, path: &[u8]) -> io::Result<()> {
        match &mut self.inner {
            Inner::Gzip(g) => g.entry_boundary(data_len, path),
            _ => Ok(()),
        }
    }

    /// [`finish`](Self::finish), also returning the gzip blocks written when
    /// [`record_blocks`](Self::record_blocks) was called (else none).
    pub(crate) fn finish_with_blocks(self) -> io::Result<(W, Vec<GzipBlock>)> {
        match self.inner {
            Inner::Gzip(g) => g.finish_with_blocks(),
            _ => self.finish().map(|w| (w, Vec::new())),
        }
    }

    /// Writes everything still buffered and any trailer, and returns the
    /// inner writer (not flushed).
    pub fn finish(self) -> io::Result<W> {
        match self.inner {
            Inner::Plain(w) => Ok(w),
            Inner::Gzip(g) => g.finish(),
            Inner::Zstd(z) => z.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Plain(w) => w.write(buf),
            Inner::Gzip(g) => g.write(buf),
            Inner::Zstd(z) => z.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Plain(w) => w.flush(),
            Inner::Gzip(g) => g.flush(),
            // Encoder::flush would end a zstd block (ZSTD_e_flush) and so
            // change the output; only the inner writer is flushed.
            Inner::Zstd(z) => z.get_mut().flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_header_is_fixed() {
        let mut c = Compressor::new(Compression::Gzip { level: 6 }, Vec::new()).unwrap();
        c.write_all(b"data").unwrap();
        let out = c.finish().unwrap();
        // magic, CM=deflate, FLG=0 (no name), MTIME=0, XFL, OS=255
        assert_eq!(&out[..8], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]);
        assert_eq!(out[9], 255);
    }

    macro_rules! parse {
        ($name:expr, $level:expr => err) => {
            assert!(Compression::from_options($name, $level).is_err());
        };
        ($name:expr, $level:expr => $want:expr) => {
            assert_eq!(Compression::from_options($name, $level), Ok($want));
        };
    }

    #[test]
    fn options() {
        parse!("gzip", None => Compression::Gzip { level: 6 });
        parse!("gzip", Some(9) => Compression::Gzip { level: 9 });
        parse!("gzip", Some(0) => Compression::Gzip { level: 0 });
        parse!("gzip", Some(10) => err);
        parse!("gzip", Some(-1) => err);
        parse!("zstd", None => Compression::Zstd { level: 3 });
        parse!("zstd", Some(19) => Compression::Zstd { level: 19 });
        parse!("zstd", Some(23) => err);
        parse!("uncompressed", Some(5) => Compression::None);
        parse!("estargz", None => err);
    }

    #[test]
    fn zstd_media_type() {
        assert_eq!(
            Compression::Zstd { level: 3 }.media_type().to_string(),
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
    }
}
