//! Confined path resolution for unpacking: every directory is reached from the
//! destination's fd one component at a time with `O_NOFOLLOW | O_DIRECTORY`,
//! so no symlink (whatever an earlier entry planted) is ever followed and no
//! `..` is ever interpreted. Final components are then operated on with the
//! `*at` calls relative to the parent's fd.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

/// Why a directory path could not be reached; each carries the offending
/// prefix of the path, `/`-joined.
#[derive(Debug)]
pub(crate) enum ResolveError {
    Missing(String),
    Symlink(String),
    NotDir(String),
    Io(io::Error),
}

/// The unpack destination, with a one-entry cache of the last parent
/// directory (consecutive entries almost always share it).
#[derive(Debug)]
pub(crate) struct Confined {
    root: Rc<OwnedFd>,
    last: Option<(Vec<Vec<u8>>, Rc<OwnedFd>)>,
}

pub(crate) const DIR_FLAGS: OFlags =
    OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

impl Confined {
    /// Opens `dest` (following symlinks: the caller chose it).
    pub(crate) fn open(dest: &Path) -> io::Result<Self> {
        let fd = rustix::fs::open(dest, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(Self { root: Rc::new(fd), last: None })
    }

    pub(crate) fn root(&self) -> Rc<OwnedFd> {
        Rc::clone(&self.root)
    }

    /// True when the destination has no entries.
    pub(crate) fn is_empty(&self) -> io::Result<bool> {
        let mut dir = rustix::fs::Dir::read_from(self.root.as_fd())?;
        while let Some(entry) = dir.read() {
            let name = entry?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Must be called after anything is removed: a cached fd could point at
    /// a directory that is no longer in the tree.
    pub(crate) fn invalidate(&mut self) {
        self.last = None;
    }

    /// Opens the directory at `comps` below the root. With `create`, missing
    /// components are created with mode 0755 (as docker does for parents a
    /// layer does not list).
    pub(crate) fn dir(&mut self, comps: &[&[u8]], create: bool) -> Result<Rc<OwnedFd>, ResolveError> {
        if comps.is_empty() {
            return Ok(self.root());
        }
        if let Some((path, fd)) = &self.last {
            if path.len() == comps.len() && path.iter().zip(comps).all(|(a, b)| a == b) {
                return Ok(Rc::clone(fd));
            }
        }
        let mut fd = Rc::clone(&self.root);
        for (i, comp) in comps.iter().enumerate() {
            let prefix = || join(&comps[..=i]);
            let next = match rustix::fs::openat(fd.as_fd(), *comp, DIR_FLAGS, Mode::empty()) {
                Ok(next) => next,
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(fd.as_fd(), *comp, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(ResolveError::Io(e.into())),
                    }
                    rustix::fs::openat(fd.as_fd(), *comp, DIR_FLAGS, Mode::empty())
                        .map_err(|e| ResolveError::Io(e.into()))?
                }
                Err(Errno::NOENT) => return Err(ResolveError::Missing(prefix())),
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    return Err(match lstat_at(fd.as_fd(), comp) {
                        Ok(Some(st)) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                            ResolveError::Symlink(prefix())
                        }
                        _ => ResolveError::NotDir(prefix()),
                    })
                }
                Err(e) => return Err(ResolveError::Io(e.into())),
            };
            fd = Rc::new(next);
        }
        self.last = Some((comps.iter().map(|c| c.to_vec()).collect(), Rc::clone(&fd)));
        Ok(fd)
    }
}

/// `lstat` of `name` in `dir`; `None` when it does not exist.
pub(crate) fn lstat_at(dir: impl AsFd, name: &[u8]) -> io::Result<Option<Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// True when the stat describes a directory.
pub(crate) fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

/// Removes `name` in `dir`, recursively if it is a directory, without
/// following symlinks anywhere.
pub(crate) fn remove_at(dir: impl AsFd, name: &[u8], st: &Stat) -> io::Result<()> {
    let dir = dir.as_fd();
    if is_dir(st) {
        let child = rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())?;
        empty_dir(&child)?;
        rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    } else {
        rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
    }
    Ok(())
}

/// Removes everything inside the directory `fd`.
fn empty_dir(fd: &OwnedFd) -> io::Result<()> {
    let mut names = Vec::new();
    let mut listing = rustix::fs::Dir::read_from(fd.as_fd())?;
    while let Some(entry) = listing.read() {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    for name in names {
        if let Some(st) = lstat_at(fd.as_fd(), &name)? {
            remove_at(fd.as_fd(), &name, &st)?;
        }
    }
    Ok(())
}

/// `a/b/c` from components, lossily decoded for error messages.
pub(crate) fn join(comps: &[&[u8]]) -> String {
    String::from_utf8_lossy(&comps.join(&b'/')).into_owned()
}

/// Splits an archive path into normal components: empty and `.` components
/// are dropped (so a leading `/` is neutralised, as GNU tar and docker do);
/// `None` if any component is `..`.
pub(crate) fn components(path: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    for comp in path.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! comps {
        ($path:expr => escape) => {
            assert_eq!(components($path.as_bytes()), None, "{}", $path);
        };
        ($path:expr => [$($c:expr),*]) => {
            let want: Vec<&[u8]> = vec![$($c.as_bytes()),*];
            assert_eq!(components($path.as_bytes()), Some(want), "{}", $path);
        };
    }

    #[test]
    fn cleaning() {
        comps!("etc/passwd" => ["etc", "passwd"]);
        comps!("./etc//passwd/" => ["etc", "passwd"]);
        comps!("/abs/x" => ["abs", "x"]);
        comps!("./" => []);
        comps!("../x" => escape);
        comps!("a/../../x" => escape);
        comps!("a/.." => escape);
        comps!("..." => ["..."]);
    }
}
