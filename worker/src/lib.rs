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
pub mod oci_layout;
mod pull;
pub mod remote;
mod remote_cache;
pub mod sbom;
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
pub use context::{literal_prefix as source_prefix, ContextDir, ContextEntries, IgnoreMatcher, PatternError};
/// sha256 of a file's content, read in chunks.
pub use context_index::hash_file as sha256_file;
pub use error::WorkerError;
pub use exec::RunRootfs;
pub use image::{HistoryEntry, ImageSpec};
pub use merged::MergedView;
pub use mounts::secret::Secret;
pub use remote_cache::{
    inline_cache_field, CacheConfig, CacheLayer, CacheLocation, CacheMode, CollectedCache, RemoteCache,
    RemoteCacheError, CACHE_CONFIG_MEDIA_TYPE, INLINE_CACHE_FIELD,
};

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
    /// sha256 of what each `Http` source without a checksum downloaded (kept for provenance).
    http_digests: Mutex<HashMap<OpId, [u8; 32]>>,
    /// Each local context's walk (entries and file digests), taken once per build, by root
    /// directory: cache keys, COPY's reuse of earlier copies and `--explain` all read it.
    context_entries: Mutex<HashMap<PathBuf, Arc<tokio::sync::OnceCell<Arc<ContextEntries>>>>>,
    /// Caches imported with `--cache-from`, asked in order when the store misses.
    remote_caches: Vec<RemoteCache>,
    /// Problems with imported caches that cost a hit but not the build.
    cache_warnings: Mutex<Vec<String>>,
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
            http_digests: Mutex::default(),
            context_entries: Mutex::default(),
            remote_caches: Vec::new(),
            cache_warnings: Mutex::default(),
        }
    }

    /// Caches to import results from when the store has none (`--cache-from`, see
    /// [`LocalWorker::load_remote_cache`]), asked in order.
    #[must_use]
    pub fn with_remote_caches(mut self, caches: Vec<RemoteCache>) -> LocalWorker {
        self.remote_caches = caches;
        self
    }

    /// Problems met importing from remote caches (each cost a cache hit, not the build).
    pub fn cache_warnings(&self) -> Vec<String> {
        self.cache_warnings.lock().map(|w| w.clone()).unwrap_or_default()
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

    /// The entries of the local context `name`, walked once per build (with the store's stat
    /// index, so an unchanged file is not read again).
    async fn context_entries(&self, name: &str) -> Result<Arc<ContextEntries>, WorkerError> {
        let ctx = self.context(name)?;
        let cell = {
            let mut map = self.context_entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            map.entry(ctx.root.clone()).or_default().clone()
        };
        let entries = cell
            .get_or_try_init(|| async {
                let root = ctx.root.clone();
                let index = self.context_index(&root);
                let entries = tokio::task::spawn_blocking(move || ctx.entries(Some(&index)))
                    .await
                    .map_err(|e| WorkerError::Internal(e.to_string()))?
                    .map_err(|source| WorkerError::Io { path: root, source })?;
                Ok::<_, WorkerError>(Arc::new(entries))
            })
            .await?;
        Ok(entries.clone())
    }

    /// The walk of the context directory `root`, if this build took one.
    fn walked(&self, root: &std::path::Path) -> Option<Arc<ContextEntries>> {
        let map = self.context_entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(root)?.get().cloned()
    }

    /// The index of the context directory `root` in the store: one per directory, so that a
    /// stat-only rebuild is possible (COPY's memos live beside it).
    fn context_index(&self, root: &std::path::Path) -> PathBuf {
        use sha2::Digest as _;
        let id = hex::encode(sha2::Sha256::digest(root.as_os_str().as_encoded_bytes()));
        self.store.root().join("context-index").join(id)
    }

    /// Forgets what the store knows about the context directory `root` (its index and COPY
    /// memos): for a context materialised into a temporary directory (stdin, an archive, a
    /// repository), whose path no later build uses again.
    pub fn forget_context(&self, root: &std::path::Path) {
        let index = self.context_index(root);
        let mut memos = index.clone().into_os_string();
        memos.push(".copies");
        let _ = std::fs::remove_file(&index);
        let _ = std::fs::remove_dir_all(PathBuf::from(memos));
    }

    /// The digest (hex) of each regular file of the named context, by path relative to its
    /// root, as this worker walked it for cache keys (`None` before that).
    pub fn context_file_digests(&self, name: &str) -> Option<Vec<(String, String)>> {
        let walk = self.walked(&self.contexts.get(name)?.root)?;
        Some(walk.file_digests().map(|(p, d)| (p.to_string_lossy().into_owned(), hex::encode(d))).collect())
    }

    /// The overlay lower dirs of a chain, topmost first.
    pub fn lower_dirs(&self, snap: &Snapshot) -> Vec<PathBuf> {
        snap.chain.iter().rev().map(|l| self.store.snapshot_diff(&l.id)).collect()
    }

    /// What a remote source of this build resolved to, for provenance: the commit of a `Git`
    /// source (`("sha1", hex)`) or the content digest of an `Http` one (`("sha256", hex)`).
    pub fn resolved_source(&self, id: &OpId) -> Option<(String, String)> {
        if let Some(commit) = self.lock_commits().get(id) {
            return Some(("sha1".to_owned(), commit.clone()));
        }
        let digests = self.http_digests.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        digests.get(id).map(|d| ("sha256".to_owned(), hex::encode(d)))
    }

    /// A merged read-only view of a chain.
    pub fn view(&self, snap: &Snapshot) -> MergedView {
        MergedView::new(self.lower_dirs(snap))
    }

    /// Publishes `prepared` as the layer `key` on top of `base` (or returns `base` unchanged when
    /// the diff is empty) and records the result under `key`. A layer already stored under
    /// the key's name is kept (a step re-run after its record was collected reproduces it
    /// exactly) unless `replace` (the step bypassed the cache: its new result is wanted).
    fn finish_layer(
        &self,
        key: &CacheKey,
        producer: OpId,
        base: Snapshot,
        prepared: rbuild_cache::PreparedSnapshot,
        replace: bool,
    ) -> Result<Snapshot, WorkerError> {
        let mut snap = base;
        if !prepared.is_empty()? {
            let mut id = key.to_hex();
            if replace && self.store.has_snapshot(&id) {
                // Publishing under the key's name would keep the old layer and throw the new
                // result away: a fresh name keeps the new one.
                use sha2::Digest as _;
                let unique = format!("{id}-{}-{:?}", unique_suffix(), std::time::SystemTime::now());
                id = hex::encode(sha2::Sha256::digest(unique.as_bytes()));
            }
            self.store.commit_snapshot(prepared, &id, &SnapshotMeta::default())?;
            snap.chain.push(RecordLayer { id, producer: Some(producer.to_hex()) });
        }
        self.store.put_record(&key.to_hex(), &Record { chain: snap.chain.clone() })?;
        Ok(snap)
    }

    /// The result for `key` from the first imported cache that has it. A cache that fails
    /// (unreachable, corrupt blob) costs the hit, not the build: the step runs instead.
    async fn load_imported(&self, key: &CacheKey) -> Option<Vec<RecordLayer>> {
        for cache in &self.remote_caches {
            match self.import_record(cache, key).await {
                Ok(Some(chain)) => return Some(chain),
                Ok(None) => {}
                Err(e) => {
                    let mut text = e.to_string();
                    let mut cur = std::error::Error::source(&e);
                    while let Some(c) = cur {
                        text.push_str(": ");
                        text.push_str(&c.to_string());
                        cur = c.source();
                    }
                    if let Ok(mut w) = self.cache_warnings.lock() {
                        w.push(format!("importing cache record {} from {}: {text}", key, cache.location()));
                    }
                }
            }
        }
        None
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
        Ok(Some(self.context_entries(name).await?.digest()))
    }

    async fn content_key_with_inputs(
        &self,
        id: OpId,
        op: &Op,
        inputs: &[Option<&Op>],
        progress: &Progress,
    ) -> Result<Option<[u8; 32]>, WorkerError> {
        // The context vertex itself: walk and digest it here (its progress line), but keep
        // its contents out of its key. What reads it adds the part it reads to its own key.
        if let Op::Source(SourceOp::Local { name, .. }) = op {
            self.context_entries(name).await?;
            return Ok(None);
        }
        let locals: HashMap<OpId, &str> = op
            .inputs()
            .iter()
            .zip(inputs)
            .filter_map(|(input, op)| match op {
                Some(Op::Source(SourceOp::Local { name, .. })) => Some((input.op, name.as_str())),
                _ => None,
            })
            .collect();
        if locals.is_empty() {
            return self.content_key(id, op, progress).await;
        }
        if let Op::Exec(e) = op {
            exec::check_allowed(e, self.exec_settings)?;
        }
        // Per local input, in the op's order: the paths it reads (an input read in a way not
        // listed here counts whole).
        let mut reads: Vec<(OpId, Vec<String>)> = Vec::new();
        let add = |reads: &mut Vec<(OpId, Vec<String>)>, input: OpId, path: &str| match reads
            .iter_mut()
            .find(|(i, _)| *i == input)
        {
            Some((_, paths)) => paths.push(path.to_owned()),
            None => reads.push((input, vec![path.to_owned()])),
        };
        match op {
            Op::File(f) => {
                for a in &f.actions {
                    if let FileAction::Copy { src, src_paths, .. } = a {
                        if locals.contains_key(&src.op) {
                            src_paths.iter().for_each(|p| add(&mut reads, src.op, p));
                        }
                    }
                }
            }
            Op::Exec(e) => {
                for m in &e.mounts {
                    if let rbuild_solver::ir::MountKind::Bind { source, selector, .. } = &m.kind {
                        if locals.contains_key(&source.op) {
                            add(&mut reads, source.op, selector);
                        }
                    }
                }
            }
            _ => {}
        }
        for input in op.inputs() {
            if locals.contains_key(&input.op) && !reads.iter().any(|(i, _)| *i == input.op) {
                add(&mut reads, input.op, "");
            }
        }
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(b"rbuild.context-reads.v1\0");
        for (input, paths) in &reads {
            let entries = self.context_entries(locals[input]).await?;
            h.update(locals[input].as_bytes());
            h.update([0]);
            h.update(entries.selection_digest(paths));
        }
        Ok(Some(h.finalize().into()))
    }

    async fn load(&self, key: &CacheKey, op: &Op) -> Result<Option<Output>, WorkerError> {
        if let Op::Source(SourceOp::Local { name, .. }) = op {
            return Ok(Some(Output::Context(self.context(name)?)));
        }
        let mut found = self.store.get_record(&key.to_hex())?.map(|r| Output::Fs(Snapshot { chain: r.chain }));
        if found.is_none() {
            found = self.load_imported(key).await.map(|chain| Output::Fs(Snapshot { chain }));
        }
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
                            result?;
                            return treediff::prune_unchanged_dirs(&upper, &lower);
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
                    treediff::diff_into(&rootfs, &before, &upper)?;
                    treediff::prune_unchanged_dirs(&upper, &lower)
                })
                .await
                .map_err(|err| WorkerError::Internal(err.to_string()))??;
                Ok(Output::Fs(self.finish_layer(&ctx.key, ctx.id, base, prepared, ctx.ignored_cache)?))
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
                        Some(Output::Context(c)) => {
                            let walk = self.walked(&c.root);
                            Some(SourceHandle::Context(c, walk))
                        }
                        Some(Output::Fs(s)) => Some(SourceHandle::Fs(self.view(&s))),
                        None => None,
                    })
                    .collect();
                let (actions, diff, limits) = (f.actions.clone(), prepared.diff(), self.archive_limits);
                tokio::task::spawn_blocking(move || -> Result<(), WorkerError> {
                    let writer = copy::FileWriter { base: &view, diff: &diff, limits };
                    for (action, src) in actions.iter().zip(&source_views) {
                        let src = src.as_ref().map(|s| match s {
                            SourceHandle::Context(dir, walk) => {
                                copy::CopySource::Context { dir, walk: walk.as_deref() }
                            }
                            SourceHandle::Fs(v) => copy::CopySource::Fs(v.clone()),
                        });
                        writer.apply(action, src.as_ref())?;
                    }
                    Ok(())
                })
                .await
                .map_err(|err| WorkerError::Internal(err.to_string()))??;
                Ok(Output::Fs(self.finish_layer(&ctx.key, ctx.id, base, prepared, ctx.ignored_cache)?))
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
    /// A context and the walk that gave the step its key.
    Context(Arc<ContextDir>, Option<Arc<ContextEntries>>),
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
