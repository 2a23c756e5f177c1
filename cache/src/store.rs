//! The store handle.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::blobs::{sha256_hex, BlobWriter, Digest};
use crate::error::{Error, IoContext, Result};
use crate::images::ImageRecord;
use crate::records::Record;
use crate::snapshots::{remove_tree, PreparedSnapshot, SnapshotMeta};

/// Name of the versioned layout directory. Bump it when the layout changes incompatibly.
const LAYOUT: &str = "v1";

/// An open store. Each process gets a private temp area under `tmp/`, guarded by a lock file so
/// that other processes can remove it once this one has died (even by SIGKILL).
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    tmp: PathBuf,
    // Held for the life of the store: an exclusive lock on our temp area's lock file.
    _tmp_lock: File,
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A fresh path inside `dir` that no other writer uses.
pub(crate) fn unique_tmp_path(dir: &Path, what: &str) -> PathBuf {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{what}-{n}"))
}

impl Store {
    /// Opens (creating if needed) the store at `root`, and removes temp areas left by dead
    /// processes.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into().join(LAYOUT);
        for sub in ["blobs/sha256", "snapshots", "records", "images", "tmp"] {
            let p = root.join(sub);
            std::fs::create_dir_all(&p).at(&p)?;
        }
        let tmp_root = root.join("tmp");
        reap_dead_tmp_areas(&tmp_root);
        let (tmp, lock) = create_tmp_area(&tmp_root)?;
        Ok(Store { root, tmp, _tmp_lock: lock })
    }

    /// The versioned root directory (`<root>/v1`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// This process's private temp directory (on the store's filesystem).
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    // ---- blobs ----

    /// Path of a blob (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> Result<PathBuf> {
        Ok(self.root.join("blobs/sha256").join(sha256_hex(digest)?))
    }

    /// True if the blob is present.
    pub fn has_blob(&self, digest: &Digest) -> Result<bool> {
        Ok(self.blob_path(digest)?.is_file())
    }

    /// Starts writing a blob.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        BlobWriter::create(&self.tmp, &self.root.join("blobs/sha256"))
    }

    /// Stores a small blob from memory (configs, manifests) and returns its digest and size.
    pub fn put_blob(&self, bytes: &[u8], expected: Option<&Digest>) -> Result<(Digest, u64)> {
        use std::io::Write;
        let mut w = self.blob_writer()?;
        w.write_all(bytes).at(self.tmp.clone())?;
        w.commit(expected)
    }

    /// Opens a blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let p = self.blob_path(digest)?;
        File::open(&p).at(p)
    }

    /// Reads a small blob (configs, manifests) and verifies its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let p = self.blob_path(digest)?;
        let bytes = std::fs::read(&p).at(&p)?;
        let found = crate::blobs::digest_of(Sha256::digest(&bytes).into());
        if &found != digest {
            return Err(Error::DigestMismatch { expected: digest.to_string(), found: found.to_string() });
        }
        Ok(bytes)
    }

    /// Re-hashes a stored blob and reports whether it matches its name.
    pub fn verify_blob(&self, digest: &Digest) -> Result<bool> {
        Ok(&crate::blobs::hash_file(&self.blob_path(digest)?)? == digest)
    }

    // ---- snapshots ----

    /// Prepares a new, empty snapshot in this process's temp area.
    pub fn prepare_snapshot(&self) -> Result<PreparedSnapshot> {
        PreparedSnapshot::create(&self.tmp)
    }

    /// Directory holding the files of snapshot `id`.
    pub fn snapshot_diff(&self, id: &str) -> PathBuf {
        self.root.join("snapshots").join(id).join("diff")
    }

    /// True when snapshot `id` exists.
    pub fn has_snapshot(&self, id: &str) -> bool {
        self.snapshot_diff(id).is_dir()
    }

    /// Publishes a prepared snapshot as `id`. If another build published the same id first, ours
    /// is discarded and theirs kept (ids are content or cache-key addressed, so both are equal).
    pub fn commit_snapshot(&self, mut snap: PreparedSnapshot, id: &str, meta: &SnapshotMeta) -> Result<()> {
        remove_tree(&snap.work());
        write_json_atomic(&snap.root.join("meta.json"), meta, &self.tmp)?;
        let dest = self.root.join("snapshots").join(id);
        match std::fs::rename(&snap.root, &dest) {
            Ok(()) => {
                snap.committed = true;
                Ok(())
            }
            // ENOTEMPTY/EEXIST: someone else won the race; theirs is as good as ours.
            Err(e) if dest.is_dir() => {
                let _ = e;
                Ok(())
            }
            Err(e) => Err(Error::Io { path: dest, source: e }),
        }
    }

    /// Metadata of snapshot `id`.
    pub fn snapshot_meta(&self, id: &str) -> Result<SnapshotMeta> {
        let p = self.root.join("snapshots").join(id).join("meta.json");
        Ok(read_json(&p)?.unwrap_or_default())
    }

    /// Replaces the metadata of snapshot `id` (e.g. once its layer blob is known).
    pub fn set_snapshot_meta(&self, id: &str, meta: &SnapshotMeta) -> Result<()> {
        let p = self.root.join("snapshots").join(id).join("meta.json");
        write_json_atomic(&p, meta, &self.tmp)
    }

    // ---- cache records ----

    /// The record for a cache key (hex), if any and if every snapshot it names still exists.
    pub fn get_record(&self, key: &str) -> Result<Option<Record>> {
        let p = self.root.join("records").join(format!("{key}.json"));
        let rec: Option<Record> = read_json(&p)?;
        Ok(rec.filter(|r| r.chain.iter().all(|l| self.has_snapshot(&l.id))))
    }

    /// Stores the record for a cache key (hex).
    pub fn put_record(&self, key: &str, rec: &Record) -> Result<()> {
        let p = self.root.join("records").join(format!("{key}.json"));
        write_json_atomic(&p, rec, &self.tmp)
    }

    // ---- images ----

    fn image_path(&self, name: &str) -> PathBuf {
        self.root.join("images").join(format!("{}.json", hex::encode(Sha256::digest(name.as_bytes()))))
    }

    /// Names (or renames) an image.
    pub fn put_image(&self, rec: &ImageRecord) -> Result<()> {
        write_json_atomic(&self.image_path(&rec.name), rec, &self.tmp)
    }

    /// Looks up an image by full name.
    pub fn get_image(&self, name: &str) -> Result<Option<ImageRecord>> {
        read_json(&self.image_path(name))
    }

    /// Removes an image name; returns whether it existed.
    pub fn remove_image(&self, name: &str) -> Result<bool> {
        let p = self.image_path(name);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::Io { path: p, source: e }),
        }
    }

    /// Every named image, sorted by name.
    pub fn list_images(&self) -> Result<Vec<ImageRecord>> {
        let dir = self.root.join("images");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).at(&dir)? {
            let entry = entry.at(&dir)?;
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "json") {
                if let Some(rec) = read_json::<ImageRecord>(&p)? {
                    out.push(rec);
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

fn create_tmp_area(tmp_root: &Path) -> Result<(PathBuf, File)> {
    let pid = std::process::id();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!("{pid}-{nanos:x}");
    let lock_path = tmp_root.join(format!("{name}.lock"));
    let lock = File::create(&lock_path).at(&lock_path)?;
    lock.lock().at(&lock_path)?;
    let dir = tmp_root.join(&name);
    std::fs::create_dir(&dir).at(&dir)?;
    Ok((dir, lock))
}

/// Removes temp areas whose owner is gone: their lock file can be locked.
fn reap_dead_tmp_areas(tmp_root: &Path) {
    let Ok(rd) = std::fs::read_dir(tmp_root) else { return };
    for entry in rd.flatten() {
        let p = entry.path();
        if p.extension().is_none_or(|e| e != "lock") {
            continue;
        }
        let Ok(f) = File::options().write(true).open(&p) else { continue };
        if f.try_lock().is_ok() {
            remove_tree(&p.with_extension(""));
            let _ = std::fs::remove_file(&p);
        }
    }
}

fn read_json<T: DeserializeOwned>(p: &Path) -> Result<Option<T>> {
    match std::fs::read(p) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::CorruptRecord { path: p.to_owned(), source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io { path: p.to_owned(), source: e }),
    }
}

/// Writes JSON to a temp file in `tmp` and renames it over `dest`.
fn write_json_atomic<T: Serialize>(dest: &Path, value: &T, tmp: &Path) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| Error::CorruptRecord { path: dest.to_owned(), source })?;
    let t = unique_tmp_path(tmp, "json");
    std::fs::write(&t, &bytes).at(&t)?;
    std::fs::rename(&t, dest).at(dest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::RecordLayer;

    #[test]
    fn blob_roundtrip_and_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let (d, n) = s.put_blob(b"hello", None).unwrap();
        assert_eq!(n, 5);
        assert_eq!(d.to_string(), "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert_eq!(s.read_blob(&d).unwrap(), b"hello");
        assert!(s.verify_blob(&d).unwrap());
        let err = s.put_blob(b"other", Some(&d)).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }));
        // A mismatching write publishes nothing and leaves no temp file behind.
        assert_eq!(std::fs::read_dir(s.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn snapshot_commit_and_race() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = s.prepare_snapshot().unwrap();
        std::fs::write(a.diff().join("f"), b"1").unwrap();
        assert!(!a.is_empty().unwrap());
        s.commit_snapshot(a, "x", &SnapshotMeta::default()).unwrap();
        let b = s.prepare_snapshot().unwrap();
        s.commit_snapshot(b, "x", &SnapshotMeta::default()).unwrap();
        assert_eq!(std::fs::read(s.snapshot_diff("x").join("f")).unwrap(), b"1");
        assert_eq!(std::fs::read_dir(s.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn records_need_their_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.put_record("k", &Record { chain: vec![RecordLayer { id: "missing".into(), producer: None }] }).unwrap();
        assert_eq!(s.get_record("k").unwrap(), None);
        let a = s.prepare_snapshot().unwrap();
        s.commit_snapshot(a, "missing", &SnapshotMeta::default()).unwrap();
        assert!(s.get_record("k").unwrap().is_some());
    }

    #[test]
    fn dead_tmp_areas_are_reaped_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let live = Store::open(dir.path()).unwrap();
        let dead_dir = dir.path().join("v1/tmp/999999-dead");
        std::fs::create_dir(&dead_dir).unwrap();
        std::fs::write(dir.path().join("v1/tmp/999999-dead.lock"), b"").unwrap();
        let _second = Store::open(dir.path()).unwrap();
        assert!(!dead_dir.exists());
        assert!(live.tmp_dir().exists());
    }
}
