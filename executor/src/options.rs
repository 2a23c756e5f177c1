//! The confinement options of a [`SandboxSpec`](crate::SandboxSpec): security mode,
//! isolation, extra mounts (`RUN --mount`), cgroup limits and rlimits.
//!
//! Every field that holds one of these is `#[serde(default)]`, so a spec written by an older
//! caller still parses, and the defaults are BuildKit's: the sandbox confinement, namespaces,
//! no extra mounts, no cgroup limits, `RLIMIT_NOFILE` 20000:20000.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How much the command is confined (BuildKit's `--security` of `RUN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Security {
    /// Docker's default capability set, masked and read-only `/proc` paths, read-only `/sys`,
    /// Docker's default seccomp profile. `no_new_privs` stays off, so setuid binaries work.
    #[default]
    Sandbox,
    /// `RUN --security=insecure`: every capability, no masks, writable `/sys`, no seccomp.
    Insecure,
}

/// How the sandbox is isolated from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Isolation {
    /// New mount, pid, UTS, IPC (and, for `Network::None`, network) namespaces and
    /// `pivot_root` into the overlay.
    #[default]
    Namespaces,
    /// For hosts where namespaces are not available (an unprivileged container, say):
    /// every namespace that *can* be created still is, one by one, and the command is
    /// `chroot`ed into the rootfs. **Clearly weaker**: a `chroot` is not a mount namespace
    /// (a root process with `CAP_SYS_CHROOT` can leave it), and without a pid or network
    /// namespace the command sees the host's processes and network.
    ///
    /// Without a mount namespace nothing can be mounted privately, so the overlay, `/proc`,
    /// `/dev`, the masks and extra mounts are all skipped: the caller then passes a complete
    /// (copied) rootfs as `upper_dir` with no `lower_dirs`, and computes the diff itself.
    Chroot,
}

/// How the sandbox's root filesystem is made from the spec's directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Rootfs {
    /// An overlay of `lower_dirs` under `upper_dir`, which receives exactly the step's diff.
    #[default]
    Overlay,
    /// `upper_dir` is a complete root filesystem (a copy the caller made, for hosts where
    /// overlayfs cannot be mounted), bind-mounted read-write as the root; `lower_dirs` must
    /// be empty. The command changes the copy in place, and the caller computes the diff by
    /// comparing it with what it copied. Mount points the sandbox creates are removed from
    /// it afterwards, as from an upper dir.
    Copied,
}

/// One extra mount inside the rootfs (the worker translates `RUN --mount` into these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// Absolute path inside the rootfs. Missing components are created (directories, and a
    /// file or directory for the target itself matching the source) and removed from the
    /// upper dir again after the run, like BuildKit's mount stubs.
    pub target: String,
    /// What is mounted there.
    pub kind: MountKind,
}

/// What a [`MountSpec`] mounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    /// A bind mount of a host file or directory. Writes to a `readonly` bind fail with
    /// `EROFS`; a writable bind writes to `source` itself, so giving the command a scratch
    /// copy is the caller's job.
    Bind {
        /// The host path.
        source: PathBuf,
        /// Mount it read-only.
        readonly: bool,
    },
    /// A fresh tmpfs (`nosuid,nodev`).
    Tmpfs {
        /// Size limit in bytes (the kernel's default, half of RAM, when `None`; `Some(0)`
        /// is tmpfs's own "no limit").
        size: Option<u64>,
        /// Mode of its root directory, e.g. `0o1777`.
        mode: u32,
    },
    /// A copy of a host file (a secret, say), read-only, with its own mode and owner. The
    /// copy lives on a private tmpfs, so the source is never exposed or modified.
    File {
        /// The host file.
        source: PathBuf,
        /// The file's mode inside the sandbox (BuildKit's secret default is `0o400`).
        #[serde(default = "default_file_mode")]
        mode: u32,
        /// Owner uid inside the sandbox.
        #[serde(default)]
        uid: u32,
        /// Owner gid inside the sandbox.
        #[serde(default)]
        gid: u32,
    },
}

fn default_file_mode() -> u32 {
    0o400
}

/// cgroup limits of the whole sandbox (v1: the `memory`, `cpu` and `pids` controllers; v2
/// when `/sys/fs/cgroup` is cgroup2). A per-run group is created under the helper's own
/// cgroup and removed after the run. No cgroup is touched when every field is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Limits {
    /// Memory limit in bytes (swap included where the kernel accounts it). A step the OOM
    /// killer hits fails with [`ExecError::OutOfMemory`](crate::ExecError::OutOfMemory).
    pub memory: Option<u64>,
    /// CPU bandwidth: `(quota_us, period_us)`, e.g. `(50_000, 100_000)` for half a CPU.
    pub cpu_quota: Option<(u64, u64)>,
    /// Most tasks (processes and threads) at once.
    pub pids: Option<u64>,
}

impl Limits {
    /// True when no limit is set (no cgroup is created then).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.memory.is_none() && self.cpu_quota.is_none() && self.pids.is_none()
    }
}

/// One resource limit (`setrlimit(2)`) of the command. `u64::MAX` is `RLIM_INFINITY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    /// Which resource.
    pub resource: RlimitResource,
    /// The soft limit.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

/// The resources `docker build --ulimit` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum RlimitResource {
    Core,
    Cpu,
    Data,
    Fsize,
    Locks,
    Memlock,
    Msgqueue,
    Nice,
    Nofile,
    Nproc,
    Rss,
    Rtprio,
    Rttime,
    Sigpending,
    Stack,
}

impl RlimitResource {
    /// The `ulimit`-style name, e.g. `nofile`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            RlimitResource::Core => "core",
            RlimitResource::Cpu => "cpu",
            RlimitResource::Data => "data",
            RlimitResource::Fsize => "fsize",
            RlimitResource::Locks => "locks",
            RlimitResource::Memlock => "memlock",
            RlimitResource::Msgqueue => "msgqueue",
            RlimitResource::Nice => "nice",
            RlimitResource::Nofile => "nofile",
            RlimitResource::Nproc => "nproc",
            RlimitResource::Rss => "rss",
            RlimitResource::Rtprio => "rtprio",
            RlimitResource::Rttime => "rttime",
            RlimitResource::Sigpending => "sigpending",
            RlimitResource::Stack => "stack",
        }
    }

    /// The resource a `ulimit`-style name (`nofile`) stands for.
    #[must_use]
    pub fn from_name(name: &str) -> Option<RlimitResource> {
        use RlimitResource as R;
        let all = [
            R::Core,
            R::Cpu,
            R::Data,
            R::Fsize,
            R::Locks,
            R::Memlock,
            R::Msgqueue,
            R::Nice,
            R::Nofile,
            R::Nproc,
            R::Rss,
            R::Rtprio,
            R::Rttime,
            R::Sigpending,
            R::Stack,
        ];
        all.into_iter().find(|r| r.name() == name)
    }

    pub(crate) fn to_nix(self) -> nix::sys::resource::Resource {
        use nix::sys::resource::Resource as R;
        match self {
            RlimitResource::Core => R::RLIMIT_CORE,
            RlimitResource::Cpu => R::RLIMIT_CPU,
            RlimitResource::Data => R::RLIMIT_DATA,
            RlimitResource::Fsize => R::RLIMIT_FSIZE,
            RlimitResource::Locks => R::RLIMIT_LOCKS,
            RlimitResource::Memlock => R::RLIMIT_MEMLOCK,
            RlimitResource::Msgqueue => R::RLIMIT_MSGQUEUE,
            RlimitResource::Nice => R::RLIMIT_NICE,
            RlimitResource::Nofile => R::RLIMIT_NOFILE,
            RlimitResource::Nproc => R::RLIMIT_NPROC,
            RlimitResource::Rss => R::RLIMIT_RSS,
            RlimitResource::Rtprio => R::RLIMIT_RTPRIO,
            RlimitResource::Rttime => R::RLIMIT_RTTIME,
            RlimitResource::Sigpending => R::RLIMIT_SIGPENDING,
            RlimitResource::Stack => R::RLIMIT_STACK,
        }
    }
}

/// `RLIMIT_NOFILE` of a BuildKit RUN (inherited from dockerd): 20000, soft and hard.
pub const DEFAULT_NOFILE: u64 = 20000;

/// The rlimits applied: `spec` plus `nofile` 20000:20000 unless `spec` sets it.
pub(crate) fn effective_rlimits(spec: &[Rlimit]) -> Vec<Rlimit> {
    let mut all = spec.to_vec();
    if !all.iter().any(|r| r.resource == RlimitResource::Nofile) {
        all.push(Rlimit { resource: RlimitResource::Nofile, soft: DEFAULT_NOFILE, hard: DEFAULT_NOFILE });
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nofile_defaults_to_buildkits() {
        let all = effective_rlimits(&[]);
        assert_eq!(all, [Rlimit { resource: RlimitResource::Nofile, soft: 20000, hard: 20000 }]);
        let own = Rlimit { resource: RlimitResource::Nofile, soft: 10, hard: 20 };
        assert_eq!(effective_rlimits(&[own]), [own]);
    }

    #[test]
    fn rlimit_names_round_trip() {
        assert_eq!(RlimitResource::from_name("nofile"), Some(RlimitResource::Nofile));
        assert_eq!(RlimitResource::from_name("stack").map(RlimitResource::name), Some("stack"));
        assert_eq!(RlimitResource::from_name("NOFILE"), None);
        assert_eq!(RlimitResource::from_name("files"), None);
    }

    #[test]
    fn file_mounts_default_to_secret_mode() {
        let json = r#"{"target":"/run/secrets/x","kind":{"File":{"source":"/s"}}}"#;
        let mount: MountSpec = serde_json::from_str(json).unwrap();
        assert_eq!(mount.kind, MountKind::File { source: "/s".into(), mode: 0o400, uid: 0, gid: 0 });
    }
}
