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

/// `HOME` for a RUN as `user` (`name` or `uid`, optionally `:group`; empty is root) when the
/// environment sets none: the user's home in the filesystem's /etc/passwd, else `/`, as runc
/// (BuildKit's executor) sets it.
pub(crate) fn home_dir(view: &MergedView, user: &str) -> String {
    let name = user.split(':').next().filter(|n| !n.is_empty()).unwrap_or("0");
    let uid = name.parse::<u32>().ok();
    read_file(view, "etc/passwd")
        .lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            let home = *f.get(5)?;
            let matches = match uid {
                Some(uid) => f[2].trim().parse::<u32>().ok() == Some(uid),
                None => f[0] == name,
            };
            matches.then(|| home.to_owned())
        })
        .filter(|home| !home.is_empty())
        .unwrap_or_else(|| "/".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn home_comes_from_passwd_by_name_or_uid() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        std::fs::write(
            t.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n# app:x:7:7::/commented:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
        )
        .unwrap();
        let v = MergedView::new(vec![t.path().to_path_buf()]);
        assert_eq!(home_dir(&v, ""), "/root");
        assert_eq!(home_dir(&v, "app"), "/home/app");
        assert_eq!(home_dir(&v, "app:staff"), "/home/app");
        assert_eq!(home_dir(&v, "1000:50"), "/home/app");
        assert_eq!(home_dir(&v, "1234"), "/");
        assert_eq!(home_dir(&v, "ghost"), "/");
        assert_eq!(home_dir(&MergedView::new(vec![]), "root"), "/");
    }

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
