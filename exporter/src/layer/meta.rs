//! Reading an entry's metadata from its tar header and PAX records,
//! leniently where Go's `archive/tar` is lenient and strictly where a value
//! would be misapplied.

use std::io::{self, Read};

use rustix::fs::{FileType, Timespec, Timestamps};
use tar::EntryType;

use super::is_overlay_xattr;

/// Owner, mode, times and xattrs of one entry, validated.
#[derive(Debug, Clone)]
pub struct Meta {
    /// Numeric owner (never `u32::MAX`, which `chown` reads as "unchanged").
    pub uid: u32,
    /// Numeric group (never `u32::MAX`).
    pub gid: u32,
    /// Permission bits including setuid, setgid and sticky.
    pub mode: u32,
    /// Access and modification time (both the entry's mtime).
    pub times: Timestamps,
    /// Extended attributes, overlayfs' own left out.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// An entry's header or PAX records could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// A field is unusable (bad number, id out of range, link without
    /// target); names the field.
    #[error("invalid {0}")]
    Invalid(&'static str),
    /// Reading the entry's PAX records from the archive failed.
    #[error("reading the entry's PAX records")]
    Read(#[source] io::Error),
}

/// Reads an entry's owner, mode, mtime (PAX `mtime` wins) and
/// `SCHILY.xattr.*` records.
pub fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Meta, MetaError> {
    let header = entry.header();
    let old = header.as_old();
    let id = |v: io::Result<u64>, raw: &[u8], field| {
        lenient(v, raw)
            .and_then(|v| u32::try_from(v).ok())
            .filter(|&v| v != u32::MAX) // -1 means "unchanged" to chown
            .ok_or(MetaError::Invalid(field))
    };
    let uid = id(header.uid(), &old.uid, "uid")?;
    let gid = id(header.gid(), &old.gid, "gid")?;
    let mode = lenient(header.mode().map(u64::from), &old.mode).ok_or(MetaError::Invalid("mode"))? as u32 & 0o7777;
    let mut mtime = lenient(header.mtime(), &old.mtime)
        .and_then(|t| i64::try_from(t).ok())
        .map(|t| (t, 0))
        .ok_or(MetaError::Invalid("mtime"))?;
    let mut xattrs = Vec::new();
    if let Some(pax) = entry.pax_extensions().map_err(MetaError::Read)? {
        for record in pax {
            let record = record.map_err(|_| MetaError::Invalid("PAX record"))?;
            let Ok(key) = record.key() else { continue };
            if key == "mtime" {
                mtime = parse_pax_time(record.value_bytes()).ok_or(MetaError::Invalid("PAX mtime"))?;
            } else if let Some(xattr) = key.strip_prefix("SCHILY.xattr.") {
                if !is_overlay_xattr(xattr) && !xattr.is_empty() {
                    xattrs.push((xattr.to_owned(), record.value_bytes().to_vec()));
                }
            }
        }
    }
    let ts = Timespec { tv_sec: mtime.0, tv_nsec: mtime.1 };
    Ok(Meta { uid, gid, mode, times: Timestamps { last_access: ts, last_modification: ts }, xattrs })
}

/// The target of a symlink or hardlink entry.
pub fn link_target<R: Read>(entry: &tar::Entry<'_, R>) -> Result<Vec<u8>, MetaError> {
    entry.link_name_bytes().map(|t| t.into_owned()).ok_or(MetaError::Invalid("link target"))
}

/// What a character device, block device or FIFO entry makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSpec {
    /// Character device, block device or FIFO.
    pub file_type: FileType,
    /// Device major number (0 for a FIFO).
    pub major: u32,
    /// Device minor number (0 for a FIFO).
    pub minor: u32,
}

impl NodeSpec {
    /// Reads the node an entry of type `Char`, `Block` or `Fifo` describes.
    pub fn read(header: &tar::Header) -> Result<Self, MetaError> {
        let file_type = match header.entry_type() {
            EntryType::Fifo => return Ok(Self { file_type: FileType::Fifo, major: 0, minor: 0 }),
            EntryType::Char => FileType::CharacterDevice,
            EntryType::Block => FileType::BlockDevice,
            _ => return Err(MetaError::Invalid("entry type (not a device or FIFO)")),
        };
        let number = |v: io::Result<Option<u32>>| v.ok().flatten().ok_or(MetaError::Invalid("device number"));
        Ok(Self { file_type, major: number(header.device_major())?, minor: number(header.device_minor())? })
    }

    /// The `dev_t` for `mknod`.
    pub fn dev(&self) -> u64 {
        rustix::fs::makedev(self.major, self.minor)
    }
}

/// A numeric header field; blank (all NUL or space) reads as 0, as Go's
/// `archive/tar` reads it, since some writers leave fields empty.
fn lenient(parsed: io::Result<u64>, raw: &[u8]) -> Option<u64> {
    match parsed {
        Ok(v) => Some(v),
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Some(0),
        Err(_) => None,
    }
}

/// Parses a PAX time (`-?\d+(\.\d*)?`) into (seconds, nanoseconds >= 0).
fn parse_pax_time(value: &[u8]) -> Option<(i64, i64)> {
    let text = std::str::from_utf8(value).ok()?;
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let negative = secs.starts_with('-');
    let secs: i64 = secs.parse().ok()?;
    let mut nanos = 0i64;
    for (i, c) in frac.chars().enumerate() {
        let digit = i64::from(c.to_digit(10)?);
        if i < 9 {
            nanos += digit * 10i64.pow(8 - i as u32);
        }
    }
    Some(if negative && nanos > 0 { (secs - 1, 1_000_000_000 - nanos) } else { (secs, nanos) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(parse_pax_time(b"1.5"), Some((1, 500_000_000)));
        assert_eq!(parse_pax_time(b"-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_pax_time(b"-0.5"), Some((-1, 500_000_000)));
        assert_eq!(parse_pax_time(b"12.1234567891"), Some((12, 123_456_789)));
        assert_eq!(parse_pax_time(b"x"), None);
        assert_eq!(parse_pax_time(b"1.x"), None);
    }
}
