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
//! Each filter checks the architecture (any other is killed), then finds the syscall number
//! by binary search over the ranges of numbers that share a verdict, so a syscall costs about
//! a dozen instructions. That is what the seccompiler crate's filters decide (a test checks
//! it decision by decision), in a program about a seventh of the size of seccompiler's
//! linear one: installing it (the kernel JIT-compiles the program and runs it for every
//! syscall number to build its action cache) takes a fraction of the time.
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

/// The Go `GOARCH` name and the `AUDIT_ARCH_*` value (`<linux/audit.h>`) of the
/// architecture we run on.
fn native_arch() -> Result<(&'static str, u32), ProfileError> {
    // EM_* | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
    const LE64: u32 = 0x8000_0000 | 0x4000_0000;
    match std::env::consts::ARCH {
        "x86_64" => Ok(("amd64", 62 | LE64)),
        "aarch64" => Ok(("arm64", 183 | LE64)),
        "riscv64" => Ok(("riscv64", 243 | LE64)),
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
    arch: u32,
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
    let mut programs = vec![bpf::build(&resolved.allow, ret_errno(resolved.default_errno), RET_ALLOW, resolved.arch)?];
    for (errno, chains) in &resolved.errnos {
        programs.push(bpf::build(chains, RET_ALLOW, ret_errno(*errno), resolved.arch)?);
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

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;

fn ret_errno(errno: u32) -> u32 {
    0x0005_0000 | (errno & 0xffff)
}

/// The code generator.
mod bpf {
    use super::{Chains, Cond, Insn, Op, ProfileError, Program, RET_KILL_PROCESS};

    pub(super) const LD_W_ABS: u16 = 0x20;
    pub(super) const ALU_AND_K: u16 = 0x54;
    pub(super) const JA: u16 = 0x05;
    pub(super) const JEQ_K: u16 = 0x15;
    pub(super) const JGT_K: u16 = 0x25;
    pub(super) const JGE_K: u16 = 0x35;
    pub(super) const RET_K: u16 = 0x06;
    /// `struct seccomp_data`: nr, arch, instruction_pointer, `args[6]`.
    const NR_OFFSET: u32 = 0;
    const ARCH_OFFSET: u32 = 4;
    const ARGS_OFFSET: u32 = 16;
    /// BPF_MAXINSNS.
    const MAX_INSNS: usize = 4096;

    fn stmt(code: u16, k: u32) -> Insn {
        Insn { code, jt: 0, jf: 0, k }
    }

    fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
        Insn { code, jt, jf, k }
    }

    /// What a range of syscall numbers gets.
    enum Leaf<'a> {
        Mismatch,
        Match,
        Rules(&'a [Vec<Cond>]),
    }

    /// `chains` get `matched` (when a rule of theirs holds), every other syscall `mismatch`,
    /// another architecture is killed.
    pub(super) fn build(chains: &Chains, mismatch: u32, matched: u32, arch: u32) -> Result<Program, ProfileError> {
        let mut program = vec![
            stmt(LD_W_ABS, ARCH_OFFSET),
            jump(JEQ_K, arch, 1, 0),
            stmt(RET_K, RET_KILL_PROCESS),
            stmt(LD_W_ABS, NR_OFFSET),
        ];
        program.extend(tree(&ranges(chains), mismatch, matched)?);
        if program.len() > MAX_INSNS {
            return Err(ProfileError::Compile(format!("{} BPF instructions, more than {MAX_INSNS}", program.len())));
        }
        Ok(program)
    }

    /// The syscall numbers as ranges `[start, next start)` of one verdict each, covering
    /// every 32-bit value; adjacent unconditional matches are merged.
    fn ranges(chains: &Chains) -> Vec<(u32, Leaf<'_>)> {
        let mut out: Vec<(u32, Leaf<'_>)> = Vec::new();
        let mut next: u64 = 0;
        for (&nr, rules) in chains {
            if u64::from(nr) > next {
                out.push((u32::try_from(next).unwrap_or(u32::MAX), Leaf::Mismatch));
            }
            let extends = u64::from(nr) == next && rules.is_none() && matches!(out.last(), Some((_, Leaf::Match)));
            if !extends {
                out.push((nr, rules.as_deref().map_or(Leaf::Match, Leaf::Rules)));
            }
            next = u64::from(nr) + 1;
        }
        if next <= u64::from(u32::MAX) {
            out.push((u32::try_from(next).unwrap_or(u32::MAX), Leaf::Mismatch));
        }
        out
    }

    /// Binary search over `ranges` (the syscall number is in the accumulator): the left half
    /// follows the comparison, the right half follows the left. Every leaf ends in a return,
    /// so nothing falls through.
    fn tree(ranges: &[(u32, Leaf<'_>)], mismatch: u32, matched: u32) -> Result<Vec<Insn>, ProfileError> {
        let Some(((_, first), rest)) = ranges.split_first() else {
            return Ok(vec![stmt(RET_K, mismatch)]);
        };
        if rest.is_empty() {
            return leaf(first, mismatch, matched);
        }
        let mid = ranges.len() / 2;
        let left = tree(&ranges[..mid], mismatch, matched)?;
        let right = tree(&ranges[mid..], mismatch, matched)?;
        let boundary = ranges[mid].0;
        let mut out = Vec::with_capacity(left.len() + right.len() + 2);
        match u8::try_from(left.len()) {
            Ok(skip) => out.push(jump(JGE_K, boundary, skip, 0)),
            Err(_) => {
                let skip = u32::try_from(left.len()).map_err(|_| ProfileError::Compile("program too long".into()))?;
                out.push(jump(JGE_K, boundary, 0, 1));
                out.push(stmt(JA, skip));
            }
        }
        out.extend(left);
        out.extend(right);
        Ok(out)
    }

    fn leaf(leaf: &Leaf<'_>, mismatch: u32, matched: u32) -> Result<Vec<Insn>, ProfileError> {
        let rules = match leaf {
            Leaf::Mismatch => return Ok(vec![stmt(RET_K, mismatch)]),
            Leaf::Match => return Ok(vec![stmt(RET_K, matched)]),
            Leaf::Rules(rules) => rules,
        };
        let mut out = Vec::new();
        for rule in *rules {
            // Each condition that fails jumps past the rest of the rule (to the next rule, or
            // the final mismatch); when all hold, the rule returns `matched`.
            let lens: Vec<usize> = rule.iter().map(cond_len).collect();
            let total = lens.iter().sum::<usize>() + 1;
            let mut at = 0;
            for (cond, len) in rule.iter().zip(&lens) {
                at += len;
                let fail = u8::try_from(total - at)
                    .map_err(|_| ProfileError::Compile("a rule with too many conditions".into()))?;
                out.extend(cond_code(cond, fail));
            }
            out.push(stmt(RET_K, matched));
        }
        out.push(stmt(RET_K, mismatch));
        Ok(out)
    }

    fn cond_len(cond: &Cond) -> usize {
        if cond.op == Op::MaskedEq {
            3
        } else {
            2
        }
    }

    /// Loads the argument's low half and continues when `cond` holds, else skips `fail`.
    fn cond_code(cond: &Cond, fail: u8) -> Vec<Insn> {
        // Little-endian: the low half of an argument is at its own offset.
        let mut out = vec![stmt(LD_W_ABS, ARGS_OFFSET + 8 * u32::from(cond.index))];
        #[allow(clippy::cast_possible_truncation)] // the low 32 bits, by design
        let low = |value: u64| value as u32;
        let value = low(cond.value);
        let test = match cond.op {
            Op::Eq => jump(JEQ_K, value, 0, fail),
            Op::Ne => jump(JEQ_K, value, fail, 0),
            Op::Ge => jump(JGE_K, value, 0, fail),
            Op::Lt => jump(JGE_K, value, fail, 0),
            Op::Gt => jump(JGT_K, value, 0, fail),
            Op::Le => jump(JGT_K, value, fail, 0),
            Op::MaskedEq => {
                out.push(stmt(ALU_AND_K, low(cond.mask)));
                jump(JEQ_K, low(cond.value & cond.mask), 0, fail)
            }
        };
        out.push(test);
        out
    }
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

    /// A classic BPF interpreter for the instructions seccomp filters use, run on a
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
                bpf::LD_W_ABS => {
                    let at = insn.k as usize;
                    acc = u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
                }
                bpf::ALU_AND_K => acc &= insn.k,
                bpf::JA => pc += insn.k as usize,
                bpf::JEQ_K => pc += branch(acc == insn.k),
                bpf::JGT_K => pc += branch(acc > insn.k),
                bpf::JGE_K => pc += branch(acc >= insn.k),
                bpf::RET_K => return insn.k,
                other => panic!("unexpected BPF code {other:#x}"),
            }
        }
    }

    /// The same profile compiled the way this module did before, with seccompiler.
    fn seccompiler_programs(profile: &str, target: Target) -> Vec<Program> {
        use seccompiler::{
            BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
            TargetArch,
        };
        let resolved = resolve(profile, target).unwrap();
        let arch = TargetArch::try_from(std::env::consts::ARCH).unwrap();
        let build = |chains: &Chains, mismatch: SeccompAction, matched: SeccompAction| {
            let rules = chains
                .iter()
                .map(|(nr, rules)| {
                    let rules = rules.iter().flatten().map(|conds| {
                        let conds = conds.iter().map(|c| {
                            let op = match c.op {
                                Op::Eq => SeccompCmpOp::Eq,
                                Op::Ne => SeccompCmpOp::Ne,
                                Op::Lt => SeccompCmpOp::Lt,
                                Op::Le => SeccompCmpOp::Le,
                                Op::Gt => SeccompCmpOp::Gt,
                                Op::Ge => SeccompCmpOp::Ge,
                                Op::MaskedEq => SeccompCmpOp::MaskedEq(c.mask),
                            };
                            SeccompCondition::new(c.index, SeccompCmpArgLen::Dword, op, c.value).unwrap()
                        });
                        SeccompRule::new(conds.collect()).unwrap()
                    });
                    (i64::from(*nr), rules.collect())
                })
                .collect();
            let program: BpfProgram = SeccompFilter::new(rules, mismatch, matched, arch).unwrap().try_into().unwrap();
            program.iter().map(|i| Insn { code: i.code, jt: i.jt, jf: i.jf, k: i.k }).collect::<Program>()
        };
        let mut programs =
            vec![build(&resolved.allow, SeccompAction::Errno(resolved.default_errno), SeccompAction::Allow)];
        for (errno, chains) in &resolved.errnos {
            programs.push(build(chains, SeccompAction::Allow, SeccompAction::Errno(*errno)));
        }
        programs
    }

    /// Argument values around every value and mask the profile compares with.
    fn probe_values(profile: &str) -> Vec<u64> {
        let profile: Profile = serde_json::from_str(profile).unwrap();
        let mut values = vec![0, 1, 2, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 1 << 32, u64::MAX, 0xdead_beef_0000_0000];
        for arg in profile.rules.iter().flat_map(|r| &r.args) {
            for v in [arg.value, arg.value & arg.mask.unwrap_or(u64::MAX), arg.mask.unwrap_or(0)] {
                for bit in [0, 1, 8, 16, 17, 24, 28, 30, 31, 32, 40, 63] {
                    values.push(v ^ (1 << bit));
                }
                values.extend([v, v.wrapping_add(1), v.wrapping_sub(1), v | (1 << 32), v | 0xffff_ffff_0000_0000]);
            }
        }
        values.sort_unstable();
        values.dedup();
        values
    }

    #[test]
    fn decides_every_syscall_as_seccompiler_does() {
        let (_, native) = native_arch().unwrap();
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut random = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for caps in [CapSet::docker_default(), CapSet(u64::MAX >> 23), CapSet(0)] {
            for kernel in [(6, 1), (3, 0)] {
                let target = Target { caps, kernel };
                let ours = compile(DEFAULT_PROFILE, target).unwrap().programs;
                let theirs = seccompiler_programs(DEFAULT_PROFILE, target);
                assert_eq!(ours.len(), theirs.len());
                let values = probe_values(DEFAULT_PROFILE);
                let mut nrs: Vec<u32> = (0..1100).collect();
                nrs.extend((0..600).map(|n| 0x4000_0000 + n));
                nrs.extend([0x3fff_ffff, 0x7fff_ffff, 0x8000_0000, 0xffff_fffe, 0xffff_ffff]);
                // The allow-list is where the binary search pays.
                assert!(ours[0].len() * 5 < theirs[0].len(), "{} vs {} instructions", ours[0].len(), theirs[0].len());
                for (ours, theirs) in ours.iter().zip(&theirs) {
                    for arch in [native, 0x4000_0003, 0xc000_003e, 0] {
                        for &nr in &nrs {
                            let check = |args: [u64; 6]| {
                                let (a, b) = (run(ours, nr, arch, args), run(theirs, nr, arch, args));
                                assert_eq!(a, b, "nr {nr} arch {arch:#x} args {args:x?} caps {caps:?} {kernel:?}");
                            };
                            check([0; 6]);
                            for _ in 0..2 {
                                check([random(), random(), random(), random(), random(), random()]);
                            }
                            // Every probe value in every argument (the conditional syscalls
                            // are few, so only they get the full sweep).
                            if nr < 1100 && arch == native && run(ours, nr, arch, [0; 6]) != run(ours, nr, arch, [1; 6])
                            {
                                for i in 0..6 {
                                    for &v in &values {
                                        let mut args = [random(); 6];
                                        args[i] = v;
                                        check(args);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn conditions_compile_like_seccompiler_for_every_operator() {
        // A made-up profile exercising each operator, several rules and conditions per
        // syscall, and errno filters.
        let profile = r#"{"provenance": [], "default_errno": 1, "rules": [
            {"names": ["read", "write", "open", "close", "stat"]},
            {"names": ["socket"], "args": [{"index": 0, "op": "ne", "value": 40}]},
            {"names": ["connect"], "args": [{"index": 0, "op": "lt", "value": 3}]},
            {"names": ["listen"], "args": [{"index": 1, "op": "ge", "value": 5}]},
            {"names": ["accept"], "args": [{"index": 2, "op": "gt", "value": 9}]},
            {"names": ["getsockname"], "args": [{"index": 3, "op": "le", "value": 9}]},
            {"names": ["getpeername"], "args": [{"index": 4, "op": "eq", "value": 4294967303}]},
            {"names": ["bind"], "args": [{"index": 1, "op": "lt", "value": 3}, {"index": 2, "op": "ge", "value": 5}]},
            {"names": ["ioctl"], "args": [{"index": 1, "op": "le", "value": 4294967296}]},
            {"names": ["ioctl"], "args": [{"index": 1, "op": "gt", "value": 1000}, {"index": 0, "op": "eq", "value": 7}]},
            {"names": ["clone"], "args": [{"index": 0, "op": "masked_eq", "mask": 2114060288, "value": 16}]},
            {"names": ["mmap"], "args": [{"index": 5, "op": "masked_eq", "value": 4294967297}]},
            {"names": ["clone3", "unshare"], "errno": 38},
            {"names": ["setns"], "errno": 38, "args": [{"index": 1, "op": "eq", "value": 0}]},
            {"names": ["kexec_load"], "errno": 13}
        ]}"#;
        let target = Target { caps: CapSet::docker_default(), kernel: (6, 1) };
        let ours = compile(profile, target).unwrap().programs;
        let theirs = seccompiler_programs(profile, target);
        assert_eq!(ours.len(), 3);
        let (_, native) = native_arch().unwrap();
        let values = probe_values(profile);
        // Every argument swept through every probe value, for the syscalls with rules; the
        // rest only need their number checked.
        let resolved = resolve(profile, target).unwrap();
        let with_rules: Vec<u32> = std::iter::once(&resolved.allow)
            .chain(resolved.errnos.values())
            .flat_map(|chains| chains.iter().filter(|(_, rules)| rules.is_some()).map(|(nr, _)| *nr))
            .collect();
        assert!(with_rules.len() >= 8, "{with_rules:?}");
        let fillers = [0, 1, 3, 5, 7, 9, 10, 40, 1000, 1001, 0x1_0000_0007, u64::MAX];
        for (ours, theirs) in ours.iter().zip(&theirs) {
            for nr in 0..500 {
                for &w in &fillers {
                    assert_eq!(run(ours, nr, native, [w; 6]), run(theirs, nr, native, [w; 6]), "nr {nr} {w:x}");
                }
            }
            for &nr in &with_rules {
                for i in 0..6 {
                    for &v in &values {
                        for &w in &fillers {
                            let mut args = [w; 6];
                            args[i] = v;
                            assert_eq!(run(ours, nr, native, args), run(theirs, nr, native, args), "nr {nr} {args:x?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v595"), (6, 18));
        assert_eq!(parse_kernel_version("4.8"), (4, 8));
        assert_eq!(parse_kernel_version("junk"), (0, 0));
    }
}
