//! Checking (and repairing) the store: `rbuild cache verify`.

use std::fmt;
use std::path::PathBuf;

use crate::blobs::{digest_from_hex, hash_file, Digest};
use crate::error::Result;
use crate::fsutil::{read_json, sorted_entries};
use crate::gc::manifest_refs;
use crate::images::ImageRecord;
use crate::lock::LockMode;
use crate::records::Record;
use crate::snapshots::SnapshotMeta;
use crate::store::Store;

/// What [`Store::verify`] checks and may fix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Re-hash every blob (reads all of them); otherwise only their names are checked.
    pub rehash_blobs: bool,
    /// Fix what can be fixed without losing anything a build could not recreate: remove stale
    /// temp areas, unreadable or broken cache records and corrupt blobs; with the store opened
    /// [`LockMode::Exclusive`], also broken snapshots. Image names are never removed.
    pub repair: bool,
}

/// Everything [`Store::verify`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Problems, in the order found: temp areas, blobs, snapshots, records, images.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// True when nothing is wrong (or everything wrong was repaired).
    pub fn is_clean(&self) -> bool {
        self.problems.iter().all(|p| p.repaired)
    }
}

/// One problem in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// What is wrong.
    pub kind: ProblemKind,
    /// The file or directory concerned.
    pub path: PathBuf,
    /// Whether `repair` fixed it.
    pub repaired: bool,
}

/// The kinds of [`Problem`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// A temp area (or stray entry under `tmp/`) of a process that is gone.
    StaleTmpArea,
    /// A file under `blobs/sha256/` whose name is not 64 lowercase hex digits.
    BadBlobName,
    /// A blob whose content does not hash to its name.
    BlobDigestMismatch {
        /// The digest of the content.
        found: Digest,
    },
    /// An entry under `snapshots/` without a `diff/` directory.
    SnapshotMissingDiff,
    /// A snapshot whose `meta.json` is missing or cannot be decoded.
    SnapshotMetaUnreadable {
        /// Why.
        reason: String,
    },
    /// A snapshot whose metadata names a blob the store does not have.
    SnapshotBlobMissing {
        /// The blob.
        blob: Digest,
    },
    /// A cache record that cannot be decoded.
    RecordUnreadable {
        /// Why.
        reason: String,
    },
    /// A cache record naming a snapshot that does not exist.
    RecordMissingSnapshot {
        /// The snapshot id.
        snapshot: String,
    },
    /// An image name file that cannot be decoded.
    ImageUnreadable {
        /// Why.
        reason: String,
    },
    /// An image whose manifest, config or a layer is missing or corrupt.
    ImageBlobMissing {
        /// The image name.
        image: String,
        /// `manifest`, `config` or `layer`.
        role: &'static str,
        /// The blob.
        blob: Digest,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.path.display())?;
        match &self.kind {
            ProblemKind::StaleTmpArea => write!(f, "temp area of a process that is gone")?,
            ProblemKind::BadBlobName => write!(f, "not a sha256 blob name")?,
            ProblemKind::BlobDigestMismatch { found } => write!(f, "content hashes to {found}")?,
            ProblemKind::SnapshotMissingDiff => write!(f, "snapshot has no diff directory")?,
            ProblemKind::SnapshotMetaUnreadable { reason } => write!(f, "snapshot metadata unreadable: {reason}")?,
            ProblemKind::SnapshotBlobMissing { blob } => write!(f, "snapshot's layer blob {blob} is missing")?,
            ProblemKind::RecordUnreadable { reason } => write!(f, "cache record unreadable: {reason}")?,
            ProblemKind::RecordMissingSnapshot { snapshot } => {
                write!(f, "cache record names missing snapshot {snapshot}")?
            }
            ProblemKind::ImageUnreadable { reason } => write!(f, "image name unreadable: {reason}")?,
            ProblemKind::ImageBlobMissing { image, role, blob } => {
                write!(f, "image {image}: {role} {blob} is missing or corrupt")?
            }
        }
        if self.repaired {
            write!(f, " (repaired)")?;
        }
        Ok(())
    }
}

/// Collects problems and applies repairs.
struct Checker<'a> {
    store: &'a Store,
    opts: &'a VerifyOptions,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn report(&mut self, kind: ProblemKind, path: PathBuf, repaired: bool) {
        self.problems.push(Problem { kind, path, repaired });
    }

    fn tmp(&mut self) -> Result<()> {
        let tmp_root = self.store.root.join("tmp");
        let found = crate::tmp::scan(&tmp_root, self.store.tmp_dir(), false)?;
        if self.opts.repair {
            let moved = crate::tmp::scan(&tmp_root, self.store.tmp_dir(), true)?;
            crate::tmp::remove_moved(&moved);
        }
        for path in found {
            // Anything found stale is still stale a moment later: its owner is gone.
            let repaired = self.opts.repair && path.symlink_metadata().is_err();
            self.report(ProblemKind::StaleTmpArea, path, repaired);
        }
        Ok(())
    }

    fn blobs(&mut self) -> Result<()> {
        let dir = self.store.blobs_dir();
        for (name, path) in sorted_entries(&dir)? {
            let kind = match digest_from_hex(&name) {
                None => ProblemKind::BadBlobName,
                Some(d) if self.opts.rehash_blobs && path.is_file() => {
                    let found = hash_file(&path)?;
                    if found == d {
                        continue;
                    }
                    ProblemKind::BlobDigestMismatch { found }
                }
                Some(_) if path.is_file() => continue,
                Some(_) => ProblemKind::BadBlobName,
            };
            // A corrupt blob is worse than a missing one: `has_blob` would vouch for it.
            let repaired = self.opts.repair && self.remove(&path)?;
            self.report(kind, path, repaired);
        }
        Ok(())
    }

    fn snapshots(&mut self) -> Result<()> {
        let dir = self.store.snapshots_dir();
        for (_, path) in sorted_entries(&dir)? {
            let kind = if !path.join("diff").is_dir() {
                ProblemKind::SnapshotMissingDiff
            } else {
                match read_json::<SnapshotMeta>(&path.join("meta.json")) {
                    Ok(Some(meta)) => match meta.blob {
                        Some(blob) if !self.store.has_blob(&blob)? => ProblemKind::SnapshotBlobMissing { blob },
                        _ => continue,
                    },
                    Ok(None) => ProblemKind::SnapshotMetaUnreadable { reason: "meta.json is missing".into() },
                    Err(e) => ProblemKind::SnapshotMetaUnreadable { reason: error_chain(&e) },
                }
            };
            // A running build may have this snapshot mounted: only an exclusive store removes it.
            // Records naming it then show up as broken, and are repaired in turn.
            let repaired = self.opts.repair && self.store.options.lock == LockMode::Exclusive && self.remove(&path)?;
            self.report(kind, path, repaired);
        }
        Ok(())
    }

    fn records(&mut self) -> Result<()> {
        let dir = self.store.records_dir();
        for (_, path) in sorted_entries(&dir)? {
            let kind = match read_json::<Record>(&path) {
                Ok(Some(rec)) => match rec.chain.into_iter().find(|l| !self.store.has_snapshot(&l.id)) {
                    Some(l) => ProblemKind::RecordMissingSnapshot { snapshot: l.id },
                    None => continue,
                },
                Ok(None) => continue,
                Err(e) => ProblemKind::RecordUnreadable { reason: error_chain(&e) },
            };
            // Records are only an index: a build recreates what a removed one named.
            let repaired = self.opts.repair && self.remove(&path)?;
            self.report(kind, path, repaired);
        }
        Ok(())
    }

    fn images(&mut self) -> Result<()> {
        let dir = self.store.images_dir();
        for (_, path) in sorted_entries(&dir)? {
            let img = match read_json::<ImageRecord>(&path) {
                Ok(Some(img)) => img,
                Ok(None) => continue,
                Err(e) => {
                    self.report(ProblemKind::ImageUnreadable { reason: error_chain(&e) }, path, false);
                    continue;
                }
            };
            let mut missing = Vec::new();
            if !self.store.has_blob(&img.config)? {
                missing.push(("config", img.config.clone()));
            }
            let mut todo = vec![img.manifest.clone()];
            while let Some(m) = todo.pop() {
                let Ok(bytes) = self.store.read_blob(&m) else {
                    missing.push(("manifest", m));
                    continue;
                };
                for (d, is_manifest) in manifest_refs(&bytes) {
                    if is_manifest {
                        todo.push(d);
                    } else if !self.store.has_blob(&d)? {
                        missing.push((if d == img.config { "config" } else { "layer" }, d));
                    }
                }
            }
            missing.dedup();
            for (role, blob) in missing {
                self.report(ProblemKind::ImageBlobMissing { image: img.name.clone(), role, blob }, path.clone(), false);
            }
        }
        Ok(())
    }

    /// Removes a published file or directory; true if it is gone.
    fn remove(&self, path: &std::path::Path) -> Result<bool> {
        if path.is_dir() {
            self.store.remove_dir_published(path)?;
        } else {
            self.store.remove_file_published(path)?;
        }
        Ok(path.symlink_metadata().is_err())
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl Store {
    /// Checks the store: stale temp areas, blob names (and content with `rehash_blobs`),
    /// snapshot structure and metadata, that records name existing snapshots, and that images
    /// have their manifest, config and layers. With `repair`, fixes what it safely can (see
    /// [`VerifyOptions::repair`]).
    ///
    /// Safe to run beside builds (shared lock): everything builds publish is complete when it
    /// becomes visible, so a healthy store reports nothing.
    pub fn verify(&self, opts: &VerifyOptions) -> Result<VerifyReport> {
        let mut c = Checker { store: self, opts, problems: Vec::new() };
        c.tmp()?;
        c.blobs()?;
        c.snapshots()?;
        c.records()?;
        c.images()?;
        Ok(VerifyReport { problems: c.problems })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{blob, exclusive, image, record, snapshot};
    use crate::{Store, StoreOptions};

    fn full() -> VerifyOptions {
        VerifyOptions { rehash_blobs: true, repair: false }
    }

    fn repair() -> VerifyOptions {
        VerifyOptions { rehash_blobs: true, repair: true }
    }

    /// An image over a pulled layer, plus a cached step on top.
    fn healthy(s: &Store) -> Digest {
        let layer = blob(s, "layer", 5000);
        snapshot(s, "pulled", 100, Some(&layer));
        image(s, "docker.io/library/app:1", &[&layer]);
        snapshot(s, "step", 100, None);
        record(s, "k", &["pulled", "step"]);
        layer
    }

    fn kinds(r: &VerifyReport) -> Vec<&ProblemKind> {
        r.problems.iter().map(|p| &p.kind).collect()
    }

    #[test]
    fn a_healthy_store_has_no_problems() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        healthy(&s);
        let _other_live_store = Store::open(dir.path()).unwrap();
        let r = s.verify(&full()).unwrap();
        assert_eq!(r.problems, vec![]);
        assert!(r.is_clean());
    }

    #[test]
    fn a_flipped_byte_in_a_blob_is_found_and_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let layer = healthy(&s);
        let p = s.blob_path(&layer).unwrap();
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[42] ^= 1;
        std::fs::write(&p, bytes).unwrap();
        // Without re-hashing, the name alone looks fine.
        assert_eq!(s.verify(&VerifyOptions::default()).unwrap().problems, vec![]);
        let r = s.verify(&full()).unwrap();
        assert!(matches!(kinds(&r)[..], [ProblemKind::BlobDigestMismatch { .. }]), "{r:?}");
        assert_eq!(r.problems[0].path, p);
        let r = s.verify(&repair()).unwrap();
        assert!(r.problems[0].repaired && !p.exists());
        // Now the blob is missing: the snapshot and the image that need it say so.
        let r = s.verify(&full()).unwrap();
        assert!(
            matches!(
                kinds(&r)[..],
                [ProblemKind::SnapshotBlobMissing { .. }, ProblemKind::ImageBlobMissing { role: "layer", .. }]
            ),
            "{r:?}"
        );
        let text = r.problems[1].to_string();
        assert!(text.contains("image docker.io/library/app:1: layer sha256:"), "{text}");
    }

    #[test]
    fn a_record_naming_a_deleted_snapshot_is_found_and_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        healthy(&s);
        std::fs::remove_dir_all(s.snapshots_dir().join("step")).unwrap();
        let r = s.verify(&full()).unwrap();
        assert_eq!(kinds(&r), vec![&ProblemKind::RecordMissingSnapshot { snapshot: "step".into() }]);
        let r = s.verify(&repair()).unwrap();
        assert!(r.is_clean() && !s.record_path("k").exists());
        assert_eq!(s.verify(&full()).unwrap().problems, vec![]);
    }

    #[test]
    fn a_truncated_meta_json_is_found_and_repaired_only_when_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            healthy(&s);
            let meta = s.snapshots_dir().join("step/meta.json");
            let len = std::fs::metadata(&meta).unwrap().len();
            std::fs::File::options().write(true).open(&meta).unwrap().set_len(len / 2).unwrap();
            let r = s.verify(&repair()).unwrap();
            assert!(matches!(kinds(&r)[..], [ProblemKind::SnapshotMetaUnreadable { .. }]), "{r:?}");
            assert!(!r.is_clean(), "a shared store must not remove a snapshot a build may use");
            assert!(s.snapshot_meta("step").is_err());
        }
        let s = exclusive(dir.path());
        let r = s.verify(&repair()).unwrap();
        // The snapshot goes, and with it the record that named it.
        assert!(
            matches!(
                kinds(&r)[..],
                [ProblemKind::SnapshotMetaUnreadable { .. }, ProblemKind::RecordMissingSnapshot { .. }]
            ),
            "{r:?}"
        );
        assert!(r.is_clean(), "{r:?}");
        assert!(!s.has_snapshot("step") && s.has_snapshot("pulled"));
        assert_eq!(s.verify(&full()).unwrap().problems, vec![]);
    }

    #[test]
    fn a_dead_processes_tmp_area_is_found_and_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        healthy(&s);
        // Left by a process killed after our open: an unlocked lock file, its area, and an
        // area whose lock file is gone.
        let tmp = s.root().join("tmp");
        std::fs::create_dir_all(tmp.join("4242-dead/snap-1/diff")).unwrap();
        std::fs::write(tmp.join("4242-dead.lock"), b"").unwrap();
        std::fs::create_dir(tmp.join("4343-orphan")).unwrap();
        let r = s.verify(&full()).unwrap();
        assert_eq!(kinds(&r), vec![&ProblemKind::StaleTmpArea; 3], "{r:?}");
        assert!(tmp.join("4242-dead").exists());
        let r = s.verify(&repair()).unwrap();
        assert!(r.is_clean() && r.problems.len() == 3, "{r:?}");
        assert!(!tmp.join("4242-dead").exists() && !tmp.join("4242-dead.lock").exists());
        assert!(!tmp.join("4343-orphan").exists() && s.tmp_dir().exists());
        assert_eq!(std::fs::read_dir(s.tmp_dir()).unwrap().count(), 0);
    }

    #[test]
    fn broken_images_and_records_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open_with(dir.path(), &StoreOptions { durable: false, ..StoreOptions::default() }).unwrap();
        let layer = blob(&s, "layer", 10);
        let (manifest, _) = image(&s, "img", &[&layer]);
        std::fs::remove_file(s.blob_path(&manifest).unwrap()).unwrap();
        std::fs::write(s.record_path("bad"), b"[").unwrap();
        std::fs::write(s.images_dir().join("bad.json"), b"").unwrap();
        std::fs::write(s.blobs_dir().join("not-a-digest"), b"").unwrap();
        std::fs::create_dir(s.snapshots_dir().join("empty")).unwrap();
        let r = s.verify(&full()).unwrap();
        let k = kinds(&r);
        assert!(
            matches!(
                k[..],
                [
                    ProblemKind::BadBlobName,
                    ProblemKind::SnapshotMissingDiff,
                    ProblemKind::RecordUnreadable { .. },
                    ProblemKind::ImageUnreadable { .. } | ProblemKind::ImageBlobMissing { .. },
                    ProblemKind::ImageUnreadable { .. } | ProblemKind::ImageBlobMissing { .. },
                ]
            ),
            "{r:#?}"
        );
    }
}
