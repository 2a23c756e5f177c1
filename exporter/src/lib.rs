//! rbuild-exporter: build results → image layers → image documents → outputs.
//!
//! - [`layer::pack`] turns a diff directory in overlayfs upper-dir format
//!   (whiteouts as char devices 0:0, opaque dirs by xattr) into a
//!   deterministic layer tar, uncompressed, gzip or zstd, streamed to any
//!   writer while computing the diff id and blob digest. Compression runs on
//!   all cores ([`layer::Compressor`], usable on its own) and its output does
//!   not depend on the thread count.
//! - [`layer::unpack`] applies a (possibly hostile) layer blob to an empty
//!   directory in the same overlay format, confined to that directory.
//! - [`oci::ImageBuilder`] appends packed layers and history to a base config
//!   and produces canonical config and manifest JSON with their descriptors,
//!   with OCI or docker media types and docker-only config fields carried along.
//! - [`oci::write_oci_archive`] / [`oci::write_oci_dir`] write an OCI image
//!   layout, [`oci::write_docker_archive`] a `docker load` archive, streaming
//!   blobs from a [`oci::BlobSource`] and verifying them.
//! - [`rootfs::write_rootfs_dir`] / [`rootfs::write_rootfs_tar`] write the
//!   merged filesystem of a stack of diffs (`type=local`, `type=tar`).
//!
//! ```
//! use rbuild_exporter::layer::{pack, Compression, PackOptions};
//! use rbuild_exporter::oci::{write_oci_archive, ImageBuilder, MemoryBlobs};
//! use rbuild_exporter::oci_spec::image::{Arch, HistoryBuilder, Os};
//!
//! let diff = tempfile::tempdir()?;
//! std::fs::write(diff.path().join("hello"), "hi\n")?;
//!
//! let mut opts = PackOptions::default();
//! opts.compression(Compression::None).source_date_epoch(Some(0));
//! let mut blob = Vec::new();
//! let layer = pack(diff.path(), &mut blob, &opts)?;
//! assert_eq!(layer.entries, 1);
//!
//! let mut image = ImageBuilder::scratch(Arch::Amd64, Os::Linux);
//! image.add_layer(&layer, HistoryBuilder::default().created_by("COPY hello /").build()?);
//! let built = image.build()?;
//!
//! let mut blobs = built.blobs();
//! blobs.insert(blob);
//! let archive = write_oci_archive(Vec::new(), &built.manifest, Some("docker.io/library/hello:1"), &blobs)?;
//! assert!(!archive.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Invariants: the same tree and options give byte-identical blobs; nothing
//! in an unpacked layer lands outside its destination; written blobs are
//! checked against their descriptors' size and sha256.

pub mod layer;
pub mod oci;
pub mod rootfs;

mod hash;

pub use hash::sha256_digest;
pub use oci_spec;

/// Any error of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// See [`layer::PackError`].
    #[error(transparent)]
    Pack(#[from] layer::PackError),
    /// See [`layer::UnpackError`].
    #[error(transparent)]
    Unpack(#[from] layer::UnpackError),
    /// See [`oci::ImageError`].
    #[error(transparent)]
    Image(#[from] oci::ImageError),
    /// See [`oci::LayoutError`].
    #[error(transparent)]
    Layout(#[from] oci::LayoutError),
    /// See [`rootfs::RootfsError`].
    #[error(transparent)]
    Rootfs(#[from] rootfs::RootfsError),
    /// See [`layer::ParseCompressionError`].
    #[error(transparent)]
    Compression(#[from] layer::ParseCompressionError),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
