//! Runs the part of a graph a target needs, with every independent vertex in parallel.
//!
//! Keys first: every needed vertex's cache key is derived before anything executes (sources'
//! content digests are computed concurrently). Then the target is resolved top-down: a vertex
//! whose key hits the cache is done without looking at its inputs at all; otherwise its inputs
//! are resolved concurrently (each as its own task) and it executes once they are all there.
//! Each vertex runs at most once per build, whoever asks for it first; executions are bounded
//! by a semaphore (`max_parallelism`). The first failure cancels executions that have not
//! started yet; running ones finish (a sandboxed step cannot be torn down half-way safely).

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::try_join_all;
use petgraph::graphmap::DiGraphMap;
use tokio::sync::{mpsc, OnceCell, Semaphore};

use crate::ir::{Graph, GraphError, Input, Op, OpId, SourceSpan};
use crate::key::CacheKey;
use crate::progress::{Progress, ProgressEvent};
use crate::worker::{ExecContext, Worker};

/// How a solve runs.
#[derive(Clone, Debug)]
pub struct SolveOptions {
    /// Most vertices executing at once. The default is four per CPU, at least 8: a step that
    /// sleeps or waits on the network (a package download) must not hold a core hostage, and
    /// CPU-heavy work inside steps (compression, hashing) has its own core-sized pools.
    pub max_parallelism: usize,
    /// Ignore cached results of every non-source vertex (`--no-cache`).
    pub no_cache: bool,
}

impl Default for SolveOptions {
    fn default() -> Self {
        SolveOptions {
            max_parallelism: std::thread::available_parallelism().map_or(8, |n| (n.get() * 4).max(8)),
            no_cache: false,
        }
    }
}

/// Why a solve failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SolveError<E: std::error::Error + 'static> {
    /// The graph itself is invalid.
    #[error("invalid build graph")]
    Graph(#[from] GraphError),
    /// A vertex failed.
    #[error("{name}")]
    Vertex {
        /// The failing vertex.
        id: OpId,
        /// Its display name (`[2/4] RUN make`).
        name: String,
        /// Where it comes from in the Dockerfile.
        span: Option<SourceSpan>,
        /// What the worker reported.
        #[source]
        source: Arc<E>,
    },
    /// The build was cancelled before this vertex could start (another one failed).
    #[error("cancelled")]
    Cancelled,
}

impl<E: std::error::Error + 'static> Clone for SolveError<E> {
    fn clone(&self) -> Self {
        match self {
            // GraphError is produced before any sharing happens; re-validating is not needed to
            // clone it, so report it as a cancellation of the shared copy.
            SolveError::Graph(_) | SolveError::Cancelled => SolveError::Cancelled,
            SolveError::Vertex { id, name, span, source } => {
                SolveError::Vertex { id: *id, name: name.clone(), span: span.clone(), source: source.clone() }
            }
        }
    }
}

type VertexResult<W> = Result<<W as Worker>::Output, SolveError<<W as Worker>::Error>>;
type BoxFut<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Solves build graphs with a worker.
#[derive(Debug)]
pub struct Solver<W: Worker> {
    worker: Arc<W>,
    opts: SolveOptions,
}

struct Run<W: Worker> {
    worker: Arc<W>,
    graph: Arc<Graph>,
    opts: SolveOptions,
    keys: HashMap<OpId, CacheKey>,
    /// Position of each needed vertex in dependency order.
    order: HashMap<OpId, usize>,
    cells: HashMap<OpId, Arc<OnceCell<VertexResult<W>>>>,
    permits: Semaphore,
    cancelled: AtomicBool,
    /// Vertices already reported (executed, loaded, or shown as cached under a cached reader).
    reported: std::sync::Mutex<HashSet<OpId>>,
    /// Vertices built on a vertex that bypasses the cache: they look up their own result only
    /// once their inputs are done, so a cached reader cannot skip the bypassing vertex.
    after_bypass: HashSet<OpId>,
    tx: Option<mpsc::UnboundedSender<ProgressEvent>>,
}

impl<W: Worker> Solver<W> {
    /// A solver over `worker`.
    pub fn new(worker: Arc<W>, opts: SolveOptions) -> Solver<W> {
        Solver { worker, opts }
    }

    /// Builds `target` and returns its result. Progress goes to `tx` when given.
    pub async fn solve(
        &self,
        graph: Arc<Graph>,
        target: Input,
        tx: Option<mpsc::UnboundedSender<ProgressEvent>>,
    ) -> VertexResult<W> {
        let mut out = self.solve_all(graph, &[target], tx).await?;
        out.pop().ok_or(SolveError::Cancelled)
    }

    /// Builds every target of `targets` in one run (a multi-platform build: one target per
    /// platform) and returns their results in the same order. A vertex several targets need
    /// (a build-context source, a stage that runs on the build platform for every target)
    /// runs once; the targets' other vertices run in parallel.
    pub async fn solve_all(
        &self,
        graph: Arc<Graph>,
        targets: &[Input],
        tx: Option<mpsc::UnboundedSender<ProgressEvent>>,
    ) -> Result<Vec<W::Output>, SolveError<W::Error>> {
        let prepared = self.prepare(graph, targets, tx.as_ref()).await?;
        self.run(&prepared, tx).await
    }

    /// Validates the graph and derives the cache key of every vertex `targets` need, executing
    /// nothing: what [`Solver::run`] then builds, and what a caller needs to explain cache
    /// misses or export the cache. Content digests (the build context) report progress to `tx`.
    pub async fn prepare(
        &self,
        graph: Arc<Graph>,
        targets: &[Input],
        tx: Option<&mpsc::UnboundedSender<ProgressEvent>>,
    ) -> Result<Prepared, SolveError<W::Error>> {
        graph.validate()?;
        let roots: Vec<OpId> = targets.iter().map(|t| t.op).collect();
        let order = needed_in_order(&graph, &roots)?;
        let keys = self.derive_keys(&graph, &order, tx).await?;
        Ok(Prepared { graph, targets: targets.to_vec(), order, keys })
    }

    /// Builds prepared targets and returns their results, in the targets' order. Progress goes
    /// to `tx` when given.
    pub async fn run(
        &self,
        prepared: &Prepared,
        tx: Option<mpsc::UnboundedSender<ProgressEvent>>,
    ) -> Result<Vec<W::Output>, SolveError<W::Error>> {
        let order = &prepared.order;
        let keys = prepared.keys.iter().map(|(id, k)| (*id, k.key)).collect();
        let cells = order.iter().map(|id| (*id, Arc::new(OnceCell::new()))).collect();
        let graph = &prepared.graph;
        let bypasses = |id: &OpId| {
            !matches!(graph.op(id), Some(Op::Source(_)))
                && (self.opts.no_cache || graph.meta(id).is_some_and(|m| m.ignore_cache))
        };
        let mut after_bypass = HashSet::new();
        for id in order {
            let inputs = graph.op(id).map(Op::inputs).unwrap_or_default();
            if inputs.iter().any(|i| bypasses(&i.op) || after_bypass.contains(&i.op)) {
                after_bypass.insert(*id);
            }
        }
        let order = order.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let run = Arc::new(Run {
            worker: self.worker.clone(),
            graph: prepared.graph.clone(),
            opts: self.opts.clone(),
            keys,
            order,
            cells,
            permits: Semaphore::new(self.opts.max_parallelism.max(1)),
            cancelled: AtomicBool::new(false),
            reported: std::sync::Mutex::new(HashSet::new()),
            after_bypass,
            tx,
        });
        // Each target on its own task, so that one platform's steps do not wait for another's.
        // The first failure is returned at once, whichever target it belongs to.
        let handles = prepared.targets.iter().map(|t| {
            let task = tokio::spawn(run.clone().resolve(t.op));
            async move { task.await.unwrap_or(Err(SolveError::Cancelled)) }
        });
        try_join_all(handles).await
    }

    /// The cache key of every vertex in `order` (inputs first), with what it was derived from.
    async fn derive_keys(
        &self,
        graph: &Graph,
        order: &[OpId],
        tx: Option<&mpsc::UnboundedSender<ProgressEvent>>,
    ) -> Result<HashMap<OpId, KeyIngredients>, SolveError<W::Error>> {
        let contents = try_join_all(order.iter().map(|id| {
            let op = graph.op(id);
            let progress = Progress::new(*id, tx.cloned());
            async move {
                let Some(op) = op else { return Ok(None) };
                let inputs: Vec<Option<&Op>> = op.inputs().iter().map(|i| graph.op(&i.op)).collect();
                self.worker
                    .content_key_with_inputs(*id, op, &inputs, &progress)
                    .await
                    .map_err(|e| vertex_error(graph, *id, e))
            }
        }))
        .await?;
        let mut keys: HashMap<OpId, KeyIngredients> = HashMap::with_capacity(order.len());
        for (id, content) in order.iter().zip(contents) {
            let Some(op) = graph.op(id) else { continue };
            let inputs: Vec<CacheKey> = op.inputs().iter().filter_map(|i| keys.get(&i.op).map(|k| k.key)).collect();
            let key = CacheKey::derive(id, &inputs, content.as_ref());
            keys.insert(*id, KeyIngredients { key, inputs, content });
        }
        Ok(keys)
    }
}

/// What a vertex's cache key was derived from (besides its op id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyIngredients {
    /// The key.
    pub key: CacheKey,
    /// Its inputs' keys, in [`Op::inputs`] order.
    pub inputs: Vec<CacheKey>,
    /// The digest of what it reads from outside the graph (the build context), if anything.
    pub content: Option<[u8; 32]>,
}

/// Targets whose needed vertices all have their cache keys ([`Solver::prepare`]).
#[derive(Debug, Clone)]
pub struct Prepared {
    graph: Arc<Graph>,
    targets: Vec<Input>,
    order: Vec<OpId>,
    keys: HashMap<OpId, KeyIngredients>,
}

impl Prepared {
    /// The graph.
    pub fn graph(&self) -> &Arc<Graph> {
        &self.graph
    }

    /// The targets.
    pub fn targets(&self) -> &[Input] {
        &self.targets
    }

    /// The needed vertices, inputs before the vertices that read them.
    pub fn order(&self) -> &[OpId] {
        &self.order
    }

    /// The key of each needed vertex and what it was derived from.
    pub fn keys(&self) -> &HashMap<OpId, KeyIngredients> {
        &self.keys
    }

    /// The key of a needed vertex.
    pub fn key(&self, id: &OpId) -> Option<CacheKey> {
        self.keys.get(id).map(|k| k.key)
    }
}

/// The vertices `targets` depend on (themselves included), inputs before readers.
fn needed_in_order(graph: &Graph, targets: &[OpId]) -> Result<Vec<OpId>, GraphError> {
    let mut g: DiGraphMap<OpId, ()> = DiGraphMap::new();
    let mut stack = targets.to_vec();
    for t in targets {
        g.add_node(*t);
    }
    while let Some(id) = stack.pop() {
        let op = graph.op(&id).ok_or(GraphError::MissingInput { op: id, input: id })?;
        for input in op.inputs() {
            if !g.contains_node(input.op) {
                stack.push(input.op);
            }
            g.add_edge(input.op, id, ());
        }
    }
    // The builder only accepts inputs that already exist, so a cycle cannot be built; a graph
    // that has one anyway is reported as invalid.
    petgraph::algo::toposort(&g, None).map_err(|c| GraphError::MissingInput { op: c.node_id(), input: c.node_id() })
}

fn vertex_error<E: std::error::Error + 'static>(graph: &Graph, id: OpId, e: E) -> SolveError<E> {
    let meta = graph.meta(&id);
    SolveError::Vertex {
        id,
        name: meta.map(|m| m.name.clone()).unwrap_or_else(|| id.to_string()),
        span: meta.and_then(|m| m.span.clone()),
        source: Arc::new(e),
    }
}

impl<W: Worker> Run<W> {
    fn resolve(self: Arc<Self>, id: OpId) -> BoxFut<VertexResult<W>> {
        Box::pin(async move {
            let Some(cell) = self.cells.get(&id).cloned() else {
                return Err(SolveError::Cancelled);
            };
            cell.get_or_init(|| self.clone().compute(id)).await.clone()
        })
    }

    async fn compute(self: Arc<Self>, id: OpId) -> VertexResult<W> {
        let graph = self.graph.clone();
        let Some(op) = graph.op(&id) else { return Err(SolveError::Cancelled) };
        let key = self.keys.get(&id).copied().unwrap_or(CacheKey([0; 32]));
        let name = graph.meta(&id).map(|m| m.name.clone()).unwrap_or_default();
        let progress = Progress::new(id, self.tx.clone());
        let is_source = matches!(op, Op::Source(_));
        let ignore_cache = !is_source && (self.opts.no_cache || graph.meta(&id).is_some_and(|m| m.ignore_cache));

        let after_bypass = self.after_bypass.contains(&id);
        if !ignore_cache && !after_bypass {
            match self.worker.load(&key, op).await {
                Ok(Some(out)) => {
                    self.report_cached(id);
                    return Ok(out);
                }
                Ok(None) => {}
                Err(e) => return Err(vertex_error(&graph, id, e)),
            }
        }

        // Inputs concurrently, each on its own task.
        let handles: Vec<_> = op.inputs().into_iter().map(|i| tokio::spawn(self.clone().resolve(i.op))).collect();
        let mut inputs = Vec::with_capacity(handles.len());
        for h in handles {
            match h.await {
                Ok(Ok(out)) => inputs.push(out),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(SolveError::Cancelled),
            }
        }

        if after_bypass && !ignore_cache {
            // The bypassing inputs ran again; this vertex's key did not change, so its stored
            // result still stands.
            match self.worker.load(&key, op).await {
                Ok(Some(out)) => {
                    self.report_cached(id);
                    return Ok(out);
                }
                Ok(None) => {}
                Err(e) => return Err(vertex_error(&graph, id, e)),
            }
        }

        let _permit = self.permits.acquire().await.map_err(|_| SolveError::Cancelled)?;
        if self.cancelled.load(Ordering::SeqCst) {
            return Err(SolveError::Cancelled);
        }
        self.mark_reported(id);
        progress.send(ProgressEvent::Started { id, name });
        let started = Instant::now();
        let ctx = ExecContext { id, key, progress: progress.clone(), ignored_cache: ignore_cache };
        let result = self.worker.exec(ctx, op, inputs).await;
        let error = result.as_ref().err().map(|e| error_chain(e));
        progress.send(ProgressEvent::Completed { id, duration: started.elapsed(), error });
        result.map_err(|e| {
            self.cancelled.store(true, Ordering::SeqCst);
            vertex_error(&graph, id, e)
        })
    }
}

impl<W: Worker> Run<W> {
    /// Marks `id` as reported; false if it already was.
    fn mark_reported(&self, id: OpId) -> bool {
        self.reported.lock().map(|mut r| r.insert(id)).unwrap_or(false)
    }

    /// Reports `id` and everything it was built from as cached: a cache hit makes its inputs
    /// unnecessary, but users expect to see every step of a cached build (as BuildKit shows
    /// them), not just the last one.
    fn report_cached(&self, id: OpId) {
        let mut stack = vec![id];
        let mut shown = Vec::new();
        while let Some(v) = stack.pop() {
            if !self.cells.contains_key(&v) || !self.mark_reported(v) {
                continue;
            }
            shown.push(v);
            if let Some(op) = self.graph.op(&v) {
                stack.extend(op.inputs().iter().map(|i| i.op));
            }
        }
        // Oldest first, as they would have run.
        shown.sort_by_key(|v| self.position(v));
        for v in shown {
            let name = self.graph.meta(&v).map(|m| m.name.clone()).unwrap_or_default();
            Progress::new(v, self.tx.clone()).send(ProgressEvent::Cached { id: v, name });
        }
    }

    fn position(&self, id: &OpId) -> usize {
        self.order.get(id).copied().unwrap_or(usize::MAX)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
