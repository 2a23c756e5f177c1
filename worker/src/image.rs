//! Turning a build result into an image: pack the layers the store has no blob for (in
//! parallel), then write config and manifest into the store.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::try_join_all;
use rbuild_cache::{RecordLayer, SnapshotMeta, Store};
use rbuild_exporter::layer::{
    pack_with, BlockCache, BlockKey, CachedBlock, Compression, GzipBlock, PackOptions, PackedLayer,
};
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
    /// `rewrite-timestamp` with `SOURCE_DATE_EPOCH`: the layers this build made are packed with
    /// every mtime later than this (seconds since the epoch) written as it. Base-image layers
    /// keep their blobs.
    pub clamp_mtimes: Option<i64>,
    /// Annotations of the image manifest (`--annotation`).
    pub annotations: std::collections::BTreeMap<String, String>,
}

fn arch(p: &Platform) -> Arch {
    Arch::from(p.architecture.as_str())
}

impl LocalWorker {
    /// Packs every layer of `snap` that has no blob yet, on blocking threads in parallel, and
    /// returns each layer's blob description.
    pub(crate) async fn ensure_blobs(
        &self,
        snap: &Snapshot,
        compression: Compression,
        force: bool,
        clamp_mtimes: Option<i64>,
    ) -> Result<Vec<PackedLayer>, WorkerError> {
        let jobs = snap.chain.iter().map(|layer| {
            let store = self.store.clone();
            let id = layer.id.clone();
            let producer = layer.producer.clone();
            async move {
                tokio::task::spawn_blocking(move || match (clamp_mtimes, producer) {
                    // A layer this build's ops made (not a pulled one).
                    (Some(epoch), Some(_)) => pack_clamped(&store, &id, compression, epoch),
                    (_, producer) => ensure_blob(&store, &id, producer.as_deref(), compression, force),
                })
                .await
                .map_err(|e| WorkerError::Internal(e.to_string()))?
            }
        });
        try_join_all(jobs).await
    }

    /// Writes the image for `snap` into the store (layers, config, manifest) and returns it.
    pub async fn commit_image(&self, snap: &Snapshot, spec: &ImageSpec) -> Result<BuiltImage, WorkerError> {
        self.commit_image_with(snap, spec, serde_json::Map::new()).await
    }

    /// [`commit_image`](Self::commit_image) with extra top-level config fields (an inline
    /// build cache).
    pub async fn commit_image_with(
        &self,
        snap: &Snapshot,
        spec: &ImageSpec,
        top_level: serde_json::Map<String, serde_json::Value>,
    ) -> Result<BuiltImage, WorkerError> {
        let packed = self.ensure_blobs(snap, spec.compression, spec.force_compression, spec.clamp_mtimes).await?;
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
        for (k, v) in &spec.annotations {
            builder.annotate(k.clone(), v.clone());
        }
        builder.top_level_mut().extend(top_level);

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
        // Blobs are content-addressed: one already stored (a rebuild) is not rewritten, which
        // also spares a durable store two fsyncs per build.
        for (bytes, digest) in
            [(&built.config_json, built.config.digest()), (&built.manifest_json, built.manifest.digest())]
        {
            if !self.store.has_blob(digest)? {
                self.store.put_blob(bytes, Some(digest))?;
            }
        }
        Ok(built)
    }

    /// The store, as a blob source for writing outputs.
    pub fn blob_source(&self) -> rbuild_exporter::oci::LayoutBlobs {
        rbuild_exporter::oci::LayoutBlobs::new(self.store.root())
    }
}

/// Packs snapshot `id` with mtimes clamped to `epoch` into a blob of its own, which the
/// snapshot's metadata does not record (that stays the layer as the files are); the image
/// that names the blob keeps it from garbage collection.
fn pack_clamped(
    store: &Arc<Store>,
    id: &str,
    compression: Compression,
    epoch: i64,
) -> Result<PackedLayer, WorkerError> {
    let mut opts = PackOptions::default();
    opts.compression(compression).source_date_epoch(Some(epoch));
    let (packed, _) = pack_into_store(store, id, &opts, None)?;
    Ok(packed)
}

/// Packs snapshot `id` into a new blob of the store (hashed by the store's writer as it is
/// written, never twice) and returns the layer with the pack's gzip blocks.
fn pack_into_store(
    store: &Arc<Store>,
    id: &str,
    opts: &PackOptions,
    cache: Option<Arc<dyn BlockCache>>,
) -> Result<(PackedLayer, Vec<GzipBlock>), WorkerError> {
    let diff = store.snapshot_diff(id);
    // Blocks (mostly larger than the buffer) go straight through; only small writes are batched.
    let mut writer = std::io::BufWriter::with_capacity(64 << 10, store.blob_writer()?);
    let packed = pack_with(&diff, &mut writer, opts, cache, false)
        .map_err(|source| WorkerError::Pack { id: id.to_owned(), source })?;
    let writer = writer.into_inner().map_err(|e| WorkerError::Io { path: diff.clone(), source: e.into_error() })?;
    let (digest, size) = writer.commit(None)?;
    if size != packed.size {
        return Err(WorkerError::Internal(format!(
            "packing snapshot {id}: wrote {} bytes, stored {size}",
            packed.size
        )));
    }
    let layer =
        PackedLayer { diff_id: packed.diff_id, digest, size, media_type: packed.media_type, entries: packed.entries };
    Ok((layer, packed.blocks))
}

/// The blob of snapshot `id`: recorded in its metadata, or packed now (gzip) and recorded.
///
/// A gzip layer made by an op (`producer`) that made a layer before reuses the compressed
/// blocks of that layer's blob for every block whose content is unchanged (see
/// [`LayerBlocks`]): a COPY of a context where one file changed compresses about one block.
fn ensure_blob(
    store: &Arc<Store>,
    id: &str,
    producer: Option<&str>,
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
    let lineage = LayerBlocks::path(store, producer, compression);
    let cache = lineage.as_deref().and_then(|p| LayerBlocks::open(store, p));
    let mut opts = PackOptions::default();
    opts.compression(compression);
    let cache = cache.map(|c| Arc::new(c) as Arc<dyn BlockCache>);
    let (packed, blocks) = pack_into_store(store, id, &opts, cache)?;
    if let Some(path) = lineage {
        // Only a cache: failing to remember the blocks costs compression time next time.
        let _ = LayerBlocks::save(store, &path, &packed.digest, &blocks);
    }
    let meta = SnapshotMeta {
        diff_id: Some(packed.diff_id.clone()),
        blob: Some(packed.digest.clone()),
        blob_size: packed.size,
        media_type: Some(packed.media_type.to_string()),
    };
    store.set_snapshot_meta(id, &meta)?;
    Ok(packed)
}

/// The compressed blocks of the last gzip layer an op produced, readable from its blob in the
/// store: `<store>/layer-blocks/<op id>.gzip<level>` lists each block's key, offset and length
/// in the blob, and crc (see `rbuild_exporter::layer::GzipBlock`). The list is replaced
/// whenever the op's layer is packed again; a list whose blob is gone, or that does not parse,
/// is ignored. Keys cover the level, the preset dictionary and the data, so a listed block can
/// only ever stand for exactly the bytes it was compressed from.
///
/// File format: the header line, the blob digest line, then per block 32 bytes of key and
/// offset, length, input length (u64 little-endian) and crc32 (u32 little-endian).
#[derive(Debug)]
struct LayerBlocks {
    blob: std::fs::File,
    blocks: HashMap<BlockKey, GzipBlock>,
}

const LAYER_BLOCKS_HEADER: &[u8] = b"rbuild-layer-blocks v1\n";
const LAYER_BLOCK_RECORD: usize = 32 + 8 + 8 + 8 + 4;

impl LayerBlocks {
    /// Where the blocks of `producer`'s layers are listed (gzip only).
    fn path(store: &Store, producer: Option<&str>, compression: Compression) -> Option<std::path::PathBuf> {
        let Compression::Gzip { level } = compression else { return None };
        let producer =
            producer.filter(|p| !p.is_empty() && p.len() <= 128 && p.bytes().all(|b| b.is_ascii_hexdigit()))?;
        Some(store.root().join("layer-blocks").join(format!("{producer}.gzip{level}")))
    }

    fn open(store: &Store, path: &std::path::Path) -> Option<LayerBlocks> {
        let bytes = std::fs::read(path).ok()?;
        let rest = bytes.strip_prefix(LAYER_BLOCKS_HEADER)?;
        let nl = rest.iter().position(|b| *b == b'\n')?;
        let digest: rbuild_exporter::oci_spec::image::Digest = std::str::from_utf8(&rest[..nl]).ok()?.parse().ok()?;
        let records = &rest[nl + 1..];
        if records.len() % LAYER_BLOCK_RECORD != 0 {
            return None;
        }
        let blob = store.open_blob(&digest).ok()?;
        let blob_len = blob.metadata().ok()?.len();
        let mut blocks = HashMap::with_capacity(records.len() / LAYER_BLOCK_RECORD);
        for r in records.chunks_exact(LAYER_BLOCK_RECORD) {
            let u64_at = |i: usize| u64::from_le_bytes(r[i..i + 8].try_into().unwrap_or_default());
            let block = GzipBlock {
                key: r[..32].try_into().ok()?,
                offset: u64_at(32),
                len: u64_at(40),
                input_len: u64_at(48),
                crc: u32::from_le_bytes(r[56..60].try_into().ok()?),
            };
            if block.offset.checked_add(block.len)? > blob_len || block.len > 1 << 24 {
                return None;
            }
            blocks.insert(block.key, block);
        }
        Some(LayerBlocks { blob, blocks })
    }

    fn save(
        store: &Store,
        path: &std::path::Path,
        blob: &rbuild_exporter::oci_spec::image::Digest,
        blocks: &[GzipBlock],
    ) -> std::io::Result<()> {
        if blocks.is_empty() {
            return Ok(());
        }
        let mut out = Vec::with_capacity(128 + blocks.len() * LAYER_BLOCK_RECORD);
        out.extend_from_slice(LAYER_BLOCKS_HEADER);
        out.extend_from_slice(blob.to_string().as_bytes());
        out.push(b'\n');
        for b in blocks {
            out.extend_from_slice(&b.key);
            for v in [b.offset, b.len, b.input_len] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&b.crc.to_le_bytes());
        }
        let dir = path.parent().ok_or_else(|| std::io::Error::other("no parent"))?;
        std::fs::create_dir_all(dir)?;
        let tmp = store.tmp_dir().join(format!("layer-blocks-{}", crate::unique_suffix()));
        std::fs::write(&tmp, &out)?;
        std::fs::rename(&tmp, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

impl BlockCache for LayerBlocks {
    fn get(&self, key: &BlockKey, input_len: u64) -> Option<CachedBlock> {
        use std::os::unix::fs::FileExt;
        let b = self.blocks.get(key).filter(|b| b.input_len == input_len)?;
        let mut deflated = vec![0u8; usize::try_from(b.len).ok()?];
        self.blob.read_exact_at(&mut deflated, b.offset).ok()?;
        // The new blob is written right after, about as many bytes: hand these page-cache
        // pages back now, so that it gets them (still hot) instead of making the kernel reclaim
        // others (the next run of the op reads the new blob, not this one).
        let len = std::num::NonZeroU64::new(b.len);
        let _ = rustix::fs::fadvise(&self.blob, b.offset, len, rustix::fs::Advice::DontNeed);
        Some(CachedBlock { deflated, crc: b.crc })
    }
}
