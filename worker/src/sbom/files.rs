//! The regular files of the image, with their SHA-1 and SHA-256, hashed in parallel and
//! streamed (a file is never read into memory whole).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use sha1::Digest as _;

use super::{open_nofollow, SbomError};
use crate::merged::MergedView;

/// A regular file of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FileEntry {
    /// Its path relative to the root, `/`-separated (`usr/bin/bash`).
    pub(super) path: String,
    pub(super) sha1: [u8; 20],
    pub(super) sha256: [u8; 32],
}

/// Most threads hashing at once.
const MAX_THREADS: usize = 8;
const BUF: usize = 128 << 10;

/// Every regular file of `view`, sorted by path.
pub(super) fn hash_all(view: &MergedView) -> Result<Vec<FileEntry>, SbomError> {
    let mut found = Vec::new();
    walk(view, &mut PathBuf::new(), &mut found)?;
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<FileEntry, SbomError>>>> =
        Mutex::new(std::iter::repeat_with(|| None).take(found.len()).collect());
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, MAX_THREADS);
    std::thread::scope(|s| {
        for _ in 0..threads.min(found.len()) {
            s.spawn(|| {
                let mut buf = vec![0u8; BUF];
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((rel, host)) = found.get(i) else { break };
                    let r = hash(host, &mut buf)
                        .map(|(sha1, sha256)| FileEntry { path: rel.clone(), sha1, sha256 })
                        .map_err(|source| SbomError::Io { path: rel.clone(), source });
                    let failed = r.is_err();
                    if let Ok(mut all) = results.lock() {
                        all[i] = Some(r);
                    }
                    if failed {
                        // Stop handing out work: the scan fails anyway.
                        next.store(found.len(), Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut out = Vec::with_capacity(results.len());
    for r in results.into_iter().flatten() {
        out.push(r?);
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Collects (relative path, host path) of the regular files under `dir`.
fn walk(view: &MergedView, dir: &mut PathBuf, out: &mut Vec<(String, PathBuf)>) -> Result<(), SbomError> {
    let entries = view.read_dir(dir).map_err(|source| SbomError::Io { path: display(dir), source })?;
    for (name, found) in entries {
        dir.push(&name);
        let ft = found.meta.file_type();
        if ft.is_dir() {
            walk(view, dir, out)?;
        } else if ft.is_file() {
            out.push((display(dir), found.host_path));
        }
        dir.pop();
    }
    Ok(())
}

fn display(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn hash(host: &Path, buf: &mut [u8]) -> std::io::Result<([u8; 20], [u8; 32])> {
    let mut f = open_nofollow(host)?;
    let (mut s1, mut s256) = (sha1::Sha1::new(), sha2::Sha256::new());
    loop {
        let n = match f.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        s1.update(&buf[..n]);
        s256.update(&buf[..n]);
    }
    Ok((s1.finalize().into(), s256.finalize().into()))
}
