//! SHA-256 plumbing shared by layers and layouts: hashing writers/readers that
//! hash only the bytes that actually went through, and a reader that insists
//! on an exact length (a tar header promises a size before the data arrives).

use std::io::{self, Read, Write};

use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};

/// The `sha256:<hex>` digest of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> Digest {
    let mut hasher = Sha256::new();
    hasher.update(bytes);
    finish_digest(hasher)
}

/// Turns a finished hasher into a typed digest.
pub(crate) fn finish_digest(hasher: Sha256) -> Digest {
    let hex = hex::encode(hasher.finalize());
    // A sha256 hex string of our own making always parses.
    Digest::try_from(format!("sha256:{hex}")).expect("sha256 hex is a valid digest")
}

/// A writer that hashes and counts what the inner writer accepted.
#[derive(Debug)]
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self { inner, hasher: Sha256::new(), count: 0 }
    }

    /// Returns the inner writer, the digest and the number of bytes written.
    pub(crate) fn finish(self) -> (W, Digest, u64) {
        (self.inner, finish_digest(self.hasher), self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts what it hands out.
#[derive(Debug)]
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        Self { inner, hasher: Sha256::new(), count: 0 }
    }

    /// The wrapped reader.
    pub(crate) fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Returns the digest and the number of bytes read so far.
    pub(crate) fn finish(self) -> (Digest, u64) {
        (finish_digest(self.hasher), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Yields exactly `len` bytes of `inner`: fails with `UnexpectedEof` if it
/// ends early and stops at `len` if it is longer. Remembers whether a failure
/// came from reading, so callers can tell a bad source from a bad sink.
#[derive(Debug)]
pub(crate) struct ExactReader<R> {
    inner: R,
    remaining: u64,
    pub(crate) read_failed: bool,
}

impl<R: Read> ExactReader<R> {
    pub(crate) fn new(inner: R, len: u64) -> Self {
        Self { inner, remaining: len, read_failed: false }
    }
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.remaining).unwrap_or(usize::MAX).min(buf.len());
        let n = match self.inner.read(&mut buf[..want]) {
            Ok(0) => {
                self.read_failed = true;
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("source ended {} bytes before its declared size", self.remaining),
                ));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                self.read_failed = true;
                return Err(e);
            }
        };
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_digest_is_well_known() {
        assert_eq!(
            sha256_digest(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn hashing_writer_matches_one_shot() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (out, digest, n) = w.finish();
        assert_eq!(out, b"hello world");
        assert_eq!(n, 11);
        assert_eq!(digest, sha256_digest(b"hello world"));
    }

    #[test]
    fn exact_reader_rejects_short_and_truncates_long() {
        let mut short = ExactReader::new(&b"abc"[..], 5);
        let mut sink = Vec::new();
        assert!(io::copy(&mut short, &mut sink).is_err());
        assert!(short.read_failed);

        let mut long = ExactReader::new(&b"abcdef"[..], 3);
        let mut sink = Vec::new();
        io::copy(&mut long, &mut sink).unwrap();
        assert_eq!(sink, b"abc");
    }
}
