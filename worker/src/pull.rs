//! Image sources: resolve, fetch the layer blobs the store lacks (all at once), unpack each into
//! a snapshot named by its diff id, verified against the image config.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::try_join_all;
use rbuild_cache::{BlobWriter, RecordLayer, SnapshotMeta};
use rbuild_exporter::layer::{unpack, UnpackOptions};
use rbuild_registry::oci_spec::image::{Descriptor, Digest};
use rbuild_registry::Reference;
use rbuild_solver::ir::Platform;
use rbuild_solver::Progress;

use crate::error::WorkerError;
use crate::LocalWorker;

/// The registry client's platform for ours.
pub fn registry_platform(p: &Platform) -> rbuild_registry::Platform {
    rbuild_registry::Platform::new(&p.os, &p.architecture, p.variant.as_deref())
}

/// Pulls `reference` (pinned to `digest` when given) and returns its layer chain, lowest first.
pub async fn pull(
    w: &LocalWorker,
    reference: &str,
    digest: Option<&str>,
    platform: &Platform,
    progress: &Progress,
) -> Result<Vec<RecordLayer>, WorkerError> {
    if reference.starts_with(crate::oci_layout::PREFIX) {
        return crate::oci_layout::pull(w, reference, digest, platform).await;
    }
    let bad_ref = |source| WorkerError::BadReference { reference: reference.to_owned(), source };
    let mut r: Reference = reference.parse().map_err(bad_ref)?;
    if let Some(d) = digest {
        let d: Digest = d.parse().map_err(|_| WorkerError::Internal(format!("invalid digest {d}")))?;
        r = r.with_digest(d);
    }
    let pull_err = |source| WorkerError::Pull { reference: reference.to_owned(), source };
    let resolved = w.registry.resolve(&r, &registry_platform(platform)).await.map_err(pull_err)?;
    let diff_ids = resolved.config.rootfs().diff_ids().clone();
    let layers = resolved.manifest.layers().clone();
    if diff_ids.len() != layers.len() {
        return Err(WorkerError::Internal(format!(
            "image {reference} has {} layers but {} diff ids in its config",
            layers.len(),
            diff_ids.len()
        )));
    }
    let total = layers.len();
    let jobs = layers.iter().zip(&diff_ids).enumerate().map(|(i, (desc, diff_id))| {
        let r = &r;
        async move {
            let id = snapshot_id(diff_id)?;
            if w.store.has_snapshot(&id) {
                return Ok::<_, WorkerError>(id);
            }
            progress.status(format!("pulling layer {}/{total} {}", i + 1, desc.digest()));
            fetch(w, r, desc, reference).await?;
            unpack_layer(w, desc, diff_id, &id).await?;
            Ok(id)
        }
    });
    let ids = try_join_all(jobs).await?;
    Ok(ids.into_iter().map(|id| RecordLayer { id, producer: None }).collect())
}

impl LocalWorker {
    /// Downloads the blob `desc` names from `reference`'s repository into the store, unless the
    /// store has it already; verified as it streams, never held in memory.
    pub async fn fetch_blob(&self, reference: &Reference, desc: &Descriptor) -> Result<(), WorkerError> {
        fetch(self, reference, desc, &reference.to_string()).await
    }
}

/// Pulled layers are named by their diff id's hex: the same layer in two images is one snapshot.
pub(crate) fn snapshot_id(diff_id: &str) -> Result<String, WorkerError> {
    diff_id
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned)
        .ok_or_else(|| WorkerError::Internal(format!("unsupported diff id {diff_id}")))
}

pub(crate) async fn fetch(
    w: &LocalWorker,
    r: &Reference,
    desc: &Descriptor,
    reference: &str,
) -> Result<(), WorkerError> {
    if w.store.has_blob(desc.digest())? {
        return Ok(());
    }
    let mut sink = SyncSink(w.store.blob_writer()?);
    w.registry
        .fetch_blob(r, desc, &mut sink)
        .await
        .map_err(|source| WorkerError::Pull { reference: reference.to_owned(), source })?;
    // fetch_blob verified digest and size while streaming; commit checks the digest again.
    sink.0.commit(Some(desc.digest()))?;
    Ok(())
}

pub(crate) async fn unpack_layer(
    w: &LocalWorker,
    desc: &Descriptor,
    diff_id: &str,
    id: &str,
) -> Result<(), WorkerError> {
    let store = w.store.clone();
    let (desc, diff_id, id) = (desc.clone(), diff_id.to_owned(), id.to_owned());
    tokio::task::spawn_blocking(move || -> Result<(), WorkerError> {
        let prepared = store.prepare_snapshot()?;
        let blob = store.open_blob(desc.digest())?;
        // In a single-id user namespace (rootless without subordinate ids) no owner but 0
        // exists: files are unpacked as 0, and the image keeps the layer's own owners, since
        // its blob is what gets exported.
        let mut options = UnpackOptions::default();
        if rbuild_executor::rootless::current().is_some_and(|r| r.map == rbuild_executor::rootless::IdMap::Single) {
            options.chown(false);
        }
        let unpacked = unpack(std::io::BufReader::with_capacity(1 << 20, blob), &prepared.diff(), &options)
            .map_err(|source| WorkerError::Unpack { digest: desc.digest().to_string(), source })?;
        if unpacked.diff_id.to_string() != diff_id {
            return Err(WorkerError::DiffIdMismatch {
                digest: desc.digest().to_string(),
                expected: diff_id,
                found: unpacked.diff_id.to_string(),
            });
        }
        let meta = SnapshotMeta {
            diff_id: Some(unpacked.diff_id),
            blob: Some(desc.digest().clone()),
            blob_size: desc.size(),
            media_type: Some(desc.media_type().to_string()),
        };
        store.commit_snapshot(prepared, &id, &meta)?;
        Ok(())
    })
    .await
    .map_err(|e| WorkerError::Internal(e.to_string()))?
}

/// Lets the async fetch write into the store's (blocking) blob writer. Writes go to a local
/// file in page-cache-sized chunks, which does not stall the runtime meaningfully.
struct SyncSink(BlobWriter);

impl tokio::io::AsyncWrite for SyncSink {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Poll::Ready(self.get_mut().0.write(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.get_mut().0.flush())
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
