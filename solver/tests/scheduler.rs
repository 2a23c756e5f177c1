//! Scheduler behaviour against a fake worker: parallelism, dedup, cache short-circuit, failure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rbuild_solver::ir::{
    ExecOp, FileAction, FileOp, GraphBuilder, Input, NetworkMode, Op, OpId, Platform, SecurityMode, SourceOp,
    VertexMeta,
};
use rbuild_solver::{CacheKey, ExecContext, Progress, SolveError, SolveOptions, Solver, Worker};

#[derive(Debug, thiserror::Error)]
#[error("boom in {0}")]
struct Boom(String);

/// Output: the list of commands run to produce the filesystem.
#[derive(Default)]
struct Fake {
    stored: Mutex<HashMap<CacheKey, Vec<String>>>,
    executed: Mutex<Vec<String>>,
    delay: Duration,
}

fn cmd(op: &Op) -> String {
    match op {
        Op::Exec(e) => e.args.join(" "),
        Op::Source(_) => "source".into(),
        _ => "file".into(),
    }
}

impl Worker for Fake {
    type Output = Vec<String>;
    type Error = Boom;

    async fn content_key(&self, _: OpId, _: &Op, _: &Progress) -> Result<Option<[u8; 32]>, Boom> {
        Ok(None)
    }

    async fn load(&self, key: &CacheKey, _: &Op) -> Result<Option<Vec<String>>, Boom> {
        Ok(self.stored.lock().unwrap().get(key).cloned())
    }

    async fn exec(&self, ctx: ExecContext, op: &Op, inputs: Vec<Vec<String>>) -> Result<Vec<String>, Boom> {
        let c = cmd(op);
        if c.contains("fail") {
            return Err(Boom(c));
        }
        tokio::time::sleep(self.delay).await;
        self.executed.lock().unwrap().push(c.clone());
        let mut out: Vec<String> = inputs.concat();
        out.push(c);
        self.stored.lock().unwrap().insert(ctx.key, out.clone());
        Ok(out)
    }
}

fn run(b: &mut GraphBuilder, root: Option<OpId>, c: &str) -> OpId {
    b.add(
        Op::Exec(ExecOp {
            rootfs: root.map(Input::of),
            args: vec![c.into()],
            env: vec![],
            cwd: "/".into(),
            user: String::new(),
            network: NetworkMode::Default,
            security: SecurityMode::Sandbox,
            platform: Platform::host(),
            mounts: vec![],
            extra_hosts: vec![],
            ulimits: vec![],
            shm_size: None,
        }),
        VertexMeta { name: format!("RUN {c}"), ..Default::default() },
    )
    .unwrap()
}

fn source(b: &mut GraphBuilder) -> OpId {
    b.add(
        Op::Source(SourceOp::Image { reference: "busybox".into(), digest: None, platform: Platform::host() }),
        VertexMeta::default(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_branches_run_in_parallel_and_shared_input_runs_once() {
    let mut b = GraphBuilder::new();
    let base = source(&mut b);
    let branches: Vec<OpId> = (0..4).map(|i| run(&mut b, Some(base), &format!("sleep{i}"))).collect();
    let unused = run(&mut b, Some(base), "not needed");
    let actions = branches
        .iter()
        .map(|br| FileAction::Copy {
            src: Input::of(*br),
            src_paths: vec!["/out".into()],
            dest: "/".into(),
            chown: None,
            chmod: None,
            exclude: vec![],
            parents: false,
            unpack_archives: false,
        })
        .collect();
    let fan_in = b.add(Op::File(FileOp { base: Some(Input::of(base)), actions }), VertexMeta::default()).unwrap();
    let g = Arc::new(b.build());
    let worker = Arc::new(Fake { delay: Duration::from_millis(300), ..Default::default() });
    let solver = Solver::new(worker.clone(), SolveOptions { max_parallelism: 4, no_cache: false });
    let t = Instant::now();
    solver.solve(g, Input::of(fan_in), None).await.unwrap();
    let elapsed = t.elapsed();
    let ran = worker.executed.lock().unwrap().clone();
    // The shared base ran once, each branch once, the unused vertex never.
    assert_eq!(ran.iter().filter(|c| *c == "source").count(), 1);
    assert_eq!(ran.len(), 6, "{ran:?}");
    assert!(!ran.contains(&"not needed".to_string()));
    let _ = unused;
    // source + 4 overlapping branches + fan-in: 3 x 300 ms, not 6 x 300 ms.
    assert!(elapsed < Duration::from_millis(1500), "branches ran serially: {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_targets_share_vertices_and_run_together() {
    // Two platforms' targets over one shared step: the shared step runs once, the two
    // per-platform steps overlap, results come back in target order.
    let mut b = GraphBuilder::new();
    let base = source(&mut b);
    let shared = run(&mut b, Some(base), "compile");
    let amd = run(&mut b, Some(shared), "package-amd64");
    let arm = run(&mut b, Some(shared), "package-arm64");
    let g = Arc::new(b.build());
    let worker = Arc::new(Fake { delay: Duration::from_millis(500), ..Default::default() });
    let solver = Solver::new(worker.clone(), SolveOptions { max_parallelism: 4, no_cache: false });
    let t = Instant::now();
    let out = solver.solve_all(g.clone(), &[Input::of(amd), Input::of(arm)], None).await.unwrap();
    let elapsed = t.elapsed();
    assert_eq!(out[0], ["source", "compile", "package-amd64"]);
    assert_eq!(out[1], ["source", "compile", "package-arm64"]);
    let ran = worker.executed.lock().unwrap().clone();
    assert_eq!(ran.iter().filter(|c| *c == "compile").count(), 1, "{ran:?}");
    assert_eq!(ran.len(), 4, "{ran:?}");
    // source, compile, then both packages at once: 3 x 500 ms, not 4 x 500 ms.
    assert!(elapsed < Duration::from_millis(1900), "targets ran one after the other: {elapsed:?}");

    // A failing target fails the whole solve, naming its vertex.
    let mut b = GraphBuilder::new();
    let base = source(&mut b);
    let ok = run(&mut b, Some(base), "fine");
    let bad = run(&mut b, Some(base), "fail here");
    let err = solver.solve_all(Arc::new(b.build()), &[Input::of(ok), Input::of(bad)], None).await.unwrap_err();
    assert!(matches!(err, SolveError::Vertex { ref name, .. } if name == "RUN fail here"), "{err:?}");
}

#[tokio::test]
async fn cached_target_executes_nothing_upstream() {
    let mut b = GraphBuilder::new();
    let base = source(&mut b);
    let a = run(&mut b, Some(base), "a");
    let t = run(&mut b, Some(a), "b");
    let g = Arc::new(b.build());
    let worker = Arc::new(Fake::default());
    let solver = Solver::new(worker.clone(), SolveOptions::default());
    solver.solve(g.clone(), Input::of(t), None).await.unwrap();
    assert_eq!(worker.executed.lock().unwrap().len(), 3);
    worker.executed.lock().unwrap().clear();
    let out = solver.solve(g.clone(), Input::of(t), None).await.unwrap();
    assert_eq!(out, vec!["source", "a", "b"]);
    assert!(worker.executed.lock().unwrap().is_empty());

    // --no-cache re-executes every non-source vertex.
    let solver = Solver::new(worker.clone(), SolveOptions { no_cache: true, ..Default::default() });
    solver.solve(g, Input::of(t), None).await.unwrap();
    assert_eq!(*worker.executed.lock().unwrap(), vec!["a", "b"]);
}

#[tokio::test]
async fn failure_names_the_vertex() {
    let mut b = GraphBuilder::new();
    let base = source(&mut b);
    let a = run(&mut b, Some(base), "please fail");
    let t = run(&mut b, Some(a), "after");
    let g = Arc::new(b.build());
    let worker = Arc::new(Fake::default());
    let err = Solver::new(worker.clone(), SolveOptions::default()).solve(g, Input::of(t), None).await.unwrap_err();
    match err {
        SolveError::Vertex { name, source, .. } => {
            assert_eq!(name, "RUN please fail");
            assert_eq!(source.to_string(), "boom in please fail");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!worker.executed.lock().unwrap().contains(&"after".to_string()));
}

#[tokio::test]
async fn a_bypassing_vertex_runs_even_under_a_cached_reader_whose_result_stands() {
    let mut b = GraphBuilder::new();
    let base = source(&mut b);
    let a = run(&mut b, Some(base), "a");
    let t = run(&mut b, Some(a), "b");
    let g = b.build();
    let worker = Arc::new(Fake::default());
    let solver = Solver::new(worker.clone(), SolveOptions::default());
    let g = Arc::new(g);
    solver.solve(g.clone(), Input::of(t), None).await.unwrap();
    worker.executed.lock().unwrap().clear();

    // `--no-cache-filter` marks `a`: it runs again although `b` is cached, and `b` (same key)
    // keeps its stored result.
    let mut marked = (*g).clone();
    assert!(marked.set_ignore_cache(&a));
    let out = solver.solve(Arc::new(marked), Input::of(t), None).await.unwrap();
    assert_eq!(*worker.executed.lock().unwrap(), vec!["a"]);
    assert_eq!(out, vec!["source", "a", "b"]);
}

#[tokio::test]
async fn prepare_derives_every_key_before_anything_runs() {
    let mut b = GraphBuilder::new();
    let base = source(&mut b);
    let a = run(&mut b, Some(base), "a");
    let t = run(&mut b, Some(a), "b");
    let g = Arc::new(b.build());
    let worker = Arc::new(Fake::default());
    let solver = Solver::new(worker.clone(), SolveOptions::default());
    let prepared = solver.prepare(g, &[Input::of(t)], None).await.unwrap();
    assert!(worker.executed.lock().unwrap().is_empty());
    assert_eq!(prepared.order(), [base, a, t]);
    let keys = prepared.keys();
    assert_eq!(keys[&t].inputs, vec![keys[&a].key]);
    assert_eq!(keys[&a].inputs, vec![keys[&base].key]);
    assert!(keys[&base].inputs.is_empty() && keys[&base].content.is_none());
    // Running what was prepared builds it; the keys are the ones the results are stored under.
    solver.run(&prepared, None).await.unwrap();
    assert!(worker.stored.lock().unwrap().contains_key(&keys[&t].key));
}
