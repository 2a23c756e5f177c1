//! End-to-end tests of the sandbox's confinement (capabilities, masks, seccomp, rlimits),
//! extra mounts, cgroup limits and the chroot fallback, on a busybox rootfs. They need root
//! and skip, saying so, otherwise. CI runs them as root.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::{execute, make_busybox_rootfs, sh, Fixture, HELPER};
use rbuild_executor::{
    describe_confinement, run, ExecError, ExitStatus, Isolation, Limits, MountKind, MountSpec, Security,
};

/// The `Name:\tvalue` lines of /proc/self/status as the command sees it.
fn status_lines(fx: &Fixture, security: Security, user: &str) -> Vec<String> {
    let out = sh(fx, "grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Seccomp):' /proc/self/status", |s| {
        s.security = security;
        s.user = user.into();
    });
    out.lines().map(|l| l.replace('\t', " ")).collect()
}

#[test]
fn root_gets_dockers_default_capabilities_and_seccomp() {
    require_root!();
    let fx = Fixture::new();
    assert_eq!(
        status_lines(&fx, Security::Sandbox, ""),
        [
            "CapInh: 0000000000000000",
            "CapPrm: 00000000a80425fb",
            "CapEff: 00000000a80425fb",
            "CapBnd: 00000000a80425fb",
            "CapAmb: 0000000000000000",
            "NoNewPrivs: 0",
            "Seccomp: 2",
        ]
    );
}

#[test]
fn a_non_root_user_keeps_only_the_bounding_set() {
    require_root!();
    let fx = Fixture::new();
    assert_eq!(
        status_lines(&fx, Security::Sandbox, "app"),
        [
            "CapInh: 0000000000000000",
            "CapPrm: 0000000000000000",
            "CapEff: 0000000000000000",
            "CapBnd: 00000000a80425fb",
            "CapAmb: 0000000000000000",
            "NoNewPrivs: 0",
            "Seccomp: 2",
        ]
    );
}

#[test]
fn insecure_keeps_every_capability_and_no_seccomp() {
    require_root!();
    let fx = Fixture::new();
    let lines = status_lines(&fx, Security::Insecure, "");
    // Everything the host's own bounding set allows.
    let host = std::fs::read_to_string("/proc/self/status").unwrap();
    let full = host.lines().find_map(|l| l.strip_prefix("CapBnd:\t")).unwrap().to_owned();
    assert!(lines.contains(&format!("CapEff: {full}")), "{lines:?}");
    assert!(lines.contains(&format!("CapBnd: {full}")), "{lines:?}");
    assert!(lines.contains(&"Seccomp: 0".to_owned()), "{lines:?}");
    // /sys is writable there, as in BuildKit's insecure mode.
    let ro = sh(&fx, "grep ' /sys ' /proc/self/mountinfo", |s| s.security = Security::Insecure);
    assert!(ro.contains(" rw,"), "{ro}");
}

#[test]
fn proc_and_sys_are_masked_and_read_only() {
    require_root!();
    let fx = Fixture::new();
    let out = sh(
        &fx,
        "{ echo x > /proc/sys/kernel/hostname; } 2>&1; \
         echo keys=$(wc -c < /proc/keys) timers=$(wc -c < /proc/timer_list); \
         ls -A /sys/firmware | wc -l; touch /sys/kernel/x 2>&1; \
         grep -c ' /proc/sys ro,' /proc/self/mountinfo",
        |_| {},
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains("Read-only file system"), "{out}");
    assert_eq!(lines[1], "keys=0 timers=0", "{out}");
    assert_eq!(lines[2], "0", "/sys/firmware is not empty: {out}");
    assert!(lines[3].contains("Read-only file system"), "{out}");
    assert_eq!(lines[4], "1", "{out}");
    // /proc/acpi, where the kernel has it, is an empty read-only tmpfs.
    let acpi = sh(&fx, "test ! -e /proc/acpi || ls -A /proc/acpi | wc -l", |_| {});
    assert!(acpi.is_empty() || acpi == "0\n", "{acpi}");
}

#[test]
fn nofile_is_20000_unless_asked() {
    require_root!();
    let fx = Fixture::new();
    assert_eq!(sh(&fx, "ulimit -n; ulimit -Hn", |_| {}), "20000\n20000\n");
    let out = sh(&fx, "ulimit -n; ulimit -Hn", |s| {
        s.rlimits =
            vec![rbuild_executor::Rlimit { resource: rbuild_executor::RlimitResource::Nofile, soft: 100, hard: 200 }]
    });
    assert_eq!(out, "100\n200\n");
}

#[test]
fn seccomp_blocks_new_namespaces_unless_insecure() {
    require_root!();
    let fx = Fixture::new();
    // A user namespace needs no capability: only seccomp stops it.
    let script = "unshare -U true 2>&1 && echo allowed";
    let blocked = sh(&fx, &format!("{script} || echo blocked"), |_| {});
    assert!(blocked.contains("Operation not permitted"), "{blocked}");
    assert!(blocked.ends_with("blocked\n"), "{blocked}");
    let allowed = sh(&fx, script, |s| s.security = Security::Insecure);
    assert_eq!(allowed, "allowed\n");
    let mount = "mount -t tmpfs none /mnt 2>&1 && echo mounted";
    let out = sh(&fx, &format!("mkdir -p /mnt; {mount} || true"), |_| {});
    assert!(out.contains("Operation not permitted") || out.contains("denied"), "{out}");
    let out = sh(&fx, &format!("mkdir -p /mnt; {mount}"), |s| s.security = Security::Insecure);
    assert_eq!(out, "mounted\n");
}

/// A tiny static program printing its effective uid, made setuid-root in the rootfs.
fn add_setuid_euid_printer(fx: &Fixture) -> bool {
    let src = fx._dir.path().join("euid.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\n#include <unistd.h>\n\
         int main(void){printf(\"%d\\n\",(int)geteuid());return 0;}\n",
    )
    .unwrap();
    let bin = fx.lower.join("bin/euid");
    let built = std::process::Command::new("gcc").args(["-static", "-O2", "-o"]).arg(&bin).arg(&src).status();
    if !built.is_ok_and(|s| s.success()) {
        return false;
    }
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o4755)).unwrap();
    true
}

#[test]
fn setuid_binaries_still_work_for_non_root_users() {
    require_root!();
    let fx = Fixture::new();
    if !add_setuid_euid_printer(&fx) {
        eprintln!("skipping: gcc with a static libc is needed to build a setuid test binary");
        return;
    }
    // no_new_privs is off, so the setuid bit still raises the euid (BuildKit's behaviour).
    assert_eq!(sh(&fx, "id -u; /bin/euid", |s| s.user = "app".into()), "1000\n0\n");
}

#[test]
fn readonly_bind_and_writable_bind() {
    require_root!();
    let fx = Fixture::new();
    let src = fx._dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("in"), "from host\n").unwrap();
    let bind = |target: &str, readonly| MountSpec {
        target: target.into(),
        kind: MountKind::Bind { source: src.clone(), readonly },
    };
    let out = sh(&fx, "cat /ro/in; { echo x > /ro/new; } 2>&1; echo y > /rw/out", |s| {
        s.mounts = vec![bind("/ro", true), bind("/rw", false)]
    });
    assert!(out.starts_with("from host\n"), "{out}");
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(!src.join("new").exists());
    assert_eq!(std::fs::read_to_string(src.join("out")).unwrap(), "y\n");
    assert!(fx.upper_entries().is_empty(), "{:?}", fx.upper_entries());
}

#[test]
fn tmpfs_size_is_enforced() {
    require_root!();
    let fx = Fixture::new();
    let out = sh(
        &fx,
        "head -c 2000000 /dev/zero 2>/dev/null >/scratch/big || echo full; \
         wc -c < /scratch/big; stat -c %a /scratch",
        |s| {
            s.mounts = vec![MountSpec {
                target: "/scratch".into(),
                kind: MountKind::Tmpfs { size: Some(1 << 20), mode: 0o1777 },
            }]
        },
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "full", "{out}");
    assert!(lines[1].parse::<u64>().unwrap() <= 1 << 20, "{out}");
    assert_eq!(lines[2], "1777", "{out}");
    assert!(fx.upper_entries().is_empty(), "{:?}", fx.upper_entries());
}

#[test]
fn file_mounts_are_read_only_copies_with_their_mode() {
    require_root!();
    let fx = Fixture::new();
    let secret = fx._dir.path().join("secret");
    std::fs::write(&secret, "s3cr3t").unwrap();
    let mount = MountSpec {
        target: "/run/secrets/token".into(),
        kind: MountKind::File { source: secret.clone(), mode: 0o440, uid: 0, gid: 1000 },
    };
    let out = sh(
        &fx,
        "cat /run/secrets/token; echo; stat -c '%a %u %g' /run/secrets/token; \
         { echo x > /run/secrets/token; } 2>&1 || true",
        |s| s.mounts = vec![mount.clone()],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["s3cr3t", "440 0 1000"], "{out}");
    assert!(lines[2].contains("Read-only file system"), "{out}");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "s3cr3t");
    // The user of the group can read it too.
    let out = sh(&fx, "cat /run/secrets/token", |s| {
        s.user = "app".into();
        s.mounts = vec![mount];
    });
    assert_eq!(out, "s3cr3t");
}

#[test]
fn created_mount_points_leave_the_layer_and_existing_dirs_stay() {
    require_root!();
    let fx = Fixture::new();
    // /etc exists (and is kept, with its mtime), /opt/a/b is created for the mount and
    // removed, /tmp/kept exists in the image and stays.
    std::fs::create_dir(fx.lower.join("tmp/kept")).unwrap();
    let etc_mtime = std::fs::metadata(fx.lower.join("etc")).unwrap().mtime();
    let tmpfs = |target: &str| MountSpec { target: target.into(), kind: MountKind::Tmpfs { size: None, mode: 0o755 } };
    let src = fx._dir.path().join("f");
    std::fs::write(&src, "").unwrap();
    let file = MountSpec {
        target: "/etc/created/file".into(),
        kind: MountKind::File { source: src, mode: 0o444, uid: 0, gid: 0 },
    };
    sh(&fx, "test -d /opt/a/b && test -f /etc/created/file && echo hi > /tmp/kept/x", |s| {
        s.mounts = vec![tmpfs("/opt/a/b"), file, tmpfs("/tmp/kept")];
    });
    assert!(!fx.upper.join("opt").exists(), "{:?}", fx.upper_entries());
    assert!(!fx.upper.join("etc/created").exists());
    assert!(!fx.upper.join("tmp/kept").exists(), "the tmpfs write reached the layer");
    assert!(fx.lower.join("tmp/kept").is_dir());
    if let Ok(meta) = std::fs::metadata(fx.upper.join("etc")) {
        assert_eq!(meta.mtime(), etc_mtime, "the parent's mtime was not restored");
    }
    // A stub the command filled is its change, and stays.
    sh(&fx, "echo data > /opt/a/b/../keep", |s| s.mounts = vec![tmpfs("/opt/a/b")]);
    assert_eq!(std::fs::read_to_string(fx.upper.join("opt/a/keep")).unwrap(), "data\n");
    assert!(!fx.upper.join("opt/a/b").exists());
}

#[test]
fn a_step_over_its_memory_limit_is_a_typed_oom() {
    require_root!();
    let fx = Fixture::new();
    let mut spec = fx.spec("head -c 200m /dev/zero | tail");
    let limit = 50 << 20;
    spec.limits = Limits { memory: Some(limit), ..Limits::default() };
    let outcome = execute(&spec);
    match outcome.result {
        Err(ExecError::OutOfMemory { limit_bytes, .. }) => assert_eq!(limit_bytes, limit),
        other => panic!("{other:?}\n{}", outcome.stderr),
    }
    let message = execute(&spec).result.unwrap_err().to_string();
    assert!(message.starts_with("exceeded memory limit of 52428800 bytes"), "{message}");
    // Within the limit it is an ordinary run, and no cgroup is left behind.
    assert_eq!(sh(&fx, "head -c 1m /dev/zero | wc -c", |s| s.limits = spec.limits), "1048576\n");
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let memory = own.lines().find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_owned()));
    if let Some(path) = memory {
        let dir = Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("rbuild-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}

#[test]
fn pids_limit_stops_fork_bombs() {
    require_root!();
    let fx = Fixture::new();
    // The shell and four sleeps fit; the fifth fork fails (and busybox sh gives up).
    let mut spec = fx.spec("for i in 1 2 3 4 5 6 7 8 9 10; do sleep 5 & echo $i; done");
    spec.limits.pids = Some(5);
    let outcome = execute(&spec);
    assert_ne!(outcome.result.unwrap(), ExitStatus::Exited(0));
    assert_eq!(outcome.stdout, "1\n2\n3\n4\n");
    assert!(outcome.stderr.contains("can't fork"), "{}", outcome.stderr);
}

#[test]
fn cpu_quota_is_applied() {
    require_root!();
    let fx = Fixture::new();
    // A fifth of a CPU: a one-second busy loop gets about 0.2 s of CPU time.
    let out = sh(&fx, "time -p timeout 1 sh -c 'while :; do :; done' 2>&1 | grep ^user", |s| {
        s.limits.cpu_quota = Some((20_000, 100_000))
    });
    let user: f64 = out.trim().trim_start_matches("user").trim().parse().unwrap();
    assert!(user < 0.5, "the busy loop got {user} s of CPU in 1 s: {out}");
}

#[test]
fn chroot_isolation_runs_and_says_it_is_weaker() {
    require_root!();
    let fx = Fixture::new();
    let out = sh(&fx, "cat /etc/motd; echo hi > /new", |s| s.isolation = Isolation::Chroot);
    assert_eq!(out, "hello from the lower layer\n");
    assert_eq!(std::fs::read_to_string(fx.upper.join("new")).unwrap(), "hi\n");
    let text = describe_confinement(&fx.spec("true"));
    assert!(!text.contains("WEAKER"), "{text}");
    let mut spec = fx.spec("true");
    spec.isolation = Isolation::Chroot;
    assert!(describe_confinement(&spec).contains("WEAKER"));
}

#[test]
fn chroot_isolation_without_namespaces_uses_a_copied_rootfs() {
    require_root!();
    let fx = Fixture::new();
    // A full copy of the rootfs as the upper dir, and a thread whose children cannot create
    // any namespace (a seccomp filter makes unshare fail, as on a host without namespaces).
    let copy = fx._dir.path().join("copy");
    make_busybox_rootfs(&copy);
    let mut spec = fx.spec("echo $$; cat /etc/motd; touch /made-here");
    spec.lower_dirs.clear();
    spec.upper_dir = copy.clone();
    spec.isolation = Isolation::Chroot;
    let outcome = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                deny_unshare_for_this_thread();
                let mut stdout = Vec::new();
                let result = run(&spec, Path::new(HELPER), &mut |_, b| stdout.extend_from_slice(b));
                (result, String::from_utf8_lossy(&stdout).into_owned())
            })
            .join()
            .unwrap()
    });
    let (result, stdout) = outcome;
    assert_eq!(result.unwrap(), ExitStatus::Exited(0), "{stdout}");
    let mut lines = stdout.lines();
    let pid: u32 = lines.next().unwrap().parse().unwrap();
    assert_ne!(pid, 1, "there was a pid namespace after all");
    assert_eq!(lines.next(), Some("hello from the lower layer"));
    assert!(copy.join("made-here").exists());
}

/// Installs, on the calling thread only, a seccomp filter that fails `unshare` with EPERM.
fn deny_unshare_for_this_thread() {
    use seccompiler::{SeccompAction, SeccompFilter, TargetArch};
    let arch = TargetArch::try_from(std::env::consts::ARCH).unwrap();
    let filter = SeccompFilter::new(
        [(libc::SYS_unshare, vec![])].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .unwrap();
    let program: seccompiler::BpfProgram = filter.try_into().unwrap();
    seccompiler::apply_filter(&program).unwrap();
}

#[test]
fn groups_left_by_killed_helpers_are_removed() {
    require_root!();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let Some(path) = own.lines().find_map(|l| l.split_once(":pids:").map(|(_, p)| p.to_owned())) else {
        eprintln!("skipping: no cgroup v1 pids hierarchy");
        return;
    };
    let parent = Path::new("/sys/fs/cgroup/pids").join(path.trim_start_matches('/'));
    // What a SIGKILLed helper leaves: its group, named by a pid that no longer exists.
    let stale = parent.join(format!("rbuild-{}-12345", i32::MAX));
    std::fs::create_dir(&stale).unwrap();
    let fx = Fixture::new();
    assert_eq!(sh(&fx, "echo ok", |s| s.limits.pids = Some(32)), "ok\n");
    let left = stale.exists();
    let _ = std::fs::remove_dir(&stale);
    assert!(!left, "the next run with limits removes the stale group");
}
