//! `RUN --mount`: turning [`ExecOp::mounts`] into mounts the sandbox can apply.
//!
//! - `bind` of the build context: the context directory itself when the mount is read-only and
//!   the context has no `.dockerignore` patterns; otherwise a scratch copy of the selected
//!   subtree that honours them (and takes the writes of a read-write bind, which are then
//!   discarded).
//! - `bind` of a stage or image: a scratch copy of the selected subtree of its merged layers
//!   (`std::fs::copy`, so reflinks where the filesystem has them). No mount is ever made in
//!   rbuild's own process; an overlay of the layers, mounted by the sandbox, would avoid the
//!   copy (see the executor's `MountSpec`).
//! - `cache`: a persistent directory under the store ([`cache`]).
//! - `tmpfs`: the sandbox's own tmpfs.
//! - `secret`: a 0400 file in a private runtime directory ([`secret`]), which the sandbox copies
//!   into its own tmpfs with the requested owner and mode; with `env=`, also (or, when the
//!   target is empty, only) an environment variable of the step.
//! - `ssh`: a socket of our own forwarding to the client's agent; the first one also sets
//!   `SSH_AUTH_SOCK` unless the step's environment has it.
//!
//! Everything is released when the [`PreparedMounts`] is dropped after the step: scratch copies
//! and secret files removed, cache locks released, agent proxies stopped.

pub(crate) mod cache;
pub(crate) mod secret;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rbuild_solver::ir::{ExecOp, MountKind};

use crate::context::ContextDir;
use crate::copy::{CopySource, FileWriter};
use crate::error::WorkerError;
use crate::merged::MergedView;
use secret::{RuntimeDir, Secret, SshProxy};

/// Where a mount's input filesystem comes from.
#[derive(Debug)]
pub(crate) enum MountSource {
    /// The build context (or a named one).
    Context(Arc<ContextDir>),
    /// A stage's or image's layers.
    Fs(MergedView),
}

impl MountSource {
    fn as_copy_source(&self) -> CopySource<'_> {
        match self {
            // Copies for mounts never link files of earlier runs (see `copy::reuse`).
            MountSource::Context(c) => CopySource::Context { dir: c, walk: None },
            MountSource::Fs(v) => CopySource::Fs(v.clone()),
        }
    }
}

/// One mount for the sandbox (the executor's `MountSpec`, before translation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Planned {
    /// Absolute path in the container.
    pub target: String,
    /// What to mount there.
    pub kind: PlannedKind,
}

/// What a [`Planned`] mount is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PlannedKind {
    /// A host path, bound.
    Bind { source: PathBuf, readonly: bool },
    /// A fresh tmpfs.
    Tmpfs { size: Option<u64>, mode: u32 },
    /// A private copy of a host file with its own owner and mode.
    File { source: PathBuf, mode: u32, uid: u32, gid: u32 },
}

/// What the worker needs to prepare mounts.
#[derive(Debug)]
pub(crate) struct MountEnv<'a> {
    /// The store's versioned root (cache mounts live under it).
    pub store_root: &'a Path,
    /// This process's temp area in the store (scratch copies).
    pub tmp: &'a Path,
    /// Secrets by id.
    pub secrets: &'a HashMap<String, Secret>,
    /// SSH agent sockets by id.
    pub ssh: &'a HashMap<String, PathBuf>,
}

/// The mounts of one step and what keeps them valid. Its `Debug` shows only the names of the
/// extra variables: their values may be secrets.
#[derive(Default)]
pub(crate) struct PreparedMounts {
    /// The mounts, in the op's order.
    pub mounts: Vec<Planned>,
    /// Extra `K=V` entries for the step's environment (never part of the op).
    pub env: Vec<String>,
    scratch: Vec<PathBuf>,
    leases: Vec<cache::CacheLease>,
    proxies: Vec<SshProxy>,
    runtime: Option<RuntimeDir>,
}

impl std::fmt::Debug for PreparedMounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.env.iter().map(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k)).collect();
        f.debug_struct("PreparedMounts")
            .field("mounts", &self.mounts)
            .field("env_names", &names)
            .finish_non_exhaustive()
    }
}

impl Drop for PreparedMounts {
    fn drop(&mut self) {
        for dir in &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl PreparedMounts {
    fn runtime(&mut self) -> Result<&RuntimeDir, WorkerError> {
        if self.runtime.is_none() {
            let dir = RuntimeDir::create().map_err(|source| WorkerError::Io { path: std::env::temp_dir(), source })?;
            self.runtime = Some(dir);
        }
        self.runtime.as_ref().ok_or_else(|| WorkerError::Internal("runtime directory".into()))
    }

    fn scratch_dir(&mut self, tmp: &Path) -> Result<PathBuf, WorkerError> {
        let dir = tmp.join(format!("mount-{}", crate::unique_suffix()));
        std::fs::create_dir(&dir).map_err(|source| WorkerError::Io { path: dir.clone(), source })?;
        self.scratch.push(dir.clone());
        Ok(dir)
    }

    /// A scratch copy of `selector` of `src`: the directory itself, or the file in it.
    fn copy_of(&mut self, tmp: &Path, src: &CopySource<'_>, selector: &str) -> Result<PathBuf, WorkerError> {
        let rel = src
            .resolve(Path::new(selector), true)
            .map_err(|source| WorkerError::Io { path: selector.into(), source })?;
        let dir = self.scratch_dir(tmp)?;
        let empty = MergedView::default();
        FileWriter { base: &empty, diff: &dir, limits: Default::default() }.copy_out(src, &rel)
    }
}

/// Prepares the mounts of `op`; `sources[i]` is the input of `op.mounts[i]`, if it has one.
/// Blocking (copies, cache locks): call from a blocking thread.
pub(crate) fn prepare(
    env: &MountEnv<'_>,
    op: &ExecOp,
    sources: &[Option<MountSource>],
) -> Result<PreparedMounts, WorkerError> {
    let mut out = PreparedMounts::default();
    let mut first_ssh = true;
    for (i, m) in op.mounts.iter().enumerate() {
        let source = sources.get(i).and_then(Option::as_ref);
        let kind = match &m.kind {
            MountKind::Bind { selector, readonly, .. } => {
                let src =
                    source.ok_or_else(|| WorkerError::Internal(format!("bind mount at {} has no input", m.target)))?;
                let path = match src {
                    MountSource::Context(c) if *readonly && c.ignore.is_empty() => {
                        let rel = c
                            .resolve(Path::new(selector), true)
                            .map_err(|source| WorkerError::Io { path: selector.into(), source })?;
                        if c.lstat(&rel).map_err(|source| WorkerError::Io { path: selector.into(), source })?.is_none()
                        {
                            return Err(WorkerError::SourceNotFound { path: selector.clone(), hint: None });
                        }
                        c.root.join(rel)
                    }
                    other => out.copy_of(env.tmp, &other.as_copy_source(), selector)?,
                };
                PlannedKind::Bind { source: path, readonly: *readonly }
            }
            MountKind::Cache { id, sharing, selector, readonly, uid, gid, mode, .. } => {
                let seed_src = source.map(MountSource::as_copy_source);
                let seed = match &seed_src {
                    Some(s) => {
                        let rel = s
                            .resolve(Path::new(selector), true)
                            .map_err(|source| WorkerError::Io { path: selector.into(), source })?;
                        Some((s, rel))
                    }
                    None => None,
                };
                let init = cache::CacheInit { seed, uid: *uid, gid: *gid, mode: *mode };
                let lease = cache::acquire(env.store_root, id, *sharing, &init)?;
                let dir = lease.dir.clone();
                out.leases.push(lease);
                PlannedKind::Bind { source: dir, readonly: *readonly }
            }
            MountKind::Tmpfs { size } => PlannedKind::Tmpfs { size: *size, mode: 0o1777 },
            MountKind::Secret { id, required, env: var, uid, gid, mode } => {
                let Some(value) = env.secrets.get(id) else {
                    if *required {
                        return Err(WorkerError::SecretNotFound { id: id.clone() });
                    }
                    continue;
                };
                if let Some(var) = var {
                    let text = std::str::from_utf8(value.expose())
                        .ok()
                        .filter(|t| !t.contains('\0'))
                        .ok_or_else(|| WorkerError::SecretNotEnv { id: id.clone() })?;
                    out.env.push(format!("{var}={text}"));
                }
                if m.target.is_empty() {
                    continue;
                }
                let runtime = out.runtime()?;
                let file = runtime
                    .write_secret(&format!("secret-{i}"), value)
                    .map_err(|source| WorkerError::Io { path: runtime.path().to_owned(), source })?;
                PlannedKind::File { source: file, mode: *mode, uid: *uid, gid: *gid }
            }
            MountKind::Ssh { id, required, uid, gid, mode } => {
                let Some(agent) = env.ssh.get(id) else {
                    if *required {
                        return Err(WorkerError::SshNotFound { id: id.clone() });
                    }
                    continue;
                };
                let sock = out.runtime()?.path().join(format!("ssh-{i}.sock"));
                let proxy = SshProxy::start(agent, sock.clone(), *uid, *gid, *mode)
                    .map_err(|source| WorkerError::Io { path: sock, source })?;
                let sock = proxy.path().to_owned();
                out.proxies.push(proxy);
                if first_ssh && !op.env.iter().chain(&out.env).any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
                    out.env.push(format!("SSH_AUTH_SOCK={}", m.target));
                }
                first_ssh = false;
                PlannedKind::Bind { source: sock, readonly: false }
            }
            other => return Err(WorkerError::Internal(format!("unsupported mount {other:?}"))),
        };
        out.mounts.push(Planned { target: m.target.clone(), kind });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
