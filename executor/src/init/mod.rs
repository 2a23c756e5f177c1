//! The sandbox's init: PID 1 of the new pid namespace, forked by the helper. It builds the
//! root filesystem, switches into it and to the user, and `execve`s the command, which
//! thereby becomes PID 1.
//!
//! The order matters:
//! 1. `PR_SET_PDEATHSIG` first, so the init dies with the helper (prctl(2)); then into the
//!    run's cgroups, so everything after (and everything the command starts) is limited;
//! 2. its own mount namespace, every mount made private, so nothing propagates to the host
//!    and the helper (in the host's namespace) is unaffected by `pivot_root`;
//! 3. overlay, mount points (reported to the host at once, so they are cleaned even if a
//!    later step fails), /proc /sys /dev, the staged /etc files, the extra mounts' sources
//!    (host paths: opened or copied while the host root is still reachable);
//! 4. `pivot_root` (or `chroot`), then the /etc binds, the extra mounts and the masks (paths
//!    now resolve inside the rootfs; runc masks after mounting, so no mount can unmask);
//! 5. the user is resolved from the rootfs's databases, the cwd created and entered as root
//!    (then chowned); rlimits, bounding set, seccomp, ids and capabilities ([`confine`]);
//! 6. `PR_SET_PDEATHSIG` again (changing the uid clears it), default signal dispositions,
//!    `PATH` lookup as the user, `execve`.

mod confine;
mod etc_files;
mod exec;
mod extra_mounts;
pub(crate) mod masks;
mod mounts;
mod stubs;
mod user;

use std::convert::Infallible;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;

pub use confine::ConfineError;
pub use exec::CommandError;
pub use mounts::MountError;
pub use user::UserError;

use crate::error::SetupError;
use crate::options::{Isolation, Rootfs, Security};
use crate::protocol::{self, Created, Filters, Report};
use crate::spec::SandboxSpec;

/// Runs the init; returns only if setup failed (on success `execve` never returns).
/// `cgroup_procs` are the `cgroup.procs` files of the run's cgroups (none without limits).
pub(crate) fn run(
    spec: &SandboxSpec,
    filters: Option<&Filters>,
    channel: &UnixStream,
    cgroup_procs: &[PathBuf],
) -> SetupError {
    match setup_and_exec(spec, filters, channel, cgroup_procs) {
        Err(error) => error,
        Ok(never) => match never {},
    }
}

fn report_created(channel: &UnixStream, created: Created) -> Result<(), SetupError> {
    if created.is_empty() {
        return Ok(());
    }
    protocol::send(channel, &Report::Created(created))
        .map_err(|e| SetupError::Prepare { step: "report created mount points".into(), source: e.into() })
}

fn prepare(step: &str) -> impl FnOnce(nix::errno::Errno) -> SetupError + '_ {
    move |errno| SetupError::Prepare { step: step.to_owned(), source: errno.into() }
}

fn setup_and_exec(
    spec: &SandboxSpec,
    filters: Option<&Filters>,
    channel: &UnixStream,
    cgroup_procs: &[PathBuf],
) -> Result<Infallible, SetupError> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(prepare("set the parent-death signal"))?;
    crate::cgroups::join(cgroup_procs)?;
    // A session of its own: terminal job-control signals go to rbuild, not to the step (and,
    // without a pid namespace, the helper kills the step's leftovers by this group).
    nix::unistd::setsid().map_err(prepare("start a new session"))?;
    let unshared = nix::sched::unshare(CloneFlags::CLONE_NEWNS);
    match (unshared, spec.isolation) {
        (Ok(()), _) => build_rootfs(spec, channel)?,
        (Err(e), Isolation::Namespaces) => {
            return Err(SetupError::Unshare { namespaces: "mount".into(), source: e.into() })
        }
        (Err(_), Isolation::Chroot) => {
            // No mount namespace: nothing can be mounted privately, so the caller's
            // complete (copied) rootfs is used as it is.
            if !spec.lower_dirs.is_empty() || !spec.mounts.is_empty() {
                return Err(mounts::MountError::NeedsCopiedRootfs.into());
            }
            mounts::chroot(&spec.upper_dir)?;
        }
    }

    let passwd = user::read_database(Path::new("/etc/passwd"))?;
    let group = user::read_database(Path::new("/etc/group"))?;
    let user = user::resolve(&spec.user, passwd.as_deref(), group.as_deref())?;
    exec::enter_cwd(Path::new(&spec.cwd), user.uid, user.gid)?;
    confine::set_rlimits(&spec.rlimits)?;
    confine::lock_down(spec.security, &user, filters)?;

    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(prepare("set the parent-death signal"))?;
    crate::sys::reset_signals().map_err(prepare("reset signal dispositions"))?;
    let command = spec.args.first().map_or("", String::as_str);
    let program = exec::find_program(command, &spec.env)?;
    Err(exec::exec(&program, &spec.args, &spec.env).into())
}

/// Steps 2 to 4 of the module doc, in the init's new mount namespace.
fn build_rootfs(spec: &SandboxSpec, channel: &UnixStream) -> Result<(), SetupError> {
    let private = MsFlags::MS_REC | MsFlags::MS_PRIVATE;
    nix::mount::mount(None::<&str>, "/", None::<&str>, private, None::<&str>)
        .map_err(prepare("make all mounts private"))?;

    let layout = spec.layout();
    match spec.rootfs {
        Rootfs::Overlay => mounts::mount_overlay(spec, &layout)?,
        Rootfs::Copied => mounts::mount_copied(spec, &layout)?,
    }
    report_created(channel, mounts::create_mountpoints(&layout.merged)?)?;
    mounts::mount_special(&layout.merged, spec.network, spec.security, spec.shm_size)?;
    let staged = etc_files::stage(&layout.merged, spec)?;
    let extra = extra_mounts::prepare(&layout.merged, &spec.mounts)?;
    match spec.isolation {
        Isolation::Namespaces => mounts::pivot(&layout.merged)?,
        Isolation::Chroot => mounts::chroot(&layout.merged)?,
    }
    let mut stubs = stubs::Stubs::new(Path::new("/"))?;
    let applied = etc_files::bind_staged(&staged, &mut stubs).and_then(|()| extra_mounts::apply(extra, &mut stubs));
    // Reported even when a later mount failed: the stubs exist either way.
    report_created(channel, stubs.take())?;
    applied?;
    if spec.security == Security::Sandbox {
        masks::apply()?;
    }
    Ok(())
}
