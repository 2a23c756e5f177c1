//! Where output writers read blobs from.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use oci_spec::image::Digest;

use crate::hash::sha256_digest;

/// A content-addressed blob store that output writers stream from.
///
/// Implementations return the blob's reader and its size; a missing blob is
/// an error of kind [`io::ErrorKind::NotFound`]. Writers verify size and
/// digest themselves, so a source need not.
pub trait BlobSource {
    /// Opens the blob `digest`.
    fn open(&self, digest: &Digest) -> io::Result<(Box<dyn Read + '_>, u64)>;
}

impl<T: BlobSource + ?Sized> BlobSource for &T {
    fn open(&self, digest: &Digest) -> io::Result<(Box<dyn Read + '_>, u64)> {
        (**self).open(digest)
    }
}

/// Two sources: the first is asked, then the second for what the first lacks.
impl<A: BlobSource, B: BlobSource> BlobSource for (A, B) {
    fn open(&self, digest: &Digest) -> io::Result<(Box<dyn Read + '_>, u64)> {
        match self.0.open(digest) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.1.open(digest),
            other => other,
        }
    }
}

/// Small blobs (configs, manifests) held in memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryBlobs {
    blobs: HashMap<Digest, Vec<u8>>,
}

impl MemoryBlobs {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `bytes` and returns their sha256 digest.
    pub fn insert(&mut self, bytes: Vec<u8>) -> Digest {
        let digest = sha256_digest(&bytes);
        self.blobs.insert(digest.clone(), bytes);
        digest
    }
}

impl BlobSource for MemoryBlobs {
    fn open(&self, digest: &Digest) -> io::Result<(Box<dyn Read + '_>, u64)> {
        let bytes = self.blobs.get(digest).ok_or_else(|| not_found(digest))?;
        Ok((Box::new(bytes.as_slice()), bytes.len() as u64))
    }
}

/// Blobs in an OCI layout directory: `<root>/blobs/<algorithm>/<encoded>`.
#[derive(Debug, Clone)]
pub struct LayoutBlobs {
    root: PathBuf,
}

impl LayoutBlobs {
    /// Reads blobs below `root` (the directory holding `blobs/`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Where the blob `digest` lives. Digests are validated when parsed (no
    /// `/` or `..` can appear), so the path stays below `root`.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join(digest.algorithm().as_ref()).join(digest.digest())
    }
}

impl BlobSource for LayoutBlobs {
    fn open(&self, digest: &Digest) -> io::Result<(Box<dyn Read + '_>, u64)> {
        let file = File::open(self.path(digest))?;
        let size = file.metadata()?.len();
        Ok((Box::new(file), size))
    }
}

fn not_found(digest: &Digest) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("blob {digest} not found"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_falls_back_on_not_found() {
        let mut a = MemoryBlobs::new();
        let mut b = MemoryBlobs::new();
        let da = a.insert(b"a".to_vec());
        let db = b.insert(b"b".to_vec());
        let both = (a, b);
        let mut s = String::new();
        both.open(&db).unwrap().0.read_to_string(&mut s).unwrap();
        assert_eq!(s, "b");
        assert_eq!(both.open(&da).unwrap().1, 1);
        let missing = sha256_digest(b"c");
        assert_eq!(both.open(&missing).err().map(|e| e.kind()), Some(io::ErrorKind::NotFound));
    }
}
