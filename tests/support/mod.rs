//! Helpers for end-to-end tests: fixture images, a throwaway registry, skip checks.
//!
//! Use with `mod support;` from a test in `tests/`. The registry crate's own tests include this
//! file by path (`#[path = "../../tests/support/mod.rs"]`), so it must only use std, `tempfile`
//! and `serde_json`.
//!
//! Skips are explicit: a test that needs root or the registry tools calls [`require_root`] /
//! [`require_registry`] first and returns early when they say no; the reason is printed (run
//! with `--nocapture` to see it). CI runs as root with the tools installed, so nothing skips there.
#![allow(dead_code)]

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// `testdata/fixtures` in the workspace root: the nearest ancestor of the compiling package
/// (the root package, or a member crate that includes this file by path) that has it.
pub fn fixtures_dir() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .map(|dir| dir.join("testdata/fixtures"))
        .find(|dir| dir.join("registry.sh").is_file())
        .unwrap_or_else(|| manifest_dir.join("testdata/fixtures"))
}

/// Path of a fixture script, e.g. `fixture("registry.sh")`.
pub fn fixture(name: &str) -> PathBuf {
    fixtures_dir().join(name)
}

/// Whether `cmd` is an executable on `PATH`.
pub fn have(cmd: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(cmd)).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    })
}

/// Whether the effective uid is 0 (read from /proc/self/status, no libc needed).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?;
            // Uid: real effective saved fs
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// `true` when running as root; otherwise prints why `test` is skipped and returns `false`.
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    eprintln!("skipping {test}: needs root (CI runs it as root)");
    false
}

/// One registry for the whole test binary, seeded with the busybox fixture as `busybox:latest`,
/// started on first use (call [`ready`] first).
pub fn busybox_registry() -> &'static Registry {
    static REG: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REG.get_or_init(|| {
        let r = Registry::start();
        r.seed_busybox("busybox:latest");
        r
    })
}

/// `true` when an end-to-end test can run: root, the busybox fixture and a registry.
pub fn ready(test: &str) -> bool {
    require_root(test) && require_busybox(test) && require_registry(test)
}

/// `true` when the busybox fixture can be built (busybox-static, jq).
pub fn require_busybox(test: &str) -> bool {
    require_tools(test, &[("busybox", "busybox-static"), ("jq", "jq"), ("gzip", "gzip")])
}

/// `true` when a registry can be started and seeded (docker-registry, skopeo, curl, plus the
/// busybox fixture's tools).
pub fn require_registry(test: &str) -> bool {
    require_busybox(test)
        && require_tools(test, &[("docker-registry", "docker-registry"), ("skopeo", "skopeo"), ("curl", "curl")])
}

/// `true` when command `cmd` (from Debian package `pkg`) is on PATH.
pub fn require_tool(test: &str, cmd: &str, pkg: &str) -> bool {
    require_tools(test, &[(cmd, pkg)])
}

fn require_tools(test: &str, tools: &[(&str, &str)]) -> bool {
    let missing: Vec<&str> = tools.iter().filter(|(cmd, _)| !have(cmd)).map(|(_, pkg)| *pkg).collect();
    if missing.is_empty() {
        return true;
    }
    eprintln!("skipping {test}: needs `apt-get install {}` (CI installs them)", missing.join(" "));
    false
}

fn run(cmd: &mut Command) -> io::Result<Output> {
    let output = cmd.stdin(Stdio::null()).output()?;
    if output.status.success() {
        return Ok(output);
    }
    Err(io::Error::other(format!(
        "{cmd:?} failed with {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}

/// A fresh work dir under the first usable place for built fixtures: the target dir's tmp
/// (integration tests), else the system temp dir (e.g. the target dir belongs to another user).
fn scratch_workdir() -> io::Result<(PathBuf, tempfile::TempDir)> {
    let mut last = io::Error::other("no scratch directory");
    let target_tmp = option_env!("CARGO_TARGET_TMPDIR").map(PathBuf::from);
    for dir in target_tmp.into_iter().chain([std::env::temp_dir()]) {
        let work = std::fs::create_dir_all(&dir)
            .and_then(|()| tempfile::Builder::new().prefix("rbuild-busybox-").tempdir_in(&dir));
        match work {
            Ok(work) => return Ok((dir, work)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Builds an OCI layout with `busybox-image.sh` for `arches` (`"amd64"`, `"amd64,arm64/v8"`).
///
/// The script is deterministic, so the result is kept under the target dir, named by its
/// digest: each test process rebuilds (≈1 s) but nothing accumulates, and concurrent
/// processes only race to rename identical directories.
pub fn build_busybox_layout(arches: &str) -> io::Result<PathBuf> {
    busybox_layout_with(arches, false)
}

/// Like [`build_busybox_layout`], but each platform's image holds its own architecture's
/// busybox (from [`foreign_busybox`] for another architecture than the host's), so RUN steps
/// in it really run (under QEMU). Call [`require_real_busybox`] first.
pub fn build_real_busybox_layout(arches: &str) -> io::Result<PathBuf> {
    busybox_layout_with(arches, true)
}

fn busybox_layout_with(arches: &str, real: bool) -> io::Result<PathBuf> {
    let (scratch, work) = scratch_workdir()?;
    let out = work.path().join("layout");
    let mut cmd = Command::new(fixture("busybox-image.sh"));
    cmd.arg(&out).arg(arches);
    if real {
        cmd.env("RBUILD_BUSYBOX_REAL", "1");
    }
    let output = run(&mut cmd)?;
    let digest = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let hex = digest.strip_prefix("sha256:").unwrap_or(&digest);
    let name: String = hex.chars().take(16).collect();
    let tag = arches.replace([',', '/'], "-");
    let final_dir = scratch.join(format!("busybox-oci-{tag}-{name}"));
    if !final_dir.join("index.json").is_file() {
        // Loses harmlessly to a concurrent process that renamed the same content first.
        let _ = std::fs::rename(&out, &final_dir);
    }
    if final_dir.join("index.json").is_file() {
        Ok(final_dir)
    } else {
        Err(io::Error::other(format!("could not place the busybox layout at {}", final_dir.display())))
    }
}

/// The single-platform (amd64) busybox OCI layout, built once per test process.
/// Panics if the build fails: call [`require_busybox`] first.
pub fn busybox_layout() -> &'static Path {
    static LAYOUT: OnceLock<PathBuf> = OnceLock::new();
    LAYOUT.get_or_init(|| build_busybox_layout("amd64").expect("building the busybox fixture"))
}

/// This machine's architecture, in Go's names (`amd64`, `arm64`).
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Where `scripts/install-deps.sh` unpacks Debian's busybox-static for another architecture
/// (`$RBUILD_FIXTURES_LIB/ARCH/busybox`, default under /usr/local/lib/rbuild-fixtures).
pub fn foreign_busybox(arch: &str) -> PathBuf {
    let lib = std::env::var_os("RBUILD_FIXTURES_LIB")
        .map_or_else(|| PathBuf::from("/usr/local/lib/rbuild-fixtures"), PathBuf::from);
    lib.join(arch).join("busybox")
}

/// `true` when a busybox image with real `arch` binaries can be built (the host's busybox, or
/// the one `scripts/install-deps.sh` unpacks for another architecture).
pub fn require_real_busybox(test: &str, arch: &str) -> bool {
    if !require_busybox(test) {
        return false;
    }
    if arch == host_arch() || foreign_busybox(arch).is_file() {
        return true;
    }
    eprintln!(
        "skipping {test}: needs Debian's busybox-static for {arch} at {} (scripts/install-deps.sh puts it there; CI runs it)",
        foreign_busybox(arch).display()
    );
    false
}

/// `true` when `qemu_arch` (`aarch64`) binaries can run here: a binfmt_misc handler is
/// registered, or Debian's qemu-user-static is installed (rbuild registers it as root).
pub fn require_emulation(test: &str, qemu_arch: &str) -> bool {
    let candidates = [
        PathBuf::from(format!("/proc/sys/fs/binfmt_misc/qemu-{qemu_arch}")),
        PathBuf::from(format!("/usr/libexec/qemu-binfmt/{qemu_arch}-binfmt-P")),
        PathBuf::from(format!("/usr/bin/qemu-{qemu_arch}-static")),
    ];
    if candidates.iter().any(|p| p.exists()) {
        return true;
    }
    eprintln!("skipping {test}: needs QEMU user emulation for {qemu_arch} (`apt-get install qemu-user-static`; CI installs it)");
    false
}

/// `true` when a registry with these options can be started (docker-registry, skopeo, curl,
/// and openssl for TLS). Unlike [`require_registry`], the busybox fixture is not needed.
pub fn require_registry_with(test: &str, options: &RegistryOptions) -> bool {
    let mut tools = vec![("docker-registry", "docker-registry"), ("skopeo", "skopeo"), ("curl", "curl")];
    if options.tls {
        tools.push(("openssl", "openssl"));
    }
    require_tools(test, &tools)
}

/// Runs `exe` (the rbuild under test: `env!("CARGO_BIN_EXE_rbuild")`) on the store `root` with
/// docker's config in `docker_config`, writing `stdin` to it, without progress and with
/// buildx's attestation defaults (`BUILDX_NO_DEFAULT_ATTESTATIONS` unset); returns whether it
/// succeeded and its stdout and stderr (also printed, for failures).
pub fn rbuild_with_config(exe: &Path, root: &Path, docker_config: &Path, args: &[&str], stdin: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(exe)
        .arg("--root")
        .arg(root)
        .args(args)
        .env("RBUILD_NO_PROGRESS", "1")
        .env("DOCKER_CONFIG", docker_config)
        .env_remove("BUILDX_NO_DEFAULT_ATTESTATIONS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting rbuild");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).expect("writing rbuild's stdin");
    }
    let out = child.wait_with_output().expect("waiting for rbuild");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("rbuild {args:?} -> {}\n{text}", out.status);
    (out.status.success(), text)
}

/// How to start a [`Registry`].
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Serve HTTPS with a certificate for 127.0.0.1 signed by a CA made for this registry
    /// ([`Registry::ca_cert_path`]).
    pub tls: bool,
    /// Require HTTP Basic auth with this user and password (htpasswd).
    pub htpasswd: Option<(String, String)>,
}

/// A docker-registry on a free loopback port, stopped (and its state deleted) on drop.
#[derive(Debug)]
pub struct Registry {
    /// The port on 127.0.0.1.
    pub port: u16,
    state: tempfile::TempDir,
    options: RegistryOptions,
}

impl Registry {
    /// Starts a registry with its storage in a fresh temp dir. Panics if it cannot start: call
    /// [`require_registry`] first.
    pub fn start() -> Registry {
        Self::try_start().expect("starting docker-registry")
    }

    /// Starts a registry, or says why not.
    pub fn try_start() -> io::Result<Registry> {
        Self::try_start_with(RegistryOptions::default())
    }

    /// Starts a registry with TLS and/or auth. Panics if it cannot start: call
    /// [`require_registry_with`] first.
    pub fn start_with(options: RegistryOptions) -> Registry {
        Self::try_start_with(options).expect("starting docker-registry")
    }

    /// Starts a registry with TLS and/or auth, or says why not.
    pub fn try_start_with(options: RegistryOptions) -> io::Result<Registry> {
        let state = tempfile::Builder::new().prefix("rbuild-registry-").tempdir()?;
        let mut cmd = Command::new(fixture("registry.sh"));
        cmd.arg("start").arg(state.path());
        if options.tls {
            cmd.arg("--tls");
        }
        if let Some((user, password)) = &options.htpasswd {
            cmd.arg("--htpasswd").arg(format!("{user}:{password}"));
        }
        // If this process dies without dropping us, the script's watchdog stops the registry.
        let output = run(cmd.env("RBUILD_REGISTRY_WATCH_PID", std::process::id().to_string()))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let port = text
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .parse()
            .map_err(|e| io::Error::other(format!("registry.sh start printed {text:?}: {e}")))?;
        Ok(Registry { port, state, options })
    }

    /// Stops the registry and starts it again on the same port, with the same configuration
    /// and storage (upload sessions in progress break; stored content stays).
    pub fn restart(&self) -> io::Result<()> {
        run(Command::new(fixture("registry.sh"))
            .arg("restart")
            .arg(self.state.path())
            .env("RBUILD_REGISTRY_WATCH_PID", std::process::id().to_string()))
        .map(drop)
    }

    /// The options it was started with.
    pub fn options(&self) -> &RegistryOptions {
        &self.options
    }

    /// The CA certificate that signed the registry's certificate (TLS registries only).
    pub fn ca_cert_path(&self) -> Option<PathBuf> {
        self.options.tls.then(|| self.state.path().join("ca/ca.crt"))
    }

    /// A directory holding only [`Registry::ca_cert_path`], as `ca.crt`: skopeo's `--cert-dir`,
    /// or a docker `certs.d/<host:port>` directory (TLS registries only).
    pub fn cert_dir(&self) -> Option<PathBuf> {
        self.options.tls.then(|| self.state.path().join("ca"))
    }

    /// `user:password` when the registry requires auth.
    pub fn creds(&self) -> Option<String> {
        self.options.htpasswd.as_ref().map(|(user, password)| format!("{user}:{password}"))
    }

    /// The registry's log: its warnings and the access log (`"METHOD /path HTTP/1.1" status`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("log")).unwrap_or_default()
    }

    /// Access-log lines whose request line starts with `method path_prefix`, e.g.
    /// `("PATCH", "/v2/a/blobs/uploads/")`.
    pub fn requests(&self, method: &str, path_prefix: &str) -> Vec<String> {
        let needle = format!("\"{method} {path_prefix}");
        self.log().lines().filter(|line| line.contains(&needle)).map(str::to_owned).collect()
    }

    /// skopeo's flags for reaching this registry: TLS verification against its CA (or none for
    /// plain HTTP) and its credentials.
    pub fn skopeo_flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        match self.cert_dir() {
            Some(dir) => {
                flags.push("--tls-verify=true".to_owned());
                flags.push(format!("--cert-dir={}", dir.display()));
            }
            None => flags.push("--tls-verify=false".to_owned()),
        }
        if let Some(creds) = self.creds() {
            flags.push(format!("--creds={creds}"));
        }
        flags
    }

    /// `skopeo inspect [--raw] docker://<host>/<name_tag>`, parsed.
    pub fn skopeo_inspect(&self, name_tag: &str, raw: bool) -> io::Result<serde_json::Value> {
        let mut cmd = Command::new("skopeo");
        cmd.arg("inspect");
        if raw {
            cmd.arg("--raw");
        }
        cmd.args(self.skopeo_flags()).arg(format!("docker://{}", self.reference(name_tag)));
        let output = run(&mut cmd)?;
        serde_json::from_slice(&output.stdout).map_err(io::Error::other)
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:<port>/<name_tag>`, a reference to something in this registry.
    pub fn reference(&self, name_tag: &str) -> String {
        format!("{}/{name_tag}", self.host())
    }

    /// The registry's state directory (config.yml, log, and storage under data/).
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// The registry's stored copy of a blob, `<hex>` being the sha256 without the prefix.
    pub fn blob_path(&self, hex: &str) -> PathBuf {
        let prefix = hex.get(..2).unwrap_or(hex);
        self.state.path().join("data/docker/registry/v2/blobs/sha256").join(prefix).join(hex).join("data")
    }

    /// Pushes the busybox fixture as `name_tag` (`busybox:latest`). Panics on failure.
    pub fn seed_busybox(&self, name_tag: &str) {
        self.seed(busybox_layout(), name_tag, &[]).expect("seeding the registry with busybox");
    }

    /// Pushes the `latest` image of an OCI layout as `name_tag`, passing `skopeo_args` to
    /// `skopeo copy` (`--format v2s2` for docker media types, `--all` for an index).
    /// The registry's credentials are passed when it requires auth.
    pub fn seed(&self, layout: &Path, name_tag: &str, skopeo_args: &[&str]) -> io::Result<()> {
        let creds = self.creds().map(|c| format!("--dest-creds={c}"));
        run(Command::new(fixture("registry.sh"))
            .arg("seed")
            .arg(self.port.to_string())
            .arg(layout)
            .arg(name_tag)
            .args(creds)
            .args(skopeo_args))
        .map(drop)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Best effort: a failure here must not turn a passing test into a panic.
        let _ = Command::new(fixture("registry.sh")).arg("stop").arg(self.state.path()).stdin(Stdio::null()).output();
    }
}
