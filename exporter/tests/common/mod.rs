//! Helpers shared by the integration tests: building diff trees, describing
//! trees for comparison, and writing raw (possibly hostile) tar archives.
#![allow(dead_code, missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use std::path::PathBuf;
use std::process::Command;

use rbuild_exporter::layer::{pack, Compression, PackOptions, PackedLayer};
use rbuild_exporter::oci::{BuiltImage, ImageBuilder};
use rbuild_exporter::oci_spec::image::{Arch, HistoryBuilder, Os};
use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps, XattrFlags, CWD};

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Returns true (and says why) when a root-only part must be skipped.
pub fn skip_unless_root(what: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("skipping {what}: needs root (mknod of whiteouts, trusted.* xattrs, chown)");
    true
}

pub fn set_mtime(path: &Path, secs: i64) {
    let ts = Timespec { tv_sec: secs, tv_nsec: 0 };
    rustix::fs::utimensat(CWD, path, &Timestamps { last_access: ts, last_modification: ts }, AtFlags::SYMLINK_NOFOLLOW)
        .unwrap();
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn whiteout(path: &Path) {
    rustix::fs::mknodat(CWD, path, FileType::CharacterDevice, Mode::empty(), 0).unwrap();
}

pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, XattrFlags::empty()).unwrap();
}

/// A diff tree with one of everything. Root-only pieces (whiteout, opaque
/// dir, foreign owner) are added only as root. All mtimes are set last, to
/// whole seconds counting up from 1_600_000_000.
pub fn build_diff(root: &Path) {
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::write(root.join("bin/app"), b"#!/bin/sh\necho app\n").unwrap();
    chmod(&root.join("bin/app"), 0o755);
    fs::hard_link(root.join("bin/app"), root.join("bin/app-link")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("etc/passwd"), b"root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::write(root.join("usr/bin/su"), b"su").unwrap();
    chmod(&root.join("usr/bin/su"), 0o4755);
    std::os::unix::fs::symlink("etc/passwd", root.join("lnk")).unwrap();
    fs::create_dir(root.join("tmp")).unwrap();
    chmod(&root.join("tmp"), 0o1777);
    fs::write(root.join("file-with-xattr"), b"x").unwrap();
    set_xattr(&root.join("file-with-xattr"), "user.rbuild.test", b"v\x00al");
    rustix::fs::mknodat(CWD, root.join("fifo"), FileType::Fifo, Mode::from_raw_mode(0o640), 0).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(root.join("sock")).unwrap();
    if is_root() {
        whiteout(&root.join("removed"));
        fs::create_dir(root.join("opq")).unwrap();
        set_xattr(&root.join("opq"), "trusted.overlay.opaque", b"y");
        fs::write(root.join("opq/keep"), b"keep").unwrap();
        std::os::unix::fs::lchown(root.join("etc/passwd"), Some(1234), Some(5678)).unwrap();
    }
    let mut paths: Vec<_> = walk(root).into_iter().map(|(p, _)| p).collect();
    paths.reverse();
    for (i, p) in paths.iter().enumerate() {
        set_mtime(&root.join(p), 1_600_000_000 + i as i64);
    }
}

/// All entries below `root` (not root itself), parents first, sorted.
pub fn walk(root: &Path) -> Vec<(String, fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut kids: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        kids.sort();
        for kid in kids {
            let meta = fs::symlink_metadata(&kid).unwrap();
            let rel = kid.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if meta.is_dir() {
                stack.push(kid.clone());
            }
            out.push((rel, meta));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Everything pack/unpack must preserve about one entry.
#[derive(Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub path: String,
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub content: Option<Vec<u8>>,
    pub link: Option<String>,
    pub hardlink_of: Option<String>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Describes a tree (sockets left out: layers drop them).
pub fn describe(root: &Path) -> Vec<NodeInfo> {
    let mut inodes: HashMap<(u64, u64), String> = HashMap::new();
    let mut out = Vec::new();
    for (path, meta) in walk(root) {
        let full = root.join(&path);
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            "dir".to_string()
        } else if ft.is_file() {
            "file".into()
        } else if ft.is_symlink() {
            "symlink".into()
        } else if ft.is_char_device() {
            format!("char {}:{}", rustix::fs::major(meta.rdev()), rustix::fs::minor(meta.rdev()))
        } else if ft.is_block_device() {
            "block".into()
        } else if ft.is_fifo() {
            "fifo".into()
        } else {
            continue;
        };
        let mut hardlink_of = None;
        if !ft.is_dir() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            match inodes.get(&key) {
                Some(first) => hardlink_of = Some(first.clone()),
                None => {
                    inodes.insert(key, path.clone());
                }
            }
        }
        out.push(NodeInfo {
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: meta.mtime(),
            content: ft.is_file().then(|| fs::read(&full).unwrap()),
            link: ft.is_symlink().then(|| fs::read_link(&full).unwrap().to_string_lossy().into_owned()),
            hardlink_of,
            xattrs: xattrs(&full),
            path,
        });
    }
    out
}

pub fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut names = vec![0u8; 4096];
    let n = rustix::fs::llistxattr(path, &mut names[..]).unwrap_or(0);
    names.truncate(n);
    let mut out = BTreeMap::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut value = vec![0u8; 4096];
        let n = rustix::fs::lgetxattr(path, name, &mut value[..]).unwrap();
        value.truncate(n);
        out.insert(String::from_utf8_lossy(name).into_owned(), value);
    }
    out
}

/// One raw tar entry: the name bytes go into the header unchecked, so tests
/// can write `..`, absolute paths and anything else an attacker would.
pub struct Raw<'a> {
    pub name: &'a [u8],
    pub kind: tar::EntryType,
    pub link: &'a [u8],
    pub data: &'a [u8],
    pub mode: u32,
    pub pax: Vec<(&'a str, &'a [u8])>,
}

impl<'a> Raw<'a> {
    pub fn file(name: &'a str, data: &'a [u8]) -> Self {
        Self { name: name.as_bytes(), kind: tar::EntryType::Regular, link: b"", data, mode: 0o644, pax: Vec::new() }
    }
    pub fn dir(name: &'a str) -> Self {
        Self { kind: tar::EntryType::Directory, mode: 0o755, ..Self::file(name, b"") }
    }
    pub fn symlink(name: &'a str, target: &'a str) -> Self {
        Self { kind: tar::EntryType::Symlink, link: target.as_bytes(), mode: 0o777, ..Self::file(name, b"") }
    }
    pub fn hardlink(name: &'a str, target: &'a str) -> Self {
        Self { kind: tar::EntryType::Link, link: target.as_bytes(), ..Self::file(name, b"") }
    }
}

pub fn raw_tar(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        if !e.pax.is_empty() {
            builder.append_pax_extensions(e.pax.iter().copied()).unwrap();
        }
        let mut h = tar::Header::new_ustar();
        h.as_old_mut().name[..e.name.len()].copy_from_slice(e.name);
        h.as_old_mut().linkname[..e.link.len()].copy_from_slice(e.link);
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_size(e.data.len() as u64);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        builder.append(&h, e.data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// Names directly inside `dir`.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| String::from_utf8_lossy(e.unwrap().file_name().as_bytes()).into_owned())
        .collect();
    names.sort();
    names
}

pub const NAME: &str = "docker.io/library/rbuild-busybox:latest";

/// A one-layer busybox image whose layer blob sits in `<store>/blobs/sha256/`.
pub fn busybox_image(store: &Path) -> (BuiltImage, PackedLayer) {
    busybox_image_with(store, Compression::default(), |_| {})
}

/// The same with another compression and extra builder settings.
pub fn busybox_image_with(
    store: &Path,
    compression: Compression,
    configure: impl FnOnce(&mut ImageBuilder),
) -> (BuiltImage, PackedLayer) {
    let rootfs = store.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    let busybox = ["/bin/busybox", "/usr/bin/busybox"].into_iter().find(|p| Path::new(p).exists());
    match busybox {
        Some(path) => {
            fs::copy(path, rootfs.join("bin/busybox")).unwrap();
        }
        None => {
            eprintln!("busybox not installed (apt-get install busybox-static): using a stub binary");
            fs::write(rootfs.join("bin/busybox"), b"#!stub").unwrap();
        }
    }
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();

    let blob_dir = store.join("blobs/sha256");
    fs::create_dir_all(&blob_dir).unwrap();
    let tmp = store.join("layer.tmp");
    let mut opts = PackOptions::default();
    opts.source_date_epoch(Some(0)).compression(compression);
    let layer = pack(&rootfs, fs::File::create(&tmp).unwrap(), &opts).unwrap();
    fs::rename(&tmp, blob_dir.join(layer.digest.digest())).unwrap();

    let mut image = ImageBuilder::scratch(Arch::default(), Os::Linux);
    image.runtime_config_mut().set_env(Some(vec!["PATH=/bin".into()])).set_cmd(Some(vec![
        "sh".into(),
        "-c".into(),
        "echo hi".into(),
    ]));
    image.add_layer(&layer, HistoryBuilder::default().created_by("COPY rootfs /").build().unwrap());
    image.add_history(HistoryBuilder::default().created_by("CMD [\"sh\"]").build().unwrap());
    configure(&mut image);
    (image.build().unwrap(), layer)
}

pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.exists());
    if found.is_none() {
        eprintln!("skipping {name} check: {name} is not installed (apt-get install {name})");
    }
    found
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}
