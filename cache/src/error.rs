//! Store errors.

use std::path::PathBuf;

/// Result alias for store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A filesystem operation on the store failed.
    #[error("store I/O on {path}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Written or read content does not have the digest it should.
    #[error("digest mismatch: expected {expected}, found {found}")]
    DigestMismatch {
        /// The digest that was asked for.
        expected: String,
        /// The digest of the content.
        found: String,
    },
    /// A digest string is not `sha256:<64 hex>`.
    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
    InvalidDigest(String),
    /// A metadata file could not be decoded.
    #[error("corrupt store record {path}")]
    CorruptRecord {
        /// The record.
        path: PathBuf,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// Another process holds the store lock in a conflicting mode, and the caller asked not to
    /// wait ([`StoreOptions::wait`](crate::StoreOptions::wait) is false).
    #[error("{}", locked_message(path, *wanted))]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The mode that could not be taken.
        wanted: crate::LockMode,
    },
    /// A store file that decides what is live cannot be read, so what it references is
    /// unknown; garbage collection refuses to guess.
    #[error("cannot read {path} ({reason}); garbage collection needs it repaired or removed first")]
    Unreadable {
        /// The image name file or manifest.
        path: PathBuf,
        /// Why it cannot be read.
        reason: String,
    },
    /// The operation changes what other processes may be using, so it needs the store opened
    /// with [`LockMode::Exclusive`](crate::LockMode::Exclusive).
    #[error("{operation} needs the store opened exclusively (LockMode::Exclusive), so that no build is using it")]
    NotExclusive {
        /// What was attempted, e.g. "garbage collection".
        operation: &'static str,
    },
}

fn locked_message(path: &std::path::Path, wanted: crate::LockMode) -> String {
    match wanted {
        crate::LockMode::Exclusive => {
            format!("the store is in use by running builds (locked through {})", path.display())
        }
        crate::LockMode::Shared => format!("the store is being garbage-collected (locked through {})", path.display()),
    }
}

/// Attaches a path to an I/O error.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Io { path: path.into(), source })
    }
}
