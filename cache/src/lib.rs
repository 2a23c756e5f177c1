//! rbuild's on-disk store: content-addressed blobs, snapshots, cache records and image names.
//!
//! Layout under the store root (`--root`, `$RBUILD_ROOT`, `/var/lib/rbuild`):
//!
//! ```text
//! v1/
//!   lock                      flock: shared by every open store (builds), exclusive for GC
//!   blobs/sha256/<hex>        compressed layers, image configs, manifests (verified on write)
//!   snapshots/<id>/diff/      one filesystem diff in overlayfs upper-dir format
//!   snapshots/<id>/meta.json  what is known of it: diff id, compressed blob (once packed)
//!   snapshots/<id>/size       disk usage of diff/ in bytes, measured at commit
//!   records/<key>.json        cache key -> build result (a chain of snapshot ids); mtime = last use
//!   images/<sha256(name)>.json  image name -> manifest digest; mtime = last use
//!   explain/                  what each Dockerfile step's last key was made of (`--explain`,
//!                             written by the CLI; losing it only costs explanations)
//!   tmp/<pid>-<n>/            one open store's work in progress; never read by others
//!   tmp/<pid>-<n>.lock        flock held by that store; lockable = owner dead = area stale
//! ```
//!
//! Every publication is a rename of a fully written file or directory inside the same
//! filesystem, so a build killed at any instant leaves either the old state or the new one,
//! plus garbage under `tmp/` that the next [`Store::open`] reaps. Two builds publishing the same
//! blob, snapshot or record race benignly: names are content or cache-key addressed, so either
//! copy is right (a snapshot rename that finds the name taken keeps the other). Readers verify
//! blob digests, so a torn file cannot be mistaken for good content.
//!
//! With [`StoreOptions::durable`] (the default), blobs are fsynced before they are published
//! and directories after records, image names, snapshot metadata and snapshots are, so a power
//! loss cannot leave a name pointing at lost data. A blob's own directory entry is not synced:
//! the directory sync after the record or image that names it commits it too on journaling
//! filesystems, which commit metadata in order (ext4, xfs). Snapshot file contents are not
//! synced.
//!
//! Concurrency: builds open the store with [`LockMode::Shared`] and hold it while they run;
//! [`Store::gc`] needs [`LockMode::Exclusive`], so it never deletes what a build is using.
//! [`Store::verify`] and [`Store::usage`] work under either.

mod blobs;
mod error;
mod fsutil;
mod gc;
mod images;
mod lock;
mod records;
mod snapshots;
mod store;
#[cfg(test)]
mod testutil;
mod tmp;
mod verify;

pub use blobs::{BlobWriter, Digest};
pub use error::{Error, Result};
pub use gc::{GcOptions, GcReport, Usage};
pub use images::ImageRecord;
pub use lock::{LockMode, StoreOptions};
pub use records::{Record, RecordLayer};
pub use snapshots::{PreparedSnapshot, SnapshotMeta};
pub use store::{RecordInfo, Store};
pub use verify::{Problem, ProblemKind, VerifyOptions, VerifyReport};
