//! RUN root filesystems, end to end: the copy fallback (`RBUILD_SNAPSHOTTER=native`) gives
//! the same layers as overlayfs, deletions and re-created directories become the right
//! whiteouts and opaque markers in the layer tar, and a build leaves nothing behind (no
//! process, mount, temp dir or cgroup) after success, failure or Ctrl-C.
//!
//! They need root (namespaces, overlayfs) and the packages `scripts/install-deps.sh`
//! installs; without them each test says why it skips. CI runs as root with the packages.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Registry;

fn registry() -> &'static Registry {
    support::busybox_registry()
}

fn ready(test: &str) -> bool {
    support::ready(test)
}

fn base() -> String {
    registry().reference("busybox:latest")
}

/// A context directory with a Dockerfile, in `dir`.
fn context(dir: &Path, dockerfile: &str) -> PathBuf {
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    ctx
}

fn rbuild(store: &Path, snapshotter: &str, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_rbuild"))
        .arg("--root")
        .arg(store)
        .args(args)
        .env("RBUILD_NO_PROGRESS", "1")
        .env("RBUILD_SNAPSHOTTER", snapshotter)
        .output()
        .expect("run rbuild");
    eprintln!(
        "rbuild ({snapshotter}) {args:?} -> {}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// One layer tar entry, everything but its times.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    path: String,
    kind: char,
    mode: u32,
    uid: u64,
    gid: u64,
    /// File contents; the target of a link or symlink.
    data: Vec<u8>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

impl Entry {
    /// `path` with a letter for the kind: `d`, `f`, `l` (symlink), `h` (hard link).
    fn short(&self) -> String {
        format!("{} {}", self.kind, self.path)
    }
}

fn layer_entries(blob: &[u8]) -> Vec<Entry> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(blob));
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let header = entry.header().clone();
        let kind = match header.entry_type() {
            tar::EntryType::Directory => 'd',
            tar::EntryType::Regular => 'f',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            tar::EntryType::Char => 'c',
            tar::EntryType::Fifo => 'p',
            other => panic!("unexpected entry type {other:?}"),
        };
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let mut xattrs = BTreeMap::new();
        if let Some(exts) = entry.pax_extensions().unwrap() {
            for ext in exts {
                let ext = ext.unwrap();
                if let Some(name) = ext.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(name.to_owned(), ext.value_bytes().to_vec());
                }
            }
        }
        let mut data = Vec::new();
        match kind {
            'l' | 'h' => data = entry.link_name_bytes().unwrap().to_vec(),
            _ => {
                entry.read_to_end(&mut data).unwrap();
            }
        }
        out.push(Entry {
            path,
            kind,
            mode: header.mode().unwrap(),
            uid: header.uid().unwrap(),
            gid: header.gid().unwrap(),
            data,
            xattrs,
        });
    }
    out
}

/// The layers of the single image in an OCI archive, lowest first.
fn oci_layers(archive: &Path) -> Vec<Vec<Entry>> {
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    let mut tar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().trim_start_matches("./").to_owned();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        files.insert(name, data);
    }
    let blob = |digest: &str| -> &Vec<u8> {
        let name = format!("blobs/sha256/{}", digest.strip_prefix("sha256:").unwrap());
        files.get(&name).unwrap_or_else(|| panic!("{name} missing from the archive"))
    };
    let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
    let manifest: Value = serde_json::from_slice(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    manifest["layers"].as_array().unwrap().iter().map(|l| layer_entries(blob(l["digest"].as_str().unwrap()))).collect()
}

/// Builds `dockerfile` with `snapshotter` and returns its layers.
fn build_layers(dir: &Path, snapshotter: &str, dockerfile: &str) -> Vec<Vec<Entry>> {
    let work = dir.join(snapshotter);
    let ctx = context(&work, dockerfile);
    let archive = work.join("image.tar");
    let dest = format!("type=oci,dest={}", archive.display());
    let arg = format!("BASE={}", base());
    let out = rbuild(&work.join("store"), snapshotter, &["--build-arg", &arg, "-o", &dest, ctx.to_str().unwrap()]);
    assert!(out.status.success(), "the {snapshotter} build failed");
    oci_layers(&archive)
}

/// Builds `FROM busybox`, a RUN that makes a small tree, then `step`, once on overlayfs and
/// once with the copy fallback; asserts every layer is the same in both, and returns the
/// entries of `step`'s layer as `kind path` lines.
fn same_with_both(test: &str, step: &str) -> Option<(Vec<String>, Vec<Entry>)> {
    if !ready(test) {
        return None;
    }
    let t = tempfile::tempdir().unwrap();
    let dockerfile = format!(
        "ARG BASE\nFROM $BASE\n\
         RUN mkdir -p /data/sub/deep && echo a > /data/a && echo b > /data/sub/b && echo d > \
         /data/sub/deep/d && echo c > /data/c && chown 1000:1000 /data/c\n\
         RUN {step}\n"
    );
    let overlay = build_layers(t.path(), "overlayfs", &dockerfile);
    let copied = build_layers(t.path(), "native", &dockerfile);
    assert_eq!(overlay.len(), 3, "busybox, the tree and the step");
    for (i, (o, c)) in overlay.iter().zip(&copied).enumerate() {
        let (os, cs): (Vec<String>, Vec<String>) =
            (o.iter().map(Entry::short).collect(), c.iter().map(Entry::short).collect());
        assert_eq!(os, cs, "layer {i}: overlayfs (left) and the copy fallback (right) list other entries");
        for (oe, ce) in o.iter().zip(c) {
            assert_eq!(oe, ce, "layer {i}: {} differs", oe.path);
        }
    }
    assert_eq!(overlay.len(), copied.len());
    let last = overlay.last().unwrap().clone();
    Some((last.iter().map(Entry::short).collect(), last))
}

#[test]
fn deleted_file_is_a_whiteout() {
    let Some((entries, _)) = same_with_both("deleted_file_is_a_whiteout", "rm /data/a") else { return };
    assert_eq!(entries, ["d data/", "f data/.wh.a"]);
}

#[test]
fn deleted_directory_is_one_whiteout() {
    let Some((entries, _)) = same_with_both("deleted_directory_is_one_whiteout", "rm -r /data/sub") else { return };
    assert_eq!(entries, ["d data/", "f data/.wh.sub"]);
}

#[test]
fn recreated_directory_is_opaque() {
    let step = "rm -r /data/sub && mkdir /data/sub && echo n > /data/sub/n";
    let Some((entries, _)) = same_with_both("recreated_directory_is_opaque", step) else { return };
    assert_eq!(entries, ["d data/", "d data/sub/", "f data/sub/.wh..wh..opq", "f data/sub/n"]);
}

#[test]
fn file_replaced_by_a_directory_is_opaque() {
    let step = "rm /data/a && mkdir /data/a && echo x > /data/a/x";
    let Some((entries, _)) = same_with_both("file_replaced_by_a_directory_is_opaque", step) else { return };
    assert_eq!(entries, ["d data/", "d data/a/", "f data/a/.wh..wh..opq", "f data/a/x"]);
}

#[test]
fn directory_replaced_by_a_file_needs_no_whiteout() {
    let step = "rm -r /data/sub && echo f > /data/sub";
    let Some((entries, _)) = same_with_both("directory_replaced_by_a_file_needs_no_whiteout", step) else { return };
    assert_eq!(entries, ["d data/", "f data/sub"]);
}

#[test]
fn changes_of_content_metadata_and_links() {
    let step = "echo more >> /data/c && chmod 600 /data/sub/b && chown 7:8 /data/a && ln -s a /data/link \
                && ln /data/c /data/hard && mv /data/sub/deep/d /data/moved";
    let Some((entries, last)) = same_with_both("changes_of_content_metadata_and_links", step) else { return };
    assert_eq!(
        entries,
        [
            "d data/",
            "f data/a",
            "f data/c",
            "h data/hard",
            "l data/link",
            "f data/moved",
            "d data/sub/",
            "f data/sub/b",
            "d data/sub/deep/",
            "f data/sub/deep/.wh.d",
        ]
    );
    let get = |p: &str| last.iter().find(|e| e.path == p).unwrap();
    assert_eq!((get("data/a").uid, get("data/a").gid), (7, 8));
    assert_eq!((get("data/c").uid, get("data/c").data.as_slice()), (1000, &b"c\nmore\n"[..]));
    assert_eq!(get("data/sub/b").mode & 0o7777, 0o600);
    assert_eq!(get("data/hard").data, b"data/c");
}

#[test]
fn mount_stub_parents_are_no_change_but_a_changed_directory_is() {
    // The cache mount's stub is made in data/sub (copied up), then removed and data/sub's
    // times restored: data/sub is no change and, as in BuildKit, not in the layer. The chmod'ed
    // empty-in-the-diff directory is a change and stays.
    let step = "--mount=type=cache,target=/data/sub/cache --mount=type=tmpfs,target=/data/sub/deep/t \
                touch /data/new && chmod 700 /data/c && mkdir -p /data/sub2 && chmod 700 /data/sub2";
    let Some((entries, _)) = same_with_both("mount_stub_parents_are_no_change_but_a_changed_directory_is", step) else {
        return;
    };
    assert_eq!(entries, ["d data/", "f data/c", "f data/new", "d data/sub2/"]);
}

#[test]
fn a_run_that_changes_nothing_makes_no_layer() {
    let test = "a_run_that_changes_nothing_makes_no_layer";
    if !ready(test) {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    // Mount stubs in existing directories, /etc/hosts and /etc/resolv.conf (which busybox has
    // not: the sandbox binds them over stubs, as BuildKit does), a chmod back to the same mode:
    // nothing changes.
    let dockerfile = "ARG BASE\nFROM $BASE\n\
                      RUN --mount=type=cache,target=/root/.cache --mount=type=tmpfs,target=/etc/x/y \
                      chmod 755 /bin && grep -q localhost /etc/hosts && test -f /etc/resolv.conf\n";
    for snapshotter in ["overlayfs", "native"] {
        let layers = build_layers(t.path(), snapshotter, dockerfile);
        assert_eq!(layers.len(), 1, "{snapshotter}: only busybox's layer: {layers:?}");
    }
}

#[test]
fn recreated_tree_with_a_deleted_and_recreated_subdirectory() {
    // A whole tree replaced, deeper entries included: one opaque marker at the top suffices.
    let step = "rm -rf /data && mkdir -p /data/sub/deep && echo again > /data/sub/deep/d";
    let Some((entries, _)) = same_with_both("recreated_tree_with_a_deleted_and_recreated_subdirectory", step) else {
        return;
    };
    assert_eq!(entries, ["d data/", "f data/.wh..wh..opq", "d data/sub/", "d data/sub/deep/", "f data/sub/deep/d"]);
}

// --- leftovers -------------------------------------------------------------------------------

/// Processes whose command line is exactly `argv` (NUL-separated in /proc/PID/cmdline).
fn processes_running(argv: &[&str]) -> Vec<u32> {
    let wanted: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if std::fs::read(entry.path().join("cmdline")).is_ok_and(|c| c == wanted) {
            pids.push(pid);
        }
    }
    pids
}

/// Waits up to `limit` for `done`.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

/// Cgroup directories of ours (`rbuild-<pid>-<n>`) under this process's cgroups.
fn our_cgroup_dirs() -> Vec<PathBuf> {
    let mut found = Vec::new();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    for line in own.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next(), fields.next().unwrap_or(""), fields.next().unwrap_or("/"));
        let rel = path.trim_start_matches('/');
        roots.push(Path::new("/sys/fs/cgroup").join(rel));
        for c in controllers.split(',').filter(|c| !c.is_empty()) {
            roots.push(Path::new("/sys/fs/cgroup").join(c.trim_start_matches("name=")).join(rel));
        }
    }
    for root in roots {
        for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with("rbuild-") {
                found.push(entry.path());
            }
        }
    }
    found
}

/// Asserts nothing of a finished build is left: none of `argvs` runs, nothing is mounted
/// under `store`, its temp area is empty, no cgroup of ours is left.
fn assert_nothing_left(store: &Path, argvs: &[&[&str]]) {
    for argv in argvs {
        let gone = wait_until(Duration::from_secs(10), || processes_running(argv).is_empty());
        assert!(gone, "{argv:?} still runs: {:?}", processes_running(argv));
    }
    let store = std::fs::canonicalize(store).unwrap();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mounted: Vec<&str> =
        mountinfo.lines().filter(|l| l.split(' ').nth(4).is_some_and(|m| Path::new(m).starts_with(&store))).collect();
    assert!(mounted.is_empty(), "mounts left under the store: {mounted:#?}");
    let tmp: Vec<_> = std::fs::read_dir(store.join("tmp"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "temp entries left in the store: {tmp:?}");
    assert!(our_cgroup_dirs().is_empty(), "cgroups left: {:?}", our_cgroup_dirs());
}

#[test]
fn nothing_is_left_after_a_successful_build() {
    if !ready("nothing_is_left_after_a_successful_build") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    // The background sleep outlives the step's command: the sandbox must take it down.
    let ctx = context(t.path(), "ARG BASE\nFROM $BASE\nRUN sleep 4701 & echo started\n");
    let store = t.path().join("store");
    for snapshotter in ["overlayfs", "native"] {
        let arg = format!("BASE={}", base());
        let out = rbuild(&store, snapshotter, &["--no-cache", "--build-arg", &arg, ctx.to_str().unwrap()]);
        assert!(out.status.success());
        assert_nothing_left(&store, &[&["sleep", "4701"]]);
    }
}

#[test]
fn nothing_is_left_after_a_failed_build() {
    if !ready("nothing_is_left_after_a_failed_build") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let ctx = context(t.path(), "ARG BASE\nFROM $BASE\nRUN sleep 4702 & exit 3\n");
    let store = t.path().join("store");
    for snapshotter in ["overlayfs", "native"] {
        let arg = format!("BASE={}", base());
        let out = rbuild(&store, snapshotter, &["--build-arg", &arg, ctx.to_str().unwrap()]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("exit code: 3"));
        assert_nothing_left(&store, &[&["sleep", "4702"]]);
    }
}

#[test]
fn nothing_is_left_after_sigint() {
    if !ready("nothing_is_left_after_sigint") {
        return;
    }
    use nix::sys::signal::Signal::{SIGINT, SIGTERM};
    // SIGTERM too: how CI systems cancel a job.
    for (snapshotter, signal) in [("overlayfs", SIGINT), ("native", SIGINT), ("overlayfs", SIGTERM)] {
        let t = tempfile::tempdir().unwrap();
        let ctx = context(t.path(), "ARG BASE\nFROM $BASE\nRUN sleep 4703 & sleep 4704\n");
        let store = t.path().join("store");
        let mut child = Command::new(env!("CARGO_BIN_EXE_rbuild"))
            .arg("--root")
            .arg(&store)
            .args(["--build-arg", &format!("BASE={}", base())])
            .arg(&ctx)
            .env("RBUILD_NO_PROGRESS", "1")
            .env("RBUILD_SNAPSHOTTER", snapshotter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let running = wait_until(Duration::from_secs(60), || !processes_running(&["sleep", "4704"]).is_empty());
        assert!(running, "the RUN step never started");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
        let exited = wait_until(Duration::from_secs(20), || child.try_wait().unwrap().is_some());
        if !exited {
            let _ = child.kill();
        }
        let mut stderr = String::new();
        child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
        eprintln!("rbuild ({snapshotter}) after {signal}:\n{stderr}");
        assert!(exited, "rbuild did not exit within 20 s of {signal}");
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert!(stderr.contains("cancelled"), "{stderr}");
        assert_nothing_left(&store, &[&["sleep", "4703"], &["sleep", "4704"]]);
    }
}

// --- rootless -------------------------------------------------------------------------------

/// `/etc/subuid` and `/etc/subgid` as they were, put back when dropped; the rootless tests
/// hold it (and its lock) while they run, since both files are machine-wide.
struct SubIds {
    saved: Vec<(PathBuf, Option<String>)>,
    _lock: std::sync::MutexGuard<'static, ()>,
}

impl SubIds {
    fn set(range: Option<&str>) -> SubIds {
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let lock = LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut saved = Vec::new();
        for file in ["/etc/subuid", "/etc/subgid"] {
            let old = std::fs::read_to_string(file).ok();
            // Other users' ranges stay; nobody's is ours to set.
            let mut text: String = old
                .as_deref()
                .unwrap_or("")
                .lines()
                .filter(|l| !l.starts_with("nobody:"))
                .map(|l| format!("{l}\n"))
                .collect();
            if let Some(range) = range {
                text.push_str(&format!("nobody:{range}\n"));
            }
            std::fs::write(file, text).unwrap();
            saved.push((PathBuf::from(file), old));
        }
        SubIds { saved, _lock: lock }
    }
}

impl Drop for SubIds {
    fn drop(&mut self) {
        for (file, old) in &self.saved {
            match old {
                Some(text) => std::fs::write(file, text).unwrap(),
                None => std::fs::remove_file(file).unwrap(),
            }
        }
    }
}

/// Builds, as `nobody` (65534) and without `--root`, a Dockerfile whose RUN steps print the
/// uid, chown a file to `owner`, and delete and re-create a directory; returns the layers
/// and the output.
fn rootless_build(t: &Path, owner: &str, snapshotter: &str) -> (Vec<Vec<Entry>>, String) {
    let dockerfile = format!(
        "ARG BASE\nFROM $BASE\nRUN id -u > /uid && id -g >> /uid && mkdir -p /d/sub && echo x > /d/sub/x\n\
         RUN --network=none touch /owned && chown {owner} /owned && rm -r /d/sub && mkdir /d/sub && \
         cat /proc/self/uid_map && ls /sys/class/net\n"
    );
    rootless_rbuild(t, &dockerfile, snapshotter)
}

/// Builds `dockerfile` as `nobody` without `--root`, into an OCI archive; returns its layers
/// and the output (`--debug`).
fn rootless_rbuild(t: &Path, dockerfile: &str, snapshotter: &str) -> (Vec<Vec<Entry>>, String) {
    use std::os::unix::fs::PermissionsExt;
    let ctx = context(t, dockerfile);
    std::fs::set_permissions(t, std::fs::Permissions::from_mode(0o755)).unwrap();
    let status = Command::new("chown").arg("-R").arg("65534:65534").arg(t).status().unwrap();
    assert!(status.success());
    let archive = t.join("image.tar");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_rbuild"))
        .args(["--debug", "--progress=plain", "--build-arg", &format!("BASE={}", base())])
        .arg("-o")
        .arg(format!("type=oci,dest={}", archive.display()))
        .arg(&ctx)
        .env_clear()
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", t)
        .env("XDG_DATA_HOME", t.join("xdg"))
        .env("RBUILD_SNAPSHOTTER", snapshotter)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("rootless rbuild -> {}\n--- stderr ---\n{stderr}", out.status);
    assert!(out.status.success(), "the rootless build failed");
    assert!(t.join("xdg/rbuild").is_dir(), "the store is not under $XDG_DATA_HOME/rbuild");
    // Linux 5.11+ mounts overlayfs in a user namespace: no copy fallback needed.
    assert!(!stderr.contains("overlayfs cannot be mounted"), "rootless fell back to copying");
    (oci_layers(&archive), stderr)
}

fn rootless_ready(test: &str) -> bool {
    if !ready(test) {
        return false;
    }
    if !support::have("setpriv") || !Path::new("/usr/bin/newuidmap").exists() {
        eprintln!("skipping {test}: needs setpriv and newuidmap (apt-get install util-linux uidmap)");
        return false;
    }
    true
}

fn file_of<'a>(layer: &'a [Entry], path: &str) -> &'a Entry {
    layer.iter().find(|e| e.path == path).unwrap_or_else(|| panic!("{path} not in the layer: {layer:#?}"))
}

#[test]
fn rootless_build_with_subordinate_ids() {
    if !rootless_ready("rootless_build_with_subordinate_ids") {
        return;
    }
    let _ids = SubIds::set(Some("300000:65536"));
    let t = tempfile::tempdir().unwrap();
    let (layers, stderr) = rootless_build(t.path(), "1000:50", "auto");
    assert!(stderr.contains("newuidmap/newgidmap"), "--debug names the map: {stderr}");
    assert!(stderr.contains("1-65536 = host 300000-365535"), "{stderr}");
    assert_eq!(layers.len(), 3);
    assert_eq!(file_of(&layers[1], "uid").data, b"0\n0\n", "RUN runs as root in the namespace");
    let owned = file_of(&layers[2], "owned");
    assert_eq!((owned.uid, owned.gid), (1000, 50), "the chown is in the layer");
    let short: Vec<String> = layers[2].iter().map(Entry::short).collect();
    assert_eq!(short, ["d d/", "d d/sub/", "f d/sub/.wh..wh..opq", "f owned"]);
}

#[test]
fn rootless_build_with_a_single_id() {
    if !rootless_ready("rootless_build_with_a_single_id") {
        return;
    }
    let _ids = SubIds::set(None);
    // Overlay in the user namespace, and the copy fallback there too.
    for snapshotter in ["auto", "native"] {
        let t = tempfile::tempdir().unwrap();
        let (layers, stderr) = rootless_build(t.path(), "0:0", snapshotter);
        assert!(stderr.contains("single id"), "--debug names the map: {stderr}");
        assert_eq!(layers.len(), 3);
        assert_eq!(file_of(&layers[1], "uid").data, b"0\n0\n");
        // The base image's own owners survive: its layer is exported as pulled.
        assert_eq!(file_of(&layers[0], "home/app/").uid, 1000);
        let owned = file_of(&layers[2], "owned");
        assert_eq!((owned.uid, owned.gid), (0, 0));
        let short: Vec<String> = layers[2].iter().map(Entry::short).collect();
        assert_eq!(short, ["d d/", "d d/sub/", "f d/sub/.wh..wh..opq", "f owned"], "{snapshotter}");
    }
}

/// Unmounts its mount point when dropped.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn auto_copies_where_the_kernel_refuses_the_overlay() {
    if !ready("auto_copies_where_the_kernel_refuses_the_overlay") {
        return;
    }
    // A store on overlayfs (rbuild in a container): overlayfs refuses an upper dir on
    // overlayfs, so every RUN of the default (auto) mode must fall back to copying, and say
    // so once. (Deletions cannot be recorded there: overlayfs refuses whiteout devices; the
    // step then fails saying where to put the store.)
    let t = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = ["lower", "upper", "work", "mnt"].iter().map(|d| t.path().join(d)).collect();
    for d in &dirs {
        std::fs::create_dir(d).unwrap();
    }
    let options =
        format!("lowerdir={},upperdir={},workdir={}", dirs[0].display(), dirs[1].display(), dirs[2].display());
    nix::mount::mount(Some("overlay"), &dirs[3], Some("overlay"), nix::mount::MsFlags::empty(), Some(options.as_str()))
        .unwrap();
    let _mounted = Mounted(dirs[3].clone());
    let ctx = context(
        t.path(),
        "ARG BASE\nFROM $BASE\nRUN mkdir /d && echo 1 > /d/one && echo 2 > /d/two\n\
         RUN echo 3 > /d/three && chmod 700 /d && echo x > /home/app/x\n",
    );
    let archive = t.path().join("image.tar");
    let store = dirs[3].join("store");
    let out = rbuild(
        &store,
        "auto",
        &[
            "--build-arg",
            &format!("BASE={}", base()),
            "-o",
            &format!("type=oci,dest={}", archive.display()),
            ctx.to_str().unwrap(),
        ],
    );
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("overlayfs cannot be mounted here").count(), 1, "said once: {stderr}");
    let layers = oci_layers(&archive);
    let short = |i: usize| layers[i].iter().map(Entry::short).collect::<Vec<_>>();
    assert_eq!(short(1), ["d d/", "f d/one", "f d/two"]);
    assert_eq!(short(2), ["d d/", "f d/three", "d home/", "d home/app/", "f home/app/x"]);
    assert_eq!(layers[2][0].mode & 0o7777, 0o700);

    std::fs::write(ctx.join("Dockerfile"), "ARG BASE\nFROM $BASE\nRUN rm /etc/group\n").unwrap();
    let out = rbuild(&store, "auto", &["--build-arg", &format!("BASE={}", base()), ctx.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("refuses overlay whiteouts") && stderr.contains("--root"), "{stderr}");
    drop(_mounted);
}

#[test]
fn rootless_pulls_keep_opaque_directories_opaque() {
    if !rootless_ready("rootless_pulls_keep_opaque_directories_opaque") {
        return;
    }
    // An image whose top layer has an opaque directory, pushed by a root build...
    let t = tempfile::tempdir().unwrap();
    let name = registry().reference("opaque:1");
    let ctx = context(
        &t.path().join("root"),
        "ARG BASE\nFROM $BASE\nRUN mkdir -p /d/sub && echo x > /d/sub/x\n\
         RUN rm -r /d/sub && mkdir /d/sub && echo y > /d/sub/y\n",
    );
    let arg = format!("BASE={}", base());
    let out =
        rbuild(&t.path().join("store"), "auto", &["-t", &name, "--build-arg", &arg, "--push", ctx.to_str().unwrap()]);
    assert!(out.status.success());
    // ...pulled by rootless builds: unpacked in the user namespace (the opaque marker as
    // user.overlay.opaque), it must hide /d/sub/x from the overlay and from the copy.
    let _ids = SubIds::set(None);
    for snapshotter in ["auto", "native"] {
        let dir = t.path().join(format!("rootless-{snapshotter}"));
        std::fs::create_dir(&dir).unwrap();
        let dockerfile = format!("FROM {name}\nRUN ls /d/sub > /seen\n");
        let (layers, _) = rootless_rbuild(&dir, &dockerfile, snapshotter);
        assert_eq!(file_of(layers.last().unwrap(), "seen").data, b"y\n", "{snapshotter}");
    }
}

#[test]
fn rootless_falls_back_to_a_single_id_when_newuidmap_fails() {
    if !rootless_ready("rootless_falls_back_to_a_single_id_when_newuidmap_fails") {
        return;
    }
    // A range past the last id: newuidmap runs, and the kernel refuses the map.
    let _ids = SubIds::set(Some("4294900000:131072"));
    let t = tempfile::tempdir().unwrap();
    let (layers, stderr) = rootless_build(t.path(), "0:0", "auto");
    assert!(stderr.contains("single id") && stderr.contains("newuidmap/newgidmap failed"), "{stderr}");
    assert_eq!(file_of(&layers[1], "uid").data, b"0\n0\n");
}
