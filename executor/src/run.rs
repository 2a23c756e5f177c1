//! The host side: spawn the helper, stream the output, collect the result, clean the upper
//! dir. Only `std::process::Command` is used here: the caller is multi-threaded (tokio), so
//! it must never fork to run Rust code. Everything happens on the calling thread: the output
//! is read with poll(2), no thread is started.

use std::io::{BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::error::ExecError;
use crate::options::Security;
use crate::protocol::{self, Report, Request, HELPER_ARG};
use crate::spec::{ExitStatus, OutputStream, SandboxSpec};
use crate::zygote;

/// The most bytes passed to `on_output` at once.
const CHUNK_SIZE: usize = 64 * 1024;

/// Runs `spec` in a sandbox and returns how the command ended.
///
/// Blocks until the command (and everything it started) has ended; call it from a blocking
/// thread. `exe` is a binary whose `main` calls [`sandbox_main`](crate::sandbox_main) when
/// `argv[1]` is `__sandbox` (normally `/proc/self/exe`); the first run starts it once as the
/// process's zygote, which lives until the process exits. The command's stdout and stderr are
/// passed to `on_output` as they arrive, on the calling thread; its stdin is `/dev/null`.
///
/// The caller guarantees that `upper_dir` and `work_dir` exist, are on the same filesystem,
/// and that `work_dir` is empty and used by no other run.
///
/// # Errors
///
/// [`ExecError::Setup`] when the sandbox could not be set up (bad overlay, unknown user,
/// command not found...): the command did not run. [`ExecError::OutOfMemory`] when the
/// command failed after the OOM killer hit the sandbox's memory limit. Other variants for
/// failures of the host side. A command that exits non-zero or is killed is `Ok`.
pub fn run(
    spec: &SandboxSpec,
    exe: &Path,
    on_output: &mut dyn FnMut(OutputStream, &[u8]),
) -> Result<ExitStatus, ExecError> {
    spec.validate()?;
    if CANCELLED.load(Ordering::SeqCst) {
        return Err(ExecError::Cancelled);
    }
    // Normally a no-op (the caller made it); a missing one is created, as it always was.
    std::fs::create_dir_all(&spec.work_dir)
        .map_err(|source| ExecError::CreateDir { path: spec.work_dir.clone(), source })?;
    let (host_end, helper_end) = UnixStream::pair().map_err(|source| ExecError::CreateChannel { source })?;
    let mut helper = Helper::start(exe, helper_end)?;
    // Dropped (unregistered) before the helper is reaped, so that `cancel_all` never
    // signals a reused pid: right before `wait` below, or before `helper` should we unwind.
    let live = Live::register(&helper);
    let sent = send_spec(&host_end, spec);
    let (read_error, reports) = stream_output(&mut helper.outputs, &host_end, on_output);
    drop(live);
    let waited = helper.wait(reports.as_deref().unwrap_or_default());
    let reports = reports?;
    let created: Vec<_> = reports
        .iter()
        .filter_map(|r| match r {
            Report::Created(created) => Some(created),
            _ => None,
        })
        .collect();
    let cleaned = crate::cleanup::clean_upper(&spec.upper_dir, &created);

    let mut exited = None;
    let mut oom_kills = 0;
    for report in reports {
        match report {
            Report::SetupFailed(error) => return Err(ExecError::Setup(error)),
            Report::Exited(status) => exited = Some(status),
            Report::OomKilled(kills) => oom_kills += kills,
            Report::Created(_) | Report::HelperExited(_) => {}
        }
    }
    cleaned?;
    if let Some(error) = read_error {
        return Err(error);
    }
    match (exited, spec.limits.memory) {
        (Some(status), Some(limit_bytes)) if oom_kills > 0 && !status.success() => {
            Err(ExecError::OutOfMemory { limit_bytes, status })
        }
        (Some(status), _) => Ok(status),
        (None, _) => {
            sent?;
            Err(ExecError::HelperDied { status: waited? })
        }
    }
}

/// Set by [`cancel_all`]: runs refuse to start.
static CANCELLED: AtomicBool = AtomicBool::new(false);

/// The helpers of the runs in progress, by a number of their own, for [`cancel_all`].
static LIVE: Mutex<Vec<(u64, Target)>> = Mutex::new(Vec::new());
static NEXT_LIVE: AtomicU64 = AtomicU64::new(0);

/// How to signal a running helper.
#[derive(Debug)]
enum Target {
    /// A forked helper's pidfd (a copy of the run's).
    Pidfd(OwnedFd),
    /// A spawned helper: our child, not reaped before its run unregisters it.
    Pid(nix::unistd::Pid),
}

impl Target {
    fn terminate(&self) {
        use nix::sys::signal::Signal::SIGTERM;
        let _ = match self {
            Target::Pidfd(fd) => crate::sys::pidfd_send_signal(fd.as_fd(), SIGTERM),
            Target::Pid(pid) => nix::sys::signal::kill(*pid, SIGTERM),
        };
    }
}

/// A run's entry in [`LIVE`], removed when dropped.
struct Live(Option<u64>);

impl Live {
    fn register(helper: &Helper) -> Live {
        let target = match &helper.process {
            Process::Spawned(child) => {
                Target::Pid(nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX)))
            }
            Process::Forked(forked) => match forked.pidfd.try_clone() {
                Ok(fd) => Target::Pidfd(fd),
                Err(_) => return Live(None),
            },
        };
        let id = NEXT_LIVE.fetch_add(1, Ordering::Relaxed);
        let mut live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
        // A cancel that came while this helper started has missed it.
        if CANCELLED.load(Ordering::SeqCst) {
            target.terminate();
        }
        live.push((id, target));
        Live(Some(id))
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(id) = self.0 {
            LIVE.lock().unwrap_or_else(PoisonError::into_inner).retain(|(i, _)| *i != id);
        }
    }
}

/// Ends every sandbox of this process (for an interrupted build): each helper gets
/// `SIGTERM`, kills its sandbox (the command is then killed by signal 9), removes its
/// cgroups and reports as usual, so every [`run`] in progress returns promptly; runs started
/// from now on fail with [`ExecError::Cancelled`]. Returns at once.
pub fn cancel_all() {
    CANCELLED.store(true, Ordering::SeqCst);
    for (_, target) in LIVE.lock().unwrap_or_else(PoisonError::into_inner).iter() {
        target.terminate();
    }
}

/// The helper of a run, with the read ends of its output pipes; killed (and waited for) if
/// `run` unwinds early.
#[derive(Debug)]
struct Helper {
    process: Process,
    outputs: Vec<Output>,
    /// Known to have exited.
    exited: bool,
}

#[derive(Debug)]
enum Process {
    /// Spawned by us (`<exe> __sandbox`): our child.
    Spawned(Child),
    /// Forked by the zygote (its child; see [`crate::zygote`]).
    Forked(zygote::Forked),
}

impl Helper {
    /// Forks the helper through the zygote, or spawns it when the calling thread runs under
    /// a seccomp filter of its own (which a spawned helper inherits) or the zygote fails.
    fn start(exe: &Path, channel: UnixStream) -> Result<Helper, ExecError> {
        let spawn_error = |source| ExecError::SpawnHelper { exe: exe.to_owned(), source };
        let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| spawn_error(e.into()));
        let (stdout, stdout_w) = pipe()?;
        let (stderr, stderr_w) = pipe()?;
        let outputs = vec![
            Output { stream: OutputStream::Stdout, pipe: stdout.into() },
            Output { stream: OutputStream::Stderr, pipe: stderr.into() },
        ];
        if !thread_has_own_seccomp_filter() {
            if let Ok(forked) = zygote::fork_helper(exe, channel.as_fd(), stdout_w.as_fd(), stderr_w.as_fd()) {
                // Our copies of the helper's ends go now, or EOF would never come.
                drop((channel, stdout_w, stderr_w));
                return Ok(Helper { process: Process::Forked(forked), outputs, exited: false });
            }
        }
        let mut command = Command::new(exe);
        command
            .arg(HELPER_ARG)
            .env_clear()
            .stdin(Stdio::from(OwnedFd::from(channel)))
            .stdout(Stdio::from(stdout_w))
            .stderr(Stdio::from(stderr_w));
        let child = command.spawn().map_err(spawn_error)?;
        // `command` owns our copies of the helper's ends: drop them now, or EOF would never
        // come.
        drop(command);
        Ok(Helper { process: Process::Spawned(child), outputs, exited: false })
    }

    /// The helper's exit status, once the reports are in (a forked helper's is the last).
    fn wait(&mut self, reports: &[Report]) -> Result<std::process::ExitStatus, ExecError> {
        use std::os::unix::process::ExitStatusExt;
        let status = match &mut self.process {
            Process::Spawned(child) => child.wait().map_err(|source| ExecError::WaitHelper { source })?,
            Process::Forked(forked) => {
                let raw = reports.iter().rev().find_map(|r| match r {
                    Report::HelperExited(raw) => Some(*raw),
                    _ => None,
                });
                match raw {
                    Some(raw) => std::process::ExitStatus::from_raw(raw),
                    None => {
                        // The zygote died before it could tell (its helpers die with it):
                        // wait for ours to be gone, and call it killed.
                        wait_exit(forked.pidfd.as_fd());
                        std::process::ExitStatus::from_raw(libc::SIGKILL)
                    }
                }
            }
        };
        self.exited = true;
        Ok(status)
    }
}

/// True when the calling thread runs under more seccomp filters than the process's main
/// thread: one it installed itself, which a spawned helper inherits and a forked one (from a
/// zygote started by another thread) would not. Filters the whole process runs under (in a
/// container, say) are the zygote's too. Unknown (a kernel before 5.9) counts as true.
fn thread_has_own_seccomp_filter() -> bool {
    if !crate::sys::thread_has_seccomp_filter() {
        return false;
    }
    let filters = |status: &str| {
        std::fs::read_to_string(status)
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp_filters:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
    };
    !matches!((filters("/proc/thread-self/status"), filters("/proc/self/status")), (Some(a), Some(b)) if a == b)
}

/// Blocks until the process of `pidfd` has exited (a pidfd polls readable then).
fn wait_exit(pidfd: std::os::fd::BorrowedFd<'_>) {
    loop {
        let mut fds = [PollFd::new(pidfd, PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => {}
            _ => return,
        }
    }
}

/// How long a dropped [`Helper`] waits for the sandbox's processes to be gone.
const SANDBOX_EXIT_TIMEOUT: Duration = Duration::from_secs(5);

impl Drop for Helper {
    fn drop(&mut self) {
        if self.exited {
            return;
        }
        // Its death kills the sandbox (PR_SET_PDEATHSIG in the init), asynchronously.
        match &mut self.process {
            Process::Spawned(child) => {
                if let Ok(None) = child.try_wait() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
            Process::Forked(forked) => {
                // The zygote reaps it; the pidfd never refers to another process.
                let _ = crate::sys::pidfd_send_signal(forked.pidfd.as_fd(), nix::sys::signal::Signal::SIGKILL);
                wait_exit(forked.pidfd.as_fd());
            }
        }
        wait_for_writers(&mut self.outputs, SANDBOX_EXIT_TIMEOUT);
    }
}

/// Waits until nobody holds the write end of any of `outputs` (everything in the sandbox
/// has its stdout and stderr: once the last of them is gone, so is the sandbox, bar a
/// process that closed both), discarding what they still write; gives up after `timeout`
/// (the chroot fallback without a pid namespace leaves no one to kill leftovers then).
fn wait_for_writers(outputs: &mut Vec<Output>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while !outputs.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(left) = PollTimeout::try_from(left) else { return };
        if left == PollTimeout::ZERO {
            return;
        }
        let mut fds: Vec<PollFd<'_>> =
            outputs.iter().map(|output| PollFd::new(output.pipe.as_fd(), PollFlags::POLLIN)).collect();
        match nix::poll::poll(&mut fds, left) {
            Ok(0) => return,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
        let ready: Vec<usize> = fds
            .iter()
            .enumerate()
            .filter(|(_, fd)| fd.revents().is_some_and(|r| !r.is_empty()))
            .map(|(i, _)| i)
            .collect();
        drop(fds);
        for i in ready.into_iter().rev() {
            match outputs[i].pipe.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(0) | Err(_) => {
                    outputs.remove(i);
                }
                Ok(_) => {}
            }
        }
    }
}

fn send_spec(mut channel: &UnixStream, spec: &SandboxSpec) -> Result<(), ExecError> {
    let seccomp = (spec.security == Security::Sandbox).then(crate::seccomp::default_filters);
    let request = Request { spec, seccomp };
    let json = serde_json::to_vec(&request).map_err(|e| ExecError::SendSpec { source: e.into() })?;
    std::io::Write::write_all(&mut channel, &json)
        .and_then(|()| channel.shutdown(std::net::Shutdown::Write))
        .map_err(|source| ExecError::SendSpec { source })
}

/// One of the command's outputs (the read end of its pipe), until EOF.
#[derive(Debug)]
struct Output {
    stream: OutputStream,
    pipe: std::fs::File,
}

/// Streams both outputs to `on_output` until EOF (reached when the helper and everything in
/// the sandbox have exited), then reads the reports (a few small lines, which the socket
/// buffers meanwhile). `on_output` runs on this thread, so a slow one holds the command back
/// once the pipe is full. Should it panic, the unwinding drops the [`Helper`], which kills
/// the helper (taking the sandbox with it) and waits for the sandbox to be gone. Outputs
/// are removed from `outputs` as they reach EOF.
fn stream_output(
    outputs: &mut Vec<Output>,
    channel: &UnixStream,
    on_output: &mut dyn FnMut(OutputStream, &[u8]),
) -> (Option<ExecError>, Result<Vec<Report>, ExecError>) {
    let mut read_error = None;
    let mut buf = vec![0; CHUNK_SIZE];
    while !outputs.is_empty() {
        let mut ready = Vec::with_capacity(outputs.len());
        {
            let mut fds: Vec<PollFd<'_>> =
                outputs.iter().map(|output| PollFd::new(output.pipe.as_fd(), PollFlags::POLLIN)).collect();
            match nix::poll::poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    let stream = outputs[0].stream;
                    read_error.get_or_insert(ExecError::ReadOutput { stream, source: e.into() });
                    break;
                }
            }
            for (i, fd) in fds.iter().enumerate() {
                if fd.revents().is_some_and(|r| !r.is_empty()) {
                    ready.push(i);
                }
            }
        }
        let mut done = Vec::new();
        for i in ready {
            let output = &mut outputs[i];
            match output.pipe.read(&mut buf) {
                Ok(0) => done.push(i),
                Ok(n) => on_output(output.stream, &buf[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock) => {}
                Err(source) => {
                    read_error.get_or_insert(ExecError::ReadOutput { stream: output.stream, source });
                    done.push(i);
                }
            }
        }
        for i in done.into_iter().rev() {
            outputs.remove(i);
        }
    }
    (read_error, protocol::receive_all(BufReader::new(channel)))
}
