//! rbuild-executor: runs one `RUN` step in a sandbox.
//!
//! [`run`] executes a [`SandboxSpec`] and returns the command's [`ExitStatus`], streaming its
//! stdout and stderr to a callback as they arrive. The sandbox is built by a single-threaded
//! helper process, never by the caller's multi-threaded process: the caller's own binary,
//! re-executed once per process as `<exe> __sandbox --zygote` ([`sandbox_main`]), forks a
//! fresh helper for every run (a fork of a small process is about a millisecond and a half
//! cheaper than an exec of the binary; a helper is spawned as `<exe> __sandbox` should that
//! be impossible):
//!
//! - new mount, pid, UTS and IPC namespaces (and a network namespace with only `lo`, up, for
//!   [`Network::None`]);
//! - an overlay rootfs (`lower_dirs` topmost first, `upper_dir` receiving the step's diff),
//!   entered with `pivot_root`; a fresh `/proc`, read-only `/sys`, a minimal `/dev`;
//! - the command is PID 1 (`echo $$` prints 1); when it exits, everything it started is
//!   killed by the kernel, and every mount vanishes with the mount namespace, even if rbuild
//!   itself is killed (the zygote exits when rbuild is gone, and the helper and the init have
//!   `PR_SET_PDEATHSIG`);
//! - the confinement of a BuildKit RUN ([`Security::Sandbox`]): Docker's 14 default
//!   capabilities, masked and read-only `/proc` paths, read-only `/sys`, Docker's default
//!   seccomp profile (kept as data in `executor/seccomp/default.json`), `no_new_privs` off so
//!   setuid binaries work, `RLIMIT_NOFILE` 20000; or none of it with [`Security::Insecure`];
//! - extra mounts ([`MountSpec`]: binds, tmpfs, read-only file copies for secrets), cgroup
//!   limits ([`Limits`]: memory, with a typed [`ExecError::OutOfMemory`], cpu, pids) and
//!   rlimits ([`Rlimit`]). [`describe_confinement`] sums it all up for `--debug`.
//!
//! A step for another CPU architecture runs through QEMU user emulation registered with
//! binfmt_misc; [`prepare_emulation`] checks (and as root, sets up) that before the step runs.
//! [`Rootfs::Copied`] replaces the overlay where the kernel refuses it: the caller passes a
//! complete copy of the rootfs, which is bind-mounted and changed in place (the worker diffs
//! it afterwards). An unprivileged rbuild runs in a user namespace of its own
//! ([`rootless`], entered first thing in `main`), where all of the above works as root
//! (overlay with `userxattr` on Linux 5.11+). [`cancel_all`] takes every running sandbox
//! down in order when the build is interrupted.
//!
//! [`Isolation::Chroot`] is a fallback for hosts without namespaces, and **clearly weaker**:
//! it creates only the namespaces the host allows and `chroot`s instead of `pivot_root`
//! (see its doc).
//!
//! The upper dir holds only what the command changed: mount points the sandbox had to create
//! (`/proc`, `/dev`, `/sys` in a `FROM scratch` rootfs) are removed from it afterwards, and
//! `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` are bound over existing files only.
//! When much of the page cache is dirty (after a large `COPY`, say), the overlay is mounted
//! `volatile`, so that its unmount does not flush the whole upper filesystem, every other
//! writer's dirty data included; `fsync` in the command then does not reach the disk either.
//! Making a finished layer durable is the caller's business, as for any other file it writes.
//!
//! The main binary must dispatch to the helper before starting tokio or any thread:
//!
//! ```no_run
//! # fn start_tokio_and_the_cli() {}
//! // The first statement of the binary's `main`:
//! if std::env::args_os().nth(1).is_some_and(|arg| arg == rbuild_executor::HELPER_ARG) {
//!     rbuild_executor::sandbox_main(); // never returns
//! }
//! start_tokio_and_the_cli();
//! ```
//!
//! and then, from a blocking thread:
//!
//! ```no_run
//! # use rbuild_executor::*;
//! # fn demo(spec: &SandboxSpec) -> Result<(), ExecError> {
//! let status = run(spec, std::path::Path::new("/proc/self/exe"), &mut |stream, bytes| {
//!     eprint!("[{stream}] {}", String::from_utf8_lossy(bytes));
//! })?;
//! assert!(status.success());
//! # Ok(()) }
//! ```
//!
//! Needs root (or `CAP_SYS_ADMIN`, in a user namespace of its own when rootless) and Linux
//! 5.11+; overlayfs, or a caller that copies.

mod binfmt;
mod caps;
mod cgroups;
mod cleanup;
mod describe;
mod error;
mod helper;
mod init;
mod options;
mod protocol;
pub mod rootless;
mod run;
mod seccomp;
mod spec;
mod sys;
mod zygote;

pub use binfmt::{host_arch, is_native, prepare_emulation, Emulation, EmulationError};
pub use describe::describe_confinement;
pub use error::{ExecError, OsError, SetupError};
pub use helper::sandbox_main;
pub use init::{CommandError, ConfineError, MountError, UserError};
pub use options::{Isolation, Limits, MountKind, MountSpec, Rlimit, RlimitResource, Rootfs, Security, DEFAULT_NOFILE};
pub use protocol::HELPER_ARG;
pub use rootless::enter_user_namespace;
pub use run::{cancel_all, run};

/// Does now what the first RUN step would otherwise wait for: compiles the default seccomp
/// filters and starts the sandbox helpers' zygote for `exe`. Blocking (a few milliseconds);
/// a build calls it on a blocking thread while its base images are pulled.
pub fn warm_up(exe: &std::path::Path) {
    let _ = seccomp::default_filters();
    zygote::prestart(exe);
}
pub use spec::{ExitStatus, Network, OutputStream, SandboxSpec, DEFAULT_HOSTNAME};
