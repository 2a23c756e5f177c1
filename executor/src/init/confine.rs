//! The init's last privileged steps: rlimits, then — for [`Security::Sandbox`] — the
//! bounding set, seccomp, and the switch to the user with Docker's capabilities.
//!
//! The order matters:
//! 1. rlimits first, while the init may still raise a hard limit (`CAP_SYS_RESOURCE`);
//! 2. the bounding set is cut while the init still has `CAP_SETPCAP` (prctl(2));
//! 3. seccomp is installed while the init still has `CAP_SYS_ADMIN`: without
//!    `no_new_privs` (which BuildKit leaves off, so setuid binaries work) that is the only way
//!    seccomp(2) accepts a filter. Everything after it (setgroups, setgid, setuid, capset,
//!    prctl, rt_sigaction, access, execve) is on the allow-list, as in runc, which also
//!    installs the filter before dropping privileges when `noNewPrivileges` is false;
//! 4. groups, gid and uid; for uid 0, permitted and effective are then cut to the set (for
//!    any other uid the kernel has already cleared them at `setuid`, capabilities(7)).

use serde::{Deserialize, Serialize};

use super::user::{self, ExecUser};
use crate::caps::{self, CapSet};
use crate::error::{OsError, SetupError};
use crate::options::{effective_rlimits, Rlimit, Security};
use crate::protocol::Filters;
use crate::seccomp;

/// Applying the sandbox's confinement failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum ConfineError {
    /// `setrlimit(2)` failed.
    #[error("cannot set rlimit {resource} to {soft}:{hard}")]
    Rlimit {
        /// `nofile`, ...
        resource: String,
        /// The soft limit.
        soft: u64,
        /// The hard limit.
        hard: u64,
        /// The cause.
        #[source]
        source: OsError,
    },
    /// Dropping or setting capabilities failed.
    #[error("cannot {step}")]
    Capabilities {
        /// What was attempted.
        step: String,
        /// The cause.
        #[source]
        source: OsError,
    },
    /// The seccomp profile could not be compiled for this machine.
    #[error("{reason}")]
    SeccompProfile {
        /// Why.
        reason: String,
    },
    /// seccomp(2) refused the filter.
    #[error("cannot install the seccomp filter")]
    SeccompInstall {
        /// The cause.
        #[source]
        source: OsError,
    },
}

/// Applies the rlimits (`nofile` 20000:20000 unless the spec sets it).
pub(crate) fn set_rlimits(rlimits: &[Rlimit]) -> Result<(), ConfineError> {
    for limit in effective_rlimits(rlimits) {
        nix::sys::resource::setrlimit(limit.resource.to_nix(), limit.soft, limit.hard).map_err(|e| {
            ConfineError::Rlimit {
                resource: limit.resource.name().to_owned(),
                soft: limit.soft,
                hard: limit.hard,
                source: e.into(),
            }
        })?;
    }
    Ok(())
}

fn caps_error(step: &str) -> impl FnOnce(nix::errno::Errno) -> ConfineError + '_ {
    move |e| ConfineError::Capabilities { step: step.to_owned(), source: e.into() }
}

/// Steps 2 to 4 of the module doc: leaves the init running as `user`, confined. `filters`
/// are Docker's profile compiled for [`CapSet::docker_default`] on this machine (by the host
/// side, once); `None` compiles them here.
pub(crate) fn lock_down(security: Security, user: &ExecUser, filters: Option<&Filters>) -> Result<(), SetupError> {
    if security == Security::Insecure {
        // Every capability (uid 0 keeps them all), no seccomp.
        return user::switch(user).map_err(SetupError::from);
    }
    let set = CapSet::docker_default();
    caps::limit_bounding(set).map_err(caps_error("limit the capability bounding set"))?;
    let compiled;
    let filters = match filters {
        Some(filters) => filters,
        None => {
            let target = seccomp::Target { caps: set, kernel: seccomp::kernel_version() };
            compiled =
                seccomp::compile(seccomp::DEFAULT_PROFILE, target).map(|c| c.programs).map_err(|e| e.to_string());
            &compiled
        }
    };
    let programs = filters.as_ref().map_err(|reason| ConfineError::SeccompProfile { reason: reason.clone() })?;
    for program in programs {
        crate::sys::install_seccomp(program).map_err(|e| ConfineError::SeccompInstall { source: e.into() })?;
    }
    user::switch(user)?;
    if user.uid == 0 {
        caps::set_root_caps(set).map_err(caps_error("set the capabilities"))?;
    }
    Ok(())
}
