//! Rootless: rbuild started by an unprivileged user runs entirely inside a user namespace
//! of its own, where it is root, as BuildKit rootless does under RootlessKit and buildah
//! under `buildah unshare`. [`enter_user_namespace`] is called once, first thing in `main`
//! (before any thread exists: `unshare(CLONE_NEWUSER)` refuses a multi-threaded caller);
//! everything after (pulling, unpacking, the store, every sandbox) happens inside.
//!
//! - **Id map.** With ranges for the user in `/etc/subuid` and `/etc/subgid` and the
//!   setuid helpers `newuidmap`/`newgidmap` (Debian's `uidmap`), the caller is 0 and the
//!   range follows from 1: images with other owners unpack and build faithfully. Those
//!   helpers must run outside the namespace (a setuid binary gains nothing inside it), so a
//!   child forked *before* the `unshare` runs them for our pid. Otherwise (or should they
//!   fail) the map is the single id: the caller is 0 and no other id exists. Then layers are unpacked without
//!   their owners (every file belongs to 0 on disk; the pulled layers themselves, with their
//!   owners, are what the image keeps), and a step that switches to or chowns to another id
//!   fails, as in rootless Docker without subordinate ids.
//! - **Store.** `$XDG_DATA_HOME/rbuild` (decided by the caller before entering). Files
//!   owned by subordinate ids belong to those ids on the host: remove the store with
//!   `rbuild prune`, not `rm` as the user. The same holds for `type=local` outputs, which
//!   keep the image's owners (BuildKit's client writes them as the user instead).
//! - **fuse-overlayfs** (for kernels before 5.11) is not used: the copy fallback serves.
//! - **Overlay.** Linux 5.11+ mounts overlayfs in a user namespace (with `userxattr`, so
//!   opaque directories are `user.overlay.opaque`); elsewhere the copy fallback runs
//!   (`RBUILD_SNAPSHOTTER`), which needs no mount but the bind.
//! - **Network.** No veth can be made: `RUN` shares the host's network namespace (BuildKit
//!   rootless shares RootlessKit's); `--network=none` still gets an empty namespace.
//! - **cgroups.** Limits need a cgroup subtree delegated to the user; without one a step
//!   with limits fails, saying so.
//! - **/dev, /sys.** Device nodes are host nodes bound in (never `mknod`), and `/sys` is a
//!   bind of the host's when sysfs cannot be mounted (it belongs to the host's network
//!   namespace).

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::sched::CloneFlags;
use nix::sys::wait::WaitStatus;
use nix::unistd::{ForkResult, Gid, Uid};

/// How the caller's ids map into rbuild's user namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdMap {
    /// 0 is the caller, 1..=count are the subordinate ids from `start` (`/etc/subuid`,
    /// `/etc/subgid`), mapped by `newuidmap`/`newgidmap`.
    Subordinate {
        /// First subordinate uid.
        uid_start: u32,
        /// How many.
        uid_count: u32,
        /// First subordinate gid.
        gid_start: u32,
        /// How many.
        gid_count: u32,
    },
    /// 0 is the caller; no other id exists.
    Single,
}

/// The namespace this process runs in, once entered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rootless {
    /// The caller's uid and gid on the host.
    pub host_uid: u32,
    /// The caller's gid on the host.
    pub host_gid: u32,
    /// The id map.
    pub map: IdMap,
    /// Why there is no subordinate map, when there is none.
    pub single_reason: Option<String>,
}

impl Rootless {
    /// One line for `--debug` output.
    #[must_use]
    pub fn describe(&self) -> String {
        match &self.map {
            IdMap::Subordinate { uid_start, uid_count, gid_start, gid_count } => format!(
                "rootless: user namespace, uid 0 = host uid {}, 1-{uid_count} = host {uid_start}-{}; gid 0 = \
                 host gid {}, 1-{gid_count} = host {gid_start}-{} (newuidmap/newgidmap with /etc/subuid, \
                 /etc/subgid); network shared with the host (no veth without privileges); no cgroup limits \
                 unless a subtree is delegated",
                self.host_uid,
                uid_start.saturating_add(uid_count.saturating_sub(1)),
                self.host_gid,
                gid_start.saturating_add(gid_count.saturating_sub(1)),
            ),
            IdMap::Single => format!(
                "rootless: user namespace with a single id: uid/gid 0 = host {}:{} and no other ids ({}); \
                 layers unpack without their owners, chown to other ids fails; network shared with the host \
                 (no veth without privileges); no cgroup limits unless a subtree is delegated",
                self.host_uid,
                self.host_gid,
                self.single_reason.as_deref().unwrap_or("no subordinate ids"),
            ),
        }
    }
}

/// Entering the user namespace failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RootlessError {
    /// `unshare(CLONE_NEWUSER)` failed (user namespaces disabled, or threads running).
    #[error("cannot create a user namespace")]
    Unshare(#[source] nix::Error),
    /// Writing the single-id map failed.
    #[error("cannot write {path}")]
    WriteMap {
        /// The proc file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `newuidmap`/`newgidmap` failed (they print why).
    #[error("newuidmap/newgidmap could not map the ids of /etc/subuid and /etc/subgid")]
    NewIdMap,
    /// The child that runs `newuidmap` could not be started.
    #[error("cannot start the id mapper")]
    Fork(#[source] nix::Error),
}

static CURRENT: OnceLock<Rootless> = OnceLock::new();

/// The user namespace this process entered with [`enter_user_namespace`], if it did.
#[must_use]
pub fn current() -> Option<&'static Rootless> {
    CURRENT.get()
}

/// For an unprivileged caller, moves this process into a new user namespace where it is
/// root (see the module doc); `Ok(None)` for root, which needs none. Call it before any
/// thread exists.
///
/// # Errors
///
/// When the namespace cannot be made or its ids mapped; the process is unchanged then
/// (or, should the map fail, in a namespace without a map, where nothing it needs works).
pub fn enter_user_namespace() -> Result<Option<&'static Rootless>, RootlessError> {
    let (uid, gid) = (Uid::current(), Gid::current());
    if Uid::effective().is_root() {
        return Ok(None);
    }
    let name = nix::unistd::User::from_uid(uid).ok().flatten().map(|u| u.name);
    let group = nix::unistd::Group::from_gid(gid).ok().flatten().map(|g| g.name);
    let subuid = subordinate(Path::new("/etc/subuid"), uid.as_raw(), name.as_deref());
    let subgid = subordinate(Path::new("/etc/subgid"), gid.as_raw(), name.as_deref().or(group.as_deref()));
    let helpers = find_in_path("newuidmap").zip(find_in_path("newgidmap"));
    let (map, single_reason) = match (subuid, subgid, helpers) {
        (Some((uid_start, uid_count)), Some((gid_start, gid_count)), Some(helpers)) => {
            let ranges = ((uid_start, uid_count), (gid_start, gid_count));
            match map_subordinate(uid.as_raw(), gid.as_raw(), ranges.0, ranges.1, &helpers) {
                Ok(()) => (IdMap::Subordinate { uid_start, uid_count, gid_start, gid_count }, None),
                // In the namespace already, without a map: the single id still works.
                Err(RootlessError::NewIdMap) => {
                    map_single(uid, gid)?;
                    (IdMap::Single, Some("newuidmap/newgidmap failed (see their message above)".to_owned()))
                }
                Err(e) => return Err(e),
            }
        }
        (subuid, subgid, helpers) => {
            nix::sched::unshare(CloneFlags::CLONE_NEWUSER).map_err(RootlessError::Unshare)?;
            map_single(uid, gid)?;
            let reason = match (subuid, subgid, helpers) {
                (None, _, _) => "no range for the user in /etc/subuid",
                (_, None, _) => "no range for the user in /etc/subgid",
                _ => "newuidmap/newgidmap not installed (Debian: uidmap)",
            };
            (IdMap::Single, Some(reason.to_owned()))
        }
    };
    if matches!(map, IdMap::Subordinate { .. }) {
        // Supplementary groups of the host are unmapped here (shown as nogroup): drop them.
        let _ = nix::unistd::setgroups(&[]);
    }
    let rootless = Rootless { host_uid: uid.as_raw(), host_gid: gid.as_raw(), map, single_reason };
    Ok(Some(CURRENT.get_or_init(|| rootless)))
}

/// Maps 0 to the caller in the namespace just entered (allowed to its owner without help).
fn map_single(uid: Uid, gid: Gid) -> Result<(), RootlessError> {
    write_map("/proc/self/setgroups", "deny")?;
    write_map("/proc/self/uid_map", &format!("0 {} 1", uid.as_raw()))?;
    write_map("/proc/self/gid_map", &format!("0 {} 1", gid.as_raw()))
}

fn write_map(path: &str, content: &str) -> Result<(), RootlessError> {
    std::fs::write(path, content).map_err(|source| RootlessError::WriteMap { path: path.into(), source })
}

/// `(start, count)` of the first line of `file` (`/etc/subuid` format: `user:start:count`,
/// the user by name or number) for `id`/`name`.
fn subordinate(file: &Path, id: u32, name: Option<&str>) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(file).ok()?;
    parse_subordinate(&text, id, name)
}

fn parse_subordinate(text: &str, id: u32, name: Option<&str>) -> Option<(u32, u32)> {
    text.lines().find_map(|line| {
        let mut fields = line.trim().splitn(3, ':');
        let (who, start, count) = (fields.next()?, fields.next()?, fields.next()?);
        let ours = who == id.to_string() || name.is_some_and(|n| n == who);
        let (start, count) = (start.parse::<u32>().ok()?, count.parse::<u32>().ok()?);
        (ours && count > 0).then_some((start, count))
    })
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]).map(|d| d.join(program)).find(|p| p.is_file())
}

/// Forks a child that stays in the host's namespace and, once we have unshared, runs
/// `newuidmap`/`newgidmap` for our pid.
fn map_subordinate(
    uid: u32,
    gid: u32,
    (uid_start, uid_count): (u32, u32),
    (gid_start, gid_count): (u32, u32),
    (newuidmap, newgidmap): &(PathBuf, PathBuf),
) -> Result<(), RootlessError> {
    let (ready_r, ready_w): (OwnedFd, OwnedFd) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(RootlessError::Fork)?;
    let parent = nix::unistd::getpid();
    match crate::sys::fork().map_err(RootlessError::Fork)? {
        ForkResult::Child => {
            drop(ready_w);
            let mut byte = [0u8; 1];
            let go = std::fs::File::from(ready_r).read(&mut byte).is_ok_and(|n| n == 1);
            let run = |program: &Path, id: u32, start: u32, count: u32| {
                std::process::Command::new(program)
                    .arg(parent.to_string())
                    .args(["0", &id.to_string(), "1", "1", &start.to_string(), &count.to_string()])
                    .status()
                    .is_ok_and(|s| s.success())
            };
            let ok = go && run(newuidmap, uid, uid_start, uid_count) && run(newgidmap, gid, gid_start, gid_count);
            std::process::exit(if ok { 0 } else { 1 })
        }
        ForkResult::Parent { child } => {
            drop(ready_r);
            let unshared = nix::sched::unshare(CloneFlags::CLONE_NEWUSER);
            let mut ready = std::fs::File::from(ready_w);
            if unshared.is_ok() {
                let _ = ready.write_all(b"1");
            }
            drop(ready);
            let status = loop {
                match nix::sys::wait::waitpid(child, None) {
                    Err(nix::errno::Errno::EINTR) => {}
                    other => break other,
                }
            };
            unshared.map_err(RootlessError::Unshare)?;
            match status {
                Ok(WaitStatus::Exited(_, 0)) => Ok(()),
                _ => Err(RootlessError::NewIdMap),
            }
        }
    }
}

/// True when this process runs in the initial user namespace (its uid map is the identity
/// of every id).
pub(crate) fn in_initial_user_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .map(|map| map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
        .unwrap_or(true)
}

/// True when `gid` exists in this process's user namespace.
pub(crate) fn gid_mapped(gid: u32) -> bool {
    let Ok(map) = std::fs::read_to_string("/proc/self/gid_map") else { return true };
    map.lines().any(|line| {
        let f: Vec<u64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        f.len() == 3 && u64::from(gid) >= f[0] && u64::from(gid) < f[0] + f[2]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_by_name_or_id() {
        let text = "alice:100000:65536\n1001:200000:1000\nbob:300000:0\n";
        assert_eq!(parse_subordinate(text, 1000, Some("alice")), Some((100000, 65536)));
        assert_eq!(parse_subordinate(text, 1001, Some("carol")), Some((200000, 1000)));
        assert_eq!(parse_subordinate(text, 1002, Some("bob")), None, "an empty range is none");
        assert_eq!(parse_subordinate("garbage\n", 1, None), None);
    }

    #[test]
    fn describes_the_map() {
        let single = Rootless { host_uid: 1000, host_gid: 1000, map: IdMap::Single, single_reason: None };
        assert!(single.describe().contains("single id"));
        let sub = Rootless {
            map: IdMap::Subordinate { uid_start: 100_000, uid_count: 65536, gid_start: 100_000, gid_count: 65536 },
            ..single
        };
        assert!(sub.describe().contains("1-65536 = host 100000-165535"), "{}", sub.describe());
    }

    #[test]
    fn own_gid_is_mapped_and_the_invalid_id_never_is() {
        assert!(gid_mapped(nix::unistd::getgid().as_raw()));
        assert!(!gid_mapped(u32::MAX), "4294967295 is never a valid id");
    }
}
