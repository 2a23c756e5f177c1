//! Writing one tar entry the way Go's `archive/tar` does for BuildKit: a USTAR
//! header when every field fits (ASCII names, small numbers), preceded by a PAX
//! extended header carrying whatever does not fit plus `SCHILY.xattr.*` records.
//! Nothing host-dependent (user names, atime, ctime) is written.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use tar::{EntryType, Header};

/// Largest value of an 8-byte octal header field (uid, gid).
const MAX_OCTAL_8: u64 = 0o7_777_777;
/// Largest value of a 12-byte octal header field (size, mtime).
const MAX_OCTAL_12: u64 = 0o77_777_777_777;

/// Everything about one entry except its data.
#[derive(Debug, Clone)]
pub(crate) struct EntrySpec {
    /// Relative path, `/`-separated; directories end in `/`.
    pub path: Vec<u8>,
    pub kind: EntryType,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Seconds since the epoch.
    pub mtime: i64,
    /// Data length; 0 for everything but regular files.
    pub size: u64,
    /// Symlink target or hardlink target path.
    pub link: Option<Vec<u8>>,
    /// (major, minor) for character and block devices.
    pub device: Option<(u32, u32)>,
    /// Extended attributes by name, written as `SCHILY.xattr.<name>`.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl EntrySpec {
    /// A fresh spec with zeroed metadata.
    pub(crate) fn new(path: Vec<u8>, kind: EntryType) -> Self {
        Self {
            path,
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
            size: 0,
            link: None,
            device: None,
            xattrs: BTreeMap::new(),
        }
    }
}

/// Appends `spec` (and `data`, exactly `spec.size` bytes) to `builder`.
pub(crate) fn append_entry<W: Write, R: Read>(
    builder: &mut tar::Builder<W>,
    spec: &EntrySpec,
    data: R,
) -> io::Result<()> {
    let mut header = Header::new_ustar();
    // PAX records sorted by key, as Go writes them.
    let mut pax: BTreeMap<String, Vec<u8>> = BTreeMap::new();

    if !set_ustar_path(&mut header, &spec.path) {
        pax.insert("path".into(), spec.path.clone());
    }
    if let Some(link) = &spec.link {
        let slot = &mut header.as_old_mut().linkname;
        if link.len() <= slot.len() && link.is_ascii() {
            slot[..link.len()].copy_from_slice(link);
        } else {
            pax.insert("linkpath".into(), link.clone());
            let n = link.len().min(slot.len());
            slot[..n].copy_from_slice(&link[..n]);
        }
    }
    header.set_entry_type(spec.kind);
    header.set_mode(spec.mode & 0o7777);
    for (key, value, setter) in
        [("uid", spec.uid, Header::set_uid as fn(&mut Header, u64)), ("gid", spec.gid, Header::set_gid)]
    {
        if value > MAX_OCTAL_8 {
            pax.insert(key.into(), value.to_string().into_bytes());
            setter(&mut header, 0);
        } else {
            setter(&mut header, value);
        }
    }
    if spec.size > MAX_OCTAL_12 {
        pax.insert("size".into(), spec.size.to_string().into_bytes());
        header.set_size(0);
    } else {
        header.set_size(spec.size);
    }
    match u64::try_from(spec.mtime) {
        Ok(t) if t <= MAX_OCTAL_12 => header.set_mtime(t),
        _ => {
            pax.insert("mtime".into(), spec.mtime.to_string().into_bytes());
            header.set_mtime(0);
        }
    }
    if let Some((major, minor)) = spec.device {
        header.set_device_major(major)?;
        header.set_device_minor(minor)?;
    }
    for (name, value) in &spec.xattrs {
        pax.insert(format!("SCHILY.xattr.{name}"), value.clone());
    }
    header.set_cksum();

    if !pax.is_empty() {
        builder.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))?;
    }
    builder.append(&header, data)
}

/// Stores `path` in the USTAR name (and prefix) fields; returns false when it
/// does not fit or is not ASCII, in which case a truncated name is stored and
/// the caller must add a PAX `path` record.
fn set_ustar_path(header: &mut Header, path: &[u8]) -> bool {
    let (prefix, name, fits) = split_ustar_path(path);
    let Some(ustar) = header.as_ustar_mut() else {
        return false;
    };
    ustar.prefix[..prefix.len()].copy_from_slice(prefix);
    ustar.name[..name.len()].copy_from_slice(name);
    fits
}

/// Splits `path` into (prefix, name, fits) following Go's `splitUSTARPath`.
fn split_ustar_path(path: &[u8]) -> (&[u8], &[u8], bool) {
    const NAME: usize = 100;
    const PREFIX: usize = 155;
    let truncated = &path[..path.len().min(NAME)];
    if !path.is_ascii() {
        return (&[], truncated, false);
    }
    if path.len() <= NAME {
        return (&[], path, true);
    }
    let mut limit = path.len().min(PREFIX + 1);
    if limit == path.len() && path[limit - 1] == b'/' {
        limit -= 1;
    }
    let Some(i) = path[..limit].iter().rposition(|&b| b == b'/') else {
        return (&[], truncated, false);
    };
    let name_len = path.len() - i - 1;
    if i == 0 || name_len == 0 || name_len > NAME || i > PREFIX {
        return (&[], truncated, false);
    }
    (&path[..i], &path[i + 1..], true)
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! split {
        ($path:expr => fits $prefix:expr, $name:expr) => {
            let p = $path;
            assert_eq!(split_ustar_path(p.as_bytes()), ($prefix.as_bytes(), $name.as_bytes(), true));
        };
        ($path:expr => pax) => {
            let p = $path;
            assert!(!split_ustar_path(p.as_bytes()).2);
        };
    }

    #[test]
    fn ustar_split() {
        split!("etc/passwd" => fits "", "etc/passwd");
        split!(format!("{}/{}", "a".repeat(150), "b".repeat(90)) => fits "a".repeat(150), "b".repeat(90));
        split!(format!("{}/{}/", "a".repeat(150), "b".repeat(90)) => fits "a".repeat(150), format!("{}/", "b".repeat(90)));
        split!("a".repeat(101) => pax);
        split!(format!("{}/{}", "a".repeat(156), "b") => pax);
        split!(format!("{}/{}", "a".repeat(10), "b".repeat(101)) => pax);
        split!("caf\u{e9}" => pax);
    }

    fn write_one(spec: &EntrySpec) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        append_entry(&mut b, spec, &b""[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn long_values_round_trip_through_pax() {
        let long = format!("{}/{}", "d".repeat(200), "f".repeat(120));
        let mut spec = EntrySpec::new(long.clone().into_bytes(), EntryType::Symlink);
        spec.link = Some("t".repeat(150).into_bytes());
        spec.uid = 5_000_000;
        spec.gid = 7;
        spec.mtime = 1_700_000_000;
        spec.xattrs.insert("user.k".into(), b"v\0bin".to_vec());
        let bytes = write_one(&spec);
        let mut ar = tar::Archive::new(&bytes[..]);
        let mut entries = ar.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(e.path_bytes().as_ref(), long.as_bytes());
        assert_eq!(e.link_name_bytes().unwrap().as_ref(), "t".repeat(150).as_bytes());
        assert_eq!(e.header().uid().unwrap(), 5_000_000);
        assert_eq!(e.header().gid().unwrap(), 7);
        assert_eq!(e.header().mtime().unwrap(), 1_700_000_000);
        let pax = e.pax_extensions().unwrap().unwrap();
        let xattr = pax
            .map(|r| r.unwrap())
            .find(|r| r.key().unwrap() == "SCHILY.xattr.user.k")
            .map(|r| r.value_bytes().to_vec());
        assert_eq!(xattr.as_deref(), Some(&b"v\0bin"[..]));
    }
}
