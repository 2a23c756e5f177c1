//! Cache keys.
//!
//! A vertex's key is the sha256 of a versioned tag, its op id, the keys of its inputs (in the
//! op's input order) and, for ops that read outside the graph (the build context), a digest of
//! that content. Because a key depends on its inputs' *keys* and not on their results, the key
//! of every vertex is known before anything runs: a fully cached build checks the target's key
//! and executes nothing, not even a pull.

use std::fmt;

use sha2::{Digest as _, Sha256};

use crate::ir::OpId;

/// Bump when the key derivation changes: old records then simply miss.
const KEY_TAG: &[u8] = b"rbuild.key.v1\0";

/// Identity of a vertex's result across builds.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// Derives a key from an op id, its inputs' keys and an optional content digest.
    pub fn derive(op: &OpId, inputs: &[CacheKey], content: Option<&[u8; 32]>) -> CacheKey {
        let mut h = Sha256::new();
        h.update(KEY_TAG);
        h.update(op.0);
        h.update((inputs.len() as u64).to_le_bytes());
        for k in inputs {
            h.update(k.0);
        }
        match content {
            Some(c) => {
                h.update([1u8]);
                h.update(c);
            }
            None => h.update([0u8]),
        }
        CacheKey(h.finalize().into())
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", &self.to_hex()[..12])
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_pinned() {
        // If this changes, every stored record is orphaned: bump KEY_TAG on purpose instead.
        let k = CacheKey::derive(&OpId([0; 32]), &[], None);
        assert_eq!(k.to_hex(), "40d00a7c59cf4a3e4269d1ae1740542edcbc6734380545af90f04d62e5d67992");
        let with_content = CacheKey::derive(&OpId([0; 32]), &[], Some(&[0; 32]));
        assert_ne!(k, with_content);
        let with_input = CacheKey::derive(&OpId([0; 32]), &[k], None);
        assert_ne!(k, with_input);
    }
}
