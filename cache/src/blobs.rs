//! Content-addressed blobs: written through a hashing temp file, published by rename.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::{Error, IoContext, Result};

pub use oci_spec::image::Digest;

/// The lowercase hex of a sha256 digest, or an error for any other algorithm.
pub(crate) fn sha256_hex(d: &Digest) -> Result<&str> {
    if d.algorithm().as_ref() != "sha256" {
        return Err(Error::InvalidDigest(d.to_string()));
    }
    let hex = d.digest();
    if !is_sha256_hex(hex) {
        return Err(Error::InvalidDigest(d.to_string()));
    }
    Ok(hex)
}

/// True for 64 lowercase hex digits: the file name of a sha256 blob.
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The digest named by a blob file name (see [`is_sha256_hex`]).
pub(crate) fn digest_from_hex(hex: &str) -> Option<Digest> {
    if !is_sha256_hex(hex) {
        return None;
    }
    format!("sha256:{hex}").parse().ok()
}

/// Builds a sha256 [`Digest`] from raw hash bytes.
pub(crate) fn digest_of(hash: [u8; 32]) -> Digest {
    let s = format!("sha256:{}", hex::encode(hash));
    // A sha256 prefix plus 64 hex digits always parses.
    s.parse().unwrap_or_else(|_| unreachable!("sha256 digest {s} must parse"))
}

/// Streams a blob into the store: bytes are hashed as they are written into a temp file, and
/// [`BlobWriter::commit`] publishes the file under its digest.
#[derive(Debug)]
pub struct BlobWriter {
    file: std::fs::File,
    tmp: PathBuf,
    blobs_dir: PathBuf,
    hasher: Sha256,
    size: u64,
    durable: bool,
}

impl BlobWriter {
    pub(crate) fn create(tmp_dir: &Path, blobs_dir: &Path, durable: bool) -> Result<BlobWriter> {
        let tmp = crate::store::unique_tmp_path(tmp_dir, "blob");
        let file = std::fs::File::create_new(&tmp).at(&tmp)?;
        Ok(BlobWriter { file, tmp, blobs_dir: blobs_dir.to_owned(), hasher: Sha256::new(), size: 0, durable })
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Publishes the blob and returns its digest and size. When `expected` is given and the
    /// content differs, nothing is published and [`Error::DigestMismatch`] is returned.
    ///
    /// Two writers committing the same content race benignly: the later rename replaces the
    /// earlier file with identical bytes, and readers holding the old file keep reading it.
    pub fn commit(mut self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        self.file.flush().at(&self.tmp)?;
        let hasher = std::mem::take(&mut self.hasher);
        let found = digest_of(hasher.finalize().into());
        if let Some(expected) = expected {
            if expected != &found {
                let _ = std::fs::remove_file(&self.tmp);
                return Err(Error::DigestMismatch { expected: expected.to_string(), found: found.to_string() });
            }
        }
        if self.durable {
            // The content must be on disk before any name can point at it.
            self.file.sync_data().at(&self.tmp)?;
        }
        let dest = self.blobs_dir.join(sha256_hex(&found)?);
        std::fs::rename(&self.tmp, &dest).at(&dest)?;
        Ok((found, self.size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        // Hash only what actually reached the file.
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // After a successful commit the temp path no longer exists; otherwise clean up.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Hashes a file's content (for verification of stored blobs).
pub(crate) fn hash_file(path: &Path) -> Result<Digest> {
    let mut f = std::fs::File::open(path).at(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = io::Read::read(&mut f, &mut buf).at(path)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(digest_of(h.finalize().into()))
}
