//! The control channel between the host side and the helper.
//!
//! It is a Unix socket pair; the helper gets its end as fd 0 (and moves it to a
//! close-on-exec fd at once, putting `/dev/null` on fd 0 for the command):
//!
//! 1. host → helper: the [`SandboxSpec`](crate::SandboxSpec) as JSON, then `shutdown(Write)`;
//! 2. helper/init → host: [`Report`]s, one JSON object per line.
//!
//! The init's copy of the socket is close-on-exec, so once the command runs nothing in the
//! sandbox can write to it. The host reads reports until EOF, which comes when the helper
//! exits.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::error::{ExecError, SetupError};
use crate::spec::ExitStatus;

/// The `argv[1]` that makes the main binary run [`sandbox_main`](crate::sandbox_main).
pub const HELPER_ARG: &str = "__sandbox";

/// One message from the helper (or the sandbox init) to the host side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Report {
    /// The init created these mount points (names directly under the rootfs, e.g. `proc`)
    /// in the overlay, so they are now empty dirs in the upper dir that the host removes.
    CreatedMountpoints(Vec<String>),
    /// Setup failed before the command ran.
    SetupFailed(SetupError),
    /// PID 1 (the command) ended.
    Exited(ExitStatus),
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
        let report = serde_json::from_str(&line).map_err(|source| ExecError::BadReport {
            line: line.clone(),
            source,
        })?;
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
            Report::CreatedMountpoints(vec!["proc".into(), "sys".into()]),
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
        assert!(matches!(
            receive_all(&b"nope\n"[..]),
            Err(ExecError::BadReport { .. })
        ));
    }
}
