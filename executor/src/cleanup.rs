//! Host side, after the run: removes the mount stubs the init created from the upper dir,
//! and restores the times of the directories they were created in.
//!
//! By now the sandbox is gone, but the upper dir holds whatever the command left: a stub's
//! parent may have been replaced by a symlink to anywhere. So every path is walked one
//! component at a time with `O_NOFOLLOW` from a descriptor of the upper dir, and only an
//! empty directory or an empty regular file is removed (one the command filled, or replaced
//! by something else, is the command's change and stays, as in BuildKit).

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::UnlinkatFlags;

use crate::error::ExecError;
use crate::protocol::{Created, ParentTimes};

/// The parent directory of a relative path (opened without following any symlink) and its
/// last component; `None` if the path is not plain relative or a parent is not a directory
/// any more.
fn open_parent<'p>(upper: &OwnedFd, path: &'p str) -> nix::Result<Option<(OwnedFd, &'p str)>> {
    let names: Vec<&str> = Path::new(path)
        .components()
        .map(|c| match c {
            Component::Normal(name) => name.to_str(),
            _ => None,
        })
        .collect::<Option<_>>()
        .unwrap_or_default();
    let Some((last, parents)) = names.split_last() else {
        return Ok(None);
    };
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut dir = upper.try_clone().map_err(|_| Errno::EMFILE)?;
    for name in parents {
        dir = match nix::fcntl::openat(dir.as_fd(), *name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => return Ok(None),
            Err(e) => return Err(e),
        };
    }
    Ok(Some((dir, last)))
}

/// Removes `path` (relative to the upper dir) if it is an empty dir or an empty file.
fn remove_stub(upper: &OwnedFd, path: &str) -> nix::Result<()> {
    let Some((dir, name)) = open_parent(upper, path)? else {
        return Ok(());
    };
    let stat = match nix::sys::stat::fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    let kind = SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits());
    let how = if kind == SFlag::S_IFDIR {
        UnlinkatFlags::RemoveDir
    } else if kind == SFlag::S_IFREG && stat.st_size == 0 {
        UnlinkatFlags::NoRemoveDir
    } else {
        return Ok(());
    };
    match nix::unistd::unlinkat(dir.as_fd(), name, how) {
        Ok(()) | Err(Errno::ENOENT | Errno::ENOTEMPTY | Errno::EEXIST) => Ok(()),
        Err(e) => Err(e),
    }
}

fn restore_times(upper: &OwnedFd, times: &ParentTimes) -> nix::Result<()> {
    let atime = TimeSpec::new(times.atime.0, times.atime.1);
    let mtime = TimeSpec::new(times.mtime.0, times.mtime.1);
    let nofollow = UtimensatFlags::NoFollowSymlink;
    if times.path.is_empty() {
        return nix::sys::stat::utimensat(upper.as_fd(), ".", &atime, &mtime, nofollow);
    }
    let Some((dir, name)) = open_parent(upper, &times.path)? else {
        return Ok(());
    };
    match nix::sys::stat::fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) if stat.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits() => {}
        Ok(_) | Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    }
    nix::sys::stat::utimensat(dir.as_fd(), name, &atime, &mtime, nofollow)
}

/// Removes every reported stub (children before parents) and restores parent times.
pub(crate) fn clean_upper(upper_dir: &Path, created: &[&Created]) -> Result<(), ExecError> {
    if created.iter().all(|c| c.paths.is_empty()) {
        return Ok(());
    }
    let fail = |path: &str| {
        let path = upper_dir.join(path);
        move |e: Errno| ExecError::CleanUpper { path, source: e.into() }
    };
    let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let upper = nix::fcntl::open(upper_dir, flags, Mode::empty()).map_err(fail(""))?;
    let paths: Vec<&String> = created.iter().flat_map(|c| &c.paths).collect();
    for path in paths.iter().rev() {
        remove_stub(&upper, path).map_err(fail(path))?;
    }
    for times in created.iter().flat_map(|c| &c.parents) {
        restore_times(&upper, times).map_err(fail(&times.path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn removes_only_empty_stubs_and_never_follows_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let (upper, outside) = (dir.path().join("upper"), dir.path().join("outside"));
        for d in ["a/b", "full", "kept"] {
            std::fs::create_dir_all(upper.join(d)).unwrap();
        }
        std::fs::create_dir_all(outside.join("x")).unwrap();
        std::fs::write(upper.join("full/f"), "data").unwrap();
        std::fs::write(upper.join("a/b/empty"), "").unwrap();
        std::fs::write(upper.join("written"), "secret").unwrap();
        std::os::unix::fs::symlink(&outside, upper.join("link")).unwrap();
        let created = Created {
            paths: ["a", "a/b", "a/b/empty", "full", "written", "link", "link/x", "gone"].map(String::from).to_vec(),
            parents: vec![ParentTimes { path: "kept".into(), atime: (1000, 0), mtime: (2000, 5) }],
        };
        clean_upper(&upper, &[&created]).unwrap();
        assert!(!upper.join("a").exists());
        assert!(upper.join("full/f").exists(), "a filled stub is the command's");
        assert!(upper.join("written").exists(), "a written file is the command's");
        assert!(upper.join("link").symlink_metadata().is_ok());
        assert!(outside.join("x").exists(), "followed a symlink out of the upper dir");
        let kept = std::fs::metadata(upper.join("kept")).unwrap();
        assert_eq!((kept.mtime(), kept.mtime_nsec()), (2000, 5));
    }
}
