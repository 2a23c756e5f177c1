//! Pulled layers: a malicious image (busybox plus crafted layers, pushed to the suite's registry
//! with skopeo) used as a base. Unpacking must refuse what tries to leave the snapshot, with an
//! error naming the layer and the entry, or confine it; the host trap directory stays as it was.

use std::path::Path;

use serde_json::{json, Value};

use crate::support;
use crate::support_ext::{self, gzip, registry, sha256, Case, HostTrap, Run, Tar};

fn ready(test: &str) -> bool {
    support_ext::ready(test)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn blob_path(layout: &Path, digest: &str) -> std::path::PathBuf {
    layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
}

fn put_blob(layout: &Path, data: &[u8]) -> (String, usize) {
    let digest = sha256(data);
    std::fs::write(blob_path(layout, &digest), data).unwrap();
    (digest, data.len())
}

/// Pushes busybox with `layers` (plain tars, gzip'd here) on top as `name:latest` and returns
/// its reference. The config's diff ids are right: only the layer contents are hostile.
fn push_evil_image(name: &str, layers: &[Vec<u8>]) -> String {
    let base = support::busybox_layout();
    let dir = tempfile::Builder::new().prefix("rbuild-hostile-image-").tempdir().unwrap();
    let layout = dir.path().join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();

    let index = read_json(&base.join("index.json"));
    let manifest = read_json(&blob_path(base, index["manifests"][0]["digest"].as_str().unwrap()));
    let mut config = read_json(&blob_path(base, manifest["config"]["digest"].as_str().unwrap()));
    let mut descriptors = manifest["layers"].as_array().unwrap().clone();
    for d in &descriptors {
        let digest = d["digest"].as_str().unwrap();
        std::fs::copy(blob_path(base, digest), blob_path(&layout, digest)).unwrap();
    }
    for tar in layers {
        let (digest, size) = put_blob(&layout, &gzip(tar, 6));
        descriptors
            .push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size}));
        config["rootfs"]["diff_ids"].as_array_mut().unwrap().push(json!(sha256(tar)));
        config["history"].as_array_mut().unwrap().push(json!({"created_by": "hostile layer"}));
    }
    let (config_digest, config_size) = put_blob(&layout, &serde_json::to_vec(&config).unwrap());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": descriptors,
    });
    let (manifest_digest, manifest_size) = put_blob(&layout, &serde_json::to_vec(&manifest).unwrap());
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    let name_tag = format!("{name}:latest");
    registry().seed(&layout, &name_tag, &[]).expect("pushing the hostile image with skopeo");
    registry().reference(&name_tag)
}

/// Builds `FROM <image>` + `steps`.
fn build_from(test: &str, image: &str, steps: &str) -> (Case, Run) {
    let c = Case::new(test, &format!("FROM {image}\n{steps}"));
    let run = c.build_oci(&[]);
    (c, run)
}

/// The refusal of a base image: names the FROM step, says it was unpacking a layer, and why.
#[track_caller]
fn assert_unpack_refused(run: &Run, why: &str) {
    run.assert_user_error(&["FROM ", "unpacking layer sha256:", why]);
}

fn climb(trap: &HostTrap, leaf: &str) -> String {
    format!("{}{}/{leaf}", "../".repeat(12), trap.rel())
}

#[test]
fn pull_layer_with_dotdot_entry_is_refused() {
    let test = "pull_layer_with_dotdot_entry_is_refused";
    if !ready(test) {
        return;
    }
    let trap = HostTrap::new();
    let escape = climb(&trap, "pwned");
    let mut t = Tar::new();
    t.file("fine", b"fine", 0o644).file(&escape, b"pwned", 0o644);
    let image = push_evil_image("evil-dotdot", &[t.finish()]);
    let (_c, run) = build_from(test, &image, "RUN true\n");
    assert_unpack_refused(&run, &format!("layer entry {escape:?} escapes the destination"));
    trap.assert_only(&[]);
}

#[test]
fn pull_layer_with_absolute_entry_stays_in_the_rootfs() {
    let test = "pull_layer_with_absolute_entry_stays_in_the_rootfs";
    if !ready(test) {
        return;
    }
    let trap = HostTrap::new();
    let abs = format!("{}/pwned", trap.path().display());
    let mut t = Tar::new();
    t.file(&abs, b"inside-the-rootfs", 0o644);
    let image = push_evil_image("evil-absolute", &[t.finish()]);
    let (_c, run) = build_from(test, &image, &format!("RUN test \"$(cat {abs})\" = inside-the-rootfs\n"));
    run.assert_ok();
    trap.assert_only(&[]);
}

#[test]
fn pull_layer_with_absolute_symlink_write_through_is_refused() {
    let test = "pull_layer_with_absolute_symlink_write_through_is_refused";
    if !ready(test) {
        return;
    }
    let trap = HostTrap::new();
    let mut t = Tar::new();
    t.symlink("link", &trap.path().display().to_string()).file("link/pwned", b"pwned", 0o644);
    let image = push_evil_image("evil-symlink", &[t.finish()]);
    let (_c, run) = build_from(test, &image, "RUN true\n");
    assert_unpack_refused(&run, "layer entry \"link/pwned\" has a symlink parent \"link\"");
    trap.assert_only(&[]);
}

#[test]
fn pull_layers_writing_through_a_lower_layer_symlink_stay_in_the_rootfs() {
    let test = "pull_layers_writing_through_a_lower_layer_symlink_stay_in_the_rootfs";
    if !ready(test) {
        return;
    }
    let trap = HostTrap::new();
    // Layer 1 plants /link -> the host trap; layer 2 writes link/pwned. Each layer unpacks into
    // its own snapshot, so the link is never followed; the overlay shows layer 2's directory.
    let mut lower = Tar::new();
    lower.symlink("link", &trap.path().display().to_string());
    let mut upper = Tar::new();
    upper.file("link/pwned", b"inside", 0o644);
    let image = push_evil_image("evil-two-layers", &[lower.finish(), upper.finish()]);
    let (_c, run) = build_from(test, &image, "RUN test \"$(cat /link/pwned)\" = inside\n");
    run.assert_ok();
    trap.assert_only(&[]);
}

#[test]
fn pull_layer_with_hardlink_outside_is_refused() {
    let test = "pull_layer_with_hardlink_outside_is_refused";
    if !ready(test) {
        return;
    }
    let trap = HostTrap::new();
    let canary = support_ext::unique("HOSTFILE");
    std::fs::write(trap.path().join("canary"), &canary).unwrap();

    let escape = climb(&trap, "canary");
    let mut t = Tar::new();
    t.hardlink("stolen", &escape);
    let image = push_evil_image("evil-hardlink-dotdot", &[t.finish()]);
    let (c, run) = build_from(test, &image, "RUN true\n");
    assert_unpack_refused(&run, &format!("hardlink \"stolen\" points outside the destination at {escape:?}"));
    c.assert_never_written("a host file reached by a hardlink", &canary);

    // Absolute: a path of the layer itself, which has no such file.
    let abs = format!("{}/canary", trap.path().display());
    let mut t = Tar::new();
    t.hardlink("stolen", &abs);
    let image = push_evil_image("evil-hardlink-absolute", &[t.finish()]);
    let (c, run) = build_from(test, &image, "RUN true\n");
    assert_unpack_refused(&run, &format!("hardlink \"stolen\" points at {abs:?}, which does not exist"));
    c.assert_never_written("a host file reached by a hardlink", &canary);

    // Through a symlink of the same layer.
    let mut t = Tar::new();
    t.symlink("l", &trap.path().display().to_string()).hardlink("stolen", "l/canary");
    let image = push_evil_image("evil-hardlink-symlink", &[t.finish()]);
    let (c, run) = build_from(test, &image, "RUN true\n");
    assert_unpack_refused(&run, "hardlink \"stolen\" points outside the destination at \"l/canary\"");
    c.assert_never_written("a host file reached by a hardlink", &canary);

    trap.assert_only(&["canary"]);
    assert_eq!(std::fs::read_to_string(trap.path().join("canary")).unwrap(), canary);
}

#[test]
fn pull_layer_whiteout_of_dotdot_is_refused() {
    let test = "pull_layer_whiteout_of_dotdot_is_refused";
    if !ready(test) {
        return;
    }
    // `.wh...` would delete `..` of its directory: in an overlay diff, a 0:0 device named `..`.
    let mut t = Tar::new();
    t.dir("a").file("a/.wh...", b"", 0o644);
    let image = push_evil_image("evil-whiteout", &[t.finish()]);
    let (_c, run) = build_from(test, &image, "RUN true\n");
    assert_unpack_refused(&run, "layer entry \"a/.wh...\" escapes the destination");
}
