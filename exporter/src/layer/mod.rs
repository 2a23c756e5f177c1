//! Layer tars: packing an overlay diff directory into a blob, and unpacking a
//! blob back into an overlay-format directory.
//!
//! On disk, a diff is an overlayfs upper directory: a deletion is a character
//! device 0:0 named like the deleted entry, and a directory that hides
//! everything below it carries `trusted.overlay.opaque=y`. In a layer tar those
//! are `.wh.<name>` and `<dir>/.wh..wh..opq` (the OCI whiteout convention).

mod apply;
mod compress;
mod error;
mod header;
mod meta;
mod pack;
mod pipe;
mod resolve;
mod unpack;

pub use compress::{
    block_key, BlockCache, BlockKey, CachedBlock, Compression, Compressor, GzipBlock, ParseCompressionError, BIG_ENTRY,
    GZIP_BLOCK_SIZE,
};
pub use error::{PackError, UnpackError};
pub use pack::{pack, pack_with, PackOptions, PackedBlob, PackedLayer};
pub use unpack::{unpack, UnpackOptions, UnpackedLayer};

// For the root filesystem outputs (`crate::rootfs`).
pub(crate) use pack::{children, read_xattrs, Kind, Node, Walker};
pub(crate) use untar::{
    is_dir, lstat_at, remove_at, set_meta_at, set_meta_fd, Confined, Meta, MetaPolicy, ResolveError, SetMetaError,
    DIR_FLAGS,
};

/// The confined extraction core that [`unpack`] is built on, shared with
/// `ADD` of a local archive and the root filesystem outputs: tar paths are
/// split into normal components (`..` refused), every directory is reached
/// from the destination's fd without following a symlink ([`Confined`]),
/// entries are created with `*at` calls relative to their parent's fd, and
/// owner, mode, xattrs and times are read from the entry ([`read_meta`]) and
/// applied ([`set_meta_fd`], [`set_meta_at`]).
///
/// [`read_meta`]: untar::read_meta
/// [`Confined`]: untar::Confined
/// [`set_meta_fd`]: untar::set_meta_fd
/// [`set_meta_at`]: untar::set_meta_at
pub mod untar {
    pub use super::apply::{
        finish_file, make_dir, make_file, make_node, make_symlink, set_meta_at, set_meta_fd, CreateError, MetaPolicy,
        SetMetaError,
    };
    pub use super::meta::{link_target, read_meta, Meta, MetaError, NodeSpec};
    pub use super::resolve::{
        components, is_dir, join, link_at, lstat_at, remove_at, split_link_target, Confined, LinkError, ResolveError,
        DIR_FLAGS,
    };
}

/// Prefix of a whiteout entry name in a layer tar.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the entry that marks its directory opaque in a layer tar.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The xattr overlayfs reads to treat an upper directory as opaque.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Opaque-directory xattrs recognised when packing (the `userxattr` mount
/// option makes overlayfs use the `user.` namespace).
pub(crate) const OPAQUE_XATTRS: [&str; 2] = [OPAQUE_XATTR, "user.overlay.opaque"];

/// Overlayfs bookkeeping xattrs (opaque, redirect, origin, metacopy…) never go
/// into a layer and are never taken from one: a layer that set them could
/// make overlayfs show files from elsewhere.
fn is_overlay_xattr(name: &str) -> bool {
    name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.")
}
