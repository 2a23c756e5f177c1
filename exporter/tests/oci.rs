//! Image documents and OCI layout outputs, checked by skopeo and umoci when
//! they are installed.

mod common;

use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::process::Command;

use rbuild_exporter::layer::{pack, PackOptions};
use rbuild_exporter::oci::{
    write_oci_archive, write_oci_dir, BlobSource, ImageBuilder, LayoutBlobs, LayoutError, MemoryBlobs,
};
use rbuild_exporter::oci_spec::image::{Digest, HistoryBuilder, ImageIndex};
use serde_json::Value;

use common::{busybox_image, run, tool, NAME};

#[test]
fn config_and_manifest_are_consistent_and_deterministic() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let (one, layer) = busybox_image(a.path());
    let (two, _) = busybox_image(b.path());
    assert_eq!(one, two, "same inputs, same image digest");

    let config: Value = serde_json::from_slice(&one.config_json).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"], serde_json::json!([layer.diff_id.to_string()]));
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh", "-c", "echo hi"]));
    assert_eq!(config["history"][1]["empty_layer"], serde_json::json!(true));
    let manifest: Value = serde_json::from_slice(&one.manifest_json).unwrap();
    assert_eq!(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(manifest["config"]["mediaType"], "application/vnd.oci.image.config.v1+json");
    assert_eq!(manifest["config"]["digest"], one.config.digest().to_string());
    assert_eq!(manifest["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
    assert_eq!(manifest["layers"][0]["digest"], layer.digest.to_string());
    assert_eq!(one.manifest.size(), one.manifest_json.len() as u64);
}

#[test]
fn oci_archive_is_accepted_by_skopeo_and_umoci() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, _) = busybox_image(tmp.path());
    let blobs = (image.blobs(), LayoutBlobs::new(tmp.path()));
    let archive = tmp.path().join("image.tar");
    write_oci_archive(fs::File::create(&archive).unwrap(), &image.manifest, Some(NAME), &blobs).unwrap();

    // index.json as BuildKit writes it.
    let mut ar = tar::Archive::new(fs::File::open(&archive).unwrap());
    let mut index = None;
    let mut paths = Vec::new();
    for entry in ar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        assert_eq!((entry.header().mtime().unwrap(), entry.header().uid().unwrap()), (0, 0));
        if path == "index.json" {
            let mut s = String::new();
            entry.read_to_string(&mut s).unwrap();
            index = Some(serde_json::from_str::<Value>(&s).unwrap());
        }
        paths.push(path);
    }
    assert_eq!(&paths[..4], ["oci-layout", "index.json", "blobs/", "blobs/sha256/"]);
    assert_eq!(paths.len(), 4 + 3, "manifest, config, one layer");
    let index = index.unwrap();
    let annotations = &index["manifests"][0]["annotations"];
    assert_eq!(annotations["org.opencontainers.image.ref.name"], "latest");
    assert_eq!(annotations["io.containerd.image.name"], NAME);

    if let Some(skopeo) = tool("skopeo") {
        let target = format!("oci-archive:{}", archive.display());
        let info: Value = serde_json::from_str(&run(Command::new(&skopeo).args(["inspect", &target]))).unwrap();
        assert_eq!(info["Layers"].as_array().map(Vec::len), Some(1));
        assert_eq!(info["Env"], serde_json::json!(["PATH=/bin"]));
        let config: Value =
            serde_json::from_str(&run(Command::new(&skopeo).args(["inspect", "--config", &target]))).unwrap();
        assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh", "-c", "echo hi"]));
    }

    if let Some(umoci) = tool("umoci") {
        let layout = tmp.path().join("extracted");
        tar::Archive::new(fs::File::open(&archive).unwrap()).unpack(&layout).unwrap();
        check_umoci(&umoci, &layout, &tmp.path().join("bundle-from-archive"));
    }
}

#[test]
fn oci_dir_is_accepted_by_umoci_and_merges_tags() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, _) = busybox_image(tmp.path());
    let blobs = (image.blobs(), LayoutBlobs::new(tmp.path()));
    let layout = tmp.path().join("layout");
    write_oci_dir(&layout, &image.manifest, Some(NAME), &blobs).unwrap();
    write_oci_dir(&layout, &image.manifest, Some("docker.io/library/rbuild-busybox:v2"), &blobs).unwrap();
    write_oci_dir(&layout, &image.manifest, Some(NAME), &blobs).unwrap();
    let index: ImageIndex = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let tags: Vec<String> = index
        .manifests()
        .iter()
        .map(|d| d.annotations().as_ref().unwrap()["org.opencontainers.image.ref.name"].clone())
        .collect();
    assert_eq!(tags, vec!["v2", "latest"]);
    let entries = fs::read_dir(layout.join("blobs/sha256")).unwrap().count();
    assert_eq!(entries, 3, "no temporary files left behind");

    if let Some(umoci) = tool("umoci") {
        check_umoci(&umoci, &layout, &tmp.path().join("bundle"));
    }
}

fn check_umoci(umoci: &Path, layout: &Path, bundle: &Path) {
    if common::skip_unless_root("umoci unpack without --rootless") {
        return;
    }
    let image = format!("{}:latest", layout.display());
    run(Command::new(umoci).args(["unpack", "--image", &image]).arg(bundle));
    let sh = bundle.join("rootfs/bin/sh");
    assert_eq!(fs::read_link(&sh).unwrap(), Path::new("busybox"));
    assert!(bundle.join("rootfs/bin/busybox").is_file());
    let config: Value = serde_json::from_slice(&fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["process"]["args"], serde_json::json!(["sh", "-c", "echo hi"]));
    assert!(config["process"]["env"].as_array().unwrap().contains(&Value::from("PATH=/bin")));
}

/// A source that lies about a blob's content.
struct Tampered<'a> {
    inner: &'a dyn BlobSource,
    victim: Digest,
}

impl BlobSource for Tampered<'_> {
    fn open(&self, digest: &Digest) -> io::Result<(Box<dyn Read + '_>, u64)> {
        let (mut reader, size) = self.inner.open(digest)?;
        if *digest != self.victim {
            return Ok((reader, size));
        }
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes)?;
        bytes[size as usize / 2] ^= 0xff;
        Ok((Box::new(io::Cursor::new(bytes)), size))
    }
}

#[test]
fn corrupt_or_missing_blobs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (image, layer) = busybox_image(tmp.path());
    let blobs = (image.blobs(), LayoutBlobs::new(tmp.path()));

    let tampered = Tampered { inner: &blobs, victim: layer.digest.clone() };
    let err = write_oci_archive(io::sink(), &image.manifest, None, &tampered).unwrap_err();
    assert!(matches!(err, LayoutError::BlobDigestMismatch { .. }), "{err:?}");

    let dir = tmp.path().join("out");
    let err = write_oci_dir(&dir, &image.manifest, None, &tampered).unwrap_err();
    assert!(matches!(err, LayoutError::BlobDigestMismatch { .. }), "{err:?}");
    assert!(!dir.join("blobs/sha256").join(layer.digest.digest()).exists(), "bad blob never published");
    assert_eq!(fs::read_dir(dir.join("blobs/sha256")).unwrap().count(), 2, "only manifest and config");

    let only_metadata = image.blobs();
    let err = write_oci_archive(io::sink(), &image.manifest, None, &only_metadata).unwrap_err();
    assert!(matches!(err, LayoutError::OpenBlob { ref source, .. } if source.kind() == io::ErrorKind::NotFound));

    let mut wrong_size = image.manifest.clone();
    wrong_size.set_size(image.manifest.size() + 1);
    let err = write_oci_archive(io::sink(), &wrong_size, None, &MemoryBlobs::new()).unwrap_err();
    assert!(matches!(err, LayoutError::OpenBlob { .. }), "{err:?}");
    let err = write_oci_archive(io::sink(), &wrong_size, None, &blobs).unwrap_err();
    assert!(matches!(err, LayoutError::BlobSizeMismatch { .. }), "{err:?}");
}

#[test]
fn rich_layer_is_accepted_by_umoci() {
    // Whiteouts, opaque dirs, hardlinks, fifos, xattrs, setuid and PAX
    // headers must all parse with Go's archive/tar as umoci uses it.
    let Some(umoci) = tool("umoci") else { return };
    if common::skip_unless_root("umoci unpack of a rich layer") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (base, base_layer) = busybox_image(tmp.path());
    let diff = tmp.path().join("diff");
    common::build_diff(&diff);
    let long = diff.join("d".repeat(120)).join("e".repeat(120));
    fs::create_dir_all(&long).unwrap();
    fs::write(long.join("f".repeat(150)), b"long").unwrap();
    let tmp_blob = tmp.path().join("rich.tmp");
    let layer = pack(&diff, fs::File::create(&tmp_blob).unwrap(), &PackOptions::default()).unwrap();
    fs::rename(&tmp_blob, tmp.path().join("blobs/sha256").join(layer.digest.digest())).unwrap();

    let base_config = serde_json::from_slice(&base.config_json).unwrap();
    let mut image = ImageBuilder::new(base_config, vec![base_layer.descriptor()]);
    image.add_layer(&layer, HistoryBuilder::default().created_by("RUN things").build().unwrap());
    let built = image.build().unwrap();
    let blobs = (built.blobs(), LayoutBlobs::new(tmp.path()));
    let layout = tmp.path().join("layout");
    write_oci_dir(&layout, &built.manifest, Some(NAME), &blobs).unwrap();

    let bundle = tmp.path().join("bundle");
    run(Command::new(&umoci).args(["unpack", "--image", &format!("{}:latest", layout.display())]).arg(&bundle));
    let rootfs = bundle.join("rootfs");
    use std::os::unix::fs::MetadataExt;
    let app = fs::metadata(rootfs.join("bin/app")).unwrap();
    assert_eq!(app.ino(), fs::metadata(rootfs.join("bin/app-link")).unwrap().ino(), "hardlink kept");
    assert_eq!(fs::metadata(rootfs.join("usr/bin/su")).unwrap().mode() & 0o7777, 0o4755);
    assert_eq!(fs::metadata(rootfs.join("etc/passwd")).unwrap().uid(), 1234);
    assert_eq!(fs::read_link(rootfs.join("lnk")).unwrap(), Path::new("etc/passwd"));
    assert_eq!(
        common::xattrs(&rootfs.join("file-with-xattr")).get("user.rbuild.test").map(Vec::as_slice),
        Some(&b"v\x00al"[..])
    );
    assert!(rootfs.join("opq/keep").exists());
    assert!(!rootfs.join("removed").exists() && !rootfs.join(".wh.removed").exists());
    assert!(rootfs.join("bin/busybox").exists(), "base layer below");
    assert_eq!(fs::read(long.join("f".repeat(150))).unwrap(), b"long");
    let long_in_bundle = rootfs.join("d".repeat(120)).join("e".repeat(120)).join("f".repeat(150));
    assert_eq!(fs::read(long_in_bundle).unwrap(), b"long");
}
