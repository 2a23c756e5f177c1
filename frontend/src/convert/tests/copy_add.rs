//! `COPY` and `ADD` lowering: exact ops, history and errors.

use rbuild_solver::ir::{Chown, FileOp, Input, MergeOp};

use super::*;

const SUM: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// The `Copy` actions of a file op, as `(src op kind, src_paths, dest)`.
fn copies(def: &BuildDefinition, op: &Op) -> Vec<(String, Vec<String>, String)> {
    let Op::File(f) = op else { panic!("not a file op: {op:?}") };
    f.actions
        .iter()
        .filter_map(|a| match a {
            FileAction::Copy { src, src_paths, dest, .. } => {
                let kind = match op_of(def, src.op) {
                    Op::Source(SourceOp::Local { .. }) => "context".to_owned(),
                    Op::Source(SourceOp::Http { url, .. }) => format!("http {url}"),
                    Op::Source(SourceOp::Git { remote, .. }) => format!("git {remote}"),
                    Op::Source(SourceOp::Image { reference, .. }) => format!("image {reference}"),
                    Op::File(FileOp { base: None, actions }) => match actions.as_slice() {
                        [FileAction::Mkfile { path, .. }] => format!("mkfile {path}"),
                        _ => "file".to_owned(),
                    },
                    other => format!("{other:?}"),
                };
                Some((kind, src_paths.clone(), dest.clone()))
            }
            _ => None,
        })
        .collect()
}

fn copy_action(op: &Op) -> FileAction {
    let Op::File(f) = op else { panic!("not a file op: {op:?}") };
    f.actions.first().cloned().expect("an action")
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn copy_link_is_a_merge_of_a_layer_made_on_an_empty_tree() {
    let def = conv("FROM busybox\nCOPY --link --chown=1:2 a b /dst/\n");
    let Op::Merge(MergeOp { inputs }) = target_op(&def) else { panic!("{:?}", target_op(&def)) };
    let image = def.graph.topological().find(|(_, op)| matches!(op, Op::Source(SourceOp::Image { .. }))).unwrap().0;
    assert_eq!(inputs[0], Input::of(image));
    let copy = op_of(&def, inputs[1].op);
    let Op::File(FileOp { base: None, .. }) = &copy else { panic!("{copy:?}") };
    assert_eq!(copies(&def, &copy), [("context".to_owned(), strings(&["a", "b"]), "/dst/".to_owned())]);
    let FileAction::Copy { chown, .. } = copy_action(&copy) else { panic!() };
    assert_eq!(chown, Some(Chown { user: "1".into(), group: Some("2".into()) }));
    // The layer is the copy's, the stage continues from the merge.
    assert_eq!(def.history[0].layer_op, Some(inputs[1].op));
    assert_eq!(history(&def), ["COPY --chown=1:2 a b /dst/ # buildkit"]);
    assert_eq!(
        names(&def)[2..],
        [
            "[2/2] COPY --link --chown=1:2 a b /dst/".to_owned(),
            "[2/2] LINK COPY --link --chown=1:2 a b /dst/".to_owned()
        ]
    );
}

#[test]
fn copy_link_variants() {
    // On scratch there is nothing to merge with.
    let def = conv("FROM scratch\nCOPY --link a /a\n");
    assert!(matches!(target_op(&def), Op::File(FileOp { base: None, .. })));
    // With --chmod BuildKit does not link.
    let def = conv("FROM busybox\nCOPY --link --chmod=600 a /a\n");
    assert!(matches!(target_op(&def), Op::File(FileOp { base: Some(_), .. })));
    // A link after other steps merges onto the stage's current filesystem.
    let def = conv("FROM busybox\nRUN x\nCOPY --link a /a\nRUN y\n");
    let runs = execs(&def);
    let Some(Op::Merge(m)) = runs[1].rootfs.map(|r| op_of(&def, r.op)) else { panic!() };
    assert_eq!(m.inputs[0].op, def.history[0].layer_op.unwrap());
    // Numeric owners are fine; names need /etc/passwd, which an empty tree lacks.
    conv("FROM busybox\nCOPY --link --chown=0 a /a\n");
    conv("FROM busybox\nCOPY --link --chmod=644 --chown=app a /a\n");
    fails!(
        "FROM busybox\nARG U=app\nCOPY --link --chown=$U:1 a /a\n",
        "--chown=app:1 cannot be used with --link",
        Some(3)
    );
    fails!("FROM busybox\nADD --link --chown=1:staff a /a\n", "cannot be used with --link", Some(2));
}

#[test]
fn copy_parents_and_exclude() {
    let def = conv("FROM busybox\nCOPY --parents --exclude=*.md --exclude=tmp/ src/./app/*.go docs /dst/\n");
    let FileAction::Copy { src_paths, dest, parents, exclude, unpack_archives, .. } = copy_action(&last_layer_op(&def))
    else {
        panic!()
    };
    assert_eq!((src_paths, dest), (strings(&["src/./app/*.go", "docs"]), "/dst/".to_owned()));
    assert!(parents && !unpack_archives);
    assert_eq!(exclude, ["*.md", "tmp/"]);
    assert_eq!(history(&def), ["COPY --parents src/./app/*.go docs /dst/ # buildkit"]);
    // --exclude is not variable-expanded (as BuildKit).
    let def = conv("FROM busybox\nARG X=y\nCOPY --exclude=$X a /a\n");
    let FileAction::Copy { exclude, .. } = copy_action(&last_layer_op(&def)) else { panic!() };
    assert_eq!(exclude, ["$X"]);
}

#[test]
fn copy_heredoc_is_a_mkfile_copied_to_the_destination() {
    let def = conv("FROM busybox\nENV WHO=world\nCOPY <<EOF /hello\nhi $WHO\nEOF\nCOPY <<'RAW' a <<-X /many/\n$WHO\nRAW\n\tx\n\tX\n");
    let mkfiles: Vec<(String, String, u32)> = def
        .graph
        .topological()
        .filter_map(|(id, op)| match op {
            Op::File(FileOp { base: None, actions }) => match actions.as_slice() {
                [FileAction::Mkfile { path, data, mode, chown: None }] => {
                    assert_eq!(def.graph.meta(&id).unwrap().name, "[internal] preparing inline document");
                    Some((path.clone(), String::from_utf8(data.clone()).unwrap(), *mode))
                }
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(
        mkfiles,
        [
            ("/EOF".to_owned(), "hi world\n".to_owned(), 0o644),
            ("/RAW".to_owned(), "$WHO\n".to_owned(), 0o644),
            ("/X".to_owned(), "x\n".to_owned(), 0o644),
        ]
    );
    let layers: Vec<Op> = def.history.iter().filter_map(|h| h.layer_op).map(|id| op_of(&def, id)).collect();
    assert_eq!(copies(&def, &layers[0]), [("mkfile /EOF".to_owned(), strings(&["/EOF"]), "/hello".to_owned())]);
    assert_eq!(
        copies(&def, &layers[1]),
        [
            ("context".to_owned(), strings(&["a"]), "/many/".to_owned()),
            ("mkfile /RAW".to_owned(), strings(&["/RAW"]), "/many/".to_owned()),
            ("mkfile /X".to_owned(), strings(&["/X"]), "/many/".to_owned()),
        ]
    );
    assert_eq!(history(&def)[1..], ["COPY <<EOF /hello # buildkit", "COPY a <<RAW <<X /many/ # buildkit"]);
    // Several sources make the destination a directory.
    let def = conv("FROM busybox\nCOPY a <<EOF /d\nx\nEOF\n");
    assert!(copies(&def, &last_layer_op(&def)).iter().all(|(_, _, d)| d == "/d/"));
}

#[test]
fn copy_rejects_remote_sources() {
    fails!("FROM busybox\nCOPY https://example.com/a /a", "source can't be a URL for COPY", Some(2));
    fails!("FROM busybox\nCOPY https://example.com/r.git /a", "source can't be a git ref for COPY", Some(2));
    fails!("FROM busybox\nCOPY git@example.com:r.git /a", "source can't be a git ref for COPY", Some(2));
    fails!("FROM busybox\nCOPY --checksum=x a /a", "unknown flag: --checksum", Some(2));
}

#[test]
fn add_local_sources_extract_archives() {
    let cases: &[(&str, &[&str], &str, bool)] = &[
        ("ADD app.tar.gz /opt/", &["app.tar.gz"], "/opt/", true),
        ("ADD --unpack=false app.tar.gz /opt/", &["app.tar.gz"], "/opt/", false),
        ("WORKDIR /w\nADD a b ./", &["a", "b"], "/w/", true),
        ("ADD github.com/moby/buildkit /src", &["github.com/moby/buildkit"], "/src", true),
    ];
    for (step, paths, want_dest, want_unpack) in cases {
        let src = format!("FROM busybox\n{step}\n");
        let def = conv(&src);
        let FileAction::Copy { src: input, src_paths, dest, unpack_archives, parents, .. } =
            copy_action(&last_layer_op(&def))
        else {
            panic!()
        };
        assert!(matches!(op_of(&def, input.op), Op::Source(SourceOp::Local { .. })), "{src}");
        assert_eq!(
            (src_paths, dest.as_str(), unpack_archives, parents),
            (strings(paths), *want_dest, *want_unpack, false),
            "{src}"
        );
    }
    let def = conv("FROM busybox\nADD --chown=1:2 --chmod=600 a /b\n");
    assert_eq!(history(&def), ["ADD --chown=1:2 --chmod=600 a /b # buildkit"]);
    assert_eq!(names(&def)[2], "[2/2] ADD --chown=1:2 --chmod=600 a /b");
    let FileAction::Copy { chmod, .. } = copy_action(&last_layer_op(&def)) else { panic!() };
    assert_eq!(chmod, Some(0o600));
}

#[test]
fn add_urls_download_then_copy() {
    type Case = (&'static str, &'static str, Option<&'static str>, &'static str, &'static str, bool);
    let cases: &[Case] = &[
        (
            "ADD https://example.com/a/file.tgz?x=1 /d/",
            "https://example.com/a/file.tgz?x=1",
            None,
            "file.tgz",
            "/d/",
            false,
        ),
        ("ADD http://example.com /d/", "http://example.com", None, "__unnamed__", "/d/", false),
        ("ADD --unpack https://e.io/x.tar /x/", "https://e.io/x.tar", None, "x.tar", "/x/", true),
    ];
    for (step, want_url, want_sum, want_name, want_dest, want_unpack) in cases {
        let def = conv(&format!("FROM busybox\n{step}\n"));
        let FileAction::Copy { src, src_paths, dest, unpack_archives, .. } = copy_action(&last_layer_op(&def)) else {
            panic!()
        };
        let Op::Source(SourceOp::Http { url, checksum, filename }) = op_of(&def, src.op) else { panic!("{step}") };
        assert_eq!(
            (url.as_str(), checksum.as_deref(), filename.as_str()),
            (*want_url, *want_sum, *want_name),
            "{step}"
        );
        assert_eq!(
            (src_paths, dest.as_str(), unpack_archives),
            (strings(&[want_name]), *want_dest, *want_unpack),
            "{step}"
        );
        // The download vertex carries the step's name.
        assert_eq!(def.graph.meta(&src.op).unwrap().name, format!("[2/2] {step}"));
    }
    let def = conv(&format!("FROM busybox\nARG SUM={SUM}\nADD --checksum=$SUM https://e.io/f /f\n"));
    let Some(Op::Source(SourceOp::Http { checksum, .. })) =
        def.graph.topological().map(|(_, op)| op.clone()).find(|op| matches!(op, Op::Source(SourceOp::Http { .. })))
    else {
        panic!()
    };
    assert_eq!(checksum.as_deref(), Some(SUM));
    // Mixed sources keep their order and make the destination a directory.
    let def = conv("FROM busybox\nADD https://e.io/a.txt b /d\n");
    assert_eq!(
        copies(&def, &last_layer_op(&def)),
        [
            ("http https://e.io/a.txt".to_owned(), strings(&["a.txt"]), "/d/".to_owned()),
            ("context".to_owned(), strings(&["b"]), "/d/".to_owned())
        ]
    );
    fails!("FROM busybox\nADD --checksum=sha256:00 https://e.io/f /f", "invalid checksum digest length", Some(2));
    fails!(
        &format!("FROM busybox\nADD --checksum={SUM} a /f"),
        "checksum can't be specified for non-HTTP sources",
        Some(2)
    );
    fails!(
        &format!("FROM busybox\nADD --checksum={SUM} https://e.io/a https://e.io/b /f/"),
        "checksum can't be specified for multiple sources",
        Some(2)
    );
}

#[test]
fn add_git_checks_out_then_copies_the_root() {
    type Case = (&'static str, &'static str, Option<&'static str>, Option<&'static str>, bool);
    let cases: &[Case] = &[
        ("ADD https://github.com/moby/buildkit.git /src", "https://github.com/moby/buildkit.git", None, None, false),
        (
            "ADD --keep-git-dir https://github.com/moby/buildkit.git#v0.13.0:frontend /src",
            "https://github.com/moby/buildkit.git",
            Some("v0.13.0"),
            Some("frontend"),
            true,
        ),
        (
            "ADD git@github.com:moby/buildkit.git#main /src",
            "git@github.com:moby/buildkit.git",
            Some("main"),
            None,
            false,
        ),
        (
            "ADD ssh://git@host/r.git?branch=dev&keep-git-dir=true /src",
            "ssh://git@host/r.git",
            Some("refs/heads/dev"),
            None,
            true,
        ),
    ];
    for (step, want_remote, want_ref, want_subdir, want_keep) in cases {
        let def = conv(&format!("FROM busybox\n{step}\n"));
        let FileAction::Copy { src, src_paths, dest, .. } = copy_action(&last_layer_op(&def)) else { panic!() };
        let Op::Source(SourceOp::Git { remote, reference, subdir, keep_git_dir }) = op_of(&def, src.op) else {
            panic!("{step}")
        };
        assert_eq!(
            (remote.as_str(), reference.as_deref(), subdir.as_deref(), keep_git_dir),
            (*want_remote, *want_ref, *want_subdir, *want_keep),
            "{step}"
        );
        assert_eq!((src_paths, dest.as_str()), (strings(&["/"]), "/src"), "{step}");
    }
    fails!(
        "FROM busybox\nADD --keep-git-dir=false https://h/r.git?keep-git-dir=1 /s",
        "inconsistent keep-git-dir configuration",
        Some(2)
    );
    fails!("FROM busybox\nADD https://h/r.git?bogus=1 /s", "unexpected query \"bogus\"", Some(2));
    fails!(&format!("FROM busybox\nADD --checksum={SUM} https://h/r.git /s"), "non-HTTP sources", Some(2));
}

#[test]
fn add_link_and_heredoc() {
    let def = conv("FROM busybox\nADD --link https://e.io/f.txt /f\n");
    let Op::Merge(m) = target_op(&def) else { panic!() };
    let copy = op_of(&def, m.inputs[1].op);
    assert_eq!(copies(&def, &copy), [("http https://e.io/f.txt".to_owned(), strings(&["f.txt"]), "/f".to_owned())]);
    let def = conv("FROM busybox\nADD <<EOF /x\nbody\nEOF\n");
    assert_eq!(copies(&def, &last_layer_op(&def)), [("mkfile /EOF".to_owned(), strings(&["/EOF"]), "/x".to_owned())]);
    assert_eq!(history(&def), ["ADD <<EOF /x # buildkit"]);
}
