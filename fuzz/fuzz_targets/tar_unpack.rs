//! Fuzzes layer unpacking (the tar reader, whiteouts, links, devices, xattrs): the input is a
//! layer (plain tar, or gzip/zstd by its magic) unpacked into `root/` inside a fresh temp dir
//! that also holds a canary file beside `root/`. Errors are fine; panics are bugs, and so is
//! anything written outside `root/`, any change to the canary, or a hard link to it.
#![no_main]

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rbuild_exporter::layer::{unpack, UnpackOptions};

/// Every path under `dir` (not following symlinks).
fn listing(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

fuzz_target!(|data: &[u8]| {
    let scratch = tempfile::tempdir().unwrap();
    let root = scratch.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let canary = scratch.path().join("canary");
    std::fs::write(&canary, b"canary").unwrap();
    let outside = |p: &String| p != "root" && !p.starts_with("root/");
    let before = listing(scratch.path()).into_iter().filter(outside).collect::<Vec<_>>();

    let mut opts = UnpackOptions::default();
    // Not as root in a fuzzer: owners are recorded, not applied.
    opts.chown(false);
    let _ = unpack(data, &root, &opts);

    let after = listing(scratch.path()).into_iter().filter(outside).collect::<Vec<_>>();
    assert_eq!(before, after, "the layer wrote outside its root");
    assert_eq!(std::fs::read(&canary).unwrap(), b"canary", "the layer changed a file outside its root");
    // A hard link to the canary would let the layer read or later write a file outside.
    assert_eq!(std::fs::metadata(&canary).unwrap().nlink(), 1, "the layer linked to a file outside its root");
});
