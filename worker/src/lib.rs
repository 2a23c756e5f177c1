//! rbuild's local worker: implements the solver's ops on this machine with the store
//! (`rbuild-cache`), the sandbox (`rbuild-executor`), the registry client and the layer code.
//!
//! Every filesystem result is a [`Snapshot`]: a chain of overlay-format diff directories in the
//! store, lowest first. A RUN mounts the chain as overlay lower dirs and keeps the upper dir as
//! its new layer; COPY and WORKDIR write their new layer directly (no mount); a pulled image is
//! its layers unpacked once, content-addressed by diff id, shared by every build.

mod context;
mod copy;
mod error;
mod exec;
mod fsmeta;
mod image;
mod merged;
mod pull;
mod users;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use rbuild_cache::{Record, RecordLayer, SnapshotMeta, Store};
use rbuild_solver::ir::{FileAction, Op, OpId, SourceOp};
use rbuild_solver::{CacheKey, ExecContext, Progress, Worker};

pub use context::{ContextDir, IgnoreMatcher, PatternError};
pub use error::WorkerError;
pub use image::{HistoryEntry, ImageSpec};
pub use merged::MergedView;

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
        LocalWorker { store, registry, sandbox_exe, contexts }
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn context(&self, name: &str) -> Result<Arc<ContextDir>, WorkerError> {
        self.contexts.get(name).cloned().ok_or_else(|| WorkerError::Internal(format!("no local context named {name:?}")))
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

    async fn content_key(&self, _id: OpId, op: &Op, _progress: &Progress) -> Result<Option<[u8; 32]>, WorkerError> {
        let Op::Source(SourceOp::Local { name, .. }) = op else { return Ok(None) };
        let ctx = self.context(name)?;
        let root = ctx.root.clone();
        let digest = tokio::task::spawn_blocking(move || ctx.content_digest())
            .await
            .map_err(|e| WorkerError::Internal(e.to_string()))?
            .map_err(|source| WorkerError::Io { path: root, source })?;
        Ok(Some(digest))
    }

    async fn load(&self, key: &CacheKey, op: &Op) -> Result<Option<Output>, WorkerError> {
        if let Op::Source(SourceOp::Local { name, .. }) = op {
            return Ok(Some(Output::Context(self.context(name)?)));
        }
        Ok(self.store.get_record(&key.to_hex())?.map(|r| Output::Fs(Snapshot { chain: r.chain })))
    }

    async fn exec(&self, ctx: ExecContext, op: &Op, inputs: Vec<Output>) -> Result<Output, WorkerError> {
        match op {
            Op::Source(SourceOp::Image { reference, digest, platform }) => {
                let chain = pull::pull(self, reference, digest.as_deref(), platform, &ctx.progress).await?;
                self.store.put_record(&ctx.key.to_hex(), &Record { chain: chain.clone() })?;
                Ok(Output::Fs(Snapshot { chain }))
            }
            Op::Source(_) => Err(WorkerError::Internal("unsupported source".into())),
            Op::Exec(e) => {
                let base = if e.rootfs.is_some() { Self::fs_input(&inputs, 0)? } else { Snapshot::default() };
                let prepared = self.store.prepare_snapshot()?;
                let lower = self.lower_dirs(&base);
                let (upper, scratch) = (prepared.diff(), prepared.work());
                let (op2, exe, progress) = (e.clone(), self.sandbox_exe.clone(), ctx.progress.clone());
                tokio::task::spawn_blocking(move || exec::run(&op2, lower, upper, scratch, &exe, &progress))
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
                let (actions, diff) = (f.actions.clone(), prepared.diff());
                tokio::task::spawn_blocking(move || -> Result<(), WorkerError> {
                    let writer = copy::FileWriter { base: &view, diff: &diff };
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
