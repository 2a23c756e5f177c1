//! Turning a build result into an image: pack the layers the store has no blob for (in
//! parallel), then write config and manifest into the store.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::try_join_all;
use rbuild_cache::{RecordLayer, SnapshotMeta, Store};
use rbuild_exporter::layer::{pack, Compression, PackOptions, PackedLayer};
use rbuild_exporter::oci::{BuiltImage, ImageBuilder};
use rbuild_exporter::oci_spec::image::{Arch, Config, HistoryBuilder, ImageConfiguration, MediaType, Os};
use rbuild_solver::ir::{OpId, Platform};

use crate::error::WorkerError;
use crate::{LocalWorker, Snapshot};

/// One history entry of the new image.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    /// `RUN /bin/sh -c make # buildkit`.
    pub created_by: String,
    /// Optional comment.
    pub comment: Option<String>,
    /// The op whose layer this step added, if it can add one.
    pub layer_op: Option<OpId>,
}

/// What the image is made of besides its filesystem.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// The base image's config (`None` for `FROM scratch`).
    pub base: Option<ImageConfiguration>,
    /// The final runtime config (Env, Cmd, Entrypoint, WorkingDir...).
    pub runtime: Config,
    /// New history entries, in order.
    pub history: Vec<HistoryEntry>,
    /// The image platform.
    pub platform: Platform,
    /// `created` timestamp (RFC 3339); `None` leaves it out.
    pub created: Option<String>,
    /// `MAINTAINER` (or the base image's author).
    pub author: Option<String>,
    /// Docker-only runtime config fields the OCI type has no place for (`Healthcheck`,
    /// `OnBuild`, `Shell`, `ArgsEscaped`), merged into the config object.
    pub extra_config: serde_json::Map<String, serde_json::Value>,
    /// How new layers are compressed.
    pub compression: Compression,
    /// Re-compress layers that already have a blob in another format (`force-compression`).
    pub force_compression: bool,
    /// OCI media types (default) or Docker's.
    pub oci_mediatypes: bool,
}

fn arch(p: &Platform) -> Arch {
    Arch::from(p.architecture.as_str())
}

impl LocalWorker {
    /// Packs every layer of `snap` that has no blob yet, on blocking threads in parallel, and
    /// returns each layer's blob description.
    async fn ensure_blobs(
        &self,
        snap: &Snapshot,
        compression: Compression,
        force: bool,
    ) -> Result<Vec<PackedLayer>, WorkerError> {
        let jobs = snap.chain.iter().map(|layer| {
            let store = self.store.clone();
            let id = layer.id.clone();
            async move {
                tokio::task::spawn_blocking(move || ensure_blob(&store, &id, compression, force))
                    .await
                    .map_err(|e| WorkerError::Internal(e.to_string()))?
            }
        });
        try_join_all(jobs).await
    }

    /// Writes the image for `snap` into the store (layers, config, manifest) and returns it.
    pub async fn commit_image(&self, snap: &Snapshot, spec: &ImageSpec) -> Result<BuiltImage, WorkerError> {
        let packed = self.ensure_blobs(snap, spec.compression, spec.force_compression).await?;
        let base_len = spec.base.as_ref().map_or(0, |c| c.rootfs().diff_ids().len());
        if base_len > packed.len() {
            return Err(WorkerError::Internal(format!(
                "result has {} layers, fewer than its base image's {base_len}",
                packed.len()
            )));
        }
        let mut builder = match &spec.base {
            Some(base) => {
                ImageBuilder::new(base.clone(), packed[..base_len].iter().map(PackedLayer::descriptor).collect())
            }
            None => ImageBuilder::scratch(arch(&spec.platform), Os::Linux),
        };
        builder.config_mut().set_architecture(arch(&spec.platform));
        builder.config_mut().set_os(Os::from(spec.platform.os.as_str()));
        builder.config_mut().set_variant(spec.platform.variant.clone());
        builder.set_runtime_config(spec.runtime.clone());
        builder.set_created(spec.created.clone());
        builder.config_mut().set_author(spec.author.clone());
        builder.oci_mediatypes(spec.oci_mediatypes);
        builder.extra_config_mut().extend(spec.extra_config.clone());

        // New layers, by the op that produced them.
        let new_layers: HashMap<&str, &PackedLayer> = snap.chain[base_len..]
            .iter()
            .zip(&packed[base_len..])
            .filter_map(|(l, p): (&RecordLayer, _)| l.producer.as_deref().map(|op| (op, p)))
            .collect();
        let mut used = 0;
        for h in &spec.history {
            let mut entry = HistoryBuilder::default().created_by(h.created_by.clone());
            if let Some(c) = &h.comment {
                entry = entry.comment(c.clone());
            }
            if let Some(created) = &spec.created {
                entry = entry.created(created.clone());
            }
            let entry = entry.build().map_err(|e| WorkerError::Internal(e.to_string()))?;
            match h.layer_op.and_then(|op| new_layers.get(op.to_hex().as_str())) {
                Some(layer) => {
                    builder.add_layer(layer, entry);
                    used += 1;
                }
                None => {
                    builder.add_history(entry);
                }
            }
        }
        if used != new_layers.len() || new_layers.len() != packed.len() - base_len {
            return Err(WorkerError::Internal(format!(
                "{} new layers but {used} history entries claim one",
                packed.len() - base_len
            )));
        }
        let built = builder.build().map_err(|e| WorkerError::Internal(e.to_string()))?;
        self.store.put_blob(&built.config_json, Some(built.config.digest()))?;
        self.store.put_blob(&built.manifest_json, Some(built.manifest.digest()))?;
        Ok(built)
    }

    /// The store, as a blob source for writing outputs.
    pub fn blob_source(&self) -> rbuild_exporter::oci::LayoutBlobs {
        rbuild_exporter::oci::LayoutBlobs::new(self.store.root())
    }
}

/// The blob of snapshot `id`: recorded in its metadata, or packed now (gzip) and recorded.
fn ensure_blob(
    store: &Arc<Store>,
    id: &str,
    compression: Compression,
    force: bool,
) -> Result<PackedLayer, WorkerError> {
    let meta = store.snapshot_meta(id)?;
    let wanted = compression.media_type().to_string();
    if let (Some(diff_id), Some(blob)) = (&meta.diff_id, &meta.blob) {
        // A pulled layer keeps its blob (as BuildKit does) unless re-compression is forced.
        let same_format = meta
            .media_type
            .as_deref()
            .is_none_or(|m| m == wanted || m.ends_with(".diff.tar.gzip") && wanted.ends_with("tar+gzip"));
        if store.has_blob(blob)? && (!force || same_format) {
            let media_type = meta.media_type.as_deref().map_or(MediaType::ImageLayerGzip, MediaType::from);
            return Ok(PackedLayer {
                diff_id: diff_id.clone(),
                digest: blob.clone(),
                size: meta.blob_size,
                media_type,
                entries: 1,
            });
        }
    }
    let diff = store.snapshot_diff(id);
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, store.blob_writer()?);
    let mut opts = PackOptions::default();
    opts.compression(compression);
    let packed =
        pack(&diff, &mut writer, &opts).map_err(|e| WorkerError::Internal(format!("packing snapshot {id}: {e}")))?;
    let writer = writer.into_inner().map_err(|e| WorkerError::Io { path: diff.clone(), source: e.into_error() })?;
    writer.commit(Some(&packed.digest))?;
    let meta = SnapshotMeta {
        diff_id: Some(packed.diff_id.clone()),
        blob: Some(packed.digest.clone()),
        blob_size: packed.size,
        media_type: Some(packed.media_type.to_string()),
    };
    store.set_snapshot_meta(id, &meta)?;
    Ok(packed)
}
