//! Pushes to a real registry (Debian's docker-registry on a loopback port), checked with skopeo
//! and by pulling back with our client: plain, over TLS with htpasswd auth, mounts, chunked
//! uploads, and a registry restarted mid-push. Skips, saying why, when the tools are missing.

mod image;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use image::{Blob, Image};
use rbuild_registry::oci_spec::image::MediaType;
use rbuild_registry::{Client, ClientOptions, Error, OpenWith, Platform, PushBlobOptions, PushOutcome, Reference};
use support::{Registry, RegistryOptions};
use tokio::io::AsyncWriteExt;

fn options() -> ClientOptions {
    let mut options = ClientOptions::default();
    options.use_docker_config = false;
    options.retry_delay = Duration::from_millis(50);
    options
}

fn reference(text: &str) -> Reference {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// Pushes every blob, then the manifest; returns the blobs' outcomes.
async fn push_image(client: &Client, r: &Reference, image: &Image) -> Vec<PushOutcome> {
    let mut outcomes = Vec::new();
    for blob in image.blobs() {
        let outcome = client
            .push_blob(r, &blob.desc, blob.bytes.clone(), &PushBlobOptions::default())
            .await
            .unwrap_or_else(|e| panic!("pushing {}: {e:?}", blob.desc.digest()));
        outcomes.push(outcome);
    }
    let digest =
        client.push_manifest(r, &MediaType::ImageManifest, image.manifest.clone()).await.expect("push manifest");
    assert_eq!(digest, image.manifest_digest());
    outcomes
}

/// skopeo sees the image we pushed, and our client pulls back the same bytes.
async fn check_pushed(registry: &Registry, client: &Client, name_tag: &str, image: &Image) {
    let inspect = registry.skopeo_inspect(name_tag, false).expect("skopeo inspect");
    assert_eq!(inspect["Digest"], image.manifest_digest().to_string(), "{inspect}");
    assert_eq!(inspect["Architecture"], "amd64");
    let layers: Vec<String> = image.layers.iter().map(|l| l.desc.digest().to_string()).collect();
    assert_eq!(inspect["Layers"], serde_json::json!(layers));
    let raw = registry.skopeo_inspect(name_tag, true).expect("skopeo inspect --raw");
    let ours: serde_json::Value = serde_json::from_slice(&image.manifest).expect("manifest json");
    assert_eq!(raw, ours);

    let r = reference(&registry.reference(name_tag));
    let pulled = client
        .resolve(&r, &"linux/amd64".parse::<Platform>().expect("platform"))
        .await
        .expect("resolve what we pushed");
    assert_eq!(pulled.digest, image.manifest_digest());
    assert_eq!(pulled.manifest_bytes, image.manifest);
    for layer in &image.layers {
        let mut back = Vec::new();
        client.fetch_blob(&r, &layer.desc, &mut back).await.expect("pull layer back");
        assert_eq!(back, layer.bytes);
    }
}

#[tokio::test]
async fn push_image_then_inspect_with_skopeo_and_pull_back() {
    let opts = RegistryOptions::default();
    if !support::require_registry_with("push_image_then_inspect_with_skopeo_and_pull_back", &opts) {
        return;
    }
    let registry = Registry::start_with(opts);
    let client = Client::new(options()).expect("client");
    let image = Image::new(vec![Blob::layer(3000, 1), Blob::layer(70_000, 2)]);
    let r = reference(&registry.reference("app:1.0"));
    let outcomes = push_image(&client, &r, &image).await;
    assert_eq!(outcomes, [PushOutcome::Uploaded; 3]);
    check_pushed(&registry, &client, "app:1.0", &image).await;
    // A second push sends no blob.
    let outcomes = push_image(&client, &r, &image).await;
    assert_eq!(outcomes, [PushOutcome::Existed; 3]);
}

#[tokio::test]
async fn push_over_tls_with_htpasswd_credentials_from_docker_config() {
    let opts = RegistryOptions { tls: true, htpasswd: Some(("alice".into(), "s3cret-hunter2".into())) };
    if !support::require_registry_with("push_over_tls_with_htpasswd_credentials_from_docker_config", &opts) {
        return;
    }
    let registry = Registry::start_with(opts);
    let host = registry.host();
    let home = tempfile::tempdir().expect("tempdir");
    // The CA as docker finds it: certs.d/<host:port>/ca.crt.
    let certs_d = home.path().join("certs.d");
    std::fs::create_dir_all(certs_d.join(&host)).expect("mkdir certs.d");
    let ca = registry.ca_cert_path().expect("TLS registry has a CA");
    std::fs::copy(&ca, certs_d.join(&host).join("ca.crt")).expect("copy CA");
    let config = home.path().join("docker/config.json");
    let password = rbuild_registry::Secret::new("s3cret-hunter2".to_owned());
    rbuild_registry::store_login_at(&config, &host, "alice", &password).expect("login");

    let mut tls_options = options();
    tls_options.insecure_hosts.clear(); // 127.0.0.1 over HTTPS
    tls_options.certs_dir = Some(certs_d.clone());
    tls_options.use_docker_config = true;
    tls_options.docker_config = Some(config.clone());
    let client = Client::new(tls_options.clone()).expect("client");
    let image = Image::new(vec![Blob::layer(5000, 3)]);
    let r = reference(&registry.reference("secure/app:1"));
    push_image(&client, &r, &image).await;
    check_pushed(&registry, &client, "secure/app:1", &image).await;

    // The CA given as an option instead of certs.d.
    let mut ca_option = tls_options.clone();
    ca_option.certs_dir = None;
    ca_option.ca_certs = vec![ca];
    let client = Client::new(ca_option).expect("client");
    assert!(client.blob_exists(&r, &image.layers[0].desc).await.expect("HEAD"));

    // Without the CA: a TLS error, not a silent downgrade.
    let mut untrusted = tls_options.clone();
    untrusted.certs_dir = None;
    let err =
        Client::new(untrusted).expect("client").blob_exists(&r, &image.layers[0].desc).await.expect_err("unknown CA");
    let chain = error_chain(&err);
    assert!(matches!(err, Error::Transport { .. }) && chain.contains("certificate"), "{chain}");

    // Wrong password, and none at all.
    rbuild_registry::store_login_at(&config, &host, "alice", &rbuild_registry::Secret::new("nope".into()))
        .expect("login");
    let err = Client::new(tls_options.clone())
        .expect("client")
        .blob_exists(&r, &image.layers[0].desc)
        .await
        .expect_err("bad password");
    assert!(matches!(err, Error::Unauthorized { sent_credentials: true, .. }), "{err:?}");
    let mut anonymous = tls_options;
    anonymous.use_docker_config = false;
    let err =
        Client::new(anonymous).expect("client").blob_exists(&r, &image.layers[0].desc).await.expect_err("anonymous");
    assert!(matches!(err, Error::Unauthorized { sent_credentials: false, .. }), "{err:?}");
    assert!(!format!("{err:?} {chain}").contains("hunter2"));
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        out.push_str(": ");
        out.push_str(&e.to_string());
        source = e.source();
    }
    out
}

#[tokio::test]
async fn second_repository_mounts_instead_of_uploading() {
    let opts = RegistryOptions::default();
    if !support::require_registry_with("second_repository_mounts_instead_of_uploading", &opts) {
        return;
    }
    let registry = Registry::start_with(opts);
    let client = Client::new(options()).expect("client");
    let layer = Blob::layer(200_000, 4);
    let a = reference(&registry.reference("team/a"));
    let b = reference(&registry.reference("team/b"));
    let none = PushBlobOptions::default();
    let first = client.push_blob(&a, &layer.desc, layer.bytes.clone(), &none).await;
    assert_eq!(first.expect("upload to a"), PushOutcome::Uploaded);
    let mounted = client
        .push_blob(&b, &layer.desc, layer.bytes.clone(), &PushBlobOptions::mount_from(&a))
        .await
        .expect("mount into b");
    assert_eq!(mounted, PushOutcome::Mounted);
    let again = client.push_blob(&b, &layer.desc, layer.bytes.clone(), &none).await;
    assert_eq!(again.expect("b has it"), PushOutcome::Existed);
    // The registry's access log agrees: a 201 mount, and no upload into b.
    let mounts = registry.requests("POST", "/v2/team/b/blobs/uploads/?");
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert!(mounts[0].contains("from=team%2Fa") && mounts[0].contains("\" 201 "), "{}", mounts[0]);
    assert!(registry.requests("PUT", "/v2/team/b/blobs/uploads/").is_empty());
    let mut back = Vec::new();
    client.fetch_blob(&b, &layer.desc, &mut back).await.expect("pull from b");
    assert_eq!(back, layer.bytes);
}

#[tokio::test]
async fn large_blob_goes_up_in_chunks() {
    let opts = RegistryOptions::default();
    if !support::require_registry_with("large_blob_goes_up_in_chunks", &opts) {
        return;
    }
    let registry = Registry::start_with(opts);
    let mut chunked = options();
    chunked.upload_chunk_size = 64 * 1024;
    let client = Client::new(chunked).expect("client");
    let layer = Blob::layer(5 * 64 * 1024 + 17, 5);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("blob");
    std::fs::write(&path, &layer.bytes).expect("write blob file");
    let r = reference(&registry.reference("chunked"));
    let outcome = client
        .push_blob(&r, &layer.desc, path.as_path(), &PushBlobOptions::default())
        .await
        .expect("chunked push from a file");
    assert_eq!(outcome, PushOutcome::Uploaded);
    let patches = registry.requests("PATCH", "/v2/chunked/blobs/uploads/");
    assert_eq!(patches.len(), 6, "{patches:?}");
    assert!(patches.iter().all(|l| l.contains("\" 202 ")), "{patches:?}");
    let stored = std::fs::read(registry.blob_path(layer.desc.digest().digest())).expect("stored");
    assert_eq!(stored, layer.bytes);
}

#[tokio::test]
async fn push_survives_a_registry_restart() {
    let opts = RegistryOptions::default();
    if !support::require_registry_with("push_survives_a_registry_restart", &opts) {
        return;
    }
    let registry = Arc::new(Registry::start_with(opts));
    let mut patient = options();
    patient.max_retries = 6;
    patient.retry_delay = Duration::from_millis(100);
    let client = Client::new(patient).expect("client");
    let layer = Blob::layer(4 * 1024 * 1024, 6);
    let half = layer.bytes.len() / 2;

    // The first opening delivers half the blob, says so, and waits; later ones deliver it all.
    let (half_sent, half_rx) = tokio::sync::oneshot::channel::<()>();
    let half_sent = std::sync::Mutex::new(Some(half_sent));
    let resume = Arc::new(tokio::sync::Notify::new());
    let opens = Arc::new(AtomicUsize::new(0));
    let (bytes, gate, counter) = (layer.bytes.clone(), Arc::clone(&resume), Arc::clone(&opens));
    let opener = OpenWith(move || {
        let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
        let signal = if first { half_sent.lock().expect("lock").take() } else { None };
        let (bytes, gate) = (bytes.clone(), Arc::clone(&gate));
        async move {
            let (mut writer, reader) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move {
                if let Some(signal) = signal {
                    let _ = writer.write_all(&bytes[..half]).await;
                    let _ = signal.send(());
                    gate.notified().await;
                    let _ = writer.write_all(&bytes[half..]).await;
                } else {
                    let _ = writer.write_all(&bytes).await;
                }
            });
            Ok(reader)
        }
    });
    let r = reference(&registry.reference("restarted"));
    let desc = layer.desc.clone();
    let pusher = client.clone();
    let push = tokio::spawn(async move { pusher.push_blob(&r, &desc, opener, &PushBlobOptions::default()).await });
    tokio::time::timeout(Duration::from_secs(30), half_rx).await.expect("half the blob within 30 s").expect("signal");
    let restarting = Arc::clone(&registry);
    tokio::task::spawn_blocking(move || restarting.restart()).await.expect("join").expect("restart the registry");
    resume.notify_one();
    let outcome = tokio::time::timeout(Duration::from_secs(60), push)
        .await
        .expect("push finishes")
        .expect("join")
        .expect("push succeeds after the restart");
    assert_eq!(outcome, PushOutcome::Uploaded);
    assert!(opens.load(Ordering::SeqCst) >= 2, "the source was re-opened");
    let r = reference(&registry.reference("restarted"));
    let mut back = Vec::new();
    client.fetch_blob(&r, &layer.desc, &mut back).await.expect("pull back");
    assert_eq!(back, layer.bytes);
}

#[tokio::test]
async fn mismatched_source_never_lands() {
    let opts = RegistryOptions::default();
    if !support::require_registry_with("mismatched_source_never_lands", &opts) {
        return;
    }
    let registry = Registry::start_with(opts);
    let client = Client::new(options()).expect("client");
    let layer = Blob::layer(100_000, 7);
    let mut wrong = layer.bytes.to_vec();
    wrong[99_999] ^= 0xff;
    let r = reference(&registry.reference("strict"));
    let err = client
        .push_blob(&r, &layer.desc, bytes::Bytes::from(wrong), &PushBlobOptions::default())
        .await
        .expect_err("mismatch");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err:?}");
    assert!(!client.blob_exists(&r, &layer.desc).await.expect("HEAD"));
    assert!(!Path::new(&registry.blob_path(layer.desc.digest().digest())).exists());
}
