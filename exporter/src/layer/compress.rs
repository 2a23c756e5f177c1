//! Layer compression: the public choice (`Compression`) and the writer that
//! implements it (`Compressor`), which must be finished explicitly.

use std::io::{self, Write};

use oci_spec::image::MediaType;

/// How a layer blob is compressed.
///
/// New formats (zstd) are added as variants; match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// A plain tar (`application/vnd.oci.image.layer.v1.tar`).
    None,
    /// gzip with a fixed header (no file name, mtime 0, OS "unknown"), so the
    /// same tar always gives the same blob (`...layer.v1.tar+gzip`).
    Gzip {
        /// 0 (store) to 9 (best); 6 is the usual default.
        level: u32,
    },
}

impl Default for Compression {
    /// gzip at level 6, what docker and BuildKit produce by default.
    fn default() -> Self {
        Compression::Gzip { level: 6 }
    }
}

impl Compression {
    /// The OCI media type of a layer compressed this way.
    pub fn media_type(&self) -> MediaType {
        match self {
            Compression::None => MediaType::ImageLayer,
            Compression::Gzip { .. } => MediaType::ImageLayerGzip,
        }
    }
}

/// A compressing writer that must be finished to write its trailer.
#[derive(Debug)]
pub(crate) enum Compressor<W: Write> {
    Plain(W),
    Gzip(Box<flate2::write::GzEncoder<W>>),
}

impl<W: Write> Compressor<W> {
    pub(crate) fn new(compression: Compression, out: W) -> Self {
        match compression {
            Compression::None => Compressor::Plain(out),
            Compression::Gzip { level } => Compressor::Gzip(Box::new(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .operating_system(255)
                    .write(out, flate2::Compression::new(level.min(9))),
            )),
        }
    }

    /// Writes any trailer and returns the inner writer.
    pub(crate) fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Plain(w) => Ok(w),
            Compressor::Gzip(g) => g.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Plain(w) => w.write(buf),
            Compressor::Gzip(g) => g.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Plain(w) => w.flush(),
            Compressor::Gzip(g) => g.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_header_is_fixed() {
        let mut c = Compressor::new(Compression::Gzip { level: 6 }, Vec::new());
        c.write_all(b"data").unwrap();
        let out = c.finish().unwrap();
        // magic, CM=deflate, FLG=0 (no name), MTIME=0, XFL, OS=255
        assert_eq!(&out[..8], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0]);
        assert_eq!(out[9], 255);
    }
}
