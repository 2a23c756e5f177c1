//! Image metadata and outputs: config/manifest/index documents from layers,
//! OCI image layouts written as a tar archive or a directory, and docker
//! (`docker save`) archives.

mod attestation;
mod blobs;
mod docker_archive;
mod error;
mod image;
mod layout;
mod mediatype;

pub use attestation::{
    build_attestation, is_attestation, BuiltAttestation, Statement, ANNOTATION_PREDICATE_TYPE,
    ANNOTATION_REFERENCE_DIGEST, ANNOTATION_REFERENCE_TYPE, ATTESTATION_MANIFEST, IN_TOTO,
};
pub use blobs::{BlobSource, LayoutBlobs, MemoryBlobs};
pub use docker_archive::write_docker_archive;
pub use error::{ImageError, LayoutError};
pub use image::{
    build_index, build_index_as, canonical_json, docker_config_extras, BuiltImage, BuiltIndex, ImageBuilder,
};
pub use layout::{name_annotations, write_oci_archive, write_oci_dir, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME};
pub use mediatype::{
    DOCKER_CONFIG, DOCKER_FOREIGN_LAYER_GZIP, DOCKER_LAYER, DOCKER_LAYER_GZIP, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST,
};
