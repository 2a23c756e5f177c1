//! The store-wide lock (`v1/lock`): builds share it for their whole life, garbage collection
//! holds it alone (flock(2), released by the kernel when the process dies, even by SIGKILL).

use std::fs::{File, TryLockError};
use std::path::Path;

use crate::error::{Error, Result};

/// How an open [`Store`](crate::Store) shares the store with other processes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LockMode {
    /// Builds and readers: any number at once. Excludes a running garbage collection.
    #[default]
    Shared,
    /// Garbage collection and repairs: no other process has the store open. The holder must not
    /// open the store again (in any mode) before dropping it: that would wait for itself.
    Exclusive,
}

/// How to open a store. `StoreOptions::default()` is what a build wants.
///
/// A command that should say why it waits tries first, then waits:
///
/// ```no_run
/// use rbuild_cache::{Error, LockMode, Store, StoreOptions};
/// let opts = StoreOptions { lock: LockMode::Exclusive, wait: false, ..StoreOptions::default() };
/// let store = match Store::open_with("/var/lib/rbuild", &opts) {
///     Err(Error::Locked { .. }) => {
///         eprintln!("waiting for running builds to finish...");
///         Store::open_with("/var/lib/rbuild", &StoreOptions { wait: true, ..opts })?
///     }
///     other => other?,
/// };
/// # Ok::<(), Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// fsync a blob before publishing it, and the directory after publishing a record, an
    /// image name, snapshot metadata or a snapshot, so that a power loss cannot leave a name
    /// pointing at lost data. A killed process needs none of this (renames suffice). Default
    /// true.
    pub durable: bool,
    /// Shared (builds) or exclusive (garbage collection).
    pub lock: LockMode,
    /// Wait for a conflicting lock (default) or fail at once with [`Error::Locked`].
    pub wait: bool,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions { durable: true, lock: LockMode::Shared, wait: true }
    }
}

/// Takes the store lock on `file` (opened from `path`).
pub(crate) fn acquire(file: &File, path: &Path, mode: LockMode, wait: bool) -> Result<()> {
    let io = |source| Error::Io { path: path.to_owned(), source };
    match (mode, wait) {
        (LockMode::Shared, true) => file.lock_shared().map_err(io),
        (LockMode::Exclusive, true) => file.lock().map_err(io),
        (mode, false) => {
            let tried = match mode {
                LockMode::Shared => file.try_lock_shared(),
                LockMode::Exclusive => file.try_lock(),
            };
            match tried {
                Ok(()) => Ok(()),
                Err(TryLockError::WouldBlock) => Err(Error::Locked { path: path.to_owned(), wanted: mode }),
                Err(TryLockError::Error(e)) => Err(io(e)),
            }
        }
    }
}
