//! Registry faults: a real docker-registry behind a fault-injecting loopback proxy
//! ([`proxy`]), and the real `rbuild` binary pulling a base image through it (`FROM`) or
//! pushing through it (`--push`). Transient faults (5xx, resets mid-blob, truncated bodies,
//! slow answers) are retried or resumed and the build succeeds; permanent ones (content that
//! does not match its digest, 401 loops, an HTML page instead of a manifest) fail with an error
//! that says what is wrong, within a bounded time. After every fault `rbuild cache verify
//! --rehash` finds nothing wrong: no partial or corrupt blob was stored.
//!
//! Each test has its own proxy (so its faults touch only its requests) and its own store (so
//! the pull really happens); the registry behind them is shared. Needs root and the Debian
//! packages `scripts/install-deps.sh` installs; without them each test says why it skips.

#[path = "../support/mod.rs"]
mod support;

mod proxy;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use proxy::{Fault, Proxy, Rule};
use support::Registry;

fn registry() -> &'static Registry {
    support::busybox_registry()
}

fn ready(test: &str) -> bool {
    support::ready(test)
}

/// The busybox fixture's (only) layer: digest and size.
fn busybox_layer() -> (String, u64) {
    let layout = support::busybox_layout();
    let blob = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").unwrap();
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap())
            .unwrap()
    };
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
    let layer = &manifest["layers"][0];
    (layer["digest"].as_str().unwrap().to_owned(), layer["size"].as_u64().unwrap())
}

/// A test's scratch space: a build context and a store.
struct Case {
    dir: tempfile::TempDir,
    name: &'static str,
}

/// What an `rbuild` run did.
struct Run {
    status: std::process::ExitStatus,
    stderr: String,
    took: Duration,
}

impl Run {
    fn assert_ok(&self, what: &str, proxy: &Proxy) {
        assert!(
            self.status.success(),
            "{what}: rbuild failed with {}:\n{}\nproxy log:\n{}",
            self.status,
            self.stderr,
            proxy.describe()
        );
        self.assert_no_panic();
    }

    /// Failed, with every one of `needles` in its error output.
    fn assert_fails_saying(&self, needles: &[&str], proxy: &Proxy) {
        assert!(!self.status.success(), "rbuild should have failed\nproxy log:\n{}", proxy.describe());
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "the error should say {needle:?}:\n{}\nproxy log:\n{}",
                self.stderr,
                proxy.describe()
            );
        }
        self.assert_no_panic();
    }

    fn assert_no_panic(&self) {
        assert!(
            !self.stderr.contains("panicked") && !self.stderr.contains("RUST_BACKTRACE"),
            "rbuild panicked:\n{}",
            self.stderr
        );
    }
}

impl Case {
    fn new(name: &'static str) -> Case {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), "ARG BASE\nFROM $BASE\nCOPY a.txt /a.txt\n").unwrap();
        std::fs::write(ctx.join("a.txt"), format!("{name}\n")).unwrap();
        Case { dir, name }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn ctx(&self) -> PathBuf {
        self.dir.path().join("ctx")
    }

    fn rbuild(&self, args: &[&str], env: &[(&str, &Path)]) -> Run {
        let started = Instant::now();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
        cmd.arg("--root").arg(self.store()).args(args).env("RBUILD_NO_PROGRESS", "1").stdin(Stdio::null());
        // No credentials from the machine's docker config unless a test gives some.
        cmd.env("DOCKER_CONFIG", self.dir.path().join("no-docker-config"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out: Output = cmd.output().expect("running rbuild");
        let run = Run {
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            took: started.elapsed(),
        };
        eprintln!("[{}] rbuild {args:?} -> {} in {:?}\n{}", self.name, run.status, run.took, run.stderr);
        run
    }

    /// Builds `FROM <base>`, tagged `tag`, with `extra` flags.
    fn build(&self, base: &str, tag: &str, extra: &[&str], env: &[(&str, &Path)]) -> Run {
        let arg = format!("BASE={base}");
        let ctx = self.ctx();
        let mut args = vec!["build", "-t", tag, "--build-arg", &arg];
        args.extend_from_slice(extra);
        args.push(ctx.to_str().unwrap());
        self.rbuild(&args, env)
    }

    /// Builds `FROM` the busybox image through `proxy`.
    fn pull_through(&self, proxy: &Proxy) -> Run {
        self.build(&proxy.reference("busybox:latest"), &format!("{}:1", self.name), &[], &[])
    }

    /// Builds on the busybox image from the registry itself and pushes the result through
    /// `proxy` as `faults/<name>:1`.
    fn push_through(&self, proxy: &Proxy) -> Run {
        let tag = proxy.reference(&format!("faults/{}:1", self.name));
        self.build(&registry().reference("busybox:latest"), &tag, &["--push"], &[])
    }

    /// `rbuild cache verify --rehash` finds nothing wrong (no partial or corrupt blob, no
    /// leaked temp area). A store the failed build never created is fine too.
    fn assert_store_clean(&self, proxy: &Proxy) {
        if !self.store().exists() {
            return;
        }
        let run = self.rbuild(&["cache", "verify", "--rehash"], &[]);
        assert!(
            run.status.success() && run.stderr.is_empty(),
            "after the fault, the store has problems:\n{}\nproxy log:\n{}",
            run.stderr,
            proxy.describe()
        );
    }

    /// Whether the store holds the blob `digest`.
    fn has_blob(&self, digest: &str) -> bool {
        let Ok(store) = rbuild_cache::Store::open(self.store()) else { return false };
        store.has_blob(&digest.parse().unwrap()).unwrap()
    }
}

/// The pushed image is in the registry, as skopeo (not rbuild) sees it.
fn assert_pushed(name: &str) {
    let inspect =
        registry().skopeo_inspect(&format!("faults/{name}:1"), false).expect("skopeo inspect of the pushed image");
    assert_eq!(inspect["Layers"].as_array().map(Vec::len), Some(2), "{inspect}");
}

fn assert_not_pushed(name: &str) {
    assert!(
        registry().skopeo_inspect(&format!("faults/{name}:1"), false).is_err(),
        "faults/{name}:1 should not be in the registry"
    );
}

fn layer_path() -> String {
    format!("/blobs/{}", busybox_layer().0)
}

#[test]
fn pull_retries_server_errors_then_succeeds() {
    if !ready("pull_retries_server_errors_then_succeeds") {
        return;
    }
    let case = Case::new("pull-5xx");
    let proxy = Proxy::start(
        registry().port,
        vec![
            Rule::first(2, "GET", "/manifests/", Fault::Status(503)),
            Rule::first(1, "GET", layer_path(), Fault::Status(500)),
            Rule::first(1, "GET", layer_path(), Fault::Status(429)),
        ],
    );
    case.pull_through(&proxy).assert_ok("pull after 503, 503 / 500, 429", &proxy);
    assert_eq!(proxy.faulted().len(), 4, "every injected fault was met:\n{}", proxy.describe());
    let log = proxy.log();
    let layer_gets: Vec<_> = log.iter().filter(|h| h.is("GET", &layer_path())).collect();
    assert_eq!(layer_gets.len(), 3, "two failed GETs of the layer, then one that worked:\n{}", proxy.describe());
    assert_eq!(layer_gets[2].status, 200);
    assert!(case.has_blob(&busybox_layer().0));
    case.assert_store_clean(&proxy);
}

#[test]
fn pull_gives_up_on_a_registry_that_keeps_failing() {
    if !ready("pull_gives_up_on_a_registry_that_keeps_failing") {
        return;
    }
    let case = Case::new("pull-5xx-forever");
    let proxy = Proxy::start(registry().port, vec![Rule::always("GET", "/manifests/", Fault::Status(503))]);
    let run = case.pull_through(&proxy);
    run.assert_fails_saying(&["503", &proxy.host(), "busybox"], &proxy);
    // 1 attempt and 3 retries with backoff (0.25 + 0.5 + 1 s), then it stops.
    let attempts = proxy.log().iter().filter(|h| h.is("GET", "/manifests/")).count();
    assert_eq!(attempts, 4, "{}", proxy.describe());
    assert!(run.took < Duration::from_secs(30), "gave up only after {:?}", run.took);
    case.assert_store_clean(&proxy);
}

#[test]
fn pull_resumes_a_blob_whose_connection_is_reset() {
    if !ready("pull_resumes_a_blob_whose_connection_is_reset") {
        return;
    }
    let (digest, size) = busybox_layer();
    let half = usize::try_from(size / 2).unwrap();
    let case = Case::new("pull-reset");
    let proxy = Proxy::start(
        registry().port,
        vec![
            Rule::first(1, "GET", layer_path(), Fault::ResetAfter(half)),
            // The resumed request breaks too, after a few more bytes.
            Rule::first(1, "GET", layer_path(), Fault::ResetAfter(1000)),
        ],
    );
    case.pull_through(&proxy).assert_ok("pull with resets mid-blob", &proxy);
    let gets: Vec<_> = proxy.log().into_iter().filter(|h| h.is("GET", &layer_path())).collect();
    assert_eq!(gets.len(), 3, "{}", proxy.describe());
    assert_eq!(gets[0].range, None);
    // Resumed from where each broken read stopped, not restarted.
    let resumed_at = |h: &proxy::Hit| {
        h.range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<u64>().ok())
    };
    let first = resumed_at(&gets[1]).unwrap_or_else(|| panic!("the second GET should resume:\n{}", proxy.describe()));
    let second = resumed_at(&gets[2]).unwrap_or_else(|| panic!("the third GET should resume:\n{}", proxy.describe()));
    assert!(first > 0 && first <= size / 2 && second > first, "{}", proxy.describe());
    assert_eq!(gets[2].status, 206);
    assert!(case.has_blob(&digest));
    case.assert_store_clean(&proxy);
}

#[test]
fn pull_resumes_a_truncated_blob() {
    if !ready("pull_resumes_a_truncated_blob") {
        return;
    }
    let (digest, size) = busybox_layer();
    let case = Case::new("pull-truncated");
    // A well-framed but short answer (Content-Length says it is complete).
    let keep = usize::try_from(size / 3).unwrap();
    let proxy = Proxy::start(registry().port, vec![Rule::first(1, "GET", layer_path(), Fault::Truncate(keep))]);
    case.pull_through(&proxy).assert_ok("pull with a truncated blob", &proxy);
    let gets: Vec<_> = proxy.log().into_iter().filter(|h| h.is("GET", &layer_path())).collect();
    assert_eq!(gets.len(), 2, "{}", proxy.describe());
    assert_eq!(gets[1].range.as_deref(), Some(format!("bytes={keep}-").as_str()), "{}", proxy.describe());
    assert!(case.has_blob(&digest));
    case.assert_store_clean(&proxy);
}

#[test]
fn pull_of_a_blob_truncated_every_time_fails_clearly() {
    if !ready("pull_of_a_blob_truncated_every_time_fails_clearly") {
        return;
    }
    let (digest, size) = busybox_layer();
    let case = Case::new("pull-truncated-always");
    // A tenth each time: four attempts do not add up to the whole blob.
    let keep = usize::try_from(size / 10).unwrap();
    let proxy = Proxy::start(registry().port, vec![Rule::always("GET", layer_path(), Fault::Truncate(keep))]);
    let run = case.pull_through(&proxy);
    run.assert_fails_saying(&[&digest, &size.to_string()], &proxy);
    let gets = proxy.log().iter().filter(|h| h.is("GET", &layer_path())).count();
    assert_eq!(gets, 4, "1 attempt and 3 resumes:\n{}", proxy.describe());
    assert!(!case.has_blob(&digest), "a truncated blob must not be stored");
    case.assert_store_clean(&proxy);
}

#[test]
fn pull_of_a_corrupted_blob_fails_with_a_digest_mismatch_and_stores_nothing() {
    if !ready("pull_of_a_corrupted_blob_fails_with_a_digest_mismatch_and_stores_nothing") {
        return;
    }
    let (digest, _) = busybox_layer();
    let case = Case::new("pull-corrupt");
    let proxy = Proxy::start(registry().port, vec![Rule::always("GET", layer_path(), Fault::Corrupt)]);
    let run = case.pull_through(&proxy);
    run.assert_fails_saying(&["digest mismatch", &digest], &proxy);
    assert!(!case.has_blob(&digest), "content that does not match its digest must not be stored");
    case.assert_store_clean(&proxy);
}

#[test]
fn pull_of_a_corrupted_manifest_fails_with_a_digest_mismatch() {
    if !ready("pull_of_a_corrupted_manifest_fails_with_a_digest_mismatch") {
        return;
    }
    let case = Case::new("pull-corrupt-manifest");
    let proxy = Proxy::start(registry().port, vec![Rule::always("GET", "/manifests/", Fault::Corrupt)]);
    let run = case.pull_through(&proxy);
    run.assert_fails_saying(&["digest mismatch", &proxy.host()], &proxy);
    case.assert_store_clean(&proxy);
}

#[test]
fn pull_through_slow_answers_succeeds_in_bounded_time() {
    if !ready("pull_through_slow_answers_succeeds_in_bounded_time") {
        return;
    }
    let case = Case::new("pull-slow");
    let proxy = Proxy::start(
        registry().port,
        vec![
            Rule::always("GET", "/manifests/", Fault::Delay(Duration::from_millis(1500))),
            Rule::always("GET", layer_path(), Fault::Trickle { chunk: 64 * 1024, pause: Duration::from_millis(60) }),
        ],
    );
    let run = case.pull_through(&proxy);
    run.assert_ok("pull through a slow proxy", &proxy);
    assert!(!proxy.faulted().is_empty());
    assert!(run.took >= Duration::from_millis(1500) && run.took < Duration::from_secs(60), "took {:?}", run.took);
    case.assert_store_clean(&proxy);
}

/// A blob download that goes silent mid-body is abandoned after the read timeout (60 s) and
/// resumed: the build neither hangs nor fails.
#[test]
fn pull_survives_a_stalled_blob_download() {
    if !ready("pull_survives_a_stalled_blob_download") {
        return;
    }
    let case = Case::new("pull-stall");
    let proxy = Proxy::start(
        registry().port,
        vec![Rule::first(1, "GET", layer_path(), Fault::StallMidBody(Duration::from_secs(90)))],
    );
    let run = case.pull_through(&proxy);
    run.assert_ok("pull with a stalled download", &proxy);
    let gets: Vec<_> = proxy.log().into_iter().filter(|h| h.is("GET", &layer_path())).collect();
    assert_eq!(gets.len(), 2, "{}", proxy.describe());
    assert!(gets[1].range.is_some(), "the stalled download should be resumed:\n{}", proxy.describe());
    assert!(run.took < Duration::from_secs(85), "took {:?}: longer than the read timeout and a retry", run.took);
    case.assert_store_clean(&proxy);
}

#[test]
fn pull_stops_at_a_bearer_challenge_loop() {
    if !ready("pull_stops_at_a_bearer_challenge_loop") {
        return;
    }
    let case = Case::new("pull-401-bearer");
    let proxy = Proxy::start(registry().port, vec![Rule::always("", "/v2/", Fault::BearerChallenge)]);
    let run = case.pull_through(&proxy);
    run.assert_fails_saying(&["denied", &proxy.host()], &proxy);
    let log = proxy.log();
    let tokens = log.iter().filter(|h| h.path.starts_with("/token")).count();
    assert!(log.len() <= 6 && tokens <= 2, "the 401s must not loop:\n{}", proxy.describe());
    assert!(run.took < Duration::from_secs(20), "took {:?}", run.took);
    case.assert_store_clean(&proxy);
}

#[test]
fn pull_stops_when_basic_credentials_keep_being_refused() {
    if !ready("pull_stops_when_basic_credentials_keep_being_refused") {
        return;
    }
    let case = Case::new("pull-401-basic");
    let proxy = Proxy::start(registry().port, vec![Rule::always("", "/v2/", Fault::BasicChallenge)]);
    let config_dir = case.dir.path().join("docker");
    std::fs::create_dir_all(&config_dir).unwrap();
    let auth = "dXNlcjp3cm9uZy1wYXNzd29yZA=="; // user:wrong-password
    std::fs::write(
        config_dir.join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, proxy.host()),
    )
    .unwrap();
    let run = case.build(&proxy.reference("busybox:latest"), "basic:1", &[], &[("DOCKER_CONFIG", &config_dir)]);
    run.assert_fails_saying(&["denied", "credentials were rejected", &proxy.host()], &proxy);
    assert!(
        !run.stderr.contains("wrong-password") && !run.stderr.contains(auth),
        "the password leaked:\n{}",
        run.stderr
    );
    assert!(proxy.log().len() <= 4, "the 401s must not loop:\n{}", proxy.describe());
    case.assert_store_clean(&proxy);
}

#[test]
fn pull_of_an_html_page_instead_of_a_manifest_fails_clearly() {
    if !ready("pull_of_an_html_page_instead_of_a_manifest_fails_clearly") {
        return;
    }
    let case = Case::new("pull-html");
    let proxy = Proxy::start(registry().port, vec![Rule::always("GET", "/manifests/", Fault::Html)]);
    let run = case.pull_through(&proxy);
    run.assert_fails_saying(&["text/html", "not an image manifest", &proxy.host()], &proxy);
    assert_eq!(proxy.faulted().len(), 1, "a 200 is not retried:\n{}", proxy.describe());
    case.assert_store_clean(&proxy);
}

#[test]
fn push_retries_server_errors_then_succeeds() {
    if !ready("push_retries_server_errors_then_succeeds") {
        return;
    }
    let case = Case::new("push-5xx");
    let proxy = Proxy::start(
        registry().port,
        vec![
            Rule::first(1, "POST", "/blobs/uploads/", Fault::Status(500)),
            Rule::first(1, "PUT", "/blobs/uploads/", Fault::Status(503)),
            Rule::first(1, "PUT", "/manifests/", Fault::Status(502)),
        ],
    );
    case.push_through(&proxy).assert_ok("push after 500 / 503 / 502", &proxy);
    assert_eq!(proxy.faulted().len(), 3, "{}", proxy.describe());
    assert_pushed("push-5xx");
    case.assert_store_clean(&proxy);
}

#[test]
fn push_restarts_an_upload_whose_connection_is_reset() {
    if !ready("push_restarts_an_upload_whose_connection_is_reset") {
        return;
    }
    let case = Case::new("push-reset");
    let proxy = Proxy::start(registry().port, vec![Rule::first(2, "PUT", "/blobs/uploads/", Fault::ResetRequest)]);
    case.push_through(&proxy).assert_ok("push with uploads reset mid-body", &proxy);
    assert_eq!(proxy.faulted().len(), 2, "{}", proxy.describe());
    assert_pushed("push-reset");
    case.assert_store_clean(&proxy);
}

#[test]
fn push_of_content_damaged_on_the_way_fails_and_tags_nothing() {
    if !ready("push_of_content_damaged_on_the_way_fails_and_tags_nothing") {
        return;
    }
    let case = Case::new("push-corrupt");
    let proxy = Proxy::start(registry().port, vec![Rule::always("PUT", "/blobs/uploads/", Fault::CorruptRequest)]);
    let run = case.push_through(&proxy);
    run.assert_fails_saying(&["DIGEST_INVALID", &proxy.host()], &proxy);
    assert_not_pushed("push-corrupt");
    case.assert_store_clean(&proxy);
}

#[test]
fn push_stops_at_a_bearer_challenge_loop() {
    if !ready("push_stops_at_a_bearer_challenge_loop") {
        return;
    }
    let case = Case::new("push-401");
    let proxy = Proxy::start(registry().port, vec![Rule::always("", "/v2/", Fault::BearerChallenge)]);
    let run = case.push_through(&proxy);
    run.assert_fails_saying(&["denied", &proxy.host()], &proxy);
    assert!(proxy.log().len() <= 20, "the 401s must not loop:\n{}", proxy.describe());
    assert!(run.took < Duration::from_secs(30), "took {:?}", run.took);
    assert_not_pushed("push-401");
    case.assert_store_clean(&proxy);
}

#[test]
fn push_through_slow_answers_succeeds() {
    if !ready("push_through_slow_answers_succeeds") {
        return;
    }
    let case = Case::new("push-slow");
    let proxy = Proxy::start(
        registry().port,
        vec![
            Rule::always("PUT", "/blobs/uploads/", Fault::Delay(Duration::from_millis(700))),
            Rule::always("PUT", "/manifests/", Fault::Delay(Duration::from_millis(700))),
        ],
    );
    let run = case.push_through(&proxy);
    run.assert_ok("push through a slow proxy", &proxy);
    assert!(proxy.faulted().len() >= 3, "{}", proxy.describe());
    assert!(run.took < Duration::from_secs(60), "took {:?}", run.took);
    assert_pushed("push-slow");
    case.assert_store_clean(&proxy);
}

/// Manifests that are not usable, served for the base image's tag: each fails the build with
/// an error that says what is wrong with it, and the store stays clean.
#[test]
fn malformed_manifests_fail_with_errors_that_say_what_is_wrong() {
    if !ready("malformed_manifests_fail_with_errors_that_say_what_is_wrong") {
        return;
    }
    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    let zero = format!("sha256:{}", "0".repeat(64));
    let cases: Vec<(&str, &'static str, String, Vec<String>)> = vec![
        (
            "not JSON",
            OCI_MANIFEST,
            "{\"schemaVersion\": 2, \"config\": ".into(),
            vec![format!("invalid {OCI_MANIFEST}")],
        ),
        (
            "no config",
            OCI_MANIFEST,
            format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","layers":[]}}"#),
            vec![format!("invalid {OCI_MANIFEST}")],
        ),
        (
            "schema 1",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
            r#"{"schemaVersion":1,"name":"busybox","tag":"latest","fsLayers":[]}"#.into(),
            vec!["manifest.v1+prettyjws".into(), "not an image manifest".into()],
        ),
        (
            "index without the platform",
            OCI_INDEX,
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{zero}","size":10,"platform":{{"os":"linux","architecture":"s390x"}}}}]}}"#
            ),
            vec!["linux/s390x".into(), "amd64".into()],
        ),
        (
            "bad layer digest",
            OCI_MANIFEST,
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{zero}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:not-hex","size":1}}]}}"#
            ),
            vec![format!("invalid {OCI_MANIFEST}")],
        ),
        (
            "artifact config",
            OCI_MANIFEST,
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"{zero}","size":2}},"layers":[]}}"#
            ),
            vec!["application/vnd.cncf.helm.config.v1+json".into(), "not a container image".into()],
        ),
        (
            "manifest over 4 MiB",
            OCI_MANIFEST,
            format!(r#"{{"schemaVersion":2,"annotations":{{"pad":"{}"}}}}"#, "x".repeat(5 << 20)),
            vec!["4194304".into()],
        ),
    ];
    let mut bad = Vec::new();
    for (what, content_type, body, needles) in cases {
        let case = Case::new("malformed");
        let proxy = Proxy::start(
            registry().port,
            vec![Rule::always("GET", "/manifests/", Fault::Replace { content_type, body })],
        );
        let run = case.pull_through(&proxy);
        let mut problems: Vec<String> = needles
            .iter()
            .filter(|n| !run.stderr.contains(n.as_str()))
            .map(|n| format!("does not say {n:?}"))
            .collect();
        if run.status.success() {
            problems.push("succeeded".into());
        }
        if run.stderr.contains("panicked") {
            problems.push("panicked".into());
        }
        if !problems.is_empty() {
            bad.push(format!("{what}: {}\n{}", problems.join("; "), run.stderr));
        }
        case.assert_store_clean(&proxy);
    }
    assert!(bad.is_empty(), "malformed manifests not handled well:\n{}", bad.join("\n"));
}
