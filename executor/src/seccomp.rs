//! Docker's default seccomp profile, kept as data in `executor/seccomp/default.json` and
//! compiled to classic BPF for the native architecture.
//!
//! The profile is moby's, restated in a smaller format (see the file's `provenance`). Its
//! rules are resolved against the sandbox the way moby does: a rule applies when the
//! sandbox holds all of its `caps` and none of its `not_caps`, the native architecture (as a
//! Go `GOARCH` name) is in `arches` and not in `not_arches`, and the kernel is at least
//! `min_kernel`. Syscalls this architecture does not have are skipped, as libseccomp does.
//!
//! The result is one filter per action: one that allows the allowed syscalls (everything
//! else gets `EPERM`), plus one per other errno (only `clone3` → `ENOSYS` today) that
//! returns that errno for its syscalls and allows the rest. The kernel runs every filter and
//! takes the most restrictive action; between two `ERRNO` results the most recently
//! installed filter's errno wins (`seccomp_run_filters` in kernel/seccomp.c), so the errno
//! filters are installed after the allow-list.
//!
//! The programs are built with the `seccompiler` crate, once per process: the host side
//! compiles them and sends the instructions to every sandbox helper, so a step only pays for
//! installing them. seccompiler emits a linear program (about 1,500 instructions for this
//! profile); installing it costs the kernel ~0.6 ms per step, most of it building the
//! seccomp action cache, which then lets every unconditionally allowed syscall skip the
//! filter at run time.
//!
//! Argument conditions compare the low 32 bits of the argument (seccompiler's `Dword`): the
//! arguments compared (socket's domain, personality, clone's flags) are ints or have no bits
//! above 31 the kernel looks at, and comparing the low half only means high garbage bits
//! cannot dodge a rule.
//!
//! Known gap: one architecture per filter, any other killed, so 32-bit (i386) and x32
//! syscalls on x86_64 are not allowed as Docker allows them.

use std::collections::BTreeMap;
use std::str::FromStr;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};
use serde::{Deserialize, Serialize};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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

/// One classic BPF instruction, laid out as the kernel's `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Insn {
    pub(crate) code: u16,
    pub(crate) jt: u8,
    pub(crate) jf: u8,
    pub(crate) k: u32,
}

/// A filter program.
pub(crate) type Program = Vec<Insn>;

/// The compiled filters, in installation order, and a summary for `--debug`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Compiled {
    pub(crate) programs: Vec<Program>,
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

    fn conditions(&self) -> Result<Vec<Cond>, ProfileError> {
        self.args
            .iter()
            .map(|arg| {
                if arg.index > 5 {
                    return Err(ProfileError::Compile(format!("argument index {} past the sixth", arg.index)));
                }
                Ok(Cond { index: arg.index, op: arg.op, value: arg.value, mask: arg.mask.unwrap_or(u64::MAX) })
            })
            .collect()
    }
}

/// One argument condition: the low 32 bits of argument `index` compared by `op` with the low
/// 32 bits of `value` (`masked_eq`: both ANDed with `mask` first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cond {
    index: u8,
    op: Op,
    value: u64,
    mask: u64,
}

/// Per syscall number: `None` = unconditional, `Some(rules)` = any of these rules, each a
/// conjunction of conditions.
type Chains = BTreeMap<u32, Option<Vec<Vec<Cond>>>>;

fn add(chains: &mut Chains, nr: u32, conditions: Vec<Cond>) {
    if conditions.is_empty() {
        chains.insert(nr, None);
        return;
    }
    // `None` means already allowed whatever the arguments: nothing to add.
    if let Some(rules) = chains.entry(nr).or_insert_with(|| Some(Vec::new())) {
        rules.push(conditions);
    }
}

/// The profile resolved for one target: what each filter decides for each syscall.
#[derive(Debug)]
struct Resolved {
    default_errno: u32,
    arch: TargetArch,
    allow: Chains,
    errnos: BTreeMap<u32, Chains>,
}

fn resolve(profile: &str, target: Target) -> Result<Resolved, ProfileError> {
    let profile: Profile = serde_json::from_str(profile)?;
    let (arch_name, arch) = native_arch()?;
    let mut allow = Chains::new();
    let mut errnos: BTreeMap<u32, Chains> = BTreeMap::new();
    for rule in profile.rules.iter().filter(|r| r.applies(arch_name, target)) {
        let chains = match rule.errno {
            None => &mut allow,
            Some(errno) => errnos.entry(errno).or_default(),
        };
        let conditions = rule.conditions()?;
        for name in &rule.names {
            // Names this architecture lacks (the *32 and *64 variants of 32-bit ABIs...)
            // are skipped, as libseccomp skips them.
            if let Ok(sysno) = syscalls::Sysno::from_str(name) {
                let nr = u32::try_from(sysno.id()).map_err(|_| ProfileError::Compile(format!("syscall {name}")))?;
                add(chains, nr, conditions.clone());
            }
        }
    }
    Ok(Resolved { default_errno: profile.default_errno, arch, allow, errnos })
}

/// Resolves `profile` (JSON in the format above) for `target` on this architecture and
/// compiles it.
pub(crate) fn compile(profile: &str, target: Target) -> Result<Compiled, ProfileError> {
    let resolved = resolve(profile, target)?;
    let allowed = resolved.allow.values().filter(|c| c.is_none()).count();
    let conditional = resolved.allow.len() - allowed;
    let mut programs = vec![build(
        &resolved.allow,
        SeccompAction::Errno(resolved.default_errno),
        SeccompAction::Allow,
        resolved.arch,
    )?];
    for (errno, chains) in &resolved.errnos {
        programs.push(build(chains, SeccompAction::Allow, SeccompAction::Errno(*errno), resolved.arch)?);
    }
    Ok(Compiled { programs, allowed, conditional })
}

/// The filters of Docker's default profile for the default capabilities on this machine,
/// compiled once per process (the host side sends them to every helper, so no step pays for
/// parsing and compiling the profile).
pub(crate) fn default_filters() -> &'static crate::protocol::Filters {
    static FILTERS: std::sync::OnceLock<crate::protocol::Filters> = std::sync::OnceLock::new();
    FILTERS.get_or_init(|| {
        let target = Target { caps: CapSet::docker_default(), kernel: kernel_version() };
        compile(DEFAULT_PROFILE, target).map(|c| c.programs).map_err(|e| e.to_string())
    })
}

/// One seccompiler filter: `chains` get `matched` when a rule of theirs holds, every other
/// syscall `mismatch`; another architecture is killed.
fn build(
    chains: &Chains,
    mismatch: SeccompAction,
    matched: SeccompAction,
    arch: TargetArch,
) -> Result<Program, ProfileError> {
    let compile_error = |e: seccompiler::BackendError| ProfileError::Compile(e.to_string());
    let mut rules = BTreeMap::new();
    for (nr, conjunctions) in chains {
        let mut out = Vec::new();
        for conds in conjunctions.iter().flatten() {
            let conds = conds
                .iter()
                .map(|c| {
                    let op = match c.op {
                        Op::Eq => SeccompCmpOp::Eq,
                        Op::Ne => SeccompCmpOp::Ne,
                        Op::Lt => SeccompCmpOp::Lt,
                        Op::Le => SeccompCmpOp::Le,
                        Op::Gt => SeccompCmpOp::Gt,
                        Op::Ge => SeccompCmpOp::Ge,
                        Op::MaskedEq => SeccompCmpOp::MaskedEq(c.mask),
                    };
                    SeccompCondition::new(c.index, SeccompCmpArgLen::Dword, op, c.value).map_err(compile_error)
                })
                .collect::<Result<Vec<_>, _>>()?;
            out.push(SeccompRule::new(conds).map_err(compile_error)?);
        }
        rules.insert(i64::from(*nr), out);
    }
    let filter = SeccompFilter::new(rules, mismatch, matched, arch).map_err(compile_error)?;
    let program: BpfProgram = filter.try_into().map_err(compile_error)?;
    Ok(program.iter().map(|i| Insn { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect())
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

    const LD_W_ABS: u16 = 0x20;
    const ALU_AND_K: u16 = 0x54;
    const JA: u16 = 0x05;
    const JEQ_K: u16 = 0x15;
    const JGT_K: u16 = 0x25;
    const JGE_K: u16 = 0x35;
    const RET_K: u16 = 0x06;
    const RET_ALLOW: u32 = 0x7fff_0000;
    const RET_KILL_PROCESS: u32 = 0x8000_0000;
    const fn ret_errno(errno: u32) -> u32 {
        0x0005_0000 | errno
    }

    /// The `AUDIT_ARCH_*` value (`<linux/audit.h>`) of the architecture we run on.
    fn native_audit_arch() -> u32 {
        const LE64: u32 = 0x8000_0000 | 0x4000_0000;
        match std::env::consts::ARCH {
            "x86_64" => 62 | LE64,
            "aarch64" => 183 | LE64,
            "riscv64" => 243 | LE64,
            other => panic!("no test for {other}"),
        }
    }

    /// A classic BPF interpreter for the instructions seccompiler emits, run on a
    /// `struct seccomp_data`.
    fn run(program: &[Insn], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
        let mut data = Vec::with_capacity(64);
        data.extend_from_slice(&nr.to_le_bytes());
        data.extend_from_slice(&arch.to_le_bytes());
        data.extend_from_slice(&0u64.to_le_bytes());
        for arg in args {
            data.extend_from_slice(&arg.to_le_bytes());
        }
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let insn = program[pc];
            pc += 1;
            let branch = |taken: bool| usize::from(if taken { insn.jt } else { insn.jf });
            match insn.code {
                LD_W_ABS => {
                    let at = insn.k as usize;
                    acc = u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
                }
                ALU_AND_K => acc &= insn.k,
                JA => pc += insn.k as usize,
                JEQ_K => pc += branch(acc == insn.k),
                JGT_K => pc += branch(acc > insn.k),
                JGE_K => pc += branch(acc >= insn.k),
                RET_K => return insn.k,
                other => panic!("unexpected BPF code {other:#x}"),
            }
        }
    }

    /// What the kernel decides with every filter installed: the most restrictive action wins,
    /// and between errnos the last installed filter's (see the module docs).
    fn decide(programs: &[Program], name: &str, args: [u64; 6]) -> u32 {
        let nr = u32::try_from(syscalls::Sysno::from_str(name).unwrap().id()).unwrap();
        programs.iter().map(|p| run(p, nr, native_audit_arch(), args)).fold(RET_ALLOW, |acc, r| {
            // The kernel compares actions as signed: KILL_PROCESS (high bit) is the strictest.
            #[allow(clippy::cast_possible_wrap)]
            let rank = |v: u32| (v & 0xffff_0000) as i32;
            if rank(r) < rank(acc) || (rank(r) == rank(acc) && rank(r) != rank(RET_ALLOW)) {
                r
            } else {
                acc
            }
        })
    }

    #[test]
    fn default_profile_decides_as_docker() {
        let programs = compile(DEFAULT_PROFILE, target(CapSet::docker_default())).unwrap().programs;
        let none = [0; 6];
        for allowed in ["read", "openat", "chown", "fchownat", "mknodat", "setuid", "chroot", "execve", "clone"] {
            assert_eq!(decide(&programs, allowed, none), RET_ALLOW, "{allowed}");
        }
        for blocked in ["keyctl", "add_key", "request_key", "unshare", "mount", "swapon", "reboot", "setns", "bpf"] {
            assert_eq!(decide(&programs, blocked, none), ret_errno(1), "{blocked}");
        }
        // clone3 gets ENOSYS so that libcs fall back to clone, whose flags are checked.
        assert_eq!(decide(&programs, "clone3", none), ret_errno(38));
        const CLONE_NEWUSER: u64 = 0x1000_0000;
        assert_eq!(decide(&programs, "clone", [CLONE_NEWUSER, 0, 0, 0, 0, 0]), ret_errno(1));
        // socket: AF_VSOCK (40) refused, the rest allowed.
        assert_eq!(decide(&programs, "socket", [2, 1, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(decide(&programs, "socket", [40, 1, 0, 0, 0, 0]), ret_errno(1));
        // personality: only the harmless personas.
        assert_eq!(decide(&programs, "personality", [0xffff_ffff, 0, 0, 0, 0, 0]), RET_ALLOW);
        assert_eq!(decide(&programs, "personality", [0x0040_0000, 0, 0, 0, 0, 0]), ret_errno(1));
        // Another architecture's syscall ABI is killed.
        assert_eq!(run(&programs[0], 0, 0x4000_0003, none), RET_KILL_PROCESS);
    }

    /// Benchmark, not a test (run as root, release):
    /// `cargo test --release -p rbuild-executor --lib -- --ignored seccomp_install_cost --nocapture`.
    /// Installs the default filters in 50 forked children and prints the median cost.
    #[test]
    #[ignore = "benchmark: prints the per-step cost of installing the filters"]
    fn seccomp_install_cost() {
        let programs = &default_filters().as_ref().unwrap();
        let mut costs = Vec::new();
        for _ in 0..50 {
            let ns = crate::sys::time_in_child(|| programs.iter().all(|p| crate::sys::install_seccomp(p).is_ok()));
            costs.push(ns.expect("seccomp refused the filter (needs root)"));
        }
        costs.sort_unstable();
        let insns: usize = programs.iter().map(Vec::len).sum();
        println!("seccomp: {insns} instructions, install median {} us", costs[costs.len() / 2].as_micros());
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v595"), (6, 18));
        assert_eq!(parse_kernel_version("4.8"), (4, 8));
        assert_eq!(parse_kernel_version("junk"), (0, 0));
    }
}
