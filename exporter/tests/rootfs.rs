//! `rootfs::write_rootfs_dir` / `write_rootfs_tar` on a 3-layer chain with
//! whiteouts and opaque directories: the expected tree, the tar and the
//! directory agreeing with each other, and with umoci's unpack of the same
//! layers as an image when umoci is installed.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use rbuild_exporter::layer::{pack, unpack, PackOptions, UnpackOptions};
use rbuild_exporter::oci::{write_oci_dir, ImageBuilder, LayoutBlobs};
use rbuild_exporter::oci_spec::image::{Arch, HistoryBuilder, Os};
use rbuild_exporter::rootfs::{write_rootfs_dir, write_rootfs_tar, write_rootfs_tars};

fn file(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn wh(root: &Path, rel: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    whiteout(&path);
}

/// Three overlay-format diffs, returned top first. Needs root (whiteouts,
/// trusted xattrs, devices, owners).
fn chain(tmp: &Path) -> Vec<PathBuf> {
    let (l1, l2, l3) = (tmp.join("l1"), tmp.join("l2"), tmp.join("l3"));
    // Bottom layer.
    file(&l3, "etc/passwd", "root:x:0:0::/root:/bin/sh\n");
    file(&l3, "etc/group", "root:x:0:\n");
    file(&l3, "bin/app", "#!/bin/sh\n");
    chmod(&l3.join("bin/app"), 0o755);
    fs::hard_link(l3.join("bin/app"), l3.join("bin/app-link")).unwrap();
    file(&l3, "opq/old1", "old1");
    file(&l3, "opq/sub/old2", "old2");
    file(&l3, "gone/a", "a");
    file(&l3, "replaced", "a file below a dir");
    file(&l3, "dir-to-file/x", "x");
    file(&l3, "keep/a", "a");
    symlink("etc/passwd", l3.join("lnk")).unwrap();
    // Middle layer.
    file(&l2, "etc/passwd", "root:x:0:0::/root:/bin/sh\napp:x:1234:1234::/:/bin/sh\n");
    std::os::unix::fs::lchown(l2.join("etc/passwd"), Some(1234), Some(5678)).unwrap();
    chmod(&l2.join("etc"), 0o750);
    wh(&l2, "etc/group");
    wh(&l2, "gone");
    file(&l2, "opq/new1", "new1");
    set_xattr(&l2.join("opq"), "trusted.overlay.opaque", b"y");
    file(&l2, "replaced/inner", "inner");
    file(&l2, "keep/b", "b");
    file(&l2, "xattr", "x");
    set_xattr(&l2.join("xattr"), "user.rbuild", b"v\0al");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        l2.join("null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        l2.join("pipe"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    // Top layer.
    fs::create_dir_all(l1.join("bin")).unwrap();
    wh(&l1, "bin/app");
    file(&l1, "dir-to-file", "now a file");
    file(&l1, "opq/new2", "new2");
    file(&l1, "gone/fresh", "fresh");
    wh(&l1, "keep/a");
    file(&l1, "keep/c", "c");
    file(&l1, "top/h1", "linked");
    fs::hard_link(l1.join("top/h1"), l1.join("top/h2")).unwrap();
    // Distinct mtimes everywhere, set last.
    for (n, layer) in [&l3, &l2, &l1].into_iter().enumerate() {
        for (i, (p, _)) in walk(layer).into_iter().rev().enumerate() {
            set_mtime(&layer.join(p), 1_600_000_000 + (n * 1000 + i) as i64);
        }
    }
    vec![l1, l2, l3]
}

/// (path, kind, content or link target) of a described tree.
fn shape(tree: &[NodeInfo]) -> Vec<(String, String, String)> {
    tree.iter()
        .map(|n| {
            let what = match (&n.content, &n.link) {
                (Some(c), _) => String::from_utf8_lossy(c).into_owned(),
                (_, Some(l)) => format!("-> {l}"),
                _ => String::new(),
            };
            (n.path.clone(), n.kind.clone(), what)
        })
        .collect()
}

#[test]
fn merged_tree_applies_whiteouts_and_opaque_dirs() {
    if skip_unless_root("rootfs merge of a chain with whiteouts") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let layers = chain(tmp.path());
    let dest = tmp.path().join("out");
    write_rootfs_dir(&layers, &dest).unwrap();
    let got = describe(&dest);

    let s = |p: &str, k: &str, c: &str| (p.to_owned(), k.to_owned(), c.to_owned());
    let want = vec![
        s("bin", "dir", ""),
        s("bin/app-link", "file", "#!/bin/sh\n"),
        s("dir-to-file", "file", "now a file"),
        s("etc", "dir", ""),
        s("etc/passwd", "file", "root:x:0:0::/root:/bin/sh\napp:x:1234:1234::/:/bin/sh\n"),
        s("gone", "dir", ""),
        s("gone/fresh", "file", "fresh"),
        s("keep", "dir", ""),
        s("keep/b", "file", "b"),
        s("keep/c", "file", "c"),
        s("lnk", "symlink", "-> etc/passwd"),
        s("null", "char 1:3", ""),
        s("opq", "dir", ""),
        s("opq/new1", "file", "new1"),
        s("opq/new2", "file", "new2"),
        s("pipe", "fifo", ""),
        s("replaced", "dir", ""),
        s("replaced/inner", "file", "inner"),
        s("top", "dir", ""),
        s("top/h1", "file", "linked"),
        s("top/h2", "file", "linked"),
        s("xattr", "file", "x"),
    ];
    assert_eq!(shape(&got), want);

    let get = |p: &str| got.iter().find(|n| n.path == p).unwrap();
    let src = |layer: usize, p: &str| fs::symlink_metadata(layers[layer].join(p)).unwrap();
    assert_eq!((get("etc/passwd").uid, get("etc/passwd").gid), (1234, 5678));
    assert_eq!(get("etc").mode, 0o750, "the top-most directory's metadata");
    assert_eq!(get("etc").mtime, src(1, "etc").mtime());
    assert_eq!(get("bin").mtime, src(0, "bin").mtime());
    assert_eq!(get("bin/app-link").mode, 0o755);
    assert_eq!(get("bin/app-link").hardlink_of, None, "its other name is gone");
    assert_eq!(get("top/h2").hardlink_of.as_deref(), Some("top/h1"));
    assert_eq!(get("lnk").mtime, src(2, "lnk").mtime());
    assert_eq!(get("pipe").mode, 0o600);
    assert_eq!(get("xattr").xattrs.get("user.rbuild").map(Vec::as_slice), Some(&b"v\0al"[..]));
    assert!(get("opq").xattrs.is_empty(), "no overlay xattrs in the output");

    // The tar: same tree once unpacked, deterministic, no whiteout entries.
    let mut tar = write_rootfs_tar(&layers, Vec::new()).unwrap();
    assert_eq!(tar, write_rootfs_tar(&layers, Vec::new()).unwrap());
    let mut names = Vec::new();
    for entry in tar::Archive::new(&tar[..]).entries().unwrap() {
        names.push(String::from_utf8(entry.unwrap().path_bytes().into_owned()).unwrap());
    }
    assert!(names.iter().all(|n| !n.contains(".wh.")), "{names:?}");
    assert_eq!(names.first().map(String::as_str), Some("bin/"));
    let from_tar = tmp.path().join("from-tar");
    fs::create_dir(&from_tar).unwrap();
    unpack(&tar[..], &from_tar, &UnpackOptions::default()).unwrap();
    assert_eq!(describe(&from_tar), got, "tar and directory outputs agree");

    // Several platforms in one tar: the same entries under one directory each, hardlinks
    // pointing inside their own directory.
    let both = [("linux_amd64".to_owned(), layers.clone()), ("linux_arm64".to_owned(), layers.clone())];
    let multi = write_rootfs_tars(&both, Vec::new()).unwrap();
    let mut multi_names = Vec::new();
    let mut links = Vec::new();
    for entry in tar::Archive::new(&multi[..]).entries().unwrap() {
        let entry = entry.unwrap();
        multi_names.push(String::from_utf8(entry.path_bytes().into_owned()).unwrap());
        if let Some(target) = entry.link_name_bytes() {
            if entry.header().entry_type() == tar::EntryType::Link {
                links.push(String::from_utf8(target.into_owned()).unwrap());
            }
        }
    }
    let mut expected_names = Vec::new();
    for (dir, _) in &both {
        expected_names.push(format!("{dir}/"));
        expected_names.extend(names.iter().map(|n| format!("{dir}/{n}")));
    }
    assert_eq!(multi_names, expected_names);
    assert_eq!(links, ["linux_amd64/top/h1", "linux_arm64/top/h1"]);
    tar.clear();

    // umoci's unpack of the same layers as an image agrees too.
    if let Some(umoci) = tool("umoci") {
        let bundle = tmp.path().join("bundle");
        let layout = image_of(tmp.path(), &layers);
        run(Command::new(umoci).args(["unpack", "--image", &format!("{}:latest", layout.display())]).arg(&bundle));
        assert_eq!(shape(&describe(&bundle.join("rootfs"))), want);
    }
}

/// An OCI layout holding `layers_top_first` as an image.
fn image_of(tmp: &Path, layers_top_first: &[PathBuf]) -> PathBuf {
    let store = tmp.join("store");
    fs::create_dir_all(store.join("blobs/sha256")).unwrap();
    let mut image = ImageBuilder::scratch(Arch::Amd64, Os::Linux);
    for (i, layer) in layers_top_first.iter().rev().enumerate() {
        let tmp_blob = store.join("blob.tmp");
        let packed = pack(layer, fs::File::create(&tmp_blob).unwrap(), &PackOptions::default()).unwrap();
        fs::rename(&tmp_blob, store.join("blobs/sha256").join(packed.digest.digest())).unwrap();
        image.add_layer(&packed, HistoryBuilder::default().created_by(format!("layer {i}")).build().unwrap());
    }
    let built = image.build().unwrap();
    let layout = tmp.join("layout");
    let blobs = (built.blobs(), LayoutBlobs::new(&store));
    write_oci_dir(&layout, &built.manifest, Some("rootfs-test:latest"), &blobs).unwrap();
    layout
}

#[test]
fn dest_symlinks_are_replaced_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let layer = tmp.path().join("layer");
    file(&layer, "etc/passwd", "new");
    file(&layer, "file", "content");
    let outside = tmp.path().join("outside");
    file(&outside, "passwd", "outside");
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).unwrap();
    symlink(&outside, dest.join("etc")).unwrap();
    symlink(outside.join("passwd"), dest.join("file")).unwrap();
    file(&dest, "unrelated", "stays");

    write_rootfs_dir(&[layer], &dest).unwrap();
    assert_eq!(fs::read_to_string(outside.join("passwd")).unwrap(), "outside");
    assert_eq!(listing(&outside), ["passwd"]);
    assert!(fs::symlink_metadata(dest.join("etc")).unwrap().is_dir());
    assert_eq!(fs::read_to_string(dest.join("etc/passwd")).unwrap(), "new");
    assert!(fs::symlink_metadata(dest.join("file")).unwrap().is_file());
    assert_eq!(fs::read_to_string(dest.join("unrelated")).unwrap(), "stays");
}

#[test]
fn single_layer_tar_matches_pack_without_whiteouts() {
    // With one layer and nothing to merge, the rootfs tar is the layer tar.
    let tmp = tempfile::tempdir().unwrap();
    let layer = tmp.path().join("layer");
    file(&layer, "a/b/c", "c");
    file(&layer, "z", "z");
    symlink("z", layer.join("y")).unwrap();
    let mut opts = PackOptions::default();
    opts.compression(rbuild_exporter::layer::Compression::None);
    let mut packed = Vec::new();
    pack(&layer, &mut packed, &opts).unwrap();
    assert_eq!(write_rootfs_tar(&[layer], Vec::new()).unwrap(), packed);
}
