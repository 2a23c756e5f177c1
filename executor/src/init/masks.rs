//! Masked and read-only paths of `/proc` and `/sys` ([`Security::Sandbox`] only), as
//! containerd's default spec gives runc for a BuildKit RUN: a masked directory gets a
//! read-only empty tmpfs over it, a masked file gets `/dev/null` bound over it (it reads
//! empty), and a read-only path is bound onto itself and remounted read-only. Paths this
//! kernel lacks are skipped.
//!
//! Runs after `pivot_root` (paths resolve inside the sandbox, whose `/proc` is the new pid
//! namespace's) and after the extra mounts, like runc's `maskPath`/`readonlyPath`.
//!
//! [`Security::Sandbox`]: crate::Security::Sandbox

use std::path::Path;

use nix::mount::MsFlags;

use super::mounts::{mount, MountError};

/// Hidden: kernel memory, keyrings, timers, hardware details.
pub(crate) const MASKED: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Visible but read-only: sysctls, sysrq, bus and irq tuning.
pub(crate) const READONLY: [&str; 5] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Applies [`MASKED`] and [`READONLY`].
pub(crate) fn apply() -> Result<(), MountError> {
    let secure = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    for path in MASKED.map(Path::new) {
        match std::fs::symlink_metadata(path) {
            Err(_) => continue, // not on this kernel
            Ok(meta) if meta.is_dir() => mount("tmpfs", path, Some("tmpfs"), secure | MsFlags::MS_RDONLY, None)?,
            Ok(_) => mount("/dev/null", path, None, MsFlags::MS_BIND, None)?,
        }
    }
    for path in READONLY.map(Path::new) {
        if std::fs::symlink_metadata(path).is_err() {
            continue;
        }
        let source = path.to_string_lossy();
        mount(&source, path, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
        // /proc is nosuid,nodev,noexec: a remount keeps only the flags it is given.
        let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | secure;
        mount(&source, path, None, ro, None)?;
    }
    Ok(())
}
