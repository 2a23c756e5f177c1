//! `cancel_all` (an interrupted build): a running sandbox is taken down at once and in
//! order (its processes killed, its cgroup removed by its helper), and no run starts after.
//! A test binary of its own: cancelling is for the whole process.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Fixture, HELPER};
use rbuild_executor::{run, ExecError, ExitStatus};

fn processes(cmdline: &[u8]) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| c == cmdline)
        .count()
}

/// `rbuild-*` groups in the pids hierarchy under our own group (where the helper makes its
/// groups: the helper inherits our cgroup).
fn pids_groups() -> Vec<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let dir = match own.lines().find_map(|l| l.split_once(":pids:").map(|(_, p)| p.to_owned())) {
        Some(path) => Path::new("/sys/fs/cgroup/pids").join(path.trim_start_matches('/')),
        None => {
            let path = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or("/").to_owned();
            Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'))
        }
    };
    std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("rbuild-"))
        .map(|e| e.path())
        .collect()
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

#[test]
fn cancel_all_takes_running_sandboxes_down_in_order() {
    require_root!();
    let fx = Fixture::new();
    let mut spec = fx.spec("sleep 4711 & sleep 4712");
    spec.limits.pids = Some(64);
    let before = pids_groups();
    let runner = std::thread::spawn(move || run(&spec, Path::new(HELPER), &mut |_, _| {}));
    assert!(wait_until(Duration::from_secs(30), || processes(b"sleep\x004712\x00") == 1), "the step never started");
    let groups: Vec<PathBuf> = pids_groups().into_iter().filter(|g| !before.contains(g)).collect();
    assert_eq!(groups.len(), 1, "the run's pids group: {groups:?}");

    let start = Instant::now();
    rbuild_executor::cancel_all();
    let result = runner.join().unwrap();
    assert!(start.elapsed() < Duration::from_secs(5), "cancelling took {:?}", start.elapsed());
    assert_eq!(result.unwrap(), ExitStatus::Signaled(9), "the command is killed");
    assert_eq!(processes(b"sleep\x004711\x00") + processes(b"sleep\x004712\x00"), 0, "the sandbox outlived it");
    assert!(!groups[0].exists(), "the helper removes its cgroup: {}", groups[0].display());

    // Nothing starts any more.
    let later = run(&fx.spec("true"), Path::new(HELPER), &mut |_, _| {});
    assert!(matches!(later, Err(ExecError::Cancelled)), "{later:?}");
}
