//! `--build-context` named contexts and the build-wide `RUN` settings.

use rbuild_solver::ir::{HostEntry, Ulimit};

use super::*;

fn with_contexts(src: &str, named: &[(&str, NamedContext)]) -> Result<BuildDefinition, Error> {
    let mut req = request(src);
    for (k, v) in named {
        req.named_contexts.insert((*k).to_owned(), v.clone());
    }
    build(&req, &MockResolver::default())
}

fn local(name: &str) -> NamedContext {
    NamedContext::Local { name: name.to_owned(), exclude: vec!["*.tmp".to_owned()] }
}

fn sources(def: &BuildDefinition) -> Vec<SourceOp> {
    def.graph
        .topological()
        .filter_map(|(_, op)| match op {
            Op::Source(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

fn copy_src(def: &BuildDefinition) -> Op {
    let Some(FileAction::Copy { src, .. }) = actions(def).into_iter().find(|a| matches!(a, FileAction::Copy { .. }))
    else {
        panic!("no copy")
    };
    op_of(def, src.op)
}

#[test]
fn image_context_replaces_from_and_copy_from_keeping_the_config() {
    let image = NamedContext::Image { reference: "alpine".to_owned() };
    let def = with_contexts("FROM busybox\nCOPY --from=busybox:latest /a /a\n", &[("busybox", image)]).unwrap();
    let refs: Vec<String> = sources(&def)
        .into_iter()
        .filter_map(|s| match s {
            SourceOp::Image { reference, .. } => Some(reference),
            _ => None,
        })
        .collect();
    assert_eq!(refs, ["docker.io/library/alpine:latest"]);
    // alpine's config, not busybox's.
    assert_eq!(def.config.entrypoint().as_deref(), Some(&["/init".to_owned()][..]));
    assert_eq!(def.base.map(|b| b.reference).as_deref(), Some("docker.io/library/alpine:latest"));
}

#[test]
fn context_named_like_a_stage_replaces_the_stage() {
    let src = "FROM busybox AS deps\nRUN never\nFROM busybox\nCOPY --from=deps /x /x\n";
    let def = with_contexts(src, &[("deps", local("ctx:deps"))]).unwrap();
    assert!(execs(&def).is_empty(), "the replaced stage's RUN must not run");
    assert_eq!(copy_src(&def), Op::Source(SourceOp::Local { name: "ctx:deps".into(), exclude: vec!["*.tmp".into()] }));
}

#[test]
fn local_context_as_from_is_a_snapshot_with_an_empty_config() {
    let def = with_contexts("FROM base\nRUN ls\n", &[("base", local("ctx:base"))]).unwrap();
    let run = execs(&def).pop().unwrap();
    let Op::File(f) = op_of(&def, run.rootfs.unwrap().op) else { panic!("rootfs is not a copy") };
    assert!(f.base.is_none());
    let [FileAction::Copy { src, src_paths, dest, .. }] = f.actions.as_slice() else { panic!("{f:?}") };
    assert_eq!((src_paths.as_slice(), dest.as_str()), (&["/".to_owned()][..], "/"));
    assert!(matches!(op_of(&def, src.op), Op::Source(SourceOp::Local { .. })));
    assert_eq!(env_of(&run, "PATH").as_deref(), Some(super::super::state::DEFAULT_PATH));
    assert!(def.base.is_none());
}

#[test]
fn git_and_archive_contexts() {
    let git = NamedContext::Git {
        remote: "https://example.com/r.git".into(),
        reference: Some("v1".into()),
        subdir: Some("sub".into()),
    };
    let def = with_contexts("FROM scratch\nCOPY --from=src / /src\n", &[("src", git)]).unwrap();
    assert_eq!(
        copy_src(&def),
        Op::Source(SourceOp::Git {
            remote: "https://example.com/r.git".into(),
            reference: Some("v1".into()),
            subdir: Some("sub".into()),
            keep_git_dir: false,
        })
    );
    let archive = NamedContext::Archive { url: "http://u:p@127.0.0.1:1/ctx.tar.gz".into() };
    let def = with_contexts("FROM base\n", &[("base", archive)]).unwrap();
    let Op::File(f) = target_op(&def) else { panic!("not extracted") };
    let [FileAction::Copy { src, src_paths, unpack_archives: true, .. }] = f.actions.as_slice() else {
        panic!("{f:?}")
    };
    assert_eq!(src_paths, &["/context".to_owned()]);
    assert!(matches!(op_of(&def, src.op), Op::Source(SourceOp::Http { checksum: None, .. })));
    assert!(names(&def).iter().all(|n| !n.contains("u:p@")), "{:?}", names(&def));
}

#[test]
fn target_context_aliases_an_earlier_stage() {
    let src = "FROM busybox AS builder\nRUN make\nFROM base\nCOPY --from=lib /l /l\n";
    let stage = |n: &str| NamedContext::Stage { name: n.to_owned() };
    let def = with_contexts(src, &[("base", stage("builder")), ("lib", stage("builder"))]).unwrap();
    let make = def.graph.topological().find_map(|(id, op)| matches!(op, Op::Exec(_)).then_some(id)).unwrap();
    let Op::File(f) = target_op(&def) else { panic!("the target is not the COPY") };
    assert_eq!(f.base.map(|b| b.op), Some(make), "FROM base is the builder stage");
    let Some(FileAction::Copy { src, .. }) = f.actions.first() else { panic!("{f:?}") };
    assert_eq!(src.op, make, "COPY --from=lib reads the builder stage");
    let e = with_contexts("FROM base AS a\nFROM busybox AS later\n", &[("base", stage("later"))]).unwrap_err();
    assert!(e.to_string().contains("before"), "{e}");
}

#[test]
fn names_match_as_familiar_references() {
    use super::super::plan::normalize_context_name as n;
    assert_eq!(n("docker.io/library/alpine:latest"), "alpine");
    assert_eq!(n("Alpine"), "alpine");
    assert_eq!(n("alpine:3.19"), "alpine:3.19");
    assert_eq!(n("docker.io/me/app:latest"), "me/app");
    assert_eq!(n("reg.io/x:latest@sha256:00"), "reg.io/x:latest@sha256:00");
}

#[test]
fn run_defaults_reach_every_run_and_network_flags_override() {
    let mut req = request("FROM busybox\nRUN a\nRUN --network=host b\nRUN --network=default c\n");
    req.run_defaults = RunDefaults {
        network: NetworkMode::None,
        extra_hosts: vec![HostEntry { host: "db".into(), ip: "10.0.0.9".into() }],
        ulimits: vec![Ulimit { name: "nofile".into(), soft: 1024, hard: 2048 }],
        shm_size: Some(128 << 20),
    };
    let def = build(&req, &MockResolver::default()).unwrap();
    let nets: Vec<NetworkMode> = execs(&def).iter().map(|e| e.network).collect();
    assert_eq!(nets, [NetworkMode::None, NetworkMode::Host, NetworkMode::None]);
    for e in execs(&def) {
        assert_eq!(e.extra_hosts.len(), 1);
        assert_eq!(e.ulimits[0].hard, 2048);
        assert_eq!(e.shm_size, Some(128 << 20));
    }
    // Without them, RUN ops (and so their ids and cache keys) are as before.
    let plain = conv("FROM busybox\nRUN a\n");
    assert!(!serde_json::to_string(&execs(&plain)[0]).unwrap().contains("extra_hosts"));
}
