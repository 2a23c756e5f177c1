use super::*;
use crate::testutil::worker;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A one-route HTTP server on 127.0.0.1 that answers every request with `status` and `body`,
/// counting requests.
struct Server {
    url: String,
    hits: Arc<AtomicUsize>,
}

fn serve(status: u16, body: &'static [u8], last_modified: Option<&'static str>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/files/tool.bin?x=1", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            counter.fetch_add(1, Ordering::SeqCst);
            let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
            if let Some(lm) = last_modified {
                head.push_str(&format!("Last-Modified: {lm}\r\n"));
            }
            head.push_str("\r\n");
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(body);
        }
    });
    Server { url, hits }
}

const BODY: &[u8] = b"#!/bin/sh\necho downloaded\n";
const LM: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[tokio::test]
async fn download_without_checksum_keys_by_content_and_is_fetched_once() {
    crate::testutil::require_root!("giving the downloaded file to root");
    let t = tempfile::tempdir().unwrap();
    let w = worker(t.path());
    let srv = serve(200, BODY, Some(LM));
    let id = OpId([1; 32]);
    let progress = Progress::discard(id);
    let content = w.http_content_key(id, &srv.url, None, &progress).await.unwrap();
    assert_eq!(srv.hits.load(Ordering::SeqCst), 1);
    let key = CacheKey::derive(&id, &[], Some(&content));
    let snap = w.http_exec(id, &key, &srv.url, None, "tool.bin", &progress).await.unwrap();
    assert_eq!(srv.hits.load(Ordering::SeqCst), 1, "executing reuses the download made for the key");
    let file = w.store.snapshot_diff(&snap.chain[0].id).join("tool.bin");
    assert_eq!(std::fs::read(&file).unwrap(), BODY);
    let md = std::fs::metadata(&file).unwrap();
    assert_eq!(md.permissions().mode() & 0o7777, 0o600);
    assert_eq!(md.mtime(), 784_111_777, "Last-Modified becomes the mtime");
    if crate::testutil::is_root() {
        assert_eq!((md.uid(), md.gid()), (0, 0));
    }
    // The same content under another Last-Modified is another key, as in BuildKit.
    let srv2 = serve(200, BODY, Some("Mon, 07 Nov 1994 08:49:37 GMT"));
    let other = w.http_content_key(OpId([2; 32]), &srv2.url, None, &progress).await.unwrap();
    assert_ne!(content, other);
    // Nothing is left in the store's temp area.
    w.lock_downloads().clear();
    assert_eq!(std::fs::read_dir(w.store.tmp_dir()).unwrap().count(), 0);
}

#[tokio::test]
async fn pinned_checksum_keys_without_downloading_and_is_verified() {
    crate::testutil::require_root!("giving the downloaded file to root");
    let t = tempfile::tempdir().unwrap();
    let w = worker(t.path());
    let srv = serve(200, BODY, None);
    let id = OpId([3; 32]);
    let progress = Progress::discard(id);
    let good = sha(BODY);
    let content = w.http_content_key(id, &srv.url, Some(&good), &progress).await.unwrap();
    assert_eq!(srv.hits.load(Ordering::SeqCst), 0, "a pinned checksum is the key: nothing to download");
    let key = CacheKey::derive(&id, &[], Some(&content));
    let snap = w.http_exec(id, &key, &srv.url, Some(&good), "tool.bin", &progress).await.unwrap();
    assert_eq!(std::fs::read(w.store.snapshot_diff(&snap.chain[0].id).join("tool.bin")).unwrap(), BODY);

    let wrong = sha(b"something else");
    let err = w.http_exec(OpId([4; 32]), &key, &srv.url, Some(&wrong), "tool.bin", &progress).await.unwrap_err();
    assert_eq!(err.to_string(), format!("digest mismatch {good}: {wrong}"));
    assert!(matches!(
        w.http_content_key(id, &srv.url, Some("md5:abc"), &progress).await,
        Err(WorkerError::BadChecksum { .. })
    ));
}

#[tokio::test]
async fn error_statuses_and_bad_names_fail_clearly() {
    let t = tempfile::tempdir().unwrap();
    let w = worker(t.path());
    let srv = serve(404, b"nope", None);
    let id = OpId([5; 32]);
    let progress = Progress::discard(id);
    let err = w.http_content_key(id, &srv.url, None, &progress).await.unwrap_err();
    assert!(matches!(err, WorkerError::HttpStatus { status: 404, .. }), "{err:?}");
    let key = CacheKey::derive(&id, &[], None);
    for bad in ["", "..", "a/b"] {
        let err = w.http_exec(id, &key, &srv.url, None, bad, &progress).await.unwrap_err();
        assert!(matches!(err, WorkerError::BadFileName { .. }), "{bad}: {err:?}");
    }
    assert_eq!(redact_url("https://user:token@example.com/f?x=1"), "https://example.com/f?x=1");
}

#[test]
fn http_dates() {
    let cases = [
        ("Sun, 06 Nov 1994 08:49:37 GMT", Some(784_111_777)),
        ("Sunday, 06-Nov-94 08:49:37 GMT", Some(784_111_777)),
        ("Sun Nov  6 08:49:37 1994", Some(784_111_777)),
        ("Thu, 01 Jan 1970 00:00:00 GMT", Some(0)),
        ("Tue, 29 Feb 2028 23:59:59 GMT", Some(1_835_481_599)),
        ("yesterday", None),
        ("Sun, 06 Foo 1994 08:49:37 GMT", None),
    ];
    for (text, want) in cases {
        assert_eq!(parse_http_date(text), want, "{text}");
    }
}
