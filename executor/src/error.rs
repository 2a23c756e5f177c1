//! Errors: [`ExecError`] on the host side, [`SetupError`] from inside the sandbox.
//!
//! A [`SetupError`] is produced in the helper or in the sandbox's init before `execve`, and
//! crosses the process boundary as JSON. Every cause in its chain is itself serializable
//! (down to [`OsError`]), so the host gets the whole chain, not just a message.

use std::io;
use std::path::PathBuf;

use nix::errno::Errno;
use serde::{Deserialize, Serialize};

use crate::init::{CommandError, ConfineError, MountError, UserError};
use crate::spec::{ExitStatus, OutputStream};

/// An OS error (errno) that can cross a process boundary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct OsError {
    /// The errno value, when the error came from a system call.
    pub errno: Option<i32>,
    /// The rendered message, e.g. `No such file or directory (os error 2)`.
    pub message: String,
}

impl OsError {
    /// True if this is the given errno.
    #[must_use]
    pub fn is(&self, errno: Errno) -> bool {
        self.errno == Some(errno as i32)
    }
}

impl From<Errno> for OsError {
    fn from(errno: Errno) -> OsError {
        OsError { errno: Some(errno as i32), message: format!("{} (os error {})", errno.desc(), errno as i32) }
    }
}

impl From<io::Error> for OsError {
    fn from(error: io::Error) -> OsError {
        OsError { errno: error.raw_os_error(), message: error.to_string() }
    }
}

/// The sandbox could not be set up, so the command never ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The helper could not read the spec from its control channel.
    #[error("sandbox helper: cannot read the spec from its control channel")]
    ReadSpec {
        /// The cause.
        #[source]
        source: OsError,
    },
    /// The spec the helper received is not valid JSON for this version.
    #[error("sandbox helper: cannot parse the spec: {reason}")]
    ParseSpec {
        /// What serde said.
        reason: String,
    },
    /// A process-level preparation step of the helper failed.
    #[error("sandbox helper: cannot {step}")]
    Prepare {
        /// What was attempted, e.g. `redirect stdin to /dev/null`.
        step: String,
        /// The cause.
        #[source]
        source: OsError,
    },
    /// `unshare(2)` failed.
    #[error("cannot create namespaces ({namespaces})")]
    Unshare {
        /// The namespaces asked for.
        namespaces: String,
        /// The cause.
        #[source]
        source: OsError,
    },
    /// `fork(2)` of the sandbox's PID 1 failed.
    #[error("cannot fork the sandbox init process")]
    Fork {
        /// The cause.
        #[source]
        source: OsError,
    },
    /// `sethostname(2)` failed.
    #[error("cannot set the hostname to {hostname:?}")]
    SetHostname {
        /// The hostname asked for.
        hostname: String,
        /// The cause.
        #[source]
        source: OsError,
    },
    /// Bringing up `lo` in the new network namespace failed.
    #[error("cannot bring up the loopback interface")]
    LoopbackUp {
        /// The cause.
        #[source]
        source: OsError,
    },
    /// Building the root filesystem failed.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// Resolving or switching to the user failed.
    #[error(transparent)]
    User(#[from] UserError),
    /// Entering the working directory or executing the command failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// Applying rlimits, capabilities or seccomp failed.
    #[error(transparent)]
    Confine(#[from] ConfineError),
    /// Creating, configuring or joining the run's cgroup failed.
    #[error("cgroup limits: cannot {step} {}", path.display())]
    Cgroup {
        /// What was attempted, e.g. `create`.
        step: String,
        /// The cgroup file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: OsError,
    },
    /// A limit needs a cgroup v1 controller that is not mounted.
    #[error("cgroup limits: the {controller} controller is not mounted")]
    CgroupController {
        /// `memory`, `cpu` or `pids`.
        controller: String,
    },
}

impl SetupError {
    /// A suggestion for the user, when the error has a usual cause.
    #[must_use]
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            SetupError::Mount(error) => error.hint(),
            SetupError::Unshare { source, .. } if source.is(Errno::EPERM) => Some(
                "creating namespaces needs root (or CAP_SYS_ADMIN); where namespaces are not \
                 available, Isolation::Chroot is a (weaker) fallback",
            ),
            SetupError::Cgroup { .. } | SetupError::CgroupController { .. } => Some(
                "memory, cpu and pids limits need a writable cgroup filesystem: root with cgroup \
                 v1 controllers mounted, or a delegated cgroup v2 subtree whose own group is \
                 empty",
            ),
            _ => None,
        }
    }
}

/// Running a command in the sandbox failed (as opposed to the command exiting non-zero,
/// which is an `Ok(ExitStatus)`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// The spec can never run.
    #[error("invalid sandbox spec: {reason}")]
    InvalidSpec {
        /// What is wrong with it.
        reason: String,
    },
    /// Creating a scratch directory in `work_dir` failed.
    #[error("cannot create sandbox directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Creating the control channel to the helper failed.
    #[error("cannot create the sandbox control channel")]
    CreateChannel {
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Spawning `exe __sandbox` failed.
    #[error("cannot spawn the sandbox helper {}", exe.display())]
    SpawnHelper {
        /// The helper executable.
        exe: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Sending the spec to the helper failed.
    #[error("cannot send the spec to the sandbox helper")]
    SendSpec {
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading the command's output failed.
    #[error("cannot read the command's {stream}")]
    ReadOutput {
        /// Which stream.
        stream: OutputStream,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Reading the helper's reports failed.
    #[error("cannot read the sandbox helper's reports")]
    ReadReport {
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The helper sent something that is not a report.
    #[error("the sandbox helper sent an invalid report: {line:?}")]
    BadReport {
        /// The line received.
        line: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// Waiting for the helper failed.
    #[error("cannot wait for the sandbox helper")]
    WaitHelper {
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The helper ended without reporting the command's status (it was killed, or crashed;
    /// anything it printed is in the stderr stream).
    #[error("the sandbox helper ended without a result ({status})")]
    HelperDied {
        /// The helper's own exit status.
        status: std::process::ExitStatus,
    },
    /// The sandbox could not be set up; the command did not run.
    #[error("cannot set up the sandbox")]
    Setup(
        /// The cause, as reported from inside the sandbox.
        #[source]
        #[from]
        SetupError,
    ),
    /// The command failed after the OOM killer killed processes of the sandbox: the step
    /// needed more memory than its limit.
    #[error("exceeded memory limit of {limit_bytes} bytes ({status})")]
    OutOfMemory {
        /// The limit, [`Limits::memory`](crate::Limits::memory).
        limit_bytes: u64,
        /// How the command ended (usually killed by signal 9, or exit code 137 from a shell
        /// whose child was killed).
        status: ExitStatus,
    },
    /// [`cancel_all`](crate::cancel_all) was called: no new sandbox starts in this process.
    #[error("the build was cancelled")]
    Cancelled,
    /// Removing a mount point the sandbox created from the upper dir failed.
    #[error("cannot remove sandbox mount point {} from the upper dir", path.display())]
    CleanUpper {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl ExecError {
    /// A suggestion for the user, when the error has a usual cause.
    #[must_use]
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            ExecError::Setup(error) => error.hint(),
            _ => None,
        }
    }
}
