//! `Exec` ops: one RUN in the sandbox, on an overlay of the input snapshots, whose upper
//! directory becomes the new snapshot.

use std::collections::VecDeque;
use std::path::PathBuf;

use rbuild_executor::{Network, OutputStream, SandboxSpec};
use rbuild_solver::ir::{ExecOp, NetworkMode};
use rbuild_solver::{LogStream, Progress};

use crate::error::WorkerError;

/// Lines of output kept to show with a failure.
const TAIL_LINES: usize = 10;

/// Hostname inside every RUN, as BuildKit's.
pub const HOSTNAME: &str = "buildkitsandbox";

/// Runs `op` with `lower_dirs` (topmost first) as its root and `upper`/`scratch` as the
/// overlay's upper and work areas. Blocking: call from a blocking thread.
pub fn run(
    op: &ExecOp,
    lower_dirs: Vec<PathBuf>,
    upper: PathBuf,
    scratch: PathBuf,
    exe: &std::path::Path,
    progress: &Progress,
) -> Result<(), WorkerError> {
    let spec = SandboxSpec {
        lower_dirs,
        upper_dir: upper,
        work_dir: scratch,
        args: op.args.clone(),
        env: op.env.clone(),
        cwd: op.cwd.clone(),
        user: op.user.clone(),
        hostname: HOSTNAME.to_owned(),
        network: match op.network {
            NetworkMode::None => Network::None,
            NetworkMode::Default | NetworkMode::Host => Network::Host,
        },
    };
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

/// `/bin/sh -c echo hi` as BuildKit shows it.
pub fn display_command(args: &[String]) -> String {
    args.join(" ")
}
