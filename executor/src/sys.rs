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
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
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
        if signal == libc::c_long::from(libc::SIGKILL)
            || signal == libc::c_long::from(libc::SIGSTOP)
        {
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

/// Sets `IFF_UP` on `lo` in the current network namespace (what `ip link set lo up` does,
/// via SIOCGIFFLAGS/SIOCSIFFLAGS on an `AF_INET` socket; netdevice(7)).
pub(crate) fn loopback_up() -> nix::Result<()> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
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
