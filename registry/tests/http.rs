//! Client behaviour against a scripted server: token auth, retries, resumed and lying downloads.

mod fake;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fake::{FakeServer, Reply, Request};
use rbuild_registry::oci_spec::image::Descriptor;
use rbuild_registry::{Client, ClientOptions, DigestHasher, Error, Platform, Reference};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn sha(bytes: &[u8]) -> String {
    let mut h = DigestHasher::sha256();
    h.update(bytes);
    h.finish().to_string()
}

/// A one-layer image whose bytes the server hands out.
#[derive(Clone)]
struct Image {
    config: Vec<u8>,
    layer: Vec<u8>,
    manifest: Vec<u8>,
}

impl Image {
    fn new(arch: &str) -> Self {
        let layer: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let config = format!(
            r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
            sha(b"uncompressed")
        )
        .into_bytes();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
            sha(&config),
            config.len(),
            sha(&layer),
            layer.len()
        )
        .into_bytes();
        Self { config, layer, manifest }
    }

    fn layer_path(&self) -> String {
        format!("/v2/r/blobs/{}", sha(&self.layer))
    }

    fn layer_descriptor(&self) -> Descriptor {
        Descriptor::new(
            "application/vnd.oci.image.layer.v1.tar".into(),
            self.layer.len() as u64,
            sha(&self.layer).parse::<rbuild_registry::oci_spec::image::Digest>().expect("digest"),
        )
    }

    /// Serves manifest (by tag and digest), config and layer; `None` for anything else.
    fn serve(&self, req: &Request) -> Option<Reply> {
        let path = req.path();
        if path == "/v2/r/manifests/latest" || path == format!("/v2/r/manifests/{}", sha(&self.manifest)) {
            return Some(Reply::ok(self.manifest.clone()).header("Content-Type", OCI_MANIFEST));
        }
        if path == format!("/v2/r/blobs/{}", sha(&self.config)) {
            return Some(Reply::ok(self.config.clone()));
        }
        if path == self.layer_path() {
            return Some(Reply::ok(self.layer.clone()));
        }
        None
    }
}

fn client() -> Client {
    let mut options = ClientOptions::default();
    options.retry_delay = Duration::from_millis(1);
    // Whatever the machine's ~/.docker/config.json says must not change these tests.
    options.use_docker_config = false;
    Client::new(options).expect("client")
}

fn reference(server: &FakeServer, rest: &str) -> Reference {
    format!("{}/{rest}", server.host()).parse().expect("reference")
}

fn amd64() -> Platform {
    "linux/amd64".parse().expect("platform")
}

const UNAUTHORIZED: &str = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;

#[tokio::test]
async fn bearer_token_is_fetched_once_and_reused() {
    let image = Image::new("amd64");
    let server = FakeServer::start(move |req| {
        if req.path() == "/token" {
            assert_eq!(req.target, "/token?service=fake&scope=repository%3Ar%3Apull");
            return Reply::ok(r#"{"token":"tok","expires_in":300}"#);
        }
        if req.header("authorization") != Some("Bearer tok") {
            let realm =
                format!("Bearer realm=\"http://{}/token\",service=\"fake\"", req.header("host").unwrap_or_default());
            return Reply::status(401).header("WWW-Authenticate", &realm).body(UNAUTHORIZED);
        }
        image.serve(req).unwrap_or(Reply::status(404))
    });
    let client = client();
    let r = reference(&server, "r:latest");
    let first = client.resolve(&r, &amd64()).await.expect("resolve with token");
    let again = client.resolve(&r, &amd64()).await.expect("resolve again");
    assert_eq!(first.digest, again.digest);
    let mut sink = Vec::new();
    client.fetch_blob(&r, &first.manifest.layers()[0], &mut sink).await.expect("blob with token");
    assert_eq!(server.count("/token"), 1, "token cached per repository and scope");
    // One anonymous attempt, then everything carries the token.
    let anonymous = server.requests().iter().filter(|q| q.header("authorization").is_none()).count();
    assert_eq!(anonymous, 2, "the first manifest GET and the token GET");
    let manifest_get = &server.requests()[0];
    for accepted in ["oci.image.index", "manifest.list.v2", "oci.image.manifest", "manifest.v2+json"] {
        assert!(manifest_get.header("accept").is_some_and(|a| a.contains(accepted)), "Accept has {accepted}");
    }
    assert!(manifest_get.header("user-agent").is_some_and(|ua| ua.starts_with("rbuild/")));
}

#[tokio::test]
async fn basic_challenge_or_refused_token_is_unauthorized() {
    let basic =
        FakeServer::start(|_| Reply::status(401).header("WWW-Authenticate", "Basic realm=\"r\"").body(UNAUTHORIZED));
    match client().resolve(&reference(&basic, "r:latest"), &amd64()).await {
        Err(Error::Unauthorized { envelope: Some(e), .. }) => assert!(e.has_code("UNAUTHORIZED")),
        other => panic!("expected Unauthorized, got {other:?}"),
    }

    let refusing = FakeServer::start(|req| {
        if req.path() == "/token" {
            return Reply::ok(r#"{"access_token":"useless"}"#);
        }
        let realm = format!("Bearer realm=\"http://{}/token\"", req.header("host").unwrap_or_default());
        Reply::status(401).header("WWW-Authenticate", &realm).body(UNAUTHORIZED)
    });
    let err = client().resolve(&reference(&refusing, "r:latest"), &amd64()).await.expect_err("refused");
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert_eq!(refusing.count("/token"), 1, "no token loop");
    assert!(!format!("{err:?} {err}").contains("useless"), "token leaked into the error");
}

#[tokio::test]
async fn transient_failures_are_retried_then_reported() {
    let image = Image::new("amd64");
    let failures = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&failures);
    let flaky = FakeServer::start(move |req| {
        if req.path() == "/v2/r/manifests/latest" && seen.fetch_add(1, Ordering::SeqCst) < 2 {
            return Reply::status(503);
        }
        image.serve(req).unwrap_or(Reply::status(404))
    });
    client().resolve(&reference(&flaky, "r:latest"), &amd64()).await.expect("third time lucky");
    assert_eq!(flaky.count("/v2/r/manifests/latest"), 3);

    let down = FakeServer::start(|_| {
        Reply::status(500).body(r#"{"errors":[{"code":"UNKNOWN","message":"storage on fire"}]}"#)
    });
    match client().resolve(&reference(&down, "r:latest"), &amd64()).await {
        Err(Error::Status { status, envelope: Some(e), .. }) => {
            assert_eq!(status.as_u16(), 500);
            assert!(e.to_string().contains("storage on fire"));
        }
        other => panic!("expected Status, got {other:?}"),
    }
    assert_eq!(down.count("/v2/r/manifests/latest"), 4, "one try and three retries");
}

#[tokio::test]
async fn broken_download_resumes_with_range() {
    let image = Image::new("amd64");
    let half = image.layer.len() / 2;
    let served = image.clone();
    let server = FakeServer::start(move |req| match req.header("range") {
        None => Reply::ok(served.layer.clone()).cut_at(half),
        Some(range) => {
            assert_eq!(range, format!("bytes={half}-"));
            let total = served.layer.len();
            Reply::status(206)
                .header("Content-Range", &format!("bytes {half}-{}/{total}", total - 1))
                .body(served.layer[half..].to_vec())
        }
    });
    let mut sink = Vec::new();
    client()
        .fetch_blob(&reference(&server, "r"), &image.layer_descriptor(), &mut sink)
        .await
        .expect("resumed download");
    assert_eq!(sink, image.layer);
    assert_eq!(server.count(&image.layer_path()), 2);
}

#[tokio::test]
async fn resume_against_a_server_ignoring_range_skips_what_was_written() {
    let image = Image::new("amd64");
    let served = image.clone();
    let server = FakeServer::start(move |req| match req.header("range") {
        None => Reply::ok(served.layer.clone()).cut_at(1000),
        Some(_) => Reply::ok(served.layer.clone()),
    });
    let mut sink = Vec::new();
    client()
        .fetch_blob(&reference(&server, "r"), &image.layer_descriptor(), &mut sink)
        .await
        .expect("download restarted from zero");
    assert_eq!(sink, image.layer);
}

#[tokio::test]
async fn download_that_keeps_breaking_gives_up() {
    let image = Image::new("amd64");
    let served = image.clone();
    let server = FakeServer::start(move |_| Reply::ok(served.layer.clone()).cut_at(1000));
    let mut sink = Vec::new();
    let err = client()
        .fetch_blob(&reference(&server, "r"), &image.layer_descriptor(), &mut sink)
        .await
        .expect_err("never completes");
    assert!(matches!(err, Error::BlobStream { written: 1000, .. }), "{err:?}");
    assert_eq!(server.count(&image.layer_path()), 4);
}

#[tokio::test]
async fn body_that_ends_short_but_cleanly_is_resumed() {
    // A proxy cut the body and framed it as complete: Content-Length says 1000.
    let image = Image::new("amd64");
    let served = image.clone();
    let server = FakeServer::start(move |req| match req.header("range") {
        None => Reply::ok(served.layer[..1000].to_vec()),
        Some(range) => {
            assert_eq!(range, "bytes=1000-");
            let total = served.layer.len();
            Reply::status(206)
                .header("Content-Range", &format!("bytes 1000-{}/{total}", total - 1))
                .body(served.layer[1000..].to_vec())
        }
    });
    let mut sink = Vec::new();
    client()
        .fetch_blob(&reference(&server, "r"), &image.layer_descriptor(), &mut sink)
        .await
        .expect("resumed after a short body");
    assert_eq!(sink, image.layer);
    assert_eq!(server.count(&image.layer_path()), 2);
}

#[tokio::test]
async fn blob_shorter_than_its_descriptor_is_a_size_mismatch() {
    // Always short: retried, then reported as what it is.
    let image = Image::new("amd64");
    let served = image.clone();
    let server = FakeServer::start(move |_| Reply::ok(served.layer[..1000].to_vec()));
    let err = client()
        .fetch_blob(&reference(&server, "r"), &image.layer_descriptor(), &mut Vec::new())
        .await
        .expect_err("short every time");
    assert!(matches!(err, Error::SizeMismatch { found: 1000, .. }), "{err:?}");
    assert_eq!(server.count(&image.layer_path()), 4, "one try and three resumes");

    // A registry that has no bytes past the end of its (shorter) blob answers the resume 416.
    let served = image.clone();
    let server = FakeServer::start(move |req| match req.header("range") {
        None => Reply::ok(served.layer[..1000].to_vec()),
        Some(_) => Reply::status(416),
    });
    let err = client()
        .fetch_blob(&reference(&server, "r"), &image.layer_descriptor(), &mut Vec::new())
        .await
        .expect_err("shorter blob");
    assert!(matches!(err, Error::SizeMismatch { found: 1000, .. }), "{err:?}");
}

#[tokio::test]
async fn redirected_blob_is_followed() {
    let image = Image::new("amd64");
    let served = image.clone();
    let server = FakeServer::start(move |req| {
        if req.path() == "/storage/layer" {
            return Reply::ok(served.layer.clone());
        }
        Reply::status(307).header("Location", "/storage/layer")
    });
    let mut sink = Vec::new();
    client()
        .fetch_blob(&reference(&server, "r"), &image.layer_descriptor(), &mut sink)
        .await
        .expect("followed redirect");
    assert_eq!(sink, image.layer);
}

#[tokio::test]
async fn lying_registry_is_caught() {
    // Blob bytes that are not the blob.
    let image = Image::new("amd64");
    let served = image.clone();
    let server = FakeServer::start(move |_| {
        let mut wrong = served.layer.clone();
        wrong[10] ^= 1;
        Reply::ok(wrong)
    });
    let desc = image.layer_descriptor();
    let err = client().fetch_blob(&reference(&server, "r"), &desc, &mut Vec::new()).await.expect_err("lie");
    assert!(matches!(&err, Error::DigestMismatch { expected, .. } if expected == desc.digest()), "{err:?}");

    // A tag whose Docker-Content-Digest does not match the manifest sent.
    let served = image.clone();
    let server = FakeServer::start(move |req| {
        let reply = served.serve(req).unwrap_or(Reply::status(404));
        reply.header("Docker-Content-Digest", &sha(b"something else"))
    });
    let err = client().resolve(&reference(&server, "r:latest"), &amd64()).await.expect_err("lie");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err:?}");

    // An index entry served with another manifest of the same size.
    let amd = image.clone();
    let arm = Image::new("arm64");
    assert_eq!(amd.manifest.len(), arm.manifest.len());
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{},"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
        sha(&amd.manifest),
        amd.manifest.len()
    );
    let server = FakeServer::start(move |req| {
        if req.path() == "/v2/r/manifests/latest" {
            // No Content-Type: the media type is read from the document itself.
            return Reply::ok(index.clone());
        }
        if req.path() == format!("/v2/r/manifests/{}", sha(&amd.manifest)) {
            return Reply::ok(arm.manifest.clone()).header("Content-Type", OCI_MANIFEST);
        }
        Reply::status(404)
    });
    let err = client().resolve(&reference(&server, "r:latest"), &amd64()).await.expect_err("lie");
    assert!(
        matches!(&err, Error::DigestMismatch { expected, .. } if expected.to_string() == sha(&image.manifest)),
        "{err:?}"
    );
}

#[tokio::test]
async fn fetch_manifest_returns_an_artifact_verified_without_fetching_its_config() {
    // A build-cache manifest: its config is no image config, which `resolve` refuses.
    let config = br#"{"layers":[],"records":{}}"#.to_vec();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.rbuild.cache.config.v1+json","digest":"{}","size":{}}},"layers":[]}}"#,
        sha(&config),
        config.len()
    )
    .into_bytes();
    let served = manifest.clone();
    let server = FakeServer::start(move |req| {
        if req.path() == "/v2/r/manifests/cache" {
            return Reply::ok(served.clone()).header("Content-Type", OCI_MANIFEST);
        }
        Reply::status(404)
    });
    let r = reference(&server, "r:cache");
    let fetched = client().fetch_manifest(&r).await.expect("fetch manifest");
    assert_eq!(fetched.media_type.to_string(), OCI_MANIFEST);
    assert_eq!(fetched.bytes.as_ref(), manifest.as_slice());
    assert_eq!(fetched.digest.to_string(), sha(&manifest));
    assert_eq!(server.requests().len(), 1, "nothing but the manifest");
    // resolve() wants a container image: it names what the config is instead.
    let err = client().resolve(&r, &amd64()).await.expect_err("not an image");
    assert!(
        matches!(&err, Error::NotAnImageConfig { media_type, .. } if media_type == "application/vnd.rbuild.cache.config.v1+json"),
        "{err:?}"
    );

    // The registry's Docker-Content-Digest must match what it sent.
    let server = FakeServer::start(move |_| {
        Reply::ok(manifest.clone()).header("Content-Type", OCI_MANIFEST).header("Docker-Content-Digest", &sha(b"x"))
    });
    let err = client().fetch_manifest(&reference(&server, "r:cache")).await.expect_err("lie");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err:?}");
}
