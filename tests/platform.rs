//! Multi-platform builds through the real binary: `--platform` lists, `FROM
//! --platform=$BUILDPLATFORM` cross-compilation stages, TARGET*/BUILD* args, image indexes
//! pushed to a real registry, stored, and written as OCI archives, foreign-architecture RUN
//! steps under QEMU, and `rbuild manifest create`.
//!
//! The registry serves a busybox index whose amd64 and arm64 images hold their own
//! architecture's busybox, so arm64 RUN steps really execute (through QEMU user emulation on
//! an amd64 host). They need root, the packages `scripts/install-deps.sh` installs (with
//! qemu-user-static and the arm64 busybox), and an amd64 host; without them each test says why
//! it skips. CI runs as root with the packages.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;
use support::Registry;

/// One registry for the whole test binary, seeded with a two-platform `busybox:latest`.
fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(|| {
        let r = Registry::start();
        let layout = support::build_real_busybox_layout("amd64,arm64").expect("building the multi-arch busybox");
        r.seed(&layout, "busybox:latest", &["--all"]).expect("seeding the multi-arch busybox");
        r
    })
}

/// Root, the registry tools, an amd64 host and a real arm64 busybox.
fn ready(test: &str) -> bool {
    if support::host_arch() != "amd64" {
        eprintln!("skipping {test}: the fixtures assume an amd64 host (arm64 is the emulated platform)");
        return false;
    }
    support::require_root(test) && support::require_registry(test) && support::require_real_busybox(test, "arm64")
}

/// [`ready`], and arm64 binaries can run (QEMU).
fn ready_to_emulate(test: &str) -> bool {
    ready(test) && support::require_emulation(test, "aarch64")
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
            .env_remove("DOCKER_DEFAULT_PLATFORM")
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
        std::fs::write(ctx.join(name), content).unwrap();
    }
    ctx
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("run tool");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn tool_json(args: &[&str]) -> Value {
    serde_json::from_slice(&run(args).stdout).expect("tool printed JSON")
}

/// Is this index entry an attestation manifest (BuildKit's layout)?
fn is_attestation(m: &Value) -> bool {
    m["annotations"]["vnd.docker.reference.type"] == "attestation-manifest"
}

/// The index's attestation manifests, checked to follow every image: the digests they describe.
fn attested(index: &Value) -> Vec<String> {
    let manifests = index["manifests"].as_array().expect("an index");
    let first = manifests.iter().position(is_attestation).unwrap_or(manifests.len());
    assert!(manifests[first..].iter().all(is_attestation), "attestations come after the images: {index}");
    manifests[first..]
        .iter()
        .map(|m| m["annotations"]["vnd.docker.reference.digest"].as_str().unwrap().to_owned())
        .collect()
}

/// `(os/arch[/variant], digest)` of each image manifest of an index (attestations left out),
/// in order.
fn platforms(index: &Value) -> Vec<(String, String)> {
    index["manifests"]
        .as_array()
        .expect("an index")
        .iter()
        .filter(|m| !is_attestation(m))
        .map(|m| {
            let p = &m["platform"];
            let mut name = format!("{}/{}", p["os"].as_str().unwrap(), p["architecture"].as_str().unwrap());
            if let Some(v) = p["variant"].as_str() {
                name.push('/');
                name.push_str(v);
            }
            (name, m["digest"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// The root filesystem of one platform's image in `source` (a skopeo transport reference),
/// copied with skopeo to a layout in `dir` and unpacked there with umoci.
fn rootfs_of(source: &str, arch: &str, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let layout = dir.join(format!("layout-{arch}"));
    run(&[
        "skopeo",
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--override-arch",
        arch,
        source,
        &format!("oci:{}:img", layout.display()),
    ]);
    let bundle = dir.join(format!("bundle-{arch}"));
    run(&["umoci", "unpack", "--image", &format!("{}:img", layout.display()), bundle.to_str().unwrap()]);
    bundle.join("rootfs")
}

fn read(root: &Path, path: &str) -> String {
    std::fs::read_to_string(root.join(path.trim_start_matches('/'))).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A cross-compiling Dockerfile: a build stage on the build platform (one step every target
/// shares, then per-target steps after `ARG TARGETARCH`), and a final stage per target.
const CROSS: &str = "ARG BASE\n\
FROM --platform=$BUILDPLATFORM $BASE AS build\n\
RUN head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /shared-stamp\n\
ARG TARGETARCH\n\
ARG BUILDARCH\n\
RUN echo \"built on $BUILDARCH ($(uname -m)) for $TARGETARCH\" > /out.txt\n\
FROM $BASE\n\
ARG TARGETPLATFORM BUILDPLATFORM TARGETARCH TARGETOS TARGETVARIANT BUILDOS\n\
COPY --from=build /out.txt /shared-stamp /\n\
COPY hello.txt /hello.txt\n\
RUN uname -m > /uname && echo \"$TARGETPLATFORM $BUILDPLATFORM $TARGETOS/$TARGETARCH/$TARGETVARIANT $BUILDOS\" > /args\n";

#[test]
fn two_platforms_push_an_index_store_it_and_write_an_oci_archive() {
    if !support::have("umoci") || !ready_to_emulate("two_platforms_push_an_index_store_it_and_write_an_oci_archive") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let b = Build::new(t.path());
    let ctx = context(t.path(), CROSS, &[("hello.txt", "hello\n")]);
    let name = registry().reference("cross:1");
    let archive = t.path().join("cross.tar");
    let out = b.rbuild(&[
        "build",
        "--platform",
        "linux/amd64,linux/arm64",
        "--build-arg",
        &format!("BASE={}", base()),
        "-t",
        &name,
        "--push",
        "-o",
        &format!("type=oci,dest={}", archive.display()),
        "-o",
        "type=image",
        "--iidfile",
        t.path().join("iid").to_str().unwrap(),
        ctx.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    // Steps are named with their platform, as BuildKit names them in a multi-platform build.
    assert!(log.contains("[linux/amd64->arm64 build 3/3] RUN echo"), "{log}");
    assert!(log.contains("[linux/arm64 stage-1 4/4] RUN uname -m"), "{log}");

    // The registry has an index with one manifest per platform.
    let raw = registry().skopeo_inspect("cross:1", true).unwrap();
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json", "{raw}");
    let listed = platforms(&raw);
    assert_eq!(listed.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(), ["linux/amd64", "linux/arm64"], "{raw}");
    // A push carries mode=min provenance by default (as buildx's): one attestation per image.
    assert_eq!(attested(&raw), listed.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(), "{raw}");
    let mut created = Vec::new();
    for arch in ["amd64", "arm64"] {
        let inspect = tool_json(&[
            "skopeo",
            "inspect",
            "--tls-verify=false",
            "--override-arch",
            arch,
            &format!("docker://{name}"),
        ]);
        assert_eq!(inspect["Architecture"], arch, "{inspect}");
        assert_eq!(inspect["Os"], "linux", "{inspect}");
        let config = tool_json(&[
            "skopeo",
            "inspect",
            "--config",
            "--tls-verify=false",
            "--override-arch",
            arch,
            &format!("docker://{name}"),
        ]);
        assert_eq!(config["architecture"], arch, "{config}");
        assert!(config.get("variant").is_none_or(Value::is_null), "linux/{arch} has no variant: {config}");
        created.push(config["created"].as_str().unwrap().to_owned());
    }
    assert_eq!(created[0], created[1], "one build, one creation time");

    // What each platform's image holds: the build stage ran natively with that target's args;
    // the final stage ran on the target (arm64 through QEMU); the shared step ran once.
    let amd = rootfs_of(&format!("docker://{name}"), "amd64", t.path());
    let arm = rootfs_of(&format!("docker://{name}"), "arm64", t.path());
    assert_eq!(read(&amd, "/out.txt"), "built on amd64 (x86_64) for amd64\n");
    assert_eq!(read(&arm, "/out.txt"), "built on amd64 (x86_64) for arm64\n");
    assert_eq!(read(&amd, "/uname"), "x86_64\n");
    assert_eq!(read(&arm, "/uname"), "aarch64\n");
    assert_eq!(read(&amd, "/args"), "linux/amd64 linux/amd64 linux/amd64/ linux\n");
    assert_eq!(read(&arm, "/args"), "linux/arm64 linux/amd64 linux/arm64/ linux\n");
    assert_eq!(read(&amd, "/hello.txt"), "hello\n");
    assert_eq!(read(&amd, "/shared-stamp"), read(&arm, "/shared-stamp"), "the platform-independent step ran once");
    assert_eq!(read(&amd, "/shared-stamp").len(), 32);

    // The OCI archive: index.json names the index, which lists both platforms, the same
    // manifests as pushed.
    let src = format!("oci-archive:{}", archive.display());
    let raw_archive = tool_json(&["skopeo", "inspect", "--raw", &src]);
    assert_eq!(platforms(&raw_archive), listed, "{raw_archive}");
    let arm_inspect = tool_json(&["skopeo", "inspect", "--override-arch", "arm64", &src]);
    assert_eq!(arm_inspect["Architecture"], "arm64");
    let from_archive = rootfs_of(&src, "arm64", &t.path().join("from-archive"));
    assert_eq!(read(&from_archive, "/uname"), "aarch64\n");

    // The local store names the index; `rbuild inspect` shows both platforms.
    let out = b.rbuild(&["inspect", &name]);
    assert!(out.status.success());
    let inspect: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(platforms(&inspect["index"]).len(), 2, "{inspect}");
    assert_eq!(attested(&inspect["index"]).len(), 2, "the pushed provenance: {inspect}");
    assert_eq!(inspect["manifests"].as_array().unwrap().len(), 2, "images only: {inspect}");
    assert_eq!(inspect["manifests"][1]["config"]["architecture"], "arm64", "{inspect}");
    assert_eq!(inspect["digest"], raw_archive_digest(&archive));
    // The image id of a multi-platform image is its index digest (as BuildKit's).
    assert_eq!(std::fs::read_to_string(t.path().join("iid")).unwrap(), inspect["digest"].as_str().unwrap());
}

/// The digest `index.json` of an OCI archive points at.
fn raw_archive_digest(archive: &Path) -> Value {
    let out = run(&["tar", "-xOf", archive.to_str().unwrap(), "index.json"]);
    let index: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1, "{index}");
    assert_eq!(index["manifests"][0]["mediaType"], "application/vnd.oci.image.index.v1+json", "{index}");
    index["manifests"][0]["digest"].clone()
}

#[test]
fn single_arm64_platform_runs_under_qemu_and_makes_a_plain_arm64_image() {
    if !ready_to_emulate("single_arm64_platform_runs_under_qemu_and_makes_a_plain_arm64_image") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let b = Build::new(t.path());
    let df = "ARG BASE\nFROM $BASE\nARG TARGETARCH BUILDARCH\n\
              RUN uname -m > /m && echo \"$TARGETARCH $BUILDARCH\" > /args\n\
              RUN grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status > /status\n";
    let ctx = context(t.path(), df, &[]);
    let archive = t.path().join("arm.tar");
    let files = t.path().join("files");
    let out = b.rbuild(&[
        "build",
        "--platform",
        "linux/aarch64",
        "--build-arg",
        &format!("BASE={}", base()),
        "-o",
        &format!("type=oci,dest={}", archive.display()),
        "-o",
        &format!("type=local,dest={}", files.display()),
        ctx.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(files.join("m")).unwrap(), "aarch64\n");
    assert_eq!(std::fs::read_to_string(files.join("args")).unwrap(), "arm64 amd64\n");
    // The emulated step is confined as a native one: the emulator's system calls are host
    // calls, checked by the same seccomp filter, with the same capabilities.
    assert_eq!(
        std::fs::read_to_string(files.join("status")).unwrap(),
        "CapEff:\t00000000a80425fb\nNoNewPrivs:\t0\nSeccomp:\t2\n"
    );
    let src = format!("oci-archive:{}", archive.display());
    let raw = tool_json(&["skopeo", "inspect", "--raw", &src]);
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.manifest.v1+json", "one platform: no index: {raw}");
    let config = tool_json(&["skopeo", "inspect", "--config", &src]);
    assert_eq!(config["architecture"], "arm64");
    assert_eq!(config["os"], "linux");
}

#[test]
fn multi_platform_local_output_has_a_directory_per_platform() {
    if !ready("multi_platform_local_output_has_a_directory_per_platform") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let b = Build::new(t.path());
    // No RUN in the target stages: no emulation needed.
    let df = "ARG BASE\nFROM $BASE\nARG TARGETPLATFORM\nCOPY hello.txt /\n";
    let ctx = context(t.path(), df, &[("hello.txt", "hi\n")]);
    let files = t.path().join("files");
    let tarball = t.path().join("fs.tar");
    let out = b.rbuild(&[
        "build",
        "--platform",
        "linux/amd64",
        "--platform",
        "linux/arm64",
        "--build-arg",
        &format!("BASE={}", base()),
        "-o",
        &format!("type=local,dest={}", files.display()),
        "-o",
        &format!("type=tar,dest={}", tarball.display()),
        ctx.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    for dir in ["linux_amd64", "linux_arm64"] {
        assert_eq!(std::fs::read_to_string(files.join(dir).join("hello.txt")).unwrap(), "hi\n");
        assert!(files.join(dir).join("bin/busybox").is_file());
    }
    // The arm64 tree holds the arm64 busybox (an aarch64 ELF: e_machine 0xb7).
    let elf = std::fs::read(files.join("linux_arm64/bin/busybox")).unwrap();
    assert_eq!(&elf[18..20], &[0xb7, 0x00]);
    let listing = String::from_utf8(run(&["tar", "-tf", tarball.to_str().unwrap()]).stdout).unwrap();
    assert!(listing.lines().any(|l| l == "linux_amd64/hello.txt"), "{listing}");
    assert!(listing.lines().any(|l| l == "linux_arm64/hello.txt"), "{listing}");
}

#[test]
fn docker_archive_refuses_several_platforms() {
    let t = tempfile::tempdir().unwrap();
    let b = Build::new(t.path());
    let ctx = context(t.path(), "FROM scratch\nCOPY a /a\n", &[("a", "a")]);
    let dest = t.path().join("x.tar");
    let out = b.rbuild(&[
        "build",
        "--platform",
        "linux/amd64,linux/arm64",
        "-o",
        &format!("type=docker,dest={}", dest.display()),
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "a user error");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("docker exporter does not currently support exporting manifest lists"), "{err}");
    assert!(err.contains("type=oci"), "says what to do instead: {err}");
    assert!(!dest.exists());
    // One platform is fine.
    if !support::require_root("docker_archive_refuses_several_platforms (single-platform half)") {
        return;
    }
    let out = b.rbuild(&[
        "build",
        "--platform",
        "linux/arm64",
        "-o",
        &format!("type=docker,dest={}", dest.display()),
        ctx.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    let manifest = run(&["tar", "-xOf", dest.to_str().unwrap(), "manifest.json"]).stdout;
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    let config = manifest[0]["Config"].as_str().unwrap().to_owned();
    let config: Value = serde_json::from_slice(&run(&["tar", "-xOf", dest.to_str().unwrap(), &config]).stdout).unwrap();
    assert_eq!(config["architecture"], "arm64");
}

#[test]
fn bad_platforms_are_user_errors() {
    let t = tempfile::tempdir().unwrap();
    let b = Build::new(t.path());
    let ctx = context(t.path(), "FROM scratch\nRUN true\n", &[]);
    let out = b.rbuild(&["build", "--platform", "linux//arm64", ctx.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid --platform \"linux//arm64\""));
    // An architecture no QEMU target is known for: the RUN step says it cannot run, and what to
    // do (nothing else is needed to get there: the base is scratch).
    let out = b.rbuild(&["build", "--platform", "linux/sparc64", ctx.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot run sparc64 binaries on this amd64 machine") || support::host_arch() != "amd64",
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
}

#[test]
fn manifest_create_merges_single_platform_pushes() {
    if !ready("manifest_create_merges_single_platform_pushes") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let b = Build::new(t.path());
    // Built one platform at a time (as on two runners), without RUN: no emulation needed.
    let df = "ARG BASE\nFROM $BASE\nARG TARGETARCH\nCOPY hello.txt /\nLABEL arch=$TARGETARCH\n";
    let ctx = context(t.path(), df, &[("hello.txt", "hello\n")]);
    let mut digests = Vec::new();
    for arch in ["amd64", "arm64"] {
        let name = registry().reference(&format!("app:{arch}"));
        let out = b.rbuild(&[
            "build",
            "--platform",
            &format!("linux/{arch}"),
            "--build-arg",
            &format!("BASE={}", base()),
            "-t",
            &name,
            "--push",
            ctx.to_str().unwrap(),
        ]);
        assert!(out.status.success());
        // With its default provenance, each push is an index: the image and its attestation.
        let raw = registry().skopeo_inspect(&format!("app:{arch}"), true).unwrap();
        let image = platforms(&raw).remove(0).1;
        assert_eq!(attested(&raw), std::slice::from_ref(&image), "{raw}");
        digests.push(image);
    }
    let (amd, arm) = (registry().reference("app:amd64"), registry().reference("app:arm64"));

    // Pushed straight to the registry: the same repository, and another one (blobs copied).
    for target in ["app:multi", "other/app:multi"] {
        let out = b.rbuild(&["manifest", "create", "--push", &registry().reference(target), &amd, &arm]);
        assert!(out.status.success());
        let raw = registry().skopeo_inspect(target, true).unwrap();
        assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json", "{raw}");
        let want = vec![("linux/amd64".to_owned(), digests[0].clone()), ("linux/arm64".to_owned(), digests[1].clone())];
        assert_eq!(platforms(&raw), want, "{raw}");
        // The sources' attestations come along, after both images.
        assert_eq!(attested(&raw), digests, "{raw}");
        let arm_config = tool_json(&[
            "skopeo",
            "inspect",
            "--config",
            "--tls-verify=false",
            "--override-arch",
            "arm64",
            &format!("docker://{}", registry().reference(target)),
        ]);
        assert_eq!(arm_config["config"]["Labels"]["arch"], "arm64", "{arm_config}");
    }

    // Into the local store (everything fetched), then `rbuild push`; an index as a source
    // contributes its manifests, and a dry run only prints the index.
    let stored = registry().reference("app:stored");
    let out = b.rbuild(&["manifest", "create", &stored, &registry().reference("app:multi")]);
    assert!(out.status.success());
    let out = b.rbuild(&["push", &stored]);
    assert!(out.status.success());
    let raw = registry().skopeo_inspect("app:stored", true).unwrap();
    assert_eq!(platforms(&raw).len(), 2, "{raw}");
    let out = b.rbuild(&["manifest", "create", "--dry-run", "x/y:z", &amd, &arm]);
    assert!(out.status.success());
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(platforms(&printed), platforms(&raw));

    // A source nobody has.
    let out = b.rbuild(&["manifest", "create", "x/y:z", &registry().reference("app:missing")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in the local store"));
}

#[test]
fn print_graph_shows_one_graph_per_platform() {
    let t = tempfile::tempdir().unwrap();
    let b = Build::new(t.path());
    let ctx = context(t.path(), "FROM scratch\nARG TARGETARCH\nRUN echo $TARGETARCH\n", &[]);
    let out =
        b.rbuild(&["build", "--print-graph=json", "--platform", "linux/amd64,linux/arm64", ctx.to_str().unwrap()]);
    assert!(out.status.success());
    let graphs: Value = serde_json::from_slice(&out.stdout).unwrap();
    let graphs = graphs.as_array().expect("one graph per platform");
    assert_eq!(graphs.len(), 2);
    for (graph, arch) in graphs.iter().zip(["amd64", "arm64"]) {
        let run = &graph["ops"][0];
        assert_eq!(run["name"], format!("[linux/{arch} 1/1] RUN echo {arch}"), "{graph}");
        assert_eq!(run["op"]["Exec"]["platform"]["architecture"], arch, "{graph}");
    }
}
