//! rbuild's local worker: implements the solver's ops on this machine with the store
//! (`rbuild-cache`), the sandbox (`rbuild-executor`), the registry client and the layer code.
//!
//! Every filesystem result is a [`Snapshot`]: a chain of overlay-format diff directories in the
//! store, lowest first. A RUN mounts the chain as overlay lower dirs and keeps the upper dir as
//! its new layer; COPY and WORKDIR write their new layer directly (no mount); a pulled image is
//! its layers unpacked once, content-addressed by diff id, shared by every build.
//!
//! Sources: images (`pull`), the build context, `ADD <url>` (`http`) and `ADD <git url>`
//! (`git`). `RUN --mount`s are prepared by `mounts` (cache directories under the store, secrets
//! from [`LocalWorker::with_secrets`], agents from [`LocalWorker::with_ssh`]). Invariant 3 of
//! the design: secret values and cache-mount contents never reach a layer, a key or a log.

mod archive;
mod context;
mod context_index;
mod copy;
mod error;
mod exec;
mod fsmeta;
mod git;
mod http;
mod image;
mod merged;
mod mounts;
mod pull;
mod treediff;
mod users;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rbuild_cache::{Record, RecordLayer, SnapshotMeta, Store};
use rbuild_solver::ir::{FileAction, Op, OpId, SourceOp};
use rbuild_solver::{CacheKey, ExecContext, Progress, Worker};

use mounts::{MountEnv, MountSource};

pub use archive::{ArchiveError, ArchiveLimits};
pub use context::{ContextDir, IgnoreMatcher, PatternError};
pub use error::WorkerError;
pub use exec::RunRootfs;
pub use image::{HistoryEntry, ImageSpec};
pub use merged::MergedView;
pub use mounts::secret::Secret;

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A name part no other temp path of this process uses.
pub(crate) fn unique_suffix() -> String {
    format!("{}-{}", std::process::id(), UNIQUE.fetch_add(1, Ordering::Relaxed))
}

/// A filesystem: snapshot ids in the store, lowest first, each with the op that made it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The layers.
    pub chain: Vec<RecordLayer>,
}

/// What a vertex produces.
#[derive(Clone, Debug)]
pub enum Output {
    /// A filesystem in the store.
    Fs(Snapshot),
    /// A directory provided by the client (the build context).
    Context(Arc<ContextDir>),
}

/// Executes ops on this machine.
#[derive(Debug)]
pub struct LocalWorker {
    store: Arc<Store>,
    registry: rbuild_registry::Client,
    /// Our own binary, re-executed as the sandbox helper.
    sandbox_exe: PathBuf,
    contexts: HashMap<String, Arc<ContextDir>>,
    secrets: Arc<HashMap<String, Secret>>,
    ssh: Arc<HashMap<String, PathBuf>>,
    archive_limits: ArchiveLimits,
    /// `--allow` and `--debug` as they concern RUN steps.
    exec_settings: exec::ExecSettings,
    /// Overlay, copy, or overlay until the kernel refuses it.
    run_rootfs: RunRootfs,
    /// Set when an overlay was refused in `Auto` mode: later steps copy from the start.
    overlay_refused: Arc<AtomicBool>,
    http: OnceLock<reqwest::Client>,
    /// Downloads made to compute an `Http` source's key, waiting for its execution.
    downloads: Mutex<HashMap<OpId, http::Downloaded>>,
    /// Commits `Git` sources resolved to when their keys were computed.
    git_commits: Mutex<HashMap<OpId, String>>,
}

impl LocalWorker {
    /// A worker over `store`, pulling with `registry`, running RUN steps through `sandbox_exe`
    /// (`<exe> __sandbox`), with the named local contexts (`"context"` is the build context).
    pub fn new(
        store: Arc<Store>,
        registry: rbuild_registry::Client,
        sandbox_exe: PathBuf,
        contexts: HashMap<String, Arc<ContextDir>>,
    ) -> LocalWorker {
        LocalWorker {
            store,
            registry,
            sandbox_exe,
            contexts,
            secrets: Arc::default(),
            ssh: Arc::default(),
            archive_limits: ArchiveLimits::default(),
            exec_settings: exec::ExecSettings::default(),
            run_rootfs: RunRootfs::default(),
            overlay_refused: Arc::default(),
            http: OnceLock::new(),
            downloads: Mutex::default(),
            git_commits: Mutex::default(),
        }
    }

    /// The secrets `RUN --mount=type=secret` can use, by id (`--secret id=...`).
    #[must_use]
    pub fn with_secrets(mut self, secrets: HashMap<String, Secret>) -> LocalWorker {
        self.secrets = Arc::new(secrets);
        self
    }

    /// The SSH agent sockets `RUN --mount=type=ssh` can use, by id (`--ssh default=$SSH_AUTH_SOCK`).
    #[must_use]
    pub fn with_ssh(mut self, agents: HashMap<String, PathBuf>) -> LocalWorker {
        self.ssh = Arc::new(agents);
        self
    }

    /// Limits for `ADD`'s extraction of local archives (decompression-bomb guard).
    #[must_use]
    pub fn with_archive_limits(mut self, limits: ArchiveLimits) -> LocalWorker {
        self.archive_limits = limits;
        self
    }

    /// Whether `RUN --security=insecure` may run (`--allow security.insecure`). Off by default:
    /// such a step then fails before anything runs, naming the flag.
    #[must_use]
    pub fn with_allow_insecure(mut self, allow: bool) -> LocalWorker {
        self.exec_settings.allow_insecure = allow;
        self
    }

    /// Whether each RUN step reports its effective confinement as progress status lines
    /// (`--debug`).
    #[must_use]
    pub fn with_debug(mut self, debug: bool) -> LocalWorker {
        self.exec_settings.debug = debug;
        self
    }

    /// How RUN steps get their root filesystem: an overlay (falling back to a copy when the
    /// kernel refuses it, the default), always an overlay, or always a copy.
    #[must_use]
    pub fn with_run_rootfs(mut self, mode: RunRootfs) -> LocalWorker {
        self.run_rootfs = mode;
        self
    }

    fn next_tmp(&self) -> String {
        unique_suffix()
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn context(&self, name: &str) -> Result<Arc<ContextDir>, WorkerError> {
        self.contexts
            .get(name)
            .cloned()
            .ok_or_else(|| WorkerError::Internal(format!("no local context named {name:?}")))
    }

    /// The overlay lower dirs of a chain, topmost first.
    pub fn lower_dirs(&self, snap: &Snapshot) -> Vec<PathBuf> {
        snap.chain.iter().rev().map(|l| self.store.snapshot_diff(&l.id)).collect()
    }

    /// A merged read-only view of a chain.
    pub fn view(&self, snap: &Snapshot) -> MergedView {
        MergedView::new(self.lower_dirs(snap))
    }

    /// Publishes `prepared` as the layer `key` on top of `base` (or returns `base` unchanged when
    /// the diff is empty) and records the result under `key`.
    fn finish_layer(
        &self,
        key: &CacheKey,
        producer: OpId,
        base: Snapshot,
        prepared: rbuild_cache::PreparedSnapshot,
    ) -> Result<Snapshot, WorkerError> {
        let mut snap = base;
        if !prepared.is_empty()? {
            let id = key.to_hex();
            self.store.commit_snapshot(prepared, &id, &SnapshotMeta::default())?;
            snap.chain.push(RecordLayer { id, producer: Some(producer.to_hex()) });
        }
        self.store.put_record(&key.to_hex(), &Record { chain: snap.chain.clone() })?;
        Ok(snap)
    }

    fn fs_input(inputs: &[Output], i: usize) -> Result<Snapshot, WorkerError> {
        match inputs.get(i) {
            Some(Output::Fs(s)) => Ok(s.clone()),
            _ => Err(WorkerError::Internal(format!("input {i} is not a filesystem"))),
        }
    }
}

impl Worker for LocalWorker {
    type Output = Output;
    type Error = WorkerError;

    async fn content_key(&self, id: OpId, op: &Op, progress: &Progress) -> Result<Option<[u8; 32]>, WorkerError> {
        let name = match op {
            Op::Source(SourceOp::Local { name, .. }) => name,
            Op::Source(SourceOp::Http { url, checksum, .. }) => {
                return self.http_content_key(id, url, checksum.as_deref(), progress).await.map(Some);
            }
            Op::Source(SourceOp::Git { remote, reference, .. }) => {
                return self.git_content_key(id, remote, reference.as_deref()).await.map(Some);
            }
            Op::Exec(e) => {
                // Every needed vertex gets a key before anything runs: refusing here fails the
                // build up front, and a cached insecure step cannot slip through.
                exec::check_allowed(e, self.exec_settings)?;
                return Ok(None);
            }
            _ => return Ok(None),
        };
        let ctx = self.context(name)?;
        let root = ctx.root.clone();
        // One index per context directory, in the store (so a stat-only rebuild is possible).
        let index = {
            use sha2::Digest as _;
            let id = hex::encode(sha2::Sha256::digest(root.as_os_str().as_encoded_bytes()));
            self.store.root().join("context-index").join(id)
        };
        let digest = tokio::task::spawn_blocking(move || ctx.content_digest(Some(&index)))
            .await
            .map_err(|e| WorkerError::Internal(e.to_string()))?
            .map_err(|source| WorkerError::Io { path: root, source })?;
        Ok(Some(digest))
    }

    async fn load(&self, key: &CacheKey, op: &Op) -> Result<Option<Output>, WorkerError> {
        if let Op::Source(SourceOp::Local { name, .. }) = op {
            return Ok(Some(Output::Context(self.context(name)?)));
        }
        let found = self.store.get_record(&key.to_hex())?.map(|r| Output::Fs(Snapshot { chain: r.chain }));
        if found.is_some() && matches!(op, Op::Source(SourceOp::Http { .. })) {
            // Cached: the download made for the key is not needed.
            self.lock_downloads().remove(&op.id());
        }
        Ok(found)
    }

    async fn exec(&self, ctx: ExecContext, op: &Op, inputs: Vec<Output>) -> Result<Output, WorkerError> {
        match op {
            Op::Source(SourceOp::Image { reference, digest, platform }) => {
                let chain = pull::pull(self, reference, digest.as_deref(), platform, &ctx.progress).await?;
                self.store.put_record(&ctx.key.to_hex(), &Record { chain: chain.clone() })?;
                Ok(Output::Fs(Snapshot { chain }))
            }
            Op::Source(SourceOp::Http { url, checksum, filename }) => Ok(Output::Fs(
                self.http_exec(ctx.id, &ctx.key, url, checksum.as_deref(), filename, &ctx.progress).await?,
            )),
            Op::Source(SourceOp::Git { remote, reference, subdir, keep_git_dir }) => Ok(Output::Fs(
                self.git_exec(ctx.id, &ctx.key, remote, reference.as_deref(), subdir.as_deref(), *keep_git_dir).await?,
            )),
            Op::Source(_) => Err(WorkerError::Internal("unsupported source".into())),
            Op::Exec(e) => {
                exec::check_allowed(e, self.exec_settings)?;
                let mut idx = 0;
                let base = if e.rootfs.is_some() {
                    idx = 1;
                    Self::fs_input(&inputs, 0)?
                } else {
                    Snapshot::default()
                };
                // Mount inputs follow the rootfs in `Op::inputs` order, one per mount that reads one.
                let mut sources = Vec::with_capacity(e.mounts.len());
                for m in &e.mounts {
                    if m.kind.input().is_none() {
                        sources.push(None);
                        continue;
                    }
                    sources.push(Some(match inputs.get(idx) {
                        Some(Output::Context(c)) => MountSource::Context(c.clone()),
                        Some(Output::Fs(s)) => MountSource::Fs(self.view(s)),
                        None => return Err(WorkerError::Internal(format!("mount at {} has no input {idx}", m.target))),
                    }));
                    idx += 1;
                }
                let prepared = self.store.prepare_snapshot()?;
                let lower = self.lower_dirs(&base);
                let (upper, scratch) = (prepared.diff(), prepared.work());
                let (op2, exe, progress) = (e.clone(), self.sandbox_exe.clone(), ctx.progress.clone());
                let (store, secrets, ssh) = (self.store.clone(), self.secrets.clone(), self.ssh.clone());
                let settings = self.exec_settings;
                let (mode, refused) = (self.run_rootfs, self.overlay_refused.clone());
                tokio::task::spawn_blocking(move || -> Result<(), WorkerError> {
                    let env = MountEnv { store_root: store.root(), tmp: store.tmp_dir(), secrets: &secrets, ssh: &ssh };
                    // Dropped after the run: scratch copies and secret files go, cache locks are released.
                    let mounts = mounts::prepare(&env, &op2, &sources)?;
                    let run = |lower: Vec<PathBuf>, upper: PathBuf, scratch: PathBuf, rootfs| {
                        exec::run(&op2, lower, upper, scratch, rootfs, &exe, &progress, &mounts, settings)
                    };
                    let copy = mode == RunRootfs::Copy || (mode == RunRootfs::Auto && refused.load(Ordering::Relaxed));
                    if !copy {
                        let result =
                            run(lower.clone(), upper.clone(), scratch.clone(), rbuild_executor::Rootfs::Overlay);
                        let Some(cause) = result.as_ref().err().and_then(exec::overlay_refused) else {
                            return result;
                        };
                        if mode != RunRootfs::Auto {
                            return result;
                        }
                        if !refused.swap(true, Ordering::Relaxed) {
                            progress.status(format!(
                                "overlayfs cannot be mounted here ({cause}): RUN steps copy their root \
                                 filesystem instead (slower; RBUILD_SNAPSHOTTER=native says so up front)"
                            ));
                        }
                    }
                    // The copy and the sandbox's scratch dir live in the snapshot's work dir (on
                    // the diff's filesystem, removed with it); the copy is not under the scratch
                    // dir, which the sandbox covers with a tmpfs.
                    let (rootfs, sandbox) = (scratch.join("rootfs"), scratch.join("sandbox"));
                    let before = treediff::copy_rootfs(&lower, &rootfs)?;
                    std::fs::create_dir(&sandbox)
                        .map_err(|source| WorkerError::Io { path: sandbox.clone(), source })?;
                    run(Vec::new(), rootfs.clone(), sandbox, rbuild_executor::Rootfs::Copied)?;
                    treediff::diff_into(&rootfs, &before, &upper)
                })
                .await
                .map_err(|err| WorkerError::Internal(err.to_string()))??;
                Ok(Output::Fs(self.finish_layer(&ctx.key, ctx.id, base, prepared)?))
            }
            Op::File(f) => {
                let mut idx = 0;
                let base = if f.base.is_some() {
                    idx = 1;
                    Self::fs_input(&inputs, 0)?
                } else {
                    Snapshot::default()
                };
                // Copy sources follow the base in `Op::inputs` order, one per Copy action.
                let mut sources = Vec::new();
                for a in &f.actions {
                    if matches!(a, FileAction::Copy { .. }) {
                        sources.push(inputs.get(idx).cloned());
                        idx += 1;
                    } else {
                        sources.push(None);
                    }
                }
                let prepared = self.store.prepare_snapshot()?;
                let view = self.view(&base);
                let source_views: Vec<Option<SourceHandle>> = sources
                    .into_iter()
                    .map(|o| match o {
                        Some(Output::Context(c)) => Some(SourceHandle::Context(c)),
                        Some(Output::Fs(s)) => Some(SourceHandle::Fs(self.view(&s))),
                        None => None,
                    })
                    .collect();
                let (actions, diff, limits) = (f.actions.clone(), prepared.diff(), self.archive_limits);
                tokio::task::spawn_blocking(move || -> Result<(), WorkerError> {
                    let writer = copy::FileWriter { base: &view, diff: &diff, limits };
                    for (action, src) in actions.iter().zip(&source_views) {
                        let src = src.as_ref().map(|s| match s {
                            SourceHandle::Context(c) => copy::CopySource::Context(c),
                            SourceHandle::Fs(v) => copy::CopySource::Fs(v.clone()),
                        });
                        writer.apply(action, src.as_ref())?;
                    }
                    Ok(())
                })
                .await
                .map_err(|err| WorkerError::Internal(err.to_string()))??;
                Ok(Output::Fs(self.finish_layer(&ctx.key, ctx.id, base, prepared)?))
            }
            Op::Merge(_) => {
                // Layers stack: the merge of chains is their concatenation, no copying.
                let mut chain = Vec::new();
                for i in 0..inputs.len() {
                    chain.extend(Self::fs_input(&inputs, i)?.chain);
                }
                self.store.put_record(&ctx.key.to_hex(), &Record { chain: chain.clone() })?;
                Ok(Output::Fs(Snapshot { chain }))
            }
            _ => Err(WorkerError::Internal("unsupported op".into())),
        }
    }
}

enum SourceHandle {
    Context(Arc<ContextDir>),
    Fs(MergedView),
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    /// A worker on a fresh store in `dir`, with no registry access needed and no sandbox.
    pub(crate) fn worker(dir: &std::path::Path) -> LocalWorker {
        let store = Arc::new(Store::open(dir.join("store")).unwrap());
        let registry = rbuild_registry::Client::new(rbuild_registry::ClientOptions::default()).unwrap();
        LocalWorker::new(store, registry, PathBuf::from("/nonexistent"), HashMap::new())
    }

    pub(crate) fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// Our own uid and gid (what a non-root test can give files).
    pub(crate) fn own_ids() -> (u32, u32) {
        (nix::unistd::geteuid().as_raw(), nix::unistd::getegid().as_raw())
    }

    /// Returns from a test, saying why, when not running as root.
    macro_rules! require_root {
        ($why:expr) => {
            if !crate::testutil::is_root() {
                eprintln!("skipping: {} needs root", $why);
                return;
            }
        };
    }
    pub(crate) use require_root;
}
