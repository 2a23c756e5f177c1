//! Errors of packing a diff directory and of unpacking a layer blob.

use std::io;
use std::path::PathBuf;

/// Packing a diff directory into a layer blob failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PackError {
    /// Listing a directory of the diff failed.
    #[error("reading directory {path}")]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `lstat` of an entry failed.
    #[error("reading metadata of {path}")]
    Stat {
        /// The entry.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading a symlink's target failed.
    #[error("reading symlink {path}")]
    ReadLink {
        /// The symlink.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Listing or reading extended attributes failed.
    #[error("reading extended attributes of {path}")]
    ReadXattrs {
        /// The entry.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An extended attribute name is not UTF-8, which PAX records require.
    #[error("extended attribute {name:?} of {path} is not UTF-8")]
    XattrName {
        /// The entry.
        path: PathBuf,
        /// The name, lossily decoded.
        name: String,
    },
    /// Opening or reading a regular file failed (or it shrank while being read).
    #[error("reading file {path}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing the tar entry for `path` to the output failed.
    #[error("writing layer entry for {path}")]
    WriteEntry {
        /// The entry being written.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Setting up the compressor (its threads, libzstd's context) failed.
    #[error("starting the layer compressor")]
    StartCompressor {
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Finishing the tar stream, the compressor or flushing the output failed.
    #[error("finishing layer output")]
    Finish {
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Unpacking a layer blob into an overlay-format directory failed.
///
/// Variants named after an attack (`PathEscape`, `SymlinkParent`,
/// `HardlinkOutside`) mean the archive tried to reach outside the destination;
/// nothing was written there.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnpackError {
    /// The destination could not be opened as a directory.
    #[error("opening unpack destination {path}")]
    OpenDest {
        /// The destination.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The destination already has entries; layers unpack into an empty dir.
    #[error("unpack destination {path} is not empty")]
    DestNotEmpty {
        /// The destination.
        path: PathBuf,
    },
    /// The blob is compressed in a format this build does not read.
    #[error("layer is compressed with {format}, which is not supported yet")]
    UnsupportedCompression {
        /// The detected format.
        format: &'static str,
    },
    /// Reading or decompressing the archive stream failed (corrupt or truncated blob).
    #[error("reading layer archive")]
    ReadArchive {
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An entry name is absolute after cleaning or has a `..` component.
    #[error("layer entry {entry:?} escapes the destination")]
    PathEscape {
        /// The entry name as in the archive.
        entry: String,
    },
    /// A parent component of an entry is a symlink; following it could leave the destination.
    #[error("layer entry {entry:?} has a symlink parent {parent:?}")]
    SymlinkParent {
        /// The entry name as in the archive.
        entry: String,
        /// The parent path that is a symlink.
        parent: String,
    },
    /// A parent component of an entry exists but is not a directory.
    #[error("layer entry {entry:?} has a parent {parent:?} that is not a directory")]
    ParentNotDirectory {
        /// The entry name as in the archive.
        entry: String,
        /// The parent path.
        parent: String,
    },
    /// A hardlink target leaves the destination (`..`, or through a symlink).
    #[error("hardlink {entry:?} points outside the destination at {target:?}")]
    HardlinkOutside {
        /// The entry name as in the archive.
        entry: String,
        /// The link target as in the archive.
        target: String,
    },
    /// A hardlink target is not an earlier entry of the layer.
    #[error("hardlink {entry:?} points at {target:?}, which does not exist")]
    HardlinkTargetMissing {
        /// The entry name as in the archive.
        entry: String,
        /// The link target as in the archive.
        target: String,
    },
    /// A hardlink target is a directory.
    #[error("hardlink {entry:?} points at directory {target:?}")]
    HardlinkToDirectory {
        /// The entry name as in the archive.
        entry: String,
        /// The link target as in the archive.
        target: String,
    },
    /// A `.wh.` entry names nothing (`.wh.` alone).
    #[error("whiteout {entry:?} names no file")]
    InvalidWhiteout {
        /// The entry name as in the archive.
        entry: String,
    },
    /// A header field is unusable (bad number, id out of range, link without target).
    #[error("layer entry {entry:?} has an invalid {field}")]
    InvalidHeader {
        /// The entry name as in the archive.
        entry: String,
        /// Which field.
        field: &'static str,
    },
    /// The entry type is not one a layer may hold.
    #[error("layer entry {entry:?} has unsupported type {kind:?}")]
    UnsupportedEntry {
        /// The entry name as in the archive.
        entry: String,
        /// The tar type flag.
        kind: char,
    },
    /// Removing an earlier entry that a later one replaces failed.
    #[error("replacing existing {entry:?}")]
    Replace {
        /// The entry name as in the archive.
        entry: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Creating the file, directory, link or node for an entry failed.
    #[error("creating {entry:?}")]
    Create {
        /// The entry name as in the archive.
        entry: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Writing a regular file's contents failed.
    #[error("writing contents of {entry:?}")]
    WriteFile {
        /// The entry name as in the archive.
        entry: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Applying owner, mode, extended attributes or times failed.
    #[error("setting {what} of {entry:?}")]
    SetMetadata {
        /// The entry name as in the archive.
        entry: String,
        /// `owner`, `mode`, `xattr <name>`, `times`, `opaque marker`.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}
