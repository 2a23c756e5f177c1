//! Errors of assembling image metadata and of writing image layouts.

use std::io;
use std::path::PathBuf;

use oci_spec::image::Digest;

/// Assembling an image config or manifest failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The manifest would list a different number of layers than the config has diff ids.
    #[error("image has {layers} layer blobs but {diff_ids} diff ids")]
    LayerCountMismatch {
        /// Layer descriptors (base plus added).
        layers: usize,
        /// `rootfs.diff_ids` entries.
        diff_ids: usize,
    },
    /// A zstd layer cannot be listed in a docker-media-type manifest (docker
    /// has no zstd layer type): build with OCI media types.
    #[error("layer {digest} is zstd-compressed, which needs OCI media types (oci-mediatypes=true)")]
    ZstdNeedsOciMediaTypes {
        /// The layer.
        digest: Digest,
    },
    /// The image config is not a JSON object with an object `config` field
    /// where the extra runtime-config fields go.
    #[error("image config has no runtime config object to add fields to")]
    ConfigNotObject,
    /// Serializing a document to JSON failed.
    #[error("serializing {what}")]
    Serialize {
        /// Which document.
        what: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// oci-spec refused to build a document.
    #[error("building {what}")]
    Build {
        /// Which document.
        what: &'static str,
        /// The cause.
        #[source]
        source: oci_spec::OciSpecError,
    },
}

/// Writing an OCI image layout (archive or directory) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// The blob source could not open a blob.
    #[error("opening blob {digest}")]
    OpenBlob {
        /// The blob.
        digest: Digest,
        /// The cause (`NotFound` for a missing blob).
        #[source]
        source: io::Error,
    },
    /// Reading a blob's contents failed.
    #[error("reading blob {digest}")]
    ReadBlob {
        /// The blob.
        digest: Digest,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A blob's size differs from its descriptor.
    #[error("blob {digest} has {found} bytes, its descriptor says {expected}")]
    BlobSizeMismatch {
        /// The blob.
        digest: Digest,
        /// Size in the descriptor.
        expected: u64,
        /// Size the source reported.
        found: u64,
    },
    /// A blob's content does not hash to its digest.
    #[error("blob content hashes to {found}, expected {expected}")]
    BlobDigestMismatch {
        /// The digest in the descriptor.
        expected: Digest,
        /// The digest of the bytes read.
        found: Digest,
    },
    /// Only sha256 digests can be verified.
    #[error("cannot verify blob {digest}: only sha256 is supported")]
    UnsupportedDigest {
        /// The blob.
        digest: Digest,
    },
    /// A manifest or index blob is larger than any sane one (4 MiB, as registries limit).
    #[error("manifest {digest} is {size} bytes, over the 4 MiB limit")]
    ManifestTooLarge {
        /// The blob.
        digest: Digest,
        /// Its size.
        size: u64,
    },
    /// A manifest or index blob is not valid JSON of its media type.
    #[error("parsing manifest {digest}")]
    ParseManifest {
        /// The blob.
        digest: Digest,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// Manifests nest (index of index…) deeper than allowed.
    #[error("manifest {digest} nests indexes too deeply")]
    TooDeep {
        /// The blob at which the limit was hit.
        digest: Digest,
    },
    /// A docker archive holds one image: the root must be an image manifest,
    /// not an index.
    #[error("{digest} is a {media_type}, not an image manifest: a docker archive holds one image")]
    NotAnImageManifest {
        /// The root descriptor.
        digest: Digest,
        /// Its media type.
        media_type: String,
    },
    /// The config lists a different number of diff ids than the manifest has
    /// layers, which `docker load` would refuse.
    #[error("image {digest} has {layers} layers but its config lists {diff_ids} diff ids")]
    LayerCountMismatch {
        /// The manifest.
        digest: Digest,
        /// Layers in the manifest.
        layers: usize,
        /// `rootfs.diff_ids` in the config.
        diff_ids: usize,
    },
    /// Serializing the docker archive's `manifest.json` or `repositories` failed.
    #[error("serializing {what}")]
    Serialize {
        /// Which file.
        what: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// An existing `index.json` in the target directory could not be read or parsed.
    #[error("reading existing index {path}")]
    ReadIndex {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Building or serializing `index.json` failed.
    #[error("building index.json")]
    BuildIndex {
        /// The cause.
        #[source]
        source: super::ImageError,
    },
    /// Writing an archive entry or a layout file failed.
    #[error("writing {path}")]
    Write {
        /// The path inside the archive or on disk.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}
