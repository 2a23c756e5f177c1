//! What every hostile case needs beyond `tests/support`: a build context with a canary file
//! outside it, the real binary run with plain progress, a search for a needle in everything a
//! build wrote (OCI archive, store, with gzip layers decompressed), and hand-made tar archives,
//! so each case controls every header byte an attacker would.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::support::{self, Registry};

/// One registry for the whole suite, seeded with `busybox:latest`.
pub fn registry() -> &'static Registry {
    support::busybox_registry()
}

/// Root, busybox-static, jq, gzip, docker-registry, skopeo, curl; says why when not.
pub fn ready(test: &str) -> bool {
    support::ready(test)
}

/// The busybox base image in the suite's registry.
pub fn base() -> String {
    registry().reference("busybox:latest")
}

/// A value no file, log or layer contains unless this test put it there.
pub fn unique(tag: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("{tag}-{}-{nanos:x}", std::process::id())
}

/// A finished `rbuild` run.
#[derive(Debug)]
pub struct Run {
    /// Whether it exited 0.
    pub ok: bool,
    /// The exit code.
    pub code: Option<i32>,
    /// stdout then stderr: everything the user saw.
    pub text: String,
    /// stdout and stderr as raw bytes (searched for needles).
    pub raw: Vec<u8>,
}

impl Run {
    fn from(out: Output) -> Run {
        let mut raw = out.stdout.clone();
        raw.extend_from_slice(&out.stderr);
        Run { ok: out.status.success(), code: out.status.code(), text: String::from_utf8_lossy(&raw).into_owned(), raw }
    }

    /// Asserts the build succeeded.
    #[track_caller]
    pub fn assert_ok(&self) -> &Run {
        assert!(self.ok, "the build failed:\n{}", self.text);
        self
    }

    /// Asserts the build failed as a user error (exit 1) and said all of `needles`.
    #[track_caller]
    pub fn assert_user_error(&self, needles: &[&str]) -> &Run {
        assert!(!self.ok, "the build succeeded but must fail:\n{}", self.text);
        assert_eq!(self.code, Some(1), "a hostile input is the user's error (exit 1):\n{}", self.text);
        for n in needles {
            assert!(self.text.contains(n), "the error does not say {n:?}:\n{}", self.text);
        }
        self
    }

    /// Asserts `needle` is nowhere in what the user saw.
    #[track_caller]
    pub fn assert_never_shows(&self, needle: &str) {
        assert!(!contains(&self.raw, needle.as_bytes()), "the output shows {needle:?}:\n{}", self.text);
    }
}

/// A build context in `dir/ctx`, a directory `dir/outside` beside it holding `canary.txt`
/// (whose content is [`Case::canary`]), and the store `dir/store`.
pub struct Case {
    dir: tempfile::TempDir,
    /// The content of the canary file outside the context.
    pub canary: String,
}

impl Case {
    /// A context whose Dockerfile is `dockerfile` with `{BASE}` replaced by the busybox image.
    pub fn new(test: &str, dockerfile: &str) -> Case {
        let dir = tempfile::Builder::new().prefix(&format!("rbuild-hostile-{test}-")).tempdir().unwrap();
        let canary = unique("CANARY");
        std::fs::create_dir_all(dir.path().join("ctx")).unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        std::fs::write(dir.path().join("outside/canary.txt"), &canary).unwrap();
        mark_unread(&dir.path().join("outside/canary.txt"));
        let case = Case { dir, canary };
        case.dockerfile(dockerfile);
        case
    }

    /// Replaces the Dockerfile.
    pub fn dockerfile(&self, text: &str) {
        std::fs::write(self.ctx().join("Dockerfile"), text.replace("{BASE}", &base())).unwrap();
    }

    /// The temp dir holding everything.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The build context.
    pub fn ctx(&self) -> PathBuf {
        self.dir.path().join("ctx")
    }

    /// The store (`--root`).
    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The canary file outside the context (absolute).
    pub fn canary_path(&self) -> PathBuf {
        self.dir.path().join("outside/canary.txt")
    }

    /// The OCI archive [`Case::build_oci`] writes.
    pub fn archive(&self) -> PathBuf {
        self.dir.path().join("image.tar")
    }

    /// Writes a context file (parents created).
    pub fn file(&self, rel: &str, content: &[u8]) {
        let p = self.ctx().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    /// Makes a symlink in the context (parents created).
    pub fn symlink(&self, rel: &str, target: impl AsRef<Path>) {
        let p = self.ctx().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, p).unwrap();
    }

    /// Runs `rbuild --root STORE --progress=plain ARGS CONTEXT`, killed after [`BUILD_TIMEOUT`]
    /// (a hostile input that hangs the build fails the case instead of the suite).
    pub fn rbuild(&self, args: &[&str]) -> Run {
        self.rbuild_env(args, &[])
    }

    /// [`Case::rbuild`] with extra environment variables.
    pub fn rbuild_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let out = Command::new("timeout")
            .arg("--kill-after=5")
            .arg(BUILD_TIMEOUT.to_string())
            .arg(env!("CARGO_BIN_EXE_rbuild"))
            .arg("--root")
            .arg(self.store())
            .arg("build")
            .arg("--progress=plain")
            .args(args)
            .arg(self.ctx())
            .envs(env.iter().copied())
            .env_remove("RBUILD_ROOT")
            .stdin(Stdio::null())
            .output()
            .expect("run rbuild");
        let run = Run::from(out);
        eprintln!("rbuild {args:?} -> {:?}\n{}", run.code, run.text);
        assert!(!matches!(run.code, Some(124) | Some(137)), "rbuild hung: killed after {BUILD_TIMEOUT} s");
        run
    }

    /// Builds into [`Case::archive`] (an OCI archive, tagged `hostile:1`) and the store.
    pub fn build_oci(&self, args: &[&str]) -> Run {
        let dest = format!("type=oci,dest={}", self.archive().display());
        let mut all = vec!["-t", "hostile:1", "-o", &dest, "-o", "type=image"];
        all.extend_from_slice(args);
        self.rbuild(&all)
    }

    /// Files (archive members, store files, decompressed layers) holding `needle`: searched in
    /// the OCI archive when there is one and in the whole store.
    pub fn written_files_containing(&self, needle: &str) -> Vec<String> {
        let mut hits = Vec::new();
        if self.archive().is_file() {
            let layout = self.dir.path().join("layout");
            if !layout.join("index.json").is_file() {
                untar(&self.archive(), &layout);
            }
            hits.extend(tree_containing(&layout, needle.as_bytes()));
        }
        hits.extend(tree_containing(&self.store(), needle.as_bytes()));
        hits
    }

    /// Asserts no file the build wrote (archive, layers decompressed, store) holds `needle`.
    #[track_caller]
    pub fn assert_never_written(&self, what: &str, needle: &str) {
        let hits = self.written_files_containing(needle);
        assert!(hits.is_empty(), "{what} ({needle:?}) was written to: {hits:#?}");
    }

    /// Asserts the canary was never even opened (its atime), and is not in any layer, the
    /// store or the output.
    #[track_caller]
    pub fn assert_canary_never_read(&self, run: &Run) {
        assert_unread(&self.canary_path(), "the canary file outside the context");
        run.assert_never_shows(&self.canary);
        self.assert_never_written("the content of the canary outside the context", &self.canary);
        assert_eq!(std::fs::read_to_string(self.canary_path()).unwrap(), self.canary, "the canary changed");
        // That read was ours: mark it again for the next check.
        mark_unread(&self.canary_path());
    }
}

/// Seconds a build may take before the case fails as hung.
pub const BUILD_TIMEOUT: u64 = 120;

/// An access time no read leaves behind (2000-01-01).
const OLD_ATIME: i64 = 946_684_800;

/// Sets `path`'s access time far in the past: with `relatime` (or `strictatime`) any read
/// of the file moves it, which [`assert_unread`] checks.
pub fn mark_unread(path: &Path) {
    let st = Command::new("touch").arg("-a").arg("-d").arg(format!("@{OLD_ATIME}")).arg(path).status().unwrap();
    assert!(st.success(), "touch -a {}", path.display());
}

fn atime(path: &Path) -> i64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).unwrap().atime()
}

/// Whether reading a file updates its access time here (not on a `noatime` filesystem).
fn atime_tracked() -> bool {
    static TRACKED: OnceLock<bool> = OnceLock::new();
    *TRACKED.get_or_init(|| {
        let dir = tempfile::Builder::new().prefix("rbuild-hostile-atime-").tempdir().unwrap();
        let probe = dir.path().join("probe");
        std::fs::write(&probe, b"probe").unwrap();
        mark_unread(&probe);
        let _ = std::fs::read(&probe);
        let tracked = atime(&probe) != OLD_ATIME;
        if !tracked {
            eprintln!("note: reads do not update atime under {}: unread checks are skipped", dir.path().display());
        }
        tracked
    })
}

/// Asserts `path` (marked with [`mark_unread`]) was not read since.
#[track_caller]
pub fn assert_unread(path: &Path, what: &str) {
    if atime_tracked() {
        assert_eq!(atime(path), OLD_ATIME, "{what} ({}) was read", path.display());
    }
}

/// Extracts a tar file into `dest` with GNU tar.
pub fn untar(archive: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    let st = Command::new("tar").arg("-xf").arg(archive).arg("-C").arg(dest).status().unwrap();
    assert!(st.success(), "tar -xf {}", archive.display());
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// `gzip -dc` of `bytes`, or `None` when it is not gzip.
fn gunzip(bytes: &[u8]) -> Option<Vec<u8>> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return None;
    }
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().ok()?;
    let _ = writer.join();
    Some(out.stdout)
}

/// Every regular file, symlink target and name under `dir` (not following symlinks) that holds
/// `needle`; gzip files are searched decompressed too. Device nodes and sockets are skipped.
pub fn tree_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            let name = path.display().to_string();
            if contains(e.file_name().as_encoded_bytes(), needle) {
                hits.push(format!("{name} (its name)"));
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.file_type().is_symlink() {
                if let Ok(t) = std::fs::read_link(&path) {
                    if contains(t.as_os_str().as_encoded_bytes(), needle) {
                        hits.push(format!("{name} (symlink target)"));
                    }
                }
            } else if meta.is_file() {
                let Ok(bytes) = std::fs::read(&path) else { continue };
                if contains(&bytes, needle) {
                    hits.push(name.clone());
                }
                if let Some(plain) = gunzip(&bytes) {
                    if contains(&plain, needle) {
                        hits.push(format!("{name} (decompressed)"));
                    }
                }
            }
        }
    }
    hits
}

/// A directory on the host, outside every build, where an escaping write would land; removed
/// on drop. Absolute, short (tar names are at most 100 bytes) and unique.
pub struct HostTrap {
    dir: tempfile::TempDir,
}

impl HostTrap {
    /// A fresh empty trap under `/tmp`.
    pub fn new() -> HostTrap {
        HostTrap { dir: tempfile::Builder::new().prefix("rbh-").tempdir_in("/tmp").unwrap() }
    }

    /// The trap directory (absolute).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `path` without the leading `/`.
    pub fn rel(&self) -> String {
        self.path().display().to_string().trim_start_matches('/').to_owned()
    }

    /// Asserts nothing was created in the trap besides `expected` (names).
    #[track_caller]
    pub fn assert_only(&self, expected: &[&str]) {
        let mut names: Vec<String> = std::fs::read_dir(self.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut want: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        want.sort();
        assert_eq!(names, want, "a build wrote into the host directory {}", self.path().display());
    }
}

/// A tar stream built header by header: no library between the test and the bytes an attacker
/// controls.
#[derive(Default)]
pub struct Tar {
    buf: Vec<u8>,
}

/// Tar type flags.
pub mod kind {
    pub const FILE: u8 = b'0';
    pub const HARDLINK: u8 = b'1';
    pub const SYMLINK: u8 = b'2';
    pub const CHAR: u8 = b'3';
    pub const BLOCK: u8 = b'4';
    pub const DIR: u8 = b'5';
    pub const FIFO: u8 = b'6';
}

fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let text = format!("{value:0width$o}");
    assert!(text.len() <= width, "{value} does not fit a tar field of {width} digits");
    field[..width].copy_from_slice(text.as_bytes());
    field[width] = 0;
}

fn set_checksum(h: &mut [u8; 512]) {
    h[148..156].fill(b' ');
    let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
    let text = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(text.as_bytes());
}

/// A ustar header (names and link targets of at most 100 bytes).
pub fn header(name: &str, kind: u8, size: u64, mode: u32, link: &str) -> [u8; 512] {
    assert!(name.len() <= 100 && link.len() <= 100, "keep tar names short: {name} -> {link}");
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_700_000_000);
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[265..269].copy_from_slice(b"root");
    h[297..301].copy_from_slice(b"root");
    octal(&mut h[329..337], 0);
    octal(&mut h[337..345], 0);
    set_checksum(&mut h);
    h
}

impl Tar {
    /// An empty archive.
    pub fn new() -> Tar {
        Tar::default()
    }

    /// Appends a raw header and its data (padded to 512 bytes).
    pub fn raw(&mut self, h: [u8; 512], data: &[u8]) -> &mut Tar {
        self.buf.extend_from_slice(&h);
        self.buf.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// A regular file.
    pub fn file(&mut self, name: &str, data: &[u8], mode: u32) -> &mut Tar {
        self.raw(header(name, kind::FILE, data.len() as u64, mode, ""), data)
    }

    /// A directory.
    pub fn dir(&mut self, name: &str) -> &mut Tar {
        self.raw(header(name, kind::DIR, 0, 0o755, ""), &[])
    }

    /// A symlink.
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Tar {
        self.raw(header(name, kind::SYMLINK, 0, 0o777, target), &[])
    }

    /// A hardlink.
    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Tar {
        self.raw(header(name, kind::HARDLINK, 0, 0o644, target), &[])
    }

    /// A character or block device.
    pub fn device(&mut self, name: &str, kind: u8, major: u64, minor: u64, mode: u32) -> &mut Tar {
        let mut h = header(name, kind, 0, mode, "");
        octal(&mut h[329..337], major);
        octal(&mut h[337..345], minor);
        set_checksum(&mut h);
        self.raw(h, &[])
    }

    /// The archive with its two zero end blocks.
    pub fn finish(&self) -> Vec<u8> {
        let mut out = self.buf.clone();
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }
}

/// A GNU sparse file header ('S') whose data is one 512-byte block at the end of a file of
/// `real_size` bytes: a few hundred bytes of archive that read back as `real_size` bytes.
pub fn sparse_header(name: &str, real_size: u64) -> [u8; 512] {
    let mut h = header(name, b'S', 512, 0o644, "");
    // GNU magic and version instead of ustar's.
    h[257..265].copy_from_slice(b"ustar  \0");
    // Sparse map at 386: (offset, numbytes) × 4; is-extended at 482; real size at 483.
    h[345..500].fill(0);
    octal(&mut h[386..398], real_size - 512);
    octal(&mut h[398..410], 512);
    octal(&mut h[483..495], real_size);
    set_checksum(&mut h);
    h
}

/// `gzip -c` of `data` (`level` 1–9).
pub fn gzip(data: &[u8], level: u32) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg(format!("-{level}"))
        .arg("-nc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run gzip");
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// `sha256:<hex>` of `data`, by coreutils' sha256sum.
pub fn sha256(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    format!("sha256:{}", text.split_whitespace().next().unwrap())
}

/// Processes on the host whose command line contains `marker` (`pgrep -f`), excluding pgrep.
pub fn host_processes(marker: &str) -> Vec<String> {
    let out = Command::new("pgrep").arg("-af").arg(marker).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.contains("pgrep")).map(str::to_owned).collect()
}
