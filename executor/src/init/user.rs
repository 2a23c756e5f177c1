//! The `USER` of a RUN step: resolving it through the rootfs `/etc/passwd` and `/etc/group`,
//! and switching to it.
//!
//! The rules follow runc's `GetExecUser` (what Docker and BuildKit do):
//! - `""` is `0:0` with no supplementary groups;
//! - a user given by name must be in `/etc/passwd` (except `root`, which is `0:0` when the
//!   file has no entry); its primary gid comes from there;
//! - a numeric uid is used as is; when `/etc/passwd` has an entry for it, its gid (and
//!   name, for groups) come from there, otherwise the gid is 0;
//! - an explicit `:group` (name, looked up in `/etc/group`, or number) sets the gid, and then
//!   there are no supplementary groups;
//! - otherwise the supplementary groups are the `/etc/group` entries that list the user.

use std::io::Read;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid};
use serde::{Deserialize, Serialize};

use crate::error::OsError;

/// Largest `/etc/passwd` or `/etc/group` read; the rootfs is untrusted (it could be a
/// symlink to `/dev/zero`).
const MAX_DB_SIZE: u64 = 16 << 20;

/// Resolving or switching to the step's user failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum UserError {
    /// Reading `/etc/passwd` or `/etc/group` of the rootfs failed.
    #[error("cannot read {} in the rootfs", path.display())]
    ReadDatabase {
        /// The file, inside the rootfs.
        path: PathBuf,
        /// The cause.
        #[source]
        source: OsError,
    },
    /// A user name is not in `/etc/passwd`.
    #[error("unable to find user {user}: no matching entries in passwd file")]
    UnknownUser {
        /// The name.
        user: String,
    },
    /// A group name is not in `/etc/group`.
    #[error("unable to find group {group}: no matching entries in group file")]
    UnknownGroup {
        /// The name.
        group: String,
    },
    /// The user string is malformed (empty part, too many colons, id out of range).
    #[error("invalid user {user:?}")]
    Invalid {
        /// The string.
        user: String,
    },
    /// `setgroups(2)`, `setgid(2)` or `setuid(2)` failed.
    #[error("cannot switch to {step} {id}")]
    Switch {
        /// `groups`, `gid` or `uid`.
        step: String,
        /// The id(s).
        id: String,
        /// The cause.
        #[source]
        source: OsError,
    },
}

/// The ids a command runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExecUser {
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// Supplementary groups (exactly the list passed to setgroups).
    pub(crate) groups: Vec<u32>,
}

#[derive(Debug, PartialEq, Eq)]
struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
}

#[derive(Debug, PartialEq, Eq)]
struct GroupEntry<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

/// Parses `/etc/passwd` lines (`name:password:uid:gid:gecos:home:shell`), skipping comments
/// and malformed lines as libc does.
fn parse_passwd(text: &str) -> Vec<PasswdEntry<'_>> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let _password = fields.next();
            let uid = fields.next()?.trim().parse().ok()?;
            let gid = fields.next()?.trim().parse().ok()?;
            Some(PasswdEntry { name, uid, gid })
        })
        .collect()
}

/// Parses `/etc/group` lines (`name:password:gid:member,member`).
fn parse_group(text: &str) -> Vec<GroupEntry<'_>> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let _password = fields.next();
            let gid = fields.next()?.trim().parse().ok()?;
            let members = fields.next().unwrap_or("").split(',').map(str::trim).filter(|m| !m.is_empty()).collect();
            Some(GroupEntry { name, gid, members })
        })
        .collect()
}

/// Resolves `user` against the contents of `/etc/passwd` and `/etc/group` (`None` when the
/// file does not exist). Pure, so it is unit-tested.
pub(crate) fn resolve(user: &str, passwd: Option<&str>, group: Option<&str>) -> Result<ExecUser, UserError> {
    let invalid = || UserError::Invalid { user: user.to_owned() };
    if user.is_empty() {
        return Ok(ExecUser { uid: 0, gid: 0, groups: Vec::new() });
    }
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) if !u.is_empty() && !g.is_empty() && !g.contains(':') => (u, Some(g)),
        Some(_) => return Err(invalid()),
        None => (user, None),
    };
    let users = parse_passwd(passwd.unwrap_or(""));
    let numeric_uid = parse_id(user_part);
    let entry = match numeric_uid {
        Some(uid) => users.iter().find(|e| e.uid == uid),
        None => users.iter().find(|e| e.name == user_part),
    };
    let (uid, mut gid, name) = match (entry, numeric_uid) {
        (Some(e), _) => (e.uid, e.gid, Some(e.name)),
        (None, Some(uid)) => (uid, 0, None),
        (None, None) if user_part == "root" => (0, 0, Some("root")),
        (None, None) if looks_numeric(user_part) => return Err(invalid()),
        (None, None) => return Err(UserError::UnknownUser { user: user_part.to_owned() }),
    };
    let groups = parse_group(group.unwrap_or(""));
    let mut supplementary = Vec::new();
    if let Some(group_part) = group_part {
        gid = match parse_id(group_part) {
            Some(gid) => gid,
            None if looks_numeric(group_part) => return Err(invalid()),
            None => groups
                .iter()
                .find(|g| g.name == group_part)
                .map(|g| g.gid)
                .ok_or_else(|| UserError::UnknownGroup { group: group_part.to_owned() })?,
        };
    } else if let Some(name) = name {
        for g in groups.iter().filter(|g| g.members.contains(&name)) {
            if !supplementary.contains(&g.gid) {
                supplementary.push(g.gid);
            }
        }
    }
    Ok(ExecUser { uid, gid, groups: supplementary })
}

/// A uid/gid: decimal, below 2^32 - 1 (which is `(uid_t)-1`, "no change" to the kernel).
fn parse_id(s: &str) -> Option<u32> {
    s.parse::<u32>().ok().filter(|&id| id != u32::MAX)
}

fn looks_numeric(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || b == b'-' || b == b'+')
}

/// Reads a user database file of the (already pivoted-into) rootfs; `None` if it is missing.
pub(crate) fn read_database(path: &Path) -> Result<Option<String>, UserError> {
    let fail = |source: std::io::Error| UserError::ReadDatabase { path: path.to_owned(), source: source.into() };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_DB_SIZE).read_to_end(&mut bytes).map_err(fail)?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// True in a user namespace whose `setgroups` is denied (see user_namespaces(7)).
fn setgroups_denied() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny")
}

/// Switches the process to `user`: groups, then gid, then uid (once the uid is not 0, the
/// others can no longer be changed; setgroups(2), setuid(2)).
pub(crate) fn switch(user: &ExecUser) -> Result<(), UserError> {
    fn fail(step: &'static str, id: String) -> impl FnOnce(nix::errno::Errno) -> UserError {
        move |errno| UserError::Switch { step: step.to_owned(), id, source: errno.into() }
    }
    let groups: Vec<Gid> = user.groups.iter().copied().map(Gid::from_raw).collect();
    match nix::unistd::setgroups(&groups) {
        // A single-id user namespace (rootless without subordinate ids) denies setgroups;
        // its only group is the gid, so nothing is lost when no other group is asked for.
        Err(nix::errno::Errno::EPERM) if setgroups_denied() && user.groups.iter().all(|g| *g == user.gid) => {}
        other => other.map_err(fail("groups", format!("{:?}", user.groups)))?,
    }
    nix::unistd::setgid(Gid::from_raw(user.gid)).map_err(fail("gid", user.gid.to_string()))?;
    nix::unistd::setuid(Uid::from_raw(user.uid)).map_err(fail("uid", user.uid.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # a comment\n\
        daemon:x:1:1::/:/sbin/nologin\n\
        broken line\n\
        app:x:1000:1001:App:/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:root\n\
        bin:x:1:root,bin,daemon\n\
        app:x:1001:\n\
        staff:x:50: app , other\n\
        docker:x:999:app\n";

    fn ok(user: &str) -> (u32, u32, Vec<u32>) {
        let u = resolve(user, Some(PASSWD), Some(GROUP)).unwrap();
        (u.uid, u.gid, u.groups)
    }

    #[test]
    fn resolves_like_runc() {
        assert_eq!(ok(""), (0, 0, vec![]));
        assert_eq!(ok("root"), (0, 0, vec![0, 1]));
        assert_eq!(ok("app"), (1000, 1001, vec![50, 999]));
        assert_eq!(ok("1000"), (1000, 1001, vec![50, 999]));
        assert_eq!(ok("app:staff"), (1000, 50, vec![]));
        assert_eq!(ok("app:7"), (1000, 7, vec![]));
        assert_eq!(ok("4242"), (4242, 0, vec![]));
        assert_eq!(ok("4242:4343"), (4242, 4343, vec![]));
        assert_eq!(ok("daemon"), (1, 1, vec![1]));
    }

    #[test]
    fn missing_files() {
        let r = |user| resolve(user, None, None);
        assert_eq!(r("root").unwrap(), ExecUser { uid: 0, gid: 0, groups: vec![] });
        assert_eq!(r("5:6").unwrap(), ExecUser { uid: 5, gid: 6, groups: vec![] });
        assert!(matches!(r("app"), Err(UserError::UnknownUser { .. })));
        assert!(matches!(r("5:staff"), Err(UserError::UnknownGroup { .. })));
    }

    #[test]
    fn rejects_bad_users() {
        let err = |user| resolve(user, Some(PASSWD), Some(GROUP)).unwrap_err();
        assert!(matches!(err("nobody"), UserError::UnknownUser { .. }));
        assert!(matches!(err("app:nogroup"), UserError::UnknownGroup { .. }));
        for bad in [":", "app:", ":1", "1:2:3", "-1", "4294967295", "99999999999", "1:-5"] {
            assert!(matches!(err(bad), UserError::Invalid { .. }), "{bad}");
        }
    }

    #[test]
    fn parses_databases() {
        let users = parse_passwd(PASSWD);
        assert_eq!(users.len(), 3);
        assert_eq!(users[2], PasswdEntry { name: "app", uid: 1000, gid: 1001 });
        let groups = parse_group(GROUP);
        assert_eq!(groups[3], GroupEntry { name: "staff", gid: 50, members: vec!["app", "other"] });
        assert!(groups[2].members.is_empty());
    }
}
