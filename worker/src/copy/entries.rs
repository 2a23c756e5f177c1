//! Copying one source entry (recursively for directories) into the diff, with `--exclude`
//! patterns matched against the path relative to the copied source (BuildKit's fsutil copy).

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::jobs::FileJob;
use super::{CopySource, FileWriter, Plan};
use crate::error::WorkerError;
use crate::fsmeta::{apply, Attrs};
use crate::merged::Found;

impl FileWriter<'_> {
    pub(super) fn attrs_for(&self, found: &Found, plan: &Plan<'_>) -> Attrs {
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

    /// Is `rel` (relative to the copied source; empty for the source itself) excluded?
    fn excluded(plan: &Plan<'_>, rel: &Path) -> bool {
        !rel.as_os_str().is_empty() && plan.exclude.is_some_and(|m| m.is_excluded(&rel.to_string_lossy()))
    }

    /// Copies the contents of the source directory `src_rel` into `target`, which keeps its
    /// attributes when it exists and takes the source directory's otherwise.
    pub(super) fn copy_dir_into(
        &self,
        src: &CopySource<'_>,
        src_rel: &Path,
        dir: &Found,
        target: &Path,
        plan: &Plan<'_>,
    ) -> Result<(), WorkerError> {
        let host = self.diff.join(target);
        let existing = self.lstat_merged(target).map_err(|e| self.io(target, e))?;
        if let Some(parent) = target.parent() {
            self.ensure_dirs(parent, plan.owner)?;
        }
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
                self.create_dir(&host).map_err(|e| self.io(&host, e))?;
            }
            Err(_) => self.create_dir(&host).map_err(|e| self.io(&host, e))?,
        }
        for (name, child) in src.read_dir(src_rel).map_err(|e| self.io(src_rel, e))? {
            self.copy_entry(src, &src_rel.join(&name), &child, &target.join(&name), Path::new(&name), plan)?;
        }
        plan.jobs.borrow_mut().dirs.push((host, attrs));
        Ok(())
    }

    /// Copies one entry to `target`; `rel` is its path relative to the copied source, for
    /// `--exclude`. Returns whether anything was written.
    pub(super) fn copy_entry(
        &self,
        src: &CopySource<'_>,
        src_rel: &Path,
        found: &Found,
        target: &Path,
        rel: &Path,
        plan: &Plan<'_>,
    ) -> Result<bool, WorkerError> {
        let ft = found.meta.file_type();
        let excluded = Self::excluded(plan, rel);
        // An excluded directory is still walked when a `!pattern` may re-include something
        // below it; it is then created only if something is.
        let walk_excluded = ft.is_dir() && plan.exclude.is_some_and(|m| m.has_exceptions());
        if excluded && !walk_excluded {
            return Ok(false);
        }
        let host = self.diff.join(target);
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
            let created = std::fs::symlink_metadata(&host).is_err();
            if created {
                self.create_dir(&host).map_err(|e| self.io(&host, e))?;
            }
            let mut wrote = false;
            for (name, child) in src.read_dir(src_rel).map_err(|e| self.io(src_rel, e))? {
                wrote |=
                    self.copy_entry(src, &src_rel.join(&name), &child, &target.join(&name), &rel.join(&name), plan)?;
            }
            if excluded && !wrote {
                if created {
                    std::fs::remove_dir(&host).map_err(|e| self.io(&host, e))?;
                }
                return Ok(false);
            }
            plan.jobs.borrow_mut().dirs.push((host, attrs));
        } else if ft.is_symlink() {
            let t = std::fs::read_link(&found.host_path).map_err(|e| self.io(&found.host_path, e))?;
            std::os::unix::fs::symlink(&t, &host).map_err(|e| self.io(&host, e))?;
            apply(&host, &attrs, true).map_err(|e| self.io(&host, e))?;
        } else if ft.is_file() {
            let mut job = FileJob {
                src: found.host_path.clone(),
                dst: host,
                attrs,
                size: found.meta.len(),
                link_from: None,
                remember: None,
            };
            if let Some(r) = &plan.reuse {
                r.plan(&mut job, src_rel, &found.meta, target);
            }
            plan.jobs.borrow_mut().files.push(job);
        } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_fifo() {
                rustix::fs::FileType::Fifo
            } else if ft.is_char_device() {
                rustix::fs::FileType::CharacterDevice
            } else {
                rustix::fs::FileType::BlockDevice
            };
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &host,
                kind,
                rustix::fs::Mode::from_raw_mode(0o600),
                found.meta.rdev(),
            )
            .map_err(|e| self.io(&host, e.into()))?;
            apply(&host, &attrs, false).map_err(|e| self.io(&host, e))?;
        } else {
            // Sockets cannot be copied; BuildKit skips them too.
            return Ok(false);
        }
        Ok(true)
    }
}
