//! `layer::pack` against a real diff directory, read back with the tar crate.

mod common;

use std::io::Read;

use common::*;
use rbuild_exporter::layer::{pack, Compression, PackOptions, PackedLayer};
use rbuild_exporter::sha256_digest;
use tar::EntryType;

fn pack_vec(dir: &std::path::Path, opts: &PackOptions) -> (PackedLayer, Vec<u8>) {
    let mut out = Vec::new();
    let layer = pack(dir, &mut out, opts).unwrap();
    (layer, out)
}

fn plain() -> PackOptions {
    let mut opts = PackOptions::default();
    opts.compression(Compression::None);
    opts
}

#[derive(Debug)]
struct Seen {
    path: String,
    kind: EntryType,
    mode: u32,
    uid: u64,
    link: Option<String>,
    mtime: u64,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn read_back(bytes: &[u8]) -> Vec<Seen> {
    let mut archive = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut xattrs = Vec::new();
        if let Some(pax) = entry.pax_extensions().unwrap() {
            for r in pax {
                let r = r.unwrap();
                if let Some(name) = r.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.push((name.to_owned(), r.value_bytes().to_vec()));
                }
            }
        }
        let h = entry.header();
        out.push(Seen {
            path: String::from_utf8(entry.path_bytes().into_owned()).unwrap(),
            kind: h.entry_type(),
            mode: h.mode().unwrap(),
            uid: h.uid().unwrap(),
            link: entry.link_name_bytes().map(|l| String::from_utf8(l.into_owned()).unwrap()),
            mtime: h.mtime().unwrap(),
            xattrs,
        });
    }
    out
}

#[test]
fn entries_order_modes_links_and_whiteouts() {
    let tmp = tempfile::tempdir().unwrap();
    let diff = tmp.path().join("diff");
    build_diff(&diff);
    let (layer, bytes) = pack_vec(&diff, &plain());
    let seen = read_back(&bytes);
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();

    let mut want = vec![
        "bin/",
        "bin/app",
        "bin/app-link",
        "etc/",
        "etc/passwd",
        "fifo",
        "file-with-xattr",
        "lnk",
        "tmp/",
        "usr/",
        "usr/bin/",
        "usr/bin/su",
    ];
    if is_root() {
        want.insert(0, ".wh.removed");
        let at = want.iter().position(|p| *p == "tmp/").unwrap();
        want.splice(at..at, ["opq/", "opq/.wh..wh..opq", "opq/keep"]);
    } else {
        eprintln!("skipping whiteout/opaque/owner checks: not root");
    }
    assert_eq!(paths, want);
    assert_eq!(layer.entries, want.len());
    assert_eq!(layer.media_type.to_string(), "application/vnd.oci.image.layer.v1.tar");

    let get = |p: &str| seen.iter().find(|s| s.path == p).unwrap();
    assert_eq!(get("bin/").kind, EntryType::Directory);
    assert_eq!(get("bin/app").mode, 0o755);
    assert_eq!(get("bin/app-link").kind, EntryType::Link);
    assert_eq!(get("bin/app-link").link.as_deref(), Some("bin/app"));
    assert_eq!(get("usr/bin/su").mode, 0o4755);
    assert_eq!(get("tmp/").mode, 0o1777);
    assert_eq!(get("lnk").kind, EntryType::Symlink);
    assert_eq!(get("lnk").link.as_deref(), Some("etc/passwd"));
    assert_eq!(get("fifo").kind, EntryType::Fifo);
    assert_eq!(get("fifo").mode, 0o640);
    assert_eq!(get("file-with-xattr").xattrs, vec![("user.rbuild.test".to_owned(), b"v\x00al".to_vec())]);
    assert!(seen.iter().all(|s| s.mtime >= 1_600_000_000), "mtimes kept");
    if is_root() {
        let wh = get(".wh.removed");
        assert_eq!((wh.kind, wh.mode, wh.uid), (EntryType::Regular, 0, 0));
        assert_eq!(get("opq/.wh..wh..opq").kind, EntryType::Regular);
        assert!(get("opq/").xattrs.is_empty(), "overlay xattrs are not copied");
        assert_eq!(get("etc/passwd").uid, 1234);
    }
}

#[test]
fn deterministic_and_gzip_matches_plain() {
    let tmp = tempfile::tempdir().unwrap();
    let diff = tmp.path().join("diff");
    build_diff(&diff);
    let (a, a_bytes) = pack_vec(&diff, &plain());
    let (b, b_bytes) = pack_vec(&diff, &plain());
    assert_eq!(a, b);
    assert_eq!(a_bytes, b_bytes);
    assert_eq!(a.diff_id, a.digest, "uncompressed: blob digest is the diff id");
    assert_eq!(a.digest, sha256_digest(&a_bytes));
    assert_eq!(a.size, a_bytes.len() as u64);

    let gz = PackOptions::default();
    let (g1, g1_bytes) = pack_vec(&diff, &gz);
    let (g2, _) = pack_vec(&diff, &gz);
    assert_eq!(g1, g2, "gzip output is deterministic");
    assert_eq!(g1.media_type.to_string(), "application/vnd.oci.image.layer.v1.tar+gzip");
    assert_eq!(g1.diff_id, a.diff_id);
    assert_eq!(g1.digest, sha256_digest(&g1_bytes));
    let mut unzipped = Vec::new();
    flate2::read::GzDecoder::new(&g1_bytes[..]).read_to_end(&mut unzipped).unwrap();
    assert_eq!(unzipped, a_bytes);
}

#[test]
fn source_date_epoch_clamps_only_later_mtimes() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("old"), b"").unwrap();
    std::fs::write(tmp.path().join("new"), b"").unwrap();
    set_mtime(&tmp.path().join("old"), 100);
    set_mtime(&tmp.path().join("new"), 2_000_000_000);
    let mut opts = plain();
    opts.source_date_epoch(Some(1_000));
    let (_, bytes) = pack_vec(tmp.path(), &opts);
    let times: Vec<(String, u64)> = read_back(&bytes).into_iter().map(|s| (s.path, s.mtime)).collect();
    assert_eq!(times, vec![("new".to_owned(), 1_000), ("old".to_owned(), 100)]);
}

#[test]
fn empty_diff_reports_no_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let (layer, bytes) = pack_vec(tmp.path(), &plain());
    assert!(layer.is_empty());
    assert_eq!(bytes, vec![0u8; 1024]);
    assert_eq!(layer.diff_id, sha256_digest(&[0u8; 1024]));
}

#[test]
fn long_names_use_pax() {
    let tmp = tempfile::tempdir().unwrap();
    let deep = tmp.path().join("d".repeat(120)).join("e".repeat(120));
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("f".repeat(200)), b"long").unwrap();
    let (_, bytes) = pack_vec(tmp.path(), &plain());
    let seen = read_back(&bytes);
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2].path, format!("{}/{}/{}", "d".repeat(120), "e".repeat(120), "f".repeat(200)));
}
