//! End-to-end tests of the build checks with the real binary: findings printed after a build
//! with `Dockerfile:LINE`, the `# check=` directive (skipping rules, `error=true` failing the
//! build), `--check` and its exit status and report, and `--call=targets|outline`.
//!
//! Builds and `--check` resolve the busybox base from a loopback registry, so they need root
//! and the registry tools; without them each test says why it skips. CI runs them.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::Registry;

fn registry() -> &'static Registry {
    support::busybox_registry()
}

fn ready(test: &str) -> bool {
    support::ready(test)
}

struct Ctx {
    dir: tempfile::TempDir,
}

impl Ctx {
    fn new(dockerfile: &str, files: &[(&str, &str)]) -> Ctx {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        for (name, content) in files {
            std::fs::write(ctx.join(name), content).unwrap();
        }
        Ctx { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Runs `rbuild` with `args` and the context, with `BASE` pointing at the registry's
    /// busybox when `with_registry`.
    fn run(&self, args: &[&str], with_registry: bool) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
        cmd.arg("--root").arg(self.path("store"));
        if with_registry {
            cmd.arg("--build-arg").arg(format!("BASE={}", registry().reference("busybox:latest")));
        }
        let out = cmd.args(args).arg(self.path("ctx")).env("RBUILD_NO_PROGRESS", "1").output().expect("run rbuild");
        eprintln!(
            "rbuild {args:?} -> {}\n--- stdout ---\n{}--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn rbuild(&self, args: &[&str]) -> Output {
        self.run(args, true)
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn store_has_images(store: &Path) -> bool {
    let out = Command::new(env!("CARGO_BIN_EXE_rbuild")).arg("--root").arg(store).args(["images", "-q"]).output();
    out.is_ok_and(|o| !o.stdout.is_empty())
}

const CMD_MSG: &str = "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals";

#[test]
fn build_output_lists_findings_with_their_lines() {
    if !ready("build_output_lists_findings_with_their_lines") {
        return;
    }
    let ctx = Ctx::new("ARG BASE=busybox\nFROM $BASE\nENV greeting hello\nCMD echo hi\n", &[]);
    let out = ctx.rbuild(&["-t", "checks:1"]);
    assert!(out.status.success(), "findings are warnings, not errors");
    let err = stderr(&out);
    assert!(err.contains(" 2 warnings found:\n"), "{err}");
    assert!(
        err.contains(&format!(
            " - JSONArgsRecommended: {CMD_MSG} (line 4)\n   --> Dockerfile:4\n       4 | >>> CMD echo hi\n"
        )),
        "{err}"
    );
    assert!(
        err.contains(" - LegacyKeyValueFormat: \"ENV key=value\" should be used instead of legacy \"ENV key value\" format (line 3)\n   --> Dockerfile:3\n"),
        "{err}"
    );
    // A clean Dockerfile: no summary at all.
    let ctx = Ctx::new("ARG BASE=busybox\nFROM $BASE\nENV greeting=hello\nCMD [\"sh\"]\n", &[]);
    let out = ctx.rbuild(&["-t", "checks:2"]);
    assert!(out.status.success());
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

#[test]
fn check_directive_skips_rules_and_fails_builds() {
    if !ready("check_directive_skips_rules_and_fails_builds") {
        return;
    }
    let ctx = Ctx::new("# check=skip=JSONArgsRecommended\nARG BASE=busybox\nFROM $BASE\nCMD echo hi\n", &[]);
    let out = ctx.rbuild(&["-t", "checks:skip"]);
    assert!(out.status.success());
    assert!(!stderr(&out).contains("JSONArgsRecommended"), "{}", stderr(&out));

    let ctx = Ctx::new("# check=error=true\nARG BASE=busybox\nFROM $BASE\nCMD echo hi\n", &[]);
    let out = ctx.rbuild(&["-t", "checks:error"]);
    assert_eq!(out.status.code(), Some(1), "error=true fails the build");
    let err = stderr(&out);
    assert!(err.contains(&format!(" - JSONArgsRecommended: {CMD_MSG} (line 4)")), "{err}");
    assert!(err.contains("error: lint violation found for rules: JSONArgsRecommended"), "{err}");
    assert!(!store_has_images(&ctx.path("store")), "nothing was built");

    // BUILDKIT_DOCKERFILE_CHECK replaces the directive.
    let out = ctx.rbuild(&["-t", "checks:error", "--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=all"]);
    assert!(out.status.success());
}

#[test]
fn check_reports_and_exit_status() {
    if !ready("check_reports_and_exit_status") {
        return;
    }
    let ctx = Ctx::new("ARG BASE=busybox\nFROM $BASE\nCMD [\"sh\"]\n", &[]);
    let out = ctx.rbuild(&["--check"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "Check complete, no warnings found.\n");

    let ctx = Ctx::new("ARG BASE=busybox\nFROM $BASE AS Build\nCMD echo hi\n", &[]);
    let out = ctx.rbuild(&["--check"]);
    assert_eq!(out.status.code(), Some(1), "findings: status 1");
    assert_eq!(
        stdout(&out),
        format!(
            "Check complete, 2 warnings have been found!\n\n\
             WARNING: StageNameCasing - https://docs.docker.com/go/dockerfile/rule/stage-name-casing/\n\
             Stage name 'Build' should be lowercase\n\
             Dockerfile:2\n--------------------\n   1 |     ARG BASE=busybox\n   2 | >>> FROM $BASE AS Build\n   3 |     CMD echo hi\n   4 |     \n--------------------\n\n\
             WARNING: JSONArgsRecommended - https://docs.docker.com/go/dockerfile/rule/json-args-recommended/\n\
             {CMD_MSG}\n\
             Dockerfile:3\n--------------------\n   1 |     ARG BASE=busybox\n   2 |     FROM $BASE AS Build\n   3 | >>> CMD echo hi\n   4 |     \n--------------------\n"
        )
    );
    assert!(!store_has_images(&ctx.path("store")), "--check builds nothing");

    let out = ctx.rbuild(&["--call=check,format=json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let rules: Vec<&str> = v["warnings"].as_array().unwrap().iter().map(|w| w["ruleName"].as_str().unwrap()).collect();
    assert_eq!(rules, ["StageNameCasing", "JSONArgsRecommended"]);
    assert_eq!(v["warnings"][1]["location"]["ranges"][0]["start"]["line"], 3);

    let out = ctx.rbuild(&["--call=check,ignorestatus=true"]);
    assert_eq!(out.status.code(), Some(0));

    // A Dockerfile that cannot be built: the findings so far, then the error, status 1.
    let ctx = Ctx::new("ARG BASE=busybox\nFROM $BASE AS Build\nBOGUS x\n", &[]);
    let out = ctx.rbuild(&["--check"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).starts_with("Check complete, 1 warning has been found!\n"), "{}", stdout(&out));
    assert!(stderr(&out).contains("unknown instruction: BOGUS"), "{}", stderr(&out));
}

#[test]
fn check_sees_every_stage_and_the_dockerignore() {
    if !ready("check_sees_every_stage_and_the_dockerignore") {
        return;
    }
    let ctx = Ctx::new(
        "ARG BASE=busybox\nFROM $BASE AS unused\nENV k v\nFROM $BASE\nCOPY secret.key /\n",
        &[(".dockerignore", "*.key\n"), ("secret.key", "x")],
    );
    let out = ctx.rbuild(&["--check"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("WARNING: LegacyKeyValueFormat"), "unreachable stages are checked too: {text}");
    assert!(
        text.contains("Attempting to Copy file \"secret.key\" that is excluded by .dockerignore\nDockerfile:5\n"),
        "{text}"
    );
    // With --target, only what the target needs.
    let out = ctx.rbuild(&["--check", "--target", "unused"]);
    assert!(!stdout(&out).contains("CopyIgnoredFile"), "{}", stdout(&out));
}

#[test]
fn call_targets_lists_stages() {
    let ctx = Ctx::new(
        "ARG V=1\n# build compiles the app\nFROM busybox AS build\n\nFROM build AS test\n# release the final image\nFROM busybox AS release\n",
        &[],
    );
    let out = ctx.run(&["--call=targets"], false);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Go's tabwriter: the first column as wide as its widest cell plus one space.
    let row = |name: &str, description: &str| format!("{name:<18}{description}\n");
    let expected = [
        row("TARGET", "DESCRIPTION"),
        row("build", "compiles the app"),
        row("test", ""),
        row("release (default)", "the final image"),
    ]
    .concat();
    assert_eq!(stdout(&out), expected);
    let out = ctx.run(&["--call=targets,format=json"], false);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["targets"][2]["name"], "release");
    assert_eq!(v["targets"][2]["default"], true);
}

#[test]
fn call_outline_lists_args_secrets_and_ssh() {
    if !ready("call_outline_lists_args_secrets_and_ssh") {
        return;
    }
    let ctx = Ctx::new(
        "ARG BASE=busybox\n# VERSION which release to fetch\nARG VERSION=1.2\nFROM $BASE AS deps\nARG UNUSED=x\n\
         # app the application image\nFROM $BASE AS app\nARG VERSION\n# MODE build mode\nARG MODE=release\n\
         RUN --mount=type=secret,id=token,required=true --mount=type=ssh true\n",
        &[],
    );
    let out = ctx.rbuild(&["--call=outline"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let base = registry().reference("busybox:latest");
    let text = stdout(&out);
    let expected_args = format!(
        "BUILD ARG   VALUE{pad}DESCRIPTION\nBASE        {base}   \nVERSION     1.2{pad2}which release to fetch\nMODE        release{pad3}build mode\n",
        pad = " ".repeat(base.len() - 5 + 3),
        pad2 = " ".repeat(base.len() - 3 + 3),
        pad3 = " ".repeat(base.len() - 7 + 3),
    );
    assert_eq!(
        text,
        format!(
            "TARGET:      app\nDESCRIPTION: the application image\n\n{expected_args}\nSECRET   REQUIRED\ntoken    true\n\nSSH       REQUIRED\ndefault   \n\n"
        )
    );
    assert!(!text.contains("UNUSED"), "args of stages the target does not use are left out");
    assert!(!store_has_images(&ctx.path("store")));
}

#[test]
fn base_image_for_another_platform_is_reported() {
    if !ready("base_image_for_another_platform_is_reported") {
        return;
    }
    // A single-manifest image for the architecture this machine is not.
    let (other, other_name, host_name) = match std::env::consts::ARCH {
        "aarch64" => ("amd64", "linux/amd64", "linux/arm64"),
        _ => ("arm64/v8", "linux/arm64", "linux/amd64"),
    };
    let layout = support::build_busybox_layout(other).expect("building the other-arch busybox");
    registry().seed(&layout, "busybox-other:latest", &[]).expect("seeding it");
    let base = registry().reference("busybox-other:latest");
    let ctx = Ctx::new("ARG BASE=busybox\nFROM $BASE\nENV A=1\n", &[]);
    let base_arg = format!("BASE={base}");
    let message = format!(
        "Base image {base} was pulled with platform \"{other_name}\", expected \"{host_name}\" for current build"
    );
    // --check resolves base images (metadata only, as BuildKit does), so it sees the platform.
    let out = ctx.run(&["--build-arg", &base_arg, "--check"], false);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains(&format!("\nWARNING: InvalidBaseImagePlatform\n{message}\nDockerfile:2\n")),
        "{}",
        stdout(&out)
    );
    // A build that runs nothing on it succeeds, with the finding listed.
    let out = ctx.run(&["--build-arg", &base_arg, "-t", "other:1"], false);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains(&format!(" - InvalidBaseImagePlatform: {message} (line 2)\n   --> Dockerfile:2\n")),
        "{}",
        stderr(&out)
    );
}

fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn unbase64(v: &serde_json::Value) -> String {
    use base64::Engine as _;
    let text = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(text).expect("base64")).expect("UTF-8")
}

/// The object's keys, in the order they are written.
fn keys_in_order(text: &str, object: &serde_json::Value) -> Vec<String> {
    let mut keys: Vec<(usize, String)> = object
        .as_object()
        .unwrap()
        .keys()
        .map(|k| (text.find(&format!("\"{k}\":")).unwrap_or(usize::MAX), k.clone()))
        .collect();
    keys.sort();
    keys.into_iter().map(|(_, k)| k).collect()
}

#[test]
fn check_json_is_buildkits_lint_results() {
    if !ready("check_json_is_buildkits_lint_results") {
        return;
    }
    let dockerfile = "ARG BASE=busybox\nFROM $BASE AS Build\nCMD echo \\\n  hi\n";
    let ctx = Ctx::new(dockerfile, &[]);
    let out = ctx.rbuild(&["--call=check,format=json"]);
    assert_eq!(out.status.code(), Some(1), "findings: status 1");
    let text = stdout(&out);
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON report");
    assert_eq!(keys_in_order(&text, &v), ["warnings", "sources"], "no buildError");
    assert_eq!(
        v["sources"],
        serde_json::json!([{"filename": "Dockerfile", "data": base64(dockerfile.as_bytes()), "language": "Dockerfile"}])
    );
    let warnings = v["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 2, "{text}");
    assert_eq!(keys_in_order(&text, &warnings[0]), ["ruleName", "description", "url", "detail", "location"]);
    let line = |n: u32| serde_json::json!({"start": {"line": n}, "end": {"line": n}});
    assert_eq!(
        warnings[0],
        serde_json::json!({
            "ruleName": "StageNameCasing",
            "description": "Stage names should be lowercase",
            "url": "https://docs.docker.com/go/dockerfile/rule/stage-name-casing/",
            "detail": "Stage name 'Build' should be lowercase",
            // sourceIndex 0 and character 0 are left out, as Go's omitempty does.
            "location": {"ranges": [line(2)]},
        })
    );
    assert_eq!(
        warnings[1],
        serde_json::json!({
            "ruleName": "JSONArgsRecommended",
            "description": "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals",
            "url": "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/",
            "detail": CMD_MSG,
            // An instruction on two lines: one range per line, as BuildKit's parser gives.
            "location": {"ranges": [line(3), line(4)]},
        })
    );
    assert!(text.starts_with("{\n  \"warnings\": [\n    {\n      \"ruleName\""), "indented as Go does: {text}");

    // Nothing found: BuildKit's nil slice, status 0.
    let ctx = Ctx::new("ARG BASE=busybox\nFROM $BASE\nCMD [\"sh\"]\n", &[]);
    let out = ctx.rbuild(&["--call=check,format=json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(v["warnings"], serde_json::Value::Null);
    assert_eq!(v["sources"][0]["filename"], "Dockerfile");

    // A Dockerfile that cannot be built: the findings so far and the error, status 1.
    let ctx = Ctx::new("ARG BASE=busybox\nFROM $BASE AS Build\nBOGUS x\n", &[]);
    let out = ctx.rbuild(&["--call=check,format=json"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let v: serde_json::Value = serde_json::from_str(&text).expect("JSON report");
    assert_eq!(keys_in_order(&text, &v), ["warnings", "sources", "buildError"]);
    assert_eq!(v["warnings"].as_array().map(Vec::len), Some(1));
    let error = &v["buildError"];
    assert!(error["message"].as_str().is_some_and(|m| m.contains("unknown instruction: BOGUS")), "{error}");
    assert_eq!(error["location"], serde_json::json!({"ranges": [line(3)]}));
}

#[test]
fn rawjson_progress_reports_findings_as_vertex_warnings() {
    if !ready("rawjson_progress_reports_findings_as_vertex_warnings") {
        return;
    }
    let dockerfile = "ARG BASE=busybox\nFROM $BASE\nRUN true\nCMD echo hi\n";
    let ctx = Ctx::new(dockerfile, &[]);
    let out = ctx.rbuild(&["--progress=rawjson", "--no-cache", "-t", "checks:rawjson"]);
    assert!(out.status.success());
    let err = stderr(&out);
    let events: Vec<serde_json::Value> = err.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let position = |event: &str| events.iter().position(|e| e["event"] == event);
    let warnings: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "warning").collect();
    assert_eq!(warnings.len(), 1, "{err}");
    let w = warnings[0];
    assert!(position("warning") < position("started"), "findings come before the steps: {err}");
    assert_eq!(w["level"], 1);
    assert_eq!(unbase64(&w["short"]), format!("JSONArgsRecommended: {CMD_MSG} (line 4)"));
    let detail: Vec<String> = w["detail"].as_array().expect("detail").iter().map(unbase64).collect();
    assert_eq!(
        detail,
        ["JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals"]
    );
    assert_eq!(w["url"], "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/");
    assert_eq!(w["sourceInfo"]["filename"], "Dockerfile");
    assert_eq!(w["sourceInfo"]["language"], "Dockerfile");
    assert_eq!(unbase64(&w["sourceInfo"]["data"]), dockerfile);
    assert_eq!(w["range"], serde_json::json!([{"start": {"line": 4}, "end": {"line": 4}}]));
    assert!(!err.contains("warning found"), "no text summary in rawjson mode: {err}");
}

/// `(rule, line)` of each finding `--call=check,format=json` reports.
fn json_findings(out: &Output) -> Vec<(String, u64)> {
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)));
    report["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            let line = w["location"]["ranges"][0]["start"]["line"].as_u64().unwrap_or(0);
            (w["ruleName"].as_str().unwrap_or_default().to_owned(), line)
        })
        .collect()
}

#[test]
fn every_rule_fires_on_its_case_and_not_on_the_fixed_one() {
    let test = "every_rule_fires_on_its_case_and_not_on_the_fixed_one";
    if !ready(test) {
        return;
    }
    let bb = registry().reference("busybox:latest");
    let bare = registry().reference("busybox");
    // (rule, Dockerfile that triggers it, the line, the same fixed, extra flags); `BB` is the
    // registry's busybox, `BARE` the same without a tag. The context has app.log (ignored by
    // its .dockerignore) and app.txt.
    let cases: &[(&str, &str, u64, &str, &[&str])] = &[
        ("StageNameCasing", "FROM BB AS Build\n", 1, "FROM BB AS build\n", &[]),
        ("FromAsCasing", "FROM BB as build\n", 1, "FROM BB AS build\n", &[]),
        ("NoEmptyContinuation", "FROM BB\nRUN a \\\n\n  b\n", 4, "FROM BB\nRUN a \\\n  b\n", &[]),
        ("ConsistentInstructionCasing", "FROM BB\nrun true\nRUN x\nCOPY app.txt /\n", 2, "FROM BB\nRUN true\n", &[]),
        ("DuplicateStageName", "FROM BB AS b\nFROM BB AS B\n", 2, "FROM BB AS b1\nFROM BB AS b2\n", &[]),
        ("ReservedStageName", "FROM BB AS context\n", 1, "FROM BB AS ctx\n", &[]),
        ("JSONArgsRecommended", "FROM BB\nENTRYPOINT my-app\n", 2, "FROM BB\nENTRYPOINT [\"my-app\"]\n", &[]),
        ("MaintainerDeprecated", "FROM BB\nMAINTAINER me@example.org\n", 2, "FROM BB\nLABEL a=me\n", &[]),
        ("UndefinedArgInFrom", "ARG tag=latest\nFROM BB${version}\n", 2, "ARG version\nFROM BB${version}\n", &[]),
        ("WorkdirRelativePath", "FROM BB\nWORKDIR app/\n", 2, "FROM BB\nWORKDIR /app\n", &[]),
        ("UndefinedVar", "FROM BB\nENV PATH=$PAHT:/tmp/bin\n", 2, "FROM BB\nENV PATH=$PATH:/tmp/bin\n", &[]),
        (
            "MultipleInstructionsDisallowed",
            "FROM BB\nCMD [\"a\"]\nRUN x\nCMD [\"b\"]\n",
            2,
            "FROM BB\nRUN x\nCMD [\"b\"]\n",
            &[],
        ),
        ("LegacyKeyValueFormat", "FROM BB\nENV key value\n", 2, "FROM BB\nENV key=value\n", &[]),
        (
            "InvalidDefaultArgInFrom",
            "ARG TAG\nFROM BARE:$TAG\n",
            2,
            "ARG TAG=latest\nFROM BARE:$TAG\n",
            &["--build-arg", "TAG=latest"],
        ),
        (
            "FromPlatformFlagConstDisallowed",
            "FROM --platform=linux/amd64 BB\n",
            1,
            "FROM --platform=linux/amd64 BB AS build_amd64\n",
            &[],
        ),
        ("CopyIgnoredFile", "FROM BB\nCOPY ./app.log /\n", 2, "FROM BB\nCOPY ./app.txt /\n", &[]),
        (
            "RedundantTargetPlatform",
            "FROM --platform=${TARGETPLATFORM} BB\n",
            1,
            "FROM --platform=$BUILDPLATFORM BB\n",
            &[],
        ),
        ("SecretsUsedInArgOrEnv", "FROM BB\nARG GITHUB_TOKEN\n", 2, "FROM BB\nARG PUBLIC_KEY\n", &[]),
        ("ExposeProtoCasing", "FROM BB\nEXPOSE 80/TcP\n", 2, "FROM BB\nEXPOSE 80/tcp\n", &[]),
        ("ExposeInvalidFormat", "FROM BB\nEXPOSE 127.0.0.1:80:8080\n", 2, "FROM BB\nEXPOSE 8080\n", &[]),
    ];
    for (rule, bad, line, good, flags) in cases {
        for (dockerfile, fires) in [(bad, true), (good, false)] {
            let text = dockerfile.replace("BARE", &bare).replace("BB", &bb);
            let ctx = Ctx::new(&text, &[("app.log", "log\n"), ("app.txt", "txt\n"), (".dockerignore", "*.log\n")]);
            let out = ctx.run(&[&["build", "--call=check,format=json"], *flags].concat(), false);
            let found = json_findings(&out);
            if fires {
                assert!(found.contains(&(rule.to_string(), *line)), "{rule} at line {line} for {text:?}: {found:?}");
                assert_eq!(out.status.code(), Some(1), "{rule}: findings make the check fail");
            } else {
                assert!(!found.iter().any(|(r, _)| r == rule), "{rule} fired on the fixed {text:?}: {found:?}");
            }
        }
    }
    // InvalidBaseImagePlatform: the registry's busybox is amd64 only.
    let ctx = Ctx::new(&format!("FROM {bb}\n"), &[]);
    let other = if cfg!(target_arch = "x86_64") { "linux/arm64" } else { "linux/amd64" };
    let found = json_findings(&ctx.run(&["build", "--call=check,format=json", "--platform", other], false));
    assert!(found.contains(&("InvalidBaseImagePlatform".to_owned(), 1)), "{found:?}");
    let found = json_findings(&ctx.run(&["build", "--call=check,format=json"], false));
    assert!(!found.iter().any(|(r, _)| r == "InvalidBaseImagePlatform"), "{found:?}");
}
