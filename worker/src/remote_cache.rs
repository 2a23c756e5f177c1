//! Build cache shared between stores (`--cache-to`, `--cache-from`): how a CI fleet reuses
//! work.
//!
//! A cache is the records of some cache keys (key → chain of layers) plus the exact compressed
//! blobs of those layers, so a hit produces the same image digest as the build that exported
//! it. It travels as an OCI image manifest whose config (media type
//! [`CACHE_CONFIG_MEDIA_TYPE`]) is a [`CacheConfig`] and whose layers are the blobs, in the
//! config's layer order: pushed to a registry (any docker-registry stores it) or written to an
//! OCI layout directory. An inline cache is the same [`CacheConfig`] under the image config's
//! top-level [`INLINE_CACHE_FIELD`], its layers being the image's own.
//!
//! Import is lazy: [`LocalWorker::load_remote_cache`] reads only the manifest and the config;
//! a blob is fetched when a record that needs it is hit (see `Worker::load`), verified against
//! its digest, and unpacked against the recorded diff id.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use futures_util::future::try_join_all;
use rbuild_cache::RecordLayer;
use rbuild_exporter::layer::Compression;
use rbuild_exporter::oci::canonical_json;
use rbuild_registry::oci_spec::image::{
    Descriptor, Digest, ImageIndex, ImageManifest, ImageManifestBuilder, MediaType,
};
use rbuild_registry::Reference;
use rbuild_solver::CacheKey;
use serde::{Deserialize, Serialize};

use crate::error::WorkerError;
use crate::{LocalWorker, Snapshot};

/// Media type of the config blob of an exported cache manifest.
pub const CACHE_CONFIG_MEDIA_TYPE: &str = "application/vnd.rbuild.cache.config.v1+json";
/// Top-level image config field holding an inline cache.
pub const INLINE_CACHE_FIELD: &str = "rbuild.cache.v1";
/// Cache configs larger than this are refused.
const MAX_CACHE_CONFIG: u64 = 64 << 20;
/// OCI layout annotation naming an `index.json` entry.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What a cache holds: its layers (aligned with the manifest's layers) and, per cache key, the
/// chain of layers (indexes, lowest first) the key resolved to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheConfig {
    /// One entry per manifest layer, in the same order.
    pub layers: Vec<CacheLayer>,
    /// Cache key (hex) → layer indexes, lowest first.
    pub records: BTreeMap<String, Vec<usize>>,
}

/// One layer of a cache.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheLayer {
    /// The snapshot id it is unpacked as (the producing key's hex, or a pulled layer's diff id
    /// hex), so imported records read like locally built ones.
    pub snapshot: String,
    /// The op that produced it (its history entry in the image), if built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<String>,
    /// sha256 of the uncompressed layer.
    pub diff_id: String,
}

/// Where a cache is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheLocation {
    /// A registry reference (`type=registry,ref=...`, or an image with an inline cache).
    Registry(Reference),
    /// An OCI layout directory (`type=local`) and the `index.json` entry's tag.
    Local {
        /// The directory.
        dir: PathBuf,
        /// `org.opencontainers.image.ref.name` of the entry.
        tag: String,
    },
}

impl std::fmt::Display for CacheLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheLocation::Registry(r) => write!(f, "{r}"),
            CacheLocation::Local { dir, .. } => write!(f, "{}", dir.display()),
        }
    }
}

/// Why a cache could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteCacheError {
    /// A file of a local cache could not be read.
    #[error("reading {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The registry failed.
    #[error("registry request failed")]
    Registry(#[source] rbuild_registry::Error),
    /// A document does not parse.
    #[error("{what} does not parse")]
    Parse {
        /// `manifest`, `cache config`...
        what: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A blob's content does not hash to its name.
    #[error("blob {digest} does not match its digest")]
    DigestMismatch {
        /// The digest.
        digest: String,
    },
    /// The layout's `index.json` has no entry to use.
    #[error("index.json lists no manifest tagged {tag:?}")]
    NoManifest {
        /// The tag looked for.
        tag: String,
    },
    /// The cache metadata contradicts itself or names unusable layers.
    #[error("invalid cache metadata: {problem}")]
    Invalid {
        /// What is wrong.
        problem: String,
    },
}

/// An imported cache: its metadata and where each layer's blob is.
#[derive(Debug)]
pub struct RemoteCache {
    location: CacheLocation,
    config: CacheConfig,
    blobs: Vec<Descriptor>,
}

impl RemoteCache {
    /// Where it is.
    pub fn location(&self) -> &CacheLocation {
        &self.location
    }

    /// Its metadata.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// Checks what an imported config claims before anything is fetched for it.
    fn validate(
        location: CacheLocation,
        config: CacheConfig,
        blobs: Vec<Descriptor>,
    ) -> Result<Self, RemoteCacheError> {
        let invalid = |problem: String| RemoteCacheError::Invalid { problem };
        if config.layers.len() != blobs.len() {
            return Err(invalid(format!("{} layers described, {} in the manifest", config.layers.len(), blobs.len())));
        }
        for l in &config.layers {
            if !is_hex(&l.snapshot, 64) {
                return Err(invalid(format!("snapshot id {:?}", l.snapshot)));
            }
            if l.producer.as_deref().is_some_and(|p| !is_hex(p, 64)) {
                return Err(invalid(format!("producer {:?}", l.producer)));
            }
            if !l.diff_id.strip_prefix("sha256:").is_some_and(|h| is_hex(h, 64)) {
                return Err(invalid(format!("diff id {:?}", l.diff_id)));
            }
        }
        for (key, chain) in &config.records {
            if !is_hex(key, 64) || chain.iter().any(|i| *i >= blobs.len()) {
                return Err(invalid(format!("record {key:?}")));
            }
        }
        Ok(RemoteCache { location, config, blobs })
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Which records an export covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// Only results made of the final image's layers (BuildKit's default).
    #[default]
    Min,
    /// Every step of the build, intermediate stages included.
    Max,
}

/// A cache collected for export: its metadata and each layer's blob.
#[derive(Clone, Debug)]
pub struct CollectedCache {
    /// The metadata.
    pub config: CacheConfig,
    /// The layer blobs (in the store), aligned with `config.layers`.
    pub blobs: Vec<Descriptor>,
}

impl LocalWorker {
    /// Reads a cache's manifest and metadata (not its layers). `Ok(None)` when the document is
    /// an image without an inline cache.
    pub async fn load_remote_cache(&self, location: CacheLocation) -> Result<Option<RemoteCache>, WorkerError> {
        let wrap = |location: &CacheLocation| {
            let location = location.to_string();
            move |source| WorkerError::RemoteCache { location, source: Box::new(source) }
        };
        let found = match &location {
            CacheLocation::Registry(r) => self.registry_cache_documents(r).await,
            CacheLocation::Local { dir, tag } => local_cache_documents(dir, tag),
        }
        .map_err(wrap(&location))?;
        let Some((config, blobs)) = found else { return Ok(None) };
        RemoteCache::validate(location.clone(), config, blobs).map(Some).map_err(wrap(&location))
    }

    /// The cache config and layer descriptors behind a registry reference: a cache manifest,
    /// or an image (for this worker's platform, when the reference is an index) with an inline
    /// cache.
    async fn registry_cache_documents(
        &self,
        r: &Reference,
    ) -> Result<Option<(CacheConfig, Vec<Descriptor>)>, RemoteCacheError> {
        let doc = self.registry.fetch_manifest(r).await.map_err(RemoteCacheError::Registry)?;
        let is_index = doc.is_index();
        let (manifest, config_bytes) = if is_index {
            let platform = rbuild_registry::Platform::host();
            let image = self.registry.resolve(r, &platform).await.map_err(RemoteCacheError::Registry)?;
            (image.manifest, image.config_bytes.to_vec())
        } else {
            let manifest: ImageManifest = serde_json::from_slice(&doc.bytes)
                .map_err(|source| RemoteCacheError::Parse { what: "cache manifest", source })?;
            if manifest.config().size() > MAX_CACHE_CONFIG {
                return Err(RemoteCacheError::Invalid { problem: "config too large".into() });
            }
            let mut bytes = Vec::new();
            self.registry.fetch_blob(r, manifest.config(), &mut bytes).await.map_err(RemoteCacheError::Registry)?;
            (manifest, bytes)
        };
        parse_cache_config(&manifest, &config_bytes)
    }

    /// The result recorded for `key` in an imported cache, its layers fetched and unpacked
    /// into the store (those it already has are kept), and recorded locally.
    pub(crate) async fn import_record(
        &self,
        cache: &RemoteCache,
        key: &CacheKey,
    ) -> Result<Option<Vec<RecordLayer>>, WorkerError> {
        let Some(chain) = cache.config.records.get(&key.to_hex()) else { return Ok(None) };
        let jobs = chain.iter().map(|&i| async move {
            let layer = &cache.config.layers[i];
            let desc = &cache.blobs[i];
            if !self.store.has_snapshot(&layer.snapshot) {
                self.fetch_cache_blob(cache, desc).await?;
                crate::pull::unpack_layer(self, desc, &layer.diff_id, &layer.snapshot).await?;
            }
            Ok::<_, WorkerError>(RecordLayer { id: layer.snapshot.clone(), producer: layer.producer.clone() })
        });
        let layers = try_join_all(jobs).await?;
        self.store.put_record(&key.to_hex(), &rbuild_cache::Record { chain: layers.clone() })?;
        Ok(Some(layers))
    }

    async fn fetch_cache_blob(&self, cache: &RemoteCache, desc: &Descriptor) -> Result<(), WorkerError> {
        if self.store.has_blob(desc.digest())? {
            return Ok(());
        }
        match &cache.location {
            CacheLocation::Registry(r) => crate::pull::fetch(self, r, desc, &r.to_string()).await,
            CacheLocation::Local { dir, .. } => {
                let path = layout_blob_path(dir, desc.digest());
                let store = self.store.clone();
                let digest = desc.digest().clone();
                tokio::task::spawn_blocking(move || -> Result<(), WorkerError> {
                    let mut src =
                        std::fs::File::open(&path).map_err(|source| WorkerError::Io { path: path.clone(), source })?;
                    let mut w = store.blob_writer()?;
                    std::io::copy(&mut src, &mut w).map_err(|source| WorkerError::Io { path: path.clone(), source })?;
                    w.commit(Some(&digest))?;
                    Ok(())
                })
                .await
                .map_err(|e| WorkerError::Internal(e.to_string()))?
            }
        }
    }

    /// The records of `keys` this store has (mode `Min`: only those made entirely of
    /// `result`'s layers), with every layer packed (`compression` for new blobs). Layers start
    /// with `result`'s own chain, in order, so an inline cache's indexes are the image's.
    pub async fn collect_cache(
        &self,
        keys: &[CacheKey],
        result: &Snapshot,
        mode: CacheMode,
        compression: Compression,
    ) -> Result<CollectedCache, WorkerError> {
        let mut layers: Vec<RecordLayer> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut add = |l: &RecordLayer, layers: &mut Vec<RecordLayer>| -> usize {
            *index.entry(l.id.clone()).or_insert_with(|| {
                layers.push(l.clone());
                layers.len() - 1
            })
        };
        for l in &result.chain {
            add(l, &mut layers);
        }
        let final_ids: HashSet<&str> = result.chain.iter().map(|l| l.id.as_str()).collect();
        let mut sorted: Vec<&CacheKey> = keys.iter().collect();
        sorted.sort();
        sorted.dedup();
        let mut records = BTreeMap::new();
        for key in sorted {
            let chain = match self.store.get_record(&key.to_hex())? {
                Some(rec) => rec.chain,
                // Imported records this build did not need (a hit further down made them
                // unnecessary) are passed on, so a re-export says what the import said.
                None => match self.imported_layers(key) {
                    Some(chain) => chain,
                    None => continue,
                },
            };
            if mode == CacheMode::Min && !chain.iter().all(|l| final_ids.contains(l.id.as_str())) {
                continue;
            }
            let chain: Vec<usize> = chain.iter().map(|l| add(l, &mut layers)).collect();
            records.insert(key.to_hex(), chain);
        }
        let packed = self.ensure_blobs(&Snapshot { chain: layers.clone() }, compression, false, None).await?;
        let config = CacheConfig {
            layers: layers
                .iter()
                .zip(&packed)
                .map(|(l, p)| CacheLayer {
                    snapshot: l.id.clone(),
                    producer: l.producer.clone(),
                    diff_id: p.diff_id.to_string(),
                })
                .collect(),
            records,
        };
        Ok(CollectedCache { config, blobs: packed.iter().map(|p| p.descriptor()).collect() })
    }

    /// The chain an imported cache records for `key`, if every layer of it is in the store.
    fn imported_layers(&self, key: &CacheKey) -> Option<Vec<RecordLayer>> {
        self.remote_caches.iter().find_map(|cache| {
            let chain = cache.config.records.get(&key.to_hex())?;
            chain
                .iter()
                .map(|&i| {
                    let l = &cache.config.layers[i];
                    self.store
                        .has_snapshot(&l.snapshot)
                        .then(|| RecordLayer { id: l.snapshot.clone(), producer: l.producer.clone() })
                })
                .collect()
        })
    }

    /// Writes a collected cache's config and manifest into the store and returns the
    /// manifest's descriptor (push it, or write it out as an OCI layout).
    pub fn write_cache_manifest(&self, cache: &CollectedCache) -> Result<Descriptor, WorkerError> {
        fn internal(e: impl std::fmt::Display) -> WorkerError {
            WorkerError::Internal(format!("cache manifest: {e}"))
        }
        let config_json = canonical_json(&cache.config).map_err(internal)?;
        let (config_digest, config_size) = self.store.put_blob(&config_json, None)?;
        let config = Descriptor::new(MediaType::Other(CACHE_CONFIG_MEDIA_TYPE.into()), config_size, config_digest);
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config)
            .layers(cache.blobs.clone())
            .build()
            .map_err(internal)?;
        let bytes = canonical_json(&manifest).map_err(internal)?;
        let (digest, size) = self.store.put_blob(&bytes, None)?;
        Ok(Descriptor::new(MediaType::ImageManifest, size, digest))
    }
}

/// A cache config from a manifest and its config blob: the whole blob for a cache manifest,
/// the inline field of an image config, `None` for an image without one.
fn parse_cache_config(
    manifest: &ImageManifest,
    config_bytes: &[u8],
) -> Result<Option<(CacheConfig, Vec<Descriptor>)>, RemoteCacheError> {
    fn parse(what: &'static str) -> impl Fn(serde_json::Error) -> RemoteCacheError {
        move |source| RemoteCacheError::Parse { what, source }
    }
    let config = if manifest.config().media_type().to_string() == CACHE_CONFIG_MEDIA_TYPE {
        serde_json::from_slice(config_bytes).map_err(parse("cache config"))?
    } else {
        let value: serde_json::Value = serde_json::from_slice(config_bytes).map_err(parse("image config"))?;
        match value.get(INLINE_CACHE_FIELD) {
            Some(inline) => serde_json::from_value(inline.clone()).map_err(parse("inline cache"))?,
            None => return Ok(None),
        }
    };
    Ok(Some((config, manifest.layers().clone())))
}

fn layout_blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs").join(digest.algorithm().as_ref()).join(digest.digest())
}

/// Reads a small blob of an OCI layout, verified.
fn read_layout_blob(dir: &Path, desc: &Descriptor, limit: u64) -> Result<Vec<u8>, RemoteCacheError> {
    use sha2::Digest as _;
    if desc.size() > limit {
        return Err(RemoteCacheError::Invalid { problem: format!("blob {} too large", desc.digest()) });
    }
    let path = layout_blob_path(dir, desc.digest());
    let bytes = std::fs::read(&path).map_err(|source| RemoteCacheError::Io { path, source })?;
    if hex::encode(sha2::Sha256::digest(&bytes)) != desc.digest().digest()
        || desc.digest().algorithm().as_ref() != "sha256"
    {
        return Err(RemoteCacheError::DigestMismatch { digest: desc.digest().to_string() });
    }
    Ok(bytes)
}

/// The cache config and layers of an OCI layout directory's entry tagged `tag` (else its only
/// or last entry).
fn local_cache_documents(dir: &Path, tag: &str) -> Result<Option<(CacheConfig, Vec<Descriptor>)>, RemoteCacheError> {
    let index_path = dir.join("index.json");
    let bytes = std::fs::read(&index_path).map_err(|source| RemoteCacheError::Io { path: index_path, source })?;
    let index: ImageIndex =
        serde_json::from_slice(&bytes).map_err(|source| RemoteCacheError::Parse { what: "index.json", source })?;
    let tagged = |d: &&Descriptor| d.annotations().as_ref().and_then(|a| a.get(REF_NAME)).is_some_and(|t| t == tag);
    let entry = index
        .manifests()
        .iter()
        .find(tagged)
        .or_else(|| index.manifests().last())
        .ok_or_else(|| RemoteCacheError::NoManifest { tag: tag.to_owned() })?;
    let manifest_bytes = read_layout_blob(dir, entry, rbuild_registry::MAX_MANIFEST_BYTES)?;
    let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|source| RemoteCacheError::Parse { what: "cache manifest", source })?;
    let config_bytes = read_layout_blob(dir, manifest.config(), MAX_CACHE_CONFIG)?;
    parse_cache_config(&manifest, &config_bytes)
}

/// The inline cache for an image config (`rbuild.cache.v1` at its top level).
pub fn inline_cache_field(cache: &CollectedCache) -> Result<(String, serde_json::Value), WorkerError> {
    let value = serde_json::to_value(&cache.config).map_err(|e| WorkerError::Internal(format!("inline cache: {e}")))?;
    Ok((INLINE_CACHE_FIELD.to_owned(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(i: u8) -> CacheLayer {
        CacheLayer {
            snapshot: format!("{i:02x}").repeat(32),
            producer: Some("ab".repeat(32)),
            diff_id: format!("sha256:{}", format!("{i:02x}").repeat(32)),
        }
    }

    fn desc(i: u8) -> Descriptor {
        let d: Digest = format!("sha256:{}", format!("{i:02x}").repeat(32)).parse().unwrap();
        Descriptor::new(MediaType::ImageLayerGzip, 10, d)
    }

    #[test]
    fn config_roundtrips_and_is_canonical() {
        let mut c = CacheConfig { layers: vec![layer(1), layer(2)], records: BTreeMap::new() };
        c.records.insert("cd".repeat(32), vec![0, 1]);
        c.records.insert("0a".repeat(32), vec![0]);
        let a = canonical_json(&c).unwrap();
        let back: CacheConfig = serde_json::from_slice(&a).unwrap();
        assert_eq!(back, c);
        let text = String::from_utf8(a).unwrap();
        assert!(text.find(&"0a".repeat(32)).unwrap() < text.find(&"cd".repeat(32)).unwrap(), "sorted keys");
    }

    #[test]
    fn validation_rejects_what_could_escape_or_dangle() {
        let loc = CacheLocation::Local { dir: "/x".into(), tag: "latest".into() };
        let ok = CacheConfig { layers: vec![layer(1)], records: BTreeMap::from([("cd".repeat(32), vec![0])]) };
        assert!(RemoteCache::validate(loc.clone(), ok.clone(), vec![desc(1)]).is_ok());
        // Layer count must match the manifest.
        assert!(RemoteCache::validate(loc.clone(), ok.clone(), vec![]).is_err());
        // A record pointing past the layers.
        let mut bad = ok.clone();
        bad.records.insert("ee".repeat(32), vec![3]);
        assert!(RemoteCache::validate(loc.clone(), bad, vec![desc(1)]).is_err());
        // Snapshot ids become directory names: nothing but 64 hex digits.
        for id in ["../../etc", "", &"A".repeat(64)] {
            let mut bad = ok.clone();
            bad.layers[0].snapshot = id.to_owned();
            assert!(RemoteCache::validate(loc.clone(), bad, vec![desc(1)]).is_err(), "{id:?}");
        }
        let mut bad = ok.clone();
        bad.layers[0].producer = Some("../x".into());
        assert!(RemoteCache::validate(loc.clone(), bad, vec![desc(1)]).is_err());
        let mut bad = ok;
        bad.layers[0].diff_id = "md5:00".into();
        assert!(RemoteCache::validate(loc, bad, vec![desc(1)]).is_err());
    }

    #[test]
    fn inline_field_is_found_in_an_image_config_and_absent_is_none() {
        let c = CacheConfig { layers: vec![layer(1)], records: BTreeMap::from([("cd".repeat(32), vec![0])]) };
        let mut image_config = serde_json::json!({"architecture": "amd64", "os": "linux"});
        image_config[INLINE_CACHE_FIELD] = serde_json::to_value(&c).unwrap();
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .config(Descriptor::new(MediaType::ImageConfig, 1, desc(9).digest().clone()))
            .layers(vec![desc(1)])
            .build()
            .unwrap();
        let (found, blobs) =
            parse_cache_config(&manifest, &serde_json::to_vec(&image_config).unwrap()).unwrap().unwrap();
        assert_eq!(found, c);
        assert_eq!(blobs, vec![desc(1)]);
        let plain = serde_json::json!({"architecture": "amd64", "os": "linux"});
        assert!(parse_cache_config(&manifest, &serde_json::to_vec(&plain).unwrap()).unwrap().is_none());
    }
}
