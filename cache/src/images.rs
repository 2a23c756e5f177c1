//! Image names in the local store.

use serde::{Deserialize, Serialize};

use crate::blobs::Digest;

/// A named image: the tag and the manifest it points to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Full normalized name, e.g. `docker.io/library/demo:1.0`.
    pub name: String,
    /// Digest of the image manifest (a blob in the store).
    pub manifest: Digest,
    /// Size of the manifest.
    pub manifest_size: u64,
    /// Digest of the image config.
    pub config: Digest,
    /// Total compressed size of the layers.
    pub size: u64,
    /// When the name was written (unix seconds).
    pub created: i64,
}
