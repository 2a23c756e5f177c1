//! The root filesystem of the sandbox: the overlay, /proc, /sys, /dev, and `pivot_root`.
//!
//! Everything here runs in the init (PID 1 of the new pid namespace) after it has unshared
//! its own mount namespace and made every mount private, so none of these mounts is ever
//! visible on the host, and all of them vanish with the namespace when the init exits.
//!
//! Mount points: `/proc`, `/dev` and `/sys` are created in the merged rootfs when the image
//! lacks them (a `FROM scratch` step), which puts empty dirs in the upper dir. The init
//! reports their names ([`Report::Created`](crate::protocol::Report)) and the host side
//! removes them from the upper dir after the run, so the layer only holds what the command
//! changed. Everything else we mount over (`/dev` contents, the `/etc` files) lives on tmpfs
//! or on existing files, so it never reaches the upper dir.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};

use crate::error::OsError;
use crate::options::Security;
use crate::protocol::{Created, ParentTimes};
use crate::spec::{Layout, Network, SandboxSpec};

/// The most bytes of mount options mount(2) copies (one page, NUL included).
const MAX_OPTIONS: usize = 4095;

/// The mount points the init creates when the image lacks them; the host removes exactly
/// these names (and only when still empty) from the upper dir.
pub(crate) const MOUNTPOINTS: [&str; 3] = ["proc", "dev", "sys"];

/// Host device nodes bind-mounted into the sandbox's `/dev`.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Building the sandbox's root filesystem failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    /// Even with layers named by fd numbers, the overlay options exceed a page.
    #[error("overlay options are {len} bytes, more than mount(2) accepts ({MAX_OPTIONS})")]
    OverlayOptionsTooLong {
        /// Their length with absolute paths.
        len: usize,
    },
    /// Opening a layer directory failed (only done when the options are too long for
    /// absolute paths).
    #[error("cannot open layer directory {}", path.display())]
    OpenLayer {
        /// The layer.
        path: PathBuf,
        /// The cause.
        #[source]
        source: OsError,
    },
    /// The overlay mount itself failed.
    #[error("cannot mount the overlay rootfs at {} with options {options}", target.display())]
    Overlay {
        /// The mount point.
        target: PathBuf,
        /// The options string passed to mount(2).
        options: String,
        /// The cause.
        #[source]
        source: OsError,
    },
    /// A mount (or bind, or remount) failed.
    #[error("cannot mount {what} at {}", target.display())]
    Mount {
        /// What was mounted: a filesystem type, or `bind <source>`.
        what: String,
        /// The mount point.
        target: PathBuf,
        /// The cause.
        #[source]
        source: OsError,
    },
    /// Unmounting a staging mount failed.
    #[error("cannot unmount {}", target.display())]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// The cause.
        #[source]
        source: OsError,
    },
    /// A mount point exists in the image but is not a directory (or is a symlink, which
    /// would resolve outside the rootfs before `pivot_root`).
    #[error("{} exists in the image but is not a directory", path.display())]
    NotADirectory {
        /// The path in the merged rootfs.
        path: PathBuf,
    },
    /// Creating a directory, file or symlink for the sandbox failed.
    #[error("cannot create {}", path.display())]
    Create {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: OsError,
    },
    /// Removing the staging directory failed.
    #[error("cannot remove {}", path.display())]
    Remove {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: OsError,
    },
    /// Reading a host file to pass into the sandbox (`/etc/resolv.conf`) failed.
    #[error("cannot read host file {}", path.display())]
    ReadHostFile {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: OsError,
    },
    /// `pivot_root(2)` into the rootfs, or detaching the old root, failed.
    #[error("cannot pivot_root into {}", new_root.display())]
    PivotRoot {
        /// The new root.
        new_root: PathBuf,
        /// The cause.
        #[source]
        source: OsError,
    },
    /// `chroot(2)` into the rootfs failed ([`Isolation::Chroot`](crate::Isolation::Chroot)).
    #[error("cannot chroot into {}", new_root.display())]
    Chroot {
        /// The new root.
        new_root: PathBuf,
        /// The cause.
        #[source]
        source: OsError,
    },
    /// A mount target passes through a symlink that points nowhere.
    #[error("mount target {} is a dangling symlink", path.display())]
    DanglingSymlink {
        /// The symlink, inside the rootfs.
        path: PathBuf,
    },
    /// Opening or copying the host source of an extra mount failed.
    #[error("cannot use mount source {}", path.display())]
    Source {
        /// The host path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: OsError,
    },
    /// Without a mount namespace nothing can be mounted privately.
    #[error(
        "chroot isolation without a mount namespace needs a complete rootfs as upper_dir, no \
         lower_dirs and no extra mounts"
    )]
    NeedsCopiedRootfs,
}

impl MountError {
    /// A suggestion for the user, when the error has a usual cause.
    #[must_use]
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            MountError::Overlay { source, .. } if source.is(Errno::EINVAL) => Some(
                "the kernel refused the overlay: upper and work dirs must be on one filesystem \
                 that can hold an overlay upper dir (not overlayfs itself), and no layer may \
                 contain another; `dmesg` shows the kernel's reason",
            ),
            MountError::Overlay { source, .. } if source.is(Errno::ENODEV) => {
                Some("this kernel has no overlay filesystem (modprobe overlay)")
            }
            _ => None,
        }
    }
}

fn err_create(path: &Path) -> impl FnOnce(std::io::Error) -> MountError + '_ {
    move |e| MountError::Create { path: path.to_owned(), source: e.into() }
}

/// Escapes a path for the overlay options: `\`, `,` and `:` get a backslash (the kernel
/// unescapes layer paths; `,` separates options and `:` separates lower dirs).
fn escape(path: &Path, out: &mut Vec<u8>) {
    for &byte in path.as_os_str().as_bytes() {
        if matches!(byte, b'\\' | b',' | b':') {
            out.push(b'\\');
        }
        out.push(byte);
    }
}

/// `lowerdir=l1:l2,upperdir=u,workdir=w`, lower dirs topmost first, paths as given.
pub(crate) fn overlay_options(lowers: &[PathBuf], upper: &Path, work: &Path) -> OsString {
    let mut out = b"lowerdir=".to_vec();
    for (i, lower) in lowers.iter().enumerate() {
        if i > 0 {
            out.push(b':');
        }
        escape(lower, &mut out);
    }
    out.extend_from_slice(b",upperdir=");
    escape(upper, &mut out);
    out.extend_from_slice(b",workdir=");
    escape(work, &mut out);
    OsString::from_vec(out)
}

/// The overlay option that skips syncing the upper dir (on unmount, and for `fsync` inside
/// the sandbox).
const VOLATILE: &str = ",volatile";

/// The overlay option of unprivileged mounts, counted with [`VOLATILE`] against the page.
const USERXATTR: &str = ",userxattr";

/// The overlay is mounted [`VOLATILE`] when more than this much of the page cache is dirty.
///
/// An overlay's unmount syncs its *whole* upper filesystem, every other writer's dirty data
/// included: after a `COPY` of a large context (whose files the store does not sync) that is
/// hundreds of milliseconds for a `RUN` that changes nothing, and more when other builds
/// write. Skipping it costs nothing the store relies on: it does not sync snapshot contents
/// either (see the cache crate), and a crash discards the run's upper dir with the rest of
/// the build's temporary state. With little dirty data, though, the sync is cheap and worth
/// keeping: it writes back the filesystem's inode tables, and a journal-less ext4 skips
/// every inode freed in the last 5 minutes (1 minute once its inode table block is written
/// back) on each allocation, so a build of many small steps allocates inodes twice as
/// slowly without it (measured on the bench machine: 40 trivial `RUN`s, 0.8 vs 0.4 s CPU).
const VOLATILE_ABOVE_DIRTY: u64 = 32 << 20;

/// Dirty and under-writeback page cache, in bytes (`/proc/meminfo`; the init still sees the
/// host's proc here). `None` if unreadable.
fn dirty_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |key: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    Some((kib("Dirty:")? + kib("Writeback:")?) * 1024)
}

/// Mounts the overlay of the spec's layers on `layout.merged`, after covering `work_dir` with
/// the tmpfs that holds that mount point (see [`Layout`]). `work_dir` is passed to the kernel
/// as the workdir through an fd opened before it is covered (`/proc/self/fd/N`, which the
/// kernel resolves to the opened directory), as is `empty/` for `FROM scratch`.
///
/// mount(2) copies at most a page of options. When the absolute paths do not fit (many
/// layers with long store paths), each layer is opened as an `O_PATH` fd and named by its
/// number, relative to `/proc/self/fd` as the cwd: the kernel resolves relative layer paths
/// against the mounting process's cwd, and the magic links lead to the opened dirs. That is a
/// few bytes per layer, so hundreds of layers fit.
pub(crate) fn mount_overlay(spec: &SandboxSpec, layout: &Layout) -> Result<(), MountError> {
    let fd_path = |fd: &OwnedFd| PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    // `FROM scratch`: an empty lower dir on the upper dir's filesystem (a tmpfs one would
    // make the overlay report per-layer st_dev for files), and, as a layer may not lie in
    // the workdir, the workdir one level down.
    let (work, scratch) = if spec.lower_dirs.is_empty() {
        for dir in [&layout.scratch_work, &layout.empty_lower] {
            match mkdir(dir, 0o755) {
                Err(MountError::Create { source, .. }) if source.is(Errno::EEXIST) => {}
                other => other?,
            }
        }
        (open_layer(&layout.scratch_work)?, Some(open_layer(&layout.empty_lower)?))
    } else {
        (open_layer(&layout.work_dir)?, None)
    };
    clear_volatile_marker(&work);
    let lowers = match &scratch {
        Some(fd) => vec![fd_path(fd)],
        None => spec.lower_dirs.clone(),
    };
    let options = overlay_options(&lowers, &spec.upper_dir, &fd_path(&work));
    // What error messages show: the real paths.
    let shown = match scratch {
        Some(_) => overlay_options(std::slice::from_ref(&layout.empty_lower), &spec.upper_dir, &layout.scratch_work),
        None => overlay_options(&spec.lower_dirs, &spec.upper_dir, &layout.work_dir),
    };
    let shown = shown.to_string_lossy().into_owned();
    // A layer under `work_dir` (which the caller promises never happens) would be hidden by
    // the tmpfs: name every layer by fd then too, opened before the tmpfs covers them.
    let hidden = spec.lower_dirs.iter().chain([&spec.upper_dir]).any(|p| p.starts_with(&layout.work_dir));
    let by_fd = if hidden || options.len() + VOLATILE.len() + USERXATTR.len() > MAX_OPTIONS {
        let layers: Result<Vec<_>, _> =
            spec.lower_dirs.iter().chain([&spec.upper_dir]).map(|p| open_layer(p)).collect();
        Some(layers?)
    } else {
        None
    };
    let flags = nodev(spec.security);
    let volatile = dirty_bytes().is_none_or(|dirty| dirty > VOLATILE_ABOVE_DIRTY);
    mount_merged(layout)?;
    let Some(mut fds) = by_fd else {
        return mount_overlay_with(&layout.merged, &options, flags, volatile, &shown);
    };
    let upper = fds.pop().ok_or(MountError::OverlayOptionsTooLong { len: options.len() })?;
    fds.extend(scratch);
    let name = |fd: &OwnedFd| PathBuf::from(fd.as_raw_fd().to_string());
    let lower_names: Vec<PathBuf> = fds.iter().map(name).collect();
    let short = overlay_options(&lower_names, &name(&upper), &name(&work));
    if short.len() + VOLATILE.len() + USERXATTR.len() > MAX_OPTIONS {
        return Err(MountError::OverlayOptionsTooLong { len: options.len() });
    }
    let in_fd_dir = |e: Errno| MountError::Overlay {
        target: layout.merged.clone(),
        options: short.to_string_lossy().into_owned(),
        source: e.into(),
    };
    nix::unistd::chdir("/proc/self/fd").map_err(in_fd_dir)?;
    let mounted = mount_overlay_with(&layout.merged, &short, flags, volatile, &short.to_string_lossy());
    nix::unistd::chdir("/").map_err(in_fd_dir)?;
    mounted
}

/// [`Rootfs::Copied`](crate::Rootfs::Copied): binds the caller's complete rootfs
/// (`upper_dir`) on `layout.merged`, read-write, `nodev` as an overlay would be.
pub(crate) fn mount_copied(spec: &SandboxSpec, layout: &Layout) -> Result<(), MountError> {
    mount_merged(layout)?;
    let source = spec.upper_dir.to_string_lossy();
    mount(&source, &layout.merged, None, MsFlags::MS_BIND, None)?;
    let flags = nodev(spec.security);
    if flags.is_empty() {
        return Ok(());
    }
    mount(&source, &layout.merged, None, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags, None)
}

fn open_layer(path: &Path) -> Result<OwnedFd, MountError> {
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    nix::fcntl::open(path, flags, Mode::empty())
        .map_err(|e| MountError::OpenLayer { path: path.to_owned(), source: e.into() })
}

/// A volatile overlay leaves `work/incompat/volatile/dirty` in its workdir, and overlayfs
/// refuses that workdir until it is removed: the upper dir may be torn should the machine
/// have crashed while mounted. A run reusing a work dir (the contract asks for a fresh one,
/// but a caller may retry in the same one) starts after the earlier run's sandbox, and with
/// it the mount, is gone, so the marker is stale and removed. One failed lookup when absent.
fn clear_volatile_marker(work: &OwnedFd) {
    use nix::unistd::{unlinkat, UnlinkatFlags};
    if unlinkat(work, "work/incompat/volatile/dirty", UnlinkatFlags::NoRemoveDir).is_ok() {
        let _ = unlinkat(work, "work/incompat/volatile", UnlinkatFlags::RemoveDir);
        let _ = unlinkat(work, "work/incompat", UnlinkatFlags::RemoveDir);
    }
}

/// The tmpfs over `work_dir`, with the overlay's mount point.
fn mount_merged(layout: &Layout) -> Result<(), MountError> {
    let secure = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount("tmpfs", &layout.work_dir, Some("tmpfs"), secure, Some("mode=755,size=16k,nr_inodes=16"))?;
    mkdir(&layout.merged, 0o755)
}

/// Mounts the overlay, [`VOLATILE`] if asked (and plain should this kernel not know the
/// option: EINVAL, which the plain mount then gives as well when the cause was another).
fn mount_overlay_with(
    merged: &Path,
    options: &OsStr,
    flags: MsFlags,
    volatile: bool,
    shown: &str,
) -> Result<(), MountError> {
    // In a user namespace (rootless), opaque directories are `user.overlay.opaque`: the
    // trusted namespace is the host root's alone.
    let userxattr = !crate::rootless::in_initial_user_namespace();
    let mount = |options: &OsStr| {
        let mut options = options.to_owned();
        if userxattr {
            options.push(USERXATTR);
        }
        nix::mount::mount(Some("overlay"), merged, Some("overlay"), flags, Some(options.as_os_str()))
    };
    let result = if volatile {
        let mut with = options.to_owned();
        with.push(VOLATILE);
        match mount(&with) {
            Err(Errno::EINVAL) => mount(options),
            other => other,
        }
    } else {
        mount(options)
    };
    result.map_err(|e| MountError::Overlay { target: merged.to_owned(), options: shown.to_owned(), source: e.into() })
}

/// Creates the missing mount points of [`MOUNTPOINTS`] in the merged rootfs and returns
/// them (with the root's times from before). Existing ones must be real directories: a
/// symlink would be followed on the host side of `pivot_root`.
pub(crate) fn create_mountpoints(merged: &Path) -> Result<Created, MountError> {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata(merged).map_err(err_create(merged))?;
    let names = create_mountpoint_dirs(merged)?;
    let parents = if names.is_empty() {
        Vec::new()
    } else {
        vec![ParentTimes {
            path: String::new(),
            atime: (root.atime(), root.atime_nsec()),
            mtime: (root.mtime(), root.mtime_nsec()),
        }]
    };
    Ok(Created { paths: names, parents })
}

fn create_mountpoint_dirs(merged: &Path) -> Result<Vec<String>, MountError> {
    let mut created = Vec::new();
    for name in MOUNTPOINTS {
        let path = merged.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(MountError::NotADirectory { path }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new().mode(0o755).create(&path).map_err(err_create(&path))?;
                created.push(name.to_owned());
            }
            Err(e) => return Err(err_create(&path)(e)),
        }
    }
    Ok(created)
}

/// mount(2) with a typed error.
pub(crate) fn mount(
    source: &str,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), MountError> {
    nix::mount::mount(Some(source), target, fstype, flags, data).map_err(|e| MountError::Mount {
        what: fstype.map_or_else(|| format!("bind {source}"), str::to_owned),
        target: target.to_owned(),
        source: e.into(),
    })
}

/// Mounts /proc, /sys and /dev in the merged rootfs (whose mount points exist).
pub(crate) fn mount_special(
    merged: &Path,
    network: Network,
    security: Security,
    shm_size: Option<u64>,
) -> Result<(), MountError> {
    let secure = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    // A fresh proc: we are PID 1 of the new pid namespace, so it shows only the sandbox.
    mount("proc", &merged.join("proc"), Some("proc"), secure, None)?;
    // Read-only /sys unless insecure (BuildKit's insecure mode has a writable sysfs).
    let ro = match security {
        Security::Sandbox => MsFlags::MS_RDONLY,
        Security::Insecure => MsFlags::empty(),
    };
    mount_sys(&merged.join("sys"), network, secure | ro)?;
    mount_dev(&merged.join("dev"), nodev(security), shm_size)
}

/// Device nodes a step creates itself (`mknod` is allowed: package managers need it) must not
/// open host devices: runc denies them with a device cgroup, we mount the rootfs and /dev's
/// tmpfs `nodev` (the harmless nodes bound into /dev are separate mounts and keep working).
/// Insecure steps, like BuildKit's, may use any device.
pub(crate) fn nodev(security: Security) -> MsFlags {
    match security {
        Security::Sandbox => MsFlags::MS_NODEV,
        Security::Insecure => MsFlags::empty(),
    }
}

/// sysfs (read-only in the sandbox). It shows the network devices of the mounting
/// process's netns (only `lo` with `Network::None`). Should the kernel refuse it, fall back
/// to a recursive bind of the host's /sys, remounted with the same flags.
fn mount_sys(target: &Path, network: Network, flags: MsFlags) -> Result<(), MountError> {
    let sysfs_error = match mount("sysfs", target, Some("sysfs"), flags, None) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    if network == Network::None {
        return Err(sysfs_error);
    }
    let ro = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags;
    mount("/sys", target, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)
        .and_then(|()| mount("/sys", target, None, ro, None))
        .map_err(|_| sysfs_error)
}

/// A minimal /dev: tmpfs with the host's harmless device nodes bound in, a private devpts,
/// /dev/shm and the usual symlinks (what runc and BuildKit provide).
fn mount_dev(dev: &Path, nodev: MsFlags, shm_size: Option<u64>) -> Result<(), MountError> {
    let tmpfs = Some("tmpfs");
    mount("tmpfs", dev, tmpfs, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME | nodev, Some("mode=755,size=65536k"))?;
    for name in DEVICES {
        let host = Path::new("/dev").join(name);
        if !host.exists() {
            continue; // not every host has every node (e.g. /dev/tty in some containers)
        }
        let node = dev.join(name);
        std::fs::File::create(&node).map_err(err_create(&node))?;
        mount(&host.to_string_lossy(), &node, None, MsFlags::MS_BIND, None)?;
    }
    let pts = dev.join("pts");
    mkdir(&pts, 0o755)?;
    // gid 5 (tty) does not exist in a single-id user namespace (rootless).
    let pts_opts = Some(if crate::rootless::gid_mapped(5) {
        "newinstance,ptmxmode=0666,mode=0620,gid=5"
    } else {
        "newinstance,ptmxmode=0666,mode=0620"
    });
    mount("devpts", &pts, Some("devpts"), MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, pts_opts)?;
    let shm = dev.join("shm");
    mkdir(&shm, 0o755)?;
    let secure = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let shm_opts = format!("mode=1777,size={}", shm_size.unwrap_or(64 << 20));
    mount("shm", &shm, tmpfs, secure, Some(&shm_opts))?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        let path = dev.join(link);
        std::os::unix::fs::symlink(target, &path).map_err(err_create(&path))?;
    }
    Ok(())
}

pub(crate) fn mkdir(path: &Path, mode: u32) -> Result<(), MountError> {
    std::fs::DirBuilder::new().mode(mode).create(path).map_err(err_create(path))
}

/// Makes `merged` the root: `pivot_root(".", ".")` stacks the old root on top of the new
/// one, and a lazy unmount of "." then drops it (the trick documented in `pivot_root(2)`).
/// Every mount is private already, so the unmount does not propagate to the host.
pub(crate) fn pivot(merged: &Path) -> Result<(), MountError> {
    let fail = |e: Errno| MountError::PivotRoot { new_root: merged.to_owned(), source: e.into() };
    nix::unistd::chdir(merged).map_err(fail)?;
    nix::unistd::pivot_root(".", ".").map_err(fail)?;
    nix::mount::umount2(".", MntFlags::MNT_DETACH).map_err(fail)?;
    nix::unistd::chdir("/").map_err(fail)
}

/// [`Isolation::Chroot`](crate::Isolation::Chroot): `chroot(new_root)` and `chdir("/")`.
/// Unlike `pivot_root`, the host's mounts stay in the namespace (if there is one) and a root
/// process with `CAP_SYS_CHROOT` can leave the chroot.
pub(crate) fn chroot(new_root: &Path) -> Result<(), MountError> {
    let fail = |e: Errno| MountError::Chroot { new_root: new_root.to_owned(), source: e.into() };
    nix::unistd::chroot(new_root).map_err(fail)?;
    nix::unistd::chdir("/").map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_escaped_and_ordered() {
        let lowers = [PathBuf::from("/l/top"), PathBuf::from("/l/a,b:c\\d")];
        let options = overlay_options(&lowers, Path::new("/u"), Path::new("/w"));
        assert_eq!(options, "lowerdir=/l/top:/l/a\\,b\\:c\\\\d,upperdir=/u,workdir=/w");
    }

    #[test]
    fn fd_named_layers_fit_a_page() {
        // 200 layers named by fd numbers (the fallback for long paths).
        let lowers: Vec<PathBuf> = (100..300).map(|fd| PathBuf::from(fd.to_string())).collect();
        let options = overlay_options(&lowers, Path::new("300"), Path::new("301"));
        assert!(options.len() <= MAX_OPTIONS, "{}", options.len());
        assert!(options.to_string_lossy().starts_with("lowerdir=100:101:"));
    }

    #[test]
    fn overlay_errors_have_hints() {
        let err = MountError::Overlay { target: "/m".into(), options: String::new(), source: Errno::EINVAL.into() };
        assert!(err.hint().is_some_and(|h| h.contains("same") || h.contains("one filesystem")));
    }
}
