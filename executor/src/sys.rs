//! The only module with `unsafe` code: the few calls that nix cannot offer safely.
//!
//! Everything here is called from the single-threaded sandbox helper (or its forked init),
//! never from the multi-threaded host process.
#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
use nix::unistd::ForkResult;

/// `CLOSE_RANGE_CLOEXEC` from `<linux/close_range.h>` (not exported by libc for glibc).
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// Forks the helper.
///
/// Callers must be single-threaded (the helper is: it is a fresh process that never spawns
/// threads), so the child can safely keep running Rust code after the fork.
pub(crate) fn fork() -> nix::Result<ForkResult> {
    // SAFETY: the helper process is single-threaded (see the module doc), so no lock can be
    // held by another thread at the time of the fork, and the child may allocate freely.
    unsafe { nix::unistd::fork() }
}

/// Marks every fd from `first` up as close-on-exec, so nothing the helper inherited by
/// accident reaches the command (`close_range(2)`, Linux 5.11+).
pub(crate) fn cloexec_from(first: libc::c_uint) -> nix::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on open fds; it takes
    // no pointers and closes nothing.
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, CLOSE_RANGE_CLOEXEC) };
    Errno::result(ret).map(drop)
}

/// Highest signal number on Linux (`_NSIG - 1`) and the kernel's sigset size in bytes.
const LAST_SIGNAL: libc::c_long = 64;
const KERNEL_SIGSET_SIZE: libc::size_t = 8;

/// Gives the command default signal dispositions and an empty signal mask.
///
/// Ignored signals survive `execve` (signal(7)), and the helper starts with some: Rust
/// ignores `SIGPIPE` at startup, and glibc's `posix_spawn` (used by `std::process::Command`)
/// leaves its internal signals 32 and 33 ignored in the child, which glibc's own
/// `sigaction` then refuses to touch. So this calls `rt_sigaction(2)` directly.
pub(crate) fn reset_signals() -> nix::Result<()> {
    // An all-zero kernel `struct sigaction` is {SIG_DFL, no flags, no restorer, empty mask}
    // whatever the architecture's field order, so no per-arch struct is needed.
    let default_action = [0u64; 8];
    for signal in 1..=LAST_SIGNAL {
        if signal == libc::c_long::from(libc::SIGKILL) || signal == libc::c_long::from(libc::SIGSTOP) {
            continue;
        }
        // SAFETY: `default_action` is a readable buffer larger than any kernel struct
        // sigaction and outlives the call; the old-action pointer is null (not wanted).
        let ret = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                default_action.as_ptr(),
                std::ptr::null_mut::<libc::c_void>(),
                KERNEL_SIGSET_SIZE,
            )
        };
        Errno::result(ret)?;
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
}

/// Ignores `SIGINT` (in the zygote and the helpers: rbuild handles it, and takes its
/// sandboxes down in order; the init resets it before the command runs).
pub(crate) fn ignore_sigint() {
    // SAFETY: SIG_IGN installs no handler, so no code runs in signal context.
    let _ = unsafe { nix::sys::signal::signal(nix::sys::signal::Signal::SIGINT, nix::sys::signal::SigHandler::SigIgn) };
}

/// Sets `IFF_UP` on `lo` in the current network namespace (what `ip link set lo up` does,
/// via SIOCGIFFLAGS/SIOCSIFFLAGS on an `AF_INET` socket; netdevice(7)).
pub(crate) fn loopback_up() -> nix::Result<()> {
    let sock = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    // SAFETY: ifreq is a plain C struct (arrays and a union of integers and pointers); all
    // zeroes is a valid value for it.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `sock` is an open socket fd and `req` a valid, writable ifreq that outlives
    // the call; SIOCGIFFLAGS reads only ifr_name and writes only ifr_ifru.ifru_flags.
    let ret = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    Errno::result(ret)?;
    // SAFETY: SIOCGIFFLAGS just succeeded, so ifru_flags is the initialised union member.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: as above; SIOCSIFFLAGS reads ifr_name and ifr_ifru.ifru_flags.
    let ret = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
    Errno::result(ret).map(drop)
}

/// `PR_CAPBSET_DROP`: removes `cap` from the bounding set (prctl(2)); EINVAL past the last
/// capability the kernel knows.
pub(crate) fn capbset_drop(cap: u32) -> nix::Result<()> {
    // SAFETY: PR_CAPBSET_DROP takes an integer capability number; no pointers.
    let ret = unsafe {
        libc::prctl(
            libc::PR_CAPBSET_DROP,
            libc::c_ulong::from(cap),
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    Errno::result(ret).map(drop)
}

/// `PR_CAP_AMBIENT_CLEAR_ALL`: empties the ambient set (prctl(2)).
pub(crate) fn ambient_clear_all() -> nix::Result<()> {
    // SAFETY: integer arguments only.
    let ret = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    Errno::result(ret).map(drop)
}

/// The three per-thread capability sets as 64-bit masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caps {
    pub(crate) effective: u64,
    pub(crate) permitted: u64,
    pub(crate) inheritable: u64,
}

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit sets as two 32-bit halves (capget(2)).
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `capget(2)` of the calling thread.
pub(crate) fn capget() -> nix::Result<Caps> {
    let mut header = CapHeader { version: CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [CapData::default(); 2];
    // SAFETY: `header` and `data` are valid, writable, correctly laid out (repr(C)) for
    // version 3, which reads one header and writes two data structs; both outlive the call.
    let ret = unsafe { libc::syscall(libc::SYS_capget, std::ptr::from_mut(&mut header), data.as_mut_ptr()) };
    Errno::result(ret)?;
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok(Caps {
        effective: join(data[0].effective, data[1].effective),
        permitted: join(data[0].permitted, data[1].permitted),
        inheritable: join(data[0].inheritable, data[1].inheritable),
    })
}

/// `capset(2)` of the calling thread.
pub(crate) fn capset(caps: Caps) -> nix::Result<()> {
    let mut header = CapHeader { version: CAPABILITY_VERSION_3, pid: 0 };
    let split = |mask: u64| (mask as u32, (mask >> 32) as u32);
    let (e0, e1) = split(caps.effective);
    let (p0, p1) = split(caps.permitted);
    let (i0, i1) = split(caps.inheritable);
    let data = [
        CapData { effective: e0, permitted: p0, inheritable: i0 },
        CapData { effective: e1, permitted: p1, inheritable: i1 },
    ];
    // SAFETY: as in `capget`; capset only reads the two data structs.
    let ret = unsafe { libc::syscall(libc::SYS_capset, std::ptr::from_mut(&mut header), data.as_ptr()) };
    Errno::result(ret).map(drop)
}

/// Installs a seccomp BPF filter on the calling thread *without* setting `no_new_privs`
/// (seccomp(2): allowed to a caller with `CAP_SYS_ADMIN`), so setuid binaries keep working,
/// as in a Docker or BuildKit container (which leave `no_new_privs` off).
pub(crate) fn install_seccomp(program: &[crate::seccomp::Insn]) -> nix::Result<()> {
    let filter: Vec<libc::sock_filter> =
        program.iter().map(|insn| libc::sock_filter { code: insn.code, jt: insn.jt, jf: insn.jf, k: insn.k }).collect();
    let len = u16::try_from(filter.len()).map_err(|_| Errno::E2BIG)?;
    let prog = libc::sock_fprog { len, filter: filter.as_ptr().cast_mut() };
    // SAFETY: `prog` points to `len` initialised instructions that outlive the call; the
    // kernel copies the program and keeps no pointer to our memory.
    let ret = unsafe {
        libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0 as libc::c_uint, std::ptr::from_ref(&prog))
    };
    Errno::result(ret).map(drop)
}

/// `pidfd_open(2)`: a pidfd for `pid` (close-on-exec), which stays valid (and refers to
/// that process only) even after the process is reaped and its pid reused.
pub(crate) fn pidfd_open(pid: nix::unistd::Pid) -> nix::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: integer arguments only; on success the kernel returns a new fd that nobody
    // else owns, so wrapping it in an OwnedFd is sound.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0 as libc::c_uint) };
    let fd = Errno::result(fd)?;
    let fd = libc::c_int::try_from(fd).map_err(|_| Errno::EBADF)?;
    // SAFETY: see above.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// `pidfd_send_signal(2)`: signals the process `pidfd` refers to (ESRCH once it has exited).
pub(crate) fn pidfd_send_signal(
    pidfd: std::os::fd::BorrowedFd<'_>,
    signal: nix::sys::signal::Signal,
) -> nix::Result<()> {
    // SAFETY: a valid fd, a signal number, a null siginfo (the kernel fills in a default
    // one) and no flags.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null_mut::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    };
    Errno::result(ret).map(drop)
}

/// True when the calling thread runs under a seccomp filter (`PR_GET_SECCOMP` is 2).
pub(crate) fn thread_has_seccomp_filter() -> bool {
    // SAFETY: PR_GET_SECCOMP takes no further arguments and only returns a number.
    let mode = unsafe {
        libc::prctl(
            libc::PR_GET_SECCOMP,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    mode == 2
}

/// Sends `data` with `fds` attached (SCM_RIGHTS) on a connected Unix socket.
pub(crate) fn send_fds(
    socket: std::os::fd::BorrowedFd<'_>,
    data: &[u8],
    fds: &[std::os::fd::BorrowedFd<'_>],
) -> nix::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
    let raw: Vec<std::os::fd::RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let iov = [std::io::IoSlice::new(data)];
    let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &[ControlMessage::ScmRights(&raw)] };
    sendmsg::<UnixAddr>(socket.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None).map(drop)
}

/// Receives one message into `buf` with up to `max_fds` fds attached (made close-on-exec);
/// returns its length (0 at EOF) and the fds.
pub(crate) fn recv_fds(
    socket: std::os::fd::BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
) -> nix::Result<(usize, Vec<std::os::fd::OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
    use std::os::fd::FromRawFd;
    let mut space = vec![0u8; nix::sys::socket::cmsg_space::<std::os::fd::RawFd>() * max_fds.max(1)];
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<UnixAddr>(socket.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().map_err(|_| Errno::EINVAL)? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            // SAFETY: the kernel installed these fds in our table for this message; nothing
            // else refers to them, so each gets exactly one owner here.
            fds.extend(raw.into_iter().map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }));
        }
    }
    Ok((msg.bytes, fds))
}

/// Runs `f` in a forked child and returns how long it took, or `None` when it returned false.
/// For benchmarks of calls that change the calling process for good (seccomp filters); the
/// child must only make syscalls, since it is forked from a multi-threaded test process.
#[cfg(test)]
pub(crate) fn time_in_child(f: impl FnOnce() -> bool) -> Option<std::time::Duration> {
    let (r, w) = nix::unistd::pipe().ok()?;
    // SAFETY: the child runs `f` (syscalls only, by contract), writes to a pipe and exits
    // without returning into the parent's state.
    match unsafe { nix::unistd::fork() }.ok()? {
        nix::unistd::ForkResult::Child => {
            let start = std::time::Instant::now();
            let ns = if f() { u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX - 1) } else { u64::MAX };
            let _ = nix::unistd::write(&w, &ns.to_le_bytes());
            // SAFETY: ends the child at once, running none of the parent's destructors.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(w);
            let mut buf = [0u8; 8];
            let n = nix::unistd::read(&r, &mut buf);
            let _ = nix::sys::wait::waitpid(child, None);
            let ns = u64::from_le_bytes(buf);
            (n == Ok(8) && ns != u64::MAX).then(|| std::time::Duration::from_nanos(ns))
        }
    }
}
