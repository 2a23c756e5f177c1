//! The sandbox helper: a fresh single-threaded process per run, forked by the
//! [`zygote`](crate::zygote) (or spawned by [`run`](crate::run) as `<exe> __sandbox`).
//!
//! 1. `PR_SET_PDEATHSIG(SIGKILL)`: if its parent dies (the zygote, which exits when rbuild
//!    is gone, or rbuild itself), so does the helper (and, through the init's own death
//!    signal, the whole sandbox);
//! 2. takes the control channel off fd 0 (into a close-on-exec fd), puts `/dev/null` on fd 0,
//!    marks every other inherited fd close-on-exec, reads the spec (and the seccomp filters,
//!    compiled once by the host side);
//! 3. creates the run's cgroups when the spec has limits ([`cgroups`](crate::cgroups));
//! 4. `unshare(CLONE_NEWPID | NEWUTS | NEWIPC [| NEWNET])` (with `Isolation::Chroot`, each
//!    one alone, keeping those the host allows), sets the hostname, brings `lo` up for
//!    `Network::None` (UTS, IPC and net namespaces apply to the caller at once);
//! 5. forks once: the child is PID 1 of the new pid namespace (the [`init`](crate::init));
//!    the helper stays in the host's mount namespace and waits for it. When PID 1 exits the
//!    kernel kills everything else in its pid namespace (pid_namespaces(7)), so nothing
//!    outlives the step, and its mount namespace (with every sandbox mount) goes with it.
//!    Without a pid namespace (chroot fallback) the helper kills the init's process group;
//! 6. reports OOM kills, removes the cgroups, reports `Exited`/`Signaled` on the channel and
//!    exits with the shell-style code.

use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::WaitStatus;
use nix::unistd::{ForkResult, Pid};

use crate::cgroups::Cgroup;
use crate::error::{OsError, SetupError};
use crate::options::Isolation;
use crate::protocol::{self, Received, Report};
use crate::spec::{ExitStatus, Network, SandboxSpec};

/// Exit code of the helper (and of the init) when setup fails; the host relies on the
/// `SetupFailed` report, not on this code.
pub(crate) const SETUP_FAILED: i32 = 125;

/// The helper's entry point: the main binary calls it when `argv[1] == "__sandbox"`, before
/// starting any thread (tokio included). Never returns. (With `--zygote` after it, the
/// process is the zygote that forks helpers instead.)
pub fn sandbox_main() -> ! {
    if std::env::args_os().nth(2).is_some_and(|arg| arg == crate::zygote::ZYGOTE_ARG) {
        crate::zygote::zygote_main();
    }
    std::process::exit(helper_main())
}

/// A helper's life, in a spawned helper or one forked by the zygote; returns its exit code.
pub(crate) fn helper_main() -> i32 {
    // The spawning thread's death kills us (prctl(2)); only our own process is affected.
    let pdeathsig = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    // SIGTERM (from `cancel_all`) waits until the sandbox is up, and then takes it down in
    // order (see `wait_for`); a terminal's Ctrl-C is rbuild's business, not ours. (The init
    // resets both before it runs the command.)
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::from(Signal::SIGTERM)), None);
    crate::sys::ignore_sigint();
    let channel = match take_channel() {
        Ok(channel) => channel,
        Err(error) => {
            // No channel to report on: stderr is all there is.
            eprintln!("rbuild sandbox helper: cannot take the control channel from fd 0: {error}");
            return SETUP_FAILED;
        }
    };
    let result =
        pdeathsig.map_err(|e| prepare_error("set the parent-death signal", e.into())).and_then(|()| sandbox(&channel));
    let (report, code) = match result {
        Ok(status) => (Report::Exited(status), status.shell_code()),
        Err(error) => (Report::SetupFailed(error), SETUP_FAILED),
    };
    // If the host is gone there is nobody left to tell.
    let _ = protocol::send(&channel, &report);
    code
}

fn prepare_error(step: &str, source: OsError) -> SetupError {
    SetupError::Prepare { step: step.to_owned(), source }
}

/// Moves the channel (fd 0) to a close-on-exec fd, so the command never inherits it.
fn take_channel() -> std::io::Result<UnixStream> {
    let fd = std::io::stdin().as_fd().try_clone_to_owned()?;
    Ok(UnixStream::from(fd))
}

fn read_request(mut channel: &UnixStream) -> Result<Received, SetupError> {
    let mut json = Vec::new();
    channel.read_to_end(&mut json).map_err(|e| SetupError::ReadSpec { source: e.into() })?;
    serde_json::from_slice(&json).map_err(|e| SetupError::ParseSpec { reason: e.to_string() })
}

fn sandbox(channel: &UnixStream) -> Result<ExitStatus, SetupError> {
    nix::sys::stat::umask(Mode::from_bits_truncate(0o022));
    crate::sys::cloexec_from(3).map_err(|e| prepare_error("mark inherited fds close-on-exec", e.into()))?;
    let Received { spec, seccomp } = read_request(channel)?;
    let null = std::fs::File::open("/dev/null")
        .map_err(|e| prepare_error("open /dev/null for the command's stdin", e.into()))?;
    nix::unistd::dup2_stdin(&null).map_err(|e| prepare_error("redirect stdin to /dev/null", e.into()))?;
    drop(null);

    let cgroup = Cgroup::create(&spec.limits)?;
    let namespaces = unshare(&spec)?;
    if namespaces.contains(CloneFlags::CLONE_NEWUTS) {
        nix::unistd::sethostname(&spec.hostname)
            .map_err(|e| SetupError::SetHostname { hostname: spec.hostname.clone(), source: e.into() })?;
    }
    if namespaces.contains(CloneFlags::CLONE_NEWNET) {
        crate::sys::loopback_up().map_err(|e| SetupError::LoopbackUp { source: e.into() })?;
    }
    let procs = cgroup.as_ref().map(Cgroup::procs_files).unwrap_or_default();

    match crate::sys::fork().map_err(|e| SetupError::Fork { source: e.into() })? {
        ForkResult::Child => {
            let error = crate::init::run(&spec, seccomp.as_ref(), channel, &procs);
            let _ = protocol::send(channel, &Report::SetupFailed(error));
            std::process::exit(SETUP_FAILED)
        }
        ForkResult::Parent { child } => {
            let status = wait_for(child);
            if !namespaces.contains(CloneFlags::CLONE_NEWPID) {
                // No pid namespace to take the leftovers down: kill the init's session's
                // process group (the init called setsid, so its pgid is its pid).
                let _ = nix::sys::signal::killpg(child, Signal::SIGKILL);
            }
            let kills = cgroup.as_ref().map_or(0, Cgroup::oom_kills);
            if kills > 0 {
                let _ = protocol::send(channel, &Report::OomKilled(kills));
            }
            drop(cgroup); // removes the groups, now empty
            status
        }
    }
}

/// Creates the helper's namespaces and returns those it got: all of them with
/// `Isolation::Namespaces` (or an error), whichever the host allows with `Isolation::Chroot`.
fn unshare(spec: &SandboxSpec) -> Result<CloneFlags, SetupError> {
    let mut wanted = CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    if spec.network == Network::None {
        wanted |= CloneFlags::CLONE_NEWNET;
    }
    if spec.isolation == Isolation::Namespaces {
        nix::sched::unshare(wanted)
            .map_err(|e| SetupError::Unshare { namespaces: format!("{wanted:?}"), source: e.into() })?;
        return Ok(wanted);
    }
    let mut got = CloneFlags::empty();
    for flag in wanted.iter() {
        if nix::sched::unshare(flag).is_ok() {
            got |= flag;
        }
    }
    Ok(got)
}

/// Waits for PID 1. By the time it is reaped, the kernel has killed and reaped the rest of
/// its pid namespace. A `SIGTERM` (blocked since the start) kills it with `SIGKILL` first,
/// so that the caller still removes the cgroups and reports.
fn wait_for(child: Pid) -> Result<ExitStatus, SetupError> {
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let terms = SignalFd::with_flags(&SigSet::from(Signal::SIGTERM), SfdFlags::SFD_CLOEXEC);
    if let (Ok(terms), Ok(pidfd)) = (terms, crate::sys::pidfd_open(child)) {
        loop {
            let mut fds =
                [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN), PollFd::new(terms.as_fd(), PollFlags::POLLIN)];
            match nix::poll::poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(_) => break,
            }
            let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
            let (exited, terminated) = (ready(&fds[0]), ready(&fds[1]));
            if terminated {
                let _ = terms.read_signal();
                let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
            }
            if exited {
                break;
            }
        }
    }
    loop {
        match nix::sys::wait::waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(ExitStatus::Exited(code)),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(ExitStatus::Signaled(signal as i32)),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(prepare_error("wait for the sandbox init", e.into())),
        }
    }
}
