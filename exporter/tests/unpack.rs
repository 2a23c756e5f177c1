//! `layer::unpack`: round trips through `pack`, and hostile archives that
//! must fail with a named error or stay inside the destination.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use common::*;
use rbuild_exporter::layer::{pack, unpack, Compression, PackOptions, UnpackError, UnpackOptions, UnpackedLayer};
use tar::EntryType;

/// A sandbox with an empty `dest` inside: anything appearing in the sandbox
/// besides `dest` is an escape.
struct Sandbox {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    dest: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let dest = root.join("dest");
        fs::create_dir(&dest).unwrap();
        Self { _tmp: tmp, root, dest }
    }

    fn unpack(&self, tar: &[u8]) -> Result<UnpackedLayer, UnpackError> {
        let mut opts = UnpackOptions::default();
        opts.chown(is_root());
        unpack(tar, &self.dest, &opts)
    }

    fn assert_confined(&self) {
        assert_eq!(listing(&self.root), vec!["dest"], "something escaped the destination");
    }
}

#[test]
fn round_trip_plain_gzip_and_zstd() {
    let tmp = tempfile::tempdir().unwrap();
    let diff = tmp.path().join("diff");
    build_diff(&diff);
    let want = describe(&diff);

    for compression in [Compression::None, Compression::Gzip { level: 1 }, Compression::Zstd { level: 3 }] {
        let mut opts = PackOptions::default();
        opts.compression(compression);
        let mut blob = Vec::new();
        let packed = pack(&diff, &mut blob, &opts).unwrap();

        let sandbox = Sandbox::new();
        let unpacked = sandbox.unpack(&blob).unwrap();
        assert_eq!(unpacked.diff_id, packed.diff_id, "{compression:?}");
        assert_eq!(unpacked.digest, packed.digest);
        assert_eq!(unpacked.size, packed.size);
        assert_eq!(unpacked.entries, packed.entries);
        let mut got = describe(&sandbox.dest);
        if !is_root() {
            // Without chown, owners are ours; the tree still matches otherwise.
            for n in &mut got {
                let w = want.iter().find(|w| w.path == n.path).unwrap();
                (n.uid, n.gid) = (w.uid, w.gid);
            }
        }
        assert_eq!(got, want);
        sandbox.assert_confined();
    }
    if is_root() {
        // Spot checks of the overlay format itself.
        let sandbox = Sandbox::new();
        let mut blob = Vec::new();
        pack(&diff, &mut blob, &PackOptions::default()).unwrap();
        sandbox.unpack(&blob).unwrap();
        let wh = fs::symlink_metadata(sandbox.dest.join("removed")).unwrap();
        assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
        assert_eq!(xattrs(&sandbox.dest.join("opq")).get("trusted.overlay.opaque").map(Vec::as_slice), Some(&b"y"[..]));
        assert!(!sandbox.dest.join("opq/.wh..wh..opq").exists());
    } else {
        skip_unless_root("whiteout/opaque spot checks");
    }
}

macro_rules! hostile {
    ($name:ident, [$($entry:expr),* $(,)?], $pat:pat) => {
        #[test]
        fn $name() {
            let sandbox = Sandbox::new();
            let tar = raw_tar(&[$($entry),*]);
            let result = sandbox.unpack(&tar);
            assert!(matches!(result, $pat), "got {result:?}");
            sandbox.assert_confined();
        }
    };
}

hostile!(dotdot_is_rejected, [Raw::file("../x", b"evil")], Err(UnpackError::PathEscape { .. }));
hostile!(inner_dotdot_is_rejected, [Raw::file("a/../../x", b"evil")], Err(UnpackError::PathEscape { .. }));
hostile!(
    pax_path_dotdot_is_rejected,
    [Raw { pax: vec![("path", &b"../x"[..])], ..Raw::file("harmless", b"evil") }],
    Err(UnpackError::PathEscape { .. })
);
hostile!(
    write_through_absolute_symlink_fails,
    [Raw::symlink("a", "/tmp"), Raw::file("a/rbuild-escape-test", b"evil")],
    Err(UnpackError::SymlinkParent { .. })
);
hostile!(
    write_through_relative_symlink_fails,
    [Raw::symlink("a", ".."), Raw::file("a/x", b"evil")],
    Err(UnpackError::SymlinkParent { .. })
);
hostile!(
    nested_symlink_parent_fails,
    [Raw::dir("d/"), Raw::symlink("d/s", "../.."), Raw::dir("d/s/sub/")],
    Err(UnpackError::SymlinkParent { .. })
);
hostile!(hardlink_dotdot_fails, [Raw::hardlink("h", "../../etc/passwd")], Err(UnpackError::HardlinkOutside { .. }));
hostile!(
    hardlink_through_symlink_fails,
    [Raw::symlink("s", "/etc"), Raw::hardlink("h", "s/passwd")],
    Err(UnpackError::HardlinkOutside { .. })
);
hostile!(hardlink_to_missing_fails, [Raw::hardlink("h", "nope")], Err(UnpackError::HardlinkTargetMissing { .. }));
hostile!(
    hardlink_to_dir_fails,
    [Raw::dir("d/"), Raw::hardlink("h", "d")],
    Err(UnpackError::HardlinkToDirectory { .. })
);
hostile!(empty_whiteout_fails, [Raw::file(".wh.", b"")], Err(UnpackError::InvalidWhiteout { .. }));
hostile!(dot_whiteout_fails, [Raw::file("a/.wh..", b"")], Err(UnpackError::PathEscape { .. }));
hostile!(
    file_as_parent_fails,
    [Raw::file("f", b""), Raw::file("f/x", b"")],
    Err(UnpackError::ParentNotDirectory { .. })
);
hostile!(
    unknown_type_fails,
    [Raw { kind: EntryType::new(b'Z'), ..Raw::file("z", b"") }],
    Err(UnpackError::UnsupportedEntry { kind: 'Z', .. })
);

#[test]
fn absolute_paths_are_neutralised() {
    let sandbox = Sandbox::new();
    sandbox.unpack(&raw_tar(&[Raw::file("/rbuild-abs-test/file", b"data")])).unwrap();
    assert_eq!(fs::read(sandbox.dest.join("rbuild-abs-test/file")).unwrap(), b"data");
    assert!(!Path::new("/rbuild-abs-test").exists());
    sandbox.assert_confined();
}

#[test]
fn hardlink_to_symlink_links_the_symlink_itself() {
    let sandbox = Sandbox::new();
    sandbox.unpack(&raw_tar(&[Raw::symlink("s", "/etc/passwd"), Raw::hardlink("h", "s")])).unwrap();
    assert_eq!(fs::read_link(sandbox.dest.join("h")).unwrap(), Path::new("/etc/passwd"));
    sandbox.assert_confined();
}

#[test]
fn later_entries_replace_earlier_ones() {
    let passwd_before = fs::read("/etc/passwd").ok();
    let sandbox = Sandbox::new();
    let tar = raw_tar(&[
        Raw::file("d", b"file first"),
        Raw::dir("d/"),
        Raw::file("d/x", b"x"),
        Raw::dir("e/"),
        Raw::file("e/y", b"y"),
        Raw::file("e", b"file over dir"),
        Raw::symlink("l", "/etc/passwd"),
        Raw::file("l", b"not through the link"),
        Raw::file("f", b"original"),
        Raw::hardlink("hl", "f"),
        Raw::file("hl", b"replaced"),
        Raw::file("same", b"one"),
        Raw::file("same", b"two"),
        Raw { mode: 0o700, ..Raw::dir("m/") },
        Raw::file("m/in", b""),
        Raw { mode: 0o750, ..Raw::dir("m/") },
    ]);
    sandbox.unpack(&tar).unwrap();
    let d = &sandbox.dest;
    assert!(d.join("d").is_dir());
    assert_eq!(fs::read(d.join("d/x")).unwrap(), b"x");
    assert_eq!(fs::read(d.join("e")).unwrap(), b"file over dir");
    assert!(fs::symlink_metadata(d.join("l")).unwrap().is_file());
    assert_eq!(fs::read(d.join("l")).unwrap(), b"not through the link");
    assert_eq!(fs::read(d.join("f")).unwrap(), b"original", "replacing a hardlink must not write through it");
    assert_eq!(fs::read(d.join("hl")).unwrap(), b"replaced");
    assert_eq!(fs::read(d.join("same")).unwrap(), b"two");
    assert!(d.join("m/in").exists(), "dir over dir merges");
    assert_eq!(fs::metadata(d.join("m")).unwrap().mode() & 0o7777, 0o750);
    assert_eq!(fs::read("/etc/passwd").ok(), passwd_before);
    sandbox.assert_confined();
}

#[test]
fn whiteouts_replace_and_overlay_xattrs_are_dropped() {
    if skip_unless_root("whiteout and trusted xattr test") {
        return;
    }
    let sandbox = Sandbox::new();
    let tar = raw_tar(&[
        Raw::file("x", b"gone"),
        Raw::file(".wh.x", b""),
        Raw { pax: vec![("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..])], ..Raw::dir("r/") },
        Raw::file("r/.wh..wh.plnk", b""),
    ]);
    sandbox.unpack(&tar).unwrap();
    let x = fs::symlink_metadata(sandbox.dest.join("x")).unwrap();
    assert!(x.file_type().is_char_device() && x.rdev() == 0);
    assert!(xattrs(&sandbox.dest.join("r")).is_empty());
    assert_eq!(listing(&sandbox.dest.join("r")), Vec::<String>::new(), "aufs metadata skipped");
}

#[test]
fn dest_must_be_empty() {
    let sandbox = Sandbox::new();
    fs::write(sandbox.dest.join("old"), b"").unwrap();
    assert!(matches!(sandbox.unpack(&raw_tar(&[])), Err(UnpackError::DestNotEmpty { .. })));
}

#[test]
fn truncated_corrupt_and_xz_blobs_fail() {
    let sandbox = Sandbox::new();
    let tar = raw_tar(&[Raw::file("big", &[7u8; 4096])]);
    let result = sandbox.unpack(&tar[..1024]);
    assert!(matches!(result, Err(UnpackError::ReadArchive { .. })), "got {result:?}");

    let sandbox = Sandbox::new();
    let result = sandbox.unpack(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0]);
    assert!(matches!(result, Err(UnpackError::ReadArchive { .. })), "corrupt zstd: {result:?}");

    let sandbox = Sandbox::new();
    let result = sandbox.unpack(&[0xfd, b'7', b'z', b'X', b'Z', 0, 0]);
    assert!(matches!(result, Err(UnpackError::UnsupportedCompression { format: "xz" })));
}
