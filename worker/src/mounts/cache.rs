//! Persistent directories for `RUN --mount=type=cache`, under the store:
//!
//! ```text
//! <store>/cache-mounts/<sha256(id)>/
//!   create.lock       held while an instance is created (seeded, owner and mode applied)
//!   0/  0.lock        instance 0: `shared` users hold 0.lock shared, `locked` users exclusive
//!   1/  1.lock ...    more instances, made for concurrent `private` users
//! ```
//!
//! A `private` user takes the first instance whose lock is free, creating it if needed. An
//! instance appears by rename once complete, so a killed build never leaves a half-seeded one.
//! Their contents are never part of a layer (they are bind mounts) or of a cache key (the op
//! names only the id).

use std::fs::File;
use std::path::{Path, PathBuf};

use rbuild_solver::ir::CacheSharing;
use sha2::{Digest as _, Sha256};

use crate::copy::{CopySource, FileWriter};
use crate::error::WorkerError;
use crate::merged::MergedView;

/// A cache directory in use; the lock is released on drop.
#[derive(Debug)]
pub(crate) struct CacheLease {
    /// The directory to mount.
    pub dir: PathBuf,
    _lock: File,
}

/// How a new cache directory starts out.
#[derive(Debug)]
pub(crate) struct CacheInit<'a> {
    /// Contents to copy in (`from=` and its path), resolved.
    pub seed: Option<(&'a CopySource<'a>, PathBuf)>,
    /// Owner and mode of the directory.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Mode.
    pub mode: u32,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> WorkerError + '_ {
    move |source| WorkerError::Io { path: path.to_owned(), source }
}

fn open_lock(path: &Path) -> Result<File, WorkerError> {
    File::options().create(true).truncate(false).write(true).open(path).map_err(io(path))
}

/// The root of all cache mounts of the store at `store_root`.
pub(crate) fn cache_root(store_root: &Path) -> PathBuf {
    store_root.join("cache-mounts")
}

/// Takes the cache `id` for one step, blocking while a `locked` user (or, for `locked`, any
/// user) holds it.
pub(crate) fn acquire(
    store_root: &Path,
    id: &str,
    sharing: CacheSharing,
    init: &CacheInit<'_>,
) -> Result<CacheLease, WorkerError> {
    let base = cache_root(store_root).join(hex::encode(Sha256::digest(id.as_bytes())));
    std::fs::create_dir_all(&base).map_err(io(&base))?;
    let lock_of = |n: u32| base.join(format!("{n}.lock"));
    let (n, lock) = match sharing {
        CacheSharing::Shared => {
            let l = open_lock(&lock_of(0))?;
            l.lock_shared().map_err(io(&lock_of(0)))?;
            (0, l)
        }
        CacheSharing::Locked => {
            let l = open_lock(&lock_of(0))?;
            l.lock().map_err(io(&lock_of(0)))?;
            (0, l)
        }
        CacheSharing::Private => {
            let mut n = 0;
            loop {
                let l = open_lock(&lock_of(n))?;
                if l.try_lock().is_ok() {
                    break (n, l);
                }
                n += 1;
            }
        }
    };
    let dir = ensure_instance(&base, n, init)?;
    Ok(CacheLease { dir, _lock: lock })
}

fn ensure_instance(base: &Path, n: u32, init: &CacheInit<'_>) -> Result<PathBuf, WorkerError> {
    let dir = base.join(n.to_string());
    if dir.is_dir() {
        return Ok(dir);
    }
    let create = base.join("create.lock");
    let guard = open_lock(&create)?;
    guard.lock().map_err(io(&create))?;
    if dir.is_dir() {
        return Ok(dir);
    }
    let tmp = base.join(format!("{n}.new"));
    if tmp.exists() {
        // Left by a build that died while creating it (we hold the create lock).
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir(&tmp).map_err(io(&tmp))?;
    if let Some((src, rel)) = &init.seed {
        let empty = MergedView::default();
        let w = FileWriter { base: &empty, diff: &tmp, limits: Default::default() };
        w.copy_out(src, rel)?;
    }
    std::os::unix::fs::lchown(&tmp, Some(init.uid), Some(init.gid)).map_err(io(&tmp))?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(init.mode & 0o7777))
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, &dir).map_err(io(&dir))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{ContextDir, IgnoreMatcher};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn init() -> CacheInit<'static> {
        let (uid, gid) = crate::testutil::own_ids();
        CacheInit { seed: None, uid, gid, mode: 0o755 }
    }

    #[test]
    fn shared_reuses_private_splits_locked_excludes() {
        let t = tempfile::tempdir().unwrap();
        let a = acquire(t.path(), "go-build", CacheSharing::Shared, &init()).unwrap();
        std::fs::write(a.dir.join("obj"), "1").unwrap();
        let b = acquire(t.path(), "go-build", CacheSharing::Shared, &init()).unwrap();
        assert_eq!(a.dir, b.dir);
        assert_eq!(std::fs::read(b.dir.join("obj")).unwrap(), b"1", "contents persist");
        // Shared users hold instance 0, so a private user gets a new one.
        let p = acquire(t.path(), "go-build", CacheSharing::Private, &init()).unwrap();
        assert_ne!(p.dir, a.dir);
        assert!(!p.dir.join("obj").exists());
        drop((a, b));
        // Once free, a private user gets instance 0 back.
        let p0 = acquire(t.path(), "go-build", CacheSharing::Private, &init()).unwrap();
        assert_eq!(std::fs::read(p0.dir.join("obj")).unwrap(), b"1");
        // A locked user waits for p0 to be released.
        let root = t.path().to_owned();
        let waiter = std::thread::spawn(move || {
            let start = std::time::Instant::now();
            let l = acquire(&root, "go-build", CacheSharing::Locked, &init()).unwrap();
            (start.elapsed(), l.dir)
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        let p0_dir = p0.dir.clone();
        drop(p0);
        let (waited, dir) = waiter.join().unwrap();
        assert!(waited >= std::time::Duration::from_millis(250), "{waited:?}");
        assert_eq!(dir, p0_dir);
        // Different ids are different directories.
        let other = acquire(t.path(), "npm", CacheSharing::Shared, &init()).unwrap();
        assert_ne!(other.dir.parent(), p0_dir.parent());
    }

    #[test]
    fn new_cache_is_seeded_with_owner_and_mode() {
        let t = tempfile::tempdir().unwrap();
        let ctx_dir = t.path().join("ctx");
        std::fs::create_dir_all(ctx_dir.join("seed/sub")).unwrap();
        std::fs::write(ctx_dir.join("seed/sub/f"), "seeded").unwrap();
        let ctx = ContextDir { root: ctx_dir, ignore: IgnoreMatcher::default() };
        let src = CopySource::Context { dir: &ctx, walk: None };
        let store = t.path().join("store");
        // Giving the directory another owner needs root; otherwise keep our own ids.
        let root = nix::unistd::geteuid().is_root();
        let (uid, gid) =
            if root { (1234, 5678) } else { (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw()) };
        let init = CacheInit { seed: Some((&src, PathBuf::from("seed"))), uid, gid, mode: 0o750 };
        let lease = acquire(&store, "c", CacheSharing::Shared, &init).unwrap();
        assert_eq!(std::fs::read(lease.dir.join("sub/f")).unwrap(), b"seeded");
        let md = std::fs::metadata(&lease.dir).unwrap();
        assert_eq!((md.uid(), md.gid()), (uid, gid));
        assert_eq!(md.permissions().mode() & 0o7777, 0o750);
        // Seeding happens only at creation.
        std::fs::remove_file(lease.dir.join("sub/f")).unwrap();
        drop(lease);
        let again = acquire(&store, "c", CacheSharing::Shared, &init).unwrap();
        assert!(!again.dir.join("sub/f").exists());
    }
}
