//! The zygote: one `<exe> __sandbox --zygote` per host process, started on first use, that
//! forks a fresh helper for each run. A helper then costs a fork of a small, already started
//! process instead of an exec of the (large) binary with its dynamic linking and runtime
//! start-up, about a millisecond and a half per step.
//!
//! The zygote is the same binary in the same single-threaded helper mode, so the helper it
//! forks runs exactly what a spawned helper runs
//! ([`helper_main`](crate::helper::helper_main)), with the same fds: the run's control
//! channel on 0 and the output pipes on 1 and 2.
//!
//! - zygote → host, once: a hello byte, which the host waits for (10 s at most) before it
//!   uses a new zygote, so that an `exe` that knows no zygote is found out.
//! - host → zygote (a `SOCK_SEQPACKET` pair, the zygote's end on its fd 0): one byte with the
//!   run's channel and its two output pipes attached (SCM_RIGHTS); the zygote forks, and
//!   answers with the helper's pid and errno (0) and a pidfd of it attached, which the host
//!   uses to kill the helper should the run unwind.
//! - The helper is the zygote's child: the zygote keeps a copy of the run's channel, and when
//!   the helper exits it reaps it and sends its wait status on that channel
//!   ([`Report::HelperExited`]), then closes it. So the host, reading reports until EOF, gets
//!   that status last.
//! - Lifetime: the zygote exits when the host's end of its socket closes, that is when the
//!   host process is gone (the end is close-on-exec and held by the host alone). Its helpers
//!   have `PR_SET_PDEATHSIG(SIGKILL)` and so die with it, and their inits with them: nothing
//!   outlives rbuild, as with spawned helpers. The zygote itself has no parent-death signal:
//!   it would fire when the host *thread* that started it exits (prctl(2)), which a thread
//!   pool does at any time.
//! - A spawned helper inherits the state of the thread that spawns it, seccomp filters
//!   included, and a forked one the zygote's instead (that of the thread that started it).
//!   So a calling thread that runs under a seccomp filter of its own, beyond the process's,
//!   gets a spawned helper, which keeps that filter as before.
//!
//! A zygote found dead is replaced by a new one; should a new one fail (it cannot start, or
//! `exe` knows no zygote), runs of that `exe` spawn their helper from then on.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::wait::WaitStatus;
use nix::unistd::{ForkResult, Pid};

use crate::protocol::{self, Report, HELPER_ARG};

/// The `argv[2]` that makes [`sandbox_main`](crate::sandbox_main) run the zygote.
pub(crate) const ZYGOTE_ARG: &str = "--zygote";

/// What a starting zygote sends first, and how long (ms) the host waits for it.
const HELLO: [u8; 1] = *b"Z";
const HELLO_TIMEOUT_MS: u16 = 10_000;

/// A helper forked by the zygote: its pidfd (the zygote reaps it, so its pid may be reused
/// by the time we look; the pidfd never refers to another process).
#[derive(Debug)]
pub(crate) struct Forked {
    pub(crate) pidfd: OwnedFd,
}

/// A running zygote, as the host sees it.
#[derive(Debug)]
struct Zygote {
    exe: PathBuf,
    child: Child,
    socket: OwnedFd,
}

/// The zygotes of this process, by `exe` (normally just one, of `/proc/self/exe`), and the
/// executables whose freshly started zygote failed (one that does not know `--zygote`,
/// say): those always get spawned helpers.
static ZYGOTES: Mutex<Zygotes> = Mutex::new(Zygotes { running: Vec::new(), unusable: Vec::new() });

#[derive(Debug)]
struct Zygotes {
    running: Vec<Zygote>,
    unusable: Vec<PathBuf>,
}

/// Forks a helper of `exe` with `channel`, `stdout` and `stderr` as its fds 0, 1 and 2,
/// through the zygote of `exe` (started, or restarted once, as needed).
pub(crate) fn fork_helper(
    exe: &Path,
    channel: BorrowedFd<'_>,
    stdout: BorrowedFd<'_>,
    stderr: BorrowedFd<'_>,
) -> std::io::Result<Forked> {
    let mut zygotes = ZYGOTES.lock().unwrap_or_else(PoisonError::into_inner);
    let Zygotes { running, unusable } = &mut *zygotes;
    if unusable.iter().any(|e| e == exe) {
        return Err(std::io::Error::other("this executable cannot run a zygote"));
    }
    // A running zygote may have died since (killed, or its start failed): then one new one.
    for fresh in [false, true] {
        let index = match running.iter().position(|z| z.exe == exe) {
            Some(index) if !fresh => index,
            _ => match Zygote::start(exe) {
                Ok(zygote) => {
                    running.push(zygote);
                    running.len() - 1
                }
                Err(error) => {
                    unusable.push(exe.to_owned());
                    return Err(error);
                }
            },
        };
        match running[index].request(channel, stdout, stderr) {
            Ok(forked) => return Ok(forked),
            Err(error) => {
                let mut gone = running.swap_remove(index);
                let _ = gone.child.kill();
                let _ = gone.child.wait();
                if fresh {
                    unusable.push(exe.to_owned());
                    return Err(error);
                }
            }
        }
    }
    Err(std::io::Error::other("no zygote"))
}

/// Starts the zygote of `exe` now, if none runs, so that the first run does not wait for it
/// (a build calls this while it pulls its base images). A zygote that cannot start makes
/// `exe` spawn its helpers, as when [`fork_helper`] finds that out.
pub(crate) fn prestart(exe: &Path) {
    let mut zygotes = ZYGOTES.lock().unwrap_or_else(PoisonError::into_inner);
    let Zygotes { running, unusable } = &mut *zygotes;
    if running.iter().any(|z| z.exe == exe) || unusable.iter().any(|e| e == exe) {
        return;
    }
    match Zygote::start(exe) {
        Ok(zygote) => running.push(zygote),
        Err(_) => unusable.push(exe.to_owned()),
    }
}

impl Zygote {
    fn start(exe: &Path) -> std::io::Result<Zygote> {
        let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
            .map_err(std::io::Error::from)?;
        let child = Command::new(exe)
            .arg(HELPER_ARG)
            .arg(ZYGOTE_ARG)
            .env_clear()
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut zygote = Zygote { exe: exe.to_owned(), child, socket: ours };
        // A binary whose `sandbox_main` knows no zygote would take the socket for a helper's
        // channel and wait for a spec: wait for the zygote's hello instead, for a while.
        let mut fds = [PollFd::new(zygote.socket.as_fd(), PollFlags::POLLIN)];
        let hello = match nix::poll::poll(&mut fds, HELLO_TIMEOUT_MS) {
            Ok(1) => {
                let mut byte = [0u8; 1];
                matches!(crate::sys::recv_fds(zygote.socket.as_fd(), &mut byte, 0), Ok((1, _)) if byte == HELLO)
            }
            _ => false,
        };
        if !hello {
            let _ = zygote.child.kill();
            let _ = zygote.child.wait();
            return Err(std::io::Error::other("the zygote did not start"));
        }
        Ok(zygote)
    }

    fn request(
        &self,
        channel: BorrowedFd<'_>,
        stdout: BorrowedFd<'_>,
        stderr: BorrowedFd<'_>,
    ) -> std::io::Result<Forked> {
        let socket = self.socket.as_fd();
        crate::sys::send_fds(socket, b"F", &[channel, stdout, stderr])?;
        let mut reply = [0u8; 8];
        let (len, fds) = loop {
            match crate::sys::recv_fds(socket, &mut reply, 1) {
                Err(Errno::EINTR) => {}
                other => break other?,
            }
        };
        let [_, _, _, _, e0, e1, e2, e3] = reply;
        let errno = i32::from_le_bytes([e0, e1, e2, e3]);
        if len != reply.len() {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the zygote is gone"));
        }
        if errno != 0 {
            return Err(std::io::Error::from_raw_os_error(errno));
        }
        let pidfd = fds.into_iter().next().ok_or_else(|| std::io::Error::other("the zygote sent no pidfd"))?;
        Ok(Forked { pidfd })
    }
}

/// A helper forked by this zygote, until reaped.
struct Live {
    pid: Pid,
    pidfd: OwnedFd,
    /// The zygote's copy of the run's channel, for the helper's exit status.
    channel: OwnedFd,
}

/// The zygote's loop; exits when the host is gone.
pub(crate) fn zygote_main() -> ! {
    // A terminal's Ctrl-C reaches the whole process group: rbuild decides what it means.
    crate::sys::ignore_sigint();
    let control = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => fd,
        Err(_) => std::process::exit(1),
    };
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
    }
    let _ = crate::sys::cloexec_from(3);
    if crate::sys::send_fds(control.as_fd(), &HELLO, &[]).is_err() {
        std::process::exit(1);
    }
    let mut live: Vec<Live> = Vec::new();
    loop {
        let (request, exited) = {
            let mut fds = vec![PollFd::new(control.as_fd(), PollFlags::POLLIN)];
            fds.extend(live.iter().map(|l| PollFd::new(l.pidfd.as_fd(), PollFlags::POLLIN)));
            match nix::poll::poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => std::process::exit(1),
            }
            let ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
            let exited: Vec<usize> = fds[1..].iter().enumerate().filter(|(_, fd)| ready(fd)).map(|(i, _)| i).collect();
            (ready(&fds[0]), exited)
        };
        for index in exited.into_iter().rev() {
            reap(live.remove(index));
        }
        if !request {
            continue;
        }
        let mut byte = [0u8; 1];
        match crate::sys::recv_fds(control.as_fd(), &mut byte, 3) {
            // The host is gone: so are we, and our helpers with us (their death signal).
            Ok((0, fds)) if fds.is_empty() => std::process::exit(0),
            Ok((_, fds)) => match <[OwnedFd; 3]>::try_from(fds) {
                Ok(fds) => fork_one(&control, fds, &mut live),
                Err(_) => reply(&control, None, Errno::EINVAL),
            },
            Err(Errno::EINTR | Errno::EAGAIN) => {}
            Err(_) => std::process::exit(1),
        }
    }
}

fn fork_one(control: &OwnedFd, [channel, stdout, stderr]: [OwnedFd; 3], live: &mut Vec<Live>) {
    match crate::sys::fork() {
        Ok(ForkResult::Child) => {
            // Only the run's own fds stay: not the host's socket, nor other runs' channels.
            live.clear();
            let placed = nix::unistd::dup2_stdin(&channel)
                .and_then(|()| nix::unistd::dup2_stdout(&stdout))
                .and_then(|()| nix::unistd::dup2_stderr(&stderr));
            if placed.is_err() {
                std::process::exit(crate::helper::SETUP_FAILED);
            }
            // The copies on 0, 1 and 2 stay.
            drop((channel, stdout, stderr));
            // `control` is close-on-exec, but the helper never execs: close it. (Its owner,
            // up in `zygote_main`, is never dropped in this process, which only exits.)
            let _ = nix::unistd::close(std::os::fd::AsRawFd::as_raw_fd(control));
            // Never unwind back into the zygote's loop.
            let code = std::panic::catch_unwind(crate::helper::helper_main).unwrap_or(crate::helper::SETUP_FAILED);
            std::process::exit(code)
        }
        Ok(ForkResult::Parent { child }) => match crate::sys::pidfd_open(child) {
            Ok(pidfd) => {
                reply(control, Some((child, pidfd.as_fd())), Errno::UnknownErrno);
                live.push(Live { pid: child, pidfd, channel });
            }
            Err(e) => {
                let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(child, None);
                reply(control, None, e);
            }
        },
        Err(e) => reply(control, None, e),
    }
}

/// Answers a request: the helper's pid and its pidfd, or the errno of the failure.
fn reply(control: &OwnedFd, helper: Option<(Pid, BorrowedFd<'_>)>, errno: Errno) {
    let (pid, errno, fds) = match helper {
        Some((pid, pidfd)) => (pid.as_raw(), 0, vec![pidfd]),
        None => (-1, errno as i32, Vec::new()),
    };
    let mut message = [0u8; 8];
    message[..4].copy_from_slice(&pid.to_le_bytes());
    message[4..].copy_from_slice(&errno.to_le_bytes());
    // Should the host be gone, the next receive sees it.
    let _ = crate::sys::send_fds(control.as_fd(), &message, &fds);
}

/// Reaps an exited helper and sends its wait status on its channel.
fn reap(helper: Live) {
    let status = loop {
        match nix::sys::wait::waitpid(helper.pid, None) {
            Ok(WaitStatus::Exited(_, code)) => break (code & 0xff) << 8,
            Ok(WaitStatus::Signaled(_, signal, core)) => break signal as i32 | if core { 0x80 } else { 0 },
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    };
    let channel = UnixStream::from(helper.channel);
    // The host reads the channel to EOF, which only comes once this copy is closed, so the
    // line always fits in the socket buffer; never block on it anyway.
    if channel.set_nonblocking(true).is_ok() {
        let _ = protocol::send(&channel, &Report::HelperExited(status));
    }
}
