//! rpm: the sqlite database (`rpmdb.sqlite`, rpm 4.16 and later: Fedora 33+, RHEL 9+), whose
//! `Packages` table holds each package's header blob, or the older BerkeleyDB `Packages` file
//! (see `bdb`) holding the same blobs; the blobs are parsed here.
//!
//! A header blob (as rpm stores it, without the lead magic): `il` and `dl` (big-endian u32),
//! `il` index entries of 16 bytes (tag, type, offset, count; big-endian), then `dl` bytes of
//! data the entries point into.

use std::io;

use super::{bdb, open_regular, Kind, OsRelease, Package, Party, SbomError};
use crate::merged::MergedView;

const SQLITE_DBS: [&str; 2] = ["/var/lib/rpm/rpmdb.sqlite", "/usr/lib/sysimage/rpm/rpmdb.sqlite"];
const BDB_DBS: [&str; 2] = ["/var/lib/rpm/Packages", "/usr/lib/sysimage/rpm/Packages"];

/// rpm's own bounds on a header (`HEADER_MAX_BYTES`, and its index size limit).
const MAX_DATA: usize = 256 << 20;
const MAX_INDEX: usize = 0xffff;

const TAG_NAME: i32 = 1000;
const TAG_VERSION: i32 = 1001;
const TAG_RELEASE: i32 = 1002;
const TAG_EPOCH: i32 = 1003;
const TAG_VENDOR: i32 = 1011;
const TAG_LICENSE: i32 = 1014;
const TAG_ARCH: i32 = 1022;
const TAG_OLDFILENAMES: i32 = 1027;
const TAG_SOURCERPM: i32 = 1044;
const TAG_DIRINDEXES: i32 = 1116;
const TAG_BASENAMES: i32 = 1117;
const TAG_DIRNAMES: i32 = 1118;

const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_STRING_ARRAY: u32 = 8;
const TYPE_I18NSTRING: u32 = 9;

/// The packages of the image's rpm database: the sqlite one, else a BerkeleyDB one.
pub(super) fn scan(
    view: &MergedView,
    release: Option<&OsRelease>,
    warnings: &mut Vec<String>,
) -> Result<Vec<Package>, SbomError> {
    // Both paths are one database on systems where one links to the other: the first found
    // is the database.
    for db in SQLITE_DBS {
        if let Some(headers) = read_sqlite(view, db)? {
            return Ok(from_headers(&headers, 0, release, db, warnings));
        }
    }
    for db in BDB_DBS {
        if let Some((file, _)) = open_regular(view, db)? {
            let values = bdb::read_values(&file)
                .map_err(|source| SbomError::RpmBerkeleyDb { path: db.trim_start_matches('/').to_owned(), source })?;
            return Ok(from_headers(&values.values, values.unreadable, release, db, warnings));
        }
    }
    Ok(Vec::new())
}

/// The packages of a database's header blobs; `unreadable` records were lost already.
fn from_headers(
    headers: &[Vec<u8>],
    unreadable: usize,
    release: Option<&OsRelease>,
    db: &str,
    warnings: &mut Vec<String>,
) -> Vec<Package> {
    let mut skipped = unreadable;
    let mut out = Vec::with_capacity(headers.len());
    for blob in headers {
        match Header::parse(blob).and_then(|h| h.to_package(release, db)) {
            Some(p) => out.push(p),
            None => skipped += 1,
        }
    }
    if skipped > 0 {
        warnings.push(format!("{db}: skipped {skipped} malformed package headers"));
    }
    out
}

/// The header blobs of the sqlite database at `db` in the image, `None` when there is none.
/// sqlite reads a private copy, so it never touches (or creates journals in) the image.
fn read_sqlite(view: &MergedView, db: &str) -> Result<Option<Vec<Vec<u8>>>, SbomError> {
    let Some((mut file, _)) = open_regular(view, db)? else { return Ok(None) };
    let rel = db.trim_start_matches('/').to_owned();
    let io_err = |source: io::Error| SbomError::Io { path: rel.clone(), source };
    let mut copy = tempfile::NamedTempFile::new().map_err(io_err)?;
    io::copy(&mut file, copy.as_file_mut()).map_err(io_err)?;
    let db_err = |source| SbomError::RpmDatabase { path: rel.clone(), source };
    // `immutable`: no locks, no journal or WAL files, even beside the private copy.
    let uri = format!("file:{}?immutable=1", uri_path(&copy.path().to_string_lossy()));
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
        | rusqlite::OpenFlags::SQLITE_OPEN_URI
        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(uri, flags).map_err(db_err)?;
    let mut stmt = conn.prepare("SELECT blob FROM Packages ORDER BY hnum").map_err(db_err)?;
    let rows = stmt.query_map([], |row| row.get::<_, Vec<u8>>(0)).map_err(db_err)?;
    let blobs = rows.collect::<Result<Vec<_>, _>>().map_err(db_err)?;
    Ok(Some(blobs))
}

/// `path` with the characters a sqlite URI gives a meaning to escaped.
fn uri_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            '%' | '?' | '#' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The index and data of one header.
#[derive(Debug)]
struct Header<'a> {
    /// (tag, type, offset, count)
    entries: Vec<(i32, u32, usize, usize)>,
    data: &'a [u8],
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let bytes = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(bytes.try_into().ok()?))
}

impl<'a> Header<'a> {
    fn parse(blob: &'a [u8]) -> Option<Header<'a>> {
        let il = usize::try_from(be32(blob, 0)?).ok()?;
        let dl = usize::try_from(be32(blob, 4)?).ok()?;
        if il == 0 || il > MAX_INDEX || dl > MAX_DATA {
            return None;
        }
        let data_start = 8 + il * 16;
        let data = blob.get(data_start..data_start.checked_add(dl)?)?;
        let mut entries = Vec::with_capacity(il);
        for i in 0..il {
            let at = 8 + i * 16;
            let tag = be32(blob, at)? as i32;
            let ty = be32(blob, at + 4)?;
            let offset = usize::try_from(be32(blob, at + 8)?).ok()?;
            let count = usize::try_from(be32(blob, at + 12)?).ok()?;
            entries.push((tag, ty, offset, count));
        }
        Some(Header { entries, data })
    }

    fn entry(&self, tag: i32) -> Option<(u32, usize, usize)> {
        self.entries.iter().find(|e| e.0 == tag).map(|&(_, ty, off, count)| (ty, off, count))
    }

    /// The NUL-terminated string at `off` of the data.
    fn cstr(&self, off: usize) -> Option<(&'a str, usize)> {
        let rest = self.data.get(off..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        Some((std::str::from_utf8(&rest[..end]).ok()?, off + end + 1))
    }

    fn string(&self, tag: i32) -> Option<&'a str> {
        match self.entry(tag)? {
            (TYPE_STRING | TYPE_I18NSTRING | TYPE_STRING_ARRAY, off, _) => self.cstr(off).map(|(s, _)| s),
            _ => None,
        }
    }

    fn strings(&self, tag: i32) -> Option<Vec<&'a str>> {
        let (ty, mut off, count) = self.entry(tag)?;
        if ty != TYPE_STRING_ARRAY || count > self.data.len() {
            return None;
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let (s, next) = self.cstr(off)?;
            out.push(s);
            off = next;
        }
        Some(out)
    }

    fn int32s(&self, tag: i32) -> Option<Vec<u32>> {
        let (ty, off, count) = self.entry(tag)?;
        if ty != TYPE_INT32 || count > self.data.len() / 4 {
            return None;
        }
        (0..count).map(|i| be32(self.data, off.checked_add(i * 4)?)).collect()
    }

    /// The paths the package installed: `DIRNAMES[DIRINDEXES[i]] + BASENAMES[i]`, or the old
    /// single list.
    fn files(&self) -> Option<Vec<String>> {
        let Some(basenames) = self.strings(TAG_BASENAMES) else {
            return Some(self.strings(TAG_OLDFILENAMES).unwrap_or_default().into_iter().map(str::to_owned).collect());
        };
        let dirnames = self.strings(TAG_DIRNAMES)?;
        let indexes = self.int32s(TAG_DIRINDEXES)?;
        if indexes.len() != basenames.len() {
            return None;
        }
        basenames
            .iter()
            .zip(indexes)
            .map(|(base, i)| Some(format!("{}{base}", dirnames.get(usize::try_from(i).ok()?)?)))
            .collect()
    }

    fn to_package(&self, release: Option<&OsRelease>, db: &str) -> Option<Package> {
        let name = self.string(TAG_NAME).filter(|n| !n.is_empty())?;
        let version = self.string(TAG_VERSION).filter(|v| !v.is_empty())?;
        let release_tag = self.string(TAG_RELEASE).unwrap_or_default();
        let epoch = self.int32s(TAG_EPOCH).and_then(|e| e.first().copied());
        let arch = self.string(TAG_ARCH).filter(|a| !a.is_empty());
        let vendor = self.string(TAG_VENDOR).map(str::trim).filter(|v| !v.is_empty());
        let license = self.string(TAG_LICENSE).map(str::trim).filter(|l| !l.is_empty());
        let source_rpm = self.string(TAG_SOURCERPM).filter(|s| !s.is_empty());
        let files = self.files()?;
        let purl_version = if release_tag.is_empty() { version.to_owned() } else { format!("{version}-{release_tag}") };
        let shown = match epoch {
            Some(e) => format!("{e}:{purl_version}"),
            None => purl_version.clone(),
        };
        let mut qualifiers = Vec::new();
        if let Some(a) = arch {
            qualifiers.push(("arch", a.to_owned()));
        }
        if let Some(e) = epoch {
            qualifiers.push(("epoch", e.to_string()));
        }
        if let Some(s) = source_rpm {
            qualifiers.push(("upstream", s.to_owned()));
        }
        let namespace = release.map(|r| r.id.as_str()).filter(|id| !id.is_empty());
        let purl =
            super::spdx::purl("rpm", namespace, name, &purl_version, qualifiers, release.and_then(OsRelease::distro));
        Some(Package {
            kind: Kind::Rpm,
            name: name.to_owned(),
            version: shown,
            arch: arch.map(str::to_owned),
            supplier: vendor.map(|v| Party::Organization(v.to_owned())),
            licenses: license.map(|l| vec![l.to_owned()]).unwrap_or_default(),
            purl,
            database: db.to_owned(),
            files,
        })
    }
}

/// Builds header blobs for tests.
#[cfg(test)]
pub(super) mod testblob {
    /// A header blob with these (tag, type, value) entries; values are strings (type 6/8,
    /// joined by `\n` for arrays) or decimal u32s (type 4, comma-separated).
    pub(in crate::sbom) fn header(entries: &[(i32, u32, &str)]) -> Vec<u8> {
        let (mut index, mut data) = (Vec::new(), Vec::new());
        for &(tag, ty, value) in entries {
            let (offset, count) = if ty == super::TYPE_INT32 {
                while data.len() % 4 != 0 {
                    data.push(0);
                }
                let off = data.len();
                let nums: Vec<u32> = value.split(',').map(|n| n.parse().unwrap()).collect();
                nums.iter().for_each(|n| data.extend(n.to_be_bytes()));
                (off, nums.len())
            } else {
                let off = data.len();
                let parts: Vec<&str> = value.split('\n').collect();
                for p in &parts {
                    data.extend(p.as_bytes());
                    data.push(0);
                }
                (off, parts.len())
            };
            for n in [tag as u32, ty, offset as u32, count as u32] {
                index.extend(n.to_be_bytes());
            }
        }
        let mut blob = Vec::new();
        blob.extend((entries.len() as u32).to_be_bytes());
        blob.extend((data.len() as u32).to_be_bytes());
        blob.extend(index);
        blob.extend(data);
        blob
    }
}

#[cfg(test)]
mod tests {
    use super::testblob::header;
    use super::*;

    fn bash() -> Vec<u8> {
        header(&[
            (TAG_NAME, TYPE_STRING, "bash"),
            (TAG_VERSION, TYPE_STRING, "5.1.8"),
            (TAG_RELEASE, TYPE_STRING, "6.el9"),
            (TAG_EPOCH, TYPE_INT32, "1"),
            (TAG_ARCH, TYPE_STRING, "x86_64"),
            (TAG_LICENSE, TYPE_STRING, "GPLv3+"),
            (TAG_VENDOR, TYPE_STRING, "Red Hat, Inc."),
            (TAG_SOURCERPM, TYPE_STRING, "bash-5.1.8-6.el9.src.rpm"),
            (TAG_BASENAMES, TYPE_STRING_ARRAY, "bash\nsh\nbash"),
            (TAG_DIRNAMES, TYPE_STRING_ARRAY, "/usr/bin/\n/usr/share/doc/"),
            (TAG_DIRINDEXES, TYPE_INT32, "0,0,1"),
        ])
    }

    #[test]
    fn header_fields_and_files() {
        let blob = bash();
        let release = OsRelease { id: "rhel".into(), version_id: "9.3".into() };
        let p = Header::parse(&blob).unwrap().to_package(Some(&release), "/db").unwrap();
        assert_eq!((p.name.as_str(), p.version.as_str()), ("bash", "1:5.1.8-6.el9"));
        assert_eq!(
            p.purl,
            "pkg:rpm/rhel/bash@5.1.8-6.el9?arch=x86_64&epoch=1&upstream=bash-5.1.8-6.el9.src.rpm&distro=rhel-9.3"
        );
        assert_eq!(p.files, ["/usr/bin/bash", "/usr/bin/sh", "/usr/share/doc/bash"]);
        assert_eq!(p.supplier, Some(Party::Organization("Red Hat, Inc.".into())));
        assert_eq!(p.licenses, ["GPLv3+"]);
    }

    #[test]
    fn truncated_and_corrupt_headers_are_none() {
        let blob = bash();
        for len in 0..blob.len() {
            // Any prefix: no panic; a short one has no complete index or data.
            let _ = Header::parse(&blob[..len]).and_then(|h| h.to_package(None, "/db"));
        }
        assert!(Header::parse(&blob[..blob.len() - 1]).is_none());
        // Offsets and counts pointing anywhere.
        for i in 8..blob.len().min(8 + 16 * 11) {
            for v in [0u8, 0x7f, 0xff] {
                let mut b = blob.clone();
                b[i] = v;
                let _ = Header::parse(&b).and_then(|h| h.to_package(None, "/db"));
            }
        }
        // A directory index out of range drops the package rather than inventing a path.
        let bad = header(&[
            (TAG_NAME, TYPE_STRING, "x"),
            (TAG_VERSION, TYPE_STRING, "1"),
            (TAG_BASENAMES, TYPE_STRING_ARRAY, "a"),
            (TAG_DIRNAMES, TYPE_STRING_ARRAY, "/"),
            (TAG_DIRINDEXES, TYPE_INT32, "7"),
        ]);
        assert!(Header::parse(&bad).unwrap().to_package(None, "/db").is_none());
    }
}
