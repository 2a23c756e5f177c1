//! End-to-end tests: the real `rbuild` binary builds real Dockerfiles on a busybox base image
//! served by a real registry (Debian's docker-registry on a loopback port), and independent
//! tools (skopeo, umoci) check what it wrote.
//!
//! They need root (namespaces, overlayfs, mknod) and the Debian packages `scripts/install-deps.sh`
//! installs; without them each test says why it skips. CI runs as root with the packages.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use support::Registry;

/// One registry for the whole test binary, seeded with `busybox:latest`.
fn registry() -> &'static Registry {
    support::busybox_registry()
}

fn ready(test: &str) -> bool {
    support::ready(test)
}

fn base() -> String {
    registry().reference("busybox:latest")
}

struct Build {
    root: PathBuf,
}

impl Build {
    fn new(dir: &Path) -> Build {
        Build { root: dir.join("store") }
    }

    fn rbuild(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .env("RBUILD_NO_PROGRESS", "1")
            .output()
            .expect("run rbuild");
        eprintln!("rbuild {args:?} -> {}\n--- stderr ---\n{}", out.status, String::from_utf8_lossy(&out.stderr));
        out
    }
}

fn context(dir: &Path, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    for (name, content) in files {
        let p = ctx.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    ctx
}

fn tool_json(args: &[&str]) -> Value {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("run tool");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("tool printed JSON")
}

/// Unpacks an OCI archive with umoci and returns the rootfs directory.
fn umoci_unpack(archive: &Path, dir: &Path) -> PathBuf {
    let layout = dir.join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    let st = Command::new("tar").arg("-xf").arg(archive).arg("-C").arg(&layout).status().unwrap();
    assert!(st.success());
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let tag = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"].as_str().unwrap().to_owned();
    let bundle = dir.join("bundle");
    let out = Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(out.status.success(), "umoci: {}", String::from_utf8_lossy(&out.stderr));
    bundle.join("rootfs")
}

fn demo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/demo")
}

#[test]
fn demo_builds_and_independent_tools_accept_the_image() {
    if !ready("demo_builds_and_independent_tools_accept_the_image") || !support::have("umoci") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let b = Build::new(t.path());
    let archive = t.path().join("demo.tar");
    let arg = format!("BASE={}", base());
    let dest = format!("type=oci,dest={}", archive.display());
    let demo = demo_dir();
    let out =
        b.rbuild(&["-t", "demo:1.0", "--build-arg", &arg, "-o", &dest, "-o", "type=image", demo.to_str().unwrap()]);
    assert!(out.status.success());

    // The image as skopeo sees it: 4 layers (busybox, WORKDIR, COPY, RUN) and the config.
    let src = format!("oci-archive:{}", archive.display());
    let inspect = tool_json(&["skopeo", "inspect", &src]);
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 4, "{inspect}");
    let config = tool_json(&["skopeo", "inspect", "--config", &src]);
    let c = &config["config"];
    assert_eq!(
        c["Env"],
        serde_json::json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "APP_HOME=/app",
            "GREETING_FILE=GREETING"
        ])
    );
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/cat"]));
    assert_eq!(c["Cmd"], serde_json::json!(["/app/summary.txt"]));
    assert_eq!(c["WorkingDir"], "/app");
    let history = config["history"].as_array().unwrap();
    assert_eq!(history.iter().filter(|h| h["empty_layer"] != true).count(), 4);

    // The files, unpacked by umoci: the RUN steps ran in the sandbox as PID 1.
    let rootfs = umoci_unpack(&archive, t.path());
    let summary = std::fs::read_to_string(rootfs.join("app/summary.txt")).unwrap();
    assert_eq!(summary, "HELLO FROM THE RBUILD DEMO\npid=1 host=buildkitsandbox\n27\n");
    assert!(!rootfs.join("app/size.txt").exists(), "rm in a RUN step must remove the file");
    assert!(rootfs.join("bin/busybox").is_file());

    // The local store has it too, under the docker-normalized name.
    let images = b.rbuild(&["images"]);
    let listing = String::from_utf8_lossy(&images.stdout);
    assert!(listing.lines().any(|l| l.starts_with("demo") && l.contains("1.0")), "{listing}");

    // skopeo can push what we wrote to a registry.
    let dest = format!("docker://{}", registry().reference("demo:1.0"));
    let st = Command::new("skopeo").args(["copy", "--dest-tls-verify=false", &src, &dest]).output().unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
}

#[test]
fn run_is_isolated_in_its_own_namespaces() {
    if !ready("run_is_isolated_in_its_own_namespaces") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let marker = format!("rbuild-escape-test-{}", std::process::id());
    let dockerfile = format!(
        "ARG BASE\nFROM $BASE\n\
         RUN --network=none echo $$ > /pid && hostname > /hostname && ls /sys/class/net > /ifaces \
         && cat /sys/class/net/lo/operstate > /lo_state && echo x > /{marker}\n"
    );
    let ctx = context(t.path(), &dockerfile, &[]);
    let b = Build::new(t.path());
    let archive = t.path().join("img.tar");
    let arg = format!("BASE={}", base());
    let dest = format!("type=oci,dest={}", archive.display());
    assert!(b.rbuild(&["-t", "iso:1", "--build-arg", &arg, "-o", &dest, ctx.to_str().unwrap()]).status.success());
    assert!(!Path::new("/").join(&marker).exists(), "a file written to / inside RUN reached the host");

    if !support::have("umoci") {
        return;
    }
    let rootfs = umoci_unpack(&archive, t.path());
    let read = |p: &str| std::fs::read_to_string(rootfs.join(p)).unwrap();
    assert_eq!(read("pid"), "1\n");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(read("hostname"), "buildkitsandbox\n");
    assert_ne!(read("hostname"), host);
    assert_eq!(read("ifaces"), "lo\n");
    // lo is up: its operstate is "unknown" (loopback has no carrier state), never "down".
    assert_ne!(read("lo_state").trim(), "down");
    assert!(rootfs.join(&marker).exists());
    // Mount points the sandbox needed are not part of the layer.
    assert!(!rootfs.join("proc").exists() || rootfs.join("proc").read_dir().unwrap().next().is_none());
}

#[test]
fn rebuild_hits_the_cache_and_reproduces_the_image() {
    if !ready("rebuild_hits_the_cache_and_reproduces_the_image") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let ctx = context(
        t.path(),
        "ARG BASE\nFROM $BASE AS a\nRUN echo one > /one\nFROM $BASE\nCOPY --from=a /one /copied\nCOPY f.txt /f.txt\nRUN cat /copied /f.txt > /both\n",
        &[("f.txt", "context file\n")],
    );
    let b = Build::new(t.path());
    let arg = format!("BASE={}", base());
    let iid = |n: &str| t.path().join(n);
    let build = |iidfile: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
            .arg("--root")
            .arg(&b.root)
            .args(["-t", "cached:1", "--build-arg", &arg, "--iidfile"])
            .arg(iidfile)
            .arg(&ctx)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let first = build(&iid("1"));
    assert!(first.contains("DONE"));
    let second = build(&iid("2"));
    let steps = second.lines().filter(|l| l.contains("] RUN") || l.contains("] COPY")).count();
    let cached = second.lines().filter(|l| l.ends_with("CACHED")).count();
    assert!(steps >= 3 && cached >= steps, "second build was not fully cached:\n{second}");
    assert!(!second.contains("DONE"), "nothing should execute on a cached rebuild:\n{second}");
    assert_eq!(std::fs::read(iid("1")).unwrap(), std::fs::read(iid("2")).unwrap());

    // Editing a context file re-runs only what reads it.
    std::fs::write(ctx.join("f.txt"), "changed\n").unwrap();
    let third = build(&iid("3"));
    assert!(third.contains("RUN echo one > /one\n#") && third.contains("CACHED"), "{third}");
    assert_ne!(std::fs::read(iid("1")).unwrap(), std::fs::read(iid("3")).unwrap());
}

#[test]
fn failing_run_names_the_dockerfile_line() {
    if !ready("failing_run_names_the_dockerfile_line") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let ctx = context(t.path(), "ARG BASE\nFROM $BASE\nRUN echo about to fail\nRUN echo oops >&2; exit 3\n", &[]);
    let out = Build::new(t.path()).rbuild(&["--build-arg", &format!("BASE={}", base()), ctx.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exit code: 3"), "{err}");
    assert!(err.contains("Dockerfile:4"), "{err}");
    assert!(err.contains(">>> RUN echo oops >&2; exit 3"), "{err}");
    assert!(err.contains("oops"), "the step's output must be shown: {err}");
}

#[test]
fn unsupported_and_unknown_instructions_fail_with_their_line() {
    let t = tempfile::tempdir().unwrap();
    let ctx = context(t.path(), "FROM scratch\nCOPPY a b\n", &[]);
    let out = Build::new(t.path()).rbuild(&[ctx.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(err.to_lowercase().contains("unknown instruction"), "{err}");
    assert!(err.contains("COPY"), "the error should suggest COPY: {err}");
}

#[test]
fn from_scratch_copy_produces_a_single_layer_image() {
    let t = tempfile::tempdir().unwrap();
    if !support::require_root("from_scratch_copy_produces_a_single_layer_image") {
        return;
    }
    let ctx = context(t.path(), "FROM scratch\nCOPY hello.txt /greet/\nCMD [\"/x\"]\n", &[("hello.txt", "hi\n")]);
    let b = Build::new(t.path());
    let archive = t.path().join("s.tar");
    let dest = format!("type=oci,dest={}", archive.display());
    assert!(b.rbuild(&["-t", "scratchy:1", "-o", &dest, ctx.to_str().unwrap()]).status.success());
    if !support::have("skopeo") {
        return;
    }
    let src = format!("oci-archive:{}", archive.display());
    let config = tool_json(&["skopeo", "inspect", "--config", &src]);
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["/x"]));
    assert_eq!(config["config"]["Env"][0], "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
}

#[test]
fn tag_inspect_and_rmi_manage_store_names() {
    if !support::require_root("tag_inspect_and_rmi_manage_store_names") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let ctx = context(t.path(), "FROM scratch\nCOPY a /a\nENV X=1\n", &[("a", "a\n")]);
    let b = Build::new(t.path());
    assert!(b.rbuild(&["-t", "named:1", ctx.to_str().unwrap()]).status.success());
    assert!(b.rbuild(&["tag", "named:1", "other/named:2"]).status.success());
    let inspect = b.rbuild(&["inspect", "docker.io/other/named:2"]);
    assert!(inspect.status.success());
    let v: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(v["config"]["config"]["Env"][1], "X=1");
    assert_eq!(v["manifest"]["layers"].as_array().unwrap().len(), 1);
    let listing = String::from_utf8_lossy(&b.rbuild(&["images"]).stdout).into_owned();
    assert!(listing.contains("other/named") && listing.contains("named "), "{listing}");
    assert!(b.rbuild(&["rmi", "named:1"]).status.success());
    assert_eq!(b.rbuild(&["rmi", "named:1"]).status.code(), Some(1));
    assert_eq!(b.rbuild(&["inspect", "named:1"]).status.code(), Some(1));
}

#[test]
fn push_puts_the_image_in_a_registry_skopeo_can_read() {
    if !ready("push_puts_the_image_in_a_registry_skopeo_can_read") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let ctx = context(t.path(), "ARG BASE\nFROM $BASE\nRUN echo pushed > /p\nCMD [\"cat\", \"/p\"]\n", &[]);
    let b = Build::new(t.path());
    let name = registry().reference("pushed:1");
    let arg = format!("BASE={}", base());
    assert!(b.rbuild(&["-t", &name, "--build-arg", &arg, "--push", ctx.to_str().unwrap()]).status.success());
    let src = format!("docker://{name}");
    let inspect = tool_json(&["skopeo", "inspect", "--tls-verify=false", &src]);
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 2, "{inspect}");
    // The image also stays in the local store, and `rbuild push` of another name works.
    let other = registry().reference("pushed:again");
    assert!(b.rbuild(&["tag", &name, &other]).status.success());
    assert!(b.rbuild(&["push", &other]).status.success());
    let again = tool_json(&["skopeo", "inspect", "--tls-verify=false", &format!("docker://{other}")]);
    assert_eq!(again["Digest"], inspect["Digest"], "the same manifest under both tags");
    // The pushed image works as a base for the next build.
    let ctx2 = t.path().join("ctx2");
    std::fs::create_dir_all(&ctx2).unwrap();
    std::fs::write(ctx2.join("Dockerfile"), format!("FROM {name}\nRUN cat /p > /q\n")).unwrap();
    assert!(Build::new(&t.path().join("second")).rbuild(&[ctx2.to_str().unwrap()]).status.success());
}

#[test]
fn every_output_type_writes_what_its_reader_expects() {
    if !ready("every_output_type_writes_what_its_reader_expects") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let ctx = context(t.path(), "ARG BASE\nFROM $BASE\nRUN echo out > /out && rm /bin/vi\n", &[]);
    let b = Build::new(t.path());
    let arg = format!("BASE={}", base());
    let docker = t.path().join("docker.tar");
    let local = t.path().join("rootfs");
    let fstar = t.path().join("fs.tar");
    let zstd = t.path().join("zstd.tar");
    let outs = [
        format!("type=docker,dest={}", docker.display()),
        format!("type=local,dest={}", local.display()),
        format!("type=tar,dest={}", fstar.display()),
    ];
    let mut args = vec!["-t", "outs:1", "--build-arg", &arg];
    for o in &outs {
        args.extend(["-o", o.as_str()]);
    }
    args.push(ctx.to_str().unwrap());
    assert!(b.rbuild(&args).status.success());

    // docker load format, as skopeo reads it.
    let inspect = tool_json(&["skopeo", "inspect", &format!("docker-archive:{}", docker.display())]);
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 2, "{inspect}");
    // The final filesystem: the RUN's file is there, the deleted one is not (whiteouts applied).
    assert_eq!(std::fs::read_to_string(local.join("out")).unwrap(), "out\n");
    assert!(!local.join("bin/vi").exists() && local.join("bin/sh").exists());
    let listing = Command::new("tar").arg("-tf").arg(&fstar).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.lines().any(|l| l.trim_start_matches("./") == "out"), "{listing}");
    assert!(!listing.lines().any(|l| l.ends_with("bin/vi") || l.contains(".wh.")), "{listing}");

    // zstd layers with OCI media types.
    let dest = format!("type=oci,dest={},compression=zstd,force-compression=true", zstd.display());
    assert!(b.rbuild(&["-t", "outs:zstd", "--build-arg", &arg, "-o", &dest, ctx.to_str().unwrap()]).status.success());
    let raw = tool_json(&["skopeo", "inspect", "--raw", &format!("oci-archive:{}", zstd.display())]);
    let types: Vec<&str> = raw["layers"].as_array().unwrap().iter().map(|l| l["mediaType"].as_str().unwrap()).collect();
    assert!(types.iter().all(|m| *m == "application/vnd.oci.image.layer.v1.tar+zstd"), "{types:?}");
}

#[test]
fn run_confinement_allows_package_manager_work_and_blocks_dangerous_syscalls() {
    if !ready("run_confinement_allows_package_manager_work_and_blocks_dangerous_syscalls") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    // Each probe records its outcome in a file; the step itself must succeed.
    let script = [
        // What package managers do: all must work.
        "touch /f && chown 1000:1000 /f && chmod 4755 /f && stat -c '%u:%g %a' /f > /pm_chown",
        "mknod /dev_null_copy c 1 3 && stat -c '%F' /dev_null_copy > /pm_mknod",
        "su app -c 'id -u' > /pm_su",
        // What a build must not do: blocked by capabilities or seccomp.
        "(mount -t proc proc /mnt 2>&1 || true) > /deny_mount",
        "(unshare -U true 2>&1 || true) > /deny_unshare",
        "dd if=/dev/zero of=/swapfile bs=4096 count=16 2>/dev/null && chmod 600 /swapfile && mkswap /swapfile >/dev/null",
        "(swapon /swapfile 2>&1 || true) > /deny_swapon && rm /swapfile",
        "(reboot -f 2>&1 || true) > /deny_reboot",
        "grep -E '^(CapEff|CapBnd|CapInh|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status > /status",
        "(sh -c 'echo 1 > /proc/sys/kernel/panic_on_oops' 2>&1 || true) > /deny_procsys",
        "wc -c < /proc/keys > /masked_keys",
    ]
    .join(" && ");
    let dockerfile = format!("ARG BASE\nFROM $BASE\nRUN {script}\n");
    let ctx = context(t.path(), &dockerfile, &[]);
    let b = Build::new(t.path());
    let archive = t.path().join("c.tar");
    let dest = format!("type=oci,dest={}", archive.display());
    let arg = format!("BASE={}", base());
    assert!(b.rbuild(&["-t", "conf:1", "--build-arg", &arg, "-o", &dest, ctx.to_str().unwrap()]).status.success());
    if !support::have("umoci") {
        return;
    }
    let rootfs = umoci_unpack(&archive, t.path());
    let read = |p: &str| std::fs::read_to_string(rootfs.join(p)).unwrap();
    assert_eq!(read("pm_chown"), "1000:1000 4755\n", "chown + setuid chmod");
    assert_eq!(read("pm_mknod"), "character special file\n");
    assert_eq!(read("pm_su"), "1000\n");
    for probe in ["deny_mount", "deny_unshare", "deny_swapon", "deny_reboot"] {
        let out = read(probe).to_lowercase();
        assert!(out.contains("not permitted") || out.contains("permission denied"), "{probe}: {out}");
    }
    assert!(read("deny_procsys").contains("Read-only file system"), "{}", read("deny_procsys"));
    assert_eq!(read("masked_keys"), "0\n");
    let status = read("status");
    for want in [
        "CapInh:\t0000000000000000",
        "CapEff:\t00000000a80425fb",
        "CapBnd:\t00000000a80425fb",
        "CapAmb:\t0000000000000000",
        "NoNewPrivs:\t0",
        "Seccomp:\t2",
    ] {
        assert!(status.contains(want), "missing {want:?} in\n{status}");
    }
}

/// A tiny static program for probes busybox has no applet for: `keyctl` calls keyctl(2) and
/// prints `EPERM` or `allowed`; `euid` prints the effective uid (made setuid root below).
const PROBE_C: &str = r#"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "keyctl") == 0) {
        /* KEYCTL_GET_KEYRING_ID of the session keyring, without creating it. */
        long r = syscall(SYS_keyctl, 0, -3, 0);
        puts(r < 0 && errno == EPERM ? "EPERM" : "allowed");
        return 0;
    }
    printf("%d\n", (int)geteuid());
    return 0;
}
"#;

#[test]
fn run_confinement_blocks_keyctl_and_gives_a_non_root_user_what_runc_gives() {
    let test = "run_confinement_blocks_keyctl_and_gives_a_non_root_user_what_runc_gives";
    if !ready(test) || !support::require_tool(test, "umoci", "umoci") || !support::require_tool(test, "gcc", "gcc") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let ctx = context(t.path(), "", &[("probe.c", PROBE_C)]);
    let built = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(ctx.join("probe"))
        .arg(ctx.join("probe.c"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(built, "{test}: gcc with a static libc (Debian gcc + libc6-dev) builds the probe");
    let dockerfile = "ARG BASE\nFROM $BASE\nCOPY --chmod=4755 probe /probe\n\
         RUN /probe keyctl > /keyctl_default\n\
         RUN --security=insecure /probe keyctl > /keyctl_insecure\n\
         USER app\n\
         RUN grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status > /tmp/status \
             && /probe euid > /tmp/euid && id -u > /tmp/uid\n";
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    let b = Build::new(t.path());
    let archive = t.path().join("c.tar");
    let dest = format!("type=oci,dest={}", archive.display());
    let arg = format!("BASE={}", base());
    let out = b.rbuild(&[
        "-t",
        "probe:1",
        "--allow",
        "security.insecure",
        "--build-arg",
        &arg,
        "-o",
        &dest,
        ctx.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let rootfs = umoci_unpack(&archive, t.path());
    let read = |p: &str| std::fs::read_to_string(rootfs.join(p)).unwrap();
    assert_eq!(read("keyctl_default"), "EPERM\n", "seccomp refuses keyctl as Docker's profile does");
    assert_eq!(read("keyctl_insecure"), "allowed\n", "--security=insecure lifts seccomp");
    assert_eq!(read("tmp/uid"), "1000\n");
    // no_new_privs stays off: a setuid-root program still runs as root for the user.
    assert_eq!(read("tmp/euid"), "0\n");
    // runc for a non-root user: the bounding set stays Docker's, the rest is empty.
    let status = read("tmp/status");
    for want in [
        "CapInh:\t0000000000000000",
        "CapPrm:\t0000000000000000",
        "CapEff:\t0000000000000000",
        "CapBnd:\t00000000a80425fb",
        "CapAmb:\t0000000000000000",
        "NoNewPrivs:\t0",
        "Seccomp:\t2",
    ] {
        assert!(status.contains(want), "missing {want:?} in\n{status}");
    }
}

/// [`support::rbuild_with_config`] with the rbuild under test.
fn rbuild_with_config(root: &Path, docker_config: &Path, args: &[&str], stdin: &str) -> (bool, String) {
    support::rbuild_with_config(Path::new(env!("CARGO_BIN_EXE_rbuild")), root, docker_config, args, stdin)
}

#[test]
fn login_keeps_checked_credentials_that_push_uses_and_logout_forgets_them() {
    let test = "login_keeps_checked_credentials_that_push_uses_and_logout_forgets_them";
    let opts = support::RegistryOptions { tls: false, htpasswd: Some(("bob".into(), "hunter2-login".into())) };
    if !ready(test) || !support::require_registry_with(test, &opts) {
        return;
    }
    let reg = Registry::start_with(opts);
    let server = format!("127.0.0.1:{}", reg.port);
    let t = tempfile::tempdir().unwrap();
    let docker_config = t.path().join("docker");
    let b = Build::new(t.path());
    let rbuild = |args: &[&str], stdin: &str| rbuild_with_config(&b.root, &docker_config, args, stdin);
    let config = docker_config.join("config.json");

    // A wrong password is refused by the registry and nothing is kept.
    let (ok, text) = rbuild(&["login", &server, "-u", "bob", "--password-stdin"], "wrong\n");
    assert!(!ok && text.contains(&format!("login to {server} failed")), "{text}");
    assert!(!text.contains("wrong"), "the password is never printed: {text}");
    assert!(!config.exists());

    let (ok, text) = rbuild(&["login", &server, "-u", "bob", "--password-stdin"], "hunter2-login\n");
    assert!(ok && text.contains("Login Succeeded"), "{text}");
    let saved: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    // base64("bob:hunter2-login")
    assert_eq!(saved["auths"][&server]["auth"], "Ym9iOmh1bnRlcjItbG9naW4=");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o600);

    // A push finds the kept credentials.
    let ctx = context(t.path(), "FROM scratch\nCOPY hello /hello\n", &[("hello", "hi\n")]);
    let name = format!("{server}/app:1");
    let (ok, text) = rbuild(&["build", "-t", &name, "--push", ctx.to_str().unwrap()], "");
    assert!(ok, "{text}");
    let creds = "--creds=bob:hunter2-login";
    let inspect = tool_json(&["skopeo", "inspect", "--tls-verify=false", creds, &format!("docker://{name}")]);
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 1);

    // After logout the registry refuses the push.
    let (ok, text) = rbuild(&["logout", &server], "");
    assert!(ok && text.contains(&format!("Removing login credentials for {server}")), "{text}");
    let saved: Value = serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap();
    assert!(saved["auths"].get(&server).is_none(), "{saved}");
    let (ok, text) = rbuild(&["push", &name], "");
    assert!(!ok && text.contains("denied"), "{text}");
}

#[test]
fn save_writes_archives_docker_load_and_oci_tools_read() {
    let test = "save_writes_archives_docker_load_and_oci_tools_read";
    if !ready(test) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let ctx = context(t.path(), "ARG BASE\nFROM $BASE\nRUN echo saved > /saved\n", &[]);
    let b = Build::new(t.path());
    let arg = format!("BASE={}", base());
    assert!(b
        .rbuild(&["-t", "saved:1", "-t", "saved:alias", "--build-arg", &arg, ctx.to_str().unwrap()])
        .status
        .success());
    let docker = t.path().join("docker.tar");
    assert!(b.rbuild(&["save", "saved:1", "saved:alias", "-o", docker.to_str().unwrap()]).status.success());
    let inspect = tool_json(&["skopeo", "inspect", &format!("docker-archive:{}:saved:1", docker.display())]);
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 2);
    let manifest = Command::new("tar").arg("-xOf").arg(&docker).arg("manifest.json").output().unwrap();
    let manifest: Value = serde_json::from_slice(&manifest.stdout).unwrap();
    assert_eq!(manifest[0]["RepoTags"], serde_json::json!(["saved:1", "saved:alias"]));

    let oci = t.path().join("oci.tar");
    assert!(b.rbuild(&["save", "saved:1", "--format", "oci", "-o", oci.to_str().unwrap()]).status.success());
    if support::have("umoci") {
        let rootfs = umoci_unpack(&oci, t.path());
        assert_eq!(std::fs::read_to_string(rootfs.join("saved")).unwrap(), "saved\n");
    }

    // Errors name what is wrong.
    let out = b.rbuild(&["save", "nope:1", "-o", t.path().join("x.tar").to_str().unwrap()]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no such image: nope:1"));
    assert!(!t.path().join("x.tar").exists());
}

#[test]
fn labels_metadata_file_and_load_hand_over_what_buildx_does() {
    let test = "labels_metadata_file_and_load_hand_over_what_buildx_does";
    if !ready(test) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let ctx = context(t.path(), "FROM scratch\nLABEL from=dockerfile keep=me\nCOPY f /f\n", &[("f", "x\n")]);
    // A stand-in for the docker CLI: `docker load` keeps what it is sent.
    let bin = t.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let loaded = t.path().join("loaded.tar");
    std::fs::write(bin.join("docker"), format!("#!/bin/sh\n[ \"$1\" = load ] || exit 3\ncat > {}\n", loaded.display()))
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("docker"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let meta = t.path().join("meta.json");
    let b = Build::new(t.path());
    let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .arg("--root")
        .arg(&b.root)
        .args(["build", "-t", "lab:1", "--label", "from=cli", "--label", "bare", "--load"])
        .args(["--annotation", "org.example.a=1", "--annotation", "manifest:org.example.b=2", "--metadata-file"])
        .arg(&meta)
        .arg(&ctx)
        .env("RBUILD_NO_PROGRESS", "1")
        .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let inspect = b.rbuild(&["inspect", "lab:1"]);
    let inspect: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let labels = &inspect["config"]["config"]["Labels"];
    assert_eq!(labels, &serde_json::json!({"from": "cli", "keep": "me", "bare": ""}));
    assert_eq!(inspect["manifest"]["annotations"], serde_json::json!({"org.example.a": "1", "org.example.b": "2"}));

    let meta: Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
    assert_eq!(meta["containerimage.digest"], inspect["digest"]);
    assert_eq!(meta["containerimage.config.digest"], inspect["id"]);
    assert_eq!(meta["containerimage.descriptor"]["digest"], inspect["digest"]);
    assert_eq!(meta["containerimage.descriptor"]["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(meta["image.name"], "docker.io/library/lab:1");

    let archive = tool_json(&["skopeo", "inspect", &format!("docker-archive:{}", loaded.display())]);
    assert_eq!(archive["Labels"]["from"], "cli");

    // Without a docker CLI, --load says what to do instead.
    let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .arg("--root")
        .arg(&b.root)
        .args(["build", "--load"])
        .arg(&ctx)
        .env("RBUILD_NO_PROGRESS", "1")
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--load needs the docker CLI"));
}

#[test]
fn source_date_epoch_with_rewrite_timestamp_reproduces_the_manifest_digest() {
    let test = "source_date_epoch_with_rewrite_timestamp_reproduces_the_manifest_digest";
    if !ready(test) || !support::require_tool(test, "umoci", "umoci") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let ctx = context(
        t.path(),
        "ARG BASE\nFROM $BASE\nRUN mkdir -p /out && echo built > /out/f\nCOPY in /in\n",
        &[("in", "from the context\n")],
    );
    let arg = format!("BASE={}", base());
    let epoch = "1700000000";
    let build = |n: u32, extra: &str| {
        let b = Build { root: t.path().join(format!("store{n}")) };
        let archive = t.path().join(format!("r{n}.tar"));
        let dest = format!("type=oci,dest={}{extra}", archive.display());
        let sde = format!("SOURCE_DATE_EPOCH={epoch}");
        let out =
            b.rbuild(&["-t", "repro:1", "--build-arg", &arg, "--build-arg", &sde, "-o", &dest, ctx.to_str().unwrap()]);
        assert!(out.status.success());
        archive
    };
    let digest_of = |archive: &Path| {
        let out = Command::new("tar").arg("-xOf").arg(archive).arg("index.json").output().unwrap();
        let index: Value = serde_json::from_slice(&out.stdout).unwrap();
        index["manifests"][0]["digest"].as_str().unwrap().to_owned()
    };
    // Two cold builds in two stores, a second apart: every file gets another mtime.
    let a = build(3, ",rewrite-timestamp=true");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = build(4, ",rewrite-timestamp=true");
    assert_eq!(digest_of(&a), digest_of(&b), "same inputs, same SOURCE_DATE_EPOCH: same manifest digest");
    let rootfs = umoci_unpack(&a, &t.path().join("unpack"));
    use std::os::unix::fs::MetadataExt;
    for p in ["out/f", "out", "in"] {
        assert_eq!(std::fs::symlink_metadata(rootfs.join(p)).unwrap().mtime(), 1_700_000_000, "{p}");
    }
    let config = tool_json(&["skopeo", "inspect", "--config", &format!("oci-archive:{}", a.display())]);
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    assert!(config["history"].as_array().unwrap().iter().any(|h| h["created"] == "2023-11-14T22:13:20Z"));

    // Without rewrite-timestamp only the times in the config are set: the files keep theirs.
    let c = build(5, "");
    assert_ne!(digest_of(&c), digest_of(&a));

    let b5 = Build::new(t.path());
    let out = b5.rbuild(&["--build-arg", "SOURCE_DATE_EPOCH=yesterday", ctx.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid SOURCE_DATE_EPOCH \"yesterday\""));
}

/// Removes a docker `certs.d/<host:port>` directory when dropped.
struct CertsD(PathBuf);

impl Drop for CertsD {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn multi_platform_push_and_pull_as_base_over_tls_with_basic_auth() {
    let test = "multi_platform_push_and_pull_as_base_over_tls_with_basic_auth";
    let opts = support::RegistryOptions { tls: true, htpasswd: Some(("carol".into(), "tls-hunter2".into())) };
    if !ready(test) || !support::require_registry_with(test, &opts) || !support::require_tool(test, "umoci", "umoci") {
        return;
    }
    let reg = Registry::start_with(opts);
    let server = reg.host();
    // The registry's own CA, where docker (and rbuild) look for it: a loopback registry with a
    // CA there is spoken to over TLS.
    let certs = CertsD(PathBuf::from("/etc/docker/certs.d").join(&server));
    std::fs::create_dir_all(&certs.0).unwrap();
    std::fs::copy(reg.ca_cert_path().unwrap(), certs.0.join("ca.crt")).unwrap();
    let t = tempfile::tempdir().unwrap();
    let docker_config = t.path().join("docker");
    let root = t.path().join("store");
    let rbuild = |args: &[&str], stdin: &str| rbuild_with_config(&root, &docker_config, args, stdin);
    let (ok, text) = rbuild(&["login", &server, "-u", "carol", "--password-stdin"], "tls-hunter2\n");
    assert!(ok, "{text}");

    // One image per platform, each carrying its own architecture's file.
    let ctx = context(
        t.path(),
        "FROM scratch\nARG TARGETARCH\nCOPY $TARGETARCH.txt /arch\n",
        &[("amd64.txt", "amd64\n"), ("arm64.txt", "arm64\n")],
    );
    let name = format!("{server}/app:multi");
    let (ok, text) =
        rbuild(&["build", "--platform", "linux/amd64,linux/arm64", "-t", &name, "--push", ctx.to_str().unwrap()], "");
    assert!(ok, "{text}");
    let cert_dir = format!("--cert-dir={}", reg.cert_dir().unwrap().display());
    let creds = "--creds=carol:tls-hunter2";
    let index = tool_json(&["skopeo", "inspect", "--raw", &cert_dir, creds, &format!("docker://{name}")]);
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!("{}/{}", m["platform"]["os"].as_str().unwrap(), m["platform"]["architecture"].as_str().unwrap())
        })
        .collect();
    // The images, then the attestation manifest of each (a push's default provenance).
    assert_eq!(platforms, ["linux/amd64", "linux/arm64", "unknown/unknown", "unknown/unknown"]);

    // The index as a base: each platform gets its own image.
    let child = t.path().join("child");
    std::fs::create_dir_all(&child).unwrap();
    std::fs::write(child.join("Dockerfile"), format!("FROM {name}\nCOPY extra /extra\n")).unwrap();
    std::fs::write(child.join("extra"), "x\n").unwrap();
    let archive = t.path().join("child.tar");
    let dest = format!("type=oci,dest={}", archive.display());
    let (ok, text) =
        rbuild(&["build", "--platform", "linux/arm64", "-t", "child:1", "-o", &dest, child.to_str().unwrap()], "");
    assert!(ok, "{text}");
    let rootfs = umoci_unpack(&archive, &t.path().join("unpacked"));
    assert_eq!(std::fs::read_to_string(rootfs.join("arch")).unwrap(), "arm64\n");
    assert_eq!(std::fs::read_to_string(rootfs.join("extra")).unwrap(), "x\n");

    // Without the credentials the registry refuses, and the error says so.
    let (ok, text) = rbuild(&["logout", &server], "");
    assert!(ok, "{text}");
    let (ok, text) = rbuild(&["push", &name], "");
    assert!(!ok && text.contains("denied"), "{text}");
}
