//! File ops (`COPY`, `ADD` of local files, `WORKDIR`'s mkdir, `COPY <<EOF`) written straight
//! into a new diff directory, without mounting: the base filesystem is read through a
//! [`MergedView`], and the diff receives the new entries plus the directories above them (with
//! their attributes from the base, as a real filesystem diff would show them).
//!
//! - `sources`: which source paths an argument selects (wildcards, `--parents` pivots);
//! - `entries`: copying one entry, recursively, honouring `--exclude`;
//! - `jobs`: writing the regular files a source's walk queued, on a few threads;
//! - `reuse`: linking files an earlier run of the same COPY from the context wrote;
//! - [`crate::archive`]: `ADD`'s extraction of local tar archives.

mod entries;
mod jobs;
mod reuse;
mod sources;

use std::cell::RefCell;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

use rbuild_solver::ir::FileAction;

use crate::archive::{self, ArchiveLimits};
use crate::context::IgnoreMatcher;
use crate::error::WorkerError;
use crate::fsmeta::{apply, Attrs};
use crate::merged::MergedView;
use crate::users::resolve_owner;

pub use sources::CopySource;
pub(crate) use sources::{clean, Selected};

/// Marks `dir` as the top of a directory hierarchy for ext4's Orlov allocator (`chattr +T`), so
/// that each directory created right below it (see [`FileWriter::create_dir`]) starts a new
/// hierarchy in a block group of its own, and everything below follows it there.
///
/// Why: ext4 checks each free inode it considers for a new file against its deletion time and
/// skips over every one deleted in the last minute, scanning the group from its start each time.
/// A COPY of thousands of files into the group a just-pruned snapshot freed (where plain
/// placement, near the parent directory, puts it) costs quadratic time: seconds for 20k files
/// after `prune`. Only a placement hint: best effort, other filesystems ignore it.
fn spread_hint(dir: &Path) {
    use rustix::fs::{IFlags, Mode, OFlags};
    let Ok(fd) =
        rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
    else {
        return;
    };
    if let Ok(flags) = rustix::fs::ioctl_getflags(&fd) {
        if !flags.contains(IFlags::TOPDIR) {
            let _ = rustix::fs::ioctl_setflags(&fd, flags | IFlags::TOPDIR);
        }
    }
}

/// Applies file actions to `diff` (a fresh directory) on top of `base`.
#[derive(Debug)]
pub struct FileWriter<'a> {
    /// The filesystem being modified (read-only).
    pub base: &'a MergedView,
    /// The new diff directory.
    pub diff: &'a Path,
    /// Limits for `ADD`'s archive extraction.
    pub limits: ArchiveLimits,
}

/// How copied entries get their attributes, and which are left out.
struct Plan<'a> {
    owner: Option<(u32, u32)>,
    chmod: Option<u32>,
    reset_owner: bool,
    /// `--exclude` patterns, matched against paths relative to each copied source.
    exclude: Option<&'a IgnoreMatcher>,
    /// Files and directory attributes the walk left to write ([`FileWriter::flush`]).
    jobs: RefCell<jobs::Jobs>,
    /// Linking unchanged files from the previous run of this COPY (context sources only).
    reuse: Option<reuse::Reuse<'a>>,
}

impl<'a> Plan<'a> {
    fn new(
        owner: Option<(u32, u32)>,
        chmod: Option<u32>,
        reset_owner: bool,
        exclude: Option<&'a IgnoreMatcher>,
    ) -> Plan<'a> {
        Plan { owner, chmod, reset_owner, exclude, jobs: RefCell::default(), reuse: None }
    }
}

impl FileWriter<'_> {
    /// Runs one action. `src` is the copy source for `Copy` actions.
    pub fn apply(&self, action: &FileAction, src: Option<&CopySource<'_>>) -> Result<(), WorkerError> {
        match action {
            FileAction::Copy { src_paths, dest, chown, chmod, exclude, parents, unpack_archives, .. } => {
                let src = src.ok_or_else(|| WorkerError::Internal("copy without a source".into()))?;
                let owner = chown.as_ref().map(|c| resolve_owner(self.base, c)).transpose()?;
                let matcher = if exclude.is_empty() {
                    None
                } else {
                    Some(IgnoreMatcher::new(exclude).map_err(WorkerError::Exclude)?)
                };
                spread_hint(self.diff);
                let mut plan = Plan::new(owner, *chmod, src.is_context(), matcher.as_ref());
                if let CopySource::Context { walk: Some(walk), .. } = src {
                    plan.reuse = reuse::Reuse::for_copy(walk, action);
                }
                self.copy(src, src_paths, dest, &plan, *parents, *unpack_archives)?;
                if let Some(r) = &plan.reuse {
                    // Only a cache: without a memo the next run copies everything.
                    let _ = r.save(self.diff);
                }
                Ok(())
            }
            FileAction::Mkdir { path, mode, make_parents, chown } => {
                let owner = chown.as_ref().map(|c| resolve_owner(self.base, c)).transpose()?;
                self.mkdir(path, *mode, *make_parents, owner)
            }
            FileAction::Mkfile { path, data, mode, chown } => {
                let owner = chown.as_ref().map(|c| resolve_owner(self.base, c)).transpose()?;
                self.mkfile(path, data, *mode, owner)
            }
            other => Err(WorkerError::Internal(format!("file action not supported yet: {other:?}"))),
        }
    }

    fn io(&self, path: &Path, source: io::Error) -> WorkerError {
        WorkerError::Io { path: path.to_owned(), source }
    }

    /// Creates the directory `host` (inside the diff). One right below the diff's root is made
    /// under a fresh random name and renamed into place: ext4 starts its search for the group
    /// of a new top-level directory at a hash of its name, so a fixed name (`app`) would keep
    /// landing in the group the last snapshot of the same COPY used, and just freed if it was
    /// pruned (see [`spread_hint`]).
    fn create_dir(&self, host: &Path) -> io::Result<()> {
        if host.parent() != Some(self.diff) {
            return std::fs::create_dir(host);
        }
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let tmp = self.diff.join(format!(".rbuild-mkdir-{}-{nanos:x}", crate::unique_suffix()));
        std::fs::create_dir(&tmp)?;
        let cwd = rustix::fs::CWD;
        match rustix::fs::renameat_with(cwd, &tmp, cwd, host, rustix::fs::RenameFlags::NOREPLACE) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = std::fs::remove_dir(&tmp);
                if matches!(e, rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) {
                    // No RENAME_NOREPLACE here: the hint is not worth failing for.
                    return std::fs::create_dir(host);
                }
                Err(e.into())
            }
        }
    }

    /// Writes the files the walk queued, then gives the directories their attributes.
    fn flush(&self, plan: &Plan<'_>) -> Result<(), WorkerError> {
        let jobs::Jobs { files, dirs } = plan.jobs.take();
        let done = jobs::run(files).map_err(|(path, e)| self.io(&path, e))?;
        if let Some(r) = &plan.reuse {
            r.written(done);
        }
        for (host, attrs) in dirs {
            apply(&host, &attrs, false).map_err(|e| self.io(&host, e))?;
        }
        Ok(())
    }

    /// The diff's entry at `rel` or, failing that, the base's.
    fn lstat_merged(&self, rel: &Path) -> io::Result<Option<std::fs::Metadata>> {
        match std::fs::symlink_metadata(self.diff.join(rel)) {
            Ok(m) if !crate::merged::is_whiteout(&m) => Ok(Some(m)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => {
                Ok(self.base.lstat(rel)?.map(|f| f.meta))
            }
            Err(e) => Err(e),
        }
    }

    /// Makes sure every directory of `rel` exists in the diff: copied with its attributes from
    /// the base when it exists there, created with `owner` (or root) and 0755 otherwise.
    pub(crate) fn ensure_dirs(&self, rel: &Path, owner: Option<(u32, u32)>) -> Result<(), WorkerError> {
        let mut cur = PathBuf::new();
        for comp in rel.components() {
            let Component::Normal(name) = comp else { continue };
            cur.push(name);
            let host = self.diff.join(&cur);
            match std::fs::symlink_metadata(&host) {
                Ok(m) if m.is_dir() => continue,
                Ok(_) => std::fs::remove_file(&host).map_err(|e| self.io(&host, e))?,
                Err(_) => {}
            }
            let attrs = match self.base.lstat(&cur).map_err(|e| self.io(&host, e))? {
                Some(f) if f.meta.is_dir() => Attrs::of(&f.meta),
                Some(f) if !f.meta.file_type().is_symlink() => {
                    return Err(WorkerError::NotADirectory { path: PathBuf::from("/").join(&cur) });
                }
                _ => {
                    let (uid, gid) = owner.unwrap_or((0, 0));
                    Attrs::new_now(uid, gid, 0o755)
                }
            };
            self.create_dir(&host).map_err(|e| self.io(&host, e))?;
            apply(&host, &attrs, false).map_err(|e| self.io(&host, e))?;
        }
        Ok(())
    }

    fn mkdir(&self, path: &str, mode: u32, make_parents: bool, owner: Option<(u32, u32)>) -> Result<(), WorkerError> {
        let rel = self.base.resolve(Path::new(path), true).map_err(|e| self.io(Path::new(path), e))?;
        if let Some(m) = self.lstat_merged(&rel).map_err(|e| self.io(&rel, e))? {
            if m.is_dir() {
                return Ok(());
            }
            return Err(WorkerError::NotADirectory { path: PathBuf::from(path) });
        }
        if let Some(parent) = rel.parent() {
            if !make_parents && self.lstat_merged(parent).map_err(|e| self.io(parent, e))?.is_none() {
                return Err(WorkerError::SourceNotFound { path: parent.display().to_string(), hint: None });
            }
            self.ensure_dirs(parent, owner)?;
        }
        let host = self.diff.join(&rel);
        self.create_dir(&host).map_err(|e| self.io(&host, e))?;
        let (uid, gid) = owner.unwrap_or((0, 0));
        apply(&host, &Attrs::new_now(uid, gid, mode), false).map_err(|e| self.io(&host, e))
    }

    /// `COPY <<EOF`: a file with `data`, exactly `mode`, owned by `owner` (or root); missing
    /// parents are created like COPY's. A symlink at `path` is followed inside the root, as
    /// BuildKit resolves the path.
    fn mkfile(&self, path: &str, data: &[u8], mode: u32, owner: Option<(u32, u32)>) -> Result<(), WorkerError> {
        let rel = self.base.resolve(Path::new(path), true).map_err(|e| self.io(Path::new(path), e))?;
        if rel.as_os_str().is_empty()
            || self.lstat_merged(&rel).map_err(|e| self.io(&rel, e))?.is_some_and(|m| m.is_dir())
        {
            return Err(WorkerError::IsADirectory { path: PathBuf::from(path) });
        }
        if let Some(parent) = rel.parent() {
            self.ensure_dirs(parent, owner)?;
        }
        let host = self.diff.join(&rel);
        if std::fs::symlink_metadata(&host).is_ok() {
            std::fs::remove_file(&host).map_err(|e| self.io(&host, e))?;
        }
        let mut f = std::fs::File::create_new(&host).map_err(|e| self.io(&host, e))?;
        f.write_all(data).map_err(|e| self.io(&host, e))?;
        drop(f);
        let (uid, gid) = owner.unwrap_or((0, 0));
        apply(&host, &Attrs::new_now(uid, gid, mode & 0o7777), false).map_err(|e| self.io(&host, e))
    }

    /// COPY semantics: each source (wildcards expanded) that is a directory has its contents
    /// copied into `dest`; a file goes to `dest` itself, or into it when `dest` ends with `/`,
    /// is an existing directory, or there are several sources. With `parents`, each source
    /// keeps its path (below the `/./` pivot) under `dest`. With `unpack`, a source file that
    /// is a tar archive is extracted into `dest`.
    fn copy(
        &self,
        src: &CopySource<'_>,
        src_paths: &[String],
        dest: &str,
        plan: &Plan<'_>,
        parents: bool,
        unpack: bool,
    ) -> Result<(), WorkerError> {
        let mut selected: Vec<Selected> = Vec::new();
        for p in src_paths {
            selected.extend(sources::select(src, p, parents)?);
        }
        let dest_rel = self.base.resolve(Path::new(dest), true).map_err(|e| self.io(Path::new(dest), e))?;
        let dest_is_dir = parents
            || dest.ends_with('/')
            || dest.ends_with("/.")
            || self.lstat_merged(&dest_rel).map_err(|e| self.io(&dest_rel, e))?.is_some_and(|m| m.is_dir());
        if selected.len() > 1 && !dest_is_dir {
            return Err(WorkerError::DestNotDirectory { dest: dest.to_owned() });
        }
        for s in &selected {
            self.copy_selected(src, s, &dest_rel, dest_is_dir, plan, unpack)?;
            self.flush(plan)?;
        }
        Ok(())
    }

    /// Copies one selected source (see [`copy`](Self::copy)); regular files are queued in
    /// `plan`.
    fn copy_selected(
        &self,
        src: &CopySource<'_>,
        s: &Selected,
        dest_rel: &Path,
        dest_is_dir: bool,
        plan: &Plan<'_>,
        unpack: bool,
    ) -> Result<(), WorkerError> {
        let Some(found) = src.lstat(&s.path).map_err(|e| self.io(&s.path, e))? else { return Ok(()) };
        if let Some((base, kept)) = &s.keep {
            self.ensure_dirs(dest_rel, plan.owner)?;
            self.ensure_kept_parents(src, base, kept, dest_rel, plan)?;
            self.copy_entry(src, &s.path, &found, &dest_rel.join(kept), kept, plan)?;
        } else if found.meta.is_dir() {
            self.copy_dir_into(src, &s.path, &found, dest_rel, plan)?;
        } else {
            if unpack && found.meta.is_file() {
                let shown = s.path.display().to_string();
                let wrap = |source| WorkerError::Archive { archive: shown.clone(), source };
                if let Some(format) = archive::detect(&found.host_path).map_err(wrap)? {
                    // Only the directory ADD creates gets the --chown owner; the archive's
                    // entries keep their own.
                    self.ensure_dirs(dest_rel, plan.owner)?;
                    archive::extract(&found.host_path, format, self, dest_rel, &self.limits).map_err(wrap)?;
                    return Ok(());
                }
            }
            let target =
                if dest_is_dir { dest_rel.join(s.path.file_name().unwrap_or_default()) } else { dest_rel.to_owned() };
            if let Some(parent) = target.parent() {
                self.ensure_dirs(parent, plan.owner)?;
            }
            self.copy_entry(src, &s.path, &found, &target, Path::new(""), plan)?;
        }
        Ok(())
    }

    /// Copies the source entry `rel` (resolved) out of `src` into `self.diff`, an empty host
    /// directory: a directory's contents and attributes become the directory's own; anything
    /// else lands at `<diff>/<name>`. Owners, modes and times are kept. Returns the host path
    /// of the copy (used for bind-mount scratch copies and cache seeds).
    pub(crate) fn copy_out(&self, src: &CopySource<'_>, rel: &Path) -> Result<PathBuf, WorkerError> {
        let plan = Plan::new(None, None, false, None);
        let Some(found) = src.lstat(rel).map_err(|e| self.io(rel, e))? else {
            return Err(WorkerError::SourceNotFound { path: format!("/{}", rel.display()), hint: None });
        };
        if found.meta.is_dir() {
            for (name, child) in src.read_dir(rel).map_err(|e| self.io(rel, e))? {
                self.copy_entry(src, &rel.join(&name), &child, Path::new(&name), Path::new(&name), &plan)?;
            }
            self.flush(&plan)?;
            apply(self.diff, &self.attrs_for(&found, &plan), false).map_err(|e| self.io(self.diff, e))?;
            return Ok(self.diff.to_owned());
        }
        let name = rel.file_name().map_or_else(|| "file".into(), |n| n.to_owned());
        self.copy_entry(src, rel, &found, Path::new(&name), Path::new(""), &plan)?;
        self.flush(&plan)?;
        Ok(self.diff.join(name))
    }

    /// `--parents`: the directories between `dest` and a kept path are copied from the source
    /// (attributes included) when the destination does not have them yet.
    fn ensure_kept_parents(
        &self,
        src: &CopySource<'_>,
        base: &Path,
        kept: &Path,
        dest_rel: &Path,
        plan: &Plan<'_>,
    ) -> Result<(), WorkerError> {
        let Some(parent) = kept.parent() else { return Ok(()) };
        let mut cur = PathBuf::new();
        for comp in parent.components() {
            let Component::Normal(name) = comp else { continue };
            cur.push(name);
            let target = dest_rel.join(&cur);
            if self.lstat_merged(&target).map_err(|e| self.io(&target, e))?.is_some_and(|m| m.is_dir()) {
                if std::fs::symlink_metadata(self.diff.join(&target)).is_err() {
                    self.ensure_dirs(&target, plan.owner)?;
                }
                continue;
            }
            let src_dir = src.resolve(&base.join(&cur), true).map_err(|e| self.io(&cur, e))?;
            let Some(found) = src.lstat(&src_dir).map_err(|e| self.io(&cur, e))? else {
                return Err(WorkerError::SourceNotFound { path: cur.display().to_string(), hint: None });
            };
            let host = self.diff.join(&target);
            if std::fs::symlink_metadata(&host).is_ok() {
                std::fs::remove_file(&host).map_err(|e| self.io(&host, e))?;
            }
            self.create_dir(&host).map_err(|e| self.io(&host, e))?;
            apply(&host, &self.attrs_for(&found, plan), false).map_err(|e| self.io(&host, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
