//! Reading an entry's metadata from its tar header and PAX records,
//! leniently where Go's `archive/tar` is lenient and strictly where a value
//! would be misapplied.

use std::io::{self, Read};

use rustix::fs::{Timespec, Timestamps};

use super::error::UnpackError;
use super::is_overlay_xattr;

/// Owner, mode, times and xattrs of one entry, validated.
pub(crate) struct Meta {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub times: Timestamps,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

pub(crate) fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>, name: &str) -> Result<Meta, UnpackError> {
    let header = entry.header();
    let old = header.as_old();
    let id = |v: io::Result<u64>, raw: &[u8], field| {
        lenient(v, raw)
            .and_then(|v| u32::try_from(v).ok())
            .filter(|&v| v != u32::MAX) // -1 means "unchanged" to chown
            .ok_or_else(|| invalid(name, field))
    };
    let uid = id(header.uid(), &old.uid, "uid")?;
    let gid = id(header.gid(), &old.gid, "gid")?;
    let mode = lenient(header.mode().map(u64::from), &old.mode).ok_or_else(|| invalid(name, "mode"))? as u32 & 0o7777;
    let mut mtime = lenient(header.mtime(), &old.mtime)
        .and_then(|t| i64::try_from(t).ok())
        .map(|t| (t, 0))
        .ok_or_else(|| invalid(name, "mtime"))?;
    let mut xattrs = Vec::new();
    if let Some(pax) = entry.pax_extensions().map_err(|source| UnpackError::ReadArchive { source })? {
        for record in pax {
            let record = record.map_err(|_| invalid(name, "PAX record"))?;
            let Ok(key) = record.key() else { continue };
            if key == "mtime" {
                mtime = parse_pax_time(record.value_bytes()).ok_or_else(|| invalid(name, "PAX mtime"))?;
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

/// A numeric header field; blank (all NUL or space) reads as 0, as Go's
/// `archive/tar` reads it, since some writers leave fields empty.
fn lenient(parsed: io::Result<u64>, raw: &[u8]) -> Option<u64> {
    match parsed {
        Ok(v) => Some(v),
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Some(0),
        Err(_) => None,
    }
}

pub(crate) fn link_target<R: Read>(entry: &tar::Entry<'_, R>, name: &str) -> Result<Vec<u8>, UnpackError> {
    entry.link_name_bytes().map(|t| t.into_owned()).ok_or_else(|| invalid(name, "link target"))
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

pub(crate) fn invalid(entry: &str, field: &'static str) -> UnpackError {
    UnpackError::InvalidHeader { entry: entry.to_owned(), field }
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
