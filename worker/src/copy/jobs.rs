//! Writing a COPY's regular files: the walk of a source decides what goes where (creating
//! directories, symlinks and devices as it goes) and queues the files; [`run`] then writes them
//! on a few threads, and the directories get their attributes once their contents exist.
//!
//! A file is written with one `open` of each side, an in-kernel copy (`copy_file_range`) and
//! `fchown`/`fchmod`/`futimens` on the new descriptor, or hard-linked from an identical file an
//! earlier COPY of the same context wrote (see `reuse`).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use rustix::fs::{Gid, Mode, OFlags, Timespec, Timestamps, Uid, UTIME_OMIT};

use super::reuse::{MemoEntry, Remember};
use crate::fsmeta::Attrs;

/// A linked inode is given up on (copied instead) once it has this many names: ext4 allows
/// 65000.
const MAX_LINKS: u64 = 60_000;

/// Below this many files, threads cost more than they save.
const PARALLEL_MIN: usize = 16;

/// Threads take whole runs of files of one directory (creating files in one directory from two
/// threads makes them queue on its lock, and the kernel spins while it waits), cut at this many
/// files or bytes so that a big directory still spreads.
const RUN_FILES: usize = 512;
const RUN_BYTES: u64 = 32 << 20;

/// One regular file to write.
#[derive(Debug)]
pub(super) struct FileJob {
    /// The source file on the host.
    pub src: PathBuf,
    /// Where it goes, on the host (inside the diff; must not exist yet).
    pub dst: PathBuf,
    /// Its attributes.
    pub attrs: Attrs,
    /// Its size when the walk saw it (to share work out).
    pub size: u64,
    /// A file with the same content and attributes in an earlier snapshot, to link instead.
    pub link_from: Option<(PathBuf, MemoEntry)>,
    /// Remember what was written (for the next COPY's reuse).
    pub remember: Option<Remember>,
}

/// What a source's walk left to do.
#[derive(Debug, Default)]
pub(super) struct Jobs {
    /// Regular files, in walk order.
    pub files: Vec<FileJob>,
    /// Directories whose attributes are applied once every file is written, in walk order
    /// (children before parents).
    pub dirs: Vec<(PathBuf, Attrs)>,
}

/// Writes every file (on up to one thread per core) and returns, for each job that asked to be
/// remembered, its memo slot and the inode now at its destination. The first error stops the
/// rest and is returned with the path it concerns.
pub(super) fn run(files: Vec<FileJob>) -> Result<Vec<(Remember, u64)>, (PathBuf, io::Error)> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
    if threads == 1 || files.len() < PARALLEL_MIN {
        let mut out = Vec::new();
        for job in files {
            let ino = write_one(&job).map_err(|e| (job.dst.clone(), e))?;
            if let Some(r) = job.remember {
                out.push((r, ino));
            }
        }
        return Ok(out);
    }
    let runs = runs(&files);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<(usize, io::Result<u64>)>> = Mutex::new(Vec::with_capacity(files.len()));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut mine = Vec::new();
                'runs: while !failed.load(Ordering::Relaxed) {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(run) = runs.get(k) else { break };
                    for i in run.clone() {
                        let r = write_one(&files[i]);
                        let bad = r.is_err();
                        mine.push((i, r));
                        if bad {
                            failed.store(true, Ordering::Relaxed);
                            break 'runs;
                        }
                    }
                }
                if let Ok(mut all) = results.lock() {
                    all.extend(mine);
                }
            });
        }
    });
    let mut results = results.into_inner().map_err(|_| (PathBuf::new(), io::Error::other("copy worker panicked")))?;
    results.sort_by_key(|(i, _)| *i);
    let mut inos = vec![None; files.len()];
    for (i, r) in results {
        inos[i] = Some(r.map_err(|e| (files[i].dst.clone(), e))?);
    }
    let mut out = Vec::new();
    for (job, ino) in files.into_iter().zip(inos) {
        let ino = ino.ok_or_else(|| (job.dst.clone(), io::Error::other("file was not written")))?;
        if let Some(r) = job.remember {
            out.push((r, ino));
        }
    }
    Ok(out)
}

/// Consecutive jobs in one directory, as index ranges (see [`RUN_FILES`]).
fn runs(files: &[FileJob]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, job) in files.iter().enumerate() {
        let same_dir = i > start && files[i - 1].dst.parent() == job.dst.parent();
        if i > start && (!same_dir || i - start >= RUN_FILES || bytes >= RUN_BYTES) {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += job.size;
    }
    if start < files.len() {
        out.push(start..files.len());
    }
    out
}

/// Writes one file; returns the inode at its destination (0 when not asked for).
fn write_one(job: &FileJob) -> io::Result<u64> {
    if let Some((old, expect)) = &job.link_from {
        if let Some(ino) = link_same(old, &job.dst, expect, &job.attrs) {
            return Ok(ino);
        }
    }
    copy_file(&job.src, &job.dst, &job.attrs, job.remember.is_some())
}

/// Links `old` at `dst` if it is still exactly what the memo says (same inode, size and
/// attributes); `None` when it is not (or cannot be linked), and then nothing was done.
fn link_same(old: &Path, dst: &Path, expect: &MemoEntry, attrs: &Attrs) -> Option<u64> {
    let m = std::fs::symlink_metadata(old).ok()?;
    if !m.file_type().is_file()
        || m.ino() != expect.ino
        || m.size() != expect.size
        || Attrs::of(&m) != *attrs
        || m.nlink() >= MAX_LINKS
    {
        return None;
    }
    std::fs::hard_link(old, dst).ok()?;
    Some(m.ino())
}

/// Copies `src` (not following a symlink) to the new file `dst` with `attrs`.
fn copy_file(src: &Path, dst: &Path, attrs: &Attrs, want_ino: bool) -> io::Result<u64> {
    let from = rustix::fs::open(src, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
    let to = rustix::fs::open(
        dst,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    let (mut from, mut to) = (std::fs::File::from(from), std::fs::File::from(to));
    // File to file: copy_file_range in the kernel where it can, plain reads and writes otherwise.
    io::copy(&mut from, &mut to)?;
    // Owner first: chown clears setuid/setgid, which the mode then sets.
    rustix::fs::fchown(&to, Some(Uid::from_raw(attrs.uid)), Some(Gid::from_raw(attrs.gid)))?;
    rustix::fs::fchmod(&to, Mode::from_raw_mode(attrs.mode & 0o7777))?;
    let times = Timestamps {
        last_access: Timespec { tv_sec: 0, tv_nsec: UTIME_OMIT },
        last_modification: Timespec { tv_sec: attrs.mtime.0, tv_nsec: attrs.mtime.1 },
    };
    rustix::fs::futimens(&to, &times)?;
    if want_ino {
        return Ok(rustix::fs::fstat(&to)?.st_ino);
    }
    Ok(0)
}
