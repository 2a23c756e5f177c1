//! Output formats beyond the OCI layout: docker archives, docker media
//! types, docker-only config fields and zstd layers, checked with skopeo and
//! umoci when installed.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use rbuild_exporter::layer::Compression;
use rbuild_exporter::oci::{
    docker_config_extras, write_docker_archive, write_oci_archive, LayoutBlobs, LayoutError, DOCKER_CONFIG,
    DOCKER_LAYER_GZIP, DOCKER_MANIFEST,
};
use serde_json::{json, Value};

use common::{busybox_image, busybox_image_with, run, tool, NAME};

/// Every file of a tar archive, by path.
fn tar_files(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut ar = tar::Archive::new(fs::File::open(path).unwrap());
    let mut out = BTreeMap::new();
    for entry in ar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        out.insert(name, bytes);
    }
    out
}

/// `umoci unpack` of `layout:tag` must give busybox's `bin/sh` link.
fn check_unpacks(layout: &Path, tag: &str, bundle: &Path) {
    let Some(umoci) = tool("umoci") else { return };
    if common::skip_unless_root("umoci unpack without --rootless") {
        return;
    }
    run(Command::new(umoci).args(["unpack", "--image", &format!("{}:{tag}", layout.display())]).arg(bundle));
    assert_eq!(fs::read_link(bundle.join("rootfs/bin/sh")).unwrap(), Path::new("busybox"));
}

#[test]
fn docker_archive_is_read_by_skopeo() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, layer) = busybox_image(tmp.path());
    let blobs = (image.blobs(), LayoutBlobs::new(tmp.path()));
    let archive = tmp.path().join("docker.tar");
    let names = vec![
        NAME.to_owned(),
        "localhost:5000/rbuild/bb:v2".to_owned(),
        "app@sha256:0000000000000000000000000000000000000000000000000000000000000000".to_owned(),
    ];
    write_docker_archive(fs::File::create(&archive).unwrap(), &image.manifest, &names, &blobs).unwrap();

    let files = tar_files(&archive);
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let config_path = format!("blobs/sha256/{}", image.config.digest().digest());
    let layer_path = format!("blobs/sha256/{}", layer.digest.digest());
    assert_eq!(
        manifest,
        json!([{
            "Config": config_path,
            "RepoTags": ["rbuild-busybox:latest", "localhost:5000/rbuild/bb:v2"],
            "Layers": [layer_path],
        }])
    );
    assert_eq!(files[&config_path], image.config_json);
    assert!(files.contains_key(&layer_path));
    let diff_hex = layer.diff_id.digest().to_owned();
    let repositories: Value = serde_json::from_slice(&files["repositories"]).unwrap();
    assert_eq!(
        repositories,
        json!({"rbuild-busybox": {"latest": diff_hex}, "localhost:5000/rbuild/bb": {"v2": diff_hex}})
    );
    let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(3));

    let Some(skopeo) = tool("skopeo") else { return };
    let target = format!("docker-archive:{}", archive.display());
    let info: Value = serde_json::from_str(&run(Command::new(&skopeo).args(["inspect", &target]))).unwrap();
    assert_eq!(info["Layers"].as_array().map(Vec::len), Some(1));
    assert_eq!(info["Env"], json!(["PATH=/bin"]));
    // Copying reads and verifies every layer blob.
    let layout = tmp.path().join("copied");
    run(Command::new(&skopeo).args([
        "copy",
        "--quiet",
        &format!("{target}:rbuild-busybox:latest"),
        &format!("oci:{}:copied", layout.display()),
    ]));
    check_unpacks(&layout, "copied", &tmp.path().join("bundle"));
}

#[test]
fn docker_archive_refuses_an_index() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, _) = busybox_image(tmp.path());
    let index = rbuild_exporter::oci::build_index(vec![image.manifest.clone()]).unwrap();
    let err = write_docker_archive(Vec::new(), &index.index, &[], &image.blobs()).unwrap_err();
    assert!(matches!(err, LayoutError::NotAnImageManifest { .. }), "{err:?}");
}

#[test]
fn docker_manifest_list_over_docker_manifests() {
    use rbuild_exporter::oci::{build_index_as, DOCKER_MANIFEST_LIST};
    use rbuild_exporter::oci_spec::image::MediaType;
    let tmp = tempfile::tempdir().unwrap();
    let (image, _) = busybox_image_with(tmp.path(), Compression::default(), |b| {
        b.oci_mediatypes(false);
    });
    let list = build_index_as(vec![image.manifest.clone()], MediaType::from(DOCKER_MANIFEST_LIST)).unwrap();
    assert_eq!(list.index.media_type().as_ref(), DOCKER_MANIFEST_LIST);
    assert_eq!(list.index.size(), list.index_json.len() as u64);
    let doc: Value = serde_json::from_slice(&list.index_json).unwrap();
    assert_eq!(doc["mediaType"], DOCKER_MANIFEST_LIST);
    assert_eq!(doc["manifests"][0]["mediaType"], DOCKER_MANIFEST);
    assert_eq!(doc["manifests"][0]["platform"]["architecture"], "amd64");
    // The default stays OCI.
    let oci = rbuild_exporter::oci::build_index(vec![image.manifest.clone()]).unwrap();
    assert_eq!(oci.index.media_type().as_ref(), "application/vnd.oci.image.index.v1+json");
}

#[test]
fn docker_media_types_and_docker_config_fields() {
    let tmp = tempfile::tempdir().unwrap();
    let healthcheck = json!({"Test": ["CMD", "true"], "Interval": 30_000_000_000u64});
    let (image, _) = busybox_image_with(tmp.path(), Compression::default(), |b| {
        b.oci_mediatypes(false);
        let extra = b.extra_config_mut();
        extra.insert("Healthcheck".into(), healthcheck.clone());
        extra.insert("Shell".into(), json!(["/bin/sh", "-c"]));
        extra.insert("OnBuild".into(), json!(["RUN echo child"]));
        extra.insert("ArgsEscaped".into(), json!(true));
    });
    assert_eq!(image.manifest.media_type().as_ref(), DOCKER_MANIFEST);
    let manifest: Value = serde_json::from_slice(&image.manifest_json).unwrap();
    assert_eq!(manifest["mediaType"], DOCKER_MANIFEST);
    assert_eq!(manifest["config"]["mediaType"], DOCKER_CONFIG);
    assert_eq!(manifest["layers"][0]["mediaType"], DOCKER_LAYER_GZIP);

    // Extra fields land in the runtime config, keys still sorted.
    let config_text = String::from_utf8(image.config_json.clone()).unwrap();
    let config: Value = serde_json::from_str(&config_text).unwrap();
    assert_eq!(config["config"]["Healthcheck"], healthcheck);
    assert_eq!(config["config"]["Env"], json!(["PATH=/bin"]));
    assert!(config_text.find("\"ArgsEscaped\"") < config_text.find("\"Cmd\""));
    let extras = docker_config_extras(&image.config_json).unwrap();
    assert_eq!(extras.keys().collect::<Vec<_>>(), ["ArgsEscaped", "Healthcheck", "OnBuild", "Shell"]);

    let Some(skopeo) = tool("skopeo") else { return };
    let blobs = (image.blobs(), LayoutBlobs::new(tmp.path()));
    let archive = tmp.path().join("image.tar");
    write_oci_archive(fs::File::create(&archive).unwrap(), &image.manifest, Some(NAME), &blobs).unwrap();
    let target = format!("oci-archive:{}", archive.display());
    let raw: Value = serde_json::from_str(&run(Command::new(&skopeo).args(["inspect", "--raw", &target]))).unwrap();
    assert_eq!(raw["mediaType"], DOCKER_MANIFEST);
    let info: Value = serde_json::from_str(&run(Command::new(&skopeo).args(["inspect", &target]))).unwrap();
    assert_eq!(info["Layers"].as_array().map(Vec::len), Some(1));
    let config: Value =
        serde_json::from_str(&run(Command::new(&skopeo).args(["inspect", "--config", "--raw", &target]))).unwrap();
    assert_eq!(config["config"]["Healthcheck"]["Test"], json!(["CMD", "true"]));
    // A copy to a docker-format directory keeps the docker manifest.
    let dir = tmp.path().join("dir");
    run(Command::new(&skopeo).args(["copy", "--quiet", &target, &format!("dir:{}", dir.display())]));
    let copied: Value = serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(copied["mediaType"], DOCKER_MANIFEST);
}

#[test]
fn zstd_image_is_read_by_skopeo() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, layer) = busybox_image_with(tmp.path(), Compression::Zstd { level: 3 }, |_| {});
    assert_eq!(layer.media_type.as_ref(), "application/vnd.oci.image.layer.v1.tar+zstd");
    let manifest: Value = serde_json::from_slice(&image.manifest_json).unwrap();
    assert_eq!(manifest["layers"][0]["mediaType"], layer.media_type.as_ref());

    let blobs = (image.blobs(), LayoutBlobs::new(tmp.path()));
    let archive = tmp.path().join("image.tar");
    write_oci_archive(fs::File::create(&archive).unwrap(), &image.manifest, Some(NAME), &blobs).unwrap();
    let Some(skopeo) = tool("skopeo") else { return };
    let target = format!("oci-archive:{}", archive.display());
    let info: Value = serde_json::from_str(&run(Command::new(&skopeo).args(["inspect", &target]))).unwrap();
    assert_eq!(info["Layers"], json!([layer.digest.to_string()]));
    // Recompressing to gzip makes skopeo decompress the zstd layer (and check
    // it against the diff id). umoci 0.4.7 itself refuses zstd layers ("blob
    // is not correct mediatype"), so the unpack check runs on skopeo's copy.
    let layout = tmp.path().join("regz");
    run(Command::new(&skopeo).args([
        "copy",
        "--quiet",
        "--dest-compress-format",
        "gzip",
        &target,
        &format!("oci:{}:regz", layout.display()),
    ]));
    check_unpacks(&layout, "regz", &tmp.path().join("bundle-regz"));
}
