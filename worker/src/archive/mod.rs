//! `ADD` of a local tar archive: detection by content (as BuildKit: the file is an archive when
//! its decompressed stream starts with a valid tar header), decompression (gzip, bzip2, xz) and
//! a confined extraction into the diff (`extract`).
//!
//! The archive is hostile input, handled like a pulled layer: `..` is rejected, a leading `/` is
//! neutralised, a symlink the archive itself planted is never written through, hardlinks must
//! point at entries inside the destination, and everything is created with `*at` calls from
//! directory fds opened with `O_NOFOLLOW`. Unlike a layer, `.wh.` names are plain files. Symlinks
//! that already exist in the image are followed as Docker's chrooted untar follows them, but
//! resolved inside the destination directory, never above it.

mod extract;

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

pub(crate) use extract::extract;

/// Guards against decompression bombs: extraction stops with
/// [`ArchiveError::TooLarge`] once the bytes written exceed `max_bytes`, or exceed both
/// `ratio_floor` and `max_ratio` times the archive's own size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Most bytes an archive may expand to.
    pub max_bytes: u64,
    /// Most expansion relative to the archive file's size...
    pub max_ratio: u64,
    /// ...enforced only above this many bytes (small archives of zeros are legitimate).
    pub ratio_floor: u64,
    /// Most entries.
    pub max_entries: u64,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        ArchiveLimits { max_bytes: 64 << 30, max_ratio: 1000, ratio_floor: 256 << 20, max_entries: 4_000_000 }
    }
}

/// The compression of a detected archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Tar,
    Gzip,
    Bzip2,
    Xz,
}

/// Extracting an `ADD`ed archive failed. Variants named after an attack (`PathEscape`,
/// `SymlinkParent`, `HardlinkOutside`, `TooLarge`) mean the archive is hostile or broken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The archive could not be opened or read (or it is corrupt).
    #[error("reading the archive")]
    Read(#[source] io::Error),
    /// The archive is compressed with a format this build cannot extract.
    #[error("{format}-compressed archives are not supported yet")]
    UnsupportedCompression {
        /// The detected format.
        format: &'static str,
    },
    /// An entry name has a `..` component.
    #[error("archive entry {entry:?} escapes the destination")]
    PathEscape {
        /// The entry name.
        entry: String,
    },
    /// A parent of an entry is a symlink that an earlier entry of the archive created.
    #[error("archive entry {entry:?} would be written through the symlink {parent:?}")]
    SymlinkParent {
        /// The entry name.
        entry: String,
        /// The symlink.
        parent: String,
    },
    /// A parent of an entry exists and is not a directory.
    #[error("archive entry {entry:?} has a parent {parent:?} that is not a directory")]
    ParentNotDirectory {
        /// The entry name.
        entry: String,
        /// The parent.
        parent: String,
    },
    /// A hardlink target has `..` or goes through a symlink the archive created.
    #[error("hardlink {entry:?} points outside the destination at {target:?}")]
    HardlinkOutside {
        /// The entry name.
        entry: String,
        /// The link target.
        target: String,
    },
    /// A hardlink target is not a file extracted earlier.
    #[error("hardlink {entry:?} points at {target:?}, which the archive did not create")]
    HardlinkTargetMissing {
        /// The entry name.
        entry: String,
        /// The link target.
        target: String,
    },
    /// A hardlink target is a directory.
    #[error("hardlink {entry:?} points at directory {target:?}")]
    HardlinkToDirectory {
        /// The entry name.
        entry: String,
        /// The link target.
        target: String,
    },
    /// A header field is unusable.
    #[error("archive entry {entry:?} has an invalid {field}")]
    InvalidHeader {
        /// The entry name.
        entry: String,
        /// Which field.
        field: &'static str,
    },
    /// An entry type that cannot be extracted (or, for a character device 0:0, that a layer
    /// would read as a whiteout).
    #[error("archive entry {entry:?} has unsupported type {kind}")]
    UnsupportedEntry {
        /// The entry name.
        entry: String,
        /// What it is.
        kind: String,
    },
    /// The archive expands beyond [`ArchiveLimits`].
    #[error("the archive expands to more than {limit} bytes ({what}); refusing a possible decompression bomb")]
    TooLarge {
        /// The limit hit, in bytes (or entries).
        limit: u64,
        /// Which limit.
        what: &'static str,
    },
    /// Creating, replacing or writing an entry failed.
    #[error("extracting {entry:?}")]
    Write {
        /// The entry name.
        entry: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

const GZIP: &[u8] = &[0x1f, 0x8b];
const BZIP2: &[u8] = b"BZh";
const XZ: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const ZSTD: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// The decompressed stream of an archive file.
pub(crate) fn decoder(file: File, format: Format) -> Box<dyn Read> {
    let buffered = BufReader::with_capacity(1 << 16, file);
    match format {
        Format::Tar => Box::new(buffered),
        Format::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buffered)),
        Format::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(buffered)),
        Format::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(buffered)),
    }
}

/// Is the file at `path` a tar archive (plain or compressed)? `Ok(None)` means "copy it as a
/// file", which is also the answer for a corrupt compressed stream, as in BuildKit.
pub(crate) fn detect(path: &Path) -> Result<Option<Format>, ArchiveError> {
    let mut file = File::open(path).map_err(ArchiveError::Read)?;
    let mut magic = [0u8; 6];
    let n = read_up_to(&mut file, &mut magic).map_err(ArchiveError::Read)?;
    let magic = &magic[..n];
    let format = if magic.starts_with(GZIP) {
        Format::Gzip
    } else if magic.starts_with(BZIP2) {
        Format::Bzip2
    } else if magic.starts_with(XZ) {
        Format::Xz
    } else if magic.starts_with(ZSTD) {
        return Err(ArchiveError::UnsupportedCompression { format: "zstd" });
    } else {
        Format::Tar
    };
    let file = File::open(path).map_err(ArchiveError::Read)?;
    let mut stream = decoder(file, format);
    let mut block = [0u8; 1024];
    let Ok(n) = read_up_to(&mut stream, &mut block) else { return Ok(None) };
    let first = if block[..512].iter().all(|b| *b == 0) { &block[512..] } else { &block[..512] };
    Ok((n >= 512 && valid_tar_header(first)).then_some(format))
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A tar header block whose checksum is right (Go's `archive/tar` accepts the unsigned and the
/// signed sum), which is what makes Go's `tar.Reader.Next` succeed.
fn valid_tar_header(block: &[u8]) -> bool {
    if block.len() < 512 || block.iter().all(|b| *b == 0) {
        return false;
    }
    let field = &block[148..156];
    let text: String = field.iter().take_while(|b| **b != 0).map(|b| char::from(*b)).collect();
    let Ok(stored) = i64::from_str_radix(text.trim_matches(' '), 8) else { return false };
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, b) in block[..512].iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { *b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    stored == unsigned || stored == signed
}

#[cfg(test)]
mod tests;
