use super::*;
use crate::context::IgnoreMatcher;
use rbuild_solver::ir::{CacheSharing, Input, Mount, NetworkMode, OpId, Platform, SecurityMode};
use std::os::unix::fs::PermissionsExt;

const VALUE: &str = "s3cr3t-VALUE-9f8e7d";

struct Fx {
    t: tempfile::TempDir,
    store_root: PathBuf,
    tmp: PathBuf,
    secrets: HashMap<String, Secret>,
    ssh: HashMap<String, PathBuf>,
}

impl Fx {
    fn new() -> Fx {
        let t = tempfile::tempdir().unwrap();
        let (store_root, tmp) = (t.path().join("store"), t.path().join("store/tmp"));
        std::fs::create_dir_all(&tmp).unwrap();
        let secrets = HashMap::from([("tok".to_owned(), Secret::new(VALUE))]);
        Fx { t, store_root, tmp, secrets, ssh: HashMap::new() }
    }

    fn env(&self) -> MountEnv<'_> {
        MountEnv { store_root: &self.store_root, tmp: &self.tmp, secrets: &self.secrets, ssh: &self.ssh }
    }

    fn context(&self, ignore: &[&str]) -> Arc<ContextDir> {
        let root = self.t.path().join("ctx");
        std::fs::create_dir_all(root.join("src")).unwrap();
        std::fs::write(root.join("src/main.c"), "int main;").unwrap();
        std::fs::write(root.join("src/debug.log"), "log").unwrap();
        let patterns: Vec<String> = ignore.iter().map(|s| s.to_string()).collect();
        Arc::new(ContextDir { root, ignore: IgnoreMatcher::new(&patterns).unwrap() })
    }
}

fn op(mounts: Vec<Mount>) -> ExecOp {
    ExecOp {
        rootfs: None,
        args: vec!["true".into()],
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

fn input() -> Input {
    Input::of(OpId([9; 32]))
}

fn bind(target: &str, selector: &str, readonly: bool) -> Mount {
    Mount { target: target.into(), kind: MountKind::Bind { source: input(), selector: selector.into(), readonly } }
}

fn secret(target: &str, id: &str, required: bool, env: Option<&str>) -> Mount {
    Mount {
        target: target.into(),
        kind: MountKind::Secret { id: id.into(), required, env: env.map(Into::into), uid: 0, gid: 0, mode: 0o400 },
    }
}

fn source_of(kind: &PlannedKind) -> &Path {
    match kind {
        PlannedKind::Bind { source, .. } | PlannedKind::File { source, .. } => source,
        PlannedKind::Tmpfs { .. } => panic!("no source"),
    }
}

#[test]
fn context_binds_are_direct_only_when_read_only_and_unfiltered() {
    let fx = Fx::new();
    let plain = fx.context(&[]);
    let filtered = fx.context(&["**/*.log"]);
    let o = op(vec![bind("/src", "src", true), bind("/rw", "src", false), bind("/f", "src", true)]);
    let sources = [
        Some(MountSource::Context(plain.clone())),
        Some(MountSource::Context(plain.clone())),
        Some(MountSource::Context(filtered)),
    ];
    let p = prepare(&fx.env(), &o, &sources).unwrap();
    assert_eq!(p.mounts[0].kind, PlannedKind::Bind { source: plain.root.join("src"), readonly: true });
    let rw = source_of(&p.mounts[1].kind).to_owned();
    assert!(rw.starts_with(&fx.tmp), "a writable bind gets a scratch copy: {rw:?}");
    std::fs::write(rw.join("main.c"), "changed").unwrap();
    assert_eq!(std::fs::read_to_string(plain.root.join("src/main.c")).unwrap(), "int main;");
    let f = source_of(&p.mounts[2].kind).to_owned();
    assert!(f.join("main.c").exists() && !f.join("debug.log").exists(), ".dockerignore applies to the copy");
    drop(p);
    assert!(!rw.exists() && !f.exists(), "scratch copies are removed after the step");
    // A file selector mounts the file.
    let p =
        prepare(&fx.env(), &op(vec![bind("/m", "src/main.c", false)]), &[Some(MountSource::Context(plain))]).unwrap();
    assert_eq!(std::fs::read_to_string(source_of(&p.mounts[0].kind)).unwrap(), "int main;");
}

#[test]
fn snapshot_binds_copy_the_merged_layers() {
    let fx = Fx::new();
    let (lower, upper) = (fx.t.path().join("l"), fx.t.path().join("u"));
    std::fs::create_dir_all(lower.join("out")).unwrap();
    std::fs::create_dir_all(upper.join("out")).unwrap();
    std::fs::write(lower.join("out/a"), "lower").unwrap();
    std::fs::write(upper.join("out/b"), "upper").unwrap();
    let view = MergedView::new(vec![upper, lower.clone()]);
    let p = prepare(&fx.env(), &op(vec![bind("/build", "/out", true)]), &[Some(MountSource::Fs(view))]).unwrap();
    let PlannedKind::Bind { source, readonly: true } = &p.mounts[0].kind else { panic!("{:?}", p.mounts) };
    assert_eq!(std::fs::read_to_string(source.join("a")).unwrap(), "lower");
    assert_eq!(std::fs::read_to_string(source.join("b")).unwrap(), "upper");
    assert!(source.starts_with(&fx.tmp) && !source.starts_with(&lower));
}

#[test]
fn cache_and_tmpfs_mounts() {
    let fx = Fx::new();
    let cache = Mount {
        target: "/root/.cache".into(),
        kind: MountKind::Cache {
            id: "pip".into(),
            sharing: CacheSharing::Locked,
            source: None,
            selector: "/".into(),
            readonly: false,
            uid: crate::testutil::own_ids().0,
            gid: crate::testutil::own_ids().1,
            mode: 0o700,
        },
    };
    let tmpfs = Mount { target: "/tmp".into(), kind: MountKind::Tmpfs { size: Some(1 << 20) } };
    let p = prepare(&fx.env(), &op(vec![cache, tmpfs]), &[None, None]).unwrap();
    let dir = source_of(&p.mounts[0].kind).to_owned();
    assert!(dir.starts_with(cache::cache_root(&fx.store_root)), "{dir:?}");
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777, 0o700);
    assert_eq!(p.mounts[1].kind, PlannedKind::Tmpfs { size: Some(1 << 20), mode: 0o1777 });
    drop(p);
    assert!(dir.is_dir(), "a cache outlives the step");
}

/// Every file under `root` whose bytes contain `needle`.
fn files_containing(root: &Path, needle: &[u8]) -> Vec<PathBuf> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter(|e| std::fs::read(e.path()).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)))
        .map(|e| e.path().to_owned())
        .collect()
}

#[test]
fn secrets_are_files_and_variables_and_never_leak() {
    let fx = Fx::new();
    let o = op(vec![
        secret("/run/secrets/tok", "tok", true, None),
        secret("", "tok", true, Some("TOKEN")),
        secret("/run/secrets/opt", "absent", false, None),
    ]);
    let p = prepare(&fx.env(), &o, &[None, None, None]).unwrap();
    assert_eq!(p.mounts.len(), 1, "env-only and missing optional secrets mount nothing");
    let PlannedKind::File { source, mode: 0o400, .. } = &p.mounts[0].kind else { panic!("{:?}", p.mounts) };
    assert_eq!(std::fs::read_to_string(source).unwrap(), VALUE);
    assert_eq!(std::fs::metadata(source).unwrap().permissions().mode() & 0o777, 0o400);
    assert!(!source.starts_with(fx.t.path()), "secret files live outside the store");
    assert_eq!(p.env, [format!("TOKEN={VALUE}")]);
    assert!(!format!("{p:?}").contains(VALUE), "Debug shows variable names only");
    assert!(files_containing(&fx.store_root, VALUE.as_bytes()).is_empty());
    let file = source.clone();
    drop(p);
    assert!(!file.exists() && !file.parent().unwrap().exists(), "the secret file is removed after the step");

    let missing = prepare(&fx.env(), &op(vec![secret("/s", "nope", true, None)]), &[None]).unwrap_err();
    assert_eq!(missing.to_string(), "secret nope not found");
    let mut binary = Fx::new();
    binary.secrets.insert("bin".into(), Secret::new(vec![b'a', 0, b'b']));
    let err = prepare(&binary.env(), &op(vec![secret("", "bin", true, Some("B"))]), &[None]).unwrap_err();
    assert!(matches!(err, WorkerError::SecretNotEnv { .. }) && !err.to_string().contains('\0'));
}

#[test]
fn ssh_agents_are_proxied_and_announced() {
    let mut fx = Fx::new();
    let ssh = |id: &str, required: bool| Mount {
        target: "/run/buildkit/ssh_agent.0".into(),
        kind: MountKind::Ssh {
            id: id.into(),
            required,
            uid: crate::testutil::own_ids().0,
            gid: crate::testutil::own_ids().1,
            mode: 0o600,
        },
    };
    let err = prepare(&fx.env(), &op(vec![ssh("default", true)]), &[None]).unwrap_err();
    assert!(matches!(err, WorkerError::SshNotFound { .. }));
    assert!(prepare(&fx.env(), &op(vec![ssh("default", false)]), &[None]).unwrap().mounts.is_empty());
    let agent = fx.t.path().join("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&agent).unwrap();
    fx.ssh.insert("default".into(), agent.clone());
    let p = prepare(&fx.env(), &op(vec![ssh("default", true)]), &[None]).unwrap();
    let sock = source_of(&p.mounts[0].kind).to_owned();
    assert_ne!(sock, agent, "the client's socket itself is never exposed");
    assert_eq!(p.env, ["SSH_AUTH_SOCK=/run/buildkit/ssh_agent.0"]);
    drop(p);
    assert!(!sock.exists());
}
