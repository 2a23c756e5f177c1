//! Per-process temp areas under `tmp/`.
//!
//! Each open store owns `tmp/<pid>-<nanos>/`, and holds an exclusive flock on the sibling
//! `tmp/<pid>-<nanos>.lock` for its life. A lock file that can be locked belongs to a dead
//! process: its area is stale. Creating an area (lock file, lock, directory) and reaping stale
//! ones both happen under a flock on the `tmp/` directory itself, so a reaper never sees a
//! lock file that its owner has not locked yet.
//!
//! Reaping renames each stale entry into the reaper's own area before deleting it, so the guard
//! is held only for renames, and a reaper killed mid-delete leaves garbage in its own (now
//! stale) area, for the next reaper.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};
use crate::snapshots::remove_tree;
use crate::store::unique_tmp_path;

/// A process's temp area: the directory and the held lock on its lock file. Dropping it
/// removes both (a process that dies instead leaves them to the next reaper).
#[derive(Debug)]
pub(crate) struct TmpArea {
    pub(crate) dir: PathBuf,
    lock: File,
}

impl Drop for TmpArea {
    fn drop(&mut self) {
        // The area first, while its lock still says it is live; then the lock file. Whatever
        // is left without a lock file is an orphan the next reaper removes.
        remove_tree(&self.dir);
        let _ = std::fs::remove_file(lock_path_of(&self.dir));
        let _ = self.lock.unlock();
    }
}

fn lock_path_of(area: &Path) -> PathBuf {
    let mut name = area.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Holds the flock on `tmp/` while alive.
struct Guard(File);

impl Guard {
    fn take(tmp_root: &Path) -> Result<Guard> {
        let f = File::open(tmp_root).at(tmp_root)?;
        f.lock().at(tmp_root)?;
        Ok(Guard(f))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Creates this process's temp area, and moves stale areas of dead processes into it; returns
/// the area and what was moved in (the caller deletes it with [`remove_moved`]).
pub(crate) fn create_area(tmp_root: &Path) -> Result<(TmpArea, Vec<PathBuf>)> {
    let guard = Guard::take(tmp_root)?;
    let pid = std::process::id();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let name = format!("{pid}-{nanos:x}");
    let dir = tmp_root.join(&name);
    let lock_path = lock_path_of(&dir);
    let lock = File::create(&lock_path).at(&lock_path)?;
    lock.lock().at(&lock_path)?;
    std::fs::create_dir(&dir).at(&dir)?;
    let area = TmpArea { dir, lock };
    let moved = scan_locked(tmp_root, &area.dir, true);
    drop(guard);
    Ok((area, moved))
}

/// Stale entries under `tmp/` (areas of dead processes, and anything that is not an area or a
/// lock file). With `reap`, they are moved into `own` (the caller's area) and the returned paths
/// are where they now are; otherwise the paths are where they are found.
pub(crate) fn scan(tmp_root: &Path, own: &Path, reap: bool) -> Result<Vec<PathBuf>> {
    let _guard = Guard::take(tmp_root)?;
    Ok(scan_locked(tmp_root, own, reap))
}

/// Deletes entries moved into an area by [`scan`] or [`create_area`], best effort.
pub(crate) fn remove_moved(moved: &[PathBuf]) {
    for p in moved {
        remove_tree(p);
        let _ = std::fs::remove_file(p);
    }
}

fn scan_locked(tmp_root: &Path, own: &Path, reap: bool) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(tmp_root) else { return Vec::new() };
    let mut names: Vec<_> = rd.flatten().map(|e| e.file_name()).collect();
    names.sort();
    let own_name = own.file_name();
    let mut stale = Vec::new();
    for name in &names {
        let path = tmp_root.join(name);
        if Some(name.as_os_str()) == own_name || (is_lock_name(name) && path.with_extension("") == own) {
            continue;
        }
        let dead = if is_lock_name(name) {
            // Locking it succeeds only if no live process holds it; our probe is released
            // when `f` drops, after the area is gone.
            let Ok(f) = File::options().write(true).open(&path) else { continue };
            if f.try_lock().is_err() {
                continue;
            }
            // The area first, then its lock file: a lock file without an area is harmless.
            let area = path.with_extension("");
            if area.symlink_metadata().is_ok() {
                stale.push(area);
            }
            true
        } else {
            let lock_file = tmp_root.join(format!("{}.lock", name.to_string_lossy()));
            // An area whose lock file exists is judged through its lock file.
            !lock_file.exists()
        };
        if dead {
            stale.push(path);
        }
    }
    // An area sorts before its own lock file (its name is a prefix), so it is moved first.
    stale.sort();
    stale.dedup();
    if !reap {
        return stale;
    }
    let mut moved = Vec::new();
    for p in stale {
        let dest = unique_tmp_path(own, "reaped");
        if std::fs::rename(&p, &dest).is_ok() {
            moved.push(dest);
        }
    }
    moved
}

fn is_lock_name(name: &OsStr) -> bool {
    Path::new(name).extension().is_some_and(|e| e == "lock")
}
