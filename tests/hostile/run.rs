//! RUN steps as an attacker writes them: what they can see and do on the host. The sandbox
//! gives what BuildKit's runc sandbox gives (README "Security notes"); `--security=insecure`
//! lifts it only with `--allow security.insecure`.

use std::time::{Duration, Instant};

use crate::support_ext::{self, host_processes, unique, Case};

fn ready(test: &str) -> bool {
    support_ext::ready(test)
}

/// `CapBnd` of this (test) process: all an insecure step can have.
fn host_cap_bounding() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("CapBnd:")).unwrap();
    line.split_whitespace().nth(1).unwrap().to_owned()
}

#[test]
fn run_cannot_read_host_files() {
    let test = "run_cannot_read_host_files";
    if !ready(test) {
        return;
    }
    let c = Case::new(test, "");
    let canary = c.canary_path();
    let dir = canary.parent().unwrap().display().to_string();
    c.dockerfile(&format!(
        "FROM {{BASE}}\nRUN if cat {canary} || ls {dir}; then exit 1; fi; test ! -e {canary} && test ! -e /proc/1/root{canary} \
         && test ! -e /proc/self/cwd{canary}\n",
        canary = canary.display()
    ));
    let run = c.build_oci(&[]);
    run.assert_ok();
    c.assert_canary_never_read(&run);
}

#[test]
fn run_cannot_see_the_store_or_other_builds_snapshots() {
    let test = "run_cannot_see_the_store_or_other_builds_snapshots";
    if !ready(test) {
        return;
    }
    let c = Case::new(test, "FROM {BASE}\nCOPY private.txt /private.txt\n");
    let private = unique("OTHER-BUILD");
    c.file("private.txt", private.as_bytes());
    c.build_oci(&[]).assert_ok();

    // Another build on the same store: the store path (given with --root), and the host paths
    // of its own overlay layers (which /proc/self/mountinfo names), are not reachable.
    let store = c.store().display().to_string();
    c.dockerfile(&format!(
        "FROM {{BASE}}\nRUN if ls {store} || ls {store}/v1/snapshots || ls /var/lib/rbuild; then exit 1; fi; \
         for d in $(sed -n 's/.*lowerdir=\\([^,]*\\).*/\\1/p' /proc/self/mountinfo | tr ':' ' '); do \
         if ls \"$d\" > /dev/null 2>&1; then echo \"sees $d\"; exit 1; fi; done; \
         test -z \"$(find / -xdev -name private.txt 2>/dev/null)\"\n"
    ));
    let run = c.rbuild(&[]);
    run.assert_ok();
    run.assert_never_shows(&private);
}

#[test]
fn run_cannot_write_proc_sysrq_trigger_proc_sys_or_sys() {
    let test = "run_cannot_write_proc_sysrq_trigger_proc_sys_or_sys";
    if !ready(test) {
        return;
    }
    // Harmless if they did go through: `h` only prints sysrq help, the sysctl gets its own value
    // back, and `x` is not a valid value for either sysfs file.
    let c = Case::new(
        test,
        "FROM {BASE}\n\
         RUN if echo h > /proc/sysrq-trigger; then exit 11; fi; \
         if cat /proc/sys/kernel/printk_ratelimit > /proc/sys/kernel/printk_ratelimit; then exit 12; fi; \
         for f in /sys/kernel/mm/ksm/pages_to_scan /sys/kernel/mm/transparent_hugepage/enabled; do \
         if [ -e $f ]; then echo x 2>&1 > $f | grep -q 'Read-only file system' || exit 13; fi; done; \
         if touch /sys/pwned; then exit 14; fi; \
         grep -q ' /sys ro,' /proc/self/mountinfo || exit 15; \
         grep -q ' /proc/sys ro,' /proc/self/mountinfo || exit 16; \
         test ! -s /proc/keys && test ! -s /proc/timer_list || exit 17\n",
    );
    let run = c.build_oci(&[]);
    run.assert_ok();
}

#[test]
fn run_background_process_does_not_survive_the_step() {
    let test = "run_background_process_does_not_survive_the_step";
    if !ready(test) {
        return;
    }
    let marker = unique("SURVIVOR");
    // A plain background job, a double-forked daemon in its own session, and one ignoring
    // SIGTERM/SIGHUP: all must be gone when the build returns.
    let c = Case::new(
        test,
        &format!(
            "FROM {{BASE}}\nRUN sh -c 'sleep 1000; :' {marker}-bg > /dev/null 2>&1 & \
             (setsid sh -c 'sleep 1000; :' {marker}-daemon > /dev/null 2>&1 &) ; \
             nohup sh -c 'trap \"\" TERM HUP; sleep 1000; :' {marker}-nohup > /dev/null 2>&1 & \
             sleep 0.2; test \"$(ps | grep -c {marker}-)\" -ge 3\n"
        ),
    );
    let run = c.build_oci(&[]);
    run.assert_ok();
    // PID 1 of the step exited: the kernel kills its pid namespace. Allow for reaping.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut left = host_processes(&marker);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        left = host_processes(&marker);
    }
    assert!(left.is_empty(), "processes of a finished RUN step still run on the host: {left:#?}");
}

#[test]
fn run_blocked_syscalls_fail_with_eperm_unless_insecure() {
    let test = "run_blocked_syscalls_fail_with_eperm_unless_insecure";
    if !ready(test) {
        return;
    }
    let c = Case::new(
        test,
        "FROM {BASE}\nRUN mkdir -p /mnt; \
         unshare -U true 2>&1 | grep -q 'unshare(0x10000000): Operation not permitted' || exit 11; \
         unshare -m true 2>&1 | grep -q 'Operation not permitted' || exit 12; \
         mount -t proc proc /mnt 2>&1 | grep -q 'permission denied' || exit 13; \
         hostname evil 2>&1 | grep -q 'sethostname: Operation not permitted' || exit 14; \
         test \"$(hostname)\" = buildkitsandbox || exit 15\n",
    );
    c.build_oci(&[]).assert_ok();

    // The same calls work in an insecure step (in its own namespaces: the host is untouched).
    c.dockerfile(
        "FROM {BASE}\nRUN --security=insecure mkdir -p /mnt && unshare -U true && unshare -m true \
         && mount -t proc proc /mnt && test -e /mnt/self/status && umount /mnt && hostname evil \
         && test \"$(hostname)\" = evil\n",
    );
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    c.build_oci(&["--allow", "security.insecure"]).assert_ok();
    assert_eq!(std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(), host_name);
}

#[test]
fn run_confinement_is_buildkits_capabilities_and_seccomp() {
    let test = "run_confinement_is_buildkits_capabilities_and_seccomp";
    if !ready(test) {
        return;
    }
    let c = Case::new(
        test,
        "FROM {BASE}\nRUN grep -qx 'CapEff:\t00000000a80425fb' /proc/self/status \
         && grep -qx 'CapBnd:\t00000000a80425fb' /proc/self/status && grep -qx 'CapInh:\t0000000000000000' /proc/self/status \
         && grep -qx 'CapAmb:\t0000000000000000' /proc/self/status && grep -qx 'NoNewPrivs:\t0' /proc/self/status \
         && grep -qx 'Seccomp:\t2' /proc/self/status\n",
    );
    c.build_oci(&[]).assert_ok();

    let caps = host_cap_bounding();
    c.dockerfile(&format!(
        "FROM {{BASE}}\nRUN --security=insecure grep -qx 'CapEff:\t{caps}' /proc/self/status \
         && grep -qx 'Seccomp:\t0' /proc/self/status\n"
    ));
    c.build_oci(&["--allow", "security.insecure"]).assert_ok();
}

#[test]
fn run_insecure_without_allow_is_refused_before_anything_runs() {
    let test = "run_insecure_without_allow_is_refused_before_anything_runs";
    if !ready(test) {
        return;
    }
    let marker = unique("EARLIER-STEP");
    // The Dockerfile says `$((40+2))`, the step would print 42.
    let c = Case::new(
        test,
        &format!("FROM {{BASE}}\nRUN echo {marker}-$((40+2))\nRUN --security=insecure touch /insecure\n"),
    );
    let run = c.build_oci(&[]);
    run.assert_user_error(&[
        "RUN --security=insecure touch /insecure failed: security.insecure is not allowed: pass --allow \
         security.insecure",
        "Dockerfile:3",
        "hint: only allow security.insecure for Dockerfiles you trust",
    ]);
    // Refused when the build is planned: not even the step before it ran.
    run.assert_never_shows(&format!("{marker}-42"));
    assert!(!c.archive().exists());

    // Allowed (network.host accepted too, comma-separated as buildx takes it), it runs...
    c.build_oci(&["--allow", "network.host,security.insecure"]).assert_ok();
    // ...and its cached result is refused as well without the entitlement.
    let run = c.build_oci(&["--allow", "network.host"]);
    run.assert_user_error(&["security.insecure is not allowed: pass --allow security.insecure"]);

    let run = c.build_oci(&["--allow", "security.unconfined"]);
    run.assert_user_error(&["invalid entitlement \"security.unconfined\" in --allow"]);
}

#[test]
fn run_inherits_no_host_file_descriptors() {
    let test = "run_inherits_no_host_file_descriptors";
    if !ready(test) {
        return;
    }
    // A leaked descriptor of a host directory is a way out (runc CVE-2024-21626). PID 1's
    // descriptors: stdin /dev/null, stdout/stderr pipes; fd 3 is the pipe of `$(...)` itself.
    let c = Case::new(
        test,
        "FROM {BASE}\nRUN for f in /proc/1/fd/*; do t=$(readlink $f); echo \"fd ${f##*/} -> $t\"; \
         case \"$t\" in /dev/null|pipe:*) ;; *) echo \"leaked: $t\"; exit 1;; esac; done\n",
    );
    let run = c.build_oci(&[]);
    run.assert_ok();
    assert!(run.text.contains("fd 0 -> /dev/null"), "{}", run.text);
}

#[test]
fn run_sees_only_its_own_processes_not_the_rbuild_binary() {
    let test = "run_sees_only_its_own_processes_not_the_rbuild_binary";
    if !ready(test) {
        return;
    }
    // Overwriting the runtime through /proc/PID/exe (runc CVE-2019-5736) needs to see it.
    let c = Case::new(
        test,
        "FROM {BASE}\nRUN test \"$(readlink /proc/1/exe)\" = /bin/busybox && for p in /proc/[0-9]*; do \
         e=$(readlink $p/exe); case \"$e\" in *rbuild*) echo \"sees $e\"; exit 1;; esac; done; \
         test \"$(ls -d /proc/[0-9]* | wc -l)\" -le 4\n",
    );
    c.build_oci(&[]).assert_ok();
}

#[test]
fn run_cannot_open_host_devices_it_makes_with_mknod() {
    let test = "run_cannot_open_host_devices_it_makes_with_mknod";
    if !ready(test) {
        return;
    }
    // mknod itself is allowed (CAP_MKNOD is in Docker's set); opening is what must fail. Opened
    // read-only and closed at once: harmless if it does go through.
    let c = Case::new(
        test,
        "FROM {BASE}\nRUN mknod /tmp/tty0 c 4 0 && mknod /tmp/loopctl c 10 237 && mknod /tmp/loop0 b 7 0 && \
         for d in tty0 loopctl loop0; do if (exec 3< /tmp/$d) 2>/dev/null; then echo \"opened host device $d\"; \
         exit 1; fi; done\n",
    );
    c.build_oci(&[]).assert_ok();
}

#[test]
fn debug_flag_reports_each_run_steps_confinement() {
    let test = "debug_flag_reports_each_run_steps_confinement";
    if !ready(test) {
        return;
    }
    let c = Case::new(test, "FROM {BASE}\nRUN true\nRUN --security=insecure true\n");
    let run = c.build_oci(&["--debug", "--allow", "security.insecure"]);
    run.assert_ok();
    let step2 = run.text.lines().find(|l| l.contains("[2/3] RUN true")).and_then(|l| l.split(' ').next()).unwrap();
    let step3 = run
        .text
        .lines()
        .find(|l| l.contains("[3/3] RUN --security=insecure true"))
        .and_then(|l| l.split(' ').next())
        .unwrap();
    let has =
        |prefix: &str, text: &str| run.text.lines().any(|l| l.starts_with(&format!("{prefix} confinement: {text}")));
    assert!(has(step2, "isolation: namespaces"), "{}", run.text);
    assert!(has(step2, "capabilities: 0x00000000a80425fb"), "{}", run.text);
    assert!(has(step2, "seccomp: Docker's default profile"), "{}", run.text);
    assert!(has(step3, "security: INSECURE"), "{}", run.text);
    assert!(!has(step3, "capabilities:"), "{}", run.text);

    // Without --debug nothing of it is shown.
    let run = c.build_oci(&["--allow", "security.insecure", "--no-cache"]);
    run.assert_ok();
    assert!(!run.text.contains("confinement:"), "{}", run.text);
}

#[test]
fn cache_mount_id_with_dotdot_stays_in_the_store() {
    let test = "cache_mount_id_with_dotdot_stays_in_the_store";
    if !ready(test) {
        return;
    }
    let trap = support_ext::HostTrap::new();
    // The id names the cache, not a path: it cannot pick a host directory to mount.
    let c = Case::new(
        test,
        &format!(
            "FROM {{BASE}}\nRUN --mount=type=cache,id={}{},target=/c touch /c/pwned && ln -s / /c/root\n\
             RUN --mount=type=cache,id={abs},target=/c touch /c/pwned\n",
            "../".repeat(12),
            trap.rel(),
            abs = trap.path().display()
        ),
    );
    c.build_oci(&[]).assert_ok();
    trap.assert_only(&[]);
    // The symlink a step left in its cache is never followed on the host (du, prune).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .arg("--root")
        .arg(c.store())
        .arg("du")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
