//! End-to-end tests of the build cache across stores and builds: `--cache-to`/`--cache-from`
//! (registry, local, inline) round trips into fresh, empty stores, `--explain`,
//! `--no-cache-filter`, and parallel stages overlapping in time (from `--progress=rawjson`
//! event times, not wall-clock).
//!
//! Every RUN writes a random uuid, so an image digest equal to the exporting build's
//! proves that no exported RUN ran again; the progress output says which steps were CACHED.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use support::Registry;

fn registry() -> &'static Registry {
    support::busybox_registry()
}

fn ready(test: &str) -> bool {
    support::ready(test)
}

fn base_arg() -> String {
    format!("BASE={}", registry().reference("busybox:latest"))
}

/// Runs rbuild on `store` (a fresh directory is an empty store), with reproducible timestamps.
fn rbuild(store: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .arg("--root")
        .arg(store)
        .args(args)
        .env("RBUILD_NO_PROGRESS", "1")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .expect("run rbuild");
    eprintln!("rbuild {args:?} -> {}\n--- stderr ---\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    out
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "rbuild failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).into_owned()
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

/// Two stages; every RUN writes a random uuid, so re-running any of them changes the image.
const TWO_STAGES: &str = "ARG BASE\n\
FROM $BASE AS build\n\
RUN cat /proc/sys/kernel/random/uuid > /built-at && echo not copied > /build-only\n\
FROM $BASE\n\
COPY --from=build /built-at /built-at\n\
COPY f.txt /f.txt\n\
RUN cat /proc/sys/kernel/random/uuid > /final-at\n";

/// The build stage's RUN step, as progress names it.
const BUILD_RUN: &str = "[build 2/2] RUN cat /proc/sys/kernel/random/uuid > /built-at && echo not copied > /build-only";

/// The plain-progress block of each step: name → its lines (`CACHED`, `DONE 0.1s`...).
fn steps(stderr: &str) -> HashMap<String, Vec<String>> {
    let mut names: HashMap<String, String> = HashMap::new();
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for line in stderr.lines() {
        let Some(rest) = line.strip_prefix('#') else { continue };
        let Some((n, text)) = rest.split_once(' ') else { continue };
        if text.starts_with('[') && !names.contains_key(n) {
            names.insert(n.to_owned(), text.to_owned());
        } else if let Some(name) = names.get(n) {
            out.entry(name.clone()).or_default().push(text.to_owned());
        }
    }
    out
}

/// Names of the RUN steps that executed (have a DONE line).
fn executed_runs(stderr: &str) -> Vec<String> {
    let mut v: Vec<String> = steps(stderr)
        .into_iter()
        .filter(|(name, lines)| name.contains("] RUN") && lines.iter().any(|l| l.starts_with("DONE")))
        .map(|(name, _)| name)
        .collect();
    v.sort();
    v
}

fn cached_runs(stderr: &str) -> usize {
    steps(stderr).iter().filter(|(name, lines)| name.contains("] RUN") && lines.iter().any(|l| l == "CACHED")).count()
}

struct RoundTrip {
    dir: tempfile::TempDir,
    ctx: PathBuf,
}

impl RoundTrip {
    fn new() -> RoundTrip {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path(), TWO_STAGES, &[("f.txt", "context file\n")]);
        RoundTrip { dir, ctx }
    }

    fn store(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Builds (`target` or the last stage) on `store` with `extra` flags; returns the image id
    /// and the progress output.
    fn build(&self, store: &str, target: Option<&str>, extra: &[&str]) -> (String, String) {
        let iid = self.dir.path().join(format!("iid-{store}-{}", target.unwrap_or("final")));
        let arg = base_arg();
        let mut args = vec!["--build-arg", &arg, "--iidfile", iid.to_str().unwrap()];
        if let Some(t) = target {
            args.extend(["--target", t]);
        }
        args.extend(extra);
        args.push(self.ctx.to_str().unwrap());
        let stderr = ok(&rbuild(&self.store(store), &args));
        (std::fs::read_to_string(&iid).unwrap(), stderr)
    }
}

#[test]
fn registry_cache_mode_max_fills_a_fresh_store_lazily() {
    if !ready("registry_cache_mode_max_fills_a_fresh_store_lazily") {
        return;
    }
    let t = RoundTrip::new();
    let cache = registry().reference("cache-max:latest");
    let to = format!("type=registry,ref={cache},mode=max");
    let (first, out) = t.build("a", None, &["--cache-to", &to]);
    assert_eq!(executed_runs(&out).len(), 2, "{out}");
    assert!(out.contains(&format!("to {cache} done")), "{out}");
    // A plain docker-registry holds it as an OCI manifest with our config type.
    let manifest = registry().skopeo_inspect("cache-max:latest", true).unwrap();
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.rbuild.cache.config.v1+json");
    let cache_layers: Vec<String> =
        manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_owned()).collect();

    let from = format!("type=registry,ref={cache}");
    let (second, out) = t.build("b", None, &["--cache-from", &from]);
    assert_eq!(second, first, "a cache hit must give the same image");
    assert!(executed_runs(&out).is_empty(), "no exported RUN may run again:\n{out}");
    assert!(cached_runs(&out) >= 1, "{out}");
    // Lazy import: only the final image's layers (and the config) were fetched; the build
    // stage's own layer was not.
    let fetched: Vec<String> = registry()
        .requests("GET", "/v2/cache-max/blobs/sha256:")
        .iter()
        .filter_map(|l| l.split("/blobs/").nth(1).and_then(|r| r.split(' ').next()).map(str::to_owned))
        .collect();
    let layers_fetched = cache_layers.iter().filter(|d| fetched.contains(d)).count();
    assert_eq!(layers_fetched, 4, "busybox + 3 final-stage layers, not the build stage's: {fetched:?}");
    assert_eq!(cache_layers.len(), 5, "{manifest}");

    // mode=max covers the intermediate stage: building it alone on another empty store runs
    // nothing either.
    let (_, out) = t.build("c", Some("build"), &["--cache-from", &from]);
    assert!(executed_runs(&out).is_empty(), "the build stage came from the cache:\n{out}");
}

#[test]
fn registry_cache_mode_min_covers_only_the_final_image() {
    if !ready("registry_cache_mode_min_covers_only_the_final_image") {
        return;
    }
    let t = RoundTrip::new();
    let cache = registry().reference("cache-min:latest");
    let (first, _) = t.build("a", None, &["--cache-to", &format!("type=registry,ref={cache},mode=min")]);
    let manifest = registry().skopeo_inspect("cache-min:latest", true).unwrap();
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 4, "only the image's layers: {manifest}");

    let from = format!("type=registry,ref={cache}");
    let (second, out) = t.build("b", None, &["--cache-from", &from]);
    assert_eq!(second, first);
    assert!(executed_runs(&out).is_empty(), "{out}");
    // The intermediate stage was not exported: building it runs its RUN.
    let (_, out) = t.build("c", Some("build"), &["--cache-from", &from]);
    assert_eq!(executed_runs(&out), [BUILD_RUN], "{out}");
}

#[test]
fn local_cache_round_trip_and_missing_cache_is_only_a_warning() {
    if !ready("local_cache_round_trip_and_missing_cache_is_only_a_warning") {
        return;
    }
    let t = RoundTrip::new();
    let dir = t.dir.path().join("cache-dir");
    // The first CI run has no cache yet: a warning, not a failure.
    let missing = format!("type=local,src={}", dir.display());
    let to = format!("type=local,dest={},mode=max", dir.display());
    let (first, out) = t.build("a", None, &["--cache-from", &missing, "--cache-to", &to]);
    assert!(out.contains("WARNING: importing cache from"), "{out}");
    let index: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"], "latest");
    assert!(dir.join("oci-layout").is_file());

    let (second, out) = t.build("b", None, &["--cache-from", &missing]);
    assert_eq!(second, first);
    assert!(executed_runs(&out).is_empty(), "{out}");
    // A corrupted blob costs the hit, never the build or the image's integrity.
    let fresh = RoundTrip::new();
    let (_, _) =
        fresh.build("a", None, &["--cache-to", &format!("type=local,dest={}", fresh.dir.path().join("c").display())]);
    let layout = fresh.dir.path().join("c");
    let blob = |digest: &str| layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap())
            .unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        std::fs::write(blob(layer["digest"].as_str().unwrap()), b"garbage").unwrap();
    }
    let from = format!("type=local,src={}", fresh.dir.path().join("c").display());
    let (_, out) = fresh.build("b", None, &["--cache-from", &from]);
    assert!(out.contains("WARNING: importing cache record"), "{out}");
}

#[test]
fn inline_cache_travels_with_the_pushed_image() {
    if !ready("inline_cache_travels_with_the_pushed_image") {
        return;
    }
    let t = RoundTrip::new();
    let image = registry().reference("inline-app:1");
    let (first, out) = t.build("a", None, &["-t", &image, "--push", "--cache-to", "type=inline"]);
    assert_eq!(executed_runs(&out).len(), 2, "{out}");
    let config = Command::new("skopeo")
        .args(["inspect", "--config", "--raw", "--tls-verify=false", &format!("docker://{image}")])
        .output()
        .unwrap();
    let config: Value = serde_json::from_slice(&config.stdout).unwrap();
    let records = config["rbuild.cache.v1"]["records"].as_object().map_or(0, |r| r.len());
    assert!(records >= 4, "the image config carries the final stage's records: {config}");

    let from = format!("type=registry,ref={image}");
    let (second, out) = t.build("b", None, &["--cache-from", &from, "--cache-to", "type=inline"]);
    assert_eq!(second, first, "same records, same config, same image");
    assert!(executed_runs(&out).is_empty(), "{out}");
    // Inline is mode=min: the build stage is not in it.
    let (_, out) = t.build("c", Some("build"), &["--cache-from", &from]);
    assert_eq!(executed_runs(&out).len(), 1, "{out}");
    // An image without inline metadata is a warning.
    let plain = registry().reference("busybox:latest");
    let (_, out) = t.build("d", None, &["--cache-from", &plain]);
    assert!(out.contains("has no rbuild cache metadata"), "{out}");
}

/// The `cache miss:` line the plain progress shows for a step.
fn miss(stderr: &str, step_contains: &str) -> String {
    let s = steps(stderr);
    let (name, lines) = s
        .iter()
        .find(|(n, _)| n.contains(step_contains))
        .unwrap_or_else(|| panic!("no step {step_contains}:\n{stderr}"));
    lines
        .iter()
        .find(|l| l.starts_with("cache miss: "))
        .cloned()
        .unwrap_or_else(|| panic!("no explanation for {name}:\n{stderr}"))
}

#[test]
fn explain_says_why_each_step_missed() {
    if !ready("explain_says_why_each_step_missed") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let ctx = context(
        t.path(),
        "ARG BASE\nFROM $BASE\nARG VERSION=1\nARG API_TOKEN=x\nCOPY src/ /app/\nRUN echo $VERSION $API_TOKEN > /v\nRUN cat /v\n",
        &[("src/main.c", "int main;\n"), ("src/util.c", "int util;\n")],
    );
    let store = t.path().join("s");
    // A tag of its own, moved to another manifest below (other tests use busybox:latest).
    registry().seed(support::busybox_layout(), "busybox:moving", &[]).unwrap();
    let build = |extra: &[&str]| {
        let arg = format!("BASE={}", registry().reference("busybox:moving"));
        let mut args = vec!["--explain", "--build-arg", &arg];
        args.extend(extra);
        args.push(ctx.to_str().unwrap());
        ok(&rbuild(&store, &args))
    };
    let out = build(&[]);
    assert_eq!(miss(&out, "COPY src/"), "cache miss: no earlier build of this step");

    std::fs::write(ctx.join("src/main.c"), "int main(void);\n").unwrap();
    let out = build(&[]);
    assert_eq!(miss(&out, "COPY src/"), "cache miss: src/main.c changed");
    assert_eq!(miss(&out, "RUN echo"), "cache miss: parent step [2/4] COPY changed");

    let out = build(&["--build-arg", "VERSION=2", "--build-arg", "API_TOKEN=hunter2"]);
    let why = miss(&out, "RUN echo");
    assert!(why.contains("ARG VERSION changed (\"1\" -> \"2\")"), "{why}");
    assert!(why.contains("ARG API_TOKEN changed") && !out.contains("hunter2 ->") && !why.contains("hunter2"), "{why}");
    assert!(steps(&out).get("[2/4] COPY src/ /app/").is_some_and(|l| l.iter().any(|x| x == "CACHED")), "{out}");

    let out = build(&["--build-arg", "VERSION=2", "--build-arg", "API_TOKEN=hunter2", "--no-cache"]);
    assert_eq!(miss(&out, "RUN cat"), "cache miss: --no-cache");

    let why = miss(&out, "RUN cat");
    assert!(!why.contains("hunter2"), "a parent is named by its position, not its expanded text: {why}");

    // The tag now names another manifest (docker media types): same image reference, new digest.
    registry().seed(support::busybox_layout(), "busybox:moving", &["--format", "v2s2"]).unwrap();
    let out = build(&["--build-arg", "VERSION=2", "--build-arg", "API_TOKEN=hunter2"]);
    let why = miss(&out, "COPY src/");
    assert!(why.starts_with("cache miss: base image digest changed (sha256:") && why.contains(" -> sha256:"), "{why}");
    let why = miss(&out, "FROM");
    assert!(why.starts_with("cache miss: base image digest changed (sha256:"), "{why}");
}

#[test]
fn no_cache_filter_reruns_only_the_named_stage() {
    if !ready("no_cache_filter_reruns_only_the_named_stage") {
        return;
    }
    let t = RoundTrip::new();
    let (first, out) = t.build("a", None, &[]);
    assert_eq!(executed_runs(&out).len(), 2, "{out}");
    // As BuildKit, only stages named with AS can be filtered.
    let (second, out) = t.build("a", None, &["--no-cache-filter", "stage-1,nosuch"]);
    assert!(out.contains("no stage named \"stage-1\""), "unnamed stages cannot be filtered: {out}");
    assert!(executed_runs(&out).is_empty(), "{out}");
    assert_eq!(second, first);
    // The named stage runs again even though the final stage's result is cached (a cached
    // reader does not skip it); its readers keep their keys, so they stay cached.
    let (built, _) = t.build("a", Some("build"), &[]);
    let (rebuilt, out) = t.build("a", Some("build"), &["--no-cache-filter", "build"]);
    assert_eq!(executed_runs(&out), [BUILD_RUN], "{out}");
    assert_ne!(rebuilt, built, "the step ran again and its new result is kept");
    let (third, out) = t.build("a", None, &["--no-cache-filter", "BUILD", "--explain"]);
    assert_eq!(executed_runs(&out), [BUILD_RUN], "{out}");
    assert_eq!(miss(&out, "[build 2/2] RUN"), "cache miss: --no-cache-filter");
    assert_eq!(third, first);
    assert!(
        steps(&out)
            .get("[stage-1 4/4] RUN cat /proc/sys/kernel/random/uuid > /final-at")
            .is_some_and(|l| l.iter().any(|x| x == "CACHED")),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let ctx = context(dir.path(), "ARG BASE\nFROM $BASE AS only\nRUN cat /proc/sys/kernel/random/uuid > /a\nRUN cat /proc/sys/kernel/random/uuid > /b\n", &[]);
    let store = dir.path().join("s");
    let arg = base_arg();
    ok(&rbuild(&store, &["--build-arg", &arg, ctx.to_str().unwrap()]));
    let out = ok(&rbuild(&store, &["--build-arg", &arg, "--no-cache-filter", "only", ctx.to_str().unwrap()]));
    assert_eq!(executed_runs(&out).len(), 2, "a single named stage can be filtered too: {out}");
}

#[test]
fn no_cache_results_replace_the_cached_ones() {
    if !ready("no_cache_results_replace_the_cached_ones") {
        return;
    }
    let t = RoundTrip::new();
    let (first, _) = t.build("a", None, &[]);
    let (second, out) = t.build("a", None, &["--no-cache"]);
    assert_eq!(executed_runs(&out).len(), 2, "{out}");
    assert_ne!(second, first, "new uuids, new image");
    // The next plain build is cached on the newest results.
    let (third, out) = t.build("a", None, &[]);
    assert!(executed_runs(&out).is_empty(), "{out}");
    assert_eq!(third, second);
}

#[test]
fn independent_stages_run_at_the_same_time() {
    if !ready("independent_stages_run_at_the_same_time") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let ctx = context(
        t.path(),
        "ARG BASE\nFROM $BASE AS a\nRUN sleep 1 && echo a > /a\nFROM $BASE AS b\nRUN sleep 1 && echo b > /b\n\
         FROM $BASE\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n",
        &[],
    );
    let arg = base_arg();
    let out = ok(&rbuild(&t.path().join("s"), &["--progress=rawjson", "--build-arg", &arg, ctx.to_str().unwrap()]));
    let events: Vec<Value> = out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let span = |stage: &str| {
        let v = events
            .iter()
            .find(|e| {
                e["event"] == "started"
                    && e["name"].as_str().is_some_and(|n| n.starts_with(&format!("[{stage} ")) && n.contains("RUN"))
            })
            .unwrap_or_else(|| panic!("no RUN of stage {stage}: {out}"));
        let id = v["vertex"].clone();
        let done = events.iter().find(|e| e["vertex"] == id && e["event"] == "completed").expect("completed");
        (v["time"].as_f64().unwrap(), done["time"].as_f64().unwrap())
    };
    let (a0, a1) = span("a");
    let (b0, b1) = span("b");
    assert!(a0 < b1 && b0 < a1, "stages a [{a0}, {a1}] and b [{b0}, {b1}] did not overlap");
}
