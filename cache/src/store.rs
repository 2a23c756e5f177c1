//! The store handle.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};

use crate::blobs::{sha256_hex, BlobWriter, Digest};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{fsync_dir, open_json, read_json, write_file, write_json_atomic};
use crate::images::ImageRecord;
use crate::lock::{LockMode, StoreOptions};
use crate::records::Record;
use crate::snapshots::{remove_tree, PreparedSnapshot, SnapshotMeta};
use crate::tmp::TmpArea;

/// Name of the versioned layout directory. Bump it when the layout changes incompatibly.
const LAYOUT: &str = "v1";

/// An open store. It holds the store lock (`v1/lock`, shared or exclusive, see [`LockMode`])
/// and a private temp area under `tmp/` for its whole life; both are released when it is
/// dropped or the process dies.
#[derive(Debug)]
pub struct Store {
    pub(crate) root: PathBuf,
    pub(crate) options: StoreOptions,
    pub(crate) area: TmpArea,
    // Held for the life of the store; the flock goes with the file.
    _store_lock: File,
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A fresh path inside `dir` that no other writer uses.
pub(crate) fn unique_tmp_path(dir: &Path, what: &str) -> PathBuf {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{what}-{n}"))
}

/// One cache record as listed by [`Store::list_records`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordInfo {
    /// The cache key (hex), as given to [`Store::put_record`].
    pub key: String,
    /// When the record was last written or returned by [`Store::get_record`].
    pub last_used: SystemTime,
}

impl Store {
    /// Opens (creating if needed) the store at `root` for a build: shared lock (waiting for a
    /// running garbage collection), durable writes. Removes temp areas left by dead processes.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        Store::open_with(root, &StoreOptions::default())
    }

    /// Opens (creating if needed) the store at `root` with explicit options. Removes temp
    /// areas left by dead processes.
    pub fn open_with(root: impl Into<PathBuf>, options: &StoreOptions) -> Result<Store> {
        let root = root.into().join(LAYOUT);
        for sub in ["blobs/sha256", "snapshots", "records", "images", "tmp"] {
            let p = root.join(sub);
            std::fs::create_dir_all(&p).at(&p)?;
        }
        let lock_path = root.join("lock");
        let store_lock =
            File::options().read(true).write(true).create(true).truncate(false).open(&lock_path).at(&lock_path)?;
        crate::lock::acquire(&store_lock, &lock_path, options.lock, options.wait)?;
        let (area, reaped) = crate::tmp::create_area(&root.join("tmp"))?;
        crate::tmp::remove_moved(&reaped);
        Ok(Store { root, options: *options, area, _store_lock: store_lock })
    }

    /// The versioned root directory (`<root>/v1`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// This process's private temp directory (on the store's filesystem).
    pub fn tmp_dir(&self) -> &Path {
        &self.area.dir
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    pub(crate) fn require_exclusive(&self, operation: &'static str) -> Result<()> {
        if self.options.lock == LockMode::Exclusive {
            Ok(())
        } else {
            Err(Error::NotExclusive { operation })
        }
    }

    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    pub(crate) fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    pub(crate) fn records_dir(&self) -> PathBuf {
        self.root.join("records")
    }

    pub(crate) fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    /// Removes a published directory crash-safely: it leaves its name by one rename into our
    /// temp area (so no half-deleted tree is ever visible), then is deleted. If we die while
    /// deleting, the next open reaps the rest with our area.
    pub(crate) fn remove_dir_published(&self, path: &Path) -> Result<()> {
        let dest = unique_tmp_path(self.tmp_dir(), "removed");
        match std::fs::rename(path, &dest) {
            Ok(()) => {
                remove_tree(&dest);
                let _ = std::fs::remove_file(&dest);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io { path: path.to_owned(), source: e }),
        }
    }

    /// Removes a published file (unlink is atomic); a missing file is not an error.
    pub(crate) fn remove_file_published(&self, path: &Path) -> Result<()> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io { path: path.to_owned(), source: e }),
        }
    }

    // ---- blobs ----

    /// Path of a blob (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> Result<PathBuf> {
        Ok(self.blobs_dir().join(sha256_hex(digest)?))
    }

    /// True if the blob is present.
    pub fn has_blob(&self, digest: &Digest) -> Result<bool> {
        Ok(self.blob_path(digest)?.is_file())
    }

    /// Starts writing a blob.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        BlobWriter::create(self.tmp_dir(), &self.blobs_dir(), self.options.durable)
    }

    /// Stores a small blob from memory (configs, manifests) and returns its digest and size.
    pub fn put_blob(&self, bytes: &[u8], expected: Option<&Digest>) -> Result<(Digest, u64)> {
        use std::io::Write;
        let mut w = self.blob_writer()?;
        w.write_all(bytes).at(self.tmp_dir())?;
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

    /// Disk space used by a blob (0 if absent).
    pub fn blob_usage(&self, digest: &Digest) -> Result<u64> {
        crate::fsutil::file_usage(&self.blob_path(digest)?)
    }

    // ---- snapshots ----

    /// Prepares a new, empty snapshot in this process's temp area.
    pub fn prepare_snapshot(&self) -> Result<PreparedSnapshot> {
        PreparedSnapshot::create(self.tmp_dir())
    }

    /// Directory holding the files of snapshot `id`.
    pub fn snapshot_diff(&self, id: &str) -> PathBuf {
        self.snapshots_dir().join(id).join("diff")
    }

    /// True when snapshot `id` exists.
    pub fn has_snapshot(&self, id: &str) -> bool {
        self.snapshot_diff(id).is_dir()
    }

    /// Publishes a prepared snapshot as `id`. If another build published the same id first, ours
    /// is discarded and theirs kept (ids are content or cache-key addressed, so both are equal).
    pub fn commit_snapshot(&self, mut snap: PreparedSnapshot, id: &str, meta: &SnapshotMeta) -> Result<()> {
        let durable = self.options.durable;
        remove_tree(&snap.work());
        crate::snapshots::write_size(&snap.root);
        // The prepared directory is private: meta.json needs no rename of its own.
        let bytes = serde_json::to_vec_pretty(meta)
            .map_err(|source| Error::CorruptRecord { path: snap.root.join("meta.json"), source })?;
        write_file(&snap.root.join("meta.json"), &bytes, durable)?;
        let dest = self.snapshots_dir().join(id);
        match std::fs::rename(&snap.root, &dest) {
            Ok(()) => {
                snap.committed = true;
                if durable {
                    fsync_dir(&self.snapshots_dir())?;
                }
                Ok(())
            }
            // ENOTEMPTY/EEXIST: someone else won the race; theirs is as good as ours.
            Err(_) if dest.is_dir() => Ok(()),
            Err(e) => Err(Error::Io { path: dest, source: e }),
        }
    }

    /// Metadata of snapshot `id`.
    pub fn snapshot_meta(&self, id: &str) -> Result<SnapshotMeta> {
        let p = self.snapshots_dir().join(id).join("meta.json");
        Ok(read_json(&p)?.unwrap_or_default())
    }

    /// Replaces the metadata of snapshot `id` (e.g. once its layer blob is known).
    pub fn set_snapshot_meta(&self, id: &str, meta: &SnapshotMeta) -> Result<()> {
        let p = self.snapshots_dir().join(id).join("meta.json");
        write_json_atomic(&p, meta, self.tmp_dir(), self.options.durable)
    }

    /// Disk space used by the files of snapshot `id` (cached at commit).
    pub fn snapshot_usage(&self, id: &str) -> Result<u64> {
        crate::snapshots::size_of(&self.snapshots_dir().join(id))
    }

    // ---- cache records ----

    pub(crate) fn record_path(&self, key: &str) -> PathBuf {
        self.records_dir().join(format!("{key}.json"))
    }

    /// The record for a cache key (hex), if any and if every snapshot it names still exists.
    /// A hit marks the record used now (its file's mtime), for least-recently-used collection.
    pub fn get_record(&self, key: &str) -> Result<Option<Record>> {
        let Some((rec, file)) = open_json::<Record>(&self.record_path(key))? else { return Ok(None) };
        if !rec.chain.iter().all(|l| self.has_snapshot(&l.id)) {
            return Ok(None);
        }
        // Best effort: a store we may not write to still serves hits.
        let _ = file.set_modified(SystemTime::now());
        Ok(Some(rec))
    }

    /// Stores the record for a cache key (hex).
    pub fn put_record(&self, key: &str, rec: &Record) -> Result<()> {
        write_json_atomic(&self.record_path(key), rec, self.tmp_dir(), self.options.durable)
    }

    /// Every cache record with its last-used time, oldest first.
    pub fn list_records(&self) -> Result<Vec<RecordInfo>> {
        let dir = self.records_dir();
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).at(&dir)? {
            let entry = entry.at(&dir)?;
            let name = entry.file_name();
            let Some(key) = name.to_str().and_then(|n| n.strip_suffix(".json")) else { continue };
            let Some(last_used) = modified(&entry.path())? else { continue };
            out.push(RecordInfo { key: key.to_owned(), last_used });
        }
        out.sort_by(|a, b| (a.last_used, &a.key).cmp(&(b.last_used, &b.key)));
        Ok(out)
    }

    // ---- images ----

    fn image_path(&self, name: &str) -> PathBuf {
        self.images_dir().join(format!("{}.json", hex::encode(Sha256::digest(name.as_bytes()))))
    }

    /// Names (or renames) an image.
    pub fn put_image(&self, rec: &ImageRecord) -> Result<()> {
        write_json_atomic(&self.image_path(&rec.name), rec, self.tmp_dir(), self.options.durable)
    }

    /// Looks up an image by full name. A hit marks the name used now.
    pub fn get_image(&self, name: &str) -> Result<Option<ImageRecord>> {
        let Some((rec, file)) = open_json::<ImageRecord>(&self.image_path(name))? else { return Ok(None) };
        let _ = file.set_modified(SystemTime::now());
        Ok(Some(rec))
    }

    /// When an image name was last written or looked up with [`Store::get_image`].
    pub fn image_last_used(&self, name: &str) -> Result<Option<SystemTime>> {
        modified(&self.image_path(name))
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
        let dir = self.images_dir();
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

/// A file's mtime; `None` if it does not exist.
pub(crate) fn modified(p: &Path) -> Result<Option<SystemTime>> {
    match p.metadata().and_then(|m| m.modified()) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io { path: p.to_owned(), source: e }),
    }
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

    #[test]
    fn a_dropped_store_removes_its_tmp_area_and_orphans_are_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("v1/tmp");
        let s = Store::open(dir.path()).unwrap();
        let unfinished = s.blob_writer().unwrap();
        let area = s.tmp_dir().to_owned();
        std::mem::forget(unfinished); // its temp file stays in the area
        drop(s);
        assert!(!area.exists());
        // An area without its lock file (its owner died while removing it) is an orphan.
        std::fs::create_dir_all(tmp.join("77-orphan/snap-0/diff")).unwrap();
        let s = Store::open(dir.path()).unwrap();
        let names: Vec<_> = std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(names.len(), 2, "only our area and its lock file: {names:?}");
        assert!(names.contains(&s.tmp_dir().to_owned()));
    }

    fn opts(lock: LockMode, wait: bool) -> StoreOptions {
        StoreOptions { lock, wait, ..StoreOptions::default() }
    }

    #[test]
    fn builds_share_the_lock_and_gc_excludes_them() {
        let dir = tempfile::tempdir().unwrap();
        let a = Store::open(dir.path()).unwrap();
        let b = Store::open_with(dir.path(), &opts(LockMode::Shared, false)).unwrap();
        let err = Store::open_with(dir.path(), &opts(LockMode::Exclusive, false)).unwrap_err();
        assert!(matches!(err, Error::Locked { wanted: LockMode::Exclusive, .. }), "{err}");
        assert!(err.to_string().contains("in use by running builds"), "{err}");
        drop((a, b));

        let gc = Store::open_with(dir.path(), &opts(LockMode::Exclusive, false)).unwrap();
        let err = Store::open_with(dir.path(), &opts(LockMode::Shared, false)).unwrap_err();
        assert!(err.to_string().contains("being garbage-collected"), "{err}");
        // A waiting build proceeds once the collection is done.
        let root = dir.path().to_owned();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let s = Store::open(&root).map(drop);
            tx.send(()).unwrap();
            s
        });
        assert!(rx.recv_timeout(std::time::Duration::from_millis(200)).is_err(), "must wait for the GC");
        drop(gc);
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        waiter.join().unwrap().unwrap();
    }

    #[test]
    fn record_hits_update_last_used_misses_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let a = s.prepare_snapshot().unwrap();
        s.commit_snapshot(a, "s", &SnapshotMeta::default()).unwrap();
        s.put_record("hit", &Record { chain: vec![RecordLayer { id: "s".into(), producer: None }] }).unwrap();
        s.put_record("miss", &Record { chain: vec![RecordLayer { id: "gone".into(), producer: None }] }).unwrap();
        let day = std::time::Duration::from_secs(86_400);
        for k in ["hit", "miss"] {
            crate::testutil::age_record(&s, k, day);
        }
        let before = SystemTime::now() - day / 2;
        assert!(s.list_records().unwrap().iter().all(|r| r.last_used < before));
        assert!(s.get_record("hit").unwrap().is_some());
        assert!(s.get_record("miss").unwrap().is_none());
        let listed = s.list_records().unwrap();
        assert_eq!(listed.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(), ["miss", "hit"], "oldest first");
        assert!(listed[1].last_used > before && listed[0].last_used < before);

        crate::testutil::image(&s, "img", &[]);
        crate::testutil::age(&s.image_path("img"), day);
        assert!(s.image_last_used("img").unwrap().unwrap() < before);
        assert!(s.get_image("img").unwrap().is_some());
        assert!(s.image_last_used("img").unwrap().unwrap() > before);
        assert_eq!(s.image_last_used("nope").unwrap(), None);
    }

    /// Several "processes" (separate opens) and threads sharing one open store all publish the
    /// same snapshot, record and blob at once: every call succeeds, one copy stays, no garbage.
    #[test]
    fn concurrent_commits_of_the_same_ids_are_benign() {
        let dir = tempfile::tempdir().unwrap();
        let shared = std::sync::Arc::new(Store::open(dir.path()).unwrap());
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (root, shared, barrier) = (dir.path().to_owned(), shared.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let own;
                    let s: &Store = if i % 2 == 0 {
                        own = Store::open(&root).unwrap();
                        &own
                    } else {
                        &shared
                    };
                    for round in 0..20 {
                        let id = format!("snap-{round}");
                        let p = s.prepare_snapshot().unwrap();
                        std::fs::write(p.diff().join("f"), format!("content {round}")).unwrap();
                        std::fs::create_dir(p.diff().join("d")).unwrap();
                        if round == 0 {
                            barrier.wait();
                        }
                        let (blob, _) = s.put_blob(format!("blob {round}").as_bytes(), None).unwrap();
                        let meta = SnapshotMeta { blob: Some(blob), ..SnapshotMeta::default() };
                        s.commit_snapshot(p, &id, &meta).unwrap();
                        s.set_snapshot_meta(&id, &meta).unwrap();
                        let rec = Record { chain: vec![RecordLayer { id: id.clone(), producer: None }] };
                        s.put_record(&format!("key-{round}"), &rec).unwrap();
                        assert_eq!(s.get_record(&format!("key-{round}")).unwrap(), Some(rec));
                        assert_eq!(
                            std::fs::read_to_string(s.snapshot_diff(&id).join("f")).unwrap(),
                            format!("content {round}")
                        );
                    }
                    if i % 2 == 0 {
                        assert_eq!(std::fs::read_dir(s.tmp_dir()).unwrap().count(), 0, "losers leave nothing behind");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(std::fs::read_dir(shared.tmp_dir()).unwrap().count(), 0, "losers leave nothing behind");
        assert_eq!(std::fs::read_dir(shared.root().join("snapshots")).unwrap().count(), 20);
        let report = shared.verify(&crate::VerifyOptions { rehash_blobs: true, repair: false }).unwrap();
        assert_eq!(report.problems, vec![]);
    }

    #[test]
    fn durable_and_fast_stores_publish_the_same_things() {
        for durable in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let s = Store::open_with(dir.path(), &StoreOptions { durable, ..StoreOptions::default() }).unwrap();
            let (d, _) = s.put_blob(b"x", None).unwrap();
            let p = s.prepare_snapshot().unwrap();
            s.commit_snapshot(p, "a", &SnapshotMeta { blob: Some(d.clone()), ..SnapshotMeta::default() }).unwrap();
            s.put_record("k", &Record { chain: vec![RecordLayer { id: "a".into(), producer: None }] }).unwrap();
            assert_eq!(s.snapshot_meta("a").unwrap().blob, Some(d));
            assert!(s.get_record("k").unwrap().is_some());
            assert!(s.snapshot_usage("a").unwrap() > 0);
        }
    }
}
