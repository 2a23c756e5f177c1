//! Conversion tests against a mock image resolver: shared helpers and the core instructions
//! here, one file per area beside.

use std::cell::RefCell;
use std::collections::BTreeMap;

use oci_spec::image::ImageConfiguration;
use rbuild_solver::ir::{ExecOp, FileAction, NetworkMode, Op, Platform, SourceOp};

use super::*;

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Resolves `busybox` (Env PATH+HOME, Cmd sh, WorkingDir /root, a label), `alpine` (no PATH,
/// no Cmd), `bash` (Docker-only fields: Shell, Healthcheck, ArgsEscaped), `onbuild` (ONBUILD
/// triggers), `empty` (no layers); records every lookup.
#[derive(Default)]
struct MockResolver {
    calls: RefCell<Vec<String>>,
}

impl ImageResolver for MockResolver {
    fn resolve(&self, reference: &str, _: &Platform) -> Result<ResolvedImage, ResolveError> {
        self.calls.borrow_mut().push(reference.to_owned());
        let (name, config) = match reference {
            "busybox" | "busybox:latest" => (
                "busybox",
                r#"{"Env":["PATH=/usr/bin:/bin","HOME=/root"],"Cmd":["sh"],"WorkingDir":"/root","Labels":{"base":"yes"}}"#,
            ),
            "alpine" => ("alpine", r#"{"Env":["TERM=xterm"],"Entrypoint":["/init"]}"#),
            "bash" => (
                "bash",
                r#"{"Env":["PATH=/bin"],"Shell":["/bin/bash","-eu","-c"],"ArgsEscaped":true,
                    "Healthcheck":{"Test":["CMD","/ok"],"Interval":5000000000,"Retries":2}}"#,
            ),
            "onbuild" => (
                "onbuild",
                r#"{"Env":["PATH=/bin"],"OnBuild":["ENV FROM_TRIGGER=1","RUN echo triggered","COPY --from=helper /h /h"]}"#,
            ),
            "badonbuild" => ("badonbuild", r#"{"OnBuild":["RUN ok","FROM nope"]}"#),
            "empty" => ("empty", r#"{"Env":["PATH=/bin"]}"#),
            _ => return Err(ResolveError::NotFound),
        };
        let diff_ids = if name == "empty" { String::new() } else { format!("\"{DIGEST}\"") };
        let json = format!(
            r#"{{"architecture":"amd64","os":"linux","config":{config},"rootfs":{{"type":"layers","diff_ids":[{diff_ids}]}}}}"#
        );
        let config: ImageConfiguration =
            serde_json::from_str(&json).map_err(|e| ResolveError::Registry(Box::new(e)))?;
        Ok(ResolvedImage {
            reference: format!("docker.io/library/{name}:latest"),
            digest: DIGEST.into(),
            config,
            raw_config: Some(json.into_bytes()),
        })
    }
}

fn platform() -> Platform {
    Platform { os: "linux".into(), architecture: "amd64".into(), variant: None }
}

fn request(src: &str) -> BuildRequest<'_> {
    BuildRequest {
        dockerfile: src.as_bytes(),
        filename: "Dockerfile".into(),
        build_args: BTreeMap::new(),
        target: None,
        platform: platform(),
        multi_platform: false,
        context_excludes: vec!["*.log".into()],
        no_cache: false,
        named_contexts: BTreeMap::new(),
        run_defaults: RunDefaults::default(),
    }
}

fn conv(src: &str) -> BuildDefinition {
    build(&request(src), &MockResolver::default()).unwrap_or_else(|e| panic!("{src:?}: {e}"))
}

fn conv_err(src: &str) -> Error {
    match build(&request(src), &MockResolver::default()) {
        Ok(_) => panic!("{src:?} should fail"),
        Err(e) => e,
    }
}

fn execs(def: &BuildDefinition) -> Vec<ExecOp> {
    def.graph
        .topological()
        .filter_map(|(_, op)| match op {
            Op::Exec(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn actions(def: &BuildDefinition) -> Vec<FileAction> {
    def.graph
        .topological()
        .filter_map(|(_, op)| match op {
            Op::File(f) => Some(f.actions.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn history(def: &BuildDefinition) -> Vec<String> {
    def.history.iter().map(|h| h.created_by.clone()).collect()
}

fn names(def: &BuildDefinition) -> Vec<String> {
    def.graph.topological().filter_map(|(id, _)| def.graph.meta(&id).map(|m| m.name.clone())).collect()
}

fn env_of(e: &ExecOp, key: &str) -> Option<String> {
    e.env.iter().find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_owned))
}

/// `(dockerfile, key, expected value in the last RUN's env)`.
macro_rules! run_env {
    ($src:expr, $key:expr, $want:expr) => {
        let def = conv($src);
        let last = execs(&def).pop().expect("a RUN");
        assert_eq!(env_of(&last, $key).as_deref(), $want, "{:?}", $src);
    };
}

/// `(dockerfile, expected message fragment, expected line)`.
macro_rules! fails {
    ($src:expr, $msg:expr, $line:expr) => {
        let e = conv_err($src);
        assert!(e.to_string().contains($msg), "{:?}: got {e}", $src);
        assert_eq!(e.span().map(|s| s.start_line), $line, "{:?}: {e}", $src);
    };
}

#[test]
fn stage_pruning() {
    let resolver = MockResolver::default();
    let src = "FROM doesnotexist AS broken\nRUN --device=x y\nFROM busybox AS ok\nRUN true\nFROM ok\nCMD [\"x\"]\n";
    let def = build(&request(src), &resolver).unwrap();
    assert_eq!(*resolver.calls.borrow(), ["busybox"]);
    assert_eq!(execs(&def).len(), 1);
    let mut req = request(src);
    req.target = Some("BROKEN".into());
    let e = build(&req, &resolver).unwrap_err();
    assert!(e.to_string().contains("RUN --device is not supported by rbuild yet"), "{e}");
    req.target = Some("okk".into());
    let e = build(&req, &resolver).unwrap_err();
    assert_eq!(e.to_string(), "target stage \"okk\" could not be found (did you mean ok?)");
}

#[test]
fn arg_scoping() {
    // Global ARGs reach FROM, not the stage, unless redeclared.
    run_env!("ARG IMG=busybox\nARG V=1\nFROM ${IMG}\nRUN x", "V", None);
    run_env!("ARG V=1\nFROM busybox\nARG V\nRUN x", "V", Some("1"));
    run_env!("FROM busybox\nARG V=def\nRUN x", "V", Some("def"));
    run_env!("FROM busybox\nARG V\nRUN x", "V", None);
    run_env!("FROM busybox\nARG TARGETARCH\nRUN x", "TARGETARCH", Some("amd64"));
    run_env!("FROM busybox\nRUN x", "TARGETARCH", None);
    // An ARG after an ENV of the same name wins in RUN.
    run_env!("FROM busybox\nENV V=env\nARG V=arg\nRUN x", "V", Some("arg"));
    run_env!("FROM busybox\nARG V=arg\nENV V=env\nRUN x", "V", Some("env"));
    run_env!("FROM busybox\nARG A=1 B=${A}2\nRUN x", "B", Some("12"));

    let mut req = request("ARG V=def\nFROM busybox\nARG V\nARG W=w\nENV V=env\nRUN x");
    req.build_args.insert("W".into(), "cli".into());
    req.build_args.insert("UNDECLARED".into(), "u".into());
    let def = build(&req, &MockResolver::default()).unwrap();
    let run = execs(&def).pop().unwrap();
    assert_eq!(env_of(&run, "W").as_deref(), Some("cli"));
    assert_eq!(env_of(&run, "UNDECLARED"), None);
    // Config env keeps ENV values only.
    let env = def.config.env().clone().unwrap();
    assert!(env.contains(&"V=env".to_owned()) && !env.iter().any(|e| e.starts_with("W=")), "{env:?}");
    assert_eq!(history(&def).last().unwrap(), "RUN |2 V=env W=cli /bin/sh -c x # buildkit");
}

#[test]
fn env_expansion() {
    let def = conv("FROM busybox\nENV A=1\nENV A=2 B=$A C=\"x y\"\nENV D ${HOME}/d e\nLABEL l=$A\nWORKDIR $D\nUSER ${A:-none}\nRUN echo $A");
    let env = def.config.env().clone().unwrap();
    assert_eq!(env, ["PATH=/usr/bin:/bin", "HOME=/root", "A=2", "B=1", "C=x y", "D=/root/d e"]);
    assert_eq!(def.config.labels().as_ref().and_then(|l| l.get("l").cloned()).as_deref(), Some("2"));
    assert_eq!(def.config.working_dir().as_deref(), Some("/root/d e"));
    assert_eq!(def.config.user().as_deref(), Some("2"));
    let run = execs(&def).pop().unwrap();
    assert_eq!(run.args, ["/bin/sh", "-c", "echo $A"]);
    assert_eq!(run.user, "2");
    assert_eq!(run.cwd, "/root/d e");
    assert_eq!(
        history(&def)[..3],
        ["ENV A=1".to_owned(), "ENV A=2 B=1 C=x y".to_owned(), "ENV D=/root/d e".to_owned()]
    );
}

#[test]
fn entrypoint_and_cmd() {
    type Argv = Option<&'static [&'static str]>;
    let cases: &[(&str, Argv, Argv)] = &[
        ("FROM busybox", None, Some(&["sh"])),
        ("FROM busybox\nENTRYPOINT [\"/e\"]", Some(&["/e"]), None),
        ("FROM busybox\nCMD [\"c\"]\nENTRYPOINT [\"/e\"]", Some(&["/e"]), Some(&["c"])),
        ("FROM busybox\nENTRYPOINT /e x\nCMD c", Some(&["/bin/sh", "-c", "/e x"]), Some(&["/bin/sh", "-c", "c"])),
        ("FROM busybox AS a\nCMD [\"c\"]\nFROM a\nENTRYPOINT [\"/e\"]", Some(&["/e"]), None),
        ("FROM alpine\nSHELL [\"/bin/bash\", \"-xc\"]\nCMD c", Some(&["/init"]), Some(&["/bin/bash", "-xc", "c"])),
        ("FROM busybox\nCMD []", None, Some(&[])),
        ("FROM alpine\nENTRYPOINT []", None, None),
        ("FROM alpine\nENTRYPOINT", Some(&["/bin/sh", "-c", ""]), None),
    ];
    for (src, ep, cmd) in cases {
        let def = conv(src);
        let got_ep = def.config.entrypoint().clone();
        let got_cmd = def.config.cmd().clone();
        let want = |v: &Argv| v.map(|s| s.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert_eq!((got_ep, got_cmd), (want(ep), want(cmd)), "{src:?}");
    }
    let def = conv("FROM busybox\nCMD [\"a\", \"b c\"]\nENTRYPOINT e");
    assert_eq!(history(&def), ["CMD [\"a\" \"b c\"]", "ENTRYPOINT [\"/bin/sh\" \"-c\" \"e\"]"]);
}

#[test]
fn workdir() {
    let def = conv("FROM busybox\nWORKDIR /a\nWORKDIR b/../c\nUSER app:grp\nWORKDIR d\nWORKDIR /\nRUN pwd");
    assert_eq!(def.config.working_dir().as_deref(), Some("/"));
    let mkdirs: Vec<(String, Option<String>)> = actions(&def)
        .into_iter()
        .filter_map(|a| match a {
            FileAction::Mkdir { path, mode: 0o755, make_parents: true, chown } => {
                Some((path, chown.map(|c| format!("{}:{:?}", c.user, c.group))))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        mkdirs,
        [("/a".into(), None), ("/a/c".into(), None), ("/a/c/d".into(), Some("app:Some(\"grp\")".into()))]
    );
    assert_eq!(history(&def)[..5], ["WORKDIR /a", "WORKDIR /a/c", "USER app:grp", "WORKDIR /a/c/d", "WORKDIR /"]);
    let layers: Vec<bool> = def.history.iter().map(|h| h.layer_op.is_some()).collect();
    assert_eq!(layers, [true, true, false, true, false, true]);
    assert_eq!(execs(&def)[0].cwd, "/");
    // Inherited relative-less base workdir.
    assert_eq!(execs(&conv("FROM busybox\nRUN pwd"))[0].cwd, "/root");
}

#[test]
fn copy_sources() {
    let def = conv("FROM busybox AS Build\nRUN make\nFROM scratch\nCOPY --from=build /out /a\nCOPY --from=0 /out /b\nCOPY --from=alpine /etc /c/\nWORKDIR /w\nCOPY --chown=1:2 --chmod=640 x y ./\n");
    let copies: Vec<(String, Vec<String>)> = actions(&def)
        .into_iter()
        .filter_map(|a| match a {
            FileAction::Copy { src, src_paths, dest, .. } => {
                let kind = match def.graph.op(&src.op) {
                    Some(Op::Exec(_)) => "stage".to_owned(),
                    Some(Op::Source(SourceOp::Image { reference, .. })) => reference.clone(),
                    Some(Op::Source(SourceOp::Local { name, exclude })) => format!("{name} {exclude:?}"),
                    other => format!("{other:?}"),
                };
                Some((format!("{kind} -> {dest}"), src_paths))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        copies,
        [
            ("stage -> /a".to_owned(), vec!["/out".to_owned()]),
            ("stage -> /b".to_owned(), vec!["/out".to_owned()]),
            ("docker.io/library/alpine:latest -> /c/".to_owned(), vec!["/etc".to_owned()]),
            ("context [\"*.log\"] -> /w/".to_owned(), vec!["x".to_owned(), "y".to_owned()]),
        ]
    );
    let last = actions(&def).pop().unwrap();
    assert!(matches!(last, FileAction::Copy { chmod: Some(0o640), chown: Some(_), .. }));
    assert_eq!(
        history(&def),
        [
            "COPY /out /a # buildkit",
            "COPY /out /b # buildkit",
            "COPY /etc /c/ # buildkit",
            "WORKDIR /w",
            "COPY --chown=1:2 --chmod=640 x y ./ # buildkit"
        ]
    );
    assert!(def.base.is_none());
}

#[test]
fn located_errors() {
    fails!("FROM busybox\n\nCOPPY a b", "unknown instruction: COPPY (did you mean COPY?)", Some(3));
    fails!("FROM busybox\nRUN --device=/dev/x make", "RUN --device is not supported by rbuild yet", Some(2));
    fails!("FROM busybox\nCOPY --from=5 a b", "invalid stage index 5", Some(2));
    fails!("FROM busybox\nARG X=a\nCOPY --from=$X a b", "variable expansion is not supported for --from", Some(3));
    fails!(
        "FROM busybox AS first\nCOPY --from=later a b\nFROM busybox AS later\nFROM first",
        "cannot copy from stage \"later\", it needs to be defined before current stage \"first\"",
        Some(2)
    );
    fails!("FROM busybox AS a\nCOPY --from=a x y", "circular dependency detected on stage: a", Some(1));
    fails!("FROM nope:1\nRUN x", "failed to resolve base image \"nope:1\": not found", Some(1));
    fails!("FROM busybox\nENV A=${B:?must_be_set}", "failed to process \"${B:?must_be_set}\": B: must_be_set", Some(2));
    fails!("FROM busybox\nCOPY --chmod=999 a b", "invalid chmod parameter", Some(2));
    fails!("FROM busybox\nCOPY --chmod=u+x a b", "--chmod with a symbolic mode is not supported", Some(2));
    fails!("FROM busybox\nSTOPSIGNAL SIGNOPE", "Invalid signal: SIGNOPE", Some(2));
    fails!("FROM busybox\nEXPOSE 80/foo", "invalid proto", Some(2));
    fails!("FROM Busybox", "repository name must be lowercase", Some(1));
    fails!("FROM --platform=linux//x busybox", "failed to parse platform", Some(1));
    fails!("ARG X\nFROM $X", "base name ($X) should not be blank", Some(2));
    fails!("ARG X", "no stages to build", None);
    // RUN's shell form is never lexed by the frontend: unbalanced quotes are the shell's business.
    assert_eq!(execs(&conv("FROM busybox\nRUN echo \"unterminated\n"))[0].args[2], "echo \"unterminated");
    let e = conv_err("FROM busybox\nRUN --device=a b\nHEALTHCHECK CMD true\nRUN --device=c d\nRUN --device=e f\n");
    let lines: Vec<usize> = e.diagnostics().iter().filter_map(|d| d.span.as_ref().map(|s| s.start_line)).collect();
    assert_eq!(lines, [2, 4, 5]);
    assert!(e.hint().is_some());
}

#[test]
fn run_ops_and_names() {
    let mut req = request("FROM busybox\nRUN --network=none echo hi\nRUN [\"ls\", \"-l\"]\nCOPY . /src\n");
    req.no_cache = true;
    let def = build(&req, &MockResolver::default()).unwrap();
    let runs = execs(&def);
    assert_eq!(runs[0].args, ["/bin/sh", "-c", "echo hi"]);
    assert_eq!(runs[0].network, NetworkMode::None);
    assert_eq!(runs[0].env, ["PATH=/usr/bin:/bin", "HOME=/root"]);
    assert_eq!(runs[1].args, ["ls", "-l"]);
    assert_eq!(runs[1].rootfs.map(|i| i.op), def.history[0].layer_op);
    assert_eq!(
        names(&def),
        [
            format!("[1/4] FROM docker.io/library/busybox:latest@{DIGEST}"),
            "[2/4] RUN --network=none echo hi".to_owned(),
            "[3/4] RUN [\"ls\", \"-l\"]".to_owned(),
            "[internal] load build context".to_owned(),
            "[4/4] COPY . /src".to_owned(),
        ]
    );
    assert_eq!(history(&def), ["RUN /bin/sh -c echo hi # buildkit", "RUN ls -l # buildkit", "COPY . /src # buildkit"]);
    let ids: Vec<_> = def.graph.topological().map(|(id, _)| id).collect();
    assert!(def.graph.meta(&ids[1]).unwrap().ignore_cache);
    assert!(!def.graph.meta(&ids[0]).unwrap().ignore_cache);
    assert_eq!(def.base.as_ref().map(|b| b.digest.as_str()), Some(DIGEST));
    assert_eq!(def.target.map(|t| t.op), def.history[2].layer_op);

    let def = conv("FROM busybox AS build\nRUN make\nFROM scratch\nCOPY --from=build /a /a\n");
    assert_eq!(
        names(&def),
        [
            format!("[build 1/2] FROM docker.io/library/busybox:latest@{DIGEST}"),
            "[build 2/2] RUN make".to_owned(),
            "[stage-1 1/1] COPY --from=build /a /a".to_owned(),
        ]
    );
}

#[test]
fn scratch_and_metadata() {
    let def = conv("FROM scratch\nLABEL a=b\nEXPOSE 80 8000-8001/udp\nVOLUME /data [\"/x\"]\nSTOPSIGNAL SIGKILL\nMAINTAINER me\nUSER 1000\n");
    assert!(def.target.is_none());
    assert!(def.graph.is_empty());
    assert_eq!(def.config.env().clone().unwrap(), [format!("PATH={}", state::DEFAULT_PATH)]);
    assert_eq!(def.config.working_dir().as_deref(), Some("/"));
    assert_eq!(def.config.exposed_ports().clone().unwrap(), ["80/tcp", "8000/udp", "8001/udp"]);
    assert_eq!(def.config.stop_signal().as_deref(), Some("SIGKILL"));
    assert_eq!(def.author.as_deref(), Some("me"));
    assert_eq!(
        history(&def),
        [
            "LABEL a=b",
            "EXPOSE map[80/tcp:{} 8000/udp:{} 8001/udp:{}]",
            "VOLUME [/data [/x]]",
            "STOPSIGNAL SIGKILL",
            "MAINTAINER me",
            "USER 1000"
        ]
    );
    assert!(def.history.iter().all(|h| h.layer_op.is_none() && h.comment.as_deref() == Some("buildkit.dockerfile.v0")));
    // A base without PATH gets the default one.
    let env = conv("FROM alpine").config.env().clone().unwrap();
    assert_eq!(env, ["TERM=xterm".to_owned(), format!("PATH={}", state::DEFAULT_PATH)]);
}

#[test]
fn heredoc_run() {
    let def = conv("FROM busybox\nRUN <<EOF\necho a\necho b\nEOF\nRUN cat <<X > /f\nhello\nX\n");
    let runs = execs(&def);
    assert_eq!(runs[0].args, ["/bin/sh", "-c", "echo a\necho b\n"]);
    assert_eq!(runs[1].args, ["/bin/sh", "-c", "cat <<X > /f\nhello\nX"]);
    assert_eq!(names(&def)[1], "[2/3] RUN <<EOF (echo a...)");
}

#[test]
fn cross_stage_inheritance() {
    let def = conv("FROM busybox AS base\nENV A=1\nARG B=2\nWORKDIR /app\nFROM base\nRUN x\n");
    let run = execs(&def).pop().unwrap();
    assert_eq!(run.cwd, "/app");
    assert_eq!(env_of(&run, "A").as_deref(), Some("1"));
    assert_eq!(env_of(&run, "B").as_deref(), Some("2"));
    assert_eq!(history(&def), ["ENV A=1", "ARG B=2", "WORKDIR /app", "RUN |1 B=2 /bin/sh -c x # buildkit"]);
    assert_eq!(def.base.map(|b| b.reference), Some("docker.io/library/busybox:latest".to_owned()));
}

/// The op with `id`.
fn op_of(def: &BuildDefinition, id: rbuild_solver::ir::OpId) -> Op {
    def.graph.op(&id).cloned().expect("op in graph")
}

/// The op producing the target filesystem.
fn target_op(def: &BuildDefinition) -> Op {
    op_of(def, def.target.expect("a target").op)
}

/// The (single) file op of the last step that made a layer.
fn last_layer_op(def: &BuildDefinition) -> Op {
    let id = def.history.iter().rev().find_map(|h| h.layer_op).expect("a layer");
    op_of(def, id)
}

/// Builds with extra build args.
fn conv_args(src: &str, args: &[(&str, &str)]) -> BuildDefinition {
    let mut req = request(src);
    for (k, v) in args {
        req.build_args.insert((*k).to_owned(), (*v).to_owned());
    }
    build(&req, &MockResolver::default()).unwrap_or_else(|e| panic!("{src:?}: {e}"))
}

mod checks;
mod config;
mod contexts;
mod copy_add;
mod run;

#[test]
fn sbom_scan_stage_selects_built_stages_by_arg() {
    let df = "ARG BUILDKIT_SBOM_SCAN_STAGE\n\
              FROM busybox AS deps\nRUN touch /d\n\
              FROM busybox AS tools\nARG BUILDKIT_SBOM_SCAN_STAGE=false\nRUN touch /t\n\
              FROM busybox AS unused\nRUN touch /u\n\
              FROM busybox\nCOPY --from=deps /d /d\nCOPY --from=tools /t /t\n";
    let names = |def: &BuildDefinition| def.sbom_stages.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    // Unset: nothing besides the image.
    assert!(conv(df).sbom_stages.is_empty());
    // Global true: every built stage but the one whose own ARG says false; never an unbuilt
    // one, never the target itself.
    let global_true = df.replacen("ARG BUILDKIT_SBOM_SCAN_STAGE\n", "ARG BUILDKIT_SBOM_SCAN_STAGE=true\n", 1);
    assert_eq!(names(&conv(&global_true)), ["deps"]);
    // A --build-arg sets every declared ARG, the stage's too (as for any ARG).
    let def = conv_args(df, &[("BUILDKIT_SBOM_SCAN_STAGE", "true")]);
    assert_eq!(names(&def), ["deps", "tools"]);
    // A list names stages.
    let def = conv_args(df, &[("BUILDKIT_SBOM_SCAN_STAGE", "deps,unused")]);
    assert_eq!(names(&def), ["deps"]);
    // The scanned stage's filesystem is its own, not the target's.
    assert_ne!(Some(def.sbom_stages[0].fs), def.target);
    // Never an environment variable of the steps.
    assert!(!serde_json::to_string(&def.graph).unwrap().contains("BUILDKIT_SBOM_SCAN_STAGE="));
}
