//! `ADD x.tar`: the archive is hostile input (design invariant 2). Each archive is written
//! header by header in the test; escaping entries aim at a trap directory on the host, which
//! must stay empty, and every refusal must say which entry and why.

use std::time::Instant;

use crate::support_ext::{self, gzip, header, kind, sparse_header, Case, HostTrap, Run, Tar};

fn ready(test: &str) -> bool {
    support_ext::ready(test)
}

/// A context whose `evil.tar` is `archive` and whose Dockerfile is `FROM busybox` + `steps`.
fn add_case(test: &str, archive: &[u8], steps: &str) -> Case {
    let c = Case::new(test, &format!("FROM {{BASE}}\n{steps}"));
    c.file("evil.tar", archive);
    c
}

/// The refusal of an `ADD` step: a user error naming the step and the archive.
#[track_caller]
fn assert_refused(run: &Run, why: &str) {
    run.assert_user_error(&["ADD evil.tar", "extracting archive evil.tar", why]);
}

/// `..` components climbing out of the destination to the host trap.
fn climb(trap: &HostTrap, leaf: &str) -> String {
    format!("{}{}/{leaf}", "../".repeat(12), trap.rel())
}

#[test]
fn add_tar_dotdot_entry_is_refused() {
    let test = "add_tar_dotdot_entry_is_refused";
    if !ready(test) {
        return;
    }
    let trap = HostTrap::new();
    let escape = climb(&trap, "pwned");
    let mut t = Tar::new();
    t.file("fine.txt", b"fine", 0o644).file(&escape, b"pwned", 0o644);
    let c = add_case(test, &t.finish(), "ADD evil.tar /dest/\n");
    let run = c.build_oci(&[]);
    assert_refused(&run, &format!("archive entry {escape:?} escapes the destination"));
    trap.assert_only(&[]);

    // A `..` that would stay inside (`a/../b`) is refused all the same, as BuildKit does.
    let mut t = Tar::new();
    t.dir("a").file("a/../b", b"b", 0o644);
    c.file("evil.tar", &t.finish());
    let run = c.build_oci(&[]);
    assert_refused(&run, "archive entry \"a/../b\" escapes the destination");
}

#[test]
fn add_tar_absolute_entry_lands_inside_the_rootfs() {
    let test = "add_tar_absolute_entry_lands_inside_the_rootfs";
    if !ready(test) {
        return;
    }
    let trap = HostTrap::new();
    let abs = format!("{}/pwned", trap.path().display());
    let mut t = Tar::new();
    t.file(&abs, b"kept-inside", 0o644);
    // The leading `/` is dropped (GNU tar and Docker): the file lands under the destination.
    let c = add_case(
        test,
        &t.finish(),
        &format!("ADD evil.tar /dest/\nRUN test \"$(cat /dest{abs})\" = kept-inside && test ! -e {abs}\n"),
    );
    c.build_oci(&[]).assert_ok();
    trap.assert_only(&[]);
}

#[test]
fn add_tar_symlink_then_write_through_it_is_refused() {
    let test = "add_tar_symlink_then_write_through_it_is_refused";
    if !ready(test) {
        return;
    }
    let trap = HostTrap::new();
    // An absolute link to the host trap, then a file through it.
    let mut t = Tar::new();
    t.symlink("link", &trap.path().display().to_string()).file("link/pwned", b"pwned", 0o644);
    let c = add_case(test, &t.finish(), "ADD evil.tar /dest/\n");
    let run = c.build_oci(&[]);
    assert_refused(&run, "archive entry \"link/pwned\" would be written through the symlink \"link\"");
    trap.assert_only(&[]);

    // A relative link climbing out, then a file deep below it.
    let mut t = Tar::new();
    t.symlink("up", &"../".repeat(12)).file(&format!("up/{}/pwned", trap.rel()), b"pwned", 0o644);
    c.file("evil.tar", &t.finish());
    let run = c.build_oci(&[]);
    assert_refused(&run, "would be written through the symlink \"up\"");
    trap.assert_only(&[]);

    // A directory, replaced by a link of the same name, then a file below the name.
    let mut t = Tar::new();
    t.dir("d").symlink("d", &trap.path().display().to_string()).file("d/pwned", b"pwned", 0o644);
    c.file("evil.tar", &t.finish());
    let run = c.build_oci(&[]);
    assert_refused(&run, "archive entry \"d/pwned\" would be written through the symlink \"d\"");
    trap.assert_only(&[]);
}

#[test]
fn add_tar_file_over_its_own_symlink_replaces_the_link() {
    let test = "add_tar_file_over_its_own_symlink_replaces_the_link";
    if !ready(test) {
        return;
    }
    let trap = HostTrap::new();
    let target = format!("{}/pwned", trap.path().display());
    let mut t = Tar::new();
    t.symlink("evil", &target).file("evil", b"replaced", 0o644);
    let c = add_case(
        test,
        &t.finish(),
        "ADD evil.tar /dest/\nRUN test ! -L /dest/evil && test \"$(cat /dest/evil)\" = replaced\n",
    );
    c.build_oci(&[]).assert_ok();
    trap.assert_only(&[]);
}

#[test]
fn add_tar_through_an_image_symlink_stays_in_the_rootfs() {
    let test = "add_tar_through_an_image_symlink_stays_in_the_rootfs";
    if !ready(test) {
        return;
    }
    let trap = HostTrap::new();
    let mut t = Tar::new();
    t.file("link/pwned", b"through-the-image-link", 0o644);
    // The image (not the archive) has /dest/link -> the host trap's path. Docker's chrooted
    // untar follows it with the destination as `/`: the file lands at /dest/<trap>/pwned.
    let c = add_case(
        test,
        &t.finish(),
        &format!(
            "RUN mkdir -p /dest {trap} && ln -s {trap} /dest/link\nADD evil.tar /dest/\n\
             RUN test \"$(cat /dest{trap}/pwned)\" = through-the-image-link && test ! -e {trap}/pwned\n",
            trap = trap.path().display()
        ),
    );
    c.build_oci(&[]).assert_ok();
    trap.assert_only(&[]);
}

#[test]
fn add_tar_hardlink_to_outside_is_refused() {
    let test = "add_tar_hardlink_to_outside_is_refused";
    if !ready(test) {
        return;
    }
    let trap = HostTrap::new();
    let canary = support_ext::unique("HOSTFILE");
    std::fs::write(trap.path().join("canary"), &canary).unwrap();
    let c = add_case(test, b"", "ADD evil.tar /dest/\n");

    // `..` up to the host file.
    let escape = climb(&trap, "canary");
    let mut t = Tar::new();
    t.hardlink("stolen", &escape);
    c.file("evil.tar", &t.finish());
    let run = c.build_oci(&[]);
    assert_refused(&run, &format!("hardlink \"stolen\" points outside the destination at {escape:?}"));

    // The host file's absolute path: names a file of the archive, which does not exist.
    let abs = format!("{}/canary", trap.path().display());
    let mut t = Tar::new();
    t.hardlink("stolen", &abs);
    c.file("evil.tar", &t.finish());
    let run = c.build_oci(&[]);
    assert_refused(&run, &format!("hardlink \"stolen\" points at {abs:?}, which the archive did not create"));

    // Through a symlink the archive planted (the exact target is checked by
    // `add_tar_hardlink_through_a_planted_symlink_names_its_target`).
    let mut t = Tar::new();
    t.symlink("l", &trap.path().display().to_string()).hardlink("stolen", "l/canary");
    c.file("evil.tar", &t.finish());
    let run = c.build_oci(&[]);
    assert_refused(&run, "hardlink \"stolen\" points outside the destination at ");

    c.assert_never_written("a host file reached by a hardlink", &canary);
    trap.assert_only(&["canary"]);
    assert_eq!(std::fs::read_to_string(trap.path().join("canary")).unwrap(), canary);
}

#[test]
fn add_tar_hardlink_through_a_planted_symlink_names_its_target() {
    let test = "add_tar_hardlink_through_a_planted_symlink_names_its_target";
    if !ready(test) {
        return;
    }
    let trap = HostTrap::new();
    let mut t = Tar::new();
    t.symlink("l", &trap.path().display().to_string()).hardlink("stolen", "l/canary");
    let c = add_case(test, &t.finish(), "ADD evil.tar /dest/\n");
    let run = c.build_oci(&[]);
    assert_refused(&run, "hardlink \"stolen\" points outside the destination at \"l/canary\"");
    trap.assert_only(&[]);
}

#[test]
fn add_tar_device_nodes_are_kept_but_a_whiteout_device_is_refused() {
    let test = "add_tar_device_nodes_are_kept_but_a_whiteout_device_is_refused";
    if !ready(test) {
        return;
    }
    // As BuildKit (as root): device nodes and fifos are created as the archive says.
    let mut t = Tar::new();
    t.device("null2", kind::CHAR, 1, 3, 0o666).device("loop", kind::BLOCK, 7, 0, 0o600).device(
        "fifo",
        kind::FIFO,
        0,
        0,
        0o644,
    );
    let c = add_case(
        test,
        &t.finish(),
        "ADD evil.tar /dest/\nRUN test -c /dest/null2 && test \"$(stat -c %t:%T /dest/null2)\" = 1:3 && test -b /dest/loop \
         && test \"$(stat -c %t:%T /dest/loop)\" = 7:0 && test -p /dest/fifo\n",
    );
    c.build_oci(&[]).assert_ok();

    // A character device 0:0 is a whiteout in a layer directory: it would delete /dest/victim.
    let mut t = Tar::new();
    t.device("victim", kind::CHAR, 0, 0, 0o644);
    c.file("evil.tar", &t.finish());
    c.dockerfile("FROM {BASE}\nRUN mkdir /dest && echo keep > /dest/victim\nADD evil.tar /dest/\n");
    let run = c.build_oci(&[]);
    assert_refused(&run, "archive entry \"victim\" has unsupported type character device 0:0");
}

#[test]
fn add_tar_setuid_files_keep_their_mode() {
    let test = "add_tar_setuid_files_keep_their_mode";
    if !ready(test) {
        return;
    }
    let mut t = Tar::new();
    t.file("suid", b"#!/bin/sh\n", 0o4755).file("sgid", b"#!/bin/sh\n", 0o2755);
    t.raw(header("sticky", kind::DIR, 0, 0o1777, ""), &[]);
    let c = add_case(
        test,
        &t.finish(),
        "ADD evil.tar /dest/\nRUN test \"$(stat -c %a /dest/suid)\" = 4755 && test \"$(stat -c %a /dest/sgid)\" = 2755 \
         && test \"$(stat -c %a /dest/sticky)\" = 1777\n",
    );
    c.build_oci(&[]).assert_ok();
}

#[test]
fn add_tar_duplicate_entries_last_one_wins() {
    let test = "add_tar_duplicate_entries_last_one_wins";
    if !ready(test) {
        return;
    }
    let mut t = Tar::new();
    t.file("f", b"first", 0o644).file("f", b"second", 0o600);
    t.dir("d").file("d/inner", b"x", 0o644).file("d", b"file-now", 0o644);
    t.file("h", b"target", 0o644).hardlink("h2", "h").file("h2", b"h2-alone", 0o644);
    let c = add_case(
        test,
        &t.finish(),
        "ADD evil.tar /dest/\nRUN test \"$(cat /dest/f)\" = second && test \"$(stat -c %a /dest/f)\" = 600 \
         && test -f /dest/d && test \"$(cat /dest/d)\" = file-now && test \"$(cat /dest/h)\" = target \
         && test \"$(cat /dest/h2)\" = h2-alone\n",
    );
    c.build_oci(&[]).assert_ok();
}

/// A gzip of a tar holding one file of `size` zeros, built from concatenated gzip members (as
/// many tools write them) so that making it takes one gzip of `chunk` bytes, not of `size`.
fn zeros_bomb(size: u64) -> Vec<u8> {
    const CHUNK: usize = 64 << 20;
    let total = 512 + size as usize + 1024;
    assert_eq!(total % CHUNK, 0, "the bomb is a whole number of chunks");
    let mut first = vec![0u8; CHUNK];
    first[..512].copy_from_slice(&header("zeros", kind::FILE, size, 0o644, ""));
    let mut out = gzip(&first, 9);
    let rest = gzip(&vec![0u8; CHUNK], 9);
    for _ in 1..total / CHUNK {
        out.extend_from_slice(&rest);
    }
    out
}

#[test]
fn add_gzip_bomb_of_zeros_is_refused() {
    let test = "add_gzip_bomb_of_zeros_is_refused";
    if !ready(test) {
        return;
    }
    // 384 MiB of zeros in ~390 KB: over the 1000:1 ratio the bomb guard allows above 256 MiB.
    let bomb = zeros_bomb((384 << 20) - 1536);
    assert!(bomb.len() < 1 << 20, "the bomb is {} bytes", bomb.len());
    let c = add_case(test, &bomb, "ADD evil.tar /dest/\n");
    let started = Instant::now();
    let run = c.build_oci(&[]);
    assert_refused(&run, "refusing a possible decompression bomb");
    eprintln!("refused in {:?}", started.elapsed());
    assert_partial_layer_removed(&c);
}

#[test]
fn add_sparse_bomb_declaring_2gib_is_refused() {
    let test = "add_sparse_bomb_declaring_2gib_is_refused";
    if !ready(test) {
        return;
    }
    // A GNU sparse entry: 512 bytes of data at the end of a 2 GiB file, a 2 KB archive (gzip'd,
    // a few hundred bytes); extraction would write 2 GiB. Refused at the 256 MiB floor.
    let mut t = Tar::new();
    let mut data = [0u8; 512];
    data[..4].copy_from_slice(b"tail");
    t.raw(sparse_header("sparse", 2 << 30), &data);
    let bomb = gzip(&t.finish(), 9);
    assert!(bomb.len() < 4096);
    let c = add_case(test, &bomb, "ADD evil.tar /dest/\n");
    let run = c.build_oci(&[]);
    assert_refused(&run, "the archive expands to more than 268435456 bytes (bytes written)");
    assert_partial_layer_removed(&c);
}

/// After a refused bomb the store holds no partial layer (nothing near the 256 MiB written).
#[track_caller]
fn assert_partial_layer_removed(c: &Case) {
    let out = std::process::Command::new("du").arg("-sb").arg(c.store()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let bytes: u64 = text.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(u64::MAX);
    assert!(bytes < 64 << 20, "the store keeps {bytes} bytes after a refused bomb");
}
