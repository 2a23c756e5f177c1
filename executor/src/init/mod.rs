//! The sandbox's init: PID 1 of the new pid namespace, forked by the helper. It builds the
//! root filesystem, switches into it and to the user, and `execve`s the command, which
//! thereby becomes PID 1.
//!
//! The order matters:
//! 1. `PR_SET_PDEATHSIG` first, so the init dies with the helper (prctl(2));
//! 2. its own mount namespace, every mount made private, so nothing propagates to the host
//!    and the helper (in the host's namespace) is unaffected by `pivot_root`;
//! 3. overlay, mount points (reported to the host at once, so they are cleaned even if a
//!    later step fails), /proc /sys /dev, the staged /etc files;
//! 4. `pivot_root`, then the /etc binds (paths now resolve inside the rootfs);
//! 5. the user is resolved from the rootfs's databases, the cwd created and entered as root
//!    (then chowned), and only then the ids switched: after `setuid` the rest is not allowed;
//! 6. `PR_SET_PDEATHSIG` again (changing the uid clears it), default signal dispositions,
//!    `PATH` lookup as the user, `execve`.

mod etc_files;
mod exec;
mod mounts;
mod user;

use std::convert::Infallible;
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;

pub use exec::CommandError;
pub use mounts::MountError;
pub(crate) use mounts::MOUNTPOINTS;
pub use user::UserError;

use crate::error::SetupError;
use crate::protocol::{self, Report};
use crate::spec::SandboxSpec;

/// Runs the init; returns only if setup failed (on success `execve` never returns).
pub(crate) fn run(spec: &SandboxSpec, channel: &UnixStream) -> SetupError {
    match setup_and_exec(spec, channel) {
        Err(error) => error,
        Ok(never) => match never {},
    }
}

fn prepare(step: &str) -> impl FnOnce(nix::errno::Errno) -> SetupError + '_ {
    move |errno| SetupError::Prepare {
        step: step.to_owned(),
        source: errno.into(),
    }
}

fn setup_and_exec(spec: &SandboxSpec, channel: &UnixStream) -> Result<Infallible, SetupError> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(prepare("set the parent-death signal"))?;
    // A session of its own: terminal job-control signals go to rbuild, not to the step.
    nix::unistd::setsid().map_err(prepare("start a new session"))?;
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(|e| SetupError::Unshare {
        namespaces: "mount".into(),
        source: e.into(),
    })?;
    let private = MsFlags::MS_REC | MsFlags::MS_PRIVATE;
    nix::mount::mount(None::<&str>, "/", None::<&str>, private, None::<&str>)
        .map_err(prepare("make all mounts private"))?;

    let layout = spec.layout();
    mounts::mount_overlay(spec, &layout)?;
    let created = mounts::create_mountpoints(&layout.merged)?;
    if !created.is_empty() {
        protocol::send(channel, &Report::CreatedMountpoints(created)).map_err(|e| {
            SetupError::Prepare {
                step: "report created mount points".into(),
                source: e.into(),
            }
        })?;
    }
    mounts::mount_special(&layout.merged, spec.network)?;
    let staged = etc_files::stage(&layout.merged, spec)?;
    mounts::pivot(&layout.merged)?;
    etc_files::bind_staged(&staged)?;

    let passwd = user::read_database(Path::new("/etc/passwd"))?;
    let group = user::read_database(Path::new("/etc/group"))?;
    let user = user::resolve(&spec.user, passwd.as_deref(), group.as_deref())?;
    exec::enter_cwd(Path::new(&spec.cwd), user.uid, user.gid)?;
    user::switch(&user)?;

    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)
        .map_err(prepare("set the parent-death signal"))?;
    crate::sys::reset_signals().map_err(prepare("reset signal dispositions"))?;
    let command = spec.args.first().map_or("", String::as_str);
    let program = exec::find_program(command, &spec.env)?;
    Err(exec::exec(&program, &spec.args, &spec.env).into())
}
