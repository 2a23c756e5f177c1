use super::*;
use crate::copy::FileWriter;
use crate::merged::MergedView;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;
use tar::EntryType;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// One raw tar entry: the name is written byte for byte, so hostile names survive (the tar
/// crate's own path setters refuse `..`).
#[derive(Clone)]
struct E {
    path: &'static str,
    kind: EntryType,
    link: &'static str,
    data: &'static [u8],
    mode: u32,
    uid: u64,
    mtime: u64,
}

fn file(path: &'static str, data: &'static [u8]) -> E {
    E { path, kind: EntryType::Regular, link: "", data, mode: 0o644, uid: 0, mtime: 1_000_000 }
}
fn dir(path: &'static str) -> E {
    E { kind: EntryType::Directory, mode: 0o755, ..file(path, b"") }
}
fn symlink(path: &'static str, target: &'static str) -> E {
    E { kind: EntryType::Symlink, link: target, mode: 0o777, ..file(path, b"") }
}
fn hardlink(path: &'static str, target: &'static str) -> E {
    E { kind: EntryType::Link, link: target, ..file(path, b"") }
}

fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..e.path.len()].copy_from_slice(e.path.as_bytes());
        h.as_old_mut().linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.uid);
        h.set_mtime(e.mtime);
        h.set_size(e.data.len() as u64);
        if matches!(e.kind, EntryType::Char | EntryType::Block) {
            h.set_device_major(0).unwrap();
            h.set_device_minor(0).unwrap();
        }
        h.set_cksum();
        b.append(&h, e.data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn bzip2(data: &[u8]) -> Vec<u8> {
    let mut e = ::bzip2::write::BzEncoder::new(Vec::new(), ::bzip2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A base layer, an empty diff and an `outside` directory that nothing may touch.
struct Fx {
    t: tempfile::TempDir,
    base: PathBuf,
    diff: PathBuf,
}

impl Fx {
    fn new() -> Fx {
        let t = tempfile::tempdir().unwrap();
        let (base, diff) = (t.path().join("base"), t.path().join("diff"));
        for d in [&base, &diff, &t.path().join("outside")] {
            std::fs::create_dir_all(d).unwrap();
        }
        Fx { t, base, diff }
    }

    fn extract_with(&self, bytes: &[u8], dest: &str, limits: ArchiveLimits) -> Result<(), ArchiveError> {
        let path = self.t.path().join("archive");
        std::fs::write(&path, bytes).unwrap();
        let format = detect(&path)?.expect("an archive");
        let view = MergedView::new(vec![self.base.clone()]);
        let w = FileWriter { base: &view, diff: &self.diff, limits };
        w.ensure_dirs(Path::new(dest), None).unwrap();
        extract(&path, format, &w, Path::new(dest), &limits)
    }

    fn extract(&self, bytes: &[u8], dest: &str) -> Result<(), ArchiveError> {
        self.extract_with(bytes, dest, ArchiveLimits::default())
    }

    fn outside_untouched(&self) {
        assert_eq!(std::fs::read_dir(self.t.path().join("outside")).unwrap().count(), 0);
    }
}

#[test]
fn detects_by_content() {
    let t = tempfile::tempdir().unwrap();
    let tarball = tar_of(&[file("a", b"x")]);
    let cases: Vec<(&str, Vec<u8>, Option<Format>)> = vec![
        ("plain", tarball.clone(), Some(Format::Tar)),
        ("gzip", gzip(&tarball), Some(Format::Gzip)),
        ("bzip2", bzip2(&tarball), Some(Format::Bzip2)),
        ("xz", xz(&tarball), Some(Format::Xz)),
        ("text", b"just some text, long enough to not be a header".repeat(20), None),
        ("gzip of text", gzip(b"hello"), None),
        ("empty", Vec::new(), None),
        ("zero blocks only", vec![0u8; 1024], None),
        ("broken gzip", vec![0x1f, 0x8b, 1, 2, 3], None),
    ];
    for (name, bytes, want) in cases {
        let p = t.path().join(name);
        std::fs::write(&p, &bytes).unwrap();
        assert_eq!(detect(&p).unwrap(), want, "{name}");
    }
    let p = t.path().join("zst");
    std::fs::write(&p, [0x28, 0xb5, 0x2f, 0xfd, 0, 0]).unwrap();
    assert!(matches!(detect(&p), Err(ArchiveError::UnsupportedCompression { format: "zstd" })));
}

#[test]
fn every_compression_extracts() {
    crate::testutil::require_root!("extracting with the archive's owners");
    let tarball = tar_of(&[dir("d"), file("d/f", b"content")]);
    for bytes in [tarball.clone(), gzip(&tarball), bzip2(&tarball), xz(&tarball)] {
        let fx = Fx::new();
        fx.extract(&bytes, "dst").unwrap();
        assert_eq!(std::fs::read(fx.diff.join("dst/d/f")).unwrap(), b"content");
    }
}

#[test]
fn keeps_owners_modes_mtimes_and_links_and_whiteout_names_are_files() {
    crate::testutil::require_root!("extracting with the archive's owners");
    let fx = Fx::new();
    let entries = [
        E { mode: 0o750, uid: 1000, mtime: 1_234_567, ..dir("app") },
        E { mode: 0o4755, uid: 1000, mtime: 1_234_000, ..file("app/bin", b"#!/bin/sh\n") },
        symlink("app/link", "bin"),
        hardlink("app/hard", "app/bin"),
        file("app/.wh.keep", b"not a whiteout"),
        file("/abs/x", b"neutralised"),
        E { kind: EntryType::Fifo, mode: 0o600, ..file("app/fifo", b"") },
    ];
    fx.extract(&gzip(&tar_of(&entries)), "opt").unwrap();
    let d = fx.diff.join("opt");
    let app = std::fs::metadata(d.join("app")).unwrap();
    assert_eq!(app.permissions().mode() & 0o7777, 0o750);
    assert_eq!(app.mtime(), 1_234_567, "directory mtimes are set after their contents");
    let bin = std::fs::metadata(d.join("app/bin")).unwrap();
    assert_eq!(bin.permissions().mode() & 0o7777, 0o4755);
    assert_eq!(bin.mtime(), 1_234_000);
    if is_root() {
        assert_eq!((app.uid(), app.gid(), bin.uid()), (1000, 1000, 1000));
    } else {
        eprintln!("skipping owner checks: applying archive owners needs root");
    }
    assert_eq!(std::fs::read_link(d.join("app/link")).unwrap(), Path::new("bin"));
    assert_eq!(std::fs::metadata(d.join("app/hard")).unwrap().ino(), bin.ino());
    assert_eq!(std::fs::read(d.join("app/.wh.keep")).unwrap(), b"not a whiteout");
    assert!(std::fs::symlink_metadata(d.join("app/.wh.keep")).unwrap().is_file());
    assert_eq!(std::fs::read(d.join("abs/x")).unwrap(), b"neutralised");
    assert!(std::fs::symlink_metadata(d.join("app/fifo")).unwrap().file_type().is_fifo());
    fx.outside_untouched();
}

#[test]
fn hostile_archives_are_refused() {
    crate::testutil::require_root!("extracting with the archive's owners");
    type Check = fn(&ArchiveError) -> bool;
    let cases: Vec<(&str, Vec<E>, Check)> = vec![
        ("dotdot", vec![file("../outside/evil", b"x")], |e| matches!(e, ArchiveError::PathEscape { .. })),
        ("deep dotdot", vec![file("a/../../outside/evil", b"x")], |e| matches!(e, ArchiveError::PathEscape { .. })),
        ("absolute symlink parent", vec![symlink("l", "/outside"), file("l/evil", b"x")], |e| {
            matches!(e, ArchiveError::SymlinkParent { .. })
        }),
        ("relative symlink parent", vec![symlink("l", "../../outside"), file("l/evil", b"x")], |e| {
            matches!(e, ArchiveError::SymlinkParent { .. })
        }),
        ("symlink parent via a directory entry", vec![symlink("l", "/outside"), dir("l/sub")], |e| {
            matches!(e, ArchiveError::SymlinkParent { .. })
        }),
        ("hardlink dotdot", vec![hardlink("h", "../outside/x")], |e| matches!(e, ArchiveError::HardlinkOutside { .. })),
        ("hardlink through a planted symlink", vec![symlink("l", "/etc"), hardlink("h", "l/passwd")], |e| {
            matches!(e, ArchiveError::HardlinkOutside { .. })
        }),
        ("hardlink to nothing", vec![hardlink("h", "missing")], |e| {
            matches!(e, ArchiveError::HardlinkTargetMissing { .. })
        }),
        ("hardlink to a directory", vec![dir("d"), hardlink("h", "d")], |e| {
            matches!(e, ArchiveError::HardlinkToDirectory { .. })
        }),
        ("whiteout device", vec![E { kind: EntryType::Char, ..file("w", b"") }], |e| {
            matches!(e, ArchiveError::UnsupportedEntry { .. })
        }),
    ];
    for (name, entries, check) in cases {
        let fx = Fx::new();
        let err = fx.extract(&tar_of(&entries), "dst").expect_err(name);
        assert!(check(&err), "{name}: {err:?}");
        fx.outside_untouched();
        assert!(!Path::new("/etc/passwd.rbuild-test").exists());
    }
}

#[test]
fn image_symlinks_are_followed_inside_the_destination_only() {
    crate::testutil::require_root!("extracting with the archive's owners");
    let fx = Fx::new();
    std::fs::create_dir_all(fx.base.join("opt/app/real")).unwrap();
    std::fs::set_permissions(fx.base.join("opt/app/real"), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink("real", fx.base.join("opt/app/lib")).unwrap();
    std::os::unix::fs::symlink("../../../../outside", fx.base.join("opt/app/up")).unwrap();
    fx.extract(&tar_of(&[file("lib/x", b"1"), file("up/y", b"2")]), "opt/app").unwrap();
    assert_eq!(std::fs::read(fx.diff.join("opt/app/real/x")).unwrap(), b"1");
    // `..` stops at the destination, as in Docker's chrooted untar.
    assert_eq!(std::fs::read(fx.diff.join("opt/app/outside/y")).unwrap(), b"2");
    // The image's directory is copied up with its attributes.
    let real = std::fs::metadata(fx.diff.join("opt/app/real")).unwrap();
    assert_eq!(real.permissions().mode() & 0o7777, 0o700);
    fx.outside_untouched();
}

#[test]
fn later_entries_replace_earlier_ones() {
    crate::testutil::require_root!("extracting with the archive's owners");
    let fx = Fx::new();
    let entries =
        [dir("d"), file("d/f", b"1"), file("d", b"now a file"), symlink("s", "x"), dir("s"), file("s/f", b"2")];
    fx.extract(&tar_of(&entries), "dst").unwrap();
    assert_eq!(std::fs::read(fx.diff.join("dst/d")).unwrap(), b"now a file");
    // A directory replaced the planted symlink, so writing below it is fine.
    assert_eq!(std::fs::read(fx.diff.join("dst/s/f")).unwrap(), b"2");
}

#[test]
fn decompression_bombs_are_refused() {
    crate::testutil::require_root!("extracting with the archive's owners");
    static ZEROS: [u8; 4 << 20] = [0; 4 << 20];
    let fx = Fx::new();
    let bomb = gzip(&tar_of(&[file("zeros", &ZEROS)]));
    assert!(bomb.len() < 64 << 10, "{}", bomb.len());
    let limits = ArchiveLimits { max_ratio: 10, ratio_floor: 1 << 20, ..ArchiveLimits::default() };
    let err = fx.extract_with(&bomb, "dst", limits).unwrap_err();
    assert!(matches!(err, ArchiveError::TooLarge { what: "bytes written", .. }), "{err:?}");
    assert!(err.to_string().contains("decompression bomb"), "{err}");
    // The same archive is fine under the defaults.
    let fx = Fx::new();
    fx.extract(&bomb, "dst").unwrap();
    let fx = Fx::new();
    let many = tar_of(&[file("a", b""), file("b", b""), file("c", b"")]);
    let limits = ArchiveLimits { max_entries: 2, ..ArchiveLimits::default() };
    assert!(matches!(fx.extract_with(&many, "dst", limits), Err(ArchiveError::TooLarge { what: "entries", .. })));
}
