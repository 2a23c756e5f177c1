//! Streaming blob download with verification and resume.

use futures_util::StreamExt;
use oci_spec::image::Descriptor;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_RANGE, RANGE};
use reqwest::{Response, StatusCode, Url};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::client::{check_status, Client};
use crate::digest::{verify_descriptor, DigestHasher};
use crate::error::{Error, Result};
use crate::reference::Reference;

impl Client {
    /// Streams the blob `desc` names from `reference`'s repository into `dest`, hashing as it
    /// goes; the whole blob is never held in memory.
    ///
    /// When the stream ends, size and digest are checked against `desc`
    /// ([`Error::SizeMismatch`], [`Error::DigestMismatch`]); a body longer than `desc.size()` is
    /// cut off as soon as it overruns. Redirects (registries send blobs to object storage) are
    /// followed without the registry's token.
    ///
    /// Failures before the first byte (connection errors, timeouts, 5xx, 429) are retried with
    /// backoff, as for every request. **Mid-stream**, a broken body is resumed: the next attempt
    /// asks for `Range: bytes=<written>-` and continues the same hash, so nothing already
    /// written is written again; a server that ignores the range and answers 200 is read from
    /// the start with the first `written` bytes skipped. A body that ends cleanly before
    /// `desc.size()` bytes (cut short by a proxy) is resumed the same way. Each resume spends
    /// one retry; when they run out the error is [`Error::BlobStream`] (or
    /// [`Error::SizeMismatch`] for a body that keeps ending short).
    ///
    /// `dest` is flushed but not shut down.
    ///
    /// # Errors
    ///
    /// Verification failures as above; [`Error::BlobNotFound`], [`Error::Status`],
    /// [`Error::Unauthorized`] and [`Error::Transport`] from the registry; [`Error::BlobWrite`]
    /// from `dest`. On any error `dest` holds a partial, unverified blob: discard it.
    pub async fn fetch_blob(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        dest: &mut (impl AsyncWrite + Unpin),
    ) -> Result<()> {
        let digest = desc.digest();
        let url = self.api_url(reference, &format!("blobs/{digest}"))?;
        let mut hasher = DigestHasher::for_digest(digest)?;
        let mut resumes = 0;
        loop {
            let written = hasher.len();
            let response = match self.blob_response(reference, desc, &url, written).await {
                // Nothing past what we have: the blob is shorter than its descriptor says.
                Err(Error::Status { status: StatusCode::RANGE_NOT_SATISFIABLE, .. }) if written > 0 => {
                    return Err(Error::SizeMismatch { digest: digest.clone(), expected: desc.size(), found: written })
                }
                other => other?,
            };
            let mut skip = match response.status() {
                StatusCode::PARTIAL_CONTENT => 0,
                _ => written, // a full body, of which `written` bytes are already out
            };
            let mut stream = response.bytes_stream();
            let broken = loop {
                let chunk = match stream.next().await {
                    None => break None,
                    Some(Ok(chunk)) => chunk,
                    Some(Err(e)) => break Some(e),
                };
                let drop = usize::try_from(skip).unwrap_or(usize::MAX).min(chunk.len());
                skip -= drop as u64;
                let chunk = &chunk[drop..];
                if hasher.len() + chunk.len() as u64 > desc.size() {
                    return Err(Error::SizeMismatch {
                        digest: digest.clone(),
                        expected: desc.size(),
                        found: hasher.len() + chunk.len() as u64,
                    });
                }
                hasher.update(chunk);
                dest.write_all(chunk).await.map_err(|source| Error::BlobWrite { digest: digest.clone(), source })?;
            };
            match broken {
                None if skip == 0 && hasher.len() == desc.size() => break,
                // A body that ended cleanly but short (a proxy or CDN cut it and framed it as
                // complete): resumed like a broken one, and a size mismatch once retries are spent.
                None if skip == 0 && resumes < self.options.max_retries => {}
                None if skip == 0 => {
                    return Err(Error::SizeMismatch {
                        digest: digest.clone(),
                        expected: desc.size(),
                        found: hasher.len(),
                    })
                }
                // A full re-send shorter than what the broken attempt had already delivered.
                None => {
                    return Err(Error::SizeMismatch {
                        digest: digest.clone(),
                        expected: desc.size(),
                        found: written - skip,
                    })
                }
                // Broken after the last byte: nothing is missing, let the checks decide.
                Some(_) if hasher.len() == desc.size() => break,
                // Every body error is a broken read (reqwest reports them as decode errors
                // wrapping the I/O cause); resuming is safe because the hash carries on.
                Some(_) if resumes < self.options.max_retries => {}
                Some(e) => {
                    return Err(Error::BlobStream {
                        digest: digest.clone(),
                        url: url.into(),
                        written: hasher.len(),
                        source: e.without_url(),
                    })
                }
            }
            resumes += 1;
            self.backoff(resumes).await;
        }
        dest.flush().await.map_err(|source| Error::BlobWrite { digest: digest.clone(), source })?;
        verify_descriptor(desc, hasher)
    }

    /// GET for the blob, from byte `offset` on; checks status and, for a 206, that the range
    /// starts at `offset`.
    async fn blob_response(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        url: &Url,
        offset: u64,
    ) -> Result<Response> {
        let mut headers = HeaderMap::new();
        if offset > 0 {
            let range =
                HeaderValue::from_str(&format!("bytes={offset}-")).expect("a decimal range is a valid header value");
            headers.insert(RANGE, range);
        }
        let response = self.get(reference, url, &headers).await?;
        let response = check_status(response, url, |envelope| Error::BlobNotFound {
            digest: desc.digest().clone(),
            url: url.into(),
            envelope,
        })
        .await?;
        if response.status() == StatusCode::PARTIAL_CONTENT {
            let content_range =
                response.headers().get(CONTENT_RANGE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
            if offset == 0 || range_start(&content_range) != Some(offset) {
                return Err(Error::ResumeMismatch {
                    digest: desc.digest().clone(),
                    url: url.into(),
                    offset,
                    content_range,
                });
            }
        }
        Ok(response)
    }
}

/// The first byte of `bytes <start>-<end>/<size>`.
fn range_start(content_range: &str) -> Option<u64> {
    let rest = content_range.trim().strip_prefix("bytes")?.trim_start();
    rest.split_once('-')?.0.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_start_table() {
        assert_eq!(range_start("bytes 100-199/200"), Some(100));
        assert_eq!(range_start("bytes 0-0/1"), Some(0));
        assert_eq!(range_start(" bytes  7-/*"), Some(7));
        assert_eq!(range_start("items 1-2/3"), None);
        assert_eq!(range_start(""), None);
    }
}
