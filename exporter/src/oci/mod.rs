//! Image metadata and outputs: config/manifest/index documents from layers,
//! and OCI image layouts written as a tar archive or a directory.

mod blobs;
mod error;
mod image;
mod layout;

pub use blobs::{BlobSource, LayoutBlobs, MemoryBlobs};
pub use error::{ImageError, LayoutError};
pub use image::{build_index, canonical_json, BuiltImage, BuiltIndex, ImageBuilder};
pub use layout::{
    name_annotations, write_oci_archive, write_oci_dir, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME,
};
