//! File ops (`COPY`, `WORKDIR`'s mkdir) written straight into a new diff directory, without
//! mounting: the base filesystem is read through a [`MergedView`], and the diff receives the new
//! entries plus the directories above them (with their attributes from the base, as a real
//! filesystem diff would show them).

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use rbuild_solver::ir::FileAction;

use crate::context::ContextDir;
use crate::error::WorkerError;
use crate::fsmeta::{apply, Attrs};
use crate::merged::{Found, MergedView};
use crate::users::resolve_owner;

/// Where COPY reads from.
#[derive(Debug)]
pub enum CopySource<'a> {
    /// The build context (owners become root unless `--chown`).
    Context(&'a ContextDir),
    /// Another stage's or image's filesystem (owners kept unless `--chown`).
    Fs(MergedView),
}

impl CopySource<'_> {
    fn lstat(&self, rel: &Path) -> io::Result<Option<Found>> {
        match self {
            CopySource::Context(c) => c.lstat(rel),
            CopySource::Fs(v) => v.lstat(rel),
        }
    }

    fn read_dir(&self, rel: &Path) -> io::Result<Vec<(OsString, Found)>> {
        match self {
            CopySource::Context(c) => c.read_dir(rel),
            CopySource::Fs(v) => v.read_dir(rel),
        }
    }

    fn resolve(&self, p: &Path, follow_last: bool) -> io::Result<PathBuf> {
        match self {
            CopySource::Context(c) => c.resolve(p, follow_last),
            CopySource::Fs(v) => v.resolve(p, follow_last),
        }
    }

    fn is_context(&self) -> bool {
        matches!(self, CopySource::Context(_))
    }
}

fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Applies file actions to `diff` (a fresh directory) on top of `base`.
#[derive(Debug)]
pub struct FileWriter<'a> {
    /// The filesystem being modified (read-only).
    pub base: &'a MergedView,
    /// The new diff directory.
    pub diff: &'a Path,
}

struct Plan {
    owner: Option<(u32, u32)>,
    chmod: Option<u32>,
    reset_owner: bool,
}

impl FileWriter<'_> {
    /// Runs one action. `src` is the copy source for `Copy` actions.
    pub fn apply(&self, action: &FileAction, src: Option<&CopySource<'_>>) -> Result<(), WorkerError> {
        match action {
            FileAction::Copy { src_paths, dest, chown, chmod, .. } => {
                let src = src.ok_or_else(|| WorkerError::Internal("copy without a source".into()))?;
                let owner = chown.as_ref().map(|c| resolve_owner(self.base, c)).transpose()?;
                let plan = Plan { owner, chmod: *chmod, reset_owner: src.is_context() };
                self.copy(src, src_paths, dest, &plan)
            }
            FileAction::Mkdir { path, mode, make_parents, chown } => {
                let owner = chown.as_ref().map(|c| resolve_owner(self.base, c)).transpose()?;
                self.mkdir(path, *mode, *make_parents, owner)
            }
            other => Err(WorkerError::Internal(format!("file action not supported yet: {other:?}"))),
        }
    }

    fn io(&self, path: &Path, source: io::Error) -> WorkerError {
        WorkerError::Io { path: path.to_owned(), source }
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
    fn ensure_dirs(&self, rel: &Path, owner: Option<(u32, u32)>) -> Result<(), WorkerError> {
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
            std::fs::create_dir(&host).map_err(|e| self.io(&host, e))?;
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
        std::fs::create_dir(&host).map_err(|e| self.io(&host, e))?;
        let (uid, gid) = owner.unwrap_or((0, 0));
        apply(&host, &Attrs::new_now(uid, gid, mode), false).map_err(|e| self.io(&host, e))
    }

    /// COPY semantics: each source (wildcards expanded) that is a directory has its contents
    /// copied into `dest`; a file goes to `dest` itself, or into it when `dest` ends with `/`,
    /// is an existing directory, or there are several sources.
    fn copy(&self, src: &CopySource<'_>, src_paths: &[String], dest: &str, plan: &Plan) -> Result<(), WorkerError> {
        let mut sources: Vec<PathBuf> = Vec::new();
        for p in src_paths {
            if has_wildcard(p) {
                let matches = expand_wildcard(src, p).map_err(|e| self.io(Path::new(p), e))?;
                if matches.is_empty() {
                    return Err(WorkerError::SourceNotFound { path: p.clone(), hint: None });
                }
                sources.extend(matches);
            } else {
                let rel = src.resolve(Path::new(p), true).map_err(|e| self.io(Path::new(p), e))?;
                if src.lstat(&rel).map_err(|e| self.io(&rel, e))?.is_none() {
                    let hint = match src {
                        CopySource::Context(c) => c.ignore.excluded_by(&rel.to_string_lossy()).map(|pat| {
                            format!("the path is excluded by the .dockerignore pattern {pat:?}")
                        }),
                        CopySource::Fs(_) => None,
                    };
                    return Err(WorkerError::SourceNotFound { path: p.clone(), hint });
                }
                sources.push(rel);
            }
        }
        let dest_rel = self.base.resolve(Path::new(dest), true).map_err(|e| self.io(Path::new(dest), e))?;
        let dest_is_dir = dest.ends_with('/')
            || dest.ends_with("/.")
            || self.lstat_merged(&dest_rel).map_err(|e| self.io(&dest_rel, e))?.is_some_and(|m| m.is_dir());
        if sources.len() > 1 && !dest_is_dir {
            return Err(WorkerError::DestNotDirectory { dest: dest.to_owned() });
        }
        for s in &sources {
            let Some(found) = src.lstat(s).map_err(|e| self.io(s, e))? else { continue };
            if found.meta.is_dir() {
                self.copy_dir_into(src, s, &found, &dest_rel, plan)?;
            } else {
                let target = if dest_is_dir {
                    dest_rel.join(s.file_name().unwrap_or_default())
                } else {
                    dest_rel.clone()
                };
                if let Some(parent) = target.parent() {
                    self.ensure_dirs(parent, plan.owner)?;
                }
                self.copy_entry(src, s, &found, &target, plan)?;
            }
        }
        Ok(())
    }

    fn attrs_for(&self, found: &Found, plan: &Plan) -> Attrs {
        let mut a = Attrs::of(&found.meta);
        if plan.reset_owner {
            a.uid = 0;
            a.gid = 0;
        }
        if let Some((u, g)) = plan.owner {
            a.uid = u;
            a.gid = g;
        }
        if let Some(m) = plan.chmod {
            a.mode = m;
        }
        a
    }

    fn copy_dir_into(&self, src: &CopySource<'_>, src_rel: &Path, dir: &Found, target: &Path, plan: &Plan) -> Result<(), WorkerError> {
        let host = self.diff.join(target);
        let existing = self.lstat_merged(target).map_err(|e| self.io(target, e))?;
        if let Some(parent) = target.parent() {
            self.ensure_dirs(parent, plan.owner)?;
        }
        // An existing destination keeps its attributes; a created one takes the source's.
        let attrs = match &existing {
            Some(m) if m.is_dir() => Attrs::of(m),
            _ => {
                let mut a = self.attrs_for(dir, plan);
                if plan.chmod.is_some() {
                    // --chmod applies to what is copied, not to the directory COPY creates.
                    a.mode = dir.meta.mode() & 0o7777;
                }
                a
            }
        };
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                std::fs::remove_file(&host).map_err(|e| self.io(&host, e))?;
                std::fs::create_dir(&host).map_err(|e| self.io(&host, e))?;
            }
            Err(_) => std::fs::create_dir(&host).map_err(|e| self.io(&host, e))?,
        }
        for (name, child) in src.read_dir(src_rel).map_err(|e| self.io(src_rel, e))? {
            self.copy_entry(src, &src_rel.join(&name), &child, &target.join(&name), plan)?;
        }
        apply(&host, &attrs, false).map_err(|e| self.io(&host, e))
    }

    fn copy_entry(&self, src: &CopySource<'_>, src_rel: &Path, found: &Found, target: &Path, plan: &Plan) -> Result<(), WorkerError> {
        let host = self.diff.join(target);
        let ft = found.meta.file_type();
        if let Ok(m) = std::fs::symlink_metadata(&host) {
            if !(m.is_dir() && ft.is_dir()) {
                if m.is_dir() {
                    std::fs::remove_dir_all(&host).map_err(|e| self.io(&host, e))?;
                } else {
                    std::fs::remove_file(&host).map_err(|e| self.io(&host, e))?;
                }
            }
        }
        let attrs = self.attrs_for(found, plan);
        if ft.is_dir() {
            if std::fs::symlink_metadata(&host).is_err() {
                std::fs::create_dir(&host).map_err(|e| self.io(&host, e))?;
            }
            for (name, child) in src.read_dir(src_rel).map_err(|e| self.io(src_rel, e))? {
                self.copy_entry(src, &src_rel.join(&name), &child, &target.join(&name), plan)?;
            }
            apply(&host, &attrs, false).map_err(|e| self.io(&host, e))
        } else if ft.is_symlink() {
            let t = std::fs::read_link(&found.host_path).map_err(|e| self.io(&found.host_path, e))?;
            std::os::unix::fs::symlink(&t, &host).map_err(|e| self.io(&host, e))?;
            apply(&host, &attrs, true).map_err(|e| self.io(&host, e))
        } else if ft.is_file() {
            std::fs::copy(&found.host_path, &host).map_err(|e| self.io(&host, e))?;
            apply(&host, &attrs, false).map_err(|e| self.io(&host, e))
        } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_fifo() {
                rustix::fs::FileType::Fifo
            } else if ft.is_char_device() {
                rustix::fs::FileType::CharacterDevice
            } else {
                rustix::fs::FileType::BlockDevice
            };
            rustix::fs::mknodat(rustix::fs::CWD, &host, kind, rustix::fs::Mode::from_raw_mode(0o600), found.meta.rdev())
                .map_err(|e| self.io(&host, e.into()))?;
            apply(&host, &attrs, false).map_err(|e| self.io(&host, e))
        } else {
            // Sockets cannot be copied; BuildKit skips them too.
            Ok(())
        }
    }
}

/// Expands a wildcard source path against the source, one path segment at a time.
fn expand_wildcard(src: &CopySource<'_>, pattern: &str) -> io::Result<Vec<PathBuf>> {
    let segments: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
    let mut current = vec![PathBuf::new()];
    for seg in segments {
        let mut next = Vec::new();
        if has_wildcard(seg) {
            let Ok(glob) = globset::GlobBuilder::new(seg).literal_separator(true).build() else {
                return Ok(Vec::new());
            };
            let m = glob.compile_matcher();
            for dir in &current {
                let Ok(entries) = src.read_dir(dir) else { continue };
                for (name, _) in entries {
                    if m.is_match(Path::new(&name)) {
                        next.push(dir.join(name));
                    }
                }
            }
        } else {
            for dir in &current {
                let p = dir.join(seg);
                if src.lstat(&p)?.is_some() {
                    next.push(p);
                }
            }
        }
        current = next;
    }
    current.sort();
    Ok(current)
}
