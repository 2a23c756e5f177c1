//! Small filesystem helpers: atomic JSON files, directory fsync, disk usage.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::store::unique_tmp_path;

/// Reads and decodes a JSON file; `None` if it does not exist.
pub(crate) fn read_json<T: DeserializeOwned>(p: &Path) -> Result<Option<T>> {
    Ok(open_json(p)?.map(|(v, _)| v))
}

/// Like [`read_json`], also returning the open file (to touch its times).
pub(crate) fn open_json<T: DeserializeOwned>(p: &Path) -> Result<Option<(T, File)>> {
    let mut f = match File::open(p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Io { path: p.to_owned(), source: e }),
    };
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).at(p)?;
    let v = serde_json::from_slice(&bytes).map_err(|source| Error::CorruptRecord { path: p.to_owned(), source })?;
    Ok(Some((v, f)))
}

/// Writes JSON to a temp file in `tmp` and renames it over `dest`. When `durable`, the file is
/// flushed to disk before the rename and `dest`'s directory after it.
pub(crate) fn write_json_atomic<T: Serialize>(dest: &Path, value: &T, tmp: &Path, durable: bool) -> Result<()> {
    let bytes =
        serde_json::to_vec_pretty(value).map_err(|source| Error::CorruptRecord { path: dest.to_owned(), source })?;
    let t = unique_tmp_path(tmp, "json");
    let written = write_file(&t, &bytes, durable).and_then(|()| std::fs::rename(&t, dest).at(dest));
    if written.is_err() {
        let _ = std::fs::remove_file(&t);
    }
    written?;
    if durable {
        if let Some(dir) = dest.parent() {
            fsync_dir(dir)?;
        }
    }
    Ok(())
}

/// Creates `path` with `bytes`, flushed to disk when `durable`.
pub(crate) fn write_file(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let mut f = File::create_new(path).at(path)?;
    f.write_all(bytes).at(path)?;
    if durable {
        f.sync_data().at(path)?;
    }
    Ok(())
}

/// Makes the entries of `dir` (new names, renames, removals) durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// Space allocated on disk to `path` and everything under it (like `du -s`), counting each
/// hard-linked inode once. Entries that vanish during the walk, and directories we may not
/// read (a `chmod 000` directory when not root), are skipped.
pub(crate) fn disk_usage(path: &Path) -> Result<u64> {
    let mut seen = HashSet::new();
    let mut total = 0u64;
    let mut stack: Vec<PathBuf> = vec![path.to_owned()];
    while let Some(p) = stack.pop() {
        let md = match p.symlink_metadata() {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::Io { path: p, source: e }),
        };
        if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
            continue;
        }
        total += md.blocks() * 512;
        if md.is_dir() {
            let rd = match std::fs::read_dir(&p) {
                Ok(rd) => rd,
                Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied) => {
                    continue
                }
                Err(e) => return Err(Error::Io { path: p, source: e }),
            };
            for entry in rd {
                stack.push(entry.at(&p)?.path());
            }
        }
    }
    Ok(total)
}

/// Space allocated to one file (0 if it is gone).
pub(crate) fn file_usage(path: &Path) -> Result<u64> {
    match path.symlink_metadata() {
        Ok(md) => Ok(md.blocks() * 512),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Error::Io { path: path.to_owned(), source: e }),
    }
}

/// The entries of `dir` as (file name, path), sorted by name.
pub(crate) fn sorted_entries(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        out.push((entry.file_name().to_string_lossy().into_owned(), entry.path()));
    }
    out.sort();
    Ok(out)
}
