//! End-to-end tests of the RUN sandbox on a busybox rootfs. They need root (namespaces and
//! overlay mounts) and skip, saying so, otherwise. CI runs them as root.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{execute, sh, Fixture, HELPER};
use rbuild_executor::{run, CommandError, ExecError, ExitStatus, Network, OutputStream, SetupError, UserError};

#[test]
fn command_is_pid_1_and_alone() {
    require_root!();
    let fx = Fixture::new();
    assert_eq!(sh(&fx, "echo $$", |_| {}), "1\n");
    // /proc is the new pid namespace's: only PID 1 (the shell globs in-process).
    assert_eq!(sh(&fx, "echo /proc/[0-9]*", |_| {}), "/proc/1\n");
}

#[test]
fn hostname_is_the_specs() {
    require_root!();
    let fx = Fixture::new();
    assert_eq!(sh(&fx, "hostname", |_| {}), "rbuild-test-box\n");
    let files = sh(&fx, "cat /etc/hostname /etc/hosts", |_| {});
    assert!(files.starts_with("rbuild-test-box\n127.0.0.1\tlocalhost rbuild-test-box\n"), "{files}");
}

#[test]
fn network_none_has_only_lo_and_it_is_up() {
    require_root!();
    let fx = Fixture::new();
    assert_eq!(sh(&fx, "ls /sys/class/net", |_| {}), "lo\n");
    let flags = sh(&fx, "cat /sys/class/net/lo/flags", |_| {});
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "IFF_UP not set: {flags:#x}");
    let devs = sh(&fx, "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '", |_| {});
    assert_eq!(devs, "lo\n");
    // The image's resolv.conf is left alone without a network.
    assert_eq!(sh(&fx, "cat /etc/resolv.conf", |_| {}), "nameserver 9.9.9.9\n");
}

#[test]
fn network_host_shares_interfaces_and_resolv_conf() {
    require_root!();
    let fx = Fixture::new();
    let host_devs = std::fs::read_dir("/sys/class/net").unwrap().count();
    let devs = sh(&fx, "ls /sys/class/net | wc -l", |s| s.network = Network::Host);
    assert_eq!(devs.trim(), host_devs.to_string());
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if !host_resolv.is_empty() {
        let resolv = sh(&fx, "cat /etc/resolv.conf", |s| s.network = Network::Host);
        assert_eq!(resolv, host_resolv);
    }
    // Writing the bound file changes neither the host's file nor the layer.
    sh(&fx, "echo nameserver 1.1.1.1 > /etc/resolv.conf", |s| s.network = Network::Host);
    assert_eq!(std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(), host_resolv);
    assert!(fx.upper_entries().is_empty(), "{:?}", fx.upper_entries());
}

#[test]
fn writes_land_in_the_upper_dir_only() {
    require_root!();
    let fx = Fixture::new();
    let name = format!("rbuild-sandbox-test-{}", std::process::id());
    sh(&fx, &format!("echo layer > /{name}"), |_| {});
    assert_eq!(std::fs::read_to_string(fx.upper.join(&name)).unwrap(), "layer\n");
    assert!(!Path::new("/").join(&name).exists(), "the write escaped to the host");
    assert!(!fx.lower.join(&name).exists(), "the write reached the lower dir");
    assert_eq!(fx.upper_entries(), [name]);
}

#[test]
fn removing_a_lower_file_makes_a_whiteout() {
    require_root!();
    let fx = Fixture::new();
    sh(&fx, "rm /etc/motd", |_| {});
    let meta = std::fs::symlink_metadata(fx.upper.join("etc/motd")).unwrap();
    assert!(meta.file_type().is_char_device());
    assert_eq!(meta.rdev(), 0);
    assert!(fx.lower.join("etc/motd").exists());
}

#[test]
fn a_copied_rootfs_is_changed_in_place() {
    require_root!();
    let fx = Fixture::new();
    // The copy (here: the lower dir itself) is the root; no overlay, no upper dir.
    let mut spec = fx.spec("echo new > /new && rm /etc/motd && echo pid=$$ && ls / | tr '\\n' ' '");
    spec.rootfs = rbuild_executor::Rootfs::Copied;
    spec.lower_dirs.clear();
    spec.upper_dir = fx.lower.clone();
    let outcome = execute(&spec);
    assert_eq!(outcome.result.unwrap(), ExitStatus::Exited(0), "{}", outcome.stderr);
    assert!(outcome.stdout.starts_with("pid=1\n"), "{}", outcome.stdout);
    assert!(outcome.stdout.contains("proc"), "mounted inside: {}", outcome.stdout);
    assert_eq!(std::fs::read_to_string(fx.lower.join("new")).unwrap(), "new\n");
    assert!(!fx.lower.join("etc/motd").exists());
    // The mount points it had to create are gone again; the overlay's upper dir is untouched.
    for stub in ["proc", "dev", "sys"] {
        assert!(!fx.lower.join(stub).exists(), "{stub} left in the copy");
    }
    assert!(fx.upper_entries().is_empty());
}

#[test]
fn exit_codes_come_back() {
    require_root!();
    let fx = Fixture::new();
    let outcome = execute(&fx.spec("exit 3"));
    assert_eq!(outcome.result.unwrap(), ExitStatus::Exited(3));
}

#[test]
fn missing_command_is_a_setup_error() {
    require_root!();
    let fx = Fixture::new();
    let mut spec = fx.spec("");
    spec.args = vec!["no-such-command".into()];
    let err = execute(&spec).result.unwrap_err();
    assert!(matches!(err, ExecError::Setup(SetupError::Command(CommandError::NotFound { .. }))), "{err:?}");
    spec.args = vec!["/bin/no-such-command".into()];
    let err = execute(&spec).result.unwrap_err();
    assert!(matches!(err, ExecError::Setup(SetupError::Command(CommandError::Exec { .. }))), "{err:?}");
    assert!(fx.upper_entries().is_empty(), "{:?}", fx.upper_entries());
}

#[test]
fn unknown_user_is_a_setup_error() {
    require_root!();
    let fx = Fixture::new();
    let mut spec = fx.spec("true");
    spec.user = "nobody-here".into();
    let err = execute(&spec).result.unwrap_err();
    assert!(matches!(err, ExecError::Setup(SetupError::User(UserError::UnknownUser { .. }))), "{err:?}");
}

#[test]
fn bad_overlay_is_a_setup_error() {
    require_root!();
    let fx = Fixture::new();
    let mut spec = fx.spec("true");
    spec.lower_dirs = vec![fx.lower.join("does-not-exist")];
    let err = execute(&spec).result.unwrap_err();
    let ExecError::Setup(setup) = &err else { panic!("{err:?}") };
    assert!(matches!(setup, SetupError::Mount(rbuild_executor::MountError::Overlay { .. })), "{err:?}");
}

#[test]
fn user_and_cwd() {
    require_root!();
    let fx = Fixture::new();
    let out = sh(&fx, "id -u; id -g; id -G; pwd; touch f", |s| {
        s.user = "app".into();
        s.cwd = "/home/app/src".into();
    });
    assert_eq!(out, "1000\n1000\n1000 50\n/home/app/src\n");
    let meta = std::fs::metadata(fx.upper.join("home/app/src/f")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1000, 1000));
    let dir = std::fs::metadata(fx.upper.join("home/app")).unwrap();
    assert_eq!((dir.uid(), dir.mode() & 0o7777), (1000, 0o755));
    assert_eq!(sh(&fx, "id -u; id -g", |s| s.user = "4242:4343".into()), "4242\n4343\n");
}

#[test]
fn env_is_exactly_the_specs() {
    require_root!();
    let fx = Fixture::new();
    let mut spec = fx.spec("");
    spec.args = vec!["env".into()];
    spec.env = vec!["PATH=/bin".into(), "A=1".into(), "B=two words".into()];
    let outcome = execute(&spec);
    assert_eq!(outcome.result.unwrap(), ExitStatus::Exited(0));
    assert_eq!(outcome.stdout, "PATH=/bin\nA=1\nB=two words\n");
}

#[test]
fn stdout_and_stderr_are_streamed() {
    require_root!();
    let fx = Fixture::new();
    let spec = fx.spec("echo out; echo err >&2; sleep 1; echo late");
    let mut first = None;
    let mut chunks = Vec::new();
    let result = run(&spec, Path::new(HELPER), &mut |stream, bytes| {
        first.get_or_insert_with(Instant::now);
        chunks.push((stream, String::from_utf8_lossy(bytes).into_owned()));
    });
    let done = Instant::now();
    assert_eq!(result.unwrap(), ExitStatus::Exited(0));
    let text = |want| chunks.iter().filter(|(s, _)| *s == want).map(|(_, t)| t.as_str()).collect::<String>();
    assert_eq!(text(OutputStream::Stdout), "out\nlate\n");
    assert_eq!(text(OutputStream::Stderr), "err\n");
    let lead = done - first.unwrap();
    assert!(lead >= Duration::from_millis(500), "output arrived only at the end ({lead:?})");
}

#[test]
fn background_processes_die_with_the_step() {
    require_root!();
    let fx = Fixture::new();
    let start = Instant::now();
    assert_eq!(sh(&fx, "sleep 4711 & echo started", |_| {}), "started\n");
    assert!(start.elapsed() < Duration::from_secs(30));
    assert_eq!(count_processes(b"sleep\x004711\x00"), 0, "a background process outlived the step");
}

#[test]
fn no_mountpoints_or_mounts_leak() {
    require_root!();
    let fx = Fixture::new();
    let before = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    sh(&fx, "test -d /proc/self && test -c /dev/null && test -d /sys/class", |_| {});
    assert!(fx.upper_entries().is_empty(), "{:?}", fx.upper_entries());
    let after = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert_eq!(before, after);
    // An image that has the mount points keeps them, untouched.
    for dir in ["proc", "dev", "sys"] {
        std::fs::create_dir(fx.lower.join(dir)).unwrap();
    }
    sh(&fx, "ls /dev/null /proc/1 /sys/kernel >/dev/null", |_| {});
    assert!(fx.upper_entries().is_empty(), "{:?}", fx.upper_entries());
}

#[test]
fn scratch_has_no_lower_dirs() {
    require_root!();
    let fx = Fixture::new();
    let mut spec = fx.spec("true");
    spec.lower_dirs.clear();
    let err = execute(&spec).result.unwrap_err();
    assert!(matches!(err, ExecError::Setup(SetupError::Command(CommandError::Exec { .. }))), "{err:?}");
    assert!(fx.upper_entries().is_empty(), "{:?}", fx.upper_entries());
}

#[test]
fn many_long_lower_dirs() {
    require_root!();
    let fx = Fixture::new();
    let deep = fx._dir.path().join(format!("layers-{}", "x".repeat(80)));
    let mut lowers = Vec::new();
    for i in 0..45 {
        let layer = deep.join(format!("{i:064}")).join("fs");
        std::fs::create_dir_all(&layer).unwrap();
        std::fs::write(layer.join(format!("file{i}")), format!("{i}\n")).unwrap();
        lowers.push(layer);
    }
    lowers.push(fx.lower.clone());
    let out = sh(&fx, "cat /file0 /file44", |s| s.lower_dirs = lowers);
    assert_eq!(out, "0\n44\n");
}

#[test]
fn dev_is_usable() {
    require_root!();
    let fx = Fixture::new();
    let out = sh(
        &fx,
        "echo x > /dev/null && head -c 4 /dev/zero | wc -c && head -c 4 /dev/urandom | wc -c \
         && test -L /dev/ptmx && test -d /dev/pts && test -d /dev/shm && readlink /dev/fd",
        |_| {},
    );
    assert_eq!(out, "4\n4\n/proc/self/fd\n");
}

#[test]
fn signals_start_at_their_defaults() {
    require_root!();
    let fx = Fixture::new();
    let mut spec = fx.spec("");
    spec.args = vec!["grep".into(), "-E".into(), "^Sig(Ign|Blk)".into(), "/proc/self/status".into()];
    let outcome = execute(&spec);
    assert_eq!(outcome.result.unwrap(), ExitStatus::Exited(0));
    assert_eq!(outcome.stdout, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n");
}

fn count_processes(cmdline: &[u8]) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| c == cmdline)
        .count()
}

#[test]
fn a_caller_that_gives_up_takes_the_sandbox_down() {
    require_root!();
    let fx = Fixture::new();
    let spec = fx.spec("echo go; sleep 47; echo never");
    let start = Instant::now();
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run(&spec, Path::new(HELPER), &mut |_, _| panic!("the caller gave up"))
    }));
    assert!(unwound.is_err());
    assert!(start.elapsed() < Duration::from_secs(30));
    assert_eq!(count_processes(b"sleep\x0047\x00"), 0, "the sandbox outlived its helper");
}
