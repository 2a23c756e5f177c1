//! Image metadata: config, manifest and index documents as canonical JSON,
//! with their descriptors.

use std::collections::{BTreeMap, HashMap};

use oci_spec::image::{
    Arch, Config, Descriptor, History, ImageConfiguration, ImageIndexBuilder, ImageManifestBuilder, MediaType, Os,
    Platform, PlatformBuilder,
};
use serde::Serialize;
use serde_json::{Map, Value};

use super::blobs::MemoryBlobs;
use super::error::ImageError;
use super::mediatype::{convert_layer, manifest_and_config};
use crate::hash::sha256_digest;
use crate::layer::PackedLayer;

/// Serializes `value` as compact JSON with object keys sorted at every
/// level, so maps (labels, annotations) never make the bytes, and therefore
/// the digest, depend on hash order.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    fn sorted(value: Value) -> Value {
        match value {
            Value::Object(map) => {
                let entries: BTreeMap<String, Value> = map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
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
    /// The config document (`application/vnd.oci.image.config.v1+json`, or
    /// docker's `...container.image.v1+json`).
    pub config_json: Vec<u8>,
    /// Its descriptor.
    pub config: Descriptor,
    /// The manifest document (`application/vnd.oci.image.manifest.v1+json`,
    /// or docker's `...distribution.manifest.v2+json`).
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
/// Media types: OCI by default; [`oci_mediatypes(false)`](Self::oci_mediatypes)
/// writes docker schema 2 types instead. Either way every layer descriptor,
/// base layers included, is converted to the chosen family at build time.
///
/// Runtime-config fields that docker has and the OCI type drops
/// (`Healthcheck`, `OnBuild`, `Shell`, `ArgsEscaped`) are carried in
/// [`extra_config_mut`](Self::extra_config_mut) and merged into the config's
/// `config` object when building (an extra field replaces a typed one of the
/// same name); [`docker_config_extras`] takes them from a base's config JSON.
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
    oci_mediatypes: bool,
    extra_config: Map<String, Value>,
    top_level: Map<String, Value>,
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
            oci_mediatypes: true,
            extra_config: Map::new(),
            top_level: Map::new(),
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

    /// The config as it would be built now (runtime config included, the
    /// [extra fields](Self::extra_config_mut) not: they have no typed home).
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
        self.config.rootfs_mut().diff_ids_mut().push(layer.diff_id.to_string());
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

    /// Chooses OCI media types (`true`, the default) or docker schema 2 ones
    /// (`false`, for registries that predate OCI; zstd layers then fail to build).
    pub fn oci_mediatypes(&mut self, oci: bool) -> &mut Self {
        self.oci_mediatypes = oci;
        self
    }

    /// Extra runtime-config fields (docker's `Healthcheck`, `OnBuild`,
    /// `Shell`, `ArgsEscaped`…), merged into the config's `config` object by
    /// [`build`](Self::build). Empty by default.
    pub fn extra_config_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.extra_config
    }

    /// Replaces the extra runtime-config fields.
    pub fn set_extra_config(&mut self, extra: Map<String, Value>) -> &mut Self {
        self.extra_config = extra;
        self
    }

    /// Extra top-level config fields (an inline build cache), merged into the config document
    /// by [`build`](Self::build); the typed fields win over same-named entries. Empty by default.
    pub fn top_level_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.top_level
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
            return Err(ImageError::LayerCountMismatch { layers: self.layers.len(), diff_ids });
        }
        let config_json = self.config_document()?;
        let (manifest_type, config_type) = manifest_and_config(self.oci_mediatypes);
        let config = Descriptor::new(config_type, config_json.len() as u64, sha256_digest(&config_json));
        let layers =
            self.layers.iter().map(|l| convert_layer(l, self.oci_mediatypes)).collect::<Result<Vec<_>, _>>()?;

        let mut manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(manifest_type.clone())
            .config(config.clone())
            .layers(layers);
        if !self.annotations.is_empty() {
            manifest = manifest.annotations(self.annotations.clone());
        }
        let manifest = manifest.build().map_err(|source| ImageError::Build { what: "image manifest", source })?;
        let manifest_json =
            canonical_json(&manifest).map_err(|source| ImageError::Serialize { what: "image manifest", source })?;
        let mut descriptor = Descriptor::new(manifest_type, manifest_json.len() as u64, sha256_digest(&manifest_json));
        descriptor.set_platform(Some(self.platform()?));
        Ok(BuiltImage { config_json, config, manifest_json, manifest: descriptor })
    }

    /// The config JSON, with the extra runtime-config fields merged in.
    fn config_document(&self) -> Result<Vec<u8>, ImageError> {
        let serialize = |source| ImageError::Serialize { what: "image config", source };
        let config = self.image_config();
        if self.extra_config.is_empty() && self.top_level.is_empty() {
            return canonical_json(&config).map_err(serialize);
        }
        let mut value = serde_json::to_value(&config).map_err(serialize)?;
        let Value::Object(top) = &mut value else {
            return Err(ImageError::ConfigNotObject);
        };
        for (key, field) in &self.top_level {
            top.entry(key.clone()).or_insert_with(|| field.clone());
        }
        if self.extra_config.is_empty() {
            return canonical_json(&value).map_err(serialize);
        }
        let runtime = top.entry("config").or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(runtime) = runtime else {
            return Err(ImageError::ConfigNotObject);
        };
        for (key, field) in &self.extra_config {
            runtime.insert(key.clone(), field.clone());
        }
        canonical_json(&value).map_err(serialize)
    }

    fn platform(&self) -> Result<Platform, ImageError> {
        let mut platform =
            PlatformBuilder::default().architecture(self.config.architecture().clone()).os(self.config.os().clone());
        if let Some(variant) = self.config.variant() {
            platform = platform.variant(variant.clone());
        }
        if let Some(version) = self.config.os_version() {
            platform = platform.os_version(version.clone());
        }
        platform.build().map_err(|source| ImageError::Build { what: "platform", source })
    }
}

/// Runtime-config fields docker keeps and the OCI config type drops, as
/// BuildKit's image type carries them.
const DOCKER_ONLY_FIELDS: [&str; 4] = ["Healthcheck", "OnBuild", "Shell", "ArgsEscaped"];

/// The docker-only runtime-config fields (`Healthcheck`, `OnBuild`, `Shell`,
/// `ArgsEscaped`) found in an image config document's `config` object, for
/// [`ImageBuilder::set_extra_config`]. A child image inherits all but
/// `OnBuild`, whose triggers the frontend runs and then clears (as docker
/// does): remove it before passing the map on.
pub fn docker_config_extras(config_json: &[u8]) -> Result<Map<String, Value>, serde_json::Error> {
    let value: Value = serde_json::from_slice(config_json)?;
    let mut extras = Map::new();
    if let Some(Value::Object(runtime)) = value.get("config") {
        for key in DOCKER_ONLY_FIELDS {
            if let Some(field) = runtime.get(key) {
                if !field.is_null() {
                    extras.insert(key.to_owned(), field.clone());
                }
            }
        }
    }
    Ok(extras)
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
    build_index_as(manifests, MediaType::ImageIndex)
}

/// [`build_index`] with another media type: docker's manifest list
/// ([`DOCKER_MANIFEST_LIST`](super::DOCKER_MANIFEST_LIST)) over docker
/// schema 2 manifests, as BuildKit writes with `oci-mediatypes=false`.
pub fn build_index_as(manifests: Vec<Descriptor>, media_type: MediaType) -> Result<BuiltIndex, ImageError> {
    let index_json = index_document_as(manifests, media_type.clone())?;
    let index = Descriptor::new(media_type, index_json.len() as u64, sha256_digest(&index_json));
    Ok(BuiltIndex { index_json, index })
}

/// The canonical JSON of an index over `manifests`.
pub(crate) fn index_document(manifests: Vec<Descriptor>) -> Result<Vec<u8>, ImageError> {
    index_document_as(manifests, MediaType::ImageIndex)
}

fn index_document_as(manifests: Vec<Descriptor>, media_type: MediaType) -> Result<Vec<u8>, ImageError> {
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(media_type)
        .manifests(manifests)
        .build()
        .map_err(|source| ImageError::Build { what: "image index", source })?;
    canonical_json(&index).map_err(|source| ImageError::Serialize { what: "image index", source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{Arch, Os};

    #[test]
    fn top_level_fields_are_merged_without_overriding_typed_ones() {
        let mut image = ImageBuilder::scratch(Arch::Amd64, Os::Linux);
        image.top_level_mut().insert("rbuild.cache.v1".into(), serde_json::json!({"records": {}}));
        image.top_level_mut().insert("architecture".into(), Value::String("evil".into()));
        let built = image.build().unwrap();
        let config: Value = serde_json::from_slice(&built.config_json).unwrap();
        assert_eq!(config["rbuild.cache.v1"], serde_json::json!({"records": {}}));
        assert_eq!(config["architecture"], "amd64");
        // Deterministic: the same fields give the same digest.
        let mut again = ImageBuilder::scratch(Arch::Amd64, Os::Linux);
        again.top_level_mut().insert("architecture".into(), Value::String("evil".into()));
        again.top_level_mut().insert("rbuild.cache.v1".into(), serde_json::json!({"records": {}}));
        assert_eq!(again.build().unwrap().config, built.config);
    }
}
