//! [`describe_confinement`]: what a spec's sandbox will look like, for `--debug` output.

use std::fmt::Write;

use crate::caps::CapSet;
use crate::init::masks::{MASKED, READONLY};
use crate::options::{effective_rlimits, Isolation, MountKind, Rootfs, Security};
use crate::seccomp;
use crate::spec::{Network, SandboxSpec};

/// A few lines describing the confinement `spec` asks for: isolation, capabilities,
/// seccomp, masked paths, network, cgroup limits, rlimits and extra mounts. The seccomp line
/// comes from compiling the profile for this machine, so it also shows whether that works.
#[must_use]
pub fn describe_confinement(spec: &SandboxSpec) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(match spec.isolation {
        Isolation::Namespaces => "isolation: namespaces (mount, pid, uts, ipc, net when network is none), overlay \
             rootfs entered with pivot_root, PID 1 is the command"
            .to_owned(),
        Isolation::Chroot => "isolation: chroot fallback, WEAKER than namespaces: only the \
             namespaces this host allows are created (without a pid or network namespace the \
             command sees host processes and network), chroot instead of pivot_root (root \
             with CAP_SYS_CHROOT can leave it); without a mount namespace the upper dir must \
             be a complete copied rootfs and nothing is mounted"
            .to_owned(),
    });
    if let Some(rootless) = crate::rootless::current() {
        line(rootless.describe());
    }
    if spec.rootfs == Rootfs::Copied {
        line(
            "rootfs: a copy of the image's filesystem, bind-mounted (overlayfs unavailable); the \
             step's layer is the difference between the copy before and after the run"
                .to_owned(),
        );
    }
    match spec.security {
        Security::Sandbox => {
            let set = CapSet::docker_default();
            line(format!(
                "capabilities: {:#018x} {} (bounding, permitted, effective for uid 0; other \
                 users start with none); inheritable and ambient empty; no_new_privs off",
                set.0,
                set.names().join(",")
            ));
            let target = seccomp::Target { caps: set, kernel: seccomp::kernel_version() };
            line(match seccomp::compile(seccomp::DEFAULT_PROFILE, target) {
                Ok(compiled) => format!(
                    "seccomp: Docker's default profile, {} syscalls allowed + {} with argument \
                     checks, others EPERM (clone3 ENOSYS), {} filter(s) of {} BPF instructions",
                    compiled.allowed,
                    compiled.conditional,
                    compiled.programs.len(),
                    compiled.programs.iter().map(Vec::len).sum::<usize>(),
                ),
                Err(e) => format!("seccomp: UNAVAILABLE, runs will fail: {e}"),
            });
            line(format!("masked: {}; read-only: {}, /sys", MASKED.join(" "), READONLY.join(" ")));
        }
        Security::Insecure => {
            line("security: INSECURE: all capabilities, no seccomp, no masked paths, writable /sys".to_owned())
        }
    }
    line(format!(
        "network: {}, hostname {:?}",
        match spec.network {
            Network::None => "none (own namespace with lo up)",
            Network::Host => "host",
        },
        spec.hostname
    ));
    let limits = &spec.limits;
    let mut parts = Vec::new();
    if let Some(bytes) = limits.memory {
        parts.push(format!("memory {bytes} bytes"));
    }
    if let Some((quota, period)) = limits.cpu_quota {
        parts.push(format!("cpu {quota}us per {period}us"));
    }
    if let Some(pids) = limits.pids {
        parts.push(format!("pids {pids}"));
    }
    line(if parts.is_empty() {
        "cgroup limits: none".to_owned()
    } else {
        format!("cgroup limits ({:?}): {}", crate::cgroups::detect(), parts.join(", "))
    });
    let rlimits: Vec<String> = effective_rlimits(&spec.rlimits)
        .iter()
        .map(|r| format!("{}={}:{}", r.resource.name(), r.soft, r.hard))
        .collect();
    line(format!("rlimits: {}", rlimits.join(" ")));
    for mount in &spec.mounts {
        let mut text = format!("mount {}: ", mount.target);
        let _ = match &mount.kind {
            MountKind::Bind { source, readonly } => {
                write!(text, "bind {} {}", source.display(), if *readonly { "ro" } else { "rw" })
            }
            MountKind::Tmpfs { size, mode } => write!(text, "tmpfs size={size:?} mode={mode:o}"),
            MountKind::File { source, mode, uid, gid } => {
                write!(text, "file copy of {} mode={mode:o} owner={uid}:{gid} ro", source.display())
            }
        };
        line(text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_the_default_and_the_weaker_modes() {
        let mut spec = SandboxSpec::new(vec![], "/u".into(), "/w".into(), vec!["true".into()]);
        let text = describe_confinement(&spec);
        assert!(text.contains("0x00000000a80425fb"), "{text}");
        assert!(text.contains("seccomp: Docker's default profile"), "{text}");
        assert!(text.contains("/proc/keys"), "{text}");
        assert!(text.contains("nofile=20000:20000"), "{text}");
        assert!(!text.contains("rootfs: a copy"), "{text}");
        spec.rootfs = Rootfs::Copied;
        assert!(describe_confinement(&spec).contains("rootfs: a copy of the image's filesystem"));
        spec.isolation = Isolation::Chroot;
        spec.security = Security::Insecure;
        let text = describe_confinement(&spec);
        assert!(text.contains("WEAKER"), "{text}");
        assert!(text.contains("INSECURE"), "{text}");
    }
}
