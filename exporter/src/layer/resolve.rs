//! Confined path resolution for unpacking: every directory is reached from the
//! destination's fd one component at a time with `O_NOFOLLOW | O_DIRECTORY`,
//! so no symlink (whatever an earlier entry planted) is ever followed and no
//! `..` is ever interpreted. Final components are then operated on with the
//! `*at` calls relative to the parent's fd.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

/// Why a directory path could not be reached; each carries the offending
/// prefix of the path, `/`-joined.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// A component does not exist (and was not to be created).
    #[error("{0} does not exist")]
    Missing(String),
    /// A component is a symlink.
    #[error("{0} is a symlink")]
    Symlink(String),
    /// A component exists and is not a directory.
    #[error("{0} is not a directory")]
    NotDir(String),
    /// A system call failed.
    #[error("opening a directory")]
    Io(#[source] io::Error),
}

/// The extraction destination, with a one-entry cache of the last parent
/// directory (consecutive entries almost always share it).
#[derive(Debug)]
pub struct Confined {
    root: Rc<OwnedFd>,
    last: Option<(Vec<Vec<u8>>, Rc<OwnedFd>)>,
}

/// How every directory is opened: never through a symlink.
pub const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

impl Confined {
    /// Opens `dest` (following symlinks: the caller chose it).
    pub fn open(dest: &Path) -> io::Result<Self> {
        let fd = rustix::fs::open(dest, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(Self { root: Rc::new(fd), last: None })
    }

    /// The destination's own fd.
    pub fn root(&self) -> Rc<OwnedFd> {
        Rc::clone(&self.root)
    }

    /// True when the destination has no entries.
    pub fn is_empty(&self) -> io::Result<bool> {
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
    pub fn invalidate(&mut self) {
        self.last = None;
    }

    /// Removes whatever is at `last` in `parent` unless it is a directory and
    /// `keep_dir` is set; returns whether a directory was kept.
    pub fn clear(&mut self, parent: &OwnedFd, last: &[u8], keep_dir: bool) -> io::Result<bool> {
        let Some(st) = lstat_at(parent, last)? else {
            return Ok(false);
        };
        if keep_dir && is_dir(&st) {
            return Ok(true);
        }
        self.invalidate();
        remove_at(parent, last, &st)?;
        Ok(false)
    }

    /// Opens the directory `tparents` holding a hardlink's target `tlast`
    /// and checks that the target exists and is not a directory.
    pub fn link_source(&mut self, tparents: &[&[u8]], tlast: &[u8]) -> Result<Rc<OwnedFd>, LinkError> {
        let tdir = self.dir(tparents, false).map_err(|e| match e {
            ResolveError::Symlink(_) => LinkError::Outside,
            ResolveError::Missing(_) | ResolveError::NotDir(_) => LinkError::Missing,
            ResolveError::Io(e) => LinkError::Io(e),
        })?;
        match lstat_at(&*tdir, tlast).map_err(LinkError::Io)? {
            None => Err(LinkError::Missing),
            Some(st) if is_dir(&st) => Err(LinkError::Directory),
            Some(_) => Ok(tdir),
        }
    }

    /// Opens the directory at `comps` below the root. With `create`, missing
    /// components are created with mode 0755 (as docker does for parents a
    /// layer does not list).
    pub fn dir(&mut self, comps: &[&[u8]], create: bool) -> Result<Rc<OwnedFd>, ResolveError> {
        if create {
            self.walk(comps, Some(&mut mkdir_default))
        } else {
            self.walk(comps, None)
        }
    }

    /// Opens the directory at `comps` below the root; a missing component is
    /// made by `create`, given its parent's fd and the path down to it, which
    /// returns it opened with [`DIR_FLAGS`].
    pub fn dir_creating(
        &mut self,
        comps: &[&[u8]],
        mut create: impl FnMut(BorrowedFd<'_>, &[&[u8]]) -> Result<OwnedFd, ResolveError>,
    ) -> Result<Rc<OwnedFd>, ResolveError> {
        self.walk(comps, Some(&mut create))
    }

    fn walk(&mut self, comps: &[&[u8]], mut create: Option<&mut MakeDir<'_>>) -> Result<Rc<OwnedFd>, ResolveError> {
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
                Err(Errno::NOENT) => match create.as_mut() {
                    Some(make) => make(fd.as_fd(), &comps[..=i])?,
                    None => return Err(ResolveError::Missing(prefix())),
                },
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

/// Why a hardlink's target cannot be linked.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The target leaves the destination (`..`, or through a symlink).
    #[error("the hardlink target is outside the destination")]
    Outside,
    /// The target is not an entry extracted earlier.
    #[error("the hardlink target does not exist")]
    Missing,
    /// The target is a directory (or the destination itself).
    #[error("the hardlink target is a directory")]
    Directory,
    /// A system call failed.
    #[error("reaching the hardlink target")]
    Io(#[source] io::Error),
}

/// A hardlink target's parent components and final name (`..` is outside,
/// an empty target names the destination, a directory).
pub fn split_link_target(target: &[u8]) -> Result<(Vec<&[u8]>, &[u8]), LinkError> {
    let mut comps = components(target).ok_or(LinkError::Outside)?;
    let last = comps.pop().ok_or(LinkError::Directory)?;
    Ok((comps, last))
}

/// Hard-links `tlast` in `tdir` as `last` in `parent`; a symlink target is
/// linked itself, not followed (no `AT_SYMLINK_FOLLOW`).
pub fn link_at(tdir: &OwnedFd, tlast: &[u8], parent: &OwnedFd, last: &[u8]) -> io::Result<()> {
    Ok(rustix::fs::linkat(tdir, tlast, parent, last, AtFlags::empty())?)
}

/// Makes a missing directory: its parent's fd, the path down to it.
type MakeDir<'a> = dyn FnMut(BorrowedFd<'_>, &[&[u8]]) -> Result<OwnedFd, ResolveError> + 'a;

/// The default for a missing parent: mode 0755, owned by the extracting user.
fn mkdir_default(parent: BorrowedFd<'_>, comps: &[&[u8]]) -> Result<OwnedFd, ResolveError> {
    let name = comps.last().copied().unwrap_or_default();
    match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(ResolveError::Io(e.into())),
    }
    rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty()).map_err(|e| ResolveError::Io(e.into()))
}

/// `lstat` of `name` in `dir`; `None` when it does not exist.
pub fn lstat_at(dir: impl AsFd, name: &[u8]) -> io::Result<Option<Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// True when the stat describes a directory.
pub fn is_dir(st: &Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::Directory
}

/// Removes `name` in `dir`, recursively if it is a directory, without
/// following symlinks anywhere.
pub fn remove_at(dir: impl AsFd, name: &[u8], st: &Stat) -> io::Result<()> {
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
pub fn join(comps: &[&[u8]]) -> String {
    String::from_utf8_lossy(&comps.join(&b'/')).into_owned()
}

/// Splits an archive path into normal components: empty and `.` components
/// are dropped (so a leading `/` is neutralised, as GNU tar and docker do);
/// `None` if any component is `..`.
pub fn components(path: &[u8]) -> Option<Vec<&[u8]>> {
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
