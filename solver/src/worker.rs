//! The contract between the solver and whatever executes ops.

use std::future::Future;

use crate::ir::{Op, OpId};
use crate::key::CacheKey;
use crate::progress::Progress;

/// Everything an op execution gets besides its inputs' results.
#[derive(Clone, Debug)]
pub struct ExecContext {
    /// The vertex.
    pub id: OpId,
    /// Its cache key: the worker stores its result under it.
    pub key: CacheKey,
    /// Where to report logs and status.
    pub progress: Progress,
    /// The cache was bypassed for this vertex (`--no-cache`, `--no-cache-filter`): its new
    /// result must replace one stored under the same key, not defer to it.
    pub ignored_cache: bool,
}

/// Executes ops and keeps their results. The solver decides what runs, when, and in parallel;
/// a worker knows how (sandbox, store, registry).
pub trait Worker: Send + Sync + 'static {
    /// The result of one vertex (e.g. a chain of snapshots).
    type Output: Clone + Send + Sync + 'static;
    /// What can go wrong.
    type Error: std::error::Error + Send + Sync + 'static;

    /// A digest of what `op` reads from outside the graph (build-context files), or `None` when
    /// the op id already covers all of its inputs. Called once per vertex, before anything
    /// executes.
    fn content_key(
        &self,
        id: OpId,
        op: &Op,
        progress: &Progress,
    ) -> impl Future<Output = Result<Option<[u8; 32]>, Self::Error>> + Send;

    /// [`Worker::content_key`], told the ops of `op`'s inputs (in [`Op::inputs`] order; `None`
    /// for one missing from the graph), so that a worker can digest only what `op` reads of an
    /// input that is itself outside the graph: the context paths a `COPY` names rather than the
    /// whole context. The solver calls this one; by default it is `content_key`.
    fn content_key_with_inputs(
        &self,
        id: OpId,
        op: &Op,
        inputs: &[Option<&Op>],
        progress: &Progress,
    ) -> impl Future<Output = Result<Option<[u8; 32]>, Self::Error>> + Send {
        let _ = inputs;
        self.content_key(id, op, progress)
    }

    /// The stored result for `key`, if the worker still has it. Sources that are always
    /// available (the build context) return their result here without executing anything.
    fn load(&self, key: &CacheKey, op: &Op) -> impl Future<Output = Result<Option<Self::Output>, Self::Error>> + Send;

    /// Executes `op` on its inputs' results (in [`Op::inputs`] order) and stores the result under
    /// `ctx.key`.
    fn exec(
        &self,
        ctx: ExecContext,
        op: &Op,
        inputs: Vec<Self::Output>,
    ) -> impl Future<Output = Result<Self::Output, Self::Error>> + Send;
}
