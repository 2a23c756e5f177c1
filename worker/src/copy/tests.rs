use super::*;
use crate::context::ContextDir;
use rbuild_solver::ir::{Chown, Input, OpId};
use std::os::unix::fs::{MetadataExt, PermissionsExt};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

struct Fx {
    _t: tempfile::TempDir,
    ctx: ContextDir,
    base: PathBuf,
    diff: PathBuf,
}

impl Fx {
    fn new() -> Fx {
        let t = tempfile::tempdir().unwrap();
        let (ctx, base, diff) = (t.path().join("ctx"), t.path().join("base"), t.path().join("diff"));
        for d in [&ctx, &base, &diff] {
            std::fs::create_dir_all(d).unwrap();
        }
        Fx { _t: t, ctx: ContextDir { root: ctx, ignore: IgnoreMatcher::default() }, base, diff }
    }

    fn write(&self, rel: &str, data: &str) {
        let p = self.ctx.root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    fn apply(&self, action: &FileAction) -> Result<(), WorkerError> {
        let view = MergedView::new(vec![self.base.clone()]);
        let w = FileWriter { base: &view, diff: &self.diff, limits: ArchiveLimits::default() };
        w.apply(action, Some(&CopySource::Context { dir: &self.ctx, walk: None }))
    }

    /// Every path in the diff, sorted.
    fn listing(&self, under: &str) -> Vec<String> {
        let root = self.diff.join(under);
        let mut out: Vec<String> = walkdir::WalkDir::new(&root)
            .min_depth(1)
            .into_iter()
            .map(|e| e.unwrap().path().strip_prefix(&root).unwrap().display().to_string())
            .collect();
        out.sort();
        out
    }
}

fn copy(src: &[&str], dest: &str) -> FileAction {
    FileAction::Copy {
        src: Input::of(OpId([0; 32])),
        src_paths: src.iter().map(|s| s.to_string()).collect(),
        dest: dest.into(),
        chown: None,
        chmod: None,
        exclude: Vec::new(),
        parents: false,
        unpack_archives: false,
    }
}

fn with(mut a: FileAction, f: impl FnOnce(&mut Vec<String>, &mut bool, &mut bool, &mut Option<Chown>)) -> FileAction {
    if let FileAction::Copy { exclude, parents, unpack_archives, chown, .. } = &mut a {
        f(exclude, parents, unpack_archives, chown);
    }
    a
}

fn excluding(a: FileAction, patterns: &[&str]) -> FileAction {
    with(a, |e, _, _, _| *e = patterns.iter().map(|s| s.to_string()).collect())
}

#[test]
fn exclude_patterns_are_relative_to_each_source() {
    crate::testutil::require_root!("giving copied files their owners (root for context files)");
    let fx = Fx::new();
    for f in ["a.txt", "b.go", "sub/c.txt", "sub/d.go", "docs/keep.md", "docs/other.md"] {
        fx.write(f, f);
    }
    fx.apply(&excluding(copy(&["."], "/one/"), &["*.txt", "sub/*.go"])).unwrap();
    assert_eq!(fx.listing("one"), ["b.go", "docs", "docs/keep.md", "docs/other.md", "sub", "sub/c.txt"]);
    // An excluded directory is walked for what `!` re-includes, and created only for it.
    fx.apply(&excluding(copy(&["."], "/two/"), &["docs", "!docs/keep.md", "sub"])).unwrap();
    assert_eq!(fx.listing("two"), ["a.txt", "b.go", "docs", "docs/keep.md"]);
    // Relative to the source: `sub/` copies sub's contents, so `*.go` matches `d.go`.
    fx.apply(&excluding(copy(&["sub"], "/three/"), &["*.go"])).unwrap();
    assert_eq!(fx.listing("three"), ["c.txt"]);
    let bad = fx.apply(&excluding(copy(&["."], "/x/"), &["[unclosed"])).unwrap_err();
    assert!(bad.to_string().contains("--exclude"), "{bad}");
}

#[test]
fn parents_keep_source_directories() {
    crate::testutil::require_root!("giving copied files their owners (root for context files)");
    let fx = Fx::new();
    fx.write("a/b/c.txt", "1");
    fx.write("a/x/c.txt", "2");
    fx.write("a/x/skip.txt", "3");
    std::fs::set_permissions(fx.ctx.root.join("a/b"), std::fs::Permissions::from_mode(0o750)).unwrap();
    let parents = |a: FileAction| with(a, |_, p, _, _| *p = true);
    fx.apply(&parents(copy(&["a/./b/c.txt"], "/pivot"))).unwrap();
    assert_eq!(fx.listing("pivot"), ["b", "b/c.txt"]);
    let b = std::fs::metadata(fx.diff.join("pivot/b")).unwrap();
    assert_eq!(b.permissions().mode() & 0o7777, 0o750, "parent directories are copied from the source");
    fx.apply(&parents(copy(&["a/*/c.txt"], "/all"))).unwrap();
    assert_eq!(fx.listing("all"), ["a", "a/b", "a/b/c.txt", "a/x", "a/x/c.txt"]);
    // A directory match is copied as itself; excludes are relative to the pivot.
    fx.apply(&excluding(parents(copy(&["a/./x"], "/dir")), &["x/skip.txt"])).unwrap();
    assert_eq!(fx.listing("dir"), ["x", "x/c.txt"]);
    assert!(matches!(fx.apply(&parents(copy(&["a/./nope"], "/n"))), Err(WorkerError::SourceNotFound { .. })));
}

#[test]
fn mkfile_writes_data_mode_owner_and_parents() {
    crate::testutil::require_root!("giving copied files their owners (root for context files)");
    let fx = Fx::new();
    let chown = is_root().then(|| Chown { user: "1001".into(), group: Some("1002".into()) });
    let mk = FileAction::Mkfile { path: "/etc/app/conf".into(), data: b"key=value\n".to_vec(), mode: 0o640, chown };
    fx.apply(&mk).unwrap();
    let p = fx.diff.join("etc/app/conf");
    assert_eq!(std::fs::read(&p).unwrap(), b"key=value\n");
    let md = std::fs::metadata(&p).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o640);
    if is_root() {
        assert_eq!((md.uid(), md.gid()), (1001, 1002));
        assert_eq!(std::fs::metadata(fx.diff.join("etc/app")).unwrap().uid(), 1001, "created parents get the owner");
    } else {
        eprintln!("skipping owner checks: chown needs root");
    }
    std::fs::create_dir_all(fx.base.join("data")).unwrap();
    let onto_dir = FileAction::Mkfile { path: "/data".into(), data: vec![], mode: 0o644, chown: None };
    assert!(matches!(fx.apply(&onto_dir), Err(WorkerError::IsADirectory { .. })));
}

fn tar_gz(entries: &[(&str, &[u8], u64)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (path, data, uid) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(*uid);
        h.set_gid(*uid);
        h.set_mtime(1_000);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

#[test]
fn add_extracts_local_archives_and_copies_other_files() {
    crate::testutil::require_root!("giving copied files their owners (root for context files)");
    let fx = Fx::new();
    std::fs::write(fx.ctx.root.join("app.tar.gz"), tar_gz(&[("bin/tool", b"tool", 1000)])).unwrap();
    fx.write("notes.txt", "plain");
    let chown = is_root().then(|| Chown { user: "7".into(), group: Some("8".into()) });
    let add =
        |src: &str, dest: &str, unpack: bool| with(copy(&[src], dest), |_, _, u, c| (*u, *c) = (unpack, chown.clone()));
    fx.apply(&add("app.tar.gz", "/opt/app", true)).unwrap();
    assert_eq!(std::fs::read(fx.diff.join("opt/app/bin/tool")).unwrap(), b"tool");
    if is_root() {
        let dest = std::fs::metadata(fx.diff.join("opt/app")).unwrap();
        assert_eq!((dest.uid(), dest.gid()), (7, 8), "the directory ADD creates gets --chown");
        let tool = std::fs::metadata(fx.diff.join("opt/app/bin/tool")).unwrap();
        assert_eq!(tool.uid(), 1000, "entries keep the archive's owner");
    } else {
        eprintln!("skipping owner checks: chown needs root");
    }
    fx.apply(&add("notes.txt", "/opt/notes.txt", true)).unwrap();
    assert_eq!(std::fs::read(fx.diff.join("opt/notes.txt")).unwrap(), b"plain");
    // COPY (no unpacking) copies the archive itself.
    fx.apply(&add("app.tar.gz", "/copied/", false)).unwrap();
    assert_eq!(fx.listing("copied"), ["app.tar.gz"]);
}

/// Packs `dir` as a plain tar.
fn tar_of(dir: &Path) -> Vec<u8> {
    let mut opts = rbuild_exporter::layer::PackOptions::default();
    opts.compression(rbuild_exporter::layer::Compression::None);
    let mut out = Vec::new();
    rbuild_exporter::layer::pack(dir, &mut out, &opts).unwrap();
    out
}

#[test]
fn a_second_copy_links_unchanged_files_and_packs_the_same() {
    crate::testutil::require_root!("giving copied files their owners (root for context files)");
    let t = tempfile::tempdir().unwrap();
    // The store layout reuse relies on: <root>/context-index/<id>, <root>/snapshots/<id>/diff.
    let (ctx_dir, store) = (t.path().join("ctx"), t.path().join("store"));
    let index = store.join("context-index").join("ctx");
    let diff1 = store.join("snapshots/one/diff");
    let (diff2, fresh, base) = (t.path().join("two"), t.path().join("fresh"), t.path().join("base"));
    for d in [&ctx_dir, &diff1, &diff2, &fresh, &base] {
        std::fs::create_dir_all(d).unwrap();
    }
    let ctx = ContextDir { root: ctx_dir.clone(), ignore: IgnoreMatcher::default() };
    for (f, data) in [("a.txt", "a"), ("sub/b.txt", "b"), ("sub/same.txt", "b"), ("c.txt", "c"), ("d.txt", "d")] {
        let p = ctx_dir.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
        crate::fsmeta::set_mtime(&p, (1_600_000_000, 5)).unwrap();
    }
    let view = MergedView::new(vec![base.clone()]);
    let run = |diff: &Path| {
        let walk = ctx.entries(Some(&index)).unwrap().settled();
        let w = FileWriter { base: &view, diff, limits: ArchiveLimits::default() };
        w.apply(&copy(&["."], "/app/"), Some(&CopySource::Context { dir: &ctx, walk: Some(&walk) })).unwrap();
    };
    run(&diff1);
    // One file changes content, one only its mtime.
    std::fs::write(ctx_dir.join("c.txt"), "changed").unwrap();
    crate::fsmeta::set_mtime(&ctx_dir.join("c.txt"), (1_600_000_000, 5)).unwrap();
    crate::fsmeta::set_mtime(&ctx_dir.join("d.txt"), (1_600_000_001, 0)).unwrap();
    run(&diff2);
    let ino = |d: &Path, f: &str| std::fs::symlink_metadata(d.join("app").join(f)).unwrap().ino();
    for f in ["a.txt", "sub/b.txt", "sub/same.txt"] {
        assert_eq!(ino(&diff1, f), ino(&diff2, f), "{f} is linked");
    }
    assert_ne!(ino(&diff1, "c.txt"), ino(&diff2, "c.txt"), "changed content is copied");
    assert_ne!(ino(&diff1, "d.txt"), ino(&diff2, "d.txt"), "a changed mtime is copied");
    assert_eq!(std::fs::read(diff2.join("app/c.txt")).unwrap(), b"changed");
    assert_eq!(std::fs::read(diff1.join("app/c.txt")).unwrap(), b"c", "the old snapshot is untouched");
    // The layer is exactly what a plain copy gives: sharing inodes with another snapshot
    // never turns into tar hardlinks.
    let w = FileWriter { base: &view, diff: &fresh, limits: ArchiveLimits::default() };
    w.apply(&copy(&["."], "/app/"), Some(&CopySource::Context { dir: &ctx, walk: None })).unwrap();
    let (linked, plain) = (tar_of(&diff2), tar_of(&fresh));
    assert!(linked == plain, "a linked copy packs to the same bytes");
    let mut ar = tar::Archive::new(&linked[..]);
    assert!(ar.entries().unwrap().all(|e| e.unwrap().header().entry_type() != tar::EntryType::Link));
}
