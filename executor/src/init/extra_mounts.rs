//! The spec's extra mounts ([`MountSpec`], what `RUN --mount` becomes).
//!
//! Two phases, because the sources are host paths and the targets are paths in the rootfs:
//! 1. [`prepare`], before `pivot_root`, on a private staging tmpfs (`/dev/.rbuild-mounts`,
//!    so never on the overlay): each bind source is bind-mounted onto a stub there, and each
//!    file source copied there with its mode and owner. (A bind cannot be made from an fd
//!    opened before `pivot_root`: its mount is detached with the old root, and mount(2)
//!    refuses a source outside the caller's namespace with EINVAL.)
//! 2. [`apply`], after `pivot_root` (targets, and the image's symlinks on the way, resolve
//!    inside the rootfs): missing targets are created as recorded [`Stubs`], each staged
//!    entry is bound (or a tmpfs mounted) onto its target, and the staging tmpfs is detached
//!    with everything on it (the target binds keep what they show alive).

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::statvfs::FsFlags;

use super::mounts::{mount, MountError};
use super::stubs::Stubs;
use crate::options::{MountKind, MountSpec};

/// The staging directory, relative to the rootfs (on the `/dev` tmpfs).
const STAGING: &str = "dev/.rbuild-mounts";

/// A mount whose source is ready: staged at `/dev/.rbuild-mounts/<n>` unless a tmpfs.
#[derive(Debug)]
enum Ready {
    Bind { staged: PathBuf, dir: bool, readonly: bool },
    Tmpfs { options: String },
    File { staged: PathBuf },
}

/// The extra mounts, prepared before `pivot_root`.
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    mounts: Vec<(PathBuf, Ready)>,
    staging: bool,
}

fn source_error(path: &Path) -> impl FnOnce(std::io::Error) -> MountError + '_ {
    move |e| MountError::Source { path: path.to_owned(), source: e.into() }
}

/// Phase 1: stages bind and file sources under `merged`.
pub(crate) fn prepare(merged: &Path, specs: &[MountSpec]) -> Result<Prepared, MountError> {
    let mut prepared = Prepared::default();
    if specs.iter().any(|m| !matches!(m.kind, MountKind::Tmpfs { .. })) {
        stage_tmpfs(merged, specs)?;
        prepared.staging = true;
    }
    for (i, spec) in specs.iter().enumerate() {
        let staged = Path::new("/").join(STAGING).join(i.to_string());
        let on_host = merged.join(STAGING).join(i.to_string());
        let ready = match &spec.kind {
            MountKind::Bind { source, readonly } => {
                let meta = std::fs::metadata(source).map_err(source_error(source))?;
                let made = if meta.is_dir() {
                    std::fs::create_dir(&on_host)
                } else {
                    std::fs::File::create(&on_host).map(drop)
                };
                made.map_err(|e| MountError::Create { path: on_host.clone(), source: e.into() })?;
                mount(&source.to_string_lossy(), &on_host, None, MsFlags::MS_BIND, None)?;
                Ready::Bind { staged, dir: meta.is_dir(), readonly: *readonly }
            }
            MountKind::Tmpfs { size, mode } => {
                let mut options = format!("mode={mode:o}");
                if let Some(size) = size {
                    options.push_str(&format!(",size={size}"));
                }
                Ready::Tmpfs { options }
            }
            MountKind::File { source, mode, uid, gid } => {
                std::fs::copy(source, &on_host).map_err(source_error(source))?;
                std::fs::set_permissions(&on_host, std::fs::Permissions::from_mode(*mode))
                    .and_then(|()| std::os::unix::fs::chown(&on_host, Some(*uid), Some(*gid)))
                    .map_err(|e| MountError::Create { path: on_host.clone(), source: e.into() })?;
                Ready::File { staged }
            }
        };
        prepared.mounts.push((PathBuf::from(&spec.target), ready));
    }
    Ok(prepared)
}

/// A tmpfs just big enough for copies of the file sources (and the bind stubs).
fn stage_tmpfs(merged: &Path, specs: &[MountSpec]) -> Result<(), MountError> {
    let mut bytes: u64 = 64 * 1024;
    for spec in specs {
        bytes += 4096;
        if let MountKind::File { source, .. } = &spec.kind {
            let meta = std::fs::metadata(source).map_err(source_error(source))?;
            bytes += meta.len().div_ceil(4096) * 4096;
        }
    }
    let dir = merged.join(STAGING);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| MountError::Create { path: dir.clone(), source: e.into() })?;
    let secure = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let options = format!("mode=700,size={bytes}");
    mount("tmpfs", &dir, Some("tmpfs"), secure, Some(&options))
}

/// Phase 2, inside the rootfs: creates the targets and mounts.
pub(crate) fn apply(prepared: Prepared, stubs: &mut Stubs) -> Result<(), MountError> {
    let root = Path::new("/");
    for (target, ready) in &prepared.mounts {
        let dir = match ready {
            Ready::Bind { dir, .. } => *dir,
            Ready::Tmpfs { .. } => true,
            Ready::File { .. } => false,
        };
        stubs.create(root, target, dir)?;
        match ready {
            Ready::Bind { staged, readonly, .. } => {
                mount(&staged.to_string_lossy(), target, None, MsFlags::MS_BIND, None)?;
                if *readonly {
                    remount_readonly(target)?;
                }
            }
            Ready::Tmpfs { options } => {
                let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_STRICTATIME;
                mount("tmpfs", target, Some("tmpfs"), flags, Some(options))?;
            }
            Ready::File { staged } => {
                mount(&staged.to_string_lossy(), target, None, MsFlags::MS_BIND, None)?;
                remount_readonly(target)?;
            }
        }
    }
    if prepared.staging {
        let staging = root.join(STAGING);
        nix::mount::umount2(&staging, MntFlags::MNT_DETACH)
            .map_err(|e| MountError::Unmount { target: staging.clone(), source: e.into() })?;
        std::fs::remove_dir(&staging).map_err(|e| MountError::Remove { path: staging, source: e.into() })?;
    }
    Ok(())
}

/// Makes the bind mount at `target` read-only, keeping its nosuid/nodev/noexec flags (a
/// remount sets exactly the flags it is given; mount(2), "Creating a bind mount").
fn remount_readonly(target: &Path) -> Result<(), MountError> {
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    if let Ok(vfs) = nix::sys::statvfs::statvfs(target) {
        let keep = [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        ];
        for (has, flag) in keep {
            if vfs.flags().contains(has) {
                flags |= flag;
            }
        }
    }
    mount("none", target, None, flags, None)
}
