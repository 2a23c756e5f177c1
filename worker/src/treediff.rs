//! The copy fallback for hosts where overlayfs cannot be mounted (BuildKit's "native"
//! snapshotter): a RUN gets a complete copy of its input filesystem, changes it in place, and
//! its layer is the difference between the copy before and after, written in the overlay
//! upper-dir format every other layer uses. The layer is meant to be exactly the upper dir
//! an overlay would have left for the same command (same entries, whiteouts and opaque
//! directories), so both paths give the same image.
//!
//! What changed is told by identity and change time, never by content:
//!
//! - after copying, every entry's inode number, birth time (where the filesystem has one)
//!   and ctime are recorded, and the run starts only once the clock has moved past the
//!   newest recorded ctime, so any later change (content, mode, owner, xattrs, times, links)
//!   gives a later ctime even on a coarse clock;
//! - an entry with the same identity and ctime is unchanged (a directory is still searched:
//!   a file changed inside it does not touch the directory itself); one whose ctime moved
//!   is in the layer, as overlay copies up on any change of data or metadata;
//! - an entry with another identity (removed and created again, or renamed over) is new; a
//!   directory that replaces something the image had is *opaque* (what overlay makes of a
//!   directory created over a whiteout), so `rm -rf d && mkdir d` gives `d/.wh..wh..opq`
//!   with the new contents, not one whiteout per old child. Birth times tell a re-created
//!   directory from one that got the old inode number back, as ext4 readily hands out;
//! - a path the image had and the copy lost is a whiteout (a character device 0:0).
//!
//! Known differences from overlay, both rare in builds: opening a file for writing without
//! changing anything is a change for overlay (it copies the file up) and none here; and a
//! file that is hard-linked in the image is one inode in the copy, so changing it in place,
//! or removing one of its links, changes (and puts in the layer) its other links too, where
//! overlay breaks the link (BuildKit's native snapshotter copies hard links as such too).
//!
//! Changed entries are moved (renamed) from the copy into the diff directory, so the copy
//! must be on the diff's filesystem; directories that only lead to changes are created in the
//! diff with the copy's metadata.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{AtFlags, FileType, Mode, StatxFlags, Timespec, Timestamps, CWD};

use crate::error::WorkerError;

/// Overlay's opaque-directory xattr as a privileged mount reads it.
const OPAQUE_TRUSTED: &str = "trusted.overlay.opaque";
/// The same in an unprivileged (user namespace, `userxattr`) mount.
const OPAQUE_USER: &str = "user.overlay.opaque";

/// What identifies an entry of the copy, and when it last changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ident {
    ino: u64,
    /// Birth time, when the filesystem records one.
    btime: Option<(i64, u32)>,
    ctime: (i64, u32),
    dir: bool,
}

impl Ident {
    fn same_inode(&self, other: &Ident) -> bool {
        self.ino == other.ino && self.btime == other.btime && self.dir == other.dir
    }
}

fn ident_of(path: &Path) -> io::Result<Ident> {
    let mask = StatxFlags::TYPE | StatxFlags::INO | StatxFlags::CTIME | StatxFlags::BTIME;
    let st = rustix::fs::statx(CWD, path, AtFlags::SYMLINK_NOFOLLOW, mask)?;
    let btime = (st.stx_mask & StatxFlags::BTIME.bits() != 0).then_some((st.stx_btime.tv_sec, st.stx_btime.tv_nsec));
    Ok(Ident {
        ino: st.stx_ino,
        btime,
        ctime: (st.stx_ctime.tv_sec, st.stx_ctime.tv_nsec),
        dir: FileType::from_raw_mode(u32::from(st.stx_mode)) == FileType::Directory,
    })
}

/// The copy's state right after it was made: every entry's identity and every directory's
/// names, by path relative to the root (`""` is the root).
#[derive(Debug, Default)]
pub(crate) struct Before {
    entries: HashMap<PathBuf, Ident>,
    children: HashMap<PathBuf, Vec<OsString>>,
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> WorkerError + '_ {
    move |source| WorkerError::Io { path: path.to_owned(), source }
}

/// Copies the merged filesystem of `lowers_top_first` (overlay-format diffs) into `rootfs`
/// (created) and records its state; returns once a change made from now on is sure to be
/// seen.
pub(crate) fn copy_rootfs(lowers_top_first: &[PathBuf], rootfs: &Path) -> Result<Before, WorkerError> {
    rbuild_exporter::rootfs::write_rootfs_dir(lowers_top_first, rootfs).map_err(WorkerError::CopyRootfs)?;
    let before = record(rootfs)?;
    let newest = before.entries.values().map(|i| i.ctime).max().unwrap_or((0, 0));
    let probe = rootfs.with_extension("clock");
    wait_past(&probe, newest).map_err(io_at(&probe))?;
    Ok(before)
}

/// Records every entry of `root` (an explicit stack: the tree may be deep).
pub(crate) fn record(root: &Path) -> Result<Before, WorkerError> {
    let mut before = Before::default();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        let ident = ident_of(&path).map_err(io_at(&path))?;
        if ident.dir {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(&path).map_err(io_at(&path))? {
                let name = entry.map_err(io_at(&path))?.file_name();
                stack.push(rel.join(&name));
                names.push(name);
            }
            before.children.insert(rel.clone(), names);
        }
        before.entries.insert(rel, ident);
    }
    Ok(before)
}

/// Returns once the filesystem stamps changes later than `newest`: a file `probe` (beside
/// the copy, so on its filesystem and clock) is rewritten until its ctime is past it. On a
/// coarse clock that is a tick at most.
fn wait_past(probe: &Path, newest: (i64, u32)) -> io::Result<()> {
    for _ in 0..2000 {
        std::fs::write(probe, b"")?;
        if ident_of(probe)?.ctime > newest {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    std::fs::remove_file(probe)
}

/// One step of turning the changed copy into a diff.
#[derive(Debug)]
enum Action {
    /// A directory that leads to changes (or whose own metadata changed): created in the
    /// diff with the copy's metadata.
    Dir { rel: PathBuf, meta: std::fs::Metadata },
    /// A new or changed entry, moved (with everything below it) into the diff; `opaque` for a
    /// directory that replaces something the image had.
    Move { rel: PathBuf, opaque: bool },
    /// A path the image had and the copy no longer has.
    Whiteout { rel: PathBuf },
}

/// Moves the changes of `rootfs` since `before` into `diff_dir` (an empty directory on the
/// same filesystem), in overlay upper-dir format. `rootfs` is left incomplete.
pub(crate) fn diff_into(rootfs: &Path, before: &Before, diff_dir: &Path) -> Result<(), WorkerError> {
    apply(rootfs, diff_dir, plan(rootfs, before)?)
}

/// A directory being planned (same inode as before): its sorted names, the next one to
/// look at, and where its own [`Action::Dir`] is (none for the root).
struct Frame {
    rel: PathBuf,
    names: Vec<OsString>,
    next: usize,
    dir_action: Option<usize>,
    ctime_changed: bool,
}

impl Frame {
    fn open(rootfs: &Path, rel: PathBuf, dir_action: Option<usize>, ctime_changed: bool) -> Result<Frame, WorkerError> {
        let dir = rootfs.join(&rel);
        let mut names: Vec<OsString> = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_at(&dir))? {
            names.push(entry.map_err(io_at(&dir))?.file_name());
        }
        names.sort();
        Ok(Frame { rel, names, next: 0, dir_action, ctime_changed })
    }
}

/// The actions, parents before children, of a walk of the directories whose inode is the
/// one copied (an explicit stack: the image may nest directories deeper than recursion
/// allows). A directory's own action is dropped again when nothing below it changed and
/// neither did it.
fn plan(rootfs: &Path, before: &Before) -> Result<Vec<Action>, WorkerError> {
    let mut actions = Vec::new();
    let mut stack = vec![Frame::open(rootfs, PathBuf::new(), None, false)?];
    while let Some(top) = stack.last_mut() {
        let Some(name) = top.names.get(top.next) else {
            let done = stack.pop().expect("the loop holds a frame");
            if let Some(old) = before.children.get(&done.rel) {
                let mut gone: Vec<&OsString> = old.iter().filter(|n| done.names.binary_search(*n).is_err()).collect();
                gone.sort();
                actions.extend(gone.into_iter().map(|n| Action::Whiteout { rel: done.rel.join(n) }));
            }
            if let Some(at) = done.dir_action {
                if actions.len() == at + 1 && !done.ctime_changed {
                    actions.truncate(at);
                }
            }
            continue;
        };
        top.next += 1;
        let child = top.rel.join(name);
        let path = rootfs.join(&child);
        let now = ident_of(&path).map_err(io_at(&path))?;
        match before.entries.get(&child) {
            None => actions.push(Action::Move { rel: child, opaque: false }),
            Some(was) if !was.same_inode(&now) => actions.push(Action::Move { rel: child, opaque: now.dir }),
            Some(was) if now.dir => {
                let meta = std::fs::symlink_metadata(&path).map_err(io_at(&path))?;
                actions.push(Action::Dir { rel: child.clone(), meta });
                let frame = Frame::open(rootfs, child, Some(actions.len() - 1), was.ctime != now.ctime)?;
                stack.push(frame);
            }
            Some(was) if was.ctime != now.ctime => actions.push(Action::Move { rel: child, opaque: false }),
            Some(_) => {}
        }
    }
    Ok(actions)
}

fn apply(rootfs: &Path, diff_dir: &Path, actions: Vec<Action>) -> Result<(), WorkerError> {
    let mut dir_times = Vec::new();
    for action in actions {
        match action {
            Action::Dir { rel, meta } => {
                let path = diff_dir.join(&rel);
                make_dir_like(&rootfs.join(&rel), &path, &meta).map_err(io_at(&path))?;
                dir_times.push((path, meta));
            }
            Action::Move { rel, opaque } => {
                let (from, to) = (rootfs.join(&rel), diff_dir.join(&rel));
                std::fs::rename(&from, &to).map_err(io_at(&to))?;
                if opaque {
                    set_opaque(&to).map_err(io_at(&to))?;
                }
            }
            Action::Whiteout { rel } => {
                let path = diff_dir.join(&rel);
                match rustix::fs::mknodat(CWD, &path, FileType::CharacterDevice, Mode::empty(), 0) {
                    Ok(()) => {}
                    // overlayfs refuses 0:0 devices outright (a store inside a container).
                    Err(rustix::io::Errno::PERM) => {
                        return Err(WorkerError::WhiteoutRefused { path: Path::new("/").join(rel) })
                    }
                    Err(e) => return Err(io_at(&path)(e.into())),
                }
            }
        }
    }
    // Deepest first, after everything inside them is in place.
    for (path, meta) in dir_times.iter().rev() {
        rustix::fs::utimensat(CWD, path, &times_of(meta), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| io_at(path)(e.into()))?;
    }
    Ok(())
}

/// The access and modification times of `meta`, for `utimensat`.
fn times_of(meta: &std::fs::Metadata) -> Timestamps {
    Timestamps {
        last_access: Timespec { tv_sec: meta.atime(), tv_nsec: meta.atime_nsec() as _ },
        last_modification: Timespec { tv_sec: meta.mtime(), tv_nsec: meta.mtime_nsec() as _ },
    }
}

/// The extended attributes of `path` (not following a symlink), by name.
fn xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut names = vec![0u8; 4096];
    let len = loop {
        match rustix::fs::llistxattr(path, &mut names) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) if names.len() < 1 << 20 => names.resize(names.len() * 4, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut value = vec![0u8; 64 * 1024];
        let n = match rustix::fs::lgetxattr(path, name, &mut value) {
            Ok(n) => n,
            Err(rustix::io::Errno::NODATA) => continue,
            Err(e) => return Err(e.into()),
        };
        value.truncate(n);
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

/// Creates `to` with the owner, mode and xattrs of the directory `from` (times come last).
fn make_dir_like(from: &Path, to: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    std::fs::DirBuilder::new().mode(0o700).create(to)?;
    std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()))?;
    rustix::fs::chmod(to, Mode::from_raw_mode(meta.mode() & 0o7777))?;
    for (name, value) in xattrs(from)? {
        rustix::fs::lsetxattr(to, name.as_slice(), &value, rustix::fs::XattrFlags::empty())?;
    }
    Ok(())
}

/// Overlay's own xattrs (opaque, origin, impure, ...), which say how the upper dir came to
/// be, not what the directory is.
fn is_overlay_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// Removes from a RUN's diff (`diff_dir`, over `lowers_top_first`) the directories that are no
/// change: empty, and with the same mode, owner, mtime and xattrs as the directory below. They
/// are there only because the step created and removed something in them (a mount stub, whose
/// parent's times the executor restores) or copied them up without changing them. BuildKit's
/// differ leaves such directories out, so an unchanged directory never makes a layer entry and
/// a step that changes nothing makes no layer. Removed deepest first, so that a chain of them
/// goes; an opaque directory (the step replaced a directory by a new one) always stays.
pub(crate) fn prune_unchanged_dirs(diff_dir: &Path, lowers_top_first: &[PathBuf]) -> Result<(), WorkerError> {
    let lower = crate::MergedView::new(lowers_top_first.to_vec());
    let walk = walkdir::WalkDir::new(diff_dir).min_depth(1).follow_links(false).contents_first(true);
    for entry in walk {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(diff_dir).to_owned();
            WorkerError::Io { path, source: e.into() }
        })?;
        if !entry.file_type().is_dir() {
            continue;
        }
        let path = entry.path();
        if std::fs::read_dir(path).map_err(io_at(path))?.next().is_some() {
            continue;
        }
        let Ok(rel) = path.strip_prefix(diff_dir) else { continue };
        let Some(below) = lower.lstat(rel).map_err(io_at(path))? else { continue };
        let here = std::fs::symlink_metadata(path).map_err(io_at(path))?;
        let same_meta = below.meta.is_dir()
            && here.mode() == below.meta.mode()
            && (here.uid(), here.gid()) == (below.meta.uid(), below.meta.gid())
            && (here.mtime(), here.mtime_nsec()) == (below.meta.mtime(), below.meta.mtime_nsec());
        if !same_meta {
            continue;
        }
        let ours = xattrs(path).map_err(io_at(path))?;
        if ours.iter().any(|(n, v)| is_overlay_xattr(n) && n.ends_with(b".opaque") && v == b"y") {
            continue;
        }
        let theirs = xattrs(&below.host_path).map_err(io_at(&below.host_path))?;
        let plain =
            |x: Vec<(Vec<u8>, Vec<u8>)>| x.into_iter().filter(|(n, _)| !is_overlay_xattr(n)).collect::<Vec<_>>();
        if plain(ours) != plain(theirs) {
            continue;
        }
        // Removing it changes its parent's times: the parent keeps those it had.
        let parent = path.parent().unwrap_or(diff_dir);
        let parent_meta = std::fs::symlink_metadata(parent).map_err(io_at(parent))?;
        match std::fs::remove_dir(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(path)(e)),
        }
        rustix::fs::utimensat(CWD, parent, &times_of(&parent_meta), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| io_at(parent)(e.into()))?;
    }
    Ok(())
}

/// Marks a diff directory opaque: the trusted xattr where we may write it (root on the
/// host), the user one otherwise (in a user namespace, where overlay mounts use it).
fn set_opaque(dir: &Path) -> io::Result<()> {
    use rustix::fs::XattrFlags;
    match rustix::fs::lsetxattr(dir, OPAQUE_TRUSTED, b"y", XattrFlags::empty()) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::PERM | rustix::io::Errno::NOTSUP) => {
            rustix::fs::lsetxattr(dir, OPAQUE_USER, b"y", XattrFlags::empty()).map_err(Into::into)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    /// A lower layer, its copy, and an empty diff dir, all in one temp dir.
    struct Case {
        _t: tempfile::TempDir,
        lower: PathBuf,
        rootfs: PathBuf,
        diff: PathBuf,
    }

    fn case(build: impl FnOnce(&Path)) -> (Case, Before) {
        let t = tempfile::tempdir().unwrap();
        let (lower, rootfs, diff) = (t.path().join("lower"), t.path().join("rootfs"), t.path().join("diff"));
        std::fs::create_dir(&lower).unwrap();
        std::fs::create_dir(&diff).unwrap();
        build(&lower);
        let before = copy_rootfs(std::slice::from_ref(&lower), &rootfs).unwrap();
        (Case { _t: t, lower, rootfs, diff }, before)
    }

    /// Every path in the diff, with a letter for its kind: `d` dir, `o` opaque dir, `f` file,
    /// `w` whiteout, `l` symlink.
    fn listing(diff: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for entry in walkdir::WalkDir::new(diff).min_depth(1).sort_by_file_name() {
            let entry = entry.unwrap();
            let md = entry.path().symlink_metadata().unwrap();
            let kind = if md.is_dir() {
                if crate::merged::is_opaque(entry.path()) {
                    "o"
                } else {
                    "d"
                }
            } else if md.file_type().is_char_device() && md.rdev() == 0 {
                "w"
            } else if md.file_type().is_symlink() {
                "l"
            } else {
                "f"
            };
            let rel = entry.path().strip_prefix(diff).unwrap().to_string_lossy().into_owned();
            out.push(format!("{kind} {rel}"));
        }
        out
    }

    fn tree(root: &Path) {
        for d in ["etc/conf.d", "usr/bin", "var/lib/x"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        std::fs::write(root.join("etc/conf.d/a"), "a").unwrap();
        std::fs::write(root.join("etc/conf.d/b"), "b").unwrap();
        std::fs::write(root.join("usr/bin/tool"), "tool").unwrap();
        std::fs::write(root.join("var/lib/x/data"), "data").unwrap();
    }

    #[test]
    fn unchanged_copy_gives_an_empty_diff() {
        let (c, before) = case(tree);
        diff_into(&c.rootfs, &before, &c.diff).unwrap();
        assert!(listing(&c.diff).is_empty(), "{:?}", listing(&c.diff));
        assert!(c.lower.join("etc/passwd").exists());
    }

    #[test]
    fn changed_and_new_files_with_their_parents() {
        let (c, before) = case(tree);
        std::fs::write(c.rootfs.join("etc/conf.d/a"), "changed").unwrap();
        std::fs::write(c.rootfs.join("usr/bin/new"), "new").unwrap();
        std::fs::create_dir_all(c.rootfs.join("opt/app")).unwrap();
        std::fs::write(c.rootfs.join("opt/app/run"), "x").unwrap();
        diff_into(&c.rootfs, &before, &c.diff).unwrap();
        assert_eq!(
            listing(&c.diff),
            [
                "d etc",
                "d etc/conf.d",
                "f etc/conf.d/a",
                "d opt",
                "d opt/app",
                "f opt/app/run",
                "d usr",
                "d usr/bin",
                "f usr/bin/new"
            ]
        );
        assert_eq!(std::fs::read_to_string(c.diff.join("etc/conf.d/a")).unwrap(), "changed");
    }

    #[test]
    fn metadata_changes_count() {
        let (c, before) = case(tree);
        rustix::fs::chmod(c.rootfs.join("usr/bin/tool"), Mode::from_raw_mode(0o755)).unwrap();
        rustix::fs::chmod(c.rootfs.join("var/lib"), Mode::from_raw_mode(0o700)).unwrap();
        diff_into(&c.rootfs, &before, &c.diff).unwrap();
        assert_eq!(listing(&c.diff), ["d usr", "d usr/bin", "f usr/bin/tool", "d var", "d var/lib"]);
        let mode = std::fs::metadata(c.diff.join("var/lib")).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn deletions_are_whiteouts() {
        let (c, before) = case(tree);
        std::fs::remove_file(c.rootfs.join("etc/passwd")).unwrap();
        std::fs::remove_dir_all(c.rootfs.join("var/lib")).unwrap();
        diff_into(&c.rootfs, &before, &c.diff).unwrap();
        assert_eq!(listing(&c.diff), ["d etc", "w etc/passwd", "d var", "w var/lib"]);
    }

    #[test]
    fn recreated_directories_are_opaque() {
        let (c, before) = case(tree);
        std::fs::remove_dir_all(c.rootfs.join("etc/conf.d")).unwrap();
        std::fs::create_dir(c.rootfs.join("etc/conf.d")).unwrap();
        std::fs::write(c.rootfs.join("etc/conf.d/c"), "c").unwrap();
        // A file replaced by a directory is opaque too (overlay: a dir over a whiteout).
        std::fs::remove_file(c.rootfs.join("usr/bin/tool")).unwrap();
        std::fs::create_dir(c.rootfs.join("usr/bin/tool")).unwrap();
        diff_into(&c.rootfs, &before, &c.diff).unwrap();
        assert_eq!(
            listing(&c.diff),
            ["d etc", "o etc/conf.d", "f etc/conf.d/c", "d usr", "d usr/bin", "o usr/bin/tool"]
        );
    }

    #[test]
    fn renames_are_a_new_path_and_a_whiteout() {
        let (c, before) = case(tree);
        std::fs::rename(c.rootfs.join("var/lib/x"), c.rootfs.join("var/y")).unwrap();
        std::fs::rename(c.rootfs.join("etc/conf.d/a"), c.rootfs.join("etc/conf.d/z")).unwrap();
        diff_into(&c.rootfs, &before, &c.diff).unwrap();
        assert_eq!(
            listing(&c.diff),
            [
                "d etc",
                "d etc/conf.d",
                "w etc/conf.d/a",
                "f etc/conf.d/z",
                "d var",
                "d var/lib",
                "w var/lib/x",
                "d var/y",
                "f var/y/data"
            ]
        );
    }

    #[test]
    fn deep_trees_need_no_deep_stack() {
        let depth = 300;
        let deep: PathBuf = std::iter::repeat_n("d", depth).collect();
        let (c, before) = case(|root| {
            std::fs::create_dir_all(root.join(&deep)).unwrap();
            std::fs::write(root.join(&deep).join("f"), "old").unwrap();
        });
        std::fs::write(c.rootfs.join(&deep).join("f"), "new").unwrap();
        // On a small stack, as a hostile image would find it.
        let (rootfs, diff) = (c.rootfs.clone(), c.diff.clone());
        std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || diff_into(&rootfs, &before, &diff).unwrap())
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(std::fs::read_to_string(c.diff.join(&deep).join("f")).unwrap(), "new");
        assert_eq!(listing(&c.diff).len(), depth + 1);
    }

    #[test]
    fn whiteouts_and_opaque_dirs_of_lower_layers_are_applied() {
        let t = tempfile::tempdir().unwrap();
        let (low, up) = (t.path().join("low"), t.path().join("up"));
        tree(&low);
        std::fs::create_dir_all(up.join("etc")).unwrap();
        rustix::fs::mknodat(CWD, up.join("etc/passwd"), FileType::CharacterDevice, Mode::empty(), 0).unwrap();
        std::fs::create_dir(up.join("var")).unwrap();
        set_opaque(&up.join("var")).unwrap();
        let rootfs = t.path().join("rootfs");
        let before = copy_rootfs(&[up, low], &rootfs).unwrap();
        assert!(!rootfs.join("etc/passwd").exists());
        assert!(rootfs.join("etc/conf.d/a").exists());
        assert!(!rootfs.join("var/lib").exists());
        assert!(before.entries.contains_key(Path::new("usr/bin/tool")));
    }
}
