//! SBOM scanning: an SPDX 2.3 JSON document of an image's final filesystem, as BuildKit's
//! `--sbom=true` (syft) attaches.
//!
//! [`scan`] reads the package databases of a [`MergedView`] (dpkg's `status` and distroless
//! `status.d`, apk's `installed`, rpm's sqlite `rpmdb.sqlite` or BerkeleyDB `Packages`), walks
//! its regular files
//! (hashing them with SHA-1 and SHA-256, in parallel) and writes a document in the shape of
//! syft's: a root package for the image that contains every package, each package containing
//! the files its database says it installed.
//!
//! Everything is read through the view, so whiteouts and opaque directories are honoured and a
//! symlink in the image resolves inside the image (`/var/lib/dpkg/status -> /etc/shadow` reads
//! the image's `/etc/shadow`, never the host's); a final file is opened with `O_NOFOLLOW`.
//!
//! Malformed databases: a text database (dpkg, apk) cannot fail to parse as a whole; a record
//! in it without a name or version is skipped, and so is an rpm header blob (or BerkeleyDB
//! record) that does not parse. Each skip is counted in the document's `creationInfo.comment`,
//! so the document says it is incomplete instead of the build failing on one damaged record of
//! an image it did not make. An rpm database that cannot be read at all is an error
//! ([`SbomError::RpmDatabase`], [`SbomError::RpmBerkeleyDb`]): a document listing no rpm
//! packages for an rpm-based image would be a wrong answer, not a partial one.
//!
//! The output is deterministic: packages and files are sorted, SPDX ids are derived from
//! content, and the document namespace from a hash of the whole document and its name.

mod apk;
mod bdb;
mod dpkg;
mod files;
mod rpm;
mod spdx;

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::merged::MergedView;

pub use bdb::BerkeleyDbError;

/// What the document is called and when it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanOptions {
    /// The document's name, e.g. the image reference or the stage name.
    pub name: String,
    /// Its creation time, RFC 3339 in UTC (`2024-01-02T03:04:05Z`); the caller decides it
    /// (from `SOURCE_DATE_EPOCH` when set) so that the document is reproducible.
    pub created: String,
}

/// Why an image could not be scanned.
#[derive(Debug, thiserror::Error)]
pub enum SbomError {
    /// Reading a file or directory of the image failed.
    #[error("reading /{path} in the image: {source}")]
    Io {
        /// The path in the image (relative to its root).
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// [`ScanOptions::created`] is not the `YYYY-MM-DDThh:mm:ssZ` SPDX requires.
    #[error("SBOM creation time {0:?} is not YYYY-MM-DDThh:mm:ssZ")]
    Created(String),
    /// A package database is larger than any real one.
    #[error("/{path} in the image is larger than {limit} bytes: not a package database")]
    TooLarge {
        /// The path in the image.
        path: String,
        /// The limit it exceeds.
        limit: u64,
    },
    /// An rpm sqlite database could not be read.
    #[error("rpm database /{path} in the image cannot be read: {source}")]
    RpmDatabase {
        /// The path in the image.
        path: String,
        /// What sqlite said.
        #[source]
        source: rusqlite::Error,
    },
    /// A BerkeleyDB rpm database (`Packages`, rpm before 4.16) could not be read.
    #[error("rpm database /{path} in the image cannot be read: {source}")]
    RpmBerkeleyDb {
        /// The path in the image.
        path: String,
        /// What is wrong with it.
        #[source]
        source: BerkeleyDbError,
    },
}

/// Largest text package database read (dpkg's status of a huge image is a few MiB).
const TEXT_DB_LIMIT: u64 = 256 << 20;

/// Scans the filesystem `view` into an SPDX 2.3 JSON document named `opts.name`.
pub fn scan(view: &MergedView, opts: &ScanOptions) -> Result<serde_json::Value, SbomError> {
    if !is_spdx_time(&opts.created) {
        return Err(SbomError::Created(opts.created.clone()));
    }
    let release = OsRelease::read(view)?;
    let mut warnings = Vec::new();
    let mut packages = dpkg::scan(view, release.as_ref(), &mut warnings)?;
    packages.extend(apk::scan(view, release.as_ref(), &mut warnings)?);
    packages.extend(rpm::scan(view, release.as_ref(), &mut warnings)?);
    let files = files::hash_all(view)?;
    Ok(spdx::document(view, opts, packages, &files, &warnings))
}

/// Is `t` an SPDX creation time, `YYYY-MM-DDThh:mm:ssZ`?
fn is_spdx_time(t: &str) -> bool {
    const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:ddZ";
    t.len() == SHAPE.len() && t.bytes().zip(SHAPE).all(|(c, &s)| if s == b'd' { c.is_ascii_digit() } else { c == s })
}

/// Which package manager a package comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Apk,
    Deb,
    Rpm,
}

impl Kind {
    /// syft's package type, used in SPDX ids and purls.
    fn as_str(self) -> &'static str {
        match self {
            Kind::Apk => "apk",
            Kind::Deb => "deb",
            Kind::Rpm => "rpm",
        }
    }
}

/// Who made or ships a package, as SPDX writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Party {
    Person(String),
    Organization(String),
}

impl Party {
    /// `Name <email>` (dpkg's and apk's maintainer fields) as syft writes it: `Name (email)`.
    fn person(raw: &str) -> Option<Party> {
        let raw = raw.trim();
        let (name, email) = match raw.split_once('<') {
            Some((name, rest)) => (name.trim(), rest.split('>').next().unwrap_or_default().trim()),
            None => (raw, ""),
        };
        match (name.is_empty(), email.is_empty()) {
            (true, true) => None,
            (false, true) => Some(Party::Person(name.to_owned())),
            (true, false) => Some(Party::Person(email.to_owned())),
            (false, false) => Some(Party::Person(format!("{name} ({email})"))),
        }
    }

    fn spdx(&self) -> String {
        match self {
            Party::Person(p) => format!("Person: {p}"),
            Party::Organization(o) => format!("Organization: {o}"),
        }
    }
}

/// A package found in a database.
#[derive(Debug, Clone)]
struct Package {
    kind: Kind,
    name: String,
    /// The version as the document shows it (rpm's with its epoch).
    version: String,
    arch: Option<String>,
    /// The maintainer (dpkg, apk) or vendor (rpm).
    supplier: Option<Party>,
    /// License strings as the database or copyright file gives them, all applying.
    licenses: Vec<String>,
    /// The package URL.
    purl: String,
    /// The database it was found in (absolute path in the image).
    database: String,
    /// Absolute paths of what it installed, as its database lists them.
    files: Vec<String>,
}

/// What `/etc/os-release` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct OsRelease {
    id: String,
    version_id: String,
}

impl OsRelease {
    fn read(view: &MergedView) -> Result<Option<OsRelease>, SbomError> {
        for path in ["etc/os-release", "usr/lib/os-release"] {
            if let Some(text) = read_text(view, path, 1 << 20)? {
                return Ok(Some(OsRelease::parse(&text)));
            }
        }
        Ok(None)
    }

    fn parse(text: &str) -> OsRelease {
        let mut r = OsRelease::default();
        for line in text.lines() {
            let Some((key, value)) = line.trim().split_once('=') else { continue };
            let value = unquote(value.trim());
            match key {
                "ID" => r.id = value,
                "VERSION_ID" => r.version_id = value,
                _ => {}
            }
        }
        r
    }

    /// The purl `distro` qualifier: `debian-12`, `alpine-3.18.4`.
    fn distro(&self) -> Option<String> {
        match (self.id.is_empty(), self.version_id.is_empty()) {
            (true, _) => None,
            (false, true) => Some(self.id.clone()),
            (false, false) => Some(format!("{}-{}", self.id, self.version_id)),
        }
    }

    /// The purl namespace for packages of a distribution of `family` (`debian`, `alpine`):
    /// the image's distribution id (`debian`, `ubuntu`, `wolfi`) when it has one, else `family`.
    fn namespace(release: Option<&OsRelease>, family: &str) -> String {
        match release {
            Some(r) if !r.id.is_empty() => r.id.clone(),
            _ => family.to_owned(),
        }
    }
}

/// A shell-style value of os-release: quotes removed, backslash escapes resolved.
fn unquote(v: &str) -> String {
    let inner = match v.as_bytes() {
        [q @ (b'"' | b'\''), .., last] if last == q && v.len() >= 2 => &v[1..v.len() - 1],
        _ => v,
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.extend(chars.next());
        } else {
            out.push(c);
        }
    }
    out
}

/// Opens the regular file at `path` (absolute or relative to the image's root), following
/// symlinks inside the image only. `None` when it does not exist or is not a regular file.
fn open_regular(view: &MergedView, path: &str) -> Result<Option<(File, u64)>, SbomError> {
    let io_err = |source| SbomError::Io { path: path.trim_start_matches('/').to_owned(), source };
    let rel = match view.resolve(Path::new(path), true) {
        Ok(rel) => rel,
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    let found = match view.lstat(&rel) {
        Ok(Some(f)) if f.meta.file_type().is_file() => f,
        Ok(_) => return Ok(None),
        Err(e) if is_absent(&e) => return Ok(None),
        Err(e) => return Err(io_err(e)),
    };
    open_nofollow(&found.host_path).map(|f| Some((f, found.meta.len()))).map_err(io_err)
}

/// Opens a layer's regular file for reading without following a symlink put there since.
fn open_nofollow(host_path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY).open(host_path)
}

/// Errors that mean "no such file here" when resolving or looking up a path in the image.
fn is_absent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP))
}

/// The text of the regular file at `path` in the image (invalid UTF-8 replaced), at most `limit`
/// bytes; `None` when there is no such file.
fn read_text(view: &MergedView, path: &str, limit: u64) -> Result<Option<String>, SbomError> {
    let Some((file, _)) = open_regular(view, path)? else { return Ok(None) };
    let mut buf = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|source| SbomError::Io { path: path.trim_start_matches('/').to_owned(), source })?;
    if buf.len() as u64 > limit {
        return Err(SbomError::TooLarge { path: path.trim_start_matches('/').to_owned(), limit });
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// The names in the directory `path` of the image (following symlinks inside it), sorted;
/// empty when it is not a directory.
fn list_dir(view: &MergedView, path: &str) -> Result<Vec<String>, SbomError> {
    let io_err = |source| SbomError::Io { path: path.trim_start_matches('/').to_owned(), source };
    let rel: PathBuf = match view.resolve(Path::new(path), true) {
        Ok(rel) => rel,
        Err(e) if is_absent(&e) => return Ok(Vec::new()),
        Err(e) => return Err(io_err(e)),
    };
    match view.lstat(&rel) {
        Ok(Some(f)) if f.meta.is_dir() => {}
        Ok(_) => return Ok(Vec::new()),
        Err(e) if is_absent(&e) => return Ok(Vec::new()),
        Err(e) => return Err(io_err(e)),
    }
    let entries = view.read_dir(&rel).map_err(io_err)?;
    Ok(entries.into_iter().map(|(name, _)| name.to_string_lossy().into_owned()).collect())
}

#[cfg(test)]
mod tests;
