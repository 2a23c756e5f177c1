//! Store fault tests: the real `rbuild` binary is SIGKILLed at random points (of a build:
//! pull, RUN, layer packing, OCI export, push; and of `rbuild prune`), several run at once on one
//! store, and a build runs out of disk. After any of it, a normal build succeeds and
//! `Store::verify` finds nothing wrong (DESIGN.md invariant 4), and identical inputs still give
//! identical image ids.
//!
//! They need root and the e2e fixtures (busybox image, docker-registry); without them each test
//! says why it skips. `RBUILD_FAULT_SEED=<n>` replays a run of the kill tests (the seed is
//! printed; run with `--nocapture` to see it).

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rbuild_cache::{GcOptions, LockMode, ProblemKind, Store, StoreOptions, VerifyOptions};
use support::Registry;

fn registry() -> &'static Registry {
    support::busybox_registry()
}

fn ready(test: &str) -> bool {
    support::ready(test)
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

/// `file` from the layer `from_top` layers below the top (0: the top layer) of the image named
/// `name`, read through the store's records.
fn layer_file(root: &Path, name: &str, from_top: usize, file: &str) -> String {
    let store = Store::open(root).unwrap();
    let image = store.get_image(name).unwrap().unwrap_or_else(|| panic!("no image {name}"));
    let layers = manifest_layers(&store, &store.read_blob(&image.manifest).unwrap());
    let digest = &layers[layers.len() - 1 - from_top];
    let blob = store.blob_path(&digest.parse().unwrap()).unwrap();
    let listing = Command::new("tar").arg("-tzf").arg(&blob).output().unwrap();
    let entry = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .find(|l| l.trim_start_matches("./") == file)
        .unwrap_or_else(|| panic!("{file} is not in layer {digest} of {name}"))
        .to_owned();
    let out = Command::new("tar").arg("-xzOf").arg(&blob).arg(entry).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // busybox wc may pad its count.
    text.lines().map(str::trim).collect::<Vec<_>>().join("\n") + "\n"
}

/// The layer digests of a manifest, or of the image of an index (a pushed image is one: the
/// image and its provenance attestation).
fn manifest_layers(store: &Store, manifest: &[u8]) -> Vec<String> {
    let manifest: serde_json::Value = serde_json::from_slice(manifest).unwrap();
    if let Some(entries) = manifest["manifests"].as_array() {
        let image = entries
            .iter()
            .find(|m| m["annotations"]["vnd.docker.reference.type"] != "attestation-manifest")
            .expect("an image in the index");
        let digest = image["digest"].as_str().unwrap().parse().unwrap();
        return manifest_layers(store, &store.read_blob(&digest).unwrap());
    }
    manifest["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_owned()).collect()
}

/// Where in a build a kill is aimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `--push` to the loopback registry, after the image is named in the store.
    Push,
    /// Pulling a base image the store has never seen (the one the last `Push` pushed).
    Pull,
    /// One of the RUN steps, in the sandbox.
    Run,
    /// After the last step: packing the layers and committing the image.
    LayerWrite,
    /// `-o type=oci,dest=`, after the image is named in the store.
    Export,
}

const PHASES: [Phase; 5] = [Phase::Push, Phase::Pull, Phase::Run, Phase::LayerWrite, Phase::Export];

/// The RUN steps of [`fault_dockerfile`], as progress names them.
const RUN_STEPS: [&str; 4] = ["RUN cat /a.txt", "RUN echo ", "RUN head -c", "RUN rm /f7"];

/// A child's stderr, line by line, as it arrives.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn follow(child: &mut Child) -> Lines {
        let lines = Lines::default();
        let stderr = child.stderr.take().unwrap();
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.0.lock().unwrap().push(line);
            }
        });
        lines
    }

    fn snapshot(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// Whether the progress in `lines` shows the trigger of a kill aimed at `phase` (`run` picks
/// which RUN step). An export is seen starting in `export_dir`, where its temp file appears.
fn triggered(phase: Phase, run: usize, lines: &[String], export_dir: &Path) -> bool {
    match phase {
        Phase::Pull => lines.iter().any(|l| l.contains("pulling layer")),
        Phase::Run => lines.iter().any(|l| l.contains(RUN_STEPS[run])),
        Phase::LayerWrite => {
            // The last RUN step's `#N DONE`.
            let Some(n) = lines.iter().find(|l| l.contains(RUN_STEPS[3])).and_then(|l| l.split(' ').next()) else {
                return false;
            };
            let done = format!("{n} DONE");
            lines.iter().any(|l| l.starts_with(&done))
        }
        Phase::Push => lines.iter().any(|l| l.starts_with("naming to ")),
        Phase::Export => std::fs::read_dir(export_dir).is_ok_and(|mut d| d.next().is_some()),
    }
}

/// Whether the progress in `lines` shows `phase` finished (the kill came too late for it).
fn phase_done(phase: Phase, lines: &[String]) -> bool {
    let done = |needle: &str| lines.iter().any(|l| l.contains(needle));
    match phase {
        Phase::Pull => lines.iter().any(|l| l.contains("COPY a.txt") && !l.contains("pulling")),
        Phase::Run => done(RUN_STEPS[3]) && done("naming to "),
        Phase::LayerWrite => done("naming to "),
        Phase::Push => done("pushed 127.0.0.1"),
        Phase::Export => done("exporting to oci image format"),
    }
}

/// An OCI archive is complete: it lists `index.json` and every blob.
fn oci_archive_manifest(path: &Path) -> Result<String, String> {
    let out = Command::new("tar").arg("-xOf").arg(path).arg("index.json").output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let index: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let digest = index["manifests"][0]["digest"].as_str().ok_or("no manifest in index.json")?.to_owned();
    let listing = Command::new("tar").arg("-tf").arg(path).output().unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    let hex = digest.trim_start_matches("sha256:");
    if !listing.lines().any(|l| l.ends_with(hex)) {
        return Err(format!("the archive lacks its manifest {digest}"));
    }
    Ok(digest)
}

/// Kill delays (after the trigger) start at these bounds, in ms, and shrink when kills keep
/// arriving after the phase is over; measured on a loaded 2-core machine: a pull of the fresh
/// base ≈ 150 ms, a RUN step 100–300 ms, packing and committing ≈ 250 ms, writing the OCI
/// archive (with its extra 16 MB layer) ≈ 50 ms, the push ≈ 250 ms.
fn initial_max_delay(phase: Phase) -> u64 {
    match phase {
        Phase::Pull => 250,
        Phase::Run => 300,
        Phase::LayerWrite => 300,
        Phase::Export => 60,
        Phase::Push => 300,
    }
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
    let iterations = 50;
    let mut root = t.path().join("store-0");
    // Pulls go to their own store, which has never seen the images pushed from `root`.
    let pull_root = t.path().join("store-pull");
    // Its own registry, for the 10 pushed images: dropped (and its storage deleted) at the end.
    let reg = &Registry::start();
    let mut max_delay: Vec<u64> = PHASES.iter().map(|&p| initial_max_delay(p)).collect();
    let mut landed = [0usize; 5];
    let mut pushed: Option<(String, u64)> = None;
    let started = Instant::now();
    for i in 0..iterations {
        if i % 10 == 0 {
            // A fresh store now and then, so kills also land during the pull of busybox.
            root = t.path().join(format!("store-{i}"));
        }
        let phase_ix = i % PHASES.len();
        let phase = PHASES[phase_ix];
        let salt = rng.below(1 << 32);
        let run_step = usize::try_from(rng.below(4)).unwrap();
        let delay = Duration::from_millis(rng.below(max_delay[phase_ix] + 1));
        let iid = t.path().join(format!("iid-{i}"));
        let oci = t.path().join(format!("out-{i}")).join("image.tar");
        let ctx_dir = t.path().join(format!("ctx-{i}"));
        let (store, ctx, tag, extra): (&Path, PathBuf, String, Vec<String>) = match phase {
            Phase::Pull => {
                let (base, _) = pushed.clone().expect("a push comes before each pull");
                let df = format!("FROM {base}\nCOPY a.txt /a.txt\n");
                (&pull_root, context(&ctx_dir, &df, &files), format!("pulled-{i}:1"), Vec::new())
            }
            Phase::Push => {
                let tag = reg.reference(&format!("kill-push-{i}:1"));
                (&root, context(&ctx_dir, &fault_dockerfile(salt), &files), tag, vec!["--push".into()])
            }
            Phase::Export => {
                std::fs::create_dir_all(oci.parent().unwrap()).unwrap();
                let extra =
                    vec!["-o".into(), format!("type=oci,dest={}", oci.display()), "-o".into(), "type=image".into()];
                // A 16 MB layer on top, so that writing the archive takes long enough (≈50 ms)
                // for kills to land inside it.
                let df = fault_dockerfile(salt) + "RUN head -c 16000000 /dev/urandom > /big2\n";
                (&root, context(&ctx_dir, &df, &files), "faults:latest".into(), extra)
            }
            Phase::Run | Phase::LayerWrite => {
                (&root, context(&ctx_dir, &fault_dockerfile(salt), &files), "faults:latest".into(), Vec::new())
            }
        };
        let command = || {
            let mut cmd = rbuild(store, &ctx, &tag, &iid);
            cmd.args(&extra).args(["--progress", "plain"]);
            cmd
        };

        // The killed build: SIGKILL `delay` after the progress shows the phase has begun.
        let mut child = command().stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let lines = Lines::follow(&mut child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut fired: Option<Instant> = None;
        let finished = loop {
            if child.try_wait().unwrap().is_some() {
                break true;
            }
            match fired {
                None if triggered(phase, run_step, &lines.snapshot(), oci.parent().unwrap()) => {
                    fired = Some(Instant::now());
                }
                Some(at) if at.elapsed() >= delay => break false,
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "iteration {i} ({phase:?}): no trigger in 60 s:\n{}",
                lines.snapshot().join("\n")
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(20)); // the last lines
        let in_phase = !finished && fired.is_some() && !phase_done(phase, &lines.snapshot());
        if in_phase {
            landed[phase_ix] += 1;
        } else {
            // Too late: aim earlier next time.
            max_delay[phase_ix] = (max_delay[phase_ix] * 2 / 3).max(10);
        }
        eprintln!(
            "iteration {i}: {phase:?}, killed {delay:?} after the trigger{}",
            if finished {
                " (it had finished)"
            } else if in_phase {
                ""
            } else {
                " (after the phase)"
            }
        );

        let found = problems(store, true);
        assert!(
            found.is_empty(),
            "iteration {i} ({phase:?}, seed {seed}): after the kill, the store has problems:\n{}",
            found.join("\n")
        );
        if phase == Phase::Export && oci.exists() {
            // Never a partial archive at the destination.
            oci_archive_manifest(&oci)
                .unwrap_or_else(|e| panic!("iteration {i}: the killed export left a broken {}: {e}", oci.display()));
        }

        // The same build again, to the end.
        let build_started = Instant::now();
        let out = command().output().unwrap();
        check(&out, &format!("iteration {i} ({phase:?}, seed {seed}): the build after the kill"));
        let found = problems(store, false);
        assert!(
            found.is_empty(),
            "iteration {i} ({phase:?}, seed {seed}): after a normal build, the store has problems:\n{}",
            found.join("\n")
        );
        let name = if tag.starts_with("127.0.0.1") { tag.clone() } else { format!("docker.io/library/{tag}") };
        // What the killed build left was not mistaken for good content.
        match phase {
            Phase::Pull => {
                let (_, base_salt) = pushed.clone().unwrap();
                assert_eq!(layer_file(store, &name, 0, "a.txt"), "alpha\n", "iteration {i}");
                assert_eq!(layer_file(store, &name, 1, "d"), expected_d(base_salt), "iteration {i}: the pulled base");
            }
            Phase::Export => assert_eq!(layer_file(store, &name, 1, "d"), expected_d(salt), "iteration {i} (Export)"),
            _ => assert_eq!(layer_file(store, &name, 0, "d"), expected_d(salt), "iteration {i} ({phase:?})"),
        }
        let local = Store::open(store).unwrap();
        let manifest = local.get_image(&name).unwrap().unwrap().manifest;
        match phase {
            Phase::Push => {
                let mut remote = reg.skopeo_inspect(&format!("kill-push-{i}:1"), true).expect("the pushed image");
                if let Some(entries) = remote["manifests"].as_array() {
                    // The pushed index: the image and its provenance.
                    let image = entries
                        .iter()
                        .find(|m| m["annotations"]["vnd.docker.reference.type"] != "attestation-manifest")
                        .and_then(|m| m["digest"].as_str())
                        .expect("an image in the pushed index")
                        .to_owned();
                    remote = reg.skopeo_inspect(&format!("kill-push-{i}@{image}"), true).expect("the pushed image");
                }
                let remote: Vec<String> = remote["layers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l["digest"].as_str().unwrap().to_owned())
                    .collect();
                assert_eq!(
                    remote,
                    manifest_layers(&local, &local.read_blob(&manifest).unwrap()),
                    "iteration {i}: the pushed layers"
                );
                pushed = Some((tag.clone(), salt));
            }
            Phase::Export => {
                let digest = oci_archive_manifest(&oci).unwrap_or_else(|e| panic!("iteration {i}: {e}"));
                assert_eq!(digest, manifest.to_string(), "iteration {i}: the exported manifest");
            }
            _ => {}
        }
        eprintln!("iteration {i}: the build after the kill took {:?}", build_started.elapsed());
    }
    let summary: Vec<String> =
        PHASES.iter().zip(landed).map(|(p, n)| format!("{p:?}: {n}/{}", iterations / PHASES.len())).collect();
    eprintln!("{iterations} iterations took {:?}; kills inside their phase: {}", started.elapsed(), summary.join(", "));
    for (phase, n) in PHASES.iter().zip(landed) {
        // Most land inside; timing on a loaded machine decides the rest.
        assert!(
            n * 10 >= iterations / PHASES.len() * 3,
            "too few kills landed inside {phase:?}: {}",
            summary.join(", ")
        );
    }
    let cleanup = Instant::now();
    drop(t);
    eprintln!("removing the stores took {:?}", cleanup.elapsed());
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

/// `rbuild prune -a -f` SIGKILLed at random points while it removes records, snapshots (a
/// thousand files each) and blobs: the store stays valid, and the next build works.
#[test]
fn sigkilled_prune_leaves_a_store_the_next_build_uses() {
    if !ready("sigkilled_prune_leaves_a_store_the_next_build_uses") {
        return;
    }
    let seed = std::env::var("RBUILD_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x6c_2024_u64);
    eprintln!("prune kill test seed: RBUILD_FAULT_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("store");
    let files = [("a.txt", "alpha\n")];
    let dockerfile = |salt: u64| {
        format!(
            "ARG BASE\nFROM $BASE\nCOPY a.txt /a.txt\n\
             RUN i=0; while [ $i -lt 1000 ]; do echo {salt}-$i > /f$i; i=$((i+1)); done\n\
             RUN cat /a.txt /f999 > /d\n"
        )
    };
    let build = |i: usize, n: usize, salt: u64| {
        let ctx = context(&t.path().join(format!("ctx-{i}-{n}")), &dockerfile(salt), &files);
        let out = rbuild(&root, &ctx, &format!("gc-{n}:1"), &t.path().join("iid")).output().unwrap();
        check(&out, &format!("iteration {i}: build {n}"));
        ctx
    };
    let prune = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
        cmd.arg("--root").arg(&root).args(["prune", "-a", "-f"]).stdin(Stdio::null()).stdout(Stdio::null());
        cmd
    };

    // How long a whole prune of this much takes, to aim the kills.
    build(0, 0, 0);
    build(0, 1, 1);
    let measured = Instant::now();
    check(&prune().output().unwrap(), "the measured prune");
    let full = measured.elapsed();
    eprintln!("a whole prune took {full:?}");

    let iterations = 8;
    let mut interrupted = 0;
    for i in 1..=iterations {
        let salts = [rng.below(1 << 32), rng.below(1 << 32)];
        build(i, 0, salts[0]);
        let keep = build(i, 1, salts[1]);
        let delay = Duration::from_micros(rng.below(u64::try_from(full.as_micros()).unwrap() + 1));
        let mut child = prune().stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap().is_some();
        child.kill().unwrap();
        child.wait().unwrap();
        interrupted += usize::from(!finished);
        eprintln!("iteration {i}: prune killed after {delay:?}{}", if finished { " (it had finished)" } else { "" });

        let found = problems(&root, true);
        assert!(found.is_empty(), "iteration {i} (seed {seed}): after the killed prune:\n{}", found.join("\n"));
        let out = rbuild(&root, &keep, "gc-1:1", &t.path().join("iid")).output().unwrap();
        check(&out, &format!("iteration {i} (seed {seed}): the build after the killed prune"));
        let found = problems(&root, false);
        assert!(found.is_empty(), "iteration {i} (seed {seed}): after the rebuild:\n{}", found.join("\n"));
        assert_eq!(layer_file(&root, "docker.io/library/gc-1:1", 0, "d"), format!("alpha\n{}-999\n", salts[1]));
    }
    assert!(interrupted * 2 >= iterations, "only {interrupted} of {iterations} kills interrupted a prune");
}

/// A tmpfs mounted for one test, unmounted (lazily) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mounting a tmpfs on {}", dir.display());
        Tmpfs(dir.to_owned())
    }

    fn resize(&self, size: &str) {
        let st = Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.0).status().unwrap();
        assert!(st.success(), "resizing the tmpfs on {}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A store on a small filesystem: builds that do not fit (a COPY, a RUN, a layer being packed)
/// fail saying the store is out of space, the store is still valid once there is room, and the same builds then succeed.
#[test]
fn a_full_disk_fails_the_build_clearly_and_the_store_survives() {
    if !ready("a_full_disk_fails_the_build_clearly_and_the_store_survives") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&t.path().join("small"), "8m");
    let root = disk.0.join("store");
    // Pulls busybox and fits.
    let small = context(&t.path().join("small-ctx"), "ARG BASE\nFROM $BASE\nCOPY a.txt /a.txt\n", &[("a.txt", "a\n")]);
    check(&rbuild(&root, &small, "small:1", &t.path().join("iid")).output().unwrap(), "a build that fits");

    // A COPY (written by rbuild) and a RUN (written by the step) that do not fit.
    let big: String = (0..1_500_000u32).map(|i| format!("{:08x}", i.wrapping_mul(2_654_435_761))).collect();
    let copy =
        context(&t.path().join("copy-ctx"), "ARG BASE\nFROM $BASE\nCOPY big.txt /big.txt\n", &[("big.txt", &big)]);
    let run = context(
        &t.path().join("run-ctx"),
        "ARG BASE\nFROM $BASE\nRUN dd if=/dev/urandom of=/big bs=1M count=12\n",
        &[],
    );
    // A RUN whose output fits, but not once more as its packed layer (random bytes do not
    // compress): the store's own blob write runs out of space.
    let free = nix::sys::statvfs::statvfs(&disk.0).unwrap();
    let free = free.blocks_available() * free.fragment_size();
    let count = free * 3 / 4 / 65536;
    let layer = context(
        &t.path().join("layer-ctx"),
        &format!("ARG BASE\nFROM $BASE\nRUN dd if=/dev/urandom of=/big bs=64k count={count}\n"),
        &[],
    );
    for (what, ctx) in [("COPY", &copy), ("RUN", &run), ("layer", &layer)] {
        let out = rbuild(&root, ctx, "big:1", &t.path().join("iid")).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!("{what} on a full disk:\n{stderr}");
        assert!(!out.status.success(), "the {what} build should not fit in 8 MiB");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            stderr.to_lowercase().contains("no space left"),
            "the {what} error should say the disk is full:\n{stderr}"
        );
        assert!(stderr.contains(&root.display().to_string()), "the {what} error should name the store:\n{stderr}");
        let found = problems(&root, false);
        assert!(found.is_empty(), "after the {what} build ran out of space:\n{}", found.join("\n"));
    }

    disk.resize("64m");
    let found = problems(&root, false);
    assert!(found.is_empty(), "once there is room again:\n{}", found.join("\n"));
    for (what, ctx) in [("COPY", &copy), ("RUN", &run), ("layer", &layer)] {
        check(
            &rbuild(&root, ctx, "big:1", &t.path().join("iid")).output().unwrap(),
            &format!("the {what} build with room"),
        );
    }
    let found = problems(&root, false);
    assert!(found.is_empty(), "after the builds with room:\n{}", found.join("\n"));
    assert_eq!(layer_file(&root, "docker.io/library/small:1", 0, "a.txt"), "a\n");
}
