//! The solver's cache rules through the real binary (issue 5): identical vertices run once,
//! stages the target does not need never run, and each invalidation rule re-runs exactly the
//! steps it should; plus prune budgets. Step outcomes are read from the plain progress log
//! (`#N [stage i/n] NAME` then `#N CACHED` or `#N DONE`).
//!
//! They need root and the e2e fixtures (busybox image, docker-registry); without them each test
//! says why it skips.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::Registry;

fn registry() -> &'static Registry {
    support::busybox_registry()
}

fn ready(test: &str) -> bool {
    support::ready(test)
}

/// A context directory with a Dockerfile and files, in `dir`.
fn write_context(dir: &Path, dockerfile: &str, files: &[(&str, &str)]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
    dir.to_owned()
}

/// What happened to each step of one build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Cached,
    Ran,
}

struct Outcome {
    ok: bool,
    log: String,
    /// By step name (`[stage 2/3] RUN ...` without the brackets' stage prefix kept as is).
    steps: BTreeMap<String, Step>,
}

impl Outcome {
    /// The outcome of the one step whose name contains `needle`.
    fn step(&self, needle: &str) -> Step {
        let found: Vec<_> = self.steps.iter().filter(|(name, _)| name.contains(needle)).collect();
        assert_eq!(found.len(), 1, "one step matching {needle:?} in\n{}", self.log);
        *found[0].1
    }

    fn ran(&self) -> usize {
        self.steps.values().filter(|s| **s == Step::Ran).count()
    }
}

fn parse_steps(log: &str) -> BTreeMap<String, Step> {
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for line in log.lines() {
        let Some(rest) = line.strip_prefix('#') else { continue };
        let Some((num, text)) = rest.split_once(' ') else { continue };
        if text.starts_with('[') {
            names.insert(num.to_owned(), text.to_owned());
        } else if let Some(name) = names.get(num) {
            if text == "CACHED" {
                out.insert(name.clone(), Step::Cached);
            } else if text.starts_with("DONE") {
                out.insert(name.clone(), Step::Ran);
            }
        }
    }
    out
}

struct Store {
    root: PathBuf,
}

impl Store {
    fn new(dir: &Path) -> Store {
        Store { root: dir.join("store") }
    }

    fn rbuild(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .env("RBUILD_NO_PROGRESS", "1")
            .output()
            .expect("run rbuild");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        eprintln!("rbuild {args:?} -> {}\n{text}", out.status);
        (out.status.success(), text)
    }

    fn build(&self, ctx: &Path, extra: &[&str]) -> Outcome {
        let base = format!("BASE={}", registry().reference("busybox:latest"));
        let mut args = vec!["build", "--progress=plain", "--build-arg", &base];
        args.extend_from_slice(extra);
        let ctx = ctx.to_str().unwrap();
        args.push(ctx);
        let (ok, log) = self.rbuild(&args);
        let steps = parse_steps(&log);
        Outcome { ok, log, steps }
    }
}

#[test]
fn identical_vertices_run_once_and_unneeded_stages_never_run() {
    let test = "identical_vertices_run_once_and_unneeded_stages_never_run";
    if !ready(test) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    // `one` and `two` are the same op on the same input: one vertex. `broken` would fail, and
    // `unused` would take 100 s: the target needs neither.
    let ctx = write_context(
        &t.path().join("ctx"),
        "ARG BASE\nFROM $BASE AS one\nRUN head -c 12 /dev/urandom | od -An -tx1 > /r\n\
         FROM $BASE AS two\nRUN head -c 12 /dev/urandom | od -An -tx1 > /r\n\
         FROM $BASE AS broken\nRUN exit 7\n\
         FROM $BASE AS unused\nRUN sleep 100\n\
         FROM $BASE\nCOPY --from=one /r /one\nCOPY --from=two /r /two\nRUN cmp /one /two && cat /one > /same\n",
        &[],
    );
    let s = Store::new(t.path());
    let out = s.build(&ctx, &[]);
    assert!(out.ok, "{}", out.log);
    let random_runs = out.steps.keys().filter(|n| n.contains("/dev/urandom")).count();
    assert_eq!(random_runs, 1, "the identical RUN is one vertex:\n{}", out.log);
    assert!(!out.log.contains("exit 7") && !out.log.contains("sleep 100"), "{}", out.log);
    assert_eq!(out.step("cmp /one /two"), Step::Ran, "both copies hold the same random bytes");
}

#[test]
fn each_change_reruns_exactly_the_steps_that_see_it() {
    let test = "each_change_reruns_exactly_the_steps_that_see_it";
    if !ready(test) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("ctx");
    let ctx = write_context(
        &dir,
        "ARG BASE\nFROM $BASE\nCOPY b.txt /b\nRUN cat /b > /b.seen\nENV MODE=one\nRUN echo $MODE > /mode\n\
         ARG V=1\nRUN echo early-ignores-nothing > /e\nCOPY a.txt /a\nRUN cat /a > /a.seen\n",
        &[("a.txt", "a1\n"), ("b.txt", "b1\n"), ("unread.txt", "u1\n")],
    );
    let s = Store::new(t.path());
    let first = s.build(&ctx, &[]);
    assert!(first.ok && first.ran() >= 6, "{}", first.log);

    // Nothing changed: nothing runs.
    let again = s.build(&ctx, &[]);
    assert_eq!(again.ran(), 0, "{}", again.log);

    // A file no step reads, and an mtime-only change of one that is read: nothing runs
    // (keys hold content checksums, not mtimes).
    std::fs::write(dir.join("unread.txt"), "u2\n").unwrap();
    let f = std::fs::File::options().write(true).open(dir.join("a.txt")).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(60)).unwrap();
    drop(f);
    let touched = s.build(&ctx, &[]);
    assert_eq!(touched.ran(), 0, "{}", touched.log);

    // Editing a.txt re-runs its COPY and what follows, nothing before.
    std::fs::write(dir.join("a.txt"), "a2\n").unwrap();
    let edited = s.build(&ctx, &[]);
    assert_eq!(edited.step("COPY b.txt"), Step::Cached, "{}", edited.log);
    assert_eq!(edited.step("cat /b"), Step::Cached);
    assert_eq!(edited.step("> /mode"), Step::Cached);
    assert_eq!(edited.step("early-ignores-nothing"), Step::Cached);
    assert_eq!(edited.step("COPY a.txt"), Step::Ran);
    assert_eq!(edited.step("cat /a"), Step::Ran);

    // An ARG value: the steps after its declaration (they see it in their environment).
    let arg = s.build(&ctx, &["--build-arg", "V=2"]);
    assert_eq!(arg.step("COPY b.txt"), Step::Cached, "{}", arg.log);
    assert_eq!(arg.step("> /mode"), Step::Cached);
    assert_eq!(arg.step("early-ignores-nothing"), Step::Ran);
    assert_eq!(arg.step("cat /a"), Step::Ran);

    // An ENV value: the steps after it.
    std::fs::write(
        dir.join("Dockerfile"),
        std::fs::read_to_string(dir.join("Dockerfile")).unwrap().replace("MODE=one", "MODE=two"),
    )
    .unwrap();
    let env = s.build(&ctx, &["--build-arg", "V=2"]);
    assert_eq!(env.step("COPY b.txt"), Step::Cached, "{}", env.log);
    assert_eq!(env.step("cat /b"), Step::Cached);
    assert_eq!(env.step("> /mode"), Step::Ran);
    assert_eq!(env.step("cat /a"), Step::Ran);

    // --no-cache: everything.
    let all = s.build(&ctx, &["--build-arg", "V=2", "--no-cache"]);
    assert!(all.steps.iter().filter(|(n, _)| n.contains("RUN") || n.contains("COPY")).all(|(_, s)| *s == Step::Ran));
    assert!(all.ran() >= 6, "{}", all.log);
}

#[test]
fn prune_keeps_the_budget_removing_least_recently_used_first() {
    let test = "prune_keeps_the_budget_removing_least_recently_used_first";
    if !ready(test) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let s = Store::new(t.path());
    let make = |name: &str| {
        write_context(
            &t.path().join(name),
            &format!("ARG BASE\nFROM $BASE\nRUN head -c 8000000 /dev/urandom > /{name}.bin\n"),
            &[],
        )
    };
    let (a, b) = (make("a"), make("b"));
    assert!(s.build(&a, &[]).ok);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(s.build(&b, &[]).ok);

    // Records used within the hour stay with until=1h.
    let (ok, text) = s.rbuild(&["prune", "--force", "--filter", "until=1h"]);
    assert!(ok && text.contains("0 cache records"), "{text}");
    assert_eq!(s.build(&a, &[]).ran(), 0);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // b is now the least recently used. Each build holds ~16 MB (its 8 MB step's snapshot and
    // incompressible layer blob), the base ~3.5 MB: a 24 MB budget keeps one build.
    assert_eq!(s.build(&b, &[]).ran(), 0);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(s.build(&a, &[]).ran(), 0);
    let (ok, text) = s.rbuild(&["prune", "--force", "--keep-storage", "24MB"]);
    assert!(ok, "{text}");
    let kept = text.split("; ").nth(1).and_then(|k| k.strip_suffix(" kept\n")).unwrap_or_default();
    let mb: f64 = kept.strip_suffix("MB").and_then(|v| v.parse().ok()).unwrap_or(f64::MAX);
    assert!((16.0..=24.0).contains(&mb), "one build is kept within the budget: {text}");
    let (ok, text) = s.rbuild(&["du"]);
    assert!(ok, "{text}");
    assert_eq!(s.build(&a, &[]).ran(), 0, "the most recently used build stays cached");
    // (The base's own record may have gone too: it was used least recently of all, and the
    // snapshot stays for a's chain.)
    assert_eq!(s.build(&b, &[]).step("/b.bin"), Step::Ran, "the least recently used build was removed");
    let (ok, text) = s.rbuild(&["cache", "verify"]);
    assert!(ok && text.contains("store OK"), "{text}");
}
