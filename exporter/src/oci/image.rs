//! Image metadata: config, manifest and index documents as canonical JSON,
//! with their descriptors.

use std::collections::{BTreeMap, HashMap};

use oci_spec::image::{
    Arch, Config, Descriptor, History, ImageConfiguration, ImageIndexBuilder, ImageManifestBuilder,
    MediaType, Os, Platform, PlatformBuilder,
};
use serde::Serialize;
use serde_json::Value;

use super::blobs::MemoryBlobs;
use super::error::ImageError;
use crate::hash::sha256_digest;
use crate::layer::PackedLayer;

/// Serializes `value` as compact JSON with object keys sorted at every
/// level, so maps (labels, annotations) never make the bytes, and therefore
/// the digest, depend on hash order.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    fn sorted(value: Value) -> Value {
        match value {
            Value::Object(map) => {
                let entries: BTreeMap<String, Value> =
                    map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
                Value::Object(entries.into_iter().collect())
            }
            Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
            other => other,
        }
    }
    serde_json::to_vec(&sorted(serde_json::to_value(value)?))
}

/// A finished image: config and manifest bytes, ready to store or push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// The config document (`application/vnd.oci.image.config.v1+json`).
    pub config_json: Vec<u8>,
    /// Its descriptor.
    pub config: Descriptor,
    /// The manifest document (`application/vnd.oci.image.manifest.v1+json`).
    pub manifest_json: Vec<u8>,
    /// Its descriptor, with the platform from the config.
    pub manifest: Descriptor,
}

impl BuiltImage {
    /// The config and manifest as an in-memory blob source, to pair with
    /// the layers' store when writing an output.
    pub fn blobs(&self) -> MemoryBlobs {
        let mut blobs = MemoryBlobs::new();
        blobs.insert(self.config_json.clone());
        blobs.insert(self.manifest_json.clone());
        blobs
    }
}

/// Builds an image from a base (config plus the base manifest's layer
/// descriptors) by appending layers and history.
///
/// ```
/// use rbuild_exporter::oci::ImageBuilder;
/// use rbuild_exporter::oci_spec::image::{Arch, HistoryBuilder, Os};
///
/// let mut image = ImageBuilder::scratch(Arch::Amd64, Os::Linux);
/// image.runtime_config_mut().set_cmd(Some(vec!["sh".into()]));
/// image.add_history(HistoryBuilder::default().created_by("CMD [\"sh\"]").build()?);
/// let built = image.build()?;
/// assert_eq!(built.manifest.media_type().to_string(), "application/vnd.oci.image.manifest.v1+json");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    config: ImageConfiguration,
    runtime: Option<Config>,
    layers: Vec<Descriptor>,
    annotations: HashMap<String, String>,
}

impl ImageBuilder {
    /// Starts from a base image: its config and its manifest's layers (in
    /// order; one per `rootfs.diff_ids` entry).
    pub fn new(mut base_config: ImageConfiguration, base_layers: Vec<Descriptor>) -> Self {
        // oci-spec has no mutable accessor for the runtime config, so it is
        // kept apart and put back at build time.
        let runtime = base_config.config().clone();
        base_config.set_config(None);
        Self {
            config: base_config,
            runtime,
            layers: base_layers,
            annotations: HashMap::new(),
        }
    }

    /// Starts from nothing (`FROM scratch`): no layers, no history, no runtime config.
    pub fn scratch(architecture: Arch, os: Os) -> Self {
        let mut config = ImageConfiguration::default();
        config.set_architecture(architecture);
        config.set_os(os);
        config.set_history(None);
        Self::new(config, Vec::new())
    }

    /// The config as it would be built now (runtime config included).
    pub fn image_config(&self) -> ImageConfiguration {
        let mut config = self.config.clone();
        config.set_config(self.runtime.clone());
        config
    }

    /// The config for fields without a dedicated setter (author, variant…).
    /// Its runtime `config` field is ignored: use
    /// [`runtime_config_mut`](Self::runtime_config_mut). Keep `rootfs` in step
    /// with the layers, or [`build`](Self::build) fails.
    pub fn config_mut(&mut self) -> &mut ImageConfiguration {
        &mut self.config
    }

    /// The runtime config (Env, Cmd, Entrypoint, User…), created empty if absent.
    pub fn runtime_config_mut(&mut self) -> &mut Config {
        self.runtime.get_or_insert_with(Config::default)
    }

    /// Replaces the runtime config.
    pub fn set_runtime_config(&mut self, config: Config) -> &mut Self {
        self.runtime = Some(config);
        self
    }

    /// Sets the `created` timestamp (RFC 3339); `None` leaves it out, which
    /// keeps the digest independent of build time.
    pub fn set_created(&mut self, created: Option<String>) -> &mut Self {
        self.config.set_created(created);
        self
    }

    /// Appends a layer: its diff id to `rootfs`, its descriptor to the
    /// manifest and `history` (with `empty_layer` cleared) to the history.
    pub fn add_layer(&mut self, layer: &PackedLayer, mut history: History) -> &mut Self {
        self.config
            .rootfs_mut()
            .diff_ids_mut()
            .push(layer.diff_id.to_string());
        self.layers.push(layer.descriptor());
        history.set_empty_layer(None);
        self.push_history(history);
        self
    }

    /// Appends a history entry for a step that made no layer (ENV, CMD, a
    /// RUN that changed nothing): `empty_layer` is set.
    pub fn add_history(&mut self, mut history: History) -> &mut Self {
        history.set_empty_layer(Some(true));
        self.push_history(history);
        self
    }

    fn push_history(&mut self, history: History) {
        match self.config.history_mut() {
            Some(entries) => entries.push(history),
            None => {
                self.config.set_history(Some(vec![history]));
            }
        }
    }

    /// Adds an annotation to the manifest.
    pub fn annotate(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// Produces the config and manifest documents.
    pub fn build(&self) -> Result<BuiltImage, ImageError> {
        let diff_ids = self.config.rootfs().diff_ids().len();
        if diff_ids != self.layers.len() {
            return Err(ImageError::LayerCountMismatch {
                layers: self.layers.len(),
                diff_ids,
            });
        }
        let config_json =
            canonical_json(&self.image_config()).map_err(|source| ImageError::Serialize {
                what: "image config",
                source,
            })?;
        let config = Descriptor::new(
            MediaType::ImageConfig,
            config_json.len() as u64,
            sha256_digest(&config_json),
        );

        let mut manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config.clone())
            .layers(self.layers.clone());
        if !self.annotations.is_empty() {
            manifest = manifest.annotations(self.annotations.clone());
        }
        let manifest = manifest.build().map_err(|source| ImageError::Build {
            what: "image manifest",
            source,
        })?;
        let manifest_json = canonical_json(&manifest).map_err(|source| ImageError::Serialize {
            what: "image manifest",
            source,
        })?;
        let mut descriptor = Descriptor::new(
            MediaType::ImageManifest,
            manifest_json.len() as u64,
            sha256_digest(&manifest_json),
        );
        descriptor.set_platform(Some(self.platform()?));
        Ok(BuiltImage {
            config_json,
            config,
            manifest_json,
            manifest: descriptor,
        })
    }

    fn platform(&self) -> Result<Platform, ImageError> {
        let mut platform = PlatformBuilder::default()
            .architecture(self.config.architecture().clone())
            .os(self.config.os().clone());
        if let Some(variant) = self.config.variant() {
            platform = platform.variant(variant.clone());
        }
        if let Some(version) = self.config.os_version() {
            platform = platform.os_version(version.clone());
        }
        platform.build().map_err(|source| ImageError::Build {
            what: "platform",
            source,
        })
    }
}

/// A finished image index (multi-platform image).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltIndex {
    /// The index document (`application/vnd.oci.image.index.v1+json`).
    pub index_json: Vec<u8>,
    /// Its descriptor.
    pub index: Descriptor,
}

/// Builds an image index over per-platform manifests (each descriptor should
/// carry its platform, as [`BuiltImage::manifest`] does).
pub fn build_index(manifests: Vec<Descriptor>) -> Result<BuiltIndex, ImageError> {
    let index_json = index_document(manifests)?;
    let index = Descriptor::new(
        MediaType::ImageIndex,
        index_json.len() as u64,
        sha256_digest(&index_json),
    );
    Ok(BuiltIndex { index_json, index })
}

/// The canonical JSON of an index over `manifests`.
pub(crate) fn index_document(manifests: Vec<Descriptor>) -> Result<Vec<u8>, ImageError> {
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .map_err(|source| ImageError::Build {
            what: "image index",
            source,
        })?;
    canonical_json(&index).map_err(|source| ImageError::Serialize {
        what: "image index",
        source,
    })
}
