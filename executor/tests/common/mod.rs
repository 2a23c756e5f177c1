//! Shared fixtures of the sandbox integration tests: a busybox rootfs, spec builders and
//! runners. The tests need root (namespaces and overlay mounts) and skip, saying so,
//! otherwise.
#![allow(dead_code)] // each test crate uses a different part

use std::path::{Path, PathBuf};

use rbuild_executor::{run, ExecError, ExitStatus, Network, OutputStream, SandboxSpec};

pub const HELPER: &str = env!("CARGO_BIN_EXE_rbuild-sandbox");
pub const BUSYBOX: &str = "/bin/busybox";

/// Returns early (the test passes, saying why) unless running as root with busybox-static.
#[macro_export]
macro_rules! require_root {
    () => {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: the sandbox needs root (namespaces, overlay mounts)");
            return;
        }
        if !std::path::Path::new($crate::common::BUSYBOX).exists() {
            eprintln!("skipping: {} (Debian's busybox-static) is not installed", $crate::common::BUSYBOX);
            return;
        }
    };
}

/// A busybox rootfs as the only lower dir, plus a fresh upper and work dir.
pub struct Fixture {
    pub _dir: tempfile::TempDir,
    pub lower: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
}

impl Fixture {
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let (lower, upper, work) = (dir.path().join("lower"), dir.path().join("upper"), dir.path().join("work"));
        for d in [&upper, &work] {
            std::fs::create_dir(d).unwrap();
        }
        make_busybox_rootfs(&lower);
        Fixture { _dir: dir, lower, upper, work }
    }

    pub fn spec(&self, script: &str) -> SandboxSpec {
        SandboxSpec {
            lower_dirs: vec![self.lower.clone()],
            upper_dir: self.upper.clone(),
            work_dir: self.work.clone(),
            args: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".into()],
            cwd: "/".into(),
            user: String::new(),
            hostname: "rbuild-test-box".into(),
            network: Network::None,
            ..SandboxSpec::default()
        }
    }

    /// Names directly in the upper dir.
    pub fn upper_entries(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.upper)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

pub fn make_busybox_rootfs(root: &Path) {
    for dir in ["bin", "etc", "tmp", "root"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    let list = std::process::Command::new(BUSYBOX).arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        let link = root.join("bin").join(applet);
        if applet != "busybox" && !link.exists() {
            std::os::unix::fs::symlink("busybox", link).unwrap();
        }
    }
    let files = [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"),
        ("etc/group", "root:x:0:\napp:x:1000:\nstaff:x:50:app\n"),
        ("etc/hosts", "1.2.3.4 image-hosts\n"),
        ("etc/hostname", "image-hostname\n"),
        ("etc/resolv.conf", "nameserver 9.9.9.9\n"),
        ("etc/motd", "hello from the lower layer\n"),
    ];
    for (path, content) in files {
        std::fs::write(root.join(path), content).unwrap();
    }
}

pub struct Outcome {
    pub result: Result<ExitStatus, ExecError>,
    pub stdout: String,
    pub stderr: String,
}

pub fn execute(spec: &SandboxSpec) -> Outcome {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let result = run(spec, Path::new(HELPER), &mut |stream, bytes| match stream {
        OutputStream::Stdout => stdout.extend_from_slice(bytes),
        OutputStream::Stderr => stderr.extend_from_slice(bytes),
    });
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    Outcome { result, stdout, stderr }
}

/// Runs a script that must succeed and returns its stdout.
pub fn sh(fixture: &Fixture, script: &str, tweak: impl FnOnce(&mut SandboxSpec)) -> String {
    let mut spec = fixture.spec(script);
    tweak(&mut spec);
    let outcome = execute(&spec);
    match outcome.result {
        Ok(status) if status.success() => outcome.stdout,
        other => panic!("{script:?}: {other:?}\nstdout: {}\nstderr: {}", outcome.stdout, outcome.stderr),
    }
}
