//! Bad input, table-driven: the real `rbuild` binary gets a malformed flag value, `--output`
//! spec, image reference, platform, secret, credential file or manifest, and must fail with an
//! error that names the bad value (and what to do), without panicking. Each row is one
//! invocation; the test runs them all and reports every row that misbehaves at once.
//!
//! Most rows need nothing but the binary. The rows that reach a registry (a broken docker config
//! is only read when a registry asks for credentials; platforms are checked against a real
//! image) need root and the Debian packages `scripts/install-deps.sh` installs, and are
//! skipped, saying why, without them.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::{Registry, RegistryOptions};

/// One bad invocation.
struct Row {
    /// What is bad about it.
    what: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, PathBuf)>,
    /// Each must appear in stderr: the bad value, and where it helps, the flag or file.
    needles: Vec<String>,
}

fn row(what: &'static str, args: &[&str], needles: &[&str]) -> Row {
    Row {
        what,
        args: args.iter().map(|s| (*s).to_owned()).collect(),
        env: Vec::new(),
        needles: needles.iter().map(|s| (*s).to_owned()).collect(),
    }
}

impl Row {
    fn env(mut self, key: &'static str, value: &Path) -> Row {
        self.env.push((key, value.to_owned()));
        self
    }
}

/// Runs every row; returns a description of each one that misbehaved.
fn run_rows(store: &Path, rows: &[Row]) -> Vec<String> {
    let mut bad = Vec::new();
    for row in rows {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
        cmd.arg("--root").arg(store).args(&row.args).env("RBUILD_NO_PROGRESS", "1").stdin(Stdio::null());
        cmd.env("DOCKER_CONFIG", store.join("no-docker-config")).env_remove("SSH_AUTH_SOCK");
        for (k, v) in &row.env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("running rbuild");
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!("[{}] rbuild {:?} -> {}\n{stderr}", row.what, row.args, out.status);
        let mut problems = Vec::new();
        if out.status.success() {
            problems.push("it succeeded".to_owned());
        }
        if out.status.code().is_none() {
            problems.push(format!("it died of {}", out.status));
        }
        if stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE") {
            problems.push("it panicked".to_owned());
        }
        if !stderr.contains("error") {
            problems.push("no error message".to_owned());
        }
        for needle in &row.needles {
            if !stderr.contains(needle.as_str()) {
                problems.push(format!("the error does not mention {needle:?}"));
            }
        }
        if !problems.is_empty() {
            bad.push(format!(
                "{} (rbuild {:?}): {}\n  stderr: {}",
                row.what,
                row.args,
                problems.join("; "),
                stderr.trim()
            ));
        }
    }
    bad
}

/// A context whose Dockerfile needs nothing from a registry.
fn scratch_context(dir: &Path) -> PathBuf {
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch AS base\nCOPY a.txt /a.txt\n").unwrap();
    std::fs::write(ctx.join("a.txt"), "a\n").unwrap();
    ctx
}

#[test]
fn bad_flags_outputs_and_references_get_errors_that_name_them() {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let ctx = scratch_context(t.path());
    let c = ctx.to_str().unwrap();
    let missing = t.path().join("no-such-dir");
    let missing_df = missing.join("Dockerfile");
    let missing_secret = t.path().join("no-such-secret");
    let secret_arg = format!("id=tok,src={}", missing_secret.display());
    let bad_iid_dir = t.path().join("a-file");
    std::fs::write(&bad_iid_dir, "").unwrap();
    let iid_in_file = bad_iid_dir.join("iid");
    let oci_dest_in_file = format!("type=oci,dest={}", iid_in_file.display());
    let empty_ignore = t.path().join("ignore-ctx");
    std::fs::create_dir_all(&empty_ignore).unwrap();
    std::fs::write(empty_ignore.join("Dockerfile"), "FROM scratch\n").unwrap();
    std::fs::write(empty_ignore.join(".dockerignore"), "[z-a]\n").unwrap();

    let rows = vec![
        // Flags with values of the wrong kind.
        row(
            "non-numeric --max-parallelism",
            &["build", "--max-parallelism", "lots", c],
            &["lots", "--max-parallelism"],
        ),
        row("unknown --progress", &["build", "--progress", "fancy", c], &["fancy", "--progress"]),
        row("unknown --print-graph format", &["build", "--print-graph=svg", c], &["svg"]),
        row(
            "unknown --allow entitlement",
            &["build", "--allow", "root.everything", c],
            &["root.everything", "--allow"],
        ),
        row("unknown flag", &["build", "--squash-all", c], &["--squash-all"]),
        row("missing context", &["build", missing.to_str().unwrap()], &[missing.to_str().unwrap()]),
        row(
            "missing Dockerfile",
            &["build", "-f", missing_df.to_str().unwrap(), c],
            &[missing_df.to_str().unwrap(), "-f"],
        ),
        row("unknown --target", &["build", "--target", "nosuchstage", c], &["nosuchstage"]),
        row("secret without id", &["build", "--secret", "src=/etc/hostname", c], &["src=/etc/hostname", "id="]),
        row("secret with an unknown key", &["build", "--secret", "id=a,colour=red", c], &["colour"]),
        row("secret file missing", &["build", "--secret", &secret_arg, c], &[missing_secret.to_str().unwrap()]),
        row("--ssh default without an agent", &["build", "--ssh", "default", c], &["SSH_AUTH_SOCK"]),
        row("--ssh with a bad socket", &["build", "--ssh", "key=/no/such/agent.sock", c], &["/no/such/agent.sock"]),
        row(
            "--iidfile inside a file",
            &["build", "--iidfile", iid_in_file.to_str().unwrap(), c],
            &[iid_in_file.to_str().unwrap()],
        ),
        row("bad .dockerignore pattern", &["build", empty_ignore.to_str().unwrap()], &["[z-a]", ".dockerignore"]),
        // --output specs.
        row("unknown output type", &["build", "-o", "type=ftp,dest=x", c], &["ftp"]),
        row("output without type", &["build", "-o", "dest=out.tar", c], &["dest=out.tar", "type="]),
        row("output field without =", &["build", "-o", "type=oci,dest", c], &["\"dest\""]),
        row("oci output without dest", &["build", "-o", "type=oci", c], &["dest"]),
        row("unknown compression", &["build", "-o", "type=oci,dest=o.tar,compression=lzma", c], &["lzma"]),
        row(
            "non-numeric compression level",
            &["build", "-o", "type=oci,dest=o.tar,compression-level=max", c],
            &["max"],
        ),
        row("non-boolean tar=", &["build", "-o", "type=oci,dest=o.tar,tar=maybe", c], &["maybe"]),
        row("unknown output attribute", &["build", "-o", "type=oci,dest=o.tar,colour=red", c], &["colour"]),
        row("output dest inside a file", &["build", "-o", &oci_dest_in_file, c], &[iid_in_file.to_str().unwrap()]),
        row("--push without a name", &["build", "--push", c], &["-t"]),
        // Image references.
        row("tag with upper case", &["build", "-t", "Library/App:1", c], &["Library/App:1"]),
        row("tag with two colons", &["build", "-t", "app:1:2", c], &["app:1:2"]),
        row("tag with a space", &["build", "-t", "app:a b", c], &["app:a b"]),
        row("empty tag", &["build", "-t", "", c], &["\"\""]),
        row("tag with a short digest", &["build", "-t", "app@sha256:abc", c], &["app@sha256:abc"]),
        row("push of a bad reference", &["push", "UPPER/x:1"], &["UPPER/x:1"]),
        row("tag of a missing image", &["tag", "nosuchimage:1", "other:1"], &["nosuchimage:1"]),
        row("tag to a bad name", &["tag", "nosuchimage:1", "bad name"], &["bad name"]),
        row("inspect of a bad reference", &["inspect", "a::b"], &["a::b"]),
        row("rmi of a missing image", &["rmi", "nosuchimage:1"], &["nosuchimage:1"]),
        // Store maintenance.
        row("bad --keep-storage size", &["prune", "-f", "--keep-storage", "10XB"], &["10XB"]),
        row("bad prune filter", &["prune", "-f", "--filter", "colour=red"], &["colour=red"]),
        row("bad prune duration", &["prune", "-f", "--filter", "until=1y"], &["1y"]),
    ];
    let bad = run_rows(&store, &rows);
    assert!(bad.is_empty(), "{} of {} bad inputs were not handled well:\n{}", bad.len(), rows.len(), bad.join("\n"));
}

/// Bad input that only shows once a registry is involved: Dockerfile platforms and references
/// resolved against a real registry, and docker config files read when it asks for credentials.
#[test]
fn bad_references_platforms_and_credential_files_get_errors_that_name_them() {
    let test = "bad_references_platforms_and_credential_files_get_errors_that_name_them";
    let auth = RegistryOptions { htpasswd: Some(("alice".into(), "s3cret".into())), ..RegistryOptions::default() };
    if !support::require_root(test) || !support::require_registry(test) || !support::require_registry_with(test, &auth)
    {
        return;
    }
    let open = Registry::start();
    open.seed_busybox("busybox:latest");
    let layout = support::build_busybox_layout("amd64,arm64/v8").expect("the two-platform busybox fixture");
    open.seed(&layout, "multi:latest", &["--all"]).expect("seeding the two-platform image");
    let locked = Registry::start_with(auth);
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let ctx = scratch_context(t.path());
    let base = open.reference("busybox:latest");
    let dockerfile = |name: &str, text: &str| {
        let p = t.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let c = ctx.to_str().unwrap().to_owned();
    let build_with = |df: &str| vec!["build".to_owned(), "-f".into(), df.to_owned(), c.clone()];
    let mut rows = Vec::new();
    let mut add = |what, df: String, needles: &[&str]| {
        rows.push(Row {
            what,
            args: build_with(&df),
            env: Vec::new(),
            needles: needles.iter().map(|s| (*s).to_owned()).collect(),
        });
    };
    let bad_platform = dockerfile("platform.Dockerfile", &format!("FROM --platform=linux/amd64/v2/extra {base}\n"));
    add("platform with too many parts", bad_platform, &["linux/amd64/v2/extra"]);
    let empty_platform = dockerfile("platform2.Dockerfile", &format!("FROM --platform=/arm64 {base}\n"));
    add("platform without an os", empty_platform, &["/arm64"]);
    let multi =
        dockerfile("platform3.Dockerfile", &format!("FROM --platform=linux/s390x {}/multi:latest\n", open.host()));
    add("platform the index lacks", multi, &["linux/s390x", "linux/amd64", "linux/arm64"]);
    let upper = dockerfile("upper.Dockerfile", &format!("FROM {}/BusyBox:latest\n", open.host()));
    add("FROM with upper case", upper, &["BusyBox"]);
    let short_digest = dockerfile("digest.Dockerfile", &format!("FROM {}/busybox@sha256:1234\n", open.host()));
    add("FROM with a short digest", short_digest, &["sha256:1234"]);
    let absent = dockerfile("absent.Dockerfile", &format!("FROM {}/busybox:nosuchtag\n", open.host()));
    add("FROM a missing tag", absent, &["busybox:nosuchtag"]);

    // Broken docker configs, read when the locked registry challenges.
    let locked_df = dockerfile("locked.Dockerfile", &format!("FROM {}/busybox:latest\n", locked.host()));
    let configs: [(&str, String, &str); 5] = [
        ("config.json that is not JSON", "{\"auths\": {".into(), "is invalid"),
        ("config.json whose auths is a list", "{\"auths\": []}".into(), "is invalid"),
        (
            "config.json auth that is not base64",
            format!("{{\"auths\": {{\"{}\": {{\"auth\": \"%%%not-base64\"}}}}}}", locked.host()),
            "not base64",
        ),
        (
            "config.json auth without a colon",
            format!("{{\"auths\": {{\"{}\": {{\"auth\": \"YWxpY2U=\"}}}}}}", locked.host()),
            "not base64 of `user:password`",
        ),
        (
            "config.json naming a missing helper",
            "{\"credsStore\": \"nosuchhelper\"}".into(),
            "docker-credential-nosuchhelper",
        ),
    ];
    for (i, (what, text, needle)) in configs.into_iter().enumerate() {
        let dir = t.path().join(format!("docker-{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config.json");
        std::fs::write(&file, text).unwrap();
        rows.push(
            Row {
                what,
                args: build_with(&locked_df),
                env: Vec::new(),
                needles: vec![file.to_str().unwrap().to_owned(), needle.to_owned()],
            }
            .env("DOCKER_CONFIG", &dir),
        );
    }
    let bad = run_rows(&store, &rows);
    assert!(bad.is_empty(), "{} of {} bad inputs were not handled well:\n{}", bad.len(), rows.len(), bad.join("\n"));
}
