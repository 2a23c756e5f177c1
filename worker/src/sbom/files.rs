//! The regular files of the image, with their SHA-1 and SHA-256, hashed in parallel and
//! streamed (a file is never read into memory whole).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

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
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, MAX_THREADS);
    let worker = || -> Result<Vec<FileEntry>, SbomError> {
        let mut buf = vec![0u8; BUF];
        let mut done = Vec::new();
        while let Some((rel, host)) = found.get(next.fetch_add(1, Ordering::Relaxed)) {
            match hash(host, &mut buf) {
                Ok((sha1, sha256)) => done.push(FileEntry { path: rel.clone(), sha1, sha256 }),
                Err(source) => {
                    // Stop handing out work: the scan fails anyway.
                    next.store(found.len(), Ordering::Relaxed);
                    return Err(SbomError::Io { path: rel.clone(), source });
                }
            }
        }
        Ok(done)
    };
    let per_thread: Vec<Result<Vec<FileEntry>, SbomError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.min(found.len())).map(|_| s.spawn(worker)).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    let mut out = Vec::with_capacity(found.len());
    for r in per_thread {
        out.extend(r?);
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    // Names that are not UTF-8 are shown lossily: two may look alike (then they also need
    // the same content to be merged, and so to share an SPDX id).
    out.dedup_by(|a, b| a.path == b.path && a.sha256 == b.sha256);
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
