//! What a RUN step asks for ([`SandboxSpec`]) and what it gives back ([`ExitStatus`]).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::ExecError;
use crate::options::{Isolation, Limits, MountKind, MountSpec, Rlimit, Rootfs, Security};

/// Everything the sandbox needs to run one command.
///
/// It is sent to the helper process as JSON, so it derives `Serialize` and `Deserialize`.
/// Build one with [`SandboxSpec::new`] (or `..SandboxSpec::default()`) so that fields added
/// later do not break the caller; the confinement fields default to BuildKit's behaviour.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Overlay lower directories, **topmost first**. May be empty (`FROM scratch`).
    pub lower_dirs: Vec<PathBuf>,
    /// Overlay upper directory. Must exist; after the run it holds exactly the step's diff.
    pub upper_dir: PathBuf,
    /// Scratch directory for the overlay, on the same filesystem as `upper_dir`, and empty.
    ///
    /// It is the overlay's workdir, so the kernel leaves its `work/` directory (mode 0) in it
    /// (or, when `lower_dirs` is empty, `work/work/` and an `empty/` lower dir). Inside the sandbox's private mount namespace
    /// only, a small tmpfs covers it, holding the rootfs mount point. The caller deletes it
    /// after the run.
    pub work_dir: PathBuf,
    /// The command's argv, e.g. `["/bin/sh", "-c", "echo hi"]`. `args[0]` is looked up in the
    /// `PATH` of `env` when it contains no `/`.
    pub args: Vec<String>,
    /// `K=V` entries: exactly the command's environment.
    pub env: Vec<String>,
    /// Absolute working directory inside the rootfs; created (owned by the user) if missing.
    pub cwd: String,
    /// `""`, `"root"`, `"uid"`, `"uid:gid"`, `"name"` or `"name:group"`, resolved through the
    /// rootfs `/etc/passwd` and `/etc/group`.
    pub user: String,
    /// The sandbox's hostname, e.g. `buildkitsandbox`.
    pub hostname: String,
    /// Which network namespace the command gets.
    pub network: Network,
    /// Capabilities, masks and seccomp (`RUN --security`).
    #[serde(default)]
    pub security: Security,
    /// Namespaces (the default) or the weaker chroot fallback.
    #[serde(default)]
    pub isolation: Isolation,
    /// An overlay (the default), or a caller-made copy of the rootfs in `upper_dir`.
    #[serde(default)]
    pub rootfs: Rootfs,
    /// Extra mounts (`RUN --mount`), applied in order inside the rootfs.
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
    /// cgroup limits of the whole sandbox.
    #[serde(default)]
    pub limits: Limits,
    /// Resource limits of the command; `nofile` is 20000:20000 unless given here.
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    /// Extra `/etc/hosts` lines as `(host, ip)` (`--add-host`), after the loopback ones.
    #[serde(default)]
    pub extra_hosts: Vec<(String, String)>,
    /// Size of `/dev/shm` in bytes; `None` is 64 MiB (Docker's default).
    #[serde(default)]
    pub shm_size: Option<u64>,
}

/// The network namespace of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Network {
    /// Share the host's network namespace.
    Host,
    /// A new, empty network namespace whose only interface, `lo`, is brought up (the default:
    /// a caller opts in to the host's network).
    #[default]
    None,
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// The command exited with this code.
    Exited(i32),
    /// The command was killed by this signal number.
    Signaled(i32),
}

impl ExitStatus {
    /// True for `Exited(0)`.
    #[must_use]
    pub fn success(self) -> bool {
        self == ExitStatus::Exited(0)
    }

    /// The exit code, if the command exited normally.
    #[must_use]
    pub fn code(self) -> Option<i32> {
        match self {
            ExitStatus::Exited(code) => Some(code),
            ExitStatus::Signaled(_) => None,
        }
    }

    /// The signal number, if the command was killed by a signal.
    #[must_use]
    pub fn signal(self) -> Option<i32> {
        match self {
            ExitStatus::Exited(_) => None,
            ExitStatus::Signaled(signal) => Some(signal),
        }
    }

    /// The shell convention: the exit code, or 128 + the signal number.
    #[must_use]
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Exited(code) => code,
            ExitStatus::Signaled(signal) => 128 + signal,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exit code {code}"),
            ExitStatus::Signaled(signal) => write!(f, "killed by signal {signal}"),
        }
    }
}

/// Which output stream of the command a chunk of bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OutputStream {
    /// The command's standard output.
    Stdout,
    /// The command's standard error.
    Stderr,
}

impl fmt::Display for OutputStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        })
    }
}

/// BuildKit's hostname inside a RUN.
pub const DEFAULT_HOSTNAME: &str = "buildkitsandbox";

impl SandboxSpec {
    /// A spec running `args` as root in `/`, with an empty environment, hostname
    /// `buildkitsandbox`, no network ([`Network::None`]) and BuildKit's default confinement;
    /// set the other (public) fields as needed.
    #[must_use]
    pub fn new(lower_dirs: Vec<PathBuf>, upper_dir: PathBuf, work_dir: PathBuf, args: Vec<String>) -> SandboxSpec {
        SandboxSpec {
            lower_dirs,
            upper_dir,
            work_dir,
            args,
            cwd: "/".into(),
            hostname: DEFAULT_HOSTNAME.into(),
            ..SandboxSpec::default()
        }
    }

    /// Rejects specs that can never run, before any process is spawned.
    pub(crate) fn validate(&self) -> Result<(), ExecError> {
        let invalid = |reason: String| Err(ExecError::InvalidSpec { reason });
        if self.args.is_empty() {
            return invalid("args is empty".into());
        }
        if !self.cwd.starts_with('/') {
            return invalid(format!("cwd {:?} is not absolute", self.cwd));
        }
        let strings = self.args.iter().chain(&self.env).chain([&self.cwd, &self.user, &self.hostname]);
        if let Some(bad) = strings.into_iter().find(|s| s.contains('\0')) {
            return invalid(format!("{bad:?} contains a NUL byte"));
        }
        for (host, ip) in &self.extra_hosts {
            let bad = |s: &str| s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control() || c == '#');
            if bad(host) || bad(ip) {
                return invalid(format!("extra host {host:?} {ip:?} is not a host name and an address"));
            }
        }
        if self.shm_size == Some(0) {
            return invalid("a /dev/shm of 0 bytes".into());
        }
        if let Some(bad) = self.env.iter().find(|e| !e.contains('=')) {
            return invalid(format!("env entry {bad:?} is not K=V"));
        }
        for dir in self.lower_dirs.iter().chain([&self.upper_dir, &self.work_dir]) {
            if !dir.is_absolute() {
                return invalid(format!("{} is not an absolute path", dir.display()));
            }
        }
        if self.rootfs == Rootfs::Copied && !self.lower_dirs.is_empty() {
            return invalid("a copied rootfs is complete: lower_dirs must be empty".into());
        }
        if self.rootfs == Rootfs::Copied && self.upper_dir.starts_with(&self.work_dir) {
            return invalid("the copied rootfs must not lie inside work_dir (a tmpfs covers it)".into());
        }
        for mount in &self.mounts {
            validate_mount(mount).map_err(|reason| ExecError::InvalidSpec {
                reason: format!("mount at {:?}: {reason}", mount.target),
            })?;
        }
        if let Some((quota, period)) = self.limits.cpu_quota {
            if quota == 0 || !(1000..=1_000_000).contains(&period) {
                return invalid(format!(
                    "cpu quota {quota}us per {period}us: the quota must be positive and the \
                     period 1ms to 1s"
                ));
            }
        }
        if self.limits.memory == Some(0) || self.limits.pids == Some(0) {
            return invalid("a memory or pids limit of 0 can never run anything".into());
        }
        Ok(())
    }

    /// The directories the executor keeps inside `work_dir`.
    pub(crate) fn layout(&self) -> Layout {
        Layout::new(&self.work_dir)
    }
}

fn validate_mount(mount: &MountSpec) -> Result<(), String> {
    let target = Path::new(&mount.target);
    if !target.is_absolute() || mount.target.contains('\0') {
        return Err("the target must be an absolute path without NUL bytes".into());
    }
    if !target.components().any(|c| matches!(c, std::path::Component::Normal(_))) {
        return Err("cannot mount over the root".into());
    }
    if target.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Err("the target must not contain `..`".into());
    }
    match &mount.kind {
        MountKind::Bind { source, .. } | MountKind::File { source, .. } if !source.is_absolute() => {
            Err(format!("source {} is not absolute", source.display()))
        }
        MountKind::Tmpfs { mode, .. } | MountKind::File { mode, .. } if *mode > 0o7777 => {
            Err(format!("mode {mode:#o} is not a file mode"))
        }
        _ => Ok(()),
    }
}

/// Where the rootfs is assembled, from [`SandboxSpec::work_dir`].
///
/// `work_dir` itself is the overlay's workdir (on the upper dir's filesystem, as overlayfs
/// requires). In the init's private mount namespace a tmpfs is then mounted over it (the
/// overlay keeps using the covered directory, opened beforehand) holding `merged`, so the
/// mount point costs no directory on the host's disk and is never seen there. The tmpfs is
/// never a layer: every layer stays on the caller's filesystem(s), so the overlay behaves
/// exactly as with the layers alone (one `st_dev` for every file when they share one).
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// The caller's scratch dir: the overlay workdir, and the tmpfs's mount point.
    pub(crate) work_dir: PathBuf,
    /// Where the overlay is mounted (on the tmpfs).
    pub(crate) merged: PathBuf,
    /// The lower dir used when `lower_dirs` is empty (`FROM scratch`): created in `work_dir`
    /// (on the upper dir's filesystem) only then.
    pub(crate) empty_lower: PathBuf,
    /// The overlay workdir for `FROM scratch` (a layer may not lie inside the workdir).
    pub(crate) scratch_work: PathBuf,
}

impl Layout {
    fn new(work_dir: &Path) -> Layout {
        Layout {
            work_dir: work_dir.to_owned(),
            merged: work_dir.join("merged"),
            empty_lower: work_dir.join("empty"),
            scratch_work: work_dir.join("work"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SandboxSpec {
        SandboxSpec {
            lower_dirs: vec!["/s/2".into(), "/s/1".into()],
            upper_dir: "/s/up".into(),
            work_dir: "/s/work".into(),
            args: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            user: String::new(),
            hostname: "buildkitsandbox".into(),
            network: Network::None,
            mounts: vec![MountSpec {
                target: "/run/secrets/a".into(),
                kind: MountKind::File { source: "/s/a".into(), mode: 0o400, uid: 0, gid: 0 },
            }],
            ..SandboxSpec::default()
        }
    }

    #[test]
    fn old_specs_parse_with_buildkit_defaults() {
        let json = r#"{"lower_dirs":[],"upper_dir":"/u","work_dir":"/w","args":["true"],
            "env":[],"cwd":"/","user":"","hostname":"h","network":"Host"}"#;
        let spec: SandboxSpec = serde_json::from_str(json).unwrap();
        assert_eq!(spec.security, Security::Sandbox);
        assert_eq!(spec.isolation, Isolation::Namespaces);
        assert!(spec.mounts.is_empty() && spec.limits.is_empty() && spec.rlimits.is_empty());
        let new = SandboxSpec::new(vec![], "/u".into(), "/w".into(), vec!["true".into()]);
        assert_eq!((new.cwd.as_str(), new.hostname.as_str()), ("/", "buildkitsandbox"));
        assert!(new.validate().is_ok());
    }

    #[test]
    fn serde_round_trip() {
        let spec = spec();
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<SandboxSpec>(&json).unwrap(), spec);
        let host = serde_json::to_string(&Network::Host).unwrap();
        assert_eq!(host, "\"Host\"");
    }

    #[test]
    fn validate_rejects_unrunnable_specs() {
        assert!(spec().validate().is_ok());
        let cases: [fn(&mut SandboxSpec); 15] = [
            |s| s.extra_hosts.push(("a b".into(), "10.0.0.1".into())),
            |s| s.extra_hosts.push(("db".into(), "10.0.0.1\n1.2.3.4 evil".into())),
            |s| s.shm_size = Some(0),
            |s| s.rootfs = Rootfs::Copied,
            |s| {
                s.rootfs = Rootfs::Copied;
                s.lower_dirs.clear();
                s.upper_dir = s.work_dir.join("rootfs");
            },
            |s| s.args.clear(),
            |s| s.cwd = "rel".into(),
            |s| s.env.push("NOEQUALS".into()),
            |s| s.args.push("a\0b".into()),
            |s| s.lower_dirs.push("relative".into()),
            |s| s.mounts[0].target = "relative".into(),
            |s| s.mounts[0].target = "/".into(),
            |s| s.mounts[0].target = "/a/../../b".into(),
            |s| s.limits.memory = Some(0),
            |s| s.limits.cpu_quota = Some((1000, 10)),
        ];
        for break_it in cases {
            let mut s = spec();
            break_it(&mut s);
            assert!(matches!(s.validate(), Err(ExecError::InvalidSpec { .. })), "{s:?}");
        }
    }

    #[test]
    fn exit_status_accessors() {
        assert!(ExitStatus::Exited(0).success());
        assert_eq!(ExitStatus::Exited(3).code(), Some(3));
        assert_eq!(ExitStatus::Signaled(9).signal(), Some(9));
        assert_eq!(ExitStatus::Signaled(9).shell_code(), 137);
        assert_eq!(ExitStatus::Signaled(9).to_string(), "killed by signal 9");
    }
}
