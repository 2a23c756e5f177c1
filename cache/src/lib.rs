//! rbuild's on-disk store: content-addressed blobs, snapshots, cache records and image names.
//!
//! Layout under the store root (`--root`, `$RBUILD_ROOT`, `/var/lib/rbuild`):
//!
//! ```text
//! v1/
//!   blobs/sha256/<hex>        compressed layers, image configs, manifests (verified on write)
//!   snapshots/<id>/diff/      one filesystem diff in overlayfs upper-dir format
//!   snapshots/<id>/meta.json  what is known of it: diff id, compressed blob (once packed)
//!   records/<key>.json        cache key -> build result (a chain of snapshot ids)
//!   images/<sha256(name)>.json  image name -> manifest digest
//!   tmp/                      work in progress; never read, removed on open
//! ```
//!
//! Every publication is a rename of a fully written file or directory inside the same
//! filesystem, so a build killed at any instant leaves either the old state or the new one,
//! plus garbage under `tmp/`. Readers verify blob digests, so a torn file cannot be mistaken for
//! good content.

mod blobs;
mod error;
mod images;
mod records;
mod snapshots;
mod store;

pub use blobs::{BlobWriter, Digest};
pub use error::{Error, Result};
pub use images::ImageRecord;
pub use records::{Record, RecordLayer};
pub use snapshots::{PreparedSnapshot, SnapshotMeta};
pub use store::Store;
