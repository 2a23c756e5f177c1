//! Pulls from a real registry (Debian's docker-registry on a loopback port), seeded with the
//! busybox fixture by skopeo. Skips, saying why, when those tools are missing.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::Path;

use rbuild_registry::oci_spec::image::{Descriptor, Digest, MediaType};
use rbuild_registry::{verify_descriptor, Client, ClientOptions, DigestHasher, Error, Platform, Reference};
use support::Registry;

fn client() -> Client {
    Client::new(ClientOptions::default()).expect("client")
}

fn amd64() -> Platform {
    "linux/amd64".parse().expect("platform")
}

fn reference(text: &str) -> Reference {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// The digest `index.json` of an OCI layout points at.
fn layout_top_digest(layout: &Path) -> Digest {
    let index = std::fs::read(layout.join("index.json")).expect("index.json");
    let index: serde_json::Value = serde_json::from_slice(&index).expect("index.json is JSON");
    index["manifests"][0]["digest"].as_str().expect("digest").parse().expect("valid digest")
}

async fn fetch_to_file(client: &Client, r: &Reference, desc: &Descriptor, path: &Path) -> Result<(), Error> {
    let mut file = tokio::fs::File::create(path).await.expect("create layer file");
    client.fetch_blob(r, desc, &mut file).await
}

#[tokio::test]
async fn resolve_by_tag_and_digest_then_fetch_layers() {
    if !support::require_registry("resolve_by_tag_and_digest_then_fetch_layers") {
        return;
    }
    let registry = Registry::start();
    registry.seed_busybox("busybox:latest");
    let client = client();
    let tagged = reference(&registry.reference("busybox:latest"));

    let image = client.resolve(&tagged, &amd64()).await.expect("resolve by tag");
    assert_eq!(image.digest, layout_top_digest(support::busybox_layout()));
    assert_eq!(image.index_digest, None);
    assert_eq!(image.media_type, MediaType::ImageManifest);
    assert_eq!(image.config.architecture().to_string(), "amd64");
    let cmd = image.config.config().as_ref().and_then(|c| c.cmd().clone());
    assert_eq!(cmd, Some(vec!["sh".to_owned()]));
    let mut hasher = DigestHasher::for_digest(image.manifest.config().digest()).expect("sha256");
    hasher.update(&image.config_bytes);
    verify_descriptor(image.manifest.config(), hasher).expect("config bytes match the manifest");

    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(image.manifest.layers().len(), 1);
    for layer in image.manifest.layers() {
        let path = dir.path().join(layer.digest().digest());
        fetch_to_file(&client, &tagged, layer, &path).await.expect("fetch layer");
        // Re-hash what landed on disk: the file, not just the stream, must be the blob.
        let bytes = std::fs::read(&path).expect("read layer");
        let mut hasher = DigestHasher::for_digest(layer.digest()).expect("sha256");
        hasher.update(&bytes);
        verify_descriptor(layer, hasher).expect("layer file matches its descriptor");
    }

    let pinned = reference(&format!("{}@{}", registry.reference("busybox"), image.digest));
    let by_digest = client.resolve(&pinned, &amd64()).await.expect("resolve by digest");
    assert_eq!(by_digest.digest, image.digest);
    assert_eq!(by_digest.manifest_bytes, image.manifest_bytes);

    // A pinned reference keeps its tag for display; the digest is what is fetched.
    let both = tagged.with_digest(image.digest.clone());
    assert_eq!(client.resolve(&both, &amd64()).await.expect("tag@digest").digest, image.digest);
}

#[tokio::test]
async fn missing_tag_and_blob_are_not_found_with_envelope() {
    if !support::require_registry("missing_tag_and_blob_are_not_found_with_envelope") {
        return;
    }
    let registry = Registry::start();
    registry.seed_busybox("busybox:latest");
    let client = client();

    let missing = reference(&registry.reference("busybox:nope"));
    match client.resolve(&missing, &amd64()).await {
        Err(Error::ManifestNotFound { envelope: Some(envelope), .. }) => {
            assert!(envelope.has_code("MANIFEST_UNKNOWN"), "{envelope}");
        }
        other => panic!("expected ManifestNotFound, got {other:?}"),
    }

    let image = client.resolve(&reference(&registry.reference("busybox:latest")), &amd64()).await.expect("resolve");
    let layer = &image.manifest.layers()[0];
    let absent: Digest = format!("sha256:{}", "0".repeat(64)).parse().expect("digest");
    let wrong = Descriptor::new(layer.media_type().clone(), layer.size(), absent.clone());
    let mut sink = Vec::new();
    let r = reference(&registry.reference("busybox:latest"));
    match client.fetch_blob(&r, &wrong, &mut sink).await {
        Err(Error::BlobNotFound { digest, envelope: Some(envelope), .. }) => {
            assert_eq!(digest, absent);
            assert!(envelope.has_code("BLOB_UNKNOWN"), "{envelope}");
        }
        other => panic!("expected BlobNotFound, got {other:?}"),
    }
}

#[tokio::test]
async fn corrupted_or_mis_sized_blobs_are_rejected() {
    if !support::require_registry("corrupted_or_mis_sized_blobs_are_rejected") {
        return;
    }
    let registry = Registry::start();
    registry.seed_busybox("busybox:latest");
    let client = client();
    let r = reference(&registry.reference("busybox:latest"));
    let image = client.resolve(&r, &amd64()).await.expect("resolve");
    let layer = image.manifest.layers()[0].clone();

    // A descriptor claiming one byte less: the download stops as soon as it overruns.
    let short = Descriptor::new(layer.media_type().clone(), layer.size() - 1, layer.digest().clone());
    let mut sink = Vec::new();
    match client.fetch_blob(&r, &short, &mut sink).await {
        Err(Error::SizeMismatch { expected, found, .. }) => {
            assert_eq!(expected, layer.size() - 1);
            assert!(found >= layer.size(), "found {found}");
        }
        other => panic!("expected SizeMismatch, got {other:?}"),
    }

    // The registry serves what its storage holds without checking it: flip one byte there and
    // the content no longer hashes to the digest asked for.
    let stored = registry.blob_path(layer.digest().digest());
    let mut bytes = std::fs::read(&stored).expect("registry blob");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&stored, &bytes).expect("corrupt registry blob");
    let dir = tempfile::tempdir().expect("tempdir");
    match fetch_to_file(&client, &r, &layer, &dir.path().join("layer")).await {
        Err(Error::DigestMismatch { expected, found }) => {
            assert_eq!(&expected, layer.digest());
            assert_ne!(found, expected);
        }
        other => panic!("expected DigestMismatch, got {other:?}"),
    }
}

#[tokio::test]
async fn multi_platform_index_selects_the_platform() {
    if !support::require_registry("multi_platform_index_selects_the_platform") {
        return;
    }
    let layout = support::build_busybox_layout("amd64,arm64/v8").expect("multi-arch layout");
    let registry = Registry::start();
    registry.seed(&layout, "multi:latest", &["--all"]).expect("seed index");
    let client = client();
    let r = reference(&registry.reference("multi:latest"));

    let arm = client.resolve(&r, &"linux/arm64/v8".parse().expect("platform")).await.expect("arm64");
    let amd = client.resolve(&r, &amd64()).await.expect("amd64");
    assert_eq!(arm.index_digest, Some(layout_top_digest(&layout)));
    assert_eq!(amd.index_digest, arm.index_digest);
    assert_ne!(arm.digest, amd.digest);
    assert_eq!(arm.config.architecture().to_string(), "arm64");
    assert_eq!(amd.config.architecture().to_string(), "amd64");
    assert_eq!(arm.manifest.layers(), amd.manifest.layers());

    match client.resolve(&r, &"linux/s390x".parse().expect("platform")).await {
        Err(Error::NoMatchingPlatform { available, .. }) => {
            assert_eq!(available, ["linux/amd64", "linux/arm64"]);
        }
        other => panic!("expected NoMatchingPlatform, got {other:?}"),
    }
}

#[tokio::test]
async fn docker_schema2_parses_into_oci_types() {
    if !support::require_registry("docker_schema2_parses_into_oci_types") {
        return;
    }
    let registry = Registry::start();
    registry.seed(support::busybox_layout(), "docker:latest", &["--format", "v2s2"]).expect("seed v2s2");
    let client = client();
    let r = reference(&registry.reference("docker:latest"));
    let image = client.resolve(&r, &amd64()).await.expect("resolve v2s2");
    assert_eq!(image.media_type.to_string(), rbuild_registry::DOCKER_MANIFEST_V2);
    assert_eq!(image.manifest.config().media_type().to_string(), rbuild_registry::DOCKER_CONFIG);
    assert_eq!(image.config.architecture().to_string(), "amd64");
    let layer = &image.manifest.layers()[0];
    let mut sink = Vec::new();
    client.fetch_blob(&r, layer, &mut sink).await.expect("fetch v2s2 layer");
    assert_eq!(sink.len() as u64, layer.size());
}
