//! Garbage collection and disk usage.
//!
//! What is live:
//!
//! 1. Image names are roots. An image keeps its manifest, config and layer blobs (and, for an
//!    index, every child manifest's), and every snapshot whose `meta.blob` is one of them.
//! 2. A cache record keeps the snapshots of its chain. A record naming a missing snapshot, or
//!    that cannot be read, is dead (it can never be a cache hit) and always removed.
//! 3. A kept snapshot keeps its `meta.blob`: without it, exporting would pack the layer again,
//!    and a repacked base layer would change the image digest.
//!
//! Which records go: those older than `until` (all, if not given) are candidates; with
//! `keep_storage`, candidates are removed least recently used first until the live bytes fit;
//! without it, `all` or `until` remove every candidate, and neither removes none. Then every
//! snapshot and blob that is not live goes.
//!
//! Beside them the worker keeps hints that only save work and are ignored when stale:
//! `layer-blocks/` (where each gzip block of an op's last layer sits in its blob; the second
//! line of each file names the blob) and `context-index/` (context file digests, and memos of
//! which snapshot files an earlier COPY wrote). A hint whose blob is gone goes with it; `all`
//! removes every hint.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::blobs::{digest_from_hex, sha256_hex, Digest};
use crate::error::{Error, Result};
use crate::fsutil::{file_usage, fsync_dir, read_json, sorted_entries};
use crate::images::ImageRecord;
use crate::records::Record;
use crate::snapshots::SnapshotMeta;
use crate::store::{modified, Store};

/// What [`Store::gc`] may remove.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcOptions {
    /// Remove every cache record (that `until` selects). Image names always stay.
    pub all: bool,
    /// Remove least recently used records until the live snapshots and blobs take at most this
    /// many bytes.
    pub keep_storage: Option<u64>,
    /// Only records unused for longer than this are candidates.
    pub until: Option<Duration>,
    /// Report what would be removed, remove nothing.
    pub dry_run: bool,
}

/// What [`Store::gc`] removed (or, in a dry run, would remove).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Cache records.
    pub removed_records: usize,
    /// Snapshots.
    pub removed_snapshots: usize,
    /// Blobs.
    pub removed_blobs: usize,
    /// Disk space of the removed snapshots and blobs.
    pub freed_bytes: u64,
    /// Disk space of the snapshots and blobs that stay.
    pub kept_bytes: u64,
}

/// What the store holds ([`Store::usage`]). Bytes are disk space allocated, like `du`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Blobs: (count, bytes).
    pub blobs: (usize, u64),
    /// Snapshots: (count, bytes).
    pub snapshots: (usize, u64),
    /// Cache records.
    pub records: usize,
    /// Image names.
    pub images: usize,
    /// What `gc` with `all: true` would free: everything no image needs.
    pub reclaimable_bytes: u64,
}

/// A snapshot on disk.
#[derive(Debug)]
struct SnapEntry {
    bytes: u64,
    /// Whether it has its `diff/` (what [`Store::has_snapshot`] checks).
    usable: bool,
    /// Hex of `meta.blob`, if the metadata reads and names one.
    blob: Option<String>,
}

/// A record file on disk.
#[derive(Debug)]
struct RecordEntry {
    path: PathBuf,
    last_used: SystemTime,
    /// Snapshot ids of the chain; `None` if the file cannot be read.
    chain: Option<Vec<String>>,
}

/// Everything in the store, read once.
#[derive(Debug, Default)]
struct Inventory {
    blobs: BTreeMap<String, u64>,
    snapshots: BTreeMap<String, SnapEntry>,
    records: Vec<RecordEntry>,
    images: usize,
    /// Hex of every blob an image needs.
    image_blobs: BTreeSet<String>,
    /// Image files or manifests that could not be read: their blobs are unknown.
    unreadable: Vec<(PathBuf, String)>,
}

/// What a collection removes.
#[derive(Debug, Default)]
struct Plan {
    records: Vec<PathBuf>,
    snapshots: Vec<String>,
    blobs: Vec<String>,
    freed: u64,
    kept: u64,
}

impl Inventory {
    fn load(store: &Store) -> Result<Inventory> {
        let mut inv = Inventory::default();
        for (name, path) in sorted_entries(&store.blobs_dir())? {
            inv.blobs.insert(name, file_usage(&path)?);
        }
        for (id, path) in sorted_entries(&store.snapshots_dir())? {
            let blob = read_json::<SnapshotMeta>(&path.join("meta.json"))
                .ok()
                .flatten()
                .and_then(|m| m.blob)
                .and_then(|d| sha256_hex(&d).ok().map(str::to_owned));
            let bytes = if path.is_dir() { crate::snapshots::size_of(&path)? } else { file_usage(&path)? };
            let usable = path.join("diff").is_dir();
            inv.snapshots.insert(id, SnapEntry { bytes, usable, blob });
        }
        for (name, path) in sorted_entries(&store.records_dir())? {
            if !name.ends_with(".json") {
                continue;
            }
            let Some(last_used) = modified(&path)? else { continue };
            let chain = read_json::<Record>(&path).ok().flatten().map(|r| r.chain.into_iter().map(|l| l.id).collect());
            inv.records.push(RecordEntry { path, last_used, chain });
        }
        for (name, path) in sorted_entries(&store.images_dir())? {
            if !name.ends_with(".json") {
                continue;
            }
            inv.images += 1;
            match read_json::<ImageRecord>(&path) {
                Ok(Some(img)) => {
                    if let Err(e) = inv.add_image_blobs(store, &img) {
                        inv.unreadable.push((path, e.to_string()));
                    }
                }
                Ok(None) => inv.images -= 1,
                Err(e) => inv.unreadable.push((path, e.to_string())),
            }
        }
        Ok(inv)
    }

    /// Adds the blobs image `img` needs, walking its manifest (or index) as far as present.
    fn add_image_blobs(&mut self, store: &Store, img: &ImageRecord) -> Result<()> {
        let mut todo = vec![img.manifest.clone()];
        self.image_blobs.insert(sha256_hex(&img.config)?.to_owned());
        while let Some(d) = todo.pop() {
            if !self.image_blobs.insert(sha256_hex(&d)?.to_owned()) {
                // Walked already, for another image.
                continue;
            }
            if !store.has_blob(&d)? {
                // Nothing below a missing manifest can be found; verify reports it.
                continue;
            }
            for (child, is_manifest) in manifest_refs(&store.read_blob(&d)?) {
                if is_manifest {
                    todo.push(child);
                } else {
                    self.image_blobs.insert(sha256_hex(&child)?.to_owned());
                }
            }
        }
        Ok(())
    }
}

/// The digests a manifest or index names: `(digest, is_a_manifest)`. Unknown JSON names none.
pub(crate) fn manifest_refs(bytes: &[u8]) -> Vec<(Digest, bool)> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes) else { return Vec::new() };
    let digest = |d: &serde_json::Value| d.get("digest").and_then(|s| s.as_str()).and_then(|s| s.parse().ok());
    let mut out = Vec::new();
    if let Some(c) = v.get("config").and_then(digest) {
        out.push((c, false));
    }
    for (key, is_manifest) in [("layers", false), ("manifests", true)] {
        for item in v.get(key).and_then(|l| l.as_array()).into_iter().flatten() {
            if let Some(d) = digest(item) {
                out.push((d, is_manifest));
            }
        }
    }
    out
}

/// Live bytes with reference counts, so that dropping a record frees exactly what only it held.
struct Live<'a> {
    inv: &'a Inventory,
    pinned_snaps: BTreeSet<&'a str>,
    snap_refs: HashMap<&'a str, usize>,
    blob_refs: HashMap<&'a str, usize>,
    total: u64,
}

impl<'a> Live<'a> {
    fn new(inv: &'a Inventory, records: &[&'a [String]]) -> Live<'a> {
        let pinned_snaps = inv
            .snapshots
            .iter()
            .filter(|(_, s)| s.blob.as_ref().is_some_and(|b| inv.image_blobs.contains(b)))
            .map(|(id, _)| id.as_str())
            .collect();
        let mut live = Live { inv, pinned_snaps, snap_refs: HashMap::new(), blob_refs: HashMap::new(), total: 0 };
        for b in &inv.image_blobs {
            live.total += inv.blobs.get(b).copied().unwrap_or(0);
        }
        let pinned: Vec<&str> = live.pinned_snaps.iter().copied().collect();
        for id in pinned {
            live.snap_gained(id);
        }
        for chain in records {
            for id in unique(chain) {
                *live.snap_refs.entry(id).or_insert(0) += 1;
                if live.snap_refs[id] == 1 && !live.pinned_snaps.contains(id) {
                    live.snap_gained(id);
                }
            }
        }
        live
    }

    fn snap_gained(&mut self, id: &'a str) {
        let Some(s) = self.inv.snapshots.get(id) else { return };
        self.total += s.bytes;
        if let Some(b) = s.blob.as_deref() {
            let n = self.blob_refs.entry(b).or_insert(0);
            *n += 1;
            if *n == 1 && !self.inv.image_blobs.contains(b) {
                self.total += self.inv.blobs.get(b).copied().unwrap_or(0);
            }
        }
    }

    fn drop_record(&mut self, chain: &'a [String]) {
        for id in unique(chain) {
            let Some(n) = self.snap_refs.get_mut(id) else { continue };
            *n -= 1;
            if *n > 0 || self.pinned_snaps.contains(id) {
                continue;
            }
            self.snap_refs.remove(id);
            let Some(s) = self.inv.snapshots.get(id) else { continue };
            self.total -= s.bytes;
            if let Some(b) = s.blob.as_deref() {
                if let Some(n) = self.blob_refs.get_mut(b) {
                    *n -= 1;
                    if *n == 0 {
                        self.blob_refs.remove(b);
                        if !self.inv.image_blobs.contains(b) {
                            self.total -= self.inv.blobs.get(b).copied().unwrap_or(0);
                        }
                    }
                }
            }
        }
    }

    fn keeps_snapshot(&self, id: &str) -> bool {
        self.pinned_snaps.contains(id) || self.snap_refs.contains_key(id)
    }

    fn keeps_blob(&self, hex: &str) -> bool {
        self.inv.image_blobs.contains(hex) || self.blob_refs.contains_key(hex)
    }
}

fn unique(chain: &[String]) -> BTreeSet<&str> {
    chain.iter().map(String::as_str).collect()
}

fn plan(inv: &Inventory, opts: &GcOptions, now: SystemTime) -> Plan {
    let mut out = Plan::default();
    let mut valid: Vec<(&RecordEntry, &[String])> = Vec::new();
    for r in &inv.records {
        match &r.chain {
            Some(chain) if chain.iter().all(|id| inv.snapshots.get(id).is_some_and(|s| s.usable)) => {
                valid.push((r, chain))
            }
            _ => out.records.push(r.path.clone()),
        }
    }
    let chains: Vec<&[String]> = valid.iter().map(|(_, c)| *c).collect();
    let mut live = Live::new(inv, &chains);

    let cutoff = opts.until.and_then(|age| now.checked_sub(age));
    let mut candidates: Vec<&(&RecordEntry, &[String])> =
        valid.iter().filter(|(r, _)| cutoff.is_none_or(|c| r.last_used <= c)).collect();
    candidates.sort_by(|a, b| (a.0.last_used, &a.0.path).cmp(&(b.0.last_used, &b.0.path)));
    let remove_all = opts.all || opts.until.is_some();
    for (r, chain) in candidates {
        match opts.keep_storage {
            Some(budget) if live.total <= budget => break,
            None if !remove_all => break,
            _ => {}
        }
        live.drop_record(chain);
        out.records.push(r.path.clone());
    }

    for (id, s) in &inv.snapshots {
        if live.keeps_snapshot(id) {
            out.kept += s.bytes;
        } else {
            out.freed += s.bytes;
            out.snapshots.push(id.clone());
        }
    }
    for (hex, bytes) in &inv.blobs {
        if live.keeps_blob(hex) {
            out.kept += bytes;
        } else {
            out.freed += bytes;
            out.blobs.push(hex.clone());
        }
    }
    out
}

impl Store {
    /// Removes cache records, then every snapshot and blob nothing live needs (see the module
    /// doc of `gc.rs` for the rules). Needs [`LockMode::Exclusive`](crate::LockMode::Exclusive)
    /// unless `dry_run`. Refuses to run when an image's name or manifest cannot be read, since
    /// its blobs would look unused ([`Store::verify`] reports which).
    ///
    /// Removal is crash-safe: records go first, a snapshot leaves `snapshots/` by one rename
    /// before it is deleted, blobs go last. A collection killed halfway leaves a consistent
    /// store and some garbage for the next one.
    pub fn gc(&self, opts: &GcOptions) -> Result<GcReport> {
        if !opts.dry_run {
            self.require_exclusive("garbage collection")?;
        }
        let inv = Inventory::load(self)?;
        if let Some((path, why)) = inv.unreadable.first() {
            return Err(Error::Unreadable { path: path.clone(), reason: why.clone() });
        }
        let plan = plan(&inv, opts, SystemTime::now());
        let report = GcReport {
            removed_records: plan.records.len(),
            removed_snapshots: plan.snapshots.len(),
            removed_blobs: plan.blobs.len(),
            freed_bytes: plan.freed,
            kept_bytes: plan.kept,
        };
        if opts.dry_run {
            return Ok(report);
        }
        for p in &plan.records {
            self.remove_file_published(p)?;
        }
        if self.options.durable && !plan.records.is_empty() {
            // No record may outlive, on disk, a snapshot it names.
            fsync_dir(&self.records_dir())?;
        }
        for id in &plan.snapshots {
            self.remove_dir_published(&self.snapshots_dir().join(id))?;
        }
        if self.options.durable && !plan.snapshots.is_empty() {
            fsync_dir(&self.snapshots_dir())?;
        }
        for hex in &plan.blobs {
            let p = self.blobs_dir().join(hex);
            match digest_from_hex(hex) {
                Some(_) => self.remove_file_published(&p)?,
                // Not a blob name: whatever it is, it is not ours to keep.
                None if p.is_dir() => self.remove_dir_published(&p)?,
                None => self.remove_file_published(&p)?,
            }
        }
        self.sweep_hints(opts.all)?;
        Ok(report)
    }

    /// Removes the worker's hints (see the module doc): all of them with `all`, else the block
    /// lists whose blob is gone.
    fn sweep_hints(&self, all: bool) -> Result<()> {
        let context_index = self.root().join("context-index");
        if all && context_index.is_dir() {
            self.remove_dir_published(&context_index)?;
        }
        let blocks = self.root().join("layer-blocks");
        if !blocks.is_dir() {
            return Ok(());
        }
        for (_, p) in sorted_entries(&blocks)? {
            let stale = all || {
                // Header line, then the blob's digest (`sha256:<hex>`).
                let text = std::fs::read(&p).unwrap_or_default();
                let digest = text.split(|b| *b == b'\n').nth(1).and_then(|l| std::str::from_utf8(l).ok());
                !digest
                    .and_then(|d| d.strip_prefix("sha256:"))
                    .is_some_and(|hex| digest_from_hex(hex).is_some() && self.blobs_dir().join(hex).is_file())
            };
            if stale {
                self.remove_file_published(&p)?;
            }
        }
        Ok(())
    }

    /// Counts and sizes what the store holds, and how much `gc` with `all` would free.
    pub fn usage(&self) -> Result<Usage> {
        let inv = Inventory::load(self)?;
        let plan = plan(&inv, &GcOptions { all: true, dry_run: true, ..GcOptions::default() }, SystemTime::now());
        Ok(Usage {
            blobs: (inv.blobs.len(), inv.blobs.values().sum()),
            snapshots: (inv.snapshots.len(), inv.snapshots.values().map(|s| s.bytes).sum()),
            records: inv.records.len(),
            images: inv.images,
            reclaimable_bytes: plan.freed,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::testutil::{age_record, blob, exclusive, image, record, snapshot};
    use crate::{Error, Store};

    const HOUR: Duration = Duration::from_secs(3600);

    fn all() -> GcOptions {
        GcOptions { all: true, ..GcOptions::default() }
    }

    #[test]
    fn hints_go_with_their_blob_and_all_removes_every_hint() {
        let dir = tempfile::tempdir().unwrap();
        let s = exclusive(dir.path());
        let kept = blob(&s, "kept", 100);
        snapshot(&s, "base", 100, Some(&kept));
        image(&s, "docker.io/library/app:1", &[&kept]);
        let loose = blob(&s, "loose", 100);
        let blocks = s.root().join("layer-blocks");
        std::fs::create_dir_all(&blocks).unwrap();
        let hint = |name: &str, digest: &str| {
            std::fs::write(blocks.join(name), format!("rbuild-layer-blocks v1\n{digest}\nrecords")).unwrap();
        };
        hint("a.gzip6", kept.as_ref());
        hint("b.gzip6", loose.as_ref());
        hint("c.gzip6", "not a digest");
        let memo = s.root().join("context-index/ctx.copies");
        std::fs::create_dir_all(&memo).unwrap();
        std::fs::write(memo.join("m"), "memo").unwrap();

        // The loose blob goes, and with it its hint; a hint naming no blob goes too.
        s.gc(&GcOptions { until: Some(Duration::ZERO), ..GcOptions::default() }).unwrap();
        assert!(!s.has_blob(&loose).unwrap());
        let left: Vec<String> = sorted_entries(&blocks).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(left, ["a.gzip6"]);
        assert!(memo.join("m").exists(), "context hints stay unless all");

        s.gc(&all()).unwrap();
        assert_eq!(sorted_entries(&blocks).unwrap().len(), 0);
        assert!(!s.root().join("context-index").exists());
        assert!(s.has_blob(&kept).unwrap(), "images keep their blobs");
    }

    #[test]
    fn images_keep_their_blobs_and_snapshots_all_removes_records() {
        let dir = tempfile::tempdir().unwrap();
        let s = exclusive(dir.path());
        let layer = blob(&s, "layer", 3000);
        snapshot(&s, "base", 100, Some(&layer));
        let (manifest, config) = image(&s, "docker.io/library/app:1", &[&layer]);
        let loose = blob(&s, "loose", 10);
        snapshot(&s, "step", 100, Some(&loose));
        snapshot(&s, "orphan", 100, None);
        record(&s, "k-step", &["base", "step"]);

        let r = s.gc(&all()).unwrap();
        assert_eq!((r.removed_records, r.removed_snapshots, r.removed_blobs), (1, 2, 1), "{r:?}");
        assert!(s.has_snapshot("base") && !s.has_snapshot("step") && !s.has_snapshot("orphan"));
        for d in [&layer, &manifest, &config] {
            assert!(s.has_blob(d).unwrap());
        }
        assert!(!s.has_blob(&loose).unwrap());
        assert_eq!(s.get_record("k-step").unwrap(), None);
        assert_eq!(s.list_images().unwrap().len(), 1);
        // Removed snapshots left through our temp area, which is empty again.
        assert_eq!(std::fs::read_dir(s.tmp_dir()).unwrap().count(), 0);
        // Nothing left to collect.
        assert_eq!(s.gc(&all()).unwrap().freed_bytes, 0);
    }

    #[test]
    fn records_keep_their_snapshots_and_those_keep_their_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let s = exclusive(dir.path());
        let packed = blob(&s, "packed", 500);
        snapshot(&s, "a", 100, None);
        snapshot(&s, "b", 100, Some(&packed));
        snapshot(&s, "garbage", 100, None);
        record(&s, "k", &["a", "b"]);
        record(&s, "broken", &["a", "gone"]);
        std::fs::write(s.record_path("unreadable"), b"{not json").unwrap();
        let stray = blob(&s, "stray", 5);

        // No options: only what nothing needs, and records that can never hit.
        let r = s.gc(&GcOptions::default()).unwrap();
        assert_eq!((r.removed_records, r.removed_snapshots, r.removed_blobs), (2, 1, 1), "{r:?}");
        assert!(s.get_record("k").unwrap().is_some());
        assert!(s.has_snapshot("a") && s.has_snapshot("b") && !s.has_snapshot("garbage"));
        assert!(s.has_blob(&packed).unwrap() && !s.has_blob(&stray).unwrap());
        assert!(!s.record_path("broken").exists() && !s.record_path("unreadable").exists());
    }

    #[test]
    fn lru_removes_least_recently_used_records_until_under_budget() {
        let dir = tempfile::tempdir().unwrap();
        let s = exclusive(dir.path());
        for (i, id) in ["old", "mid", "new"].iter().enumerate() {
            snapshot(&s, id, 20_000 * (i + 1), None);
            record(&s, &format!("k-{id}"), &[id]);
        }
        age_record(&s, "k-old", 3 * HOUR);
        age_record(&s, "k-mid", 2 * HOUR);
        age_record(&s, "k-new", HOUR);
        // A hit makes the oldest record the most recently used.
        assert!(s.get_record("k-old").unwrap().is_some());
        let size = |id| s.snapshot_usage(id).unwrap();
        let (budget, mid) = (size("old") + size("new"), size("mid"));

        let opts = GcOptions { keep_storage: Some(budget), ..GcOptions::default() };
        let dry = s.gc(&GcOptions { dry_run: true, ..opts.clone() }).unwrap();
        let r = s.gc(&opts).unwrap();
        assert_eq!(dry, r);
        assert_eq!((r.removed_records, r.removed_snapshots), (1, 1), "{r:?}");
        assert_eq!(r.freed_bytes, mid);
        assert!(s.has_snapshot("old") && !s.has_snapshot("mid") && s.has_snapshot("new"));
        assert_eq!(r.kept_bytes, budget);

        // A budget of zero removes every record; `until` protects the recent ones.
        let r = s.gc(&GcOptions { keep_storage: Some(0), until: Some(HOUR / 2), ..GcOptions::default() }).unwrap();
        assert_eq!(r.removed_records, 1, "only k-new is older than half an hour: {r:?}");
        assert!(s.has_snapshot("old") && !s.has_snapshot("new"));
    }

    #[test]
    fn keep_storage_counts_shared_snapshots_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = exclusive(dir.path());
        let base_blob = blob(&s, "base-layer", 40_000);
        snapshot(&s, "base", 50_000, Some(&base_blob));
        snapshot(&s, "x", 30_000, None);
        snapshot(&s, "y", 30_000, None);
        record(&s, "k-base", &["base"]);
        record(&s, "k-x", &["base", "x"]);
        record(&s, "k-y", &["base", "y"]);
        age_record(&s, "k-x", 3 * HOUR);
        age_record(&s, "k-base", 2 * HOUR);
        age_record(&s, "k-y", HOUR);
        let usage = s.usage().unwrap();
        let total = usage.blobs.1 + usage.snapshots.1;
        let x = s.snapshot_usage("x").unwrap();

        // Dropping k-x frees x; dropping k-base frees nothing (k-y still needs base).
        let r = s.gc(&GcOptions { keep_storage: Some(total - x), dry_run: true, ..GcOptions::default() }).unwrap();
        assert_eq!((r.removed_records, r.removed_snapshots, r.freed_bytes), (1, 1, x), "{r:?}");
        let r = s.gc(&GcOptions { keep_storage: Some(total - x - 1), dry_run: true, ..GcOptions::default() }).unwrap();
        assert_eq!((r.removed_records, r.removed_snapshots), (3, 3), "{r:?}");
        assert_eq!((r.freed_bytes, r.kept_bytes), (total, 0));
    }

    #[test]
    fn dry_run_reports_what_the_real_run_does_and_removes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = exclusive(dir.path());
        let layer = blob(&s, "l", 9000);
        snapshot(&s, "pulled", 7000, Some(&layer));
        image(&s, "img", &[&layer]);
        for i in 0..6 {
            let id = format!("s{i}");
            let b = blob(&s, &id, 1000 * i);
            snapshot(&s, &id, 5000 * i, Some(&b));
            record(&s, &format!("k{i}"), &["pulled", &id]);
            age_record(&s, &format!("k{i}"), HOUR * (10 - i as u32));
        }
        blob(&s, "garbage", 100);
        for opts in [
            GcOptions::default(),
            GcOptions { keep_storage: Some(60_000), ..GcOptions::default() },
            GcOptions { until: Some(HOUR * 7), ..GcOptions::default() },
            all(),
        ] {
            let before = s.usage().unwrap();
            let dry = s.gc(&GcOptions { dry_run: true, ..opts.clone() }).unwrap();
            assert_eq!(s.usage().unwrap(), before, "a dry run must not change anything");
            let real = s.gc(&opts).unwrap();
            assert_eq!(dry, real, "{opts:?}");
            let after = s.usage().unwrap();
            assert_eq!(after.blobs.1 + after.snapshots.1, real.kept_bytes);
            assert_eq!(before.blobs.1 + before.snapshots.1, real.kept_bytes + real.freed_bytes);
        }
        assert!(s.has_snapshot("pulled") && s.has_blob(&layer).unwrap());
    }

    #[test]
    fn usage_counts_everything_and_reclaimable_is_what_all_frees() {
        let dir = tempfile::tempdir().unwrap();
        let s = exclusive(dir.path());
        let layer = blob(&s, "l", 9000);
        snapshot(&s, "pulled", 7000, Some(&layer));
        image(&s, "img", &[&layer]);
        snapshot(&s, "step", 12_000, None);
        record(&s, "k", &["pulled", "step"]);
        let u = s.usage().unwrap();
        assert_eq!((u.blobs.0, u.snapshots.0, u.records, u.images), (3, 2, 1, 1), "{u:?}");
        assert_eq!(u.snapshots.1, s.snapshot_usage("pulled").unwrap() + s.snapshot_usage("step").unwrap());
        assert!(u.snapshots.1 >= 19_000 && u.blobs.1 >= 9000);
        assert_eq!(u.reclaimable_bytes, s.snapshot_usage("step").unwrap());
        assert_eq!(u.reclaimable_bytes, s.gc(&GcOptions { dry_run: true, ..all() }).unwrap().freed_bytes);
    }

    #[test]
    fn an_index_keeps_its_child_manifests_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let s = exclusive(dir.path());
        let layer = blob(&s, "l", 100);
        let (child, child_config) = image(&s, "child", &[&layer]);
        assert!(s.remove_image("child").unwrap());
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"digest": child.to_string(), "size": 1}]});
        let (index, size) = s.put_blob(&serde_json::to_vec(&index).unwrap(), None).unwrap();
        let config = blob(&s, "cfg", 10);
        s.put_image(&ImageRecord {
            name: "multi".into(),
            manifest: index,
            manifest_size: size,
            config,
            size: 0,
            created: 0,
        })
        .unwrap();
        let stray = blob(&s, "stray", 10);
        let r = s.gc(&all()).unwrap();
        assert_eq!(r.removed_blobs, 1, "{r:?}");
        assert!(!s.has_blob(&stray).unwrap());
        for d in [&child, &child_config, &layer] {
            assert!(s.has_blob(d).unwrap());
        }
    }

    #[test]
    fn gc_needs_the_exclusive_lock_and_readable_images() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        snapshot(&s, "x", 10, None);
        assert!(matches!(s.gc(&all()), Err(Error::NotExclusive { .. })));
        assert_eq!(s.gc(&GcOptions { dry_run: true, ..all() }).unwrap().removed_snapshots, 1);
        drop(s);

        let s = exclusive(dir.path());
        std::fs::write(s.images_dir().join("broken.json"), b"{").unwrap();
        assert!(matches!(s.gc(&all()), Err(Error::Unreadable { .. })));
        assert!(s.has_snapshot("x"), "a refused collection removes nothing");
    }
}
