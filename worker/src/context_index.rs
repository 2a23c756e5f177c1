//! A persistent index of the build context's file digests, so a rebuild stats files instead of
//! reading them: an entry is reused when the file's size, mtime, ctime, inode and device are all
//! unchanged (as git's index does). Files whose mtime is too recent to be trusted (they could
//! change again within the timestamp granularity without the stat changing) are hashed but not
//! remembered.
//!
//! Files the index does not vouch for are hashed in parallel, one thread per core.
//!
//! Format (one file per context directory, replaced atomically): a header line, then per file
//! `path NUL size mtime_s mtime_ns ctime_s ctime_ns ino dev hexdigest NUL`. A corrupt or
//! foreign index is ignored (everything is re-hashed), never trusted.

use std::collections::HashMap;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};

const HEADER: &str = "rbuild-context-index v1\n";

/// Seconds within which an mtime is too fresh to vouch for the content.
const RACY_SECONDS: i64 = 2;

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

/// Digests of files by relative path, with the stamp they were computed for.
#[derive(Debug, Default)]
pub struct ContextIndex {
    entries: HashMap<PathBuf, (Stamp, [u8; 32])>,
}

impl ContextIndex {
    /// Loads an index; a missing or unreadable one is empty.
    pub fn load(path: &Path) -> ContextIndex {
        let Ok(bytes) = std::fs::read(path) else { return ContextIndex::default() };
        Self::parse(&bytes).unwrap_or_default()
    }

    fn parse(bytes: &[u8]) -> Option<ContextIndex> {
        let rest = bytes.strip_prefix(HEADER.as_bytes())?;
        let mut entries = HashMap::new();
        let mut fields = rest.split(|b| *b == 0);
        while let Some(path) = fields.next() {
            if path.is_empty() {
                break;
            }
            let meta = std::str::from_utf8(fields.next()?).ok()?;
            let v: Vec<&str> = meta.split(' ').collect();
            if v.len() != 8 {
                return None;
            }
            let num = |i: usize| v[i].parse::<i64>().ok();
            let stamp = Stamp {
                size: v[0].parse().ok()?,
                mtime: (num(1)?, num(2)?),
                ctime: (num(3)?, num(4)?),
                ino: v[5].parse().ok()?,
                dev: v[6].parse().ok()?,
            };
            let mut digest = [0u8; 32];
            hex::decode_to_slice(v[7], &mut digest).ok()?;
            let path = PathBuf::from(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(path));
            entries.insert(path, (stamp, digest));
        }
        Some(ContextIndex { entries })
    }

    /// Writes the index next to `path` and renames it into place.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let mut out = Vec::with_capacity(self.entries.len() * 96);
        out.extend_from_slice(HEADER.as_bytes());
        let mut keys: Vec<&PathBuf> = self.entries.keys().collect();
        keys.sort();
        for k in keys {
            let (s, d) = &self.entries[k];
            out.extend_from_slice(k.as_os_str().as_encoded_bytes());
            out.push(0);
            out.extend_from_slice(
                format!(
                    "{} {} {} {} {} {} {} {}",
                    s.size,
                    s.mtime.0,
                    s.mtime.1,
                    s.ctime.0,
                    s.ctime.1,
                    s.ino,
                    s.dev,
                    hex::encode(d)
                )
                .as_bytes(),
            );
            out.push(0);
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, &out)?;
        std::fs::rename(&tmp, path)
    }

    /// The recorded digest for `rel` if `stamp` still matches.
    pub fn lookup(&self, rel: &Path, stamp: &Stamp) -> Option<[u8; 32]> {
        self.entries.get(rel).filter(|(s, _)| s == stamp).map(|(_, d)| *d)
    }
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

/// A file to digest: relative path, host path, stamp.
pub type FileJob = (PathBuf, PathBuf, Stamp);

/// Digests every file, from `old` when its stamp matches and by reading it otherwise (on all
/// cores), and returns the digests in input order plus the index to save.
pub fn digest_files(files: &[FileJob], old: &ContextIndex) -> io::Result<(Vec<[u8; 32]>, ContextIndex, usize)> {
    let mut out: Vec<Option<[u8; 32]>> = files.iter().map(|(rel, _, st)| old.lookup(rel, st)).collect();
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
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let mut index = ContextIndex::default();
    let mut digests = Vec::with_capacity(files.len());
    for ((rel, _, st), d) in files.iter().zip(out) {
        let d = d.ok_or_else(|| io::Error::other("file digest missing"))?;
        if st.mtime.0 < now - RACY_SECONDS && st.ctime.0 < now - RACY_SECONDS {
            index.entries.insert(rel.clone(), (*st, d));
        }
        digests.push(d);
    }
    Ok((digests, index, hashed))
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
        let (d1, idx, hashed) = digest_files(&files, &ContextIndex::default()).unwrap();
        assert_eq!(hashed, 2);
        let path = t.path().join("idx");
        idx.save(&path).unwrap();
        let loaded = ContextIndex::load(&path);
        // ctime is "now" on a freshly written file, so nothing is trusted yet: racy entries are
        // re-hashed, never reused.
        let (d2, _, hashed2) = digest_files(&files, &loaded).unwrap();
        assert_eq!(d1, d2);
        assert_eq!(hashed2, 2);
    }

    #[test]
    fn stamps_vouch_only_for_unchanged_files() {
        let mut idx = ContextIndex::default();
        let st = Stamp { size: 1, mtime: (1, 0), ctime: (1, 0), ino: 7, dev: 1 };
        idx.entries.insert(PathBuf::from("f"), (st, [9; 32]));
        assert_eq!(idx.lookup(Path::new("f"), &st), Some([9; 32]));
        let moved = Stamp { ino: 8, ..st };
        assert_eq!(idx.lookup(Path::new("f"), &moved), None);
        let bytes = {
            let t = tempfile::tempdir().unwrap();
            let p = t.path().join("i");
            idx.save(&p).unwrap();
            std::fs::read(&p).unwrap()
        };
        assert_eq!(ContextIndex::parse(&bytes).unwrap().lookup(Path::new("f"), &st), Some([9; 32]));
        assert!(ContextIndex::parse(b"garbage").is_none());
        let mut truncated = bytes.clone();
        truncated.truncate(bytes.len() - 5);
        assert!(ContextIndex::parse(&truncated).is_none(), "a torn index must not be trusted");
    }
}
