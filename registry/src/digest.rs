//! Hashing content as it streams, and the one place digests are compared.

use oci_spec::image::{Descriptor, Digest, DigestAlgorithm};
use sha2::{Digest as _, Sha256, Sha384, Sha512};

use crate::error::{Error, Result};

/// Hashes bytes with the algorithm of an expected digest and counts them.
#[derive(Clone)]
pub struct DigestHasher {
    inner: Inner,
    len: u64,
}

#[derive(Clone)]
enum Inner {
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl std::fmt::Debug for DigestHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let algorithm = match self.inner {
            Inner::Sha256(_) => "sha256",
            Inner::Sha384(_) => "sha384",
            Inner::Sha512(_) => "sha512",
        };
        f.debug_struct("DigestHasher").field("algorithm", &algorithm).field("len", &self.len).finish()
    }
}

impl DigestHasher {
    /// A SHA-256 hasher (for content whose digest we compute rather than check).
    pub fn sha256() -> Self {
        Self { inner: Inner::Sha256(Sha256::new()), len: 0 }
    }

    /// A hasher for the algorithm `expected` uses.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedDigest`] for algorithms other than sha256, sha384 and sha512.
    pub fn for_digest(expected: &Digest) -> Result<Self> {
        let inner = match expected.algorithm() {
            DigestAlgorithm::Sha256 => Inner::Sha256(Sha256::new()),
            DigestAlgorithm::Sha384 => Inner::Sha384(Sha384::new()),
            DigestAlgorithm::Sha512 => Inner::Sha512(Sha512::new()),
            _ => return Err(Error::UnsupportedDigest { digest: expected.clone() }),
        };
        Ok(Self { inner, len: 0 })
    }

    /// Feeds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.inner {
            Inner::Sha256(h) => h.update(bytes),
            Inner::Sha384(h) => h.update(bytes),
            Inner::Sha512(h) => h.update(bytes),
        }
        self.len += bytes.len() as u64;
    }

    /// How many bytes were fed.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest of everything fed.
    ///
    /// # Panics
    ///
    /// Never in practice: the hex of a SHA-2 output always forms a valid [`Digest`].
    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self.inner {
            Inner::Sha256(h) => ("sha256", hex::encode(h.finalize())),
            Inner::Sha384(h) => ("sha384", hex::encode(h.finalize())),
            Inner::Sha512(h) => ("sha512", hex::encode(h.finalize())),
        };
        // Lowercase hex of the algorithm's exact output length is what Digest requires.
        Digest::try_from(format!("{algorithm}:{hex}"))
            .expect("a SHA-2 hex digest of the right length is a valid Digest")
    }
}

/// Checks that the hashed bytes have the digest `expected`. This is the only digest comparison
/// in the crate.
///
/// # Errors
///
/// [`Error::DigestMismatch`], with `found` computed from the bytes.
pub fn verify(expected: &Digest, hasher: DigestHasher) -> Result<()> {
    let found = hasher.finish();
    if &found == expected {
        Ok(())
    } else {
        Err(Error::DigestMismatch { expected: expected.clone(), found })
    }
}

/// Checks size, then digest, against a descriptor.
///
/// # Errors
///
/// [`Error::SizeMismatch`] (checked first: it is the more useful message when both differ),
/// then [`Error::DigestMismatch`].
pub fn verify_descriptor(expected: &Descriptor, hasher: DigestHasher) -> Result<()> {
    if hasher.len() != expected.size() {
        return Err(Error::SizeMismatch {
            digest: expected.digest().clone(),
            expected: expected.size(),
            found: hasher.len(),
        });
    }
    verify(expected.digest(), hasher)
}

/// Digest of a byte slice with `expected`'s algorithm, checked against it.
pub(crate) fn verify_bytes(expected: &Digest, bytes: &[u8]) -> Result<()> {
    let mut hasher = DigestHasher::for_digest(expected)?;
    hasher.update(bytes);
    verify(expected, hasher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::MediaType;

    const EMPTY_SHA256: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const ABC_SHA256: &str = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    fn d(s: &str) -> Digest {
        s.parse().expect("test digest")
    }

    fn hashed(bytes: &[u8], algo: &Digest) -> DigestHasher {
        let mut h = DigestHasher::for_digest(algo).expect("supported");
        // Feed in pieces: streaming must give the same answer as one update.
        for chunk in bytes.chunks(2) {
            h.update(chunk);
        }
        h
    }

    #[test]
    fn verify_table() {
        assert!(verify(&d(EMPTY_SHA256), DigestHasher::sha256()).is_ok());
        assert!(verify(&d(ABC_SHA256), hashed(b"abc", &d(ABC_SHA256))).is_ok());
        let err = verify(&d(ABC_SHA256), hashed(b"abd", &d(ABC_SHA256))).expect_err("mismatch");
        match err {
            Error::DigestMismatch { expected, found } => {
                assert_eq!(expected, d(ABC_SHA256));
                assert_ne!(found, expected);
                assert_eq!(found.algorithm(), &DigestAlgorithm::Sha256);
            }
            other => panic!("wrong error {other:?}"),
        }
        let sha512 = d(&format!("sha512:{}", "0".repeat(128)));
        let err = verify(&sha512, hashed(b"abc", &sha512)).expect_err("mismatch");
        assert!(matches!(err, Error::DigestMismatch { found, .. } if found.algorithm() == &DigestAlgorithm::Sha512));
    }

    #[test]
    fn descriptor_checks_size_first() {
        let desc = Descriptor::new(MediaType::ImageLayer, 4, d(ABC_SHA256));
        let err = verify_descriptor(&desc, hashed(b"abc", &d(ABC_SHA256))).expect_err("size");
        assert!(matches!(err, Error::SizeMismatch { expected: 4, found: 3, .. }), "{err:?}");
        let desc = Descriptor::new(MediaType::ImageLayer, 3, d(ABC_SHA256));
        assert!(verify_descriptor(&desc, hashed(b"abc", &d(ABC_SHA256))).is_ok());
        assert!(verify_bytes(&d(ABC_SHA256), b"abc").is_ok());
    }

    #[test]
    fn unsupported_algorithm() {
        let other = d("blake3:abcd");
        assert!(matches!(DigestHasher::for_digest(&other), Err(Error::UnsupportedDigest { .. })));
    }
}
