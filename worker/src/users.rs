//! Resolving `--chown` user and group names against a filesystem's /etc/passwd and /etc/group.

use std::path::Path;

use rbuild_solver::ir::Chown;

use crate::error::WorkerError;
use crate::merged::MergedView;

fn read_file(view: &MergedView, rel: &str) -> String {
    match view.lstat(Path::new(rel)) {
        Ok(Some(f)) if f.meta.is_file() => std::fs::read_to_string(&f.host_path).unwrap_or_default(),
        _ => String::new(),
    }
}

/// `(uid, primary gid)` of a user name in passwd text.
fn passwd_lookup(passwd: &str, name: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 4 && f[0] == name {
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        } else {
            None
        }
    })
}

fn group_lookup(group: &str, name: &str) -> Option<u32> {
    group.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 3 && f[0] == name {
            f[2].parse().ok()
        } else {
            None
        }
    })
}

/// Resolves a `--chown` spec: numeric ids as they are; names from the destination filesystem.
/// A user without a group gets the user's primary group (for a name) or the same number (for an
/// id), as Docker documents.
pub fn resolve_owner(view: &MergedView, chown: &Chown) -> Result<(u32, u32), WorkerError> {
    let (uid, primary) = match chown.user.parse::<u32>() {
        Ok(uid) => (uid, uid),
        Err(_) => passwd_lookup(&read_file(view, "etc/passwd"), &chown.user)
            .ok_or_else(|| WorkerError::UnknownUser { name: chown.user.clone() })?,
    };
    let gid = match &chown.group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_lookup(&read_file(view, "etc/group"), g)
                .ok_or_else(|| WorkerError::UnknownGroup { name: g.clone() })?,
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\nbad:x:notanumber:1\n";
        assert_eq!(passwd_lookup(passwd, "app"), Some((1000, 1001)));
        assert_eq!(passwd_lookup(passwd, "bad"), None);
        assert_eq!(passwd_lookup(passwd, "nobody"), None);
        assert_eq!(group_lookup("staff:x:50:app\n", "staff"), Some(50));
    }

    #[test]
    fn numeric_without_group_uses_same_number() {
        let v = MergedView::new(vec![]);
        assert_eq!(resolve_owner(&v, &Chown { user: "42".into(), group: None }).unwrap(), (42, 42));
        assert_eq!(resolve_owner(&v, &Chown { user: "42".into(), group: Some("7".into()) }).unwrap(), (42, 7));
        assert!(resolve_owner(&v, &Chown { user: "ghost".into(), group: None }).is_err());
    }
}
