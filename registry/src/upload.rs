//! The upload session of the distribution spec: `POST` to start (or mount), then one
//! `PUT ?digest=` with the whole body, or `PATCH` chunks and a closing `PUT`. Bodies stream
//! from the source through [`ChunkStream`], which hashes them on the way.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use oci_spec::image::{Descriptor, Digest};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{Body, RequestBuilder, Response, StatusCode, Url};
use tokio::io::{AsyncRead, ReadBuf};

use crate::auth::{Access, TokenKey};
use crate::authorize::with_auth;
use crate::client::{content_type_of, is_transient_status, read_envelope, status_error, Client};
use crate::digest::{verify, DigestHasher};
use crate::error::{Error, Result};
use crate::push::BlobOpener;
use crate::reference::Reference;
use crate::tls::Purpose;

/// Bytes read from the source per body chunk handed to hyper.
const READ_BUF: usize = 64 * 1024;
/// Upload requests time out after the read timeout plus their size at this rate (a stalled
/// upload must not hang forever; a slow one must not fail).
const MIN_UPLOAD_RATE: u64 = 32 * 1024;
const OCTET_STREAM: &str = "application/octet-stream";

/// How `POST /blobs/uploads/` answered.
pub(crate) enum Started {
    /// The blob was mounted from another repository.
    Mounted,
    /// An upload session, at this URL.
    Session(Url),
}

/// Why an upload attempt ended.
pub(crate) enum Failure {
    /// Starting over with a new session may help (connection lost, 5xx, session unknown).
    Retry(Error),
    /// It will not.
    Fatal(Error),
}

impl Client {
    /// `HEAD /blobs/<digest>`: 2xx → true, 404 → false.
    pub(crate) async fn head_blob(&self, reference: &Reference, digest: &Digest, access: Access<'_>) -> Result<bool> {
        let url = self.api_url(reference, &format!("blobs/{digest}"))?;
        let response = self.send(reference, access, &url, |http| http.head(url.clone())).await?;
        match response.status() {
            status if status.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(status_error(response, &url).await),
        }
    }

    /// `POST /blobs/uploads/[?mount=<digest>&from=<repository>]`.
    pub(crate) async fn start_upload(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        access: Access<'_>,
        mount_from: Option<&str>,
    ) -> Result<Started> {
        let mut url = self.api_url(reference, "blobs/uploads/")?;
        if let Some(from) = mount_from {
            url.query_pairs_mut().append_pair("mount", desc.digest().as_ref()).append_pair("from", from);
        }
        let response = self
            .send(reference, access, &url, |http| http.post(url.clone()).header(CONTENT_LENGTH, 0).body(Bytes::new()))
            .await?;
        let status = response.status();
        if status == StatusCode::CREATED && mount_from.is_some() {
            check_returned(&response, &url, desc.digest())?;
            return Ok(Started::Mounted);
        }
        if !status.is_success() {
            return Err(status_error(response, &url).await);
        }
        if status != StatusCode::ACCEPTED {
            return Err(unexpected(&response, &url, "202 Accepted with a Location header"));
        }
        next_location(&response, &url).map(Started::Session)
    }

    /// Streams the blob from a fresh reader into the session at `location`, and closes it.
    pub(crate) async fn upload(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        source: &impl BlobOpener,
        access: Access<'_>,
        mut location: Url,
    ) -> Result<(), Failure> {
        let blob_read = |source| Failure::Fatal(Error::BlobRead { digest: desc.digest().clone(), source });
        let reader = source.open().await.map_err(blob_read)?;
        let shared = Shared::new(reader, desc).map_err(Failure::Fatal)?;
        let key = TokenKey::new(reference.registry(), reference.repository(), access);
        // Credentials go only to the registry itself, not to storage an upload URL points at.
        let origin = self.api_url(reference, "blobs/uploads/").map_err(Failure::Fatal)?.origin();
        let auth_for = |url: &Url| (url.origin() == origin).then_some(&key);
        let http = self.http.for_url(&self.options, &location, Purpose::Upload).map_err(Failure::Fatal)?;
        let size = desc.size();
        let chunk = self.options.upload_chunk_size.max(1);
        let mut offset = 0;
        if size > chunk {
            while offset < size {
                let len = chunk.min(size - offset);
                let end = offset + len - 1;
                let request = http.patch(location.clone()).header(CONTENT_RANGE, format!("{offset}-{end}"));
                let response = self.send_body(request, &location, &shared, len, auth_for(&location)).await?;
                if let Some(range) = header(&response, RANGE.as_str()) {
                    if range_end(&range) != Some(end) {
                        return Err(Failure::Retry(Error::UploadRange {
                            url: (&location).into(),
                            expected_end: end,
                            range,
                        }));
                    }
                }
                location = next_location(&response, &location).map_err(Failure::Fatal)?;
                offset += len;
            }
        }
        let mut url = location;
        url.query_pairs_mut().append_pair("digest", desc.digest().as_ref());
        let request = http.put(url.clone());
        let response = self.send_body(request, &url, &shared, size - offset, auth_for(&url)).await?;
        check_returned(&response, &url, desc.digest()).map_err(Failure::Fatal)
    }

    /// Sends `request` once with the next `len` bytes of the source as its body (authorised for
    /// `key`, if any), and sorts failures into retryable and fatal ones.
    async fn send_body(
        &self,
        request: RequestBuilder,
        url: &Url,
        shared: &Shared,
        len: u64,
        key: Option<&TokenKey>,
    ) -> Result<Response, Failure> {
        let auth = match key {
            Some(key) => self.authorization(key).await.map_err(Failure::Fatal)?,
            None => None,
        };
        let body =
            if len == 0 { Body::from(Bytes::new()) } else { Body::wrap_stream(ChunkStream::new(shared.clone(), len)) };
        let timeout = self.options.read_timeout + Duration::from_secs(len / MIN_UPLOAD_RATE);
        let sent = with_auth(request, auth.as_ref())
            .header(CONTENT_TYPE, OCTET_STREAM)
            .header(CONTENT_LENGTH, len)
            .timeout(timeout)
            .body(body)
            .send()
            .await;
        // A source that failed or did not match is the real story, whatever the registry said.
        if let Some(fault) = shared.take_fault() {
            return Err(Failure::Fatal(fault));
        }
        let response =
            sent.map_err(|source| Failure::Retry(Error::Transport { url: url.into(), source: source.without_url() }))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        if status == StatusCode::UNAUTHORIZED {
            // An expired token: the next session gets a fresh one.
            if let Some(key) = key {
                self.auth.tokens.remove(key);
            }
            return Err(Failure::Retry(Error::Unauthorized {
                url: url.into(),
                sent_credentials: auth.is_some(),
                envelope: read_envelope(response).await,
            }));
        }
        let error = status_error(response, url).await;
        // 404: the registry lost the session (BLOB_UPLOAD_UNKNOWN); 416: it disagrees about
        // the offset. A new session fixes both.
        let restart = is_transient_status(status)
            || status == StatusCode::NOT_FOUND
            || status == StatusCode::RANGE_NOT_SATISFIABLE;
        Err(if restart { Failure::Retry(error) } else { Failure::Fatal(error) })
    }
}

/// The value of a header, as text.
fn header(response: &Response, name: &str) -> Option<String> {
    response.headers().get(name)?.to_str().ok().map(str::to_owned)
}

/// The `Docker-Content-Digest` a registry answered with.
pub(crate) fn returned_digest(response: &Response) -> Option<String> {
    header(response, "docker-content-digest").map(|d| d.trim().to_owned())
}

/// Fails when the registry reports a digest other than `expected` for what it stored.
fn check_returned(response: &Response, url: &Url, expected: &Digest) -> Result<()> {
    match returned_digest(response) {
        Some(returned) if returned != expected.as_ref() => {
            Err(Error::RegistryDigestMismatch { url: url.into(), expected: expected.clone(), returned })
        }
        _ => Ok(()),
    }
}

/// The session URL for the next request: `Location`, resolved against the request URL.
fn next_location(response: &Response, url: &Url) -> Result<Url> {
    header(response, LOCATION.as_str())
        .and_then(|location| url.join(&location).ok())
        .ok_or_else(|| unexpected(response, url, "a Location header with the upload URL"))
}

fn unexpected(response: &Response, url: &Url, expected: &'static str) -> Error {
    Error::UnexpectedResponse {
        url: url.into(),
        status: response.status(),
        content_type: content_type_of(response),
        expected,
    }
}

/// The last byte of `0-<end>` (or `bytes=0-<end>`), the upload progress a registry reports.
fn range_end(range: &str) -> Option<u64> {
    let range = range.trim();
    let range = range.strip_prefix("bytes=").unwrap_or(range);
    range.split_once('-')?.1.trim().parse().ok()
}

/// The source of one upload attempt, shared by the bodies of its requests: the reader, the
/// hash of everything read so far, and the first fault.
#[derive(Clone)]
struct Shared(Arc<Mutex<SourceState>>);

struct SourceState {
    reader: Box<dyn AsyncRead + Unpin + Send>,
    hasher: DigestHasher,
    digest: Digest,
    size: u64,
    fault: Option<Error>,
}

impl Shared {
    fn new(reader: impl AsyncRead + Unpin + Send + 'static, desc: &Descriptor) -> Result<Self> {
        Ok(Self(Arc::new(Mutex::new(SourceState {
            reader: Box::new(reader),
            hasher: DigestHasher::for_digest(desc.digest())?,
            digest: desc.digest().clone(),
            size: desc.size(),
            fault: None,
        }))))
    }

    fn take_fault(&self) -> Option<Error> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).fault.take()
    }
}

/// A request body of the source's next `remaining` bytes. When the source ends early, fails,
/// or its last byte makes the hash differ from the descriptor, the fault is recorded and the
/// stream fails instead of yielding the bytes, so the registry never receives a complete body.
struct ChunkStream {
    shared: Shared,
    remaining: u64,
    buf: Vec<u8>,
}

impl ChunkStream {
    fn new(shared: Shared, len: u64) -> Self {
        let capacity = usize::try_from(len).unwrap_or(READ_BUF).min(READ_BUF);
        Self { shared, remaining: len, buf: vec![0; capacity] }
    }
}

impl Stream for ChunkStream {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = usize::try_from(this.remaining).unwrap_or(usize::MAX).min(this.buf.len());
        let mut state = this.shared.0.lock().unwrap_or_else(PoisonError::into_inner);
        let state = &mut *state;
        let mut read = ReadBuf::new(&mut this.buf[..want]);
        match Pin::new(&mut state.reader).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(source)) => {
                let kind = source.kind();
                state.fault = Some(Error::BlobRead { digest: state.digest.clone(), source });
                Poll::Ready(Some(Err(io::Error::new(kind, "reading the blob failed"))))
            }
            Poll::Ready(Ok(())) => {
                let bytes = read.filled();
                if bytes.is_empty() {
                    state.fault = Some(Error::SizeMismatch {
                        digest: state.digest.clone(),
                        expected: state.size,
                        found: state.hasher.len(),
                    });
                    return Poll::Ready(Some(Err(io::ErrorKind::UnexpectedEof.into())));
                }
                state.hasher.update(bytes);
                this.remaining -= bytes.len() as u64;
                if state.hasher.len() == state.size {
                    if let Err(mismatch) = verify(&state.digest, state.hasher.clone()) {
                        state.fault = Some(mismatch);
                        return Poll::Ready(Some(Err(io::Error::other("the blob does not match its digest"))));
                    }
                }
                Poll::Ready(Some(Ok(Bytes::copy_from_slice(bytes))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use oci_spec::image::MediaType;

    fn desc(bytes: &[u8]) -> Descriptor {
        let mut h = DigestHasher::sha256();
        h.update(bytes);
        Descriptor::new(MediaType::ImageLayer, bytes.len() as u64, h.finish())
    }

    async fn drain(stream: ChunkStream) -> (Vec<u8>, Option<io::ErrorKind>) {
        let mut out = Vec::new();
        let mut stream = stream;
        while let Some(item) = stream.next().await {
            match item {
                Ok(b) => out.extend_from_slice(&b),
                Err(e) => return (out, Some(e.kind())),
            }
        }
        (out, None)
    }

    #[tokio::test]
    async fn chunks_stream_the_source_in_order_and_verify_it() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let d = desc(&data);
        let shared = Shared::new(io::Cursor::new(data.clone()), &d).expect("shared");
        let mut seen = Vec::new();
        for len in [70_000, 70_000, 60_000] {
            let (bytes, err) = drain(ChunkStream::new(shared.clone(), len)).await;
            assert_eq!((bytes.len() as u64, err), (len, None));
            seen.extend(bytes);
        }
        assert_eq!(seen, data);
        assert!(shared.take_fault().is_none());

        // Same size, one byte different: the last chunk fails instead of completing.
        let mut wrong = data.clone();
        wrong[150_000] ^= 1;
        let shared = Shared::new(io::Cursor::new(wrong), &d).expect("shared");
        let (first, err) = drain(ChunkStream::new(shared.clone(), 100_000)).await;
        assert_eq!((first.len(), err), (100_000, None));
        let (rest, err) = drain(ChunkStream::new(shared.clone(), 100_000)).await;
        assert!(rest.len() < 100_000 && err.is_some());
        assert!(matches!(shared.take_fault(), Some(Error::DigestMismatch { .. })));

        // Too short.
        let shared = Shared::new(io::Cursor::new(data[..10].to_vec()), &d).expect("shared");
        let (_, err) = drain(ChunkStream::new(shared.clone(), 200_000)).await;
        assert_eq!(err, Some(io::ErrorKind::UnexpectedEof));
        assert!(matches!(shared.take_fault(), Some(Error::SizeMismatch { found: 10, .. })));
    }

    #[test]
    fn range_end_table() {
        assert_eq!(range_end("0-1023"), Some(1023));
        assert_eq!(range_end("bytes=0-9"), Some(9));
        assert_eq!(range_end(" 0 - 5 "), Some(5));
        assert_eq!(range_end("0-"), None);
        assert_eq!(range_end("garbage"), None);
    }
}
