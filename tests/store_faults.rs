//! Store fault tests: the real `rbuild` binary is SIGKILLed at random points, and several run
//! at once on one store. After any of it, a normal build succeeds and `Store::verify` finds
//! nothing wrong (DESIGN.md invariant 4), and identical inputs still give identical image ids.
//!
//! They need root and the e2e fixtures (busybox image, docker-registry); without them each test
//! says why it skips. `RBUILD_FAULT_SEED=<n>` replays a run of the kill test (the seed is
//! printed; run with `--nocapture` to see it).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rbuild_cache::{GcOptions, LockMode, ProblemKind, Store, StoreOptions, VerifyOptions};
use support::Registry;

fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(|| {
        let r = Registry::start();
        r.seed_busybox("busybox:latest");
        r
    })
}

fn ready(test: &str) -> bool {
    support::require_root(test) && support::require_busybox(test) && support::require_registry(test)
}

/// xorshift64*: a seeded, dependency-free source of kill delays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A build context: a Dockerfile and the files it copies.
fn context(dir: &Path, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
    dir.to_owned()
}

/// `rbuild build` of `ctx` into the store at `root`, tagged `tag`, writing the image id to
/// `iidfile`, reproducibly.
fn rbuild(root: &Path, ctx: &Path, tag: &str, iidfile: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
    cmd.arg("--root")
        .arg(root)
        .args(["-t", tag, "--build-arg", &format!("BASE={}", registry().reference("busybox:latest"))])
        .arg("--iidfile")
        .arg(iidfile)
        .arg(ctx)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("RBUILD_NO_PROGRESS", "1")
        .stdin(Stdio::null());
    cmd
}

fn check(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed with {}:\n{}", out.status, String::from_utf8_lossy(&out.stderr));
}

fn read_iid(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap().trim().to_owned()
}

/// Verifies the store (re-hashing every blob) and returns the problems, other than stale temp
/// areas when `allow_stale_tmp` (what the next open reaps).
fn problems(root: &Path, allow_stale_tmp: bool) -> Vec<String> {
    let store = Store::open(root).unwrap();
    let report = store.verify(&VerifyOptions { rehash_blobs: true, repair: false }).unwrap();
    report
        .problems
        .iter()
        .filter(|p| !(allow_stale_tmp && p.kind == ProblemKind::StaleTmpArea))
        .map(ToString::to_string)
        .collect()
}

/// Multi-step, with RUN and COPY, slow enough (≈1.5 s for the uncached steps) that random kills land in every phase:
/// pull (fresh stores), RUN in the sandbox, COPY, layer packing, image commit. The first RUN is
/// the same every time (a cache hit once a store has it); `salt` makes the later steps new.
fn fault_dockerfile(salt: u64) -> String {
    format!(
        "ARG BASE\nFROM $BASE\nCOPY a.txt /a.txt\n\
         RUN cat /a.txt > /b && sleep 0.1\n\
         COPY c.txt /c.txt\n\
         RUN echo {salt} >> /b && i=0; while [ $i -lt 300 ]; do echo {salt}-$i > /f$i; i=$((i+1)); done; sleep 0.2\n\
         RUN head -c 3000000 /dev/urandom > /big\n\
         RUN rm /f7 && cat /b /c.txt > /d && cat /f* | wc -c >> /d && sleep 0.2\n"
    )
}

/// What `/d` holds after [`fault_dockerfile`]: it depends on every layer below it.
fn expected_d(salt: u64) -> String {
    let files: usize = (0..300).filter(|&i| i != 7).map(|i| format!("{salt}-{i}\n").len()).sum();
    format!("alpha\n{salt}\ngamma\n{files}\n")
}

/// `/d` from the top layer of the image named `name`, read through the store's records.
fn top_layer_file(root: &Path, name: &str, file: &str) -> String {
    let store = Store::open(root).unwrap();
    let image = store.get_image(name).unwrap().unwrap_or_else(|| panic!("no image {name}"));
    let manifest: serde_json::Value = serde_json::from_slice(&store.read_blob(&image.manifest).unwrap()).unwrap();
    let top = manifest["layers"].as_array().and_then(|l| l.last()).unwrap()["digest"].as_str().unwrap().to_owned();
    let blob = store.blob_path(&top.parse().unwrap()).unwrap();
    let listing = Command::new("tar").arg("-tzf").arg(&blob).output().unwrap();
    let entry = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .find(|l| l.trim_start_matches("./") == file)
        .unwrap_or_else(|| panic!("{file} is not in the top layer {top}"))
        .to_owned();
    let out = Command::new("tar").arg("-xzOf").arg(&blob).arg(entry).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // busybox wc may pad its count.
    text.lines().map(str::trim).collect::<Vec<_>>().join("\n") + "\n"
}

#[test]
fn sigkilled_builds_leave_a_store_the_next_build_uses() {
    if !ready("sigkilled_builds_leave_a_store_the_next_build_uses") {
        return;
    }
    let seed = std::env::var("RBUILD_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_2024_u64);
    eprintln!("kill test seed: RBUILD_FAULT_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let t = tempfile::tempdir().unwrap();
    let files = [("a.txt", "alpha\n"), ("c.txt", "gamma\n")];
    let iterations = 24;
    let mut root = t.path().join("store-0");
    let (mut unfinished, started) = (0, Instant::now());
    for i in 0..iterations {
        if i % 8 == 0 {
            // A fresh store now and then, so kills also land during the pull.
            root = t.path().join(format!("store-{i}"));
        }
        let salt = rng.below(1 << 32);
        let ctx = context(&t.path().join(format!("ctx-{i}")), &fault_dockerfile(salt), &files);
        let delay = Duration::from_millis(rng.below(1500));
        let iid = t.path().join(format!("iid-{i}"));
        let mut child: Child =
            rbuild(&root, &ctx, "faults:latest", &iid).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap().is_some();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        unfinished += usize::from(!finished);
        eprintln!("iteration {i}: killed after {delay:?}{}", if finished { " (it had finished)" } else { "" });

        let found = problems(&root, true);
        assert!(found.is_empty(), "iteration {i}: after the kill, the store has problems:\n{}", found.join("\n"));

        let build_started = Instant::now();
        let out = rbuild(&root, &ctx, "faults:latest", &iid).output().unwrap();
        check(&out, &format!("iteration {i}: the build after the kill"));
        eprintln!("iteration {i}: the build after the kill took {:?}", build_started.elapsed());
        let found = problems(&root, false);
        assert!(found.is_empty(), "iteration {i}: after a normal build, the store has problems:\n{}", found.join("\n"));
        // What the killed build left was not mistaken for good content.
        assert_eq!(top_layer_file(&root, "docker.io/library/faults:latest", "d"), expected_d(salt), "iteration {i}");
    }
    eprintln!("{iterations} iterations ({unfinished} killed mid-build) took {:?}", started.elapsed());
    assert!(unfinished >= iterations / 2, "builds finish too fast for the kills to test anything");
}

/// Builds started together on one store: 4 identical (racing to publish the same snapshots,
/// records, blobs and image name) and 4 different.
#[test]
fn concurrent_builds_share_one_store_and_agree() {
    if !ready("concurrent_builds_share_one_store_and_agree") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    let same = context(
        &t.path().join("same"),
        "ARG BASE\nFROM $BASE\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b && sleep 0.1\nRUN echo done >> /b\n",
        &[("a.txt", "same\n")],
    );
    let mut builds = Vec::new();
    for n in 0..8 {
        let (ctx, tag) = if n % 2 == 0 {
            (same.clone(), "same:1".to_owned())
        } else {
            let df = format!("ARG BASE\nFROM $BASE\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b && echo {n} >> /b\n");
            (context(&t.path().join(format!("diff-{n}")), &df, &[("a.txt", "different\n")]), format!("diff-{n}:1"))
        };
        let iid = t.path().join(format!("iid-{n}"));
        let child = rbuild(&root, &ctx, &tag, &iid).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        builds.push((n, iid, child));
    }

    // While they run, garbage collection cannot take the store from them.
    let gc_try = StoreOptions { lock: LockMode::Exclusive, wait: false, ..StoreOptions::default() };
    let mut locked_out = false;
    while builds.iter_mut().any(|(_, _, c)| c.try_wait().unwrap().is_none()) {
        match Store::open_with(&root, &gc_try) {
            Err(rbuild_cache::Error::Locked { .. }) => locked_out = true,
            Err(e) => panic!("opening the store: {e}"),
            Ok(gc) => drop(gc),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(locked_out, "a running build must hold the store lock");

    let mut same_ids = Vec::new();
    let mut other_ids = Vec::new();
    for (n, iid, child) in builds {
        check(&child.wait_with_output().unwrap(), &format!("concurrent build {n}"));
        if n % 2 == 0 { &mut same_ids } else { &mut other_ids }.push(read_iid(&iid));
    }
    assert!(same_ids.iter().all(|id| id == &same_ids[0]), "identical builds gave different ids: {same_ids:?}");
    let mut distinct = other_ids.clone();
    distinct.push(same_ids[0].clone());
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 5, "different builds must give different ids: {other_ids:?}");
    let found = problems(&root, false);
    assert!(found.is_empty(), "after concurrent builds, the store has problems:\n{}", found.join("\n"));
    assert_eq!(Store::open(&root).unwrap().list_images().unwrap().len(), 5);

    // Collecting every cache record, once the different images are untagged, frees their
    // layers and keeps what `same:1` needs: a rebuild re-runs the steps and reproduces the
    // image exactly (its snapshots and the base layer blob were kept, not repacked).
    let gc = Store::open_with(&root, &StoreOptions { lock: LockMode::Exclusive, ..StoreOptions::default() }).unwrap();
    for n in (1..8).step_by(2) {
        assert!(gc.remove_image(&format!("docker.io/library/diff-{n}:1")).unwrap());
    }
    let report = gc.gc(&GcOptions { all: true, ..GcOptions::default() }).unwrap();
    assert!(report.removed_records > 0 && report.removed_snapshots >= 4 && report.freed_bytes > 0, "{report:?}");
    drop(gc);
    let iid = t.path().join("iid-after-gc");
    check(&rbuild(&root, &same, "same:1", &iid).output().unwrap(), "the build after gc");
    assert_eq!(read_iid(&iid), same_ids[0]);
    let found = problems(&root, false);
    assert!(found.is_empty(), "after gc and a rebuild, the store has problems:\n{}", found.join("\n"));
}
