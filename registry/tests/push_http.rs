//! Push and auth behaviour against a scripted server: the upload protocol as sent, token scopes
//! and credentials, and registries that lie, fail, or answer with HTML.

mod fake;
mod image;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use fake::{FakeServer, Reply, Request};
use image::{sha, Blob};
use rbuild_registry::oci_spec::image::MediaType;
use rbuild_registry::{Client, ClientOptions, Credentials, Error, OpenWith, PushBlobOptions, PushOutcome, Reference};

fn options() -> ClientOptions {
    let mut options = ClientOptions::default();
    options.retry_delay = Duration::from_millis(1);
    options.use_docker_config = false;
    options
}

fn client() -> Client {
    Client::new(options()).expect("client")
}

fn with_credentials(server: &FakeServer, credentials: Credentials) -> Client {
    let mut options = options();
    options.credentials.insert(server.host(), credentials);
    Client::new(options).expect("client")
}

fn reference(server: &FakeServer, rest: &str) -> Reference {
    format!("{}/{rest}", server.host()).parse().expect("reference")
}

fn query(req: &Request, name: &str) -> Option<String> {
    let query = req.target.split_once('?')?.1;
    url_pairs(query).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

fn url_pairs(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .expect("query")
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A registry that stores one repository's blobs and manifests in memory and speaks the upload
/// protocol, checking what it is sent. Session state is in the Location (`?n=<bytes so far>`).
#[derive(Default)]
struct Store {
    blobs: Mutex<Vec<(String, Vec<u8>)>>,
    sessions: Mutex<Vec<Vec<u8>>>,
}

impl Store {
    fn handle(&self, req: &Request) -> Reply {
        let path = req.path();
        if let Some(digest) = path.strip_prefix("/v2/r/blobs/").filter(|d| d.starts_with("sha256:")) {
            let found = self.blobs.lock().expect("lock").iter().any(|(d, _)| d == digest);
            return Reply::status(if found { 200 } else { 404 });
        }
        if path == "/v2/r/blobs/uploads/" && req.method == "POST" {
            let mut sessions = self.sessions.lock().expect("lock");
            sessions.push(Vec::new());
            let id = sessions.len() - 1;
            return Reply::status(202).header("Location", &format!("/v2/r/blobs/uploads/{id}?n=0"));
        }
        if let Some(id) = path.strip_prefix("/v2/r/blobs/uploads/") {
            let id: usize = id.parse().expect("session id");
            let mut sessions = self.sessions.lock().expect("lock");
            let session = &mut sessions[id];
            let n: usize = query(req, "n").expect("n").parse().expect("n");
            assert_eq!(n, session.len(), "the newest Location is used");
            assert_eq!(req.header("content-length"), Some(req.body.len().to_string().as_str()));
            if !req.body.is_empty() {
                assert_eq!(req.header("content-type"), Some("application/octet-stream"));
            }
            if req.method == "PATCH" {
                let range = format!("{}-{}", n, n + req.body.len() - 1);
                assert_eq!(req.header("content-range"), Some(range.as_str()));
            }
            session.extend_from_slice(&req.body);
            let end = session.len();
            if req.method == "PATCH" {
                return Reply::status(202)
                    .header("Location", &format!("/v2/r/blobs/uploads/{id}?n={end}"))
                    .header("Range", &format!("0-{}", end - 1));
            }
            assert_eq!(req.method, "PUT");
            let digest = query(req, "digest").expect("digest");
            assert_eq!(digest, sha(session).to_string(), "stored bytes hash to ?digest=");
            self.blobs.lock().expect("lock").push((digest.clone(), session.clone()));
            return Reply::status(201).header("Docker-Content-Digest", &digest);
        }
        if path.starts_with("/v2/r/manifests/") && req.method == "PUT" {
            return Reply::status(201).header("Docker-Content-Digest", sha(&req.body).as_ref());
        }
        Reply::status(404)
    }

    fn blob(&self, digest: &str) -> Option<Vec<u8>> {
        let blobs = self.blobs.lock().expect("lock");
        blobs.iter().find(|(d, _)| d == digest).map(|(_, b)| b.clone())
    }
}

#[tokio::test]
async fn monolithic_and_chunked_uploads_follow_the_protocol() {
    let store = Arc::new(Store::default());
    let handler = Arc::clone(&store);
    let server = FakeServer::start(move |req| handler.handle(req));
    let mut options = options();
    options.upload_chunk_size = 40_000;
    let client = Client::new(options).expect("client");
    let r = reference(&server, "r:1");
    let none = PushBlobOptions::default();

    let small = Blob::layer(40_000, 1);
    let outcome = client.push_blob(&r, &small.desc, small.bytes.clone(), &none).await;
    assert_eq!(outcome.expect("small"), PushOutcome::Uploaded);
    let big = Blob::layer(100_001, 2);
    let outcome = client.push_blob(&r, &big.desc, &big.bytes, &none).await;
    assert_eq!(outcome.expect("big"), PushOutcome::Uploaded);
    let empty = Blob::layer(0, 3);
    let outcome = client.push_blob(&r, &empty.desc, empty.bytes.clone(), &none).await;
    assert_eq!(outcome.expect("empty"), PushOutcome::Uploaded);
    for blob in [&small, &big, &empty] {
        assert_eq!(store.blob(blob.desc.digest().as_ref()).as_deref(), Some(&blob.bytes[..]));
    }
    let patches: Vec<usize> = server.requests().iter().filter(|q| q.method == "PATCH").map(|q| q.body.len()).collect();
    assert_eq!(patches, [40_000, 40_000, 20_001], "only the big blob is chunked");
    let closing = server.requests().into_iter().rev().find(|q| q.method == "PUT" && q.path().ends_with("/1"));
    assert!(closing.expect("closing PUT").body.is_empty());

    let again = client.push_blob(&r, &big.desc, &big.bytes, &none).await;
    assert_eq!(again.expect("again"), PushOutcome::Existed);
    assert_eq!(server.requests().iter().filter(|q| q.method == "POST").count(), 3);

    let manifest = Bytes::from_static(br#"{"schemaVersion":2}"#);
    let digest = client.push_manifest(&r, &MediaType::ImageManifest, manifest.clone()).await.expect("manifest");
    assert_eq!(digest, sha(&manifest));
    let put = server.requests().into_iter().find(|q| q.path() == "/v2/r/manifests/1").expect("PUT");
    assert_eq!(put.header("content-type"), Some(image::OCI_MANIFEST));
    // Pinned by digest only: stored under the digest, which must match.
    let pinned = r.with_digest(digest.clone());
    let by_digest: Reference = format!("{}/r@{digest}", server.host()).parse().expect("ref");
    client.push_manifest(&by_digest, &MediaType::ImageManifest, manifest.clone()).await.expect("by digest");
    assert_eq!(server.count(&format!("/v2/r/manifests/{digest}")), 1);
    let err = client
        .push_manifest(&pinned, &MediaType::ImageManifest, Bytes::from_static(b"{}"))
        .await
        .expect_err("bytes do not match the pinned digest");
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err:?}");
}

#[tokio::test]
async fn broken_sessions_restart_and_reopen_the_source() {
    let store = Arc::new(Store::default());
    let handler = Arc::clone(&store);
    let failed = Arc::new(AtomicUsize::new(0));
    let fail = Arc::clone(&failed);
    let server = FakeServer::start(move |req| {
        // The second chunk of the first session fails, as a registry restarting would.
        if req.method == "PATCH" && req.target.ends_with("?n=30000") && fail.fetch_add(1, Ordering::SeqCst) == 0 {
            return Reply::status(503);
        }
        handler.handle(req)
    });
    let mut options = options();
    options.upload_chunk_size = 30_000;
    let client = Client::new(options).expect("client");
    let blob = Blob::layer(70_000, 4);
    let opens = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&opens);
    let bytes = blob.bytes.clone();
    let opener = OpenWith(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        let bytes = bytes.clone();
        async move { Ok(std::io::Cursor::new(bytes)) }
    });
    let outcome = client
        .push_blob(&reference(&server, "r"), &blob.desc, opener, &PushBlobOptions::default())
        .await
        .expect("push survives a broken session");
    assert_eq!(outcome, PushOutcome::Uploaded);
    assert_eq!(opens.load(Ordering::SeqCst), 2, "the source was re-read from the start");
    assert_eq!(store.blob(blob.desc.digest().as_ref()).as_deref(), Some(&blob.bytes[..]));
    assert_eq!(server.requests().iter().filter(|q| q.method == "POST").count(), 2);
}

#[tokio::test]
async fn a_source_that_does_not_match_is_never_completed() {
    let store = Arc::new(Store::default());
    let handler = Arc::clone(&store);
    let server = FakeServer::start(move |req| handler.handle(req));
    let blob = Blob::layer(50_000, 5);
    let mut wrong = blob.bytes.to_vec();
    wrong[49_999] ^= 1;
    let err = client()
        .push_blob(&reference(&server, "r"), &blob.desc, Bytes::from(wrong), &PushBlobOptions::default())
        .await
        .expect_err("mismatch");
    assert!(matches!(&err, Error::DigestMismatch { expected, .. } if expected == blob.desc.digest()), "{err:?}");
    let short = Bytes::from(blob.bytes[..10].to_vec());
    let err = client()
        .push_blob(&reference(&server, "r"), &blob.desc, short, &PushBlobOptions::default())
        .await
        .expect_err("short");
    assert!(matches!(err, Error::SizeMismatch { found: 10, .. }), "{err:?}");
    let missing = std::path::Path::new("/nonexistent/blob");
    let err = client()
        .push_blob(&reference(&server, "r"), &blob.desc, missing, &PushBlobOptions::default())
        .await
        .expect_err("unreadable");
    assert!(matches!(err, Error::BlobRead { .. }), "{err:?}");
    assert!(store.blob(blob.desc.digest().as_ref()).is_none());
    assert_eq!(server.requests().iter().filter(|q| q.method == "POST").count(), 3, "no retries");
}

#[tokio::test]
async fn a_wrong_digest_echo_is_an_error() {
    let lying = FakeServer::start(|req| match req.method.as_str() {
        "HEAD" => Reply::status(404),
        "POST" => Reply::status(202).header("Location", "/v2/r/blobs/uploads/x?s=1"),
        _ => Reply::status(201).header("Docker-Content-Digest", sha(b"other").as_ref()),
    });
    let blob = Blob::layer(1000, 6);
    let r = reference(&lying, "r:1");
    let err =
        client().push_blob(&r, &blob.desc, blob.bytes.clone(), &PushBlobOptions::default()).await.expect_err("lie");
    match &err {
        Error::RegistryDigestMismatch { expected, returned, .. } => {
            assert_eq!(expected, blob.desc.digest());
            assert_eq!(returned, sha(b"other").as_ref());
        }
        other => panic!("expected RegistryDigestMismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("stored the content as"), "{err}");
    let put = lying.requests().into_iter().find(|q| q.method == "PUT").expect("PUT");
    assert_eq!(query(&put, "s").as_deref(), Some("1"), "the session's query is kept");
    let err = client().push_manifest(&r, &MediaType::ImageManifest, Bytes::from_static(b"{}")).await.expect_err("lie");
    assert!(matches!(err, Error::RegistryDigestMismatch { .. }), "{err:?}");
    assert_eq!(lying.requests().iter().filter(|q| q.method == "PUT").count(), 2, "never retried");
}

#[tokio::test]
async fn html_pages_give_clear_errors() {
    let proxy = FakeServer::start(|req| {
        let page = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>";
        match req.method.as_str() {
            "HEAD" => Reply::status(404),
            "POST" => Reply::ok("<html><title>Please log in</title></html>").header("Content-Type", "text/html"),
            _ => Reply::status(502).header("Content-Type", "text/html").body(page),
        }
    });
    let r = reference(&proxy, "r:1");
    let blob = Blob::layer(10, 7);
    let err =
        client().push_blob(&r, &blob.desc, blob.bytes.clone(), &PushBlobOptions::default()).await.expect_err("html");
    match &err {
        Error::UnexpectedResponse { status, content_type, .. } => {
            assert_eq!(status.as_u16(), 200);
            assert_eq!(content_type, "text/html");
        }
        other => panic!("expected UnexpectedResponse, got {other:?}"),
    }
    let err = client().push_manifest(&r, &MediaType::ImageManifest, Bytes::from_static(b"{}")).await.expect_err("502");
    assert!(matches!(&err, Error::Status { status, .. } if status.as_u16() == 502), "{err:?}");
    assert!(err.to_string().ends_with("answered 502 Bad Gateway: \"502 Bad Gateway\""), "{err}");
    assert_eq!(proxy.count("/v2/r/manifests/1"), 4, "one try and three retries");
}

fn bearer_challenge(req: &Request) -> Reply {
    let realm = format!("Bearer realm=\"http://{}/token\",service=\"fake\"", req.header("host").unwrap_or_default());
    Reply::status(401).header("WWW-Authenticate", &realm)
}

#[tokio::test]
async fn token_requests_carry_credentials_and_push_scopes() {
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice:pw"));
    let server = FakeServer::start(move |req| {
        if req.path() == "/token" {
            if req.method == "POST" {
                let form = url_pairs(std::str::from_utf8(&req.body).expect("form"));
                assert!(form.contains(&("grant_type".into(), "refresh_token".into())), "{form:?}");
                assert!(form.contains(&("refresh_token".into(), "refresh".into())), "{form:?}");
                return Reply::ok(r#"{"access_token":"oauth"}"#);
            }
            assert_eq!(req.header("authorization"), Some(basic.as_str()));
            return Reply::ok(r#"{"token":"tok","expires_in":300}"#);
        }
        if !matches!(req.header("authorization"), Some("Bearer tok" | "Bearer oauth")) {
            return bearer_challenge(req);
        }
        match req.method.as_str() {
            "HEAD" => Reply::status(404),
            "POST" if query(req, "mount").is_some() => Reply::status(201),
            _ => Reply::status(202).header("Location", "/v2/dst/blobs/uploads/x"),
        }
    });
    let client = with_credentials(&server, Credentials::basic("alice", "pw"));
    let src = reference(&server, "src");
    let blob = Blob::layer(10, 8);
    let outcome = client
        .push_blob(&reference(&server, "dst"), &blob.desc, blob.bytes.clone(), &PushBlobOptions::mount_from(&src))
        .await
        .expect("mounted");
    assert_eq!(outcome, PushOutcome::Mounted);
    let tokens: Vec<Request> = server.requests().into_iter().filter(|q| q.path() == "/token").collect();
    assert_eq!(tokens.len(), 1);
    let scopes: Vec<String> = url_pairs(tokens[0].target.split_once('?').expect("query").1)
        .into_iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(scopes, ["repository:dst:pull,push", "repository:src:pull"]);
    let mount = server.requests().into_iter().find(|q| q.method == "POST").expect("POST");
    assert_eq!(query(&mount, "from").as_deref(), Some("src"));
    assert_eq!(query(&mount, "mount"), Some(blob.desc.digest().to_string()));
    assert_eq!(mount.header("authorization"), Some("Bearer tok"), "authorised before sending");

    // An identity token is exchanged by an OAuth2 refresh-token grant.
    let client = with_credentials(&server, Credentials::identity_token("refresh"));
    client.blob_exists(&reference(&server, "dst"), &blob.desc).await.expect("HEAD with oauth token");
    assert!(server.requests().iter().any(|q| q.path() == "/token" && q.method == "POST"));
}

#[tokio::test]
async fn bad_credentials_are_unauthorized_without_looping() {
    let basic = FakeServer::start(|_| Reply::status(401).header("WWW-Authenticate", "Basic realm=\"r\""));
    let client = with_credentials(&basic, Credentials::basic("alice", "wrong-hunter2"));
    let blob = Blob::layer(10, 9);
    let err = client.blob_exists(&reference(&basic, "r"), &blob.desc).await.expect_err("refused");
    assert!(matches!(err, Error::Unauthorized { sent_credentials: true, .. }), "{err:?}");
    assert!(err.to_string().contains("credentials were rejected"), "{err}");
    assert_eq!(basic.requests().len(), 2, "anonymous, then once with the credentials");
    assert_eq!(basic.requests()[1].header("authorization").map(|a| a.starts_with("Basic ")), Some(true));
    let err = client.blob_exists(&reference(&basic, "r"), &blob.desc).await.expect_err("refused");
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert_eq!(basic.requests().len(), 3, "the scheme is remembered: credentials sent at once");
    let anonymous = client_err(&basic, &blob).await;
    assert!(anonymous.to_string().contains("no credentials"), "{anonymous}");

    let token = FakeServer::start(|req| {
        if req.path() == "/token" {
            return Reply::status(401).body(r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad password"}]}"#);
        }
        bearer_challenge(req)
    });
    let client = with_credentials(&token, Credentials::basic("alice", "wrong-hunter2"));
    let err = client.blob_exists(&reference(&token, "r"), &blob.desc).await.expect_err("refused");
    match &err {
        Error::Unauthorized { sent_credentials: true, envelope: Some(e), url } => {
            assert!(e.to_string().contains("bad password"));
            assert_eq!(url.expose().path(), "/token");
        }
        other => panic!("expected Unauthorized from the token endpoint, got {other:?}"),
    }
    assert_eq!(token.count("/token"), 1);
    assert!(!format!("{err} {err:?}").contains("hunter2"));
}

async fn client_err(server: &FakeServer, blob: &Blob) -> Error {
    client().blob_exists(&reference(server, "r"), &blob.desc).await.expect_err("anonymous")
}
