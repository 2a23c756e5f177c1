//! Docker's default seccomp profile, kept as data in `executor/seccomp/default.json` and
//! compiled to BPF with `seccompiler` for the native architecture.
//!
//! The profile is moby's, restated in a smaller format (see the file's `provenance`). Its
//! rules are resolved against the sandbox the way moby does: a rule applies when the
//! sandbox holds all of its `caps` and none of its `not_caps`, the native architecture (as a
//! Go `GOARCH` name) is in `arches` and not in `not_arches`, and the kernel is at least
//! `min_kernel`. Syscalls this architecture does not have are skipped, as libseccomp does.
//!
//! seccompiler builds one filter per action, so the result is one filter that allows the
//! allowed syscalls (everything else gets `EPERM`), plus one filter per other errno (only
//! `clone3` → `ENOSYS` today) that returns that errno for its syscalls and allows the rest.
//! The kernel runs every filter and takes the most restrictive action; between two `ERRNO`
//! results the most recently installed filter's errno wins (`seccomp_run_filters` in
//! kernel/seccomp.c), so the errno filters are installed after the allow-list.
//!
//! Known gap: seccompiler knows one architecture per filter and kills any other, so 32-bit
//! (i386) and x32 syscalls on x86_64 are not allowed as Docker allows them.

use std::collections::BTreeMap;
use std::str::FromStr;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};
use serde::Deserialize;

use crate::caps::CapSet;

/// The profile, as data.
pub(crate) const DEFAULT_PROFILE: &str = include_str!("../seccomp/default.json");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    #[allow(dead_code)]
    provenance: Vec<String>,
    default_errno: u32,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    names: Vec<String>,
    /// `None`: allow; `Some(n)`: fail with errno `n`.
    #[serde(default)]
    errno: Option<u32>,
    #[serde(default)]
    args: Vec<Arg>,
    #[serde(default)]
    caps: Vec<String>,
    #[serde(default)]
    not_caps: Vec<String>,
    #[serde(default)]
    arches: Vec<String>,
    #[serde(default)]
    not_arches: Vec<String>,
    #[serde(default)]
    min_kernel: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    comment: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Arg {
    index: u8,
    op: Op,
    value: u64,
    #[serde(default)]
    mask: Option<u64>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    MaskedEq,
}

/// What the rules are resolved against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target {
    /// The sandbox's capability (bounding) set.
    pub(crate) caps: CapSet,
    /// The kernel's `(major, minor)`.
    pub(crate) kernel: (u32, u32),
}

/// The compiled filters, in installation order, and a summary for `--debug`.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub(crate) programs: Vec<BpfProgram>,
    /// Syscalls allowed unconditionally, and with argument conditions.
    pub(crate) allowed: usize,
    pub(crate) conditional: usize,
}

/// The profile cannot be used here.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProfileError {
    #[error("the seccomp profile is invalid: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("seccomp filters cannot be compiled for the {0} architecture")]
    UnsupportedArch(&'static str),
    #[error("the seccomp profile does not compile: {0}")]
    Compile(String),
}

/// The Go `GOARCH` name and seccompiler's target of the architecture we run on.
fn native_arch() -> Result<(&'static str, TargetArch), ProfileError> {
    match std::env::consts::ARCH {
        "x86_64" => Ok(("amd64", TargetArch::x86_64)),
        "aarch64" => Ok(("arm64", TargetArch::aarch64)),
        "riscv64" => Ok(("riscv64", TargetArch::riscv64)),
        other => Err(ProfileError::UnsupportedArch(other)),
    }
}

/// `(major, minor)` from a `uname -r` release such as `6.1.0-18-amd64`.
pub(crate) fn parse_kernel_version(release: &str) -> (u32, u32) {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let mut next = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (next(), next())
}

/// The running kernel's `(major, minor)`.
pub(crate) fn kernel_version() -> (u32, u32) {
    nix::sys::utsname::uname().map_or((0, 0), |u| parse_kernel_version(&u.release().to_string_lossy()))
}

impl Rule {
    fn applies(&self, arch: &str, target: Target) -> bool {
        let has = |cap: &String| target.caps.has(cap);
        self.caps.iter().all(has)
            && !self.not_caps.iter().any(has)
            && (self.arches.is_empty() || self.arches.iter().any(|a| a == arch))
            && !self.not_arches.iter().any(|a| a == arch)
            && self.min_kernel.as_deref().is_none_or(|min| target.kernel >= parse_kernel_version(min))
    }

    fn conditions(&self) -> Result<Vec<SeccompCondition>, ProfileError> {
        self.args
            .iter()
            .map(|arg| {
                let op = match arg.op {
                    Op::Eq => SeccompCmpOp::Eq,
                    Op::Ne => SeccompCmpOp::Ne,
                    Op::Lt => SeccompCmpOp::Lt,
                    Op::Le => SeccompCmpOp::Le,
                    Op::Gt => SeccompCmpOp::Gt,
                    Op::Ge => SeccompCmpOp::Ge,
                    Op::MaskedEq => SeccompCmpOp::MaskedEq(arg.mask.unwrap_or(u64::MAX)),
                };
                // 32-bit comparisons: the arguments compared (socket's domain, personality,
                // clone's flags) are ints or have no bits above 31 the kernel looks at, and
                // comparing the low half only means high garbage bits cannot dodge a rule.
                SeccompCondition::new(arg.index, SeccompCmpArgLen::Dword, op, arg.value)
                    .map_err(|e| ProfileError::Compile(e.to_string()))
            })
            .collect()
    }
}

/// Per syscall number: `None` = unconditional, `Some(rules)` = any of these argument rules.
type Chains = BTreeMap<i64, Option<Vec<SeccompRule>>>;

fn add(chains: &mut Chains, nr: i64, conditions: Vec<SeccompCondition>) -> Result<(), ProfileError> {
    if conditions.is_empty() {
        chains.insert(nr, None);
        return Ok(());
    }
    let rule = SeccompRule::new(conditions).map_err(|e| ProfileError::Compile(e.to_string()))?;
    // `None` means already allowed whatever the arguments: nothing to add.
    if let Some(rules) = chains.entry(nr).or_insert_with(|| Some(Vec::new())) {
        rules.push(rule);
    }
    Ok(())
}

fn build(
    chains: Chains,
    mismatch: SeccompAction,
    matched: SeccompAction,
    arch: TargetArch,
) -> Result<BpfProgram, ProfileError> {
    let rules = chains.into_iter().map(|(nr, rules)| (nr, rules.unwrap_or_default())).collect();
    let filter =
        SeccompFilter::new(rules, mismatch, matched, arch).map_err(|e| ProfileError::Compile(e.to_string()))?;
    BpfProgram::try_from(filter).map_err(|e| ProfileError::Compile(e.to_string()))
}

/// Resolves `profile` (JSON in the format above) for `target` on this architecture and
/// compiles it.
pub(crate) fn compile(profile: &str, target: Target) -> Result<Compiled, ProfileError> {
    let profile: Profile = serde_json::from_str(profile)?;
    let (arch_name, arch) = native_arch()?;
    let mut allow = Chains::new();
    let mut errnos: BTreeMap<u32, Chains> = BTreeMap::new();
    for rule in profile.rules.iter().filter(|r| r.applies(arch_name, target)) {
        let chains = match rule.errno {
            None => &mut allow,
            Some(errno) => errnos.entry(errno).or_default(),
        };
        for name in &rule.names {
            // Names this architecture lacks (the *32 and *64 variants of 32-bit ABIs...)
            // are skipped, as libseccomp skips them.
            if let Ok(sysno) = syscalls::Sysno::from_str(name) {
                add(chains, i64::from(sysno.id()), rule.conditions()?)?;
            }
        }
    }
    let allowed = allow.values().filter(|c| c.is_none()).count();
    let conditional = allow.len() - allowed;
    let mut programs = vec![build(allow, SeccompAction::Errno(profile.default_errno), SeccompAction::Allow, arch)?];
    for (errno, chains) in errnos {
        programs.push(build(chains, SeccompAction::Allow, SeccompAction::Errno(errno), arch)?);
    }
    Ok(Compiled { programs, allowed, conditional })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(caps: CapSet) -> Target {
        Target { caps, kernel: (6, 1) }
    }

    #[test]
    fn default_profile_compiles_for_the_default_caps() {
        let compiled = compile(DEFAULT_PROFILE, target(CapSet::docker_default())).unwrap();
        // The allow-list and the clone3 -> ENOSYS filter.
        assert_eq!(compiled.programs.len(), 2);
        assert!(compiled.allowed > 280, "{}", compiled.allowed);
        // socket, personality, clone.
        assert_eq!(compiled.conditional, 3);
        assert!(compiled.programs[0].len() < 4096);
    }

    #[test]
    fn sys_admin_allows_mount_and_clone3() {
        let all = CapSet(u64::MAX >> 23);
        let compiled = compile(DEFAULT_PROFILE, target(all)).unwrap();
        assert_eq!(compiled.programs.len(), 1, "no ENOSYS filter with CAP_SYS_ADMIN");
        // clone is unconditional now.
        assert_eq!(compiled.conditional, 2);
    }

    #[test]
    fn rules_resolve_like_moby() {
        let profile: Profile = serde_json::from_str(DEFAULT_PROFILE).unwrap();
        let find = |name: &str| profile.rules.iter().filter(|r| r.names.iter().any(|n| n == name)).collect::<Vec<_>>();
        let default = target(CapSet::docker_default());
        let applies = |name: &str, arch: &str, t: Target| find(name).iter().any(|r| r.applies(arch, t));
        assert!(applies("arch_prctl", "amd64", default));
        assert!(!applies("arch_prctl", "arm64", default));
        assert!(applies("chroot", "amd64", default));
        assert!(!applies("mount", "amd64", default));
        assert!(!applies("ptrace", "amd64", Target { kernel: (4, 4), ..default }));
        assert!(applies("ptrace", "amd64", default));
    }

    #[test]
    fn every_name_is_a_real_syscall_somewhere() {
        // A typo would silently drop a syscall from the allow-list.
        use syscalls::{aarch64, arm, powerpc64, riscv64, s390x, x86, x86_64};
        let profile: Profile = serde_json::from_str(DEFAULT_PROFILE).unwrap();
        let known = |n: &str| {
            x86_64::Sysno::from_str(n).is_ok()
                || x86::Sysno::from_str(n).is_ok()
                || aarch64::Sysno::from_str(n).is_ok()
                || arm::Sysno::from_str(n).is_ok()
                || powerpc64::Sysno::from_str(n).is_ok()
                || s390x::Sysno::from_str(n).is_ok()
                || riscv64::Sysno::from_str(n).is_ok()
        };
        // ARM's private syscalls, which libseccomp names but the syscall tables do not.
        let aliases = ["breakpoint", "cacheflush", "set_tls"];
        let unknown: Vec<&str> = profile
            .rules
            .iter()
            .flat_map(|r| r.names.iter().map(String::as_str))
            .filter(|n| !known(n) && !aliases.contains(n))
            .collect();
        assert!(unknown.is_empty(), "{unknown:?}");
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v595"), (6, 18));
        assert_eq!(parse_kernel_version("4.8"), (4, 8));
        assert_eq!(parse_kernel_version("junk"), (0, 0));
    }
}
