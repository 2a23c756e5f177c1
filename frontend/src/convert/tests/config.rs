//! Image config lowering: `HEALTHCHECK`, `ONBUILD`, Docker-only fields, `EXPOSE`, args,
//! platforms, targets and warnings.

use serde_json::json;

use super::*;

fn extra(def: &BuildDefinition) -> serde_json::Value {
    serde_json::Value::Object(def.extra_config.clone())
}

#[test]
fn healthcheck_options() {
    let cases: &[(&str, serde_json::Value, &str)] = &[
        (
            "HEALTHCHECK --interval=30s --timeout=3s --start-period=1m --start-interval=500ms --retries=3 CMD curl -f http://x/ || exit 1",
            json!({"Test": ["CMD-SHELL", "curl -f http://x/ || exit 1"], "Interval": 30_000_000_000i64,
                   "Timeout": 3_000_000_000i64, "StartPeriod": 60_000_000_000i64, "StartInterval": 500_000_000, "Retries": 3}),
            r#"HEALTHCHECK &{["CMD-SHELL" "curl -f http://x/ || exit 1"] "30s" "3s" "1m0s" "500ms" '\x03'}"#,
        ),
        (
            "HEALTHCHECK CMD [\"/bin/check\", \"-q\"]",
            json!({"Test": ["CMD", "/bin/check", "-q"]}),
            r#"HEALTHCHECK &{["CMD" "/bin/check" "-q"] "0s" "0s" "0s" "0s" '\x00'}"#,
        ),
        ("HEALTHCHECK NONE", json!({"Test": ["NONE"]}), r#"HEALTHCHECK &{["NONE"] "0s" "0s" "0s" "0s" '\x00'}"#),
        (
            "HEALTHCHECK --interval=1.5m --timeout=0 cmd true",
            json!({"Test": ["CMD-SHELL", "true"], "Interval": 90_000_000_000i64}),
            r#"HEALTHCHECK &{["CMD-SHELL" "true"] "1m30s" "0s" "0s" "0s" '\x00'}"#,
        ),
    ];
    for (step, want, hist) in cases {
        let def = conv(&format!("FROM busybox\n{step}\n"));
        assert_eq!(extra(&def)["Healthcheck"], *want, "{step}");
        assert_eq!(history(&def), [*hist], "{step}");
        assert!(def.history[0].layer_op.is_none());
    }
    // Inherited from the base image's raw config, replaced by the Dockerfile's.
    assert_eq!(
        extra(&conv("FROM bash"))["Healthcheck"],
        json!({"Test": ["CMD", "/ok"], "Interval": 5_000_000_000i64, "Retries": 2})
    );
    assert_eq!(extra(&conv("FROM bash\nHEALTHCHECK NONE"))["Healthcheck"], json!({"Test": ["NONE"]}));
}

#[test]
fn healthcheck_errors() {
    fails!(
        "FROM busybox\nHEALTHCHECK --interval=0.5ms CMD x",
        "Interval \"interval\" cannot be less than 1ms",
        Some(2)
    );
    fails!("FROM busybox\nHEALTHCHECK --timeout=abc CMD x", "time: invalid duration \"abc\"", Some(2));
    fails!("FROM busybox\nHEALTHCHECK --start-period=5 CMD x", "time: missing unit in duration \"5\"", Some(2));
    fails!("FROM busybox\nHEALTHCHECK --retries=-1 CMD x", "--retries cannot be negative (-1)", Some(2));
    fails!("FROM busybox\nHEALTHCHECK --retries=x CMD x", "strconv.ParseInt: parsing \"x\": invalid syntax", Some(2));
    fails!("FROM busybox\nHEALTHCHECK --intervl=1s CMD x", "unknown flag: --intervl (did you mean interval?)", Some(2));
    fails!("FROM busybox\nHEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments", Some(2));
    fails!("FROM busybox\n\nHEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD", Some(3));
}

#[test]
fn docker_only_fields_reach_extra_config() {
    assert_eq!(extra(&conv("FROM busybox")), json!({}));
    let def =
        conv("FROM busybox\nSHELL [\"/bin/ash\", \"-c\"]\nCMD x\nONBUILD RUN make\nONBUILD COPY <<EOF /f\nhi\nEOF\n");
    assert_eq!(
        extra(&def),
        json!({"Shell": ["/bin/ash", "-c"], "ArgsEscaped": true, "OnBuild": ["RUN make", "COPY <<EOF /f\nhi\nEOF"]})
    );
    assert_eq!(def.shell.as_deref(), Some(&["/bin/ash".to_owned(), "-c".to_owned()][..]));
    // ONBUILD adds no history entry (as BuildKit).
    assert_eq!(history(&def), ["SHELL [/bin/ash -c]", "CMD [\"/bin/ash\" \"-c\" \"x\"]"]);
    // Inherited ones come along.
    assert_eq!(
        extra(&conv("FROM bash")),
        json!({"Shell": ["/bin/bash", "-eu", "-c"], "ArgsEscaped": true,
               "Healthcheck": {"Test": ["CMD", "/ok"], "Interval": 5_000_000_000i64, "Retries": 2}})
    );
}

#[test]
fn base_image_triggers_run_first() {
    let resolver = MockResolver::default();
    let src = "FROM alpine AS helper\nRUN mk\nFROM doesnotexist AS unused\nFROM onbuild\nRUN mine\n";
    let def = build(&request(src), &resolver).unwrap();
    assert_eq!(*resolver.calls.borrow(), ["onbuild", "alpine"], "the trigger's COPY --from needs helper");
    assert_eq!(
        history(&def),
        [
            "ENV FROM_TRIGGER=1",
            "RUN /bin/sh -c echo triggered # buildkit",
            "COPY /h /h # buildkit",
            "RUN /bin/sh -c mine # buildkit"
        ]
    );
    let runs = execs(&def);
    assert_eq!(env_of(runs.last().unwrap(), "FROM_TRIGGER").as_deref(), Some("1"));
    let names = names(&def);
    assert!(names.contains(&"[stage-2 2/5] RUN echo triggered".to_owned()), "{names:?}");
    assert!(names.contains(&"[stage-2 4/5] RUN mine".to_owned()), "{names:?}");
    // Trigger steps point at the FROM line; triggers are consumed, not inherited.
    let trigger_run =
        def.graph.topological().find(|(id, _)| def.graph.meta(id).unwrap().name.contains("triggered")).unwrap().0;
    assert_eq!(def.graph.meta(&trigger_run).unwrap().span.as_ref().map(|s| s.start_line), Some(4));
    assert_eq!(extra(&def).get("OnBuild"), None);
    // Without a stage of that name, the trigger's --from is an image (as BuildKit).
    fails!("FROM onbuild\n", "failed to resolve base image \"helper\": not found", Some(1));
    fails!("FROM onbuild AS app\nFROM alpine AS helper\nFROM app\n", "cannot copy from stage \"helper\"", Some(1));
    fails!("FROM busybox\nRUN x\nFROM badonbuild\n", "FROM isn't allowed as an ONBUILD trigger", Some(3));
}

#[test]
fn stage_triggers_run_in_child_stages() {
    let src = "FROM busybox AS base\nONBUILD ENV CHILD=1\nONBUILD RUN echo child\nRUN parent\nFROM base\nRUN x\n";
    let def = conv(src);
    let args: Vec<String> = execs(&def).iter().map(|e| e.args[2].clone()).collect();
    assert_eq!(args, ["parent", "echo child", "x"]);
    assert_eq!(env_of(execs(&def).last().unwrap(), "CHILD").as_deref(), Some("1"));
    assert_eq!(extra(&def).get("OnBuild"), None);
    let mut req = request(src);
    req.target = Some("base".into());
    let def = build(&req, &MockResolver::default()).unwrap();
    assert_eq!(extra(&def)["OnBuild"], json!(["ENV CHILD=1", "RUN echo child"]));
    assert_eq!(execs(&def).len(), 1);
}

#[test]
fn expose_volume_label_user_stopsignal() {
    let def = conv("FROM busybox\nARG P=53\nEXPOSE $P/udp 8000-8001 443/TCP\nVOLUME [\"/a\", \"/b\"]\nLABEL \"k 1\"=v k2=\"x y\"\nUSER 1:2\nSTOPSIGNAL SIGRTMIN+3\n");
    assert_eq!(def.config.exposed_ports().clone().unwrap(), ["443/tcp", "53/udp", "8000/tcp", "8001/tcp"]);
    assert_eq!(def.config.volumes().clone().unwrap(), ["/a", "/b"]);
    let labels = def.config.labels().clone().unwrap();
    assert_eq!((labels["k 1"].as_str(), labels["k2"].as_str(), labels["base"].as_str()), ("v", "x y", "yes"));
    assert_eq!(def.config.user().as_deref(), Some("1:2"));
    assert_eq!(def.config.stop_signal().as_deref(), Some("SIGRTMIN+3"));
    assert_eq!(
        history(&def)[1..],
        [
            // Go's %v of the port map (BuildKit 0.13): keys sorted as strings.
            "EXPOSE map[443/tcp:{} 53/udp:{} 8000/tcp:{} 8001/tcp:{}]",
            "VOLUME [/a /b]",
            "LABEL k 1=v k2=x y",
            "USER 1:2",
            "STOPSIGNAL SIGRTMIN+3"
        ]
    );
    let def = conv("FROM busybox\nMAINTAINER Jane <j@example.com>\n");
    assert_eq!(def.author.as_deref(), Some("Jane <j@example.com>"));
    assert_eq!(history(&def), ["MAINTAINER Jane <j@example.com>"]);
}

#[test]
fn platforms_and_predefined_args() {
    let def = conv("ARG P=linux/arm64\nFROM --platform=$P busybox\nARG TARGETPLATFORM BUILDPLATFORM\nRUN x\n");
    let Some(Op::Source(SourceOp::Image { platform: p, .. })) = def.graph.topological().map(|(_, o)| o.clone()).next()
    else {
        panic!()
    };
    assert_eq!(p.to_string(), "linux/arm64");
    let run = execs(&def).pop().unwrap();
    assert_eq!(run.platform.to_string(), "linux/arm64");
    // TARGETPLATFORM is the build's target, not the stage's --platform (as BuildKit).
    assert_eq!(env_of(&run, "TARGETPLATFORM").as_deref(), Some("linux/amd64"));
    assert_eq!(env_of(&run, "BUILDPLATFORM"), Some(Platform::host().to_string()));
    let def =
        conv_args("ARG V=1\nFROM busybox\nARG V\nARG TARGETARCH\nRUN x\n", &[("TARGETARCH", "riscv64"), ("V", "")]);
    let run = execs(&def).pop().unwrap();
    assert_eq!(env_of(&run, "TARGETARCH").as_deref(), Some("riscv64"));
    assert_eq!(env_of(&run, "V").as_deref(), Some(""), "an empty --build-arg overrides the default");
}

/// One platform's conversion of a cross-compiling Dockerfile, as a multi-platform build does it.
fn conv_for(src: &str, arch: &str) -> BuildDefinition {
    let mut req = request(src);
    req.platform = Platform { os: "linux".into(), architecture: arch.into(), variant: None };
    req.multi_platform = true;
    build(&req, &MockResolver::default()).unwrap_or_else(|e| panic!("{src:?}: {e}"))
}

#[test]
fn cross_compiling_stages_per_target_platform() {
    let src = "FROM --platform=$BUILDPLATFORM busybox AS build\nRUN fetch\nARG TARGETARCH\n\
               RUN make ARCH=$TARGETARCH\nFROM busybox\nARG BUILDARCH\nCOPY --from=build /out /out\nRUN check\n";
    let host = Platform::host();
    let arm = conv_for(src, "riscv64");
    let amd = conv_for(src, "amd64");
    let names = |def: &BuildDefinition| -> Vec<String> {
        def.graph.topological().filter_map(|(id, _)| def.graph.meta(&id).map(|m| m.name.clone())).collect()
    };
    let arm_names = names(&arm);
    // The build stage runs on the build platform; after `ARG TARGETARCH` its steps say for which
    // target (BuildKit's `->riscv64`); the last stage runs on the target platform.
    assert!(arm_names.contains(&format!("[{host} build 2/3] RUN fetch")), "{arm_names:?}");
    assert!(arm_names.contains(&format!("[{host}->riscv64 build 3/3] RUN make ARCH=riscv64")), "{arm_names:?}");
    assert!(arm_names.contains(&"[linux/riscv64 stage-1 3/3] RUN check".to_owned()), "{arm_names:?}");
    let runs = execs(&arm);
    let by_arg = |needle: &str| runs.iter().find(|e| e.args.join(" ").contains(needle)).cloned().unwrap();
    assert_eq!(by_arg("fetch").platform, host);
    assert_eq!(by_arg("make").platform, host);
    assert_eq!(env_of(&by_arg("make"), "TARGETARCH").as_deref(), Some("riscv64"));
    assert_eq!(by_arg("check").platform.architecture, "riscv64");
    assert_eq!(env_of(&by_arg("check"), "BUILDARCH"), Some(host.architecture.clone()));
    // The base image of the target stage is resolved for the target platform.
    let sources: Vec<Platform> = arm
        .graph
        .topological()
        .filter_map(|(_, op)| match op {
            Op::Source(SourceOp::Image { platform, .. }) => Some(platform.clone()),
            _ => None,
        })
        .collect();
    assert!(sources.contains(&host) && sources.iter().any(|p| p.architecture == "riscv64"), "{sources:?}");
    // What does not depend on the target platform is the same op in both graphs (so a merged
    // graph builds it once); what does differs.
    let ids = |def: &BuildDefinition, needle: &str| {
        def.graph
            .topological()
            .find(|(_, op)| matches!(op, Op::Exec(e) if e.args.join(" ").contains(needle)))
            .map(|(id, _)| id)
            .unwrap()
    };
    assert_eq!(ids(&arm, "fetch"), ids(&amd, "fetch"));
    assert_ne!(ids(&arm, "make"), ids(&amd, "make"));
    // A single-platform build names steps without a platform.
    let single = conv(src);
    assert!(names(&single).contains(&"[build 2/3] RUN fetch".to_owned()), "{:?}", names(&single));
}

#[test]
fn base_image_of_another_platform_warns() {
    // The mock's images are all linux/amd64.
    let def = conv_for("FROM busybox\nRUN x\n", "arm64");
    let msgs: Vec<(Option<usize>, &str)> =
        def.warnings.iter().map(|w| (w.span.as_ref().map(|s| s.start_line), w.message.as_str())).collect();
    assert_eq!(
        msgs,
        [(
            Some(1),
            "Base image busybox was pulled with platform \"linux/amd64\", expected \"linux/arm64\" for current build"
        )]
    );
    assert!(conv_for("FROM busybox\nRUN x\n", "amd64").warnings.is_empty());
}

#[test]
fn platform_flag_values_parse_like_containerd() {
    assert_eq!(crate::parse_platform("linux/aarch64").unwrap().to_string(), "linux/arm64");
    assert_eq!(crate::parse_platform(" linux/arm/v7 ").unwrap().to_string(), "linux/arm/v7");
    assert_eq!(crate::parse_platform("arm64").unwrap().to_string(), "linux/arm64");
    let err = crate::parse_platform("linux//arm64").unwrap_err().to_string();
    assert!(err.contains("failed to parse platform"), "{err}");
}

#[test]
fn unused_build_args_warn() {
    let def = conv_args(
        "ARG USED_IN_FROM=busybox\nFROM $USED_IN_FROM\nARG LATER\nRUN x\n",
        &[
            ("LATER", "1"),
            ("NOPE", "2"),
            ("ALSO_NOPE", ""),
            ("https_proxy", "p"),
            ("BUILDKIT_INLINE_CACHE", "1"),
            ("TARGETOS", "linux"),
        ],
    );
    let msgs: Vec<&str> = def.warnings.iter().map(|w| w.message.as_str()).collect();
    assert_eq!(msgs, ["One or more build-args [ALSO_NOPE NOPE] were not consumed"]);
    // An ARG in a stage the target does not need does not count.
    let mut req = request("FROM busybox AS a\nARG X\nFROM busybox\nRUN y\n");
    req.build_args.insert("X".into(), "1".into());
    let def = build(&req, &MockResolver::default()).unwrap();
    assert_eq!(def.warnings.len(), 1);
    // Parser warnings come first.
    let def = conv_args("FROM busybox\nRUN a \\\n\n b\n", &[("Q", "1")]);
    assert_eq!(def.warnings.len(), 2);
    assert!(def.warnings[0].message.contains("Empty continuation line"));
}

#[test]
fn target_errors() {
    let mut req = request("FROM busybox AS builder\nFROM busybox AS runtime\n");
    req.target = Some("buidler".into());
    let e = build(&req, &MockResolver::default()).unwrap_err();
    assert_eq!(e.to_string(), "target stage \"buidler\" could not be found (did you mean builder?)");
    assert_eq!(e.hint(), Some("stages in this Dockerfile: builder, runtime"));
    req.target = Some("x".into());
    let e = build(&req, &MockResolver::default()).unwrap_err();
    assert_eq!(e.to_string(), "target stage \"x\" could not be found");
    req.target = Some("RUNTIME".into());
    assert!(build(&req, &MockResolver::default()).is_ok(), "stage names are case-insensitive");
}
