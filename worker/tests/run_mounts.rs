//! `RUN --mount` end to end through the real sandbox, on a busybox rootfs: secrets (file and
//! variable), a context bind, a cache mount that persists across steps, a tmpfs, an SSH agent. The secret must
//! appear nowhere in the store afterwards (layers, packed blobs, records, cache directories).
//!
//! This test binary is its own sandbox helper (`<exe> __sandbox`), hence `harness = false`. It
//! needs root (namespaces, overlay) and Debian's busybox-static, and skips, saying why, without.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rbuild_cache::{RecordLayer, SnapshotMeta, Store};
use rbuild_solver::ir::{CacheSharing, ExecOp, Input, Mount, MountKind, NetworkMode, Op, OpId, Platform, SecurityMode};
use rbuild_solver::{CacheKey, ExecContext, Progress, Worker};
use rbuild_worker::{ContextDir, HistoryEntry, IgnoreMatcher, ImageSpec, LocalWorker, Output, Secret, Snapshot};

const BUSYBOX: &str = "/bin/busybox";
const BASE_OP: OpId = OpId([1; 32]);
const VALUE: &str = "tok-5ecret-never-in-a-layer-31337";

fn main() {
    if std::env::args_os().nth(1).is_some_and(|a| a == rbuild_executor::HELPER_ARG) {
        rbuild_executor::sandbox_main();
    }
    if !nix::unistd::geteuid().is_root() {
        println!("skipping run_mounts: the sandbox needs root (namespaces, overlay mounts)");
        println!("0 passed, 0 failed, 1 skipped");
        return;
    }
    if !Path::new(BUSYBOX).exists() {
        println!("skipping run_mounts: {BUSYBOX} (Debian's busybox-static) is not installed");
        println!("0 passed, 0 failed, 1 skipped");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(secrets_caches_and_binds());
    println!("test run_mounts::secrets_caches_and_binds ... ok");
    println!("1 passed, 0 failed");
}

fn busybox_snapshot(store: &Store) -> Snapshot {
    let prepared = store.prepare_snapshot().unwrap();
    let root = prepared.diff();
    for dir in ["bin", "etc", "tmp"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "cp", "echo", "ls", "test", "["] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    store.commit_snapshot(prepared, "busybox-base", &SnapshotMeta::default()).unwrap();
    // Produced by a stand-in op, so the image commit can give it a history entry.
    Snapshot { chain: vec![RecordLayer { id: "busybox-base".into(), producer: Some(BASE_OP.to_hex()) }] }
}

fn exec_op(script: &str, mounts: Vec<Mount>) -> ExecOp {
    ExecOp {
        rootfs: Some(Input::of(OpId([1; 32]))),
        args: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        user: String::new(),
        network: NetworkMode::None,
        security: SecurityMode::Sandbox,
        platform: Platform::host(),
        mounts,
        extra_hosts: vec![],
        ulimits: vec![],
        shm_size: None,
    }
}

fn cache_mount() -> Mount {
    Mount {
        target: "/cache".into(),
        kind: MountKind::Cache {
            id: "build-cache".into(),
            sharing: CacheSharing::Locked,
            source: None,
            selector: "/".into(),
            readonly: false,
            uid: 0,
            gid: 0,
            mode: 0o755,
        },
    }
}

fn secret(target: &str, env: Option<&str>) -> Mount {
    Mount {
        target: target.into(),
        kind: MountKind::Secret {
            id: "tok".into(),
            required: true,
            env: env.map(Into::into),
            uid: 0,
            gid: 0,
            mode: 0o400,
        },
    }
}

async fn run(w: &LocalWorker, op: ExecOp, inputs: Vec<Output>, n: u8) -> (OpId, Snapshot) {
    let op = Op::Exec(op);
    let id = op.id();
    let ctx = ExecContext {
        id,
        key: CacheKey::derive(&id, &[], Some(&[n; 32])),
        progress: Progress::discard(id),
        ignored_cache: false,
    };
    match w.exec(ctx, &op, inputs).await {
        Ok(Output::Fs(s)) => (id, s),
        Ok(other) => panic!("unexpected output {other:?}"),
        Err(e) => panic!("RUN failed: {e} ({e:?})"),
    }
}

fn paths_in(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap().path().strip_prefix(root).unwrap().display().to_string())
        .collect();
    v.sort();
    v
}

fn files_containing(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter(|e| std::fs::read(e.path()).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)))
        .map(|e| e.path().to_owned())
        .collect()
}

async fn secrets_caches_and_binds() {
    let t = tempfile::tempdir().unwrap();
    let ctx_dir = t.path().join("ctx");
    std::fs::create_dir_all(&ctx_dir).unwrap();
    std::fs::write(ctx_dir.join("hello"), "from the context\n").unwrap();
    let ctx = Arc::new(ContextDir { root: ctx_dir, ignore: IgnoreMatcher::default() });
    let store = Arc::new(Store::open(t.path().join("store")).unwrap());
    let registry = rbuild_registry::Client::new(rbuild_registry::ClientOptions::default()).unwrap();
    let exe = std::env::current_exe().unwrap();
    let agent = t.path().join("agent.sock");
    let _agent = std::os::unix::net::UnixListener::bind(&agent).unwrap();
    let w = LocalWorker::new(store.clone(), registry, exe, HashMap::from([("context".to_owned(), ctx.clone())]))
        .with_secrets(HashMap::from([("tok".to_owned(), Secret::new(VALUE))]))
        .with_ssh(HashMap::from([("default".to_owned(), agent.clone())]));
    let base = busybox_snapshot(&store);

    let script = r#"test "$(cat /run/secrets/tok)" = "$TOKEN" && test -n "$TOKEN" \
        && cat /ctx/hello > /copied && echo warm > /cache/state && echo scratch > /tmp/t \
        && test "$SSH_AUTH_SOCK" = /run/buildkit/ssh_agent.0 && test -S "$SSH_AUTH_SOCK""#;
    let bind = Mount {
        target: "/ctx".into(),
        kind: MountKind::Bind { source: Input::of(OpId([2; 32])), selector: "/".into(), readonly: true },
    };
    let tmpfs = Mount { target: "/tmp".into(), kind: MountKind::Tmpfs { size: None } };
    let ssh = Mount {
        target: "/run/buildkit/ssh_agent.0".into(),
        kind: MountKind::Ssh { id: "default".into(), required: true, uid: 0, gid: 0, mode: 0o600 },
    };
    let mounts = vec![secret("/run/secrets/tok", None), secret("", Some("TOKEN")), bind, cache_mount(), tmpfs, ssh];
    let op = exec_op(script, mounts);
    let (first_id, first) = run(&w, op, vec![Output::Fs(base.clone()), Output::Context(ctx.clone())], 1).await;
    let layer = store.snapshot_diff(&first.chain.last().unwrap().id);
    assert_eq!(paths_in(&layer), ["copied"], "mount points never reach the layer");
    assert_eq!(std::fs::read_to_string(layer.join("copied")).unwrap(), "from the context\n");

    // The cache persists into the next step; its contents never reach a layer.
    let (second_id, second) =
        run(&w, exec_op("cp /cache/state /from-cache", vec![cache_mount()]), vec![Output::Fs(first.clone())], 2).await;
    let layer2 = store.snapshot_diff(&second.chain.last().unwrap().id);
    assert_eq!(paths_in(&layer2), ["from-cache"]);
    assert_eq!(std::fs::read_to_string(layer2.join("from-cache")).unwrap(), "warm\n");

    // Pack the layers into an image: nothing in the store holds the secret.
    let spec = ImageSpec {
        base: None,
        runtime: Default::default(),
        history: [BASE_OP, first_id, second_id]
            .iter()
            .map(|id| HistoryEntry {
                created_by: "RUN --mount=type=secret,id=tok ...".into(),
                comment: None,
                layer_op: Some(*id),
            })
            .collect(),
        platform: Platform::host(),
        author: None,
        extra_config: Default::default(),
        compression: Default::default(),
        force_compression: false,
        oci_mediatypes: true,
        clamp_mtimes: None,
        annotations: Default::default(),
        created: None,
    };
    let built = w.commit_image(&second, &spec).await.unwrap();
    assert!(store.has_blob(built.manifest.digest()).unwrap());
    let leaks = files_containing(store.root(), VALUE.as_bytes());
    assert!(leaks.is_empty(), "the secret leaked into {leaks:?}");
    // And the runtime directories that held it are gone.
    let shm: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let mine = format!("rbuild-run-{}-", std::process::id());
    assert!(!shm.iter().any(|n| n.starts_with(&mine)), "{shm:?}");
}
