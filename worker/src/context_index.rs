//! A persistent index of the build context's file digests, so a rebuild stats files instead of
//! reading them: an entry is reused when the file's size, mtime, ctime, inode and device are all
//! unchanged (as git's index does). Files whose mtime is too recent to be trusted (they could
//! change again within the timestamp granularity without the stat changing) are hashed but not
//! remembered.
//!
//! Files the index does not vouch for are hashed in parallel, one thread per core.
//!
//! Format (one file per context directory, replaced atomically): the header line, the number
//! of entries (u64), then per file its path length (u32) and path, size, mtime seconds and
//! nanoseconds, ctime seconds and nanoseconds, inode, device (8 bytes each) and the sha256,
//! integers little-endian. Entries are in the order the context walk visits files, so that a
//! rebuild matches them one by one without hashing paths. A corrupt or foreign index is
//! ignored (everything is re-hashed), never trusted.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};

const HEADER: &[u8] = b"rbuild-context-index v2\n";

/// Seconds within which an mtime is too fresh to vouch for the content.
const RACY_SECONDS: i64 = 2;

/// Bytes of an entry after its path.
const FIXED: usize = 8 * 7 + 32;

/// What identifies a file version without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
    dev: u64,
}

impl Stamp {
    /// True when neither the mtime nor the ctime is within the racy window before `now`
    /// (seconds since the epoch): the content cannot have changed without the stamp changing.
    pub fn is_settled(&self, now: i64) -> bool {
        self.mtime.0 < now - RACY_SECONDS && self.ctime.0 < now - RACY_SECONDS
    }

    /// The stamp of a file's metadata.
    pub fn of(md: &std::fs::Metadata) -> Stamp {
        Stamp {
            size: md.size(),
            mtime: (md.mtime(), md.mtime_nsec()),
            ctime: (md.ctime(), md.ctime_nsec()),
            ino: md.ino(),
            dev: md.dev(),
        }
    }
}

/// Digests of files by relative path, with the stamp they were computed for, as loaded.
#[derive(Debug, Default)]
pub struct ContextIndex {
    /// The file's bytes; paths are ranges into it.
    bytes: Vec<u8>,
    entries: Vec<(std::ops::Range<usize>, Stamp, [u8; 32])>,
    /// Path → entry, built on the first lookup that the walk order does not answer.
    by_path: std::sync::OnceLock<HashMap<Vec<u8>, usize>>,
}

impl ContextIndex {
    /// Loads an index; a missing or unreadable one is empty.
    pub fn load(path: &Path) -> ContextIndex {
        let Ok(bytes) = std::fs::read(path) else { return ContextIndex::default() };
        Self::parse(bytes).unwrap_or_default()
    }

    fn parse(bytes: Vec<u8>) -> Option<ContextIndex> {
        let mut pos = HEADER.len();
        if !bytes.starts_with(HEADER) {
            return None;
        }
        let u64_at = |p: usize| -> Option<u64> { Some(u64::from_le_bytes(bytes.get(p..p + 8)?.try_into().ok()?)) };
        let count = usize::try_from(u64_at(pos)?).ok()?;
        pos += 8;
        let mut entries = Vec::with_capacity(count.min(bytes.len() / (FIXED + 4)));
        for _ in 0..count {
            let len = u32::from_le_bytes(bytes.get(pos..pos + 4)?.try_into().ok()?) as usize;
            let path = pos + 4..pos + 4 + len;
            pos = path.end;
            let f = bytes.get(pos..pos + FIXED)?;
            let n = |i: usize| u64::from_le_bytes(f[i * 8..i * 8 + 8].try_into().unwrap_or_default());
            let stamp = Stamp {
                size: n(0),
                mtime: (n(1) as i64, n(2) as i64),
                ctime: (n(3) as i64, n(4) as i64),
                ino: n(5),
                dev: n(6),
            };
            let digest: [u8; 32] = f[56..88].try_into().ok()?;
            entries.push((path, stamp, digest));
            pos += FIXED;
        }
        if pos != bytes.len() {
            return None;
        }
        Some(ContextIndex { bytes, entries, by_path: Default::default() })
    }

    /// The recorded digest for `rel` if `stamp` still matches; `hint` is where the walk
    /// expects it (the previous match plus one), tried before any lookup by path.
    fn lookup(&self, rel: &Path, stamp: &Stamp, hint: usize) -> Option<(usize, [u8; 32])> {
        let key = rel.as_os_str().as_encoded_bytes();
        let i = match self.entries.get(hint) {
            Some((p, _, _)) if &self.bytes[p.clone()] == key => hint,
            _ => {
                let map = self.by_path.get_or_init(|| {
                    self.entries.iter().enumerate().map(|(i, (p, _, _))| (self.bytes[p.clone()].to_vec(), i)).collect()
                });
                *map.get(key)?
            }
        };
        let (_, st, d) = &self.entries[i];
        (st == stamp).then_some((i, *d))
    }
}

/// Writes an index of `files` (those with `Some` digest) next to `path` and renames it into
/// place.
fn save(path: &Path, files: &[FileJob], digests: &[Option<[u8; 32]>]) -> io::Result<()> {
    let count = digests.iter().filter(|d| d.is_some()).count();
    let mut out = Vec::with_capacity(HEADER.len() + 8 + count * (FIXED + 64));
    out.extend_from_slice(HEADER);
    out.extend_from_slice(&(count as u64).to_le_bytes());
    for ((rel, _, s), d) in files.iter().zip(digests) {
        let Some(d) = d else { continue };
        let p = rel.as_os_str().as_encoded_bytes();
        out.extend_from_slice(&u32::try_from(p.len()).map_err(io::Error::other)?.to_le_bytes());
        out.extend_from_slice(p);
        for v in [s.size, s.mtime.0 as u64, s.mtime.1 as u64, s.ctime.0 as u64, s.ctime.1 as u64, s.ino, s.dev] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(d);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, &out)?;
    std::fs::rename(&tmp, path)
}

/// sha256 of a file's content.
pub fn hash_file(path: &Path) -> io::Result<[u8; 32]> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 17];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// Seconds since the epoch, now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// A file to digest: relative path, host path, stamp.
pub type FileJob = (PathBuf, PathBuf, Stamp);

/// Digests every file, from `old` when its stamp matches and by reading it otherwise (on all
/// cores), and returns the digests in input order and how many files were read. With `save_to`
/// and anything read, the new index (the settled files) is written there; a failed write costs a
/// re-hash next time, nothing else.
pub fn digest_files(
    files: &[FileJob],
    old: &ContextIndex,
    save_to: Option<&Path>,
) -> io::Result<(Vec<[u8; 32]>, usize)> {
    let mut hint = 0;
    let mut out: Vec<Option<[u8; 32]>> = Vec::with_capacity(files.len());
    for (rel, _, st) in files {
        match old.lookup(rel, st, hint) {
            Some((i, d)) => {
                hint = i + 1;
                out.push(Some(d));
            }
            None => {
                hint += 1;
                out.push(None);
            }
        }
    }
    let todo: Vec<usize> = (0..files.len()).filter(|i| out[*i].is_none()).collect();
    let hashed = todo.len();
    if !todo.is_empty() {
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<(usize, io::Result<[u8; 32]>)>> = Mutex::new(Vec::with_capacity(todo.len()));
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(todo.len());
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = todo.get(k) else { break };
                    let r = hash_file(&files[i].1);
                    if let Ok(mut v) = results.lock() {
                        v.push((i, r));
                    }
                });
            }
        });
        let results = results.into_inner().map_err(|_| io::Error::other("hash worker panicked"))?;
        for (i, r) in results {
            out[i] = Some(r?);
        }
    }
    let digests =
        out.iter().map(|d| d.ok_or_else(|| io::Error::other("file digest missing"))).collect::<io::Result<Vec<_>>>()?;
    if let (Some(path), true) = (save_to, hashed > 0) {
        let now = now_secs();
        let keep: Vec<Option<[u8; 32]>> =
            files.iter().zip(&digests).map(|((_, _, st), d)| st.is_settled(now).then_some(*d)).collect();
        let _ = save(path, files, &keep);
    }
    Ok((digests, hashed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn old_file(dir: &Path, name: &str, content: &str) -> (PathBuf, PathBuf, Stamp) {
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        crate::fsmeta::set_mtime(&p, (1_000_000, 0)).unwrap();
        let md = std::fs::symlink_metadata(&p).unwrap();
        (PathBuf::from(name), p, Stamp::of(&md))
    }

    #[test]
    fn index_round_trip_and_reuse() {
        let t = tempfile::tempdir().unwrap();
        let files = vec![old_file(t.path(), "a", "1"), old_file(t.path(), "b\tname", "2")];
        let path = t.path().join("idx");
        let (d1, hashed) = digest_files(&files, &ContextIndex::default(), Some(&path)).unwrap();
        assert_eq!(hashed, 2);
        let loaded = ContextIndex::load(&path);
        // ctime is "now" on a freshly written file, so nothing is trusted yet: racy entries are
        // re-hashed, never reused.
        assert!(loaded.entries.is_empty());
        let (d2, hashed2) = digest_files(&files, &loaded, None).unwrap();
        assert_eq!(d1, d2);
        assert_eq!(hashed2, 2);
    }

    fn settled(name: &str, ino: u64) -> (PathBuf, PathBuf, Stamp) {
        let st = Stamp { size: 1, mtime: (1, 0), ctime: (1, 0), ino, dev: 1 };
        (PathBuf::from(name), PathBuf::from("/nonexistent").join(name), st)
    }

    #[test]
    fn stamps_vouch_only_for_unchanged_files() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("i");
        let files = vec![settled("f", 7), settled("g", 8), settled("h", 9)];
        save(&p, &files, &[Some([9; 32]), None, Some([7; 32])]).unwrap();
        let idx = ContextIndex::load(&p);
        assert_eq!(idx.lookup(Path::new("f"), &files[0].2, 0).map(|x| x.1), Some([9; 32]));
        // Found by path when not where the walk expects it.
        assert_eq!(idx.lookup(Path::new("h"), &files[2].2, 0).map(|x| x.1), Some([7; 32]));
        assert_eq!(idx.lookup(Path::new("g"), &files[1].2, 1), None, "never recorded");
        let moved = Stamp { ino: 8, ..files[0].2 };
        assert_eq!(idx.lookup(Path::new("f"), &moved, 0), None);
        // All from the index: nothing to read (the host paths do not exist).
        let (d, hashed) = digest_files(&[files[0].clone(), files[2].clone()], &idx, None).unwrap();
        assert_eq!((d, hashed), (vec![[9; 32], [7; 32]], 0));
        let bytes = std::fs::read(&p).unwrap();
        assert!(ContextIndex::parse(b"garbage".to_vec()).is_none());
        let mut truncated = bytes.clone();
        truncated.truncate(bytes.len() - 5);
        assert!(ContextIndex::parse(truncated).is_none(), "a torn index must not be trusted");
        let mut longer = bytes;
        longer.push(0);
        assert!(ContextIndex::parse(longer).is_none());
    }
}
