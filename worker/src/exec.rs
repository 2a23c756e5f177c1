//! `Exec` ops: one RUN in the sandbox, on an overlay of the input snapshots, whose upper
//! directory becomes the new snapshot.

use std::collections::VecDeque;
use std::path::PathBuf;

use rbuild_executor::{MountSpec, Network, OutputStream, Rlimit, RlimitResource, Rootfs, SandboxSpec, Security};
use rbuild_solver::ir::{ExecOp, NetworkMode, SecurityMode, Ulimit};
use rbuild_solver::{LogStream, Progress};

use crate::error::WorkerError;
use crate::mounts::{Planned, PlannedKind, PreparedMounts};

/// Lines of output kept to show with a failure.
const TAIL_LINES: usize = 10;

/// Hostname inside every RUN, as BuildKit's.
pub const HOSTNAME: &str = "buildkitsandbox";

/// What the build allows RUN steps and how much it says about them (`--allow`, `--debug`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecSettings {
    /// `--allow security.insecure`: `RUN --security=insecure` may run unconfined.
    pub allow_insecure: bool,
    /// `--debug`: report each step's effective confinement as status lines.
    pub debug: bool,
}

/// How RUN steps get their root filesystem (`RBUILD_SNAPSHOTTER`, after BuildKit's
/// `--oci-worker-snapshotter`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RunRootfs {
    /// An overlay, or the copy fallback from the first step whose overlay the kernel
    /// refuses on (said once in the progress output).
    #[default]
    Auto,
    /// Always an overlay (`overlayfs`): a refused mount fails the step.
    Overlay,
    /// Always a copy of the input filesystem, diffed after the run (`native`).
    Copy,
}

impl std::str::FromStr for RunRootfs {
    type Err = String;

    fn from_str(s: &str) -> Result<RunRootfs, String> {
        match s {
            "" | "auto" => Ok(RunRootfs::Auto),
            "overlayfs" | "overlay" => Ok(RunRootfs::Overlay),
            "native" | "copy" => Ok(RunRootfs::Copy),
            other => Err(format!("unknown snapshotter {other:?}: use auto, overlayfs or native")),
        }
    }
}

/// The entitlement `security.insecure`, as docker buildx names it.
pub const INSECURE_ENTITLEMENT: &str = "security.insecure";

/// Refuses a step that asks for more than the build allows. Checked when the build's keys are
/// derived (before anything runs or is pulled, cache hits included, as BuildKit validates
/// entitlements up front) and again right before the step runs.
pub fn check_allowed(op: &ExecOp, settings: ExecSettings) -> Result<(), WorkerError> {
    if op.security == SecurityMode::Insecure && !settings.allow_insecure {
        return Err(WorkerError::NotEntitled { entitlement: INSECURE_ENTITLEMENT });
    }
    Ok(())
}

/// Runs `op` with `lower_dirs` (topmost first) as its root and `upper`/`scratch` as the
/// overlay's upper and work areas (or, with [`Rootfs::Copied`], `upper` as the complete
/// rootfs and no lower dirs), and `mounts` applied. Blocking: call from a blocking thread.
#[allow(clippy::too_many_arguments)]
pub fn run(
    op: &ExecOp,
    lower_dirs: Vec<PathBuf>,
    upper: PathBuf,
    scratch: PathBuf,
    rootfs: Rootfs,
    exe: &std::path::Path,
    progress: &Progress,
    mounts: &PreparedMounts,
    settings: ExecSettings,
) -> Result<(), WorkerError> {
    check_allowed(op, settings)?;
    let home = crate::users::home_dir(&crate::merged::MergedView::new(lower_dirs.clone()), &op.user);
    // A step for another architecture needs QEMU registered with binfmt_misc (set up here as
    // root when Debian's emulator is installed); say so before anything starts.
    let emulation = rbuild_executor::prepare_emulation(&op.platform.architecture)?;
    let mut spec = SandboxSpec::new(lower_dirs, upper, scratch, op.args.clone());
    spec.rootfs = rootfs;
    spec.env = op.env.clone();
    // Secret variables and SSH_AUTH_SOCK exist only in the process, never in the op.
    spec.env.extend(mounts.env.iter().cloned());
    // Without a HOME of its own, the step gets the user's, as runc gives it (not in the cache key,
    // as in BuildKit: it is read from the step's input).
    if !spec.env.iter().any(|e| e.starts_with("HOME=")) {
        spec.env.push(format!("HOME={home}"));
    }
    spec.cwd = op.cwd.clone();
    spec.user = op.user.clone();
    spec.hostname = HOSTNAME.to_owned();
    spec.network = match op.network {
        NetworkMode::None => Network::None,
        NetworkMode::Default | NetworkMode::Host => Network::Host,
    };
    spec.security = match op.security {
        SecurityMode::Sandbox => Security::Sandbox,
        SecurityMode::Insecure => Security::Insecure,
    };
    spec.mounts = mounts.mounts.iter().map(mount_spec).collect();
    spec.extra_hosts = op.extra_hosts.iter().map(|h| (h.host.clone(), h.ip.clone())).collect();
    spec.shm_size = op.shm_size;
    spec.rlimits = rlimits(&op.ulimits)?;
    if settings.debug {
        for line in rbuild_executor::describe_confinement(&spec).lines() {
            progress.status(format!("confinement: {line}"));
        }
        if let rbuild_executor::Emulation::Qemu { handler, interpreter } = &emulation {
            progress.status(format!(
                "emulation: {} through binfmt_misc handler {handler} ({})",
                op.platform,
                interpreter.display()
            ));
        }
    }
    let mut tail: VecDeque<String> = VecDeque::new();
    let mut partial = Vec::new();
    let status = rbuild_executor::run(&spec, exe, &mut |stream, bytes| {
        progress.log(
            match stream {
                OutputStream::Stdout => LogStream::Stdout,
                OutputStream::Stderr => LogStream::Stderr,
            },
            bytes,
        );
        partial.extend_from_slice(bytes);
        while let Some(pos) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=pos).collect();
            tail.push_back(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
            if tail.len() > TAIL_LINES {
                tail.pop_front();
            }
        }
    })?;
    if !partial.is_empty() {
        tail.push_back(String::from_utf8_lossy(&partial).into_owned());
        if tail.len() > TAIL_LINES {
            tail.pop_front();
        }
    }
    if status.success() {
        return Ok(());
    }
    let status = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code: {c}"),
        (_, Some(s)) => format!("killed by signal {s}"),
        _ => "failed".to_owned(),
    };
    Err(WorkerError::CommandFailed { command: display_command(&op.args), status, tail: tail.into() })
}

/// The executor's form of `--ulimit`s (`-1` is unlimited).
fn rlimits(ulimits: &[Ulimit]) -> Result<Vec<Rlimit>, WorkerError> {
    let value = |v: i64| u64::try_from(v).unwrap_or(u64::MAX);
    ulimits
        .iter()
        .map(|u| {
            let resource =
                RlimitResource::from_name(&u.name).ok_or_else(|| WorkerError::BadUlimit { name: u.name.clone() })?;
            Ok(Rlimit { resource, soft: value(u.soft), hard: value(u.hard) })
        })
        .collect()
}

/// The executor's form of a prepared mount.
fn mount_spec(m: &Planned) -> MountSpec {
    use rbuild_executor::MountKind as Kind;
    let kind = match &m.kind {
        PlannedKind::Bind { source, readonly } => Kind::Bind { source: source.clone(), readonly: *readonly },
        PlannedKind::Tmpfs { size, mode } => Kind::Tmpfs { size: *size, mode: *mode },
        PlannedKind::File { source, mode, uid, gid } => {
            Kind::File { source: source.clone(), mode: *mode, uid: *uid, gid: *gid }
        }
    };
    MountSpec { target: m.target.clone(), kind }
}

/// `/bin/sh -c echo hi` as BuildKit shows it.
pub fn display_command(args: &[String]) -> String {
    args.join(" ")
}

/// The kernel's reason, when `error` is the kernel refusing the overlay itself (no
/// overlayfs, an upper filesystem it cannot use, no permission in a user namespace): the
/// copy fallback can run the step then.
pub(crate) fn overlay_refused(error: &WorkerError) -> Option<String> {
    use rbuild_executor::{ExecError, MountError, SetupError};
    match error {
        WorkerError::Sandbox(ExecError::Setup(SetupError::Mount(e @ MountError::Overlay { .. }))) => {
            let cause = std::error::Error::source(e).map(ToString::to_string).unwrap_or_default();
            Some(cause)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use rbuild_solver::ir::Platform;

    use super::*;

    fn op(security: SecurityMode) -> ExecOp {
        ExecOp {
            rootfs: None,
            args: vec!["true".into()],
            env: vec![],
            cwd: "/".into(),
            user: String::new(),
            network: NetworkMode::Default,
            security,
            platform: Platform::host(),
            mounts: vec![],
            extra_hosts: vec![],
            ulimits: vec![],
            shm_size: None,
        }
    }

    #[test]
    fn ulimits_map_to_rlimits() {
        let u = |name: &str, soft, hard| Ulimit { name: name.into(), soft, hard };
        let got = rlimits(&[u("nofile", 1024, 2048), u("core", -1, -1)]).unwrap();
        assert_eq!(got[0], Rlimit { resource: RlimitResource::Nofile, soft: 1024, hard: 2048 });
        assert_eq!(got[1], Rlimit { resource: RlimitResource::Core, soft: u64::MAX, hard: u64::MAX });
        assert!(matches!(rlimits(&[u("files", 1, 1)]), Err(WorkerError::BadUlimit { .. })));
    }

    #[test]
    fn snapshotter_names() {
        assert_eq!("auto".parse(), Ok(RunRootfs::Auto));
        assert_eq!("overlayfs".parse(), Ok(RunRootfs::Overlay));
        assert_eq!("native".parse(), Ok(RunRootfs::Copy));
        assert!("zfs".parse::<RunRootfs>().unwrap_err().contains("auto, overlayfs or native"));
    }

    #[test]
    fn insecure_needs_the_entitlement() {
        let denied = ExecSettings::default();
        let allowed = ExecSettings { allow_insecure: true, ..ExecSettings::default() };
        assert!(check_allowed(&op(SecurityMode::Sandbox), denied).is_ok());
        assert!(check_allowed(&op(SecurityMode::Insecure), allowed).is_ok());
        let err = check_allowed(&op(SecurityMode::Insecure), denied).unwrap_err();
        assert_eq!(err.to_string(), "security.insecure is not allowed: pass --allow security.insecure");
        assert!(err.hint().is_some_and(|h| h.contains("trust")));
    }
}
