//! What a RUN step asks for ([`SandboxSpec`]) and what it gives back ([`ExitStatus`]).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::ExecError;

/// Everything the sandbox needs to run one command.
///
/// It is sent to the helper process as JSON, so it derives `Serialize` and `Deserialize`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    /// Overlay lower directories, **topmost first**. May be empty (`FROM scratch`).
    pub lower_dirs: Vec<PathBuf>,
    /// Overlay upper directory. Must exist; after the run it holds exactly the step's diff.
    pub upper_dir: PathBuf,
    /// Scratch directory for the overlay, on the same filesystem as `upper_dir`, and empty.
    ///
    /// The executor creates `work/` (the overlay workdir), `merged/` (the mount point of the
    /// rootfs, only ever mounted inside the sandbox's private mount namespace) and `empty/`
    /// (the lower dir used when `lower_dirs` is empty) inside it. The caller deletes it after
    /// the run.
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
}

/// The network namespace of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    /// Share the host's network namespace.
    Host,
    /// A new, empty network namespace whose only interface, `lo`, is brought up.
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

impl SandboxSpec {
    /// Rejects specs that can never run, before any process is spawned.
    pub(crate) fn validate(&self) -> Result<(), ExecError> {
        let invalid = |reason: String| Err(ExecError::InvalidSpec { reason });
        if self.args.is_empty() {
            return invalid("args is empty".into());
        }
        if !self.cwd.starts_with('/') {
            return invalid(format!("cwd {:?} is not absolute", self.cwd));
        }
        let strings =
            self.args
                .iter()
                .chain(&self.env)
                .chain([&self.cwd, &self.user, &self.hostname]);
        if let Some(bad) = strings.into_iter().find(|s| s.contains('\0')) {
            return invalid(format!("{bad:?} contains a NUL byte"));
        }
        if let Some(bad) = self.env.iter().find(|e| !e.contains('=')) {
            return invalid(format!("env entry {bad:?} is not K=V"));
        }
        for dir in self
            .lower_dirs
            .iter()
            .chain([&self.upper_dir, &self.work_dir])
        {
            if !dir.is_absolute() {
                return invalid(format!("{} is not an absolute path", dir.display()));
            }
        }
        Ok(())
    }

    /// The directories the executor keeps inside `work_dir`.
    pub(crate) fn layout(&self) -> Layout {
        Layout::new(&self.work_dir)
    }
}

/// The scratch directories inside [`SandboxSpec::work_dir`].
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// The overlay `workdir`.
    pub(crate) overlay_work: PathBuf,
    /// Where the overlay is mounted (inside the sandbox's mount namespace only).
    pub(crate) merged: PathBuf,
    /// The lower dir used for `FROM scratch`.
    pub(crate) empty_lower: PathBuf,
}

impl Layout {
    fn new(work_dir: &Path) -> Layout {
        Layout {
            overlay_work: work_dir.join("work"),
            merged: work_dir.join("merged"),
            empty_lower: work_dir.join("empty"),
        }
    }

    /// All directories, for creating them up front.
    pub(crate) fn dirs(&self) -> [&Path; 3] {
        [&self.overlay_work, &self.merged, &self.empty_lower]
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
        }
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
        let cases: [fn(&mut SandboxSpec); 5] = [
            |s| s.args.clear(),
            |s| s.cwd = "rel".into(),
            |s| s.env.push("NOEQUALS".into()),
            |s| s.args.push("a\0b".into()),
            |s| s.lower_dirs.push("relative".into()),
        ];
        for break_it in cases {
            let mut s = spec();
            break_it(&mut s);
            assert!(
                matches!(s.validate(), Err(ExecError::InvalidSpec { .. })),
                "{s:?}"
            );
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
