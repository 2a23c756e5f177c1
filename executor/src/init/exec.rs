//! The last steps of the init: the working directory, the `PATH` lookup and `execve`.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::unistd::AccessFlags;
use serde::{Deserialize, Serialize};

use crate::error::OsError;

/// What Docker uses when the image sets no `PATH`.
pub(crate) const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Entering the working directory or executing the command failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// Creating a missing component of the working directory failed.
    #[error("cannot create working directory {}", path.display())]
    CreateCwd {
        /// The directory being created, inside the rootfs.
        path: PathBuf,
        /// The cause.
        #[source]
        source: OsError,
    },
    /// `chdir(2)` into the working directory failed.
    #[error("cannot enter working directory {}", path.display())]
    EnterCwd {
        /// The directory, inside the rootfs.
        path: PathBuf,
        /// The cause.
        #[source]
        source: OsError,
    },
    /// `args[0]` has no `/` and is in no directory of `PATH`.
    #[error("exec: {command:?}: executable file not found in $PATH (PATH={search_path})")]
    NotFound {
        /// `args[0]`.
        command: String,
        /// The `PATH` searched.
        search_path: String,
    },
    /// `execve(2)` failed (missing file, no permission, bad interpreter or format...).
    #[error("cannot execute {}", path.display())]
    Exec {
        /// The program, inside the rootfs.
        path: PathBuf,
        /// The cause.
        #[source]
        source: OsError,
    },
}

/// `mkdir -p cwd` (new components 0755, owned by the user), then `chdir(cwd)`. Runs after
/// `pivot_root`, so symlinks resolve inside the rootfs.
pub(crate) fn enter_cwd(cwd: &Path, uid: u32, gid: u32) -> Result<(), CommandError> {
    let mut path = PathBuf::from("/");
    for component in cwd.components() {
        match component {
            Component::Normal(name) => path.push(name),
            Component::ParentDir => {
                path.pop();
                continue;
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => continue,
        }
        if path.exists() {
            continue;
        }
        let created = std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&path)
            .and_then(|()| std::os::unix::fs::lchown(&path, Some(uid), Some(gid)));
        created.map_err(|e| CommandError::CreateCwd { path: path.clone(), source: e.into() })?;
    }
    nix::unistd::chdir(cwd).map_err(|errno| CommandError::EnterCwd { path: cwd.to_owned(), source: errno.into() })
}

/// The `PATH` of the command's environment (the last `PATH=` wins, like getenv after
/// putenv), or Docker's default.
pub(crate) fn search_path(env: &[String]) -> &str {
    env.iter().rev().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH)
}

/// The candidate programs for `command`, in lookup order (an empty `PATH` element is the
/// current directory, as in execvp(3)).
pub(crate) fn candidates(command: &str, search_path: &str) -> Vec<PathBuf> {
    if command.contains('/') {
        return vec![PathBuf::from(command)];
    }
    search_path
        .split(':')
        .map(|dir| if dir.is_empty() { Path::new(".") } else { Path::new(dir) })
        .map(|dir| dir.join(command))
        .collect()
}

/// Finds the program for `args[0]`: the first candidate that is a regular file the user may
/// execute. Call after switching to the user.
pub(crate) fn find_program(command: &str, env: &[String]) -> Result<PathBuf, CommandError> {
    let search = search_path(env);
    let all = candidates(command, search);
    if command.contains('/') {
        // execve reports what is wrong with an explicit path best.
        return Ok(all.into_iter().next().unwrap_or_default());
    }
    all.into_iter()
        .find(|p| is_executable(p))
        .ok_or_else(|| CommandError::NotFound { command: command.to_owned(), search_path: search.to_owned() })
}

fn is_executable(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    meta.is_file() && meta.permissions().mode() & 0o111 != 0 && nix::unistd::access(path, AccessFlags::X_OK).is_ok()
}

/// `execve(program, args, env)`; returns only on failure.
pub(crate) fn exec(program: &Path, args: &[String], env: &[String]) -> CommandError {
    let fail = |errno: nix::errno::Errno| CommandError::Exec { path: program.to_owned(), source: errno.into() };
    // The spec was validated on the host: no string contains a NUL byte.
    let to_c = |s: &[u8]| CString::new(s).map_err(|_| fail(nix::errno::Errno::EINVAL));
    let collect = |v: &[String]| v.iter().map(|s| to_c(s.as_bytes())).collect::<Result<Vec<_>, _>>();
    let (path, argv, envp) = match (to_c(program.as_os_str().as_bytes()), collect(args), collect(env)) {
        (Ok(path), Ok(argv), Ok(envp)) => (path, argv, envp),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return e,
    };
    match nix::unistd::execve(&path, &argv, &envp) {
        Err(errno) => fail(errno),
        Ok(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_lookup_order() {
        let env = vec!["PATH=/a".to_owned(), "X=1".to_owned(), "PATH=/usr/bin::/bin".to_owned()];
        assert_eq!(search_path(&env), "/usr/bin::/bin");
        assert_eq!(search_path(&[]), DEFAULT_PATH);
        assert_eq!(
            candidates("ls", search_path(&env)),
            [Path::new("/usr/bin/ls"), Path::new("./ls"), Path::new("/bin/ls")]
        );
        assert_eq!(candidates("./x", "/bin"), [Path::new("./x")]);
        assert_eq!(candidates("/bin/sh", "/nope"), [Path::new("/bin/sh")]);
    }

    #[test]
    fn not_found_is_typed() {
        let env = vec!["PATH=/nonexistent-rbuild-dir".to_owned()];
        let err = find_program("definitely-not-a-command", &env).unwrap_err();
        assert!(matches!(err, CommandError::NotFound { .. }));
        assert!(err.to_string().contains("executable file not found"));
    }
}
