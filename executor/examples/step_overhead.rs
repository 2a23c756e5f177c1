//! Measures the per-step overhead of the sandbox: `N` (default 40) sequential runs of
//! `/bin/true` through `rbuild_executor::run` on a busybox rootfs, with the default
//! confinement (capabilities, masks, seccomp, rlimits) and `Network::None`.
//!
//! ```sh
//! sudo cargo run --release -p rbuild-executor --example step_overhead [-- N [insecure] [host] [cleanup]]
//! ```
//!
//! `insecure` measures without the confinement (`Security::Insecure`), `host` without a
//! network namespace, `cleanup` also removes each run's work and upper dir afterwards, as the
//! worker does (reported separately: it is the caller's cost, large on disks where freeing a
//! directory's block is slow).
//!
//! It is its own sandbox helper, as the `rbuild` binary is: `main` dispatches first.

use std::path::Path;
use std::time::Instant;

use rbuild_executor::{run, Network, SandboxSpec, Security, HELPER_ARG};

fn main() {
    if std::env::args_os().nth(1).is_some_and(|arg| arg == HELPER_ARG) {
        rbuild_executor::sandbox_main();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs: u32 = args.first().and_then(|n| n.parse().ok()).unwrap_or(40);
    let insecure = args.iter().any(|a| a == "insecure");
    let host = args.iter().any(|a| a == "host");
    let cleanup = args.iter().any(|a| a == "cleanup");
    let mut cleanup_total = std::time::Duration::ZERO;
    let dir = tempfile::tempdir().expect("tempdir");
    let lower = dir.path().join("lower");
    for sub in ["bin", "etc"] {
        std::fs::create_dir_all(lower.join(sub)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", lower.join("bin/busybox")).expect("needs /bin/busybox (busybox-static)");
    std::os::unix::fs::symlink("busybox", lower.join("bin/true")).expect("symlink");
    std::fs::write(lower.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    let mut total = std::time::Duration::ZERO;
    let mut each = Vec::new();
    for i in 0..runs {
        let upper = dir.path().join(format!("upper{i}"));
        let work = dir.path().join(format!("work{i}"));
        std::fs::create_dir(&upper).expect("upper");
        std::fs::create_dir(&work).expect("work");
        let mut spec = SandboxSpec::new(vec![lower.clone()], upper, work, vec!["/bin/true".into()]);
        spec.network = if host { Network::Host } else { Network::None };
        if insecure {
            spec.security = Security::Insecure;
        }
        let start = Instant::now();
        let status = run(&spec, Path::new("/proc/self/exe"), &mut |_, _| {}).expect("run");
        let took = start.elapsed();
        total += took;
        each.push(took.as_secs_f64() * 1000.0);
        assert!(status.success(), "{status}");
        if cleanup {
            let start = Instant::now();
            std::fs::remove_dir_all(&spec.work_dir).expect("remove work dir");
            std::fs::remove_dir_all(&spec.upper_dir).expect("remove upper dir");
            cleanup_total += start.elapsed();
        }
    }
    let per_step = total.as_secs_f64() * 1000.0 / f64::from(runs);
    each.sort_by(f64::total_cmp);
    let (min, median) = (each.first().copied().unwrap_or(0.0), each.get(each.len() / 2).copied().unwrap_or(0.0));
    println!("{runs} runs of /bin/true: {per_step:.1} ms/step (min {min:.1}, median {median:.1})");
    if cleanup {
        let per_cleanup = cleanup_total.as_secs_f64() * 1000.0 / f64::from(runs);
        println!("  + {per_cleanup:.1} ms/step removing the work and upper dirs afterwards");
    }
}
