//! End-to-end tests of the Dockerfile language: the real `rbuild` binary builds Dockerfiles on a
//! busybox base served by a loopback registry; skopeo and umoci check the image it wrote.
//!
//! Tests of instructions whose worker or exporter side is not merged yet are `#[ignore]`d with
//! the reason; they state what BuildKit does and start passing when that side lands
//! (`cargo test --test dockerfile -- --ignored` shows where things stand).
//!
//! They need root and the packages `scripts/install-deps.sh` installs; without them each test
//! says why it skips. CI runs as root with the packages.

mod dfkit;
mod support;

use std::process::Command;

use dfkit::{config_of, created_by, ready, registry, serve_once, tool_json, Ctx};
use serde_json::{json, Value};

#[test]
fn metadata_instructions_set_config_fields() {
    if !ready("metadata_instructions_set_config_fields") {
        return;
    }
    let ctx = Ctx::new(
        "ARG BASE\nFROM $BASE\nARG PORT=8080\nLABEL org.example.name=\"demo app\" version=1\nEXPOSE $PORT 53/udp 7000-7002\n\
         VOLUME /data /cache\nSTOPSIGNAL SIGQUIT\nWORKDIR /srv/app\nUSER 1000:1000\n\
         ENTRYPOINT [\"/bin/sh\", \"-c\"]\nCMD [\"echo hi\"]\n",
        &[],
    );
    let image = ctx.build_oci(&[]);
    let config = config_of(&image);
    let c = &config["config"];
    assert_eq!(c["Labels"]["org.example.name"], "demo app");
    assert_eq!(c["Labels"]["version"], "1");
    assert_eq!(
        c["ExposedPorts"],
        json!({"8080/tcp": {}, "53/udp": {}, "7000/tcp": {}, "7001/tcp": {}, "7002/tcp": {}})
    );
    assert_eq!(c["Volumes"], json!({"/data": {}, "/cache": {}}));
    assert_eq!(c["StopSignal"], "SIGQUIT");
    assert_eq!(c["WorkingDir"], "/srv/app");
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["Entrypoint"], json!(["/bin/sh", "-c"]));
    assert_eq!(c["Cmd"], json!(["echo hi"]));
    let history = created_by(&config);
    for want in [
        "ARG PORT=8080",
        "LABEL org.example.name=demo app version=1",
        // Go's %v of the port map (BuildKit 0.13): keys sorted as strings.
        "EXPOSE map[53/udp:{} 7000/tcp:{} 7001/tcp:{} 7002/tcp:{} 8080/tcp:{}]",
        "VOLUME [/data /cache]",
        "STOPSIGNAL SIGQUIT",
        "WORKDIR /srv/app",
        "USER 1000:1000",
    ] {
        assert!(history.iter().any(|h| h == want), "missing history {want:?} in {history:#?}");
    }
    // WORKDIR made the directory, owned by root (USER comes after it).
    let rootfs = ctx.rootfs();
    assert!(rootfs.join("srv/app").is_dir());
}

#[test]
fn arg_and_env_scoping_reach_run() {
    if !ready("arg_and_env_scoping_reach_run") {
        return;
    }
    let ctx = Ctx::new(
        "ARG BASE\nARG GLOBAL=global-default\nARG ONLY_FROM=x\nFROM $BASE\nARG GLOBAL\nARG LOCAL=local-default\n\
         ENV E=from-env\nARG E=from-arg\nENV KEEP=$LOCAL\n\
         RUN echo \"$GLOBAL|$LOCAL|$E|$ONLY_FROM|$KEEP|$TARGETARCH\" > /out\nARG TARGETARCH\nRUN echo \"$TARGETARCH\" > /arch\n",
        &[],
    );
    let image = ctx.build_oci(&["--build-arg", "LOCAL=from-cli"]);
    let rootfs = ctx.rootfs();
    // A global ARG re-declared in the stage keeps its value; one not re-declared is not
    // visible; an ARG after an ENV of the same name wins inside RUN; TARGETARCH needs an ARG.
    assert_eq!(ctx.read(&rootfs, "out"), "global-default|from-cli|from-arg||from-cli|\n");
    assert!(!ctx.read(&rootfs, "arch").trim().is_empty());
    let config = config_of(&image);
    let env: Vec<&str> = config["config"]["Env"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(env.contains(&"E=from-env") && env.contains(&"KEEP=from-cli"), "{env:?}");
    assert!(
        !env.iter().any(|e| e.starts_with("LOCAL=") || e.starts_with("GLOBAL=")),
        "ARGs must not reach the config: {env:?}"
    );
    let history = created_by(&config);
    assert!(
        history.iter().any(|h| h.starts_with("RUN |3 GLOBAL=global-default LOCAL=from-cli E=from-arg /bin/sh -c echo")),
        "{history:#?}"
    );
}

#[test]
fn target_stage_and_copy_from_index() {
    if !ready("target_stage_and_copy_from_index") {
        return;
    }
    let dockerfile = "ARG BASE\nFROM $BASE\nRUN echo zero > /zero\n\
                      FROM $BASE AS broken\nRUN echo never-built; exit 1\n\
                      FROM $BASE AS final\nCOPY --from=0 /zero /copied\nWORKDIR /w\nRUN cat /copied > here\n";
    let ctx = Ctx::new(dockerfile, &[]);
    ctx.build_oci(&["--target", "final"]);
    let rootfs = ctx.rootfs();
    assert_eq!(ctx.read(&rootfs, "copied"), "zero\n");
    assert_eq!(ctx.read(&rootfs, "w/here"), "zero\n");

    let out = ctx.rbuild(&["--target", "finl"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("target stage \"finl\" could not be found (did you mean final?)"), "{err}");

    // Without --target the last stage is built, and the failing stage is not needed either.
    let ctx = Ctx::new(dockerfile, &[]);
    ctx.build_oci(&[]);
}

#[test]
fn shell_changes_how_run_is_started() {
    if !ready("shell_changes_how_run_is_started") {
        return;
    }
    // The SHELL argv gets the command appended: here a wrapper that leaves a marker, then
    // evaluates the command it is given as $1.
    let ctx = Ctx::new(
        "ARG BASE\nFROM $BASE\nSHELL [\"/bin/sh\", \"-c\", \"echo wrapped > /marker; eval \\\"$1\\\"\", \"sh\"]\n\
         RUN echo ran > /ran\n",
        &[],
    );
    ctx.build_oci(&[]);
    let rootfs = ctx.rootfs();
    assert_eq!(ctx.read(&rootfs, "marker"), "wrapped\n");
    assert_eq!(ctx.read(&rootfs, "ran"), "ran\n");
}

#[test]
fn run_heredoc_without_shebang() {
    if !ready("run_heredoc_without_shebang") {
        return;
    }
    let ctx = Ctx::new("ARG BASE\nFROM $BASE\nRUN <<EOF\necho one > /one\necho two > /two\nEOF\n", &[]);
    ctx.build_oci(&[]);
    let rootfs = ctx.rootfs();
    assert_eq!(ctx.read(&rootfs, "one"), "one\n");
    assert_eq!(ctx.read(&rootfs, "two"), "two\n");
}

#[test]
fn copy_link_adds_an_independent_layer() {
    if !ready("copy_link_adds_an_independent_layer") {
        return;
    }
    let ctx = Ctx::new(
        "ARG BASE\nFROM $BASE\nRUN echo before > /before\nCOPY --link app.txt /opt/app/\nRUN cat /opt/app/app.txt > /after\n",
        &[("app.txt", b"linked\n")],
    );
    let image = ctx.build_oci(&[]);
    let rootfs = ctx.rootfs();
    assert_eq!(ctx.read(&rootfs, "opt/app/app.txt"), "linked\n");
    assert_eq!(ctx.read(&rootfs, "after"), "linked\n");
    assert_eq!(ctx.read(&rootfs, "before"), "before\n");
    let inspect = tool_json(&["skopeo", "inspect", &image]);
    // busybox + RUN + COPY --link + RUN.
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 4, "{inspect}");
    let history = created_by(&config_of(&image));
    assert!(history.iter().any(|h| h == "COPY app.txt /opt/app/ # buildkit"), "{history:#?}");
}

#[test]
fn copy_link_rejects_user_names_before_building() {
    // No registry or root needed: the frontend refuses it.
    let ctx = Ctx::new("FROM scratch\nCOPY --link --chown=app:app f /f\n", &[("f", b"x")]);
    let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .arg("--root")
        .arg(ctx.path("store"))
        .arg(ctx.path("ctx"))
        .env("RBUILD_NO_PROGRESS", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Dockerfile:2") && err.contains("cannot be used with --link"), "{err}");
}

#[test]
fn docker_only_config_fields() {
    if !ready("docker_only_config_fields") {
        return;
    }
    let ctx = Ctx::new(
        "ARG BASE\nFROM $BASE\nMAINTAINER Jane Doe <jane@example.com>\nSHELL [\"/bin/sh\", \"-ec\"]\n\
         HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --start-interval=1s --retries=4 CMD wget -q -O- http://localhost/ || exit 1\n\
         ONBUILD RUN echo child\nCMD [\"sh\"]\n",
        &[],
    );
    let image = ctx.build_oci(&[]);
    let config = config_of(&image);
    let c = &config["config"];
    assert_eq!(config["author"], "Jane Doe <jane@example.com>");
    assert_eq!(c["Shell"], json!(["/bin/sh", "-ec"]));
    assert_eq!(
        c["Healthcheck"],
        json!({"Test": ["CMD-SHELL", "wget -q -O- http://localhost/ || exit 1"], "Interval": 30_000_000_000i64,
               "Timeout": 3_000_000_000i64, "StartPeriod": 5_000_000_000i64, "StartInterval": 1_000_000_000i64, "Retries": 4})
    );
    assert_eq!(c["OnBuild"], json!(["RUN echo child"]));
    assert_eq!(c["ArgsEscaped"], true);
    let history = created_by(&config);
    assert!(history.iter().any(|h| h.starts_with("HEALTHCHECK &{[\"CMD-SHELL\"")), "{history:#?}");
}

#[test]
fn onbuild_triggers_run_in_the_child_build() {
    if !ready("onbuild_triggers_run_in_the_child_build") {
        return;
    }
    let parent = Ctx::new(
        "ARG BASE\nFROM $BASE\nONBUILD ENV FROM_PARENT=yes\nONBUILD RUN echo triggered > /triggered\nRUN echo parent > /parent\n",
        &[],
    );
    let image = parent.build_oci(&[]);
    assert_eq!(
        config_of(&image)["config"]["OnBuild"],
        json!(["ENV FROM_PARENT=yes", "RUN echo triggered > /triggered"])
    );
    // The parent's own build does not run its triggers.
    let rootfs = parent.rootfs();
    assert!(!rootfs.join("triggered").exists());
    let pushed = registry().reference("onbuild-parent:1");
    let out = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false", &image, &format!("docker://{pushed}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let child = Ctx::new(&format!("FROM {pushed}\nRUN test -f /triggered && echo \"$FROM_PARENT\" > /child\n"), &[]);
    let image = child.build_oci(&[]);
    let rootfs = child.rootfs();
    assert_eq!(child.read(&rootfs, "triggered"), "triggered\n");
    assert_eq!(child.read(&rootfs, "child"), "yes\n");
    let config = config_of(&image);
    assert!(config["config"].get("OnBuild").is_none_or(Value::is_null), "triggers are consumed: {config}");
    let history = created_by(&config);
    assert!(history.iter().any(|h| h == "ENV FROM_PARENT=yes"), "{history:#?}");
}

#[test]
fn heredoc_files() {
    if !ready("heredoc_files") {
        return;
    }
    let ctx = Ctx::new(
        "ARG BASE\nFROM $BASE\nENV NAME=world\nCOPY <<EOF /etc/greeting\nhello $NAME\nEOF\n\
         COPY --chmod=755 <<'RAW' <<-TABS /opt/\n$NAME\nRAW\n\tindented\n\tTABS\n\
         RUN <<EOF\n#!/bin/sh\necho \"script ran as $0\" > /script\nEOF\n",
        &[],
    );
    ctx.build_oci(&[]);
    let rootfs = ctx.rootfs();
    assert_eq!(ctx.read(&rootfs, "etc/greeting"), "hello world\n");
    assert_eq!(ctx.read(&rootfs, "opt/RAW"), "$NAME\n");
    assert_eq!(ctx.read(&rootfs, "opt/TABS"), "indented\n");
    assert_eq!(ctx.read(&rootfs, "script"), "script ran as /dev/pipes/EOF\n");
    assert!(!rootfs.join("dev/pipes").exists(), "the script mount must not reach the layer");
}

#[test]
fn run_mounts() {
    if !ready("run_mounts") {
        return;
    }
    let ctx = Ctx::new(
        "ARG BASE\nFROM $BASE AS tools\nRUN echo tool > /tool\nFROM $BASE\n\
         RUN --mount=type=bind,source=src,target=/src cat /src/input > /from-context\n\
         RUN --mount=from=tools,source=/tool,target=/t cat /t > /from-stage\n\
         RUN --mount=type=cache,target=/var/cache/app echo cached > /var/cache/app/f && ls /var/cache/app > /cache-listing\n\
         RUN --mount=type=tmpfs,target=/scratch echo x > /scratch/x && ls /scratch > /tmpfs-listing\n\
         RUN --mount=type=secret,id=token,required cat /run/secrets/token > /secret-len-check && wc -c < /run/secrets/token > /secret-len && rm /secret-len-check\n",
        &[("src/input", b"context input\n")],
    );
    let secret = ctx.path("token.txt");
    std::fs::write(&secret, "s3cret").unwrap();
    let secret_arg = format!("id=token,src={}", secret.display());
    ctx.build_oci(&["--secret", &secret_arg]);
    let rootfs = ctx.rootfs();
    assert_eq!(ctx.read(&rootfs, "from-context"), "context input\n");
    assert_eq!(ctx.read(&rootfs, "from-stage"), "tool\n");
    assert_eq!(ctx.read(&rootfs, "cache-listing"), "f\n");
    assert!(!rootfs.join("var/cache/app/f").exists(), "cache contents never reach a layer");
    assert_eq!(ctx.read(&rootfs, "tmpfs-listing"), "x\n");
    assert_eq!(ctx.read(&rootfs, "secret-len").trim(), "6");
    assert!(!rootfs.join("run/secrets/token").exists());
    assert!(!rootfs.join("src").exists() && !rootfs.join("scratch").exists(), "mount points are removed");
}

#[test]
fn add_local_archive_is_extracted() {
    if !ready("add_local_archive_is_extracted") {
        return;
    }
    let staging = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(staging.path().join("pkg/bin")).unwrap();
    std::fs::write(staging.path().join("pkg/bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
    let tgz = staging.path().join("pkg.tar.gz");
    let st = Command::new("tar").arg("-czf").arg(&tgz).arg("-C").arg(staging.path()).arg("pkg").status().unwrap();
    assert!(st.success());
    let ctx = Ctx::new(
        "ARG BASE\nFROM $BASE\nADD pkg.tar.gz /opt/\nADD --unpack=false pkg.tar.gz /raw/\nADD plain.txt /plain.txt\n",
        &[("pkg.tar.gz", &std::fs::read(&tgz).unwrap()), ("plain.txt", b"plain\n")],
    );
    ctx.build_oci(&[]);
    let rootfs = ctx.rootfs();
    assert_eq!(ctx.read(&rootfs, "opt/pkg/bin/tool"), "#!/bin/sh\necho tool\n");
    assert!(rootfs.join("raw/pkg.tar.gz").is_file());
    assert_eq!(ctx.read(&rootfs, "plain.txt"), "plain\n");
}

#[test]
fn add_url_downloads_into_a_directory() {
    if !ready("add_url_downloads_into_a_directory") {
        return;
    }
    let port = serve_once(b"downloaded\n", 4);
    // A well-formed digest that is not the body's.
    let sum = "sha256:3bc1be6bd7d0c1dfd9e2a0fce6b1a5b0d5a1c4e6cb4f1f0f50f6c7ac3aa1e80d";
    let ctx =
        Ctx::new(&format!("ARG BASE\nFROM $BASE\nADD http://127.0.0.1:{port}/files/data.txt?token=x /dl/\n"), &[]);
    ctx.build_oci(&[]);
    let rootfs = ctx.rootfs();
    assert_eq!(ctx.read(&rootfs, "dl/data.txt"), "downloaded\n");
    // The file gets mode 0600 (BuildKit).
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(rootfs.join("dl/data.txt")).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);
    // A wrong checksum fails the build with BuildKit's message.
    let ctx = Ctx::new(&format!("ARG BASE\nFROM $BASE\nADD --checksum={sum} http://127.0.0.1:{port}/d /d\n"), &[]);
    let out = ctx.rbuild(&[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("digest mismatch"));
}

#[test]
fn copy_parents_and_exclude() {
    if !ready("copy_parents_and_exclude") {
        return;
    }
    let ctx = Ctx::new(
        "ARG BASE\nFROM $BASE\nCOPY --parents a/b/c.txt x/./y/z.txt /p/\nCOPY --exclude=*.md --exclude=skip docs /docs/\n",
        &[
            ("a/b/c.txt", b"c"),
            ("x/y/z.txt", b"z"),
            ("docs/keep.txt", b"k"),
            ("docs/drop.md", b"d"),
            ("docs/skip/f", b"s"),
        ],
    );
    ctx.build_oci(&[]);
    let rootfs = ctx.rootfs();
    assert_eq!(ctx.read(&rootfs, "p/a/b/c.txt"), "c");
    assert_eq!(ctx.read(&rootfs, "p/y/z.txt"), "z", "the /./ pivot keeps only what follows it");
    assert_eq!(ctx.read(&rootfs, "docs/keep.txt"), "k");
    assert!(!rootfs.join("docs/drop.md").exists() && !rootfs.join("docs/skip").exists());
}
