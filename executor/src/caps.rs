//! Linux capabilities: names, Docker's default set, and applying a set to the init.
//!
//! As root (uid 0 → 0) the command gets exactly the set in bounding, permitted and
//! effective, with inheritable and ambient empty (what runc does with Docker's defaults).
//! For any other uid the kernel clears permitted and effective at `setuid` (capabilities(7),
//! "Effect of user ID changes on capabilities"; `PR_SET_KEEPCAPS` is never set), so only
//! the bounding set remains: a setuid-root binary can regain up to that set, as under runc.

use crate::sys;

/// Every capability the kernel defines today (capability.h), by number.
pub(crate) const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Docker's (and containerd's, so BuildKit's) default capabilities.
pub(crate) const DOCKER_DEFAULT: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// A set of capabilities as the kernel's 64-bit mask (bit n = capability n).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CapSet(pub(crate) u64);

impl CapSet {
    /// Docker's default set: `0x00000000a80425fb`.
    pub(crate) fn docker_default() -> CapSet {
        CapSet::from_names(&DOCKER_DEFAULT)
    }

    pub(crate) fn from_names(names: &[&str]) -> CapSet {
        let mut mask = 0;
        for name in names {
            if let Some(bit) = NAMES.iter().position(|n| n == name) {
                mask |= 1u64 << bit;
            }
        }
        CapSet(mask)
    }

    /// True if the set holds `CAP_<name>` (`name` without the prefix).
    pub(crate) fn has(self, name: &str) -> bool {
        NAMES.iter().position(|n| *n == name).is_some_and(|bit| self.0 & (1 << bit) != 0)
    }

    /// `CAP_`-prefixed names, in capability order.
    pub(crate) fn names(self) -> Vec<String> {
        NAMES
            .iter()
            .enumerate()
            .filter(|(bit, _)| self.0 & (1 << bit) != 0)
            .map(|(_, name)| format!("CAP_{name}"))
            .collect()
    }
}

/// Drops every capability outside `keep` from the bounding set, and clears the inheritable
/// and ambient sets. Needs `CAP_SETPCAP`, so it runs while the init is still fully root.
pub(crate) fn limit_bounding(keep: CapSet) -> nix::Result<()> {
    // Capabilities past the last the kernel knows give EINVAL: the loop ends there, so a
    // kernel with more capabilities than NAMES still has all the extra ones dropped.
    for cap in 0..64u32 {
        if keep.0 & (1 << cap) != 0 {
            continue;
        }
        match sys::capbset_drop(cap) {
            Ok(()) => {}
            Err(nix::errno::Errno::EINVAL) => break,
            Err(e) => return Err(e),
        }
    }
    sys::ambient_clear_all()?;
    let current = sys::capget()?;
    sys::capset(sys::Caps { inheritable: 0, ..current })
}

/// After the switch to uid 0: permitted and effective become exactly `set` (as root, the
/// kernel left them full).
pub(crate) fn set_root_caps(set: CapSet) -> nix::Result<()> {
    sys::capset(sys::Caps { effective: set.0, permitted: set.0, inheritable: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_default_is_buildkits_mask() {
        let set = CapSet::docker_default();
        assert_eq!(set.0, 0xa804_25fb);
        assert!(set.has("SYS_CHROOT") && !set.has("SYS_ADMIN"));
        assert_eq!(set.names().len(), 14);
        assert_eq!(set.names()[0], "CAP_CHOWN");
    }
}
