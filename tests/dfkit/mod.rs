//! Shared by the Dockerfile end-to-end suites (`tests/dockerfile.rs`, `tests/instructions.rs`):
//! a loopback registry seeded with busybox, a build context in a temp dir, and readers for
//! what `rbuild` wrote (skopeo for the config, umoci for the filesystem).
//!
//! Use with `mod support; mod dfkit;` from a test crate.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{self, Registry};

/// One registry for the whole test binary, seeded with `busybox:latest`.
pub fn registry() -> &'static Registry {
    support::busybox_registry()
}

/// Whether the test can run (root, busybox, registry, umoci); says why not otherwise.
pub fn ready(test: &str) -> bool {
    support::ready(test)
        && (support::have("umoci") || {
            eprintln!("skipping {test}: needs `apt-get install umoci` (CI installs it)");
            false
        })
}

/// `127.0.0.1:PORT/busybox:latest`.
pub fn base() -> String {
    registry().reference("busybox:latest")
}

/// A build context in a temp dir, and the store the builds use.
pub struct Ctx {
    pub dir: tempfile::TempDir,
}

impl Ctx {
    /// A context holding `Dockerfile` and `files` (parents created).
    pub fn new(dockerfile: &str, files: &[(&str, &[u8])]) -> Ctx {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Ctx { dir };
        std::fs::create_dir_all(ctx.path("ctx")).unwrap();
        ctx.write("Dockerfile", dockerfile.as_bytes());
        for (name, content) in files {
            ctx.write(name, content);
        }
        ctx
    }

    /// Writes a file in the context.
    pub fn write(&self, name: &str, content: &[u8]) {
        let p = self.path("ctx").join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    /// A path in the test's temp dir (`ctx` is the context, `store` the store).
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// The `rbuild` command with `--build-arg BASE=<busybox>`, `args`, and the context last.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rbuild"));
        cmd.arg("--root")
            .arg(self.path("store"))
            .arg("--build-arg")
            .arg(format!("BASE={}", base()))
            .args(args)
            .arg(self.path("ctx"))
            .env("RBUILD_NO_PROGRESS", "1");
        cmd
    }

    /// Runs [`Ctx::command`], echoing its stderr.
    pub fn rbuild(&self, args: &[&str]) -> Output {
        run_logged(self.command(args), args)
    }

    /// Builds into `image.tar` (OCI archive) and returns its `oci-archive:` reference.
    pub fn build_oci(&self, args: &[&str]) -> String {
        let out = self.try_build_oci(args);
        assert!(out.status.success(), "build failed: {}", String::from_utf8_lossy(&out.stderr));
        format!("oci-archive:{}", self.path("image.tar").display())
    }

    /// Like [`Ctx::build_oci`], returning the output whatever happened.
    pub fn try_build_oci(&self, args: &[&str]) -> Output {
        let dest = format!("type=oci,dest={}", self.path("image.tar").display());
        let mut all = vec!["-t", "test:1", "-o", &dest];
        all.extend_from_slice(args);
        self.rbuild(&all)
    }

    /// Unpacks `image.tar` with umoci (again, if it was unpacked before); returns the rootfs.
    pub fn rootfs(&self) -> PathBuf {
        let layout = self.path("layout");
        let bundle = self.path("bundle");
        for d in [&layout, &bundle] {
            if d.exists() {
                std::fs::remove_dir_all(d).unwrap();
            }
        }
        std::fs::create_dir_all(&layout).unwrap();
        let st = Command::new("tar").arg("-xf").arg(self.path("image.tar")).arg("-C").arg(&layout).status().unwrap();
        assert!(st.success());
        let out = Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:1", layout.display()))
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(out.status.success(), "umoci: {}", String::from_utf8_lossy(&out.stderr));
        bundle.join("rootfs")
    }

    /// A file of the unpacked image, as text.
    pub fn read(&self, rootfs: &Path, p: &str) -> String {
        std::fs::read_to_string(rootfs.join(p)).unwrap_or_else(|e| panic!("reading {p} in the image: {e}"))
    }
}

/// Runs `cmd`, echoing its status and stderr for the test log.
pub fn run_logged(mut cmd: Command, what: &[&str]) -> Output {
    let out = cmd.output().expect("run rbuild");
    eprintln!("rbuild {what:?} -> {}\n--- stderr ---\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    out
}

/// Runs a tool and parses what it prints as JSON.
pub fn tool_json(args: &[&str]) -> Value {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("run tool");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("tool printed JSON")
}

/// `skopeo inspect --config` of an image reference.
pub fn config_of(image: &str) -> Value {
    tool_json(&["skopeo", "inspect", "--config", "--raw", image])
}

/// The `created_by` of every history entry.
pub fn created_by(config: &Value) -> Vec<String> {
    config["history"].as_array().unwrap().iter().map(|h| h["created_by"].as_str().unwrap_or("").to_owned()).collect()
}

/// Serves `body` at any path on a loopback port for `requests` requests.
pub fn serve_once(body: &'static [u8], requests: usize) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: Tue, 14 Nov 2023 22:13:20 GMT\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(body);
        }
    });
    port
}
