//! COPY from the build context, again: files an earlier run of the same COPY already wrote with
//! the same content and attributes are hard-linked from that run's snapshot instead of copied.
//!
//! After a COPY from the context, a memo beside the context's index
//! (`<index>.copies/<sha256 of the action>`) records the diff directory's identity (device,
//! inode: the directory keeps them when the store publishes it under its id) and, for every
//! file whose content digest the context digest vouched for, its path in the diff, digest,
//! size, attributes and inode. The next run of that COPY finds the published diff by its
//! identity among the store's snapshots, and links a file when the context's digest, size and
//! attributes equal the memo's and the old file is still that inode with that size and those
//! attributes. Anything else is copied.
//!
//! Why sharing inodes is safe: published snapshots are never written (RUN steps see them as
//! overlay lower layers, whose files are copied up before any change; bind mounts and cache
//! seeds get copies, never links: `copy_out` does not reuse). A layer tar never shows the
//! sharing: `pack` turns a second path to an inode into a hardlink entry only within one diff,
//! and a COPY never links one inode at two of its paths (`used`). Removing either snapshot
//! leaves the other's files intact.
//!
//! Memo format: a header line, a line `dev ino` of the diff, then per file
//! `path NUL hexdigest size mode uid gid mtime_s mtime_ns ino NUL`. A memo that does not parse,
//! or whose diff is gone, is ignored.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fs::Metadata;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rbuild_solver::ir::FileAction;
use sha2::{Digest as _, Sha256};

use super::jobs::FileJob;
use crate::context::ContextEntries;
use crate::context_index::Stamp;
use crate::fsmeta::Attrs;

const HEADER: &str = "rbuild-copy-memo v1\n";

/// What a memo says about one file of an earlier COPY's diff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemoEntry {
    pub digest: [u8; 32],
    pub size: u64,
    pub attrs: Attrs,
    pub ino: u64,
}

/// A file to record in the new memo once written.
#[derive(Debug)]
pub(crate) struct Remember {
    target: PathBuf,
    digest: [u8; 32],
    size: u64,
    attrs: Attrs,
}

/// Reuse state for one COPY action from the context.
#[derive(Debug)]
pub(super) struct Reuse<'a> {
    /// The walk of the context that gave the COPY its cache key.
    walk: &'a ContextEntries,
    memo: PathBuf,
    /// The earlier run's published diff and its memo entries by path in the diff.
    old: Option<(PathBuf, HashMap<PathBuf, MemoEntry>)>,
    /// Old inodes linked so far (each at most once per COPY).
    used: RefCell<HashSet<u64>>,
    /// What this run wrote, for its memo.
    written: RefCell<Vec<(PathBuf, MemoEntry)>>,
}

impl<'a> Reuse<'a> {
    /// Reuse for `action` copying from a context walked (`walk`) with the store's index (else
    /// `None`: plain copies).
    pub(super) fn for_copy(walk: &'a ContextEntries, action: &FileAction) -> Option<Reuse<'a>> {
        let index = walk.index()?;
        let key = hex::encode(Sha256::digest(format!("{action:?}").as_bytes()));
        let mut dir = index.as_os_str().to_owned();
        dir.push(".copies");
        let memo = PathBuf::from(dir).join(key);
        let old = load(&memo).and_then(|(dev, ino, entries)| {
            let snapshots = index.parent()?.parent()?.join("snapshots");
            find_diff(&snapshots, dev, ino).map(|d| (d, entries))
        });
        Some(Reuse { walk, memo, old, used: RefCell::default(), written: RefCell::default() })
    }

    /// Decides how `job` (the context file `src_rel`, stat `meta`, going to `target` in the
    /// diff) is written: linked from the earlier run when it is the same file, and remembered
    /// when its digest can be trusted.
    pub(super) fn plan(&self, job: &mut FileJob, src_rel: &Path, meta: &Metadata, target: &Path) {
        let stamp = Stamp::of(meta);
        let Some((seen, digest)) = self.walk.file(src_rel) else { return };
        if seen != stamp {
            return; // changed since it was digested
        }
        // A file modified within the racy window could change again unseen: copy it, and
        // never vouch for it.
        if !stamp.is_settled(self.walk.digested_at()) {
            return;
        }
        let size = meta.size();
        job.remember = Some(Remember { target: target.to_owned(), digest, size, attrs: job.attrs });
        let Some((dir, entries)) = &self.old else { return };
        let Some(e) = entries.get(target) else { return };
        if e.digest == digest && e.size == size && e.attrs == job.attrs && self.used.borrow_mut().insert(e.ino) {
            job.link_from = Some((dir.join(target), e.clone()));
        }
    }

    /// Records files written (with the inode now at their destination).
    pub(super) fn written(&self, done: Vec<(Remember, u64)>) {
        let mut w = self.written.borrow_mut();
        for (r, ino) in done {
            w.push((r.target, MemoEntry { digest: r.digest, size: r.size, attrs: r.attrs, ino }));
        }
    }

    /// Writes the memo for `diff`, the directory this COPY wrote into.
    pub(super) fn save(&self, diff: &Path) -> io::Result<()> {
        let md = std::fs::symlink_metadata(diff)?;
        let written = self.written.borrow();
        let mut out = Vec::with_capacity(64 + written.len() * 128);
        out.extend_from_slice(HEADER.as_bytes());
        out.extend_from_slice(format!("{} {}\n", md.dev(), md.ino()).as_bytes());
        for (path, e) in written.iter() {
            let a = &e.attrs;
            out.extend_from_slice(path.as_os_str().as_bytes());
            out.push(0);
            out.extend_from_slice(
                format!(
                    "{} {} {} {} {} {} {} {}",
                    hex::encode(e.digest),
                    e.size,
                    a.mode,
                    a.uid,
                    a.gid,
                    a.mtime.0,
                    a.mtime.1,
                    e.ino
                )
                .as_bytes(),
            );
            out.push(0);
        }
        let dir = self.memo.parent().ok_or_else(|| io::Error::other("memo has no directory"))?;
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".tmp-{}", crate::unique_suffix()));
        std::fs::write(&tmp, &out)?;
        std::fs::rename(&tmp, &self.memo).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

/// Parses a memo: the diff's (dev, ino) and the entries by path.
fn load(path: &Path) -> Option<(u64, u64, HashMap<PathBuf, MemoEntry>)> {
    let bytes = std::fs::read(path).ok()?;
    let rest = bytes.strip_prefix(HEADER.as_bytes())?;
    let nl = rest.iter().position(|b| *b == b'\n')?;
    let (dev, ino) = std::str::from_utf8(&rest[..nl]).ok()?.split_once(' ')?;
    let (dev, ino) = (dev.parse().ok()?, ino.parse().ok()?);
    let mut entries = HashMap::new();
    let mut fields = rest[nl + 1..].split(|b| *b == 0);
    while let Some(p) = fields.next() {
        if p.is_empty() {
            break;
        }
        let v: Vec<&str> = std::str::from_utf8(fields.next()?).ok()?.split(' ').collect();
        if v.len() != 8 {
            return None;
        }
        let mut digest = [0u8; 32];
        hex::decode_to_slice(v[0], &mut digest).ok()?;
        let attrs = Attrs {
            mode: v[2].parse().ok()?,
            uid: v[3].parse().ok()?,
            gid: v[4].parse().ok()?,
            mtime: (v[5].parse().ok()?, v[6].parse().ok()?),
        };
        let e = MemoEntry { digest, size: v[1].parse().ok()?, attrs, ino: v[7].parse().ok()? };
        entries.insert(PathBuf::from(std::ffi::OsStr::from_bytes(p)), e);
    }
    Some((dev, ino, entries))
}

/// The published `snapshots/<id>/diff` directory with identity (`dev`, `ino`), if any.
fn find_diff(snapshots: &Path, dev: u64, ino: u64) -> Option<PathBuf> {
    for entry in std::fs::read_dir(snapshots).ok()?.flatten() {
        let diff = entry.path().join("diff");
        if let Ok(m) = std::fs::symlink_metadata(&diff) {
            if m.is_dir() && m.dev() == dev && m.ino() == ino {
                return Some(diff);
            }
        }
    }
    None
}
