//! The control channel between the host side and the helper.
//!
//! It is a Unix socket pair; the helper gets its end as fd 0 (and moves it to a
//! close-on-exec fd at once, putting `/dev/null` on fd 0 for the command):
//!
//! 1. host → helper: a [`Request`] as JSON (the [`SandboxSpec`](crate::SandboxSpec) and
//!    the seccomp filters, compiled once per host process), then `shutdown(Write)`;
//! 2. helper/init → host: [`Report`]s, one JSON object per line.
//!
//! The init's copy of the socket is close-on-exec, so once the command runs nothing in the
//! sandbox can write to it. The host reads reports until EOF, which comes when the helper
//! exits.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::error::{ExecError, SetupError};
use crate::seccomp::Program;
use crate::spec::{ExitStatus, SandboxSpec};

/// The `argv[1]` that makes the main binary run [`sandbox_main`](crate::sandbox_main).
pub const HELPER_ARG: &str = "__sandbox";

/// The seccomp filters of [`Security::Sandbox`](crate::Security::Sandbox) in installation
/// order, or why the profile does not compile here.
pub(crate) type Filters = Result<Vec<Program>, String>;

/// What the host sends the helper.
#[derive(Debug, Serialize)]
pub(crate) struct Request<'a> {
    pub(crate) spec: &'a SandboxSpec,
    /// The compiled filters (`None` when the spec needs none).
    pub(crate) seccomp: Option<&'a Filters>,
}

/// [`Request`] as the helper receives it.
#[derive(Debug, Deserialize)]
pub(crate) struct Received {
    pub(crate) spec: SandboxSpec,
    pub(crate) seccomp: Option<Filters>,
}

/// One message from the helper (or the sandbox init) to the host side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Report {
    /// The init created these mount points in the overlay, so they are in the upper dir,
    /// and the host removes them after the run (if still empty).
    Created(Created),
    /// Setup failed before the command ran.
    SetupFailed(SetupError),
    /// The OOM killer killed this many processes of the sandbox's memory cgroup.
    OomKilled(u64),
    /// PID 1 (the command) ended.
    Exited(ExitStatus),
    /// The helper's wait status (`waitpid(2)`), sent by the zygote that forked it once it
    /// has reaped it: the last report of a run whose helper came from the zygote.
    HelperExited(i32),
}

/// Mount points the init created on the overlay: paths relative to the rootfs (so to the
/// upper dir), parents before children, plus the times of the existing directories they
/// were created in, which the host restores after removing them (as BuildKit's
/// `MountStubsCleaner` does, so the parent's mtime does not change the layer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Created {
    pub(crate) paths: Vec<String>,
    pub(crate) parents: Vec<ParentTimes>,
}

/// An existing directory's access and modification times, `(seconds, nanoseconds)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ParentTimes {
    /// Relative to the rootfs; `""` is the root itself.
    pub(crate) path: String,
    pub(crate) atime: (i64, i64),
    pub(crate) mtime: (i64, i64),
}

impl Created {
    pub(crate) fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

/// Writes one report line. The channel is a stream socket; each report is small and written
/// by one process at a time (the init before `execve`, the helper after `waitpid`).
pub(crate) fn send(mut channel: impl Write, report: &Report) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(report).map_err(std::io::Error::other)?;
    line.push(b'\n');
    channel.write_all(&line)
}

/// Reads all report lines until EOF.
pub(crate) fn receive_all(channel: impl BufRead) -> Result<Vec<Report>, ExecError> {
    let mut reports = Vec::new();
    for line in channel.lines() {
        let line = line.map_err(|source| ExecError::ReadReport { source })?;
        if line.is_empty() {
            continue;
        }
        let report =
            serde_json::from_str(&line).map_err(|source| ExecError::BadReport { line: line.clone(), source })?;
        reports.push(report);
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::OsError;
    use crate::init::CommandError;
    use nix::errno::Errno;

    #[test]
    fn reports_round_trip_with_their_error_chain() {
        let reports = vec![
            Report::Created(Created {
                paths: vec!["proc".into(), "run/secrets".into()],
                parents: vec![ParentTimes { path: String::new(), atime: (1, 2), mtime: (3, 4) }],
            }),
            Report::OomKilled(2),
            Report::SetupFailed(SetupError::Command(CommandError::Exec {
                path: "/bin/x".into(),
                source: OsError::from(Errno::ENOEXEC),
            })),
            Report::Exited(ExitStatus::Signaled(9)),
        ];
        let mut wire = Vec::new();
        for report in &reports {
            send(&mut wire, report).unwrap();
        }
        assert_eq!(receive_all(&wire[..]).unwrap(), reports);
    }

    #[test]
    fn garbage_is_a_typed_error() {
        assert!(matches!(receive_all(&b"nope\n"[..]), Err(ExecError::BadReport { .. })));
    }
}
