//! `RUN` lowering: `--mount`, heredoc scripts, `--network`, `--security`, proxy args, `SHELL`.

use rbuild_solver::ir::{CacheSharing, FileOp, Input, Mount, MountKind, SecurityMode};

use super::*;

/// The mounts of the last `RUN` of `src`.
fn mounts(src: &str) -> (BuildDefinition, Vec<Mount>) {
    let def = conv(src);
    let run = execs(&def).pop().expect("a RUN");
    (def, run.mounts)
}

/// What a mount's source input is: `context`, `image <ref>`, `stage` (an exec) or `empty`.
fn source_kind(def: &BuildDefinition, input: Input) -> String {
    match op_of(def, input.op) {
        Op::Source(SourceOp::Local { name, .. }) => name,
        Op::Source(SourceOp::Image { reference, .. }) => format!("image {reference}"),
        Op::Exec(_) => "stage".to_owned(),
        Op::File(FileOp { base: None, actions }) if actions.is_empty() => "empty".to_owned(),
        other => format!("{other:?}"),
    }
}

fn cache(id: &str, sharing: CacheSharing, readonly: bool, uid: u32, gid: u32, mode: u32) -> MountKind {
    MountKind::Cache { id: id.into(), sharing, source: None, selector: "/".into(), readonly, uid, gid, mode }
}

fn secret(id: &str, required: bool, env: Option<&str>, uid: u32, mode: u32) -> MountKind {
    MountKind::Secret { id: id.into(), required, env: env.map(Into::into), uid, gid: 0, mode }
}

fn ssh(id: &str, required: bool) -> MountKind {
    MountKind::Ssh { id: id.into(), required, uid: 0, gid: 0, mode: 0o600 }
}

/// `(--mount value, target, kind)` for mounts without an input.
#[test]
fn mounts_without_inputs() {
    let cases: Vec<(&str, &str, MountKind)> = vec![
        (
            "type=cache,target=/root/.cache",
            "/root/.cache",
            cache("/root/.cache", CacheSharing::Shared, false, 0, 0, 0o755),
        ),
        (
            "type=cache,target=rel/,id=x,sharing=private,mode=0700,uid=1,gid=2,ro",
            "/w/rel",
            cache("x", CacheSharing::Private, true, 1, 2, 0o700),
        ),
        ("type=cache,dst=$T,sharing=locked", "/t", cache("/t", CacheSharing::Locked, false, 0, 0, 0o755)),
        ("type=tmpfs,target=/t,size=64m", "/t", MountKind::Tmpfs { size: Some(64 << 20) }),
        ("type=tmpfs,destination=/t", "/t", MountKind::Tmpfs { size: None }),
        ("type=secret,id=tok", "/run/secrets/tok", secret("tok", false, None, 0, 0o400)),
        ("type=secret,target=/etc/tok.txt,required", "/etc/tok.txt", secret("tok.txt", true, None, 0, 0o400)),
        ("type=secret,id=tok,env=TOKEN", "", secret("tok", false, Some("TOKEN"), 0, 0o400)),
        ("type=secret,id=tok,env=TOKEN,target=/t", "/t", secret("tok", false, Some("TOKEN"), 0, 0o400)),
        ("type=secret,src=a/b,uid=5,mode=0440,required=false", "/run/secrets/b", secret("a/b", false, None, 5, 0o440)),
        ("type=ssh", "/run/buildkit/ssh_agent.0", ssh("default", false)),
        ("type=ssh,id=gh,target=/s,required=true", "/s", ssh("gh", true)),
    ];
    for (value, target, kind) in cases {
        let src = format!("FROM busybox\nARG T=/t\nWORKDIR /w\nRUN --mount={value} make\n");
        let (_, got) = mounts(&src);
        assert_eq!(got, [Mount { target: target.into(), kind }], "{value}");
    }
    // ssh agents are numbered per step.
    let (_, got) = mounts("FROM busybox\nRUN --mount=type=ssh --mount=type=ssh,id=b x\n");
    let targets: Vec<&str> = got.iter().map(|m| m.target.as_str()).collect();
    assert_eq!(targets, ["/run/buildkit/ssh_agent.0", "/run/buildkit/ssh_agent.1"]);
}

/// `(--mount value, target, source kind, selector, readonly)` for bind mounts and seeded caches.
#[test]
fn mounts_with_inputs() {
    let cases: &[(&str, &str, &str, &str, bool)] = &[
        ("type=bind,source=src,target=/src", "/src", "context", "/src", true),
        ("target=/src", "/src", "context", "/", true),
        ("type=bind,from=build,src=/out/,dst=/o,rw", "/o", "stage", "/out", false),
        ("type=bind,from=0,target=/o,readonly=false", "/o", "stage", "/", false),
        ("type=bind,from=alpine,target=/a", "/a", "image docker.io/library/alpine:latest", "/", true),
        ("type=bind,from=empty,target=/e", "/e", "empty", "/", true),
        ("type=bind,from=scratch,target=/e", "/e", "empty", "/", true),
    ];
    for (value, target, kind, want_selector, want_ro) in cases {
        let src = format!("FROM busybox AS build\nRUN make\nFROM busybox\nRUN --mount={value} x\n");
        let (def, got) = mounts(&src);
        let [Mount { target: t, kind: MountKind::Bind { source, selector, readonly } }] = got.as_slice() else {
            panic!("{value}: {got:?}")
        };
        assert_eq!(
            (t.as_str(), source_kind(&def, *source).as_str(), selector.as_str(), *readonly),
            (*target, *kind, *want_selector, *want_ro),
            "{value}"
        );
    }
    let (def, got) = mounts(
        "FROM busybox AS build\nRUN make\nFROM busybox\nRUN --mount=type=cache,from=build,source=/c,target=/c x\n",
    );
    let [Mount { kind: MountKind::Cache { source: Some(s), selector, .. }, .. }] = got.as_slice() else {
        panic!("{got:?}")
    };
    assert_eq!((source_kind(&def, *s).as_str(), selector.as_str()), ("stage", "/c"));
}

#[test]
fn mount_from_makes_a_stage_needed() {
    let resolver = MockResolver::default();
    let src = "FROM alpine AS tools\nRUN build-tools\nFROM doesnotexist AS unused\nFROM busybox\nRUN --mount=from=tools,target=/t x\n";
    let def = build(&request(src), &resolver).unwrap();
    assert_eq!(*resolver.calls.borrow(), ["alpine", "busybox"]);
    assert_eq!(execs(&def).len(), 2);
    // Mounts count as stages for the name prefix, as in BuildKit.
    let def = conv("FROM busybox\nRUN --mount=type=cache,target=/c make\n");
    assert_eq!(names(&def)[1], "[stage-0 2/2] RUN --mount=type=cache,target=/c make");
}

#[test]
fn mount_errors() {
    fails!("FROM busybox\nRUN --mount=type=cache,target=/ x", "invalid mount target \"/\"", Some(2));
    fails!("FROM busybox\nWORKDIR /\nRUN --mount=type=tmpfs x", "invalid mount target \"/\"", Some(3));
    // No target: the working directory.
    let (_, got) = mounts("FROM busybox\nRUN --mount=type=tmpfs x");
    assert_eq!(got[0].target, "/root");
    fails!(
        "FROM busybox\nARG S=a\nRUN --mount=from=$S,target=/a x",
        "'from' doesn't support variable expansion",
        Some(3)
    );
    fails!(
        "FROM busybox AS a\nRUN --mount=from=b,target=/b x\nFROM busybox AS b\nFROM a\n",
        "cannot mount from stage \"b\" to \"/b\", stage needs to be defined before current command",
        Some(2)
    );
    fails!("FROM busybox\nRUN --mount=type=ssh,src=x x", "ssh does not support source", Some(2));
    fails!(
        "FROM busybox\nRUN --mount=type=bind,target=/x,uid=1 x",
        "uid not allowed for \"bind\" type mounts",
        Some(2)
    );
    fails!(
        "FROM busybox\nRUN --mount=type=cach,target=/x x",
        "unsupported mount type \"cach\" (did you mean cache?)",
        Some(2)
    );
    fails!("FROM busybox\nRUN --mount=type=bind,target=${NOPE:?unset} x", "NOPE: unset", Some(2));
    fails!("FROM busybox\nRUN --mount=from=nope,target=/x x", "failed to resolve base image \"nope\"", Some(2));
}

#[test]
fn heredoc_with_shebang_runs_a_mounted_script() {
    let def = conv("FROM busybox\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n");
    let run = execs(&def).pop().unwrap();
    assert_eq!(run.args, ["/bin/sh", "-c", "/dev/pipes/EOF"]);
    let [Mount { target, kind: MountKind::Bind { source, selector, readonly: true } }] = run.mounts.as_slice() else {
        panic!("{:?}", run.mounts)
    };
    assert_eq!((target.as_str(), selector.as_str()), ("/dev/pipes", "/"));
    let Op::File(FileOp { base: None, actions }) = op_of(&def, source.op) else { panic!() };
    assert_eq!(
        actions,
        [FileAction::Mkfile {
            path: "/EOF".into(),
            data: b"#!/usr/bin/env python3\nprint(1)\n".to_vec(),
            mode: 0o755,
            chown: None
        }]
    );
    assert_eq!(def.graph.meta(&source.op).unwrap().name, "[internal] preparing inline document");
    assert_eq!(names(&def).last().unwrap(), "[2/2] RUN <<EOF (#!/usr/bin/env python3...)");
    assert_eq!(history(&def), ["RUN /bin/sh -c /dev/pipes/EOF # buildkit"]);
    // With --mount too, the script mount comes first.
    let (_, got) = mounts("FROM busybox\nRUN --mount=type=tmpfs,target=/t <<-S\n\t#!/bin/sh\n\tls\n\tS\n");
    let targets: Vec<&str> = got.iter().map(|m| m.target.as_str()).collect();
    assert_eq!(targets, ["/dev/pipes", "/t"]);
}

#[test]
fn network_security_and_proxies() {
    let def =
        conv("FROM busybox\nRUN --network=host --security=insecure x\nRUN --network=default --security=sandbox y\n");
    let runs = execs(&def);
    assert_eq!((runs[0].network, runs[0].security), (NetworkMode::Host, SecurityMode::Insecure));
    assert_eq!((runs[1].network, runs[1].security), (NetworkMode::Default, SecurityMode::Sandbox));

    let def = conv_args("FROM busybox\nRUN x\n", &[("http_proxy", "http://p:3128"), ("NO_PROXY", "local")]);
    let run = execs(&def).pop().unwrap();
    assert_eq!(
        run.env[2..],
        ["HTTP_PROXY=http://p:3128", "http_proxy=http://p:3128", "NO_PROXY=local", "no_proxy=local"]
    );
    assert_eq!(history(&def), ["RUN /bin/sh -c x # buildkit"]);
    assert!(def.config.env().clone().unwrap().iter().all(|e| !e.to_lowercase().contains("proxy")));
    assert!(def.warnings.is_empty(), "{:?}", def.warnings);
    // A declared ARG carries its value itself, once.
    let def = conv_args("FROM busybox\nARG HTTP_PROXY\nRUN x\n", &[("HTTP_PROXY", "p")]);
    let run = execs(&def).pop().unwrap();
    assert_eq!(run.env.iter().filter(|e| e.starts_with("HTTP_PROXY=")).count(), 1);
    assert!(run.env.contains(&"http_proxy=p".to_owned()));
}

#[test]
fn shell_applies_to_later_shell_forms() {
    let def = conv("FROM busybox\nRUN a\nSHELL [\"/bin/bash\", \"-o\", \"pipefail\", \"-c\"]\nRUN b\nRUN [\"c\"]\nCMD d\nENTRYPOINT e\n");
    let runs = execs(&def);
    assert_eq!(runs[0].args, ["/bin/sh", "-c", "a"]);
    assert_eq!(runs[1].args, ["/bin/bash", "-o", "pipefail", "-c", "b"]);
    assert_eq!(runs[2].args, ["c"]);
    let bash = |s: &str| vec!["/bin/bash".to_owned(), "-o".into(), "pipefail".into(), "-c".into(), s.to_owned()];
    assert_eq!(def.config.cmd().clone(), Some(bash("d")));
    assert_eq!(def.config.entrypoint().clone(), Some(bash("e")));
    assert_eq!(history(&def)[1], "SHELL [/bin/bash -o pipefail -c]");
    // A base image's Shell (a Docker-only field) is inherited.
    let def = conv("FROM bash\nRUN x\n");
    assert_eq!(execs(&def)[0].args, ["/bin/bash", "-eu", "-c", "x"]);
}
