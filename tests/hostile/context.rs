//! COPY, ADD and bind mounts against the build context: whatever the context's symlinks,
//! paths and `.dockerignore` say, nothing outside the context is ever read (design invariant 2).
//! Every case puts a canary file beside the context and asserts its content reaches no layer,
//! no store file and no output.

use crate::support_ext::{assert_unread, mark_unread, unique, Case, Run};

fn ready(test: &str) -> bool {
    crate::support_ext::ready(test)
}

/// The not-found error BuildKit gives for a source that does not resolve inside the context.
#[track_caller]
fn assert_not_found(run: &Run, source: &str) {
    run.assert_user_error(&[&format!("failed to compute cache key: \"{source}\" not found in the source")]);
}

#[test]
fn copy_absolute_symlink_to_a_host_file_resolves_inside_the_context() {
    let test = "copy_absolute_symlink_to_a_host_file_resolves_inside_the_context";
    if !ready(test) {
        return;
    }
    let c = Case::new(test, "FROM {BASE}\nCOPY link /x\nRUN test \"$(cat /x)\" = decoy-inside-the-context\n");
    c.symlink("link", c.canary_path());
    let run = c.build_oci(&[]);
    assert_not_found(&run, "link");
    c.assert_canary_never_read(&run);

    // The same absolute path inside the context is what the link means.
    let inside = c.canary_path().display().to_string();
    c.file(inside.trim_start_matches('/'), b"decoy-inside-the-context");
    let run = c.build_oci(&[]);
    run.assert_ok();
    c.assert_canary_never_read(&run);
}

#[test]
fn copy_dotdot_symlink_is_clamped_at_the_context_root() {
    let test = "copy_dotdot_symlink_is_clamped_at_the_context_root";
    if !ready(test) {
        return;
    }
    let c = Case::new(test, "FROM {BASE}\nCOPY link /x\nRUN test \"$(cat /x)\" = decoy-at-the-root\n");
    // ctx/link -> ../outside/canary.txt and deeper: each `..` stops at the context root.
    c.symlink("link", "../../../../../../outside/canary.txt");
    let run = c.build_oci(&[]);
    assert_not_found(&run, "link");
    c.assert_canary_never_read(&run);

    c.file("outside/canary.txt", b"decoy-at-the-root");
    let run = c.build_oci(&[]);
    run.assert_ok();
    c.assert_canary_never_read(&run);
}

#[test]
fn copy_symlink_chain_leaving_the_context_is_not_found() {
    let test = "copy_symlink_chain_leaving_the_context_is_not_found";
    if !ready(test) {
        return;
    }
    let c = Case::new(test, "FROM {BASE}\nCOPY a /x\n");
    // a -> b -> d/../c -> the canary, absolute: every hop is resolved inside the context.
    c.symlink("a", "b");
    c.symlink("b", "d/../c");
    std::fs::create_dir_all(c.ctx().join("d")).unwrap();
    c.symlink("c", c.canary_path());
    let run = c.build_oci(&[]);
    assert_not_found(&run, "a");
    c.assert_canary_never_read(&run);
}

#[test]
fn copy_through_a_symlinked_parent_directory_is_not_found() {
    let test = "copy_through_a_symlinked_parent_directory_is_not_found";
    if !ready(test) {
        return;
    }
    let c = Case::new(test, "");
    c.symlink("rel", "../outside");
    c.symlink("abs", c.canary_path().parent().unwrap());
    for src in ["rel/canary.txt", "abs/canary.txt", "rel/*.txt", "abs/canary*"] {
        c.dockerfile(&format!("FROM {{BASE}}\nCOPY {src} /x/\n"));
        let run = c.build_oci(&[]);
        assert_not_found(&run, src);
        c.assert_canary_never_read(&run);
    }
}

#[test]
fn copy_dotdot_path_is_cleaned_to_the_context_root() {
    let test = "copy_dotdot_path_is_cleaned_to_the_context_root";
    if !ready(test) {
        return;
    }
    let c = Case::new(test, "FROM {BASE}\nCOPY ../outside/canary.txt /x\n");
    let run = c.build_oci(&[]);
    assert_not_found(&run, "../outside/canary.txt");
    c.assert_canary_never_read(&run);

    // As BuildKit: `../../ok.txt` is `ok.txt` of the context.
    let inside = unique("INSIDE");
    c.file("ok.txt", inside.as_bytes());
    c.dockerfile("FROM {BASE}\nCOPY ../../ok.txt /x\nRUN grep -q INSIDE /x\n");
    let run = c.build_oci(&[]);
    run.assert_ok();
    c.assert_canary_never_read(&run);
    // The search the canary checks rely on does find what a layer holds (gzip'd, in the OCI
    // archive) and what a snapshot holds (in the store).
    let hits = c.written_files_containing(&inside);
    assert!(hits.iter().any(|h| h.ends_with("(decompressed)")), "{hits:#?}");
    assert!(hits.iter().any(|h| h.contains("/store/") && h.ends_with("/x")), "{hits:#?}");
}

#[test]
fn copy_directory_keeps_outward_symlinks_as_links_not_their_targets() {
    let test = "copy_directory_keeps_outward_symlinks_as_links_not_their_targets";
    if !ready(test) {
        return;
    }
    let c = Case::new(test, "");
    let canary = c.canary_path();
    c.symlink("dir/abs", &canary);
    c.symlink("dir/rel", "../../outside/canary.txt");
    c.file("dir/plain", b"plain");
    c.dockerfile(&format!(
        "FROM {{BASE}}\nCOPY dir /d\nRUN test \"$(readlink /d/abs)\" = {canary} && test \"$(readlink /d/rel)\" = \
         ../../outside/canary.txt && test ! -e /d/abs && test ! -e /d/rel && test \"$(cat /d/plain)\" = plain\n",
        canary = canary.display()
    ));
    let run = c.build_oci(&[]);
    run.assert_ok();
    c.assert_canary_never_read(&run);
}

#[test]
fn copy_from_a_stage_symlink_to_a_host_path_stays_in_the_stage() {
    let test = "copy_from_a_stage_symlink_to_a_host_path_stays_in_the_stage";
    if !ready(test) {
        return;
    }
    let c = Case::new(test, "");
    // The stage's layers live in the store on the host; its symlinks must resolve in the stage.
    c.dockerfile(&format!(
        "FROM {{BASE}} AS evil\nRUN ln -s {canary} /abs && ln -s ../../../../../../../..{canary} /rel\n\
         FROM {{BASE}}\nCOPY --from=evil /abs /x\n",
        canary = c.canary_path().display()
    ));
    let run = c.build_oci(&[]);
    assert_not_found(&run, "/abs");
    c.assert_canary_never_read(&run);
    c.dockerfile(&format!(
        "FROM {{BASE}} AS evil\nRUN ln -s {canary} /abs && ln -s ../../../../../../../..{canary} /rel\n\
         FROM {{BASE}}\nCOPY --from=evil /rel /x\n",
        canary = c.canary_path().display()
    ));
    let run = c.build_oci(&[]);
    assert_not_found(&run, "/rel");
    c.assert_canary_never_read(&run);
}

#[test]
fn add_of_a_symlink_to_an_archive_outside_the_context_is_not_found() {
    let test = "add_of_a_symlink_to_an_archive_outside_the_context_is_not_found";
    if !ready(test) {
        return;
    }
    let c = Case::new(test, "FROM {BASE}\nADD evil.tar /x/\n");
    // An archive beside the context whose member holds the canary.
    let outside_tar = c.dir().join("outside/canary.tar");
    let mut t = crate::support_ext::Tar::new();
    t.file("canary.txt", c.canary.as_bytes(), 0o644);
    std::fs::write(&outside_tar, t.finish()).unwrap();
    c.symlink("evil.tar", &outside_tar);
    let run = c.build_oci(&[]);
    assert_not_found(&run, "evil.tar");
    c.assert_canary_never_read(&run);
}

#[test]
fn dockerignored_file_named_directly_is_refused_naming_the_pattern() {
    let test = "dockerignored_file_named_directly_is_refused_naming_the_pattern";
    if !ready(test) {
        return;
    }
    let c = Case::new(test, "FROM {BASE}\nCOPY secret.txt /x\n");
    let value = unique("IGNORED");
    c.file(".dockerignore", b"secret*\n");
    c.file("secret.txt", value.as_bytes());
    mark_unread(&c.ctx().join("secret.txt"));
    let run = c.build_oci(&[]);
    assert_not_found(&run, "secret.txt");
    run.assert_user_error(&["the path is excluded by the .dockerignore pattern \"secret*\""]);
    run.assert_never_shows(&value);
    c.assert_never_written("an ignored file", &value);
    assert_unread(&c.ctx().join("secret.txt"), "an ignored file");
}

#[test]
fn dockerignored_files_are_skipped_by_globs_dot_and_bind_mounts() {
    let test = "dockerignored_files_are_skipped_by_globs_dot_and_bind_mounts";
    if !ready(test) {
        return;
    }
    let c = Case::new(
        test,
        "FROM {BASE}\nCOPY *.txt /d/\nCOPY . /all/\n\
         RUN test -e /d/ok.txt && test ! -e /d/secret.txt && test -e /all/ok.txt && test ! -e /all/secret.txt \
         && test ! -e /all/keys/id\n\
         RUN --mount=type=bind,target=/ctx test -e /ctx/ok.txt && test ! -e /ctx/secret.txt && test ! -e /ctx/keys/id\n",
    );
    let value = unique("IGNORED");
    c.file(".dockerignore", b"secret.txt\nkeys\n");
    c.file("secret.txt", value.as_bytes());
    c.file("keys/id", value.as_bytes());
    c.file("ok.txt", b"ok");
    mark_unread(&c.ctx().join("secret.txt"));
    mark_unread(&c.ctx().join("keys/id"));
    let run = c.build_oci(&[]);
    run.assert_ok();
    run.assert_never_shows(&value);
    c.assert_never_written("an ignored file", &value);
    assert_unread(&c.ctx().join("secret.txt"), "an ignored file");
    assert_unread(&c.ctx().join("keys/id"), "a file in an ignored directory");

    // A glob that matches only ignored files matches nothing.
    c.dockerfile("FROM {BASE}\nCOPY secre*.txt /d/\n");
    let run = c.build_oci(&[]);
    assert_not_found(&run, "secre*.txt");
    c.assert_never_written("an ignored file", &value);
}

#[test]
fn context_bind_mount_cannot_write_the_host_context() {
    let test = "context_bind_mount_cannot_write_the_host_context";
    if !ready(test) {
        return;
    }
    let c = Case::new(
        test,
        "FROM {BASE}\n\
         RUN --mount=type=bind,target=/ctx if touch /ctx/pwned || echo x >> /ctx/ok.txt; then exit 1; fi\n\
         RUN --mount=type=bind,target=/ctx,rw echo pwned > /ctx/pwned && echo more >> /ctx/ok.txt && rm /ctx/Dockerfile\n",
    );
    c.file("ok.txt", b"ok");
    let before = std::fs::read_to_string(c.ctx().join("Dockerfile")).unwrap();
    let run = c.build_oci(&[]);
    run.assert_ok();
    assert!(!c.ctx().join("pwned").exists(), "a RUN step created a file in the host's context");
    assert_eq!(std::fs::read(c.ctx().join("ok.txt")).unwrap(), b"ok", "a RUN step changed the host's context");
    assert_eq!(std::fs::read_to_string(c.ctx().join("Dockerfile")).unwrap(), before);
    c.assert_canary_never_read(&run);
}

#[test]
fn bind_mount_source_symlink_leaving_the_context_is_not_found() {
    let test = "bind_mount_source_symlink_leaving_the_context_is_not_found";
    if !ready(test) {
        return;
    }
    let c = Case::new(test, "FROM {BASE}\nRUN --mount=type=bind,source=link,target=/l cat /l\n");
    c.symlink("link", c.canary_path());
    let run = c.build_oci(&[]);
    assert_not_found(&run, "/link");
    c.assert_canary_never_read(&run);
    c.symlink("dir", c.canary_path().parent().unwrap());
    c.dockerfile("FROM {BASE}\nRUN --mount=type=bind,source=dir,target=/l cat /l/canary.txt\n");
    let run = c.build_oci(&[]);
    assert_not_found(&run, "/dir");
    c.assert_canary_never_read(&run);
}

#[test]
fn context_fifo_and_device_nodes_are_copied_as_nodes_never_read() {
    let test = "context_fifo_and_device_nodes_are_copied_as_nodes_never_read";
    if !ready(test) {
        return;
    }
    // Reading either would hang the build (a FIFO without a writer) or fill the disk (/dev/zero).
    let c = Case::new(
        test,
        "FROM {BASE}\nCOPY . /all/\nCOPY zero fifo /named/\nADD zero /added-zero\nADD fifo /added-fifo\n\
         RUN --mount=type=bind,target=/ctx test -c /ctx/zero && test -p /ctx/fifo\n\
         RUN test -c /all/zero && test \"$(stat -c %t:%T /all/zero)\" = 1:5 && test -p /all/fifo \
         && test -c /named/zero && test -p /named/fifo && test -c /added-zero && test -p /added-fifo\n",
    );
    let ctx = c.ctx();
    nix::unistd::mkfifo(&ctx.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let st = std::process::Command::new("mknod").arg(ctx.join("zero")).args(["c", "1", "5"]).status().unwrap();
    assert!(st.success(), "mknod");
    let run = c.build_oci(&[]);
    run.assert_ok();
    c.assert_canary_never_read(&run);
}
