//! cgroup limits of one run ([`Limits`]).
//!
//! The helper creates a group `rbuild-<pid>-<nanos>` under its *own* cgroup in every
//! hierarchy it needs (so the limits nest inside whatever limits rbuild itself runs under,
//! and nothing outside rbuild's subtree is touched), writes the limits, and hands the
//! `cgroup.procs` paths to the init, which moves itself in before it sets anything else up:
//! everything the command starts is then inside. After the init has been reaped (and with it
//! the whole pid namespace), the helper reads the OOM-kill counter and removes the groups.
//!
//! - cgroup v1 (this project's CI): `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes`
//!   when swap is accounted, so the limit cannot be dodged by swapping),
//!   `cpu.cfs_period_us`/`cpu.cfs_quota_us`, `pids.max`; OOM kills from `memory.oom_control`.
//! - cgroup v2 (when `/sys/fs/cgroup` is cgroup2): `memory.max`, `memory.swap.max` 0,
//!   `cpu.max`, `pids.max`, after enabling the controllers in the parent's
//!   `cgroup.subtree_control`; OOM kills from `memory.events`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{OsError, SetupError};
use crate::options::Limits;

/// How many times an `EBUSY` rmdir is retried (the last exiting tasks leave the group
/// asynchronously), 2 ms apart.
const RMDIR_ATTEMPTS: u32 = 250;

/// Which cgroup hierarchy the host uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Version {
    V1,
    V2,
}

/// The groups of one run; removed (best effort) when dropped.
#[derive(Debug)]
pub(crate) struct Cgroup {
    version: Version,
    /// One per controller hierarchy (v1) or the single group (v2).
    dirs: Vec<PathBuf>,
    /// The group whose memory limit is set, for the OOM counter.
    memory_dir: Option<PathBuf>,
}

fn fail(step: &str, path: &Path) -> impl FnOnce(std::io::Error) -> SetupError {
    let (step, path) = (step.to_owned(), path.to_owned());
    move |e| SetupError::Cgroup { step, path, source: OsError::from(e) }
}

fn write(path: &Path, value: &str) -> Result<(), SetupError> {
    std::fs::write(path, value).map_err(fail(&format!("write {value:?} to"), path))
}

/// The host's cgroup version: v2 when `/sys/fs/cgroup` itself is a cgroup2 mount.
pub(crate) fn detect() -> Version {
    match nix::sys::statfs::statfs("/sys/fs/cgroup") {
        Ok(fs) if fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC => Version::V2,
        _ => Version::V1,
    }
}

/// The v1 controllers the limits need.
fn controllers(limits: &Limits) -> Vec<&'static str> {
    let mut needed = Vec::new();
    if limits.memory.is_some() {
        needed.push("memory");
    }
    if limits.cpu_quota.is_some() {
        needed.push("cpu");
    }
    if limits.pids.is_some() {
        needed.push("pids");
    }
    needed
}

/// Our own cgroup path in the hierarchy that has `controller` (`""` for v2), from the
/// contents of `/proc/self/cgroup` (`id:controllers:path`).
fn own_path<'a>(proc_cgroup: &'a str, controller: &str) -> Option<&'a str> {
    proc_cgroup.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_id, list, path) = (fields.next()?, fields.next()?, fields.next()?);
        let hit = if controller.is_empty() { list.is_empty() } else { list.split(',').any(|c| c == controller) };
        hit.then_some(path)
    })
}

/// The mount point and mount root of the v1 hierarchy of `controller`, from the contents
/// of `/proc/self/mountinfo` (proc(5): `... root mountpoint ... - fstype source superopts`).
fn v1_mount<'a>(mountinfo: &'a str, controller: &str) -> Option<(&'a str, &'a str)> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut right = right.split(' ');
        let (fstype, _source, opts) = (right.next()?, right.next()?, right.next()?);
        let has = opts.split(',').any(|o| o == controller);
        let mut left = left.split(' ');
        let root = left.nth(3)?;
        let mountpoint = left.next()?;
        (fstype == "cgroup" && has).then_some((mountpoint, root))
    })
}

/// `mountpoint/(own - root)/name`: our group's directory in one hierarchy.
fn group_dir(mountpoint: &str, root: &str, own: &str, name: &str) -> PathBuf {
    let relative = own.strip_prefix(root).unwrap_or(own).trim_start_matches('/');
    Path::new(mountpoint).join(relative).join(name)
}

fn read_host(path: &str) -> Result<String, SetupError> {
    std::fs::read_to_string(path).map_err(fail("read", Path::new(path)))
}

impl Cgroup {
    /// Creates the groups and writes `limits`; `None` when there are no limits.
    pub(crate) fn create(limits: &Limits) -> Result<Option<Cgroup>, SetupError> {
        if limits.is_empty() {
            return Ok(None);
        }
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let name = format!("rbuild-{}-{nanos}", std::process::id());
        let proc_cgroup = read_host("/proc/self/cgroup")?;
        let version = detect();
        let mut group = Cgroup { version, dirs: Vec::new(), memory_dir: None };
        match version {
            Version::V2 => group.create_v2(limits, &proc_cgroup, &name)?,
            Version::V1 => group.create_v1(limits, &proc_cgroup, &name)?,
        }
        Ok(Some(group))
    }

    fn mkdir(&mut self, dir: PathBuf) -> Result<(), SetupError> {
        if let Some(parent) = dir.parent() {
            remove_stale(parent);
        }
        std::fs::create_dir(&dir).map_err(fail("create", &dir))?;
        self.dirs.push(dir);
        Ok(())
    }

    fn create_v1(&mut self, limits: &Limits, proc_cgroup: &str, name: &str) -> Result<(), SetupError> {
        let mountinfo = read_host("/proc/self/mountinfo")?;
        for controller in controllers(limits) {
            let missing = || SetupError::CgroupController { controller: controller.to_owned() };
            let (mountpoint, root) = v1_mount(&mountinfo, controller).ok_or_else(missing)?;
            let own = own_path(proc_cgroup, controller).ok_or_else(missing)?;
            let dir = group_dir(mountpoint, root, own, name);
            self.mkdir(dir.clone())?;
            match controller {
                "memory" => {
                    let bytes = limits.memory.unwrap_or(u64::MAX).to_string();
                    write(&dir.join("memory.limit_in_bytes"), &bytes)?;
                    let memsw = dir.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        write(&memsw, &bytes)?;
                    }
                    self.memory_dir = Some(dir);
                }
                "cpu" => {
                    let (quota, period) = limits.cpu_quota.unwrap_or_default();
                    write(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
                    write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
                _ => write(&dir.join("pids.max"), &limits.pids.unwrap_or(0).to_string())?,
            }
        }
        Ok(())
    }

    fn create_v2(&mut self, limits: &Limits, proc_cgroup: &str, name: &str) -> Result<(), SetupError> {
        let own = own_path(proc_cgroup, "").unwrap_or("/");
        let parent = group_dir("/sys/fs/cgroup", "/", own, "");
        let enable: Vec<String> = controllers(limits).iter().map(|c| format!("+{c}")).collect();
        // Fails with EBUSY when our own group holds processes and is not the root (the
        // "no internal processes" rule): rbuild then needs a delegated, empty parent.
        write(&parent.join("cgroup.subtree_control"), &enable.join(" "))?;
        let dir = parent.join(name);
        self.mkdir(dir.clone())?;
        if let Some(bytes) = limits.memory {
            write(&dir.join("memory.max"), &bytes.to_string())?;
            let swap = dir.join("memory.swap.max");
            if swap.exists() {
                write(&swap, "0")?;
            }
            self.memory_dir = Some(dir.clone());
        }
        if let Some((quota, period)) = limits.cpu_quota {
            write(&dir.join("cpu.max"), &format!("{quota} {period}"))?;
        }
        if let Some(pids) = limits.pids {
            write(&dir.join("pids.max"), &pids.to_string())?;
        }
        Ok(())
    }

    /// The `cgroup.procs` files the init writes `0` (itself) into.
    pub(crate) fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// How many processes the OOM killer killed in the group (0 without a memory limit).
    pub(crate) fn oom_kills(&self) -> u64 {
        let Some(dir) = &self.memory_dir else {
            return 0;
        };
        let file = match self.version {
            Version::V1 => "memory.oom_control",
            Version::V2 => "memory.events",
        };
        std::fs::read_to_string(dir.join(file))
            .ok()
            .and_then(|text| text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|n| n.trim().parse().ok()))
            .unwrap_or(0)
    }
}

/// Removes the groups of helpers that are gone (a helper killed with `SIGKILL` cannot
/// remove its own): `rbuild-<pid>-<nanos>` whose helper pid no longer exists. A group still
/// holding processes refuses the rmdir and stays; a reused pid keeps its group, which a
/// later run removes. Best effort.
fn remove_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(stale_group_pid) else { continue };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// The helper pid of a group name of ours, `rbuild-<pid>-<nanos>`.
fn stale_group_pid(name: &str) -> Option<u32> {
    let (pid, nanos) = name.strip_prefix("rbuild-")?.split_once('-')?;
    nanos.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// Moves the calling process into the groups (`0` is "the writer", cgroups(7)).
pub(crate) fn join(procs_files: &[PathBuf]) -> Result<(), SetupError> {
    for file in procs_files {
        write(file, "0")?;
    }
    Ok(())
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for dir in &self.dirs {
            for _ in 0..RMDIR_ATTEMPTS {
                match std::fs::remove_dir(dir) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                    _ => break,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_groups_are_named_by_their_helper() {
        assert_eq!(stale_group_pid("rbuild-123-456789"), Some(123));
        assert_eq!(stale_group_pid("rbuild-123"), None);
        assert_eq!(stale_group_pid("rbuild-x-1"), None);
        assert_eq!(stale_group_pid("other-1-2"), None);
        // Only empty directories named so, of dead pids, go.
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join(format!("rbuild-{}-1", i32::MAX));
        let live = dir.path().join(format!("rbuild-{}-1", std::process::id()));
        let full = dir.path().join(format!("rbuild-{}-2", i32::MAX));
        for d in [&dead, &live, &full] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(full.join("x"), "").unwrap();
        remove_stale(dir.path());
        assert!(!dead.exists() && live.exists() && full.exists());
    }

    const PROC_CGROUP: &str = "9:name=systemd:/\n8:pids:/\n4:memory:/ci/job1\n1:cpu,cpuacct:/\n0::/user.slice\n";
    const MOUNTINFO: &str = "\
35 25 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
36 25 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n\
37 25 0:32 /ci /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n";

    #[test]
    fn finds_own_groups() {
        assert_eq!(own_path(PROC_CGROUP, "memory"), Some("/ci/job1"));
        assert_eq!(own_path(PROC_CGROUP, "cpu"), Some("/"));
        assert_eq!(own_path(PROC_CGROUP, ""), Some("/user.slice"));
        assert_eq!(own_path(PROC_CGROUP, "blkio"), None);
        assert_eq!(v1_mount(MOUNTINFO, "cpu"), Some(("/sys/fs/cgroup/cpu,cpuacct", "/")));
        assert_eq!(v1_mount(MOUNTINFO, "cpuacct").map(|m| m.0), Some("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(v1_mount(MOUNTINFO, "devices"), None);
        assert_eq!(
            group_dir("/sys/fs/cgroup/memory", "/", "/ci/job1", "rbuild-1"),
            Path::new("/sys/fs/cgroup/memory/ci/job1/rbuild-1")
        );
        assert_eq!(
            group_dir("/sys/fs/cgroup/pids", "/ci", "/ci/job1", "rbuild-1"),
            Path::new("/sys/fs/cgroup/pids/job1/rbuild-1")
        );
    }

    #[test]
    fn only_needed_controllers() {
        let limits = Limits { memory: Some(1 << 20), pids: Some(5), ..Limits::default() };
        assert_eq!(controllers(&limits), ["memory", "pids"]);
    }
}
