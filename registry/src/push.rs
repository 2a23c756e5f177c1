//! Pushing: blob existence checks, blob uploads and manifests.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use oci_spec::image::{Descriptor, Digest, MediaType};
use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::StatusCode;
use tokio::io::AsyncRead;

use crate::auth::Access;
use crate::client::{check_status, Client};
use crate::digest::{verify_bytes, DigestHasher};
use crate::error::{Error, Result};
use crate::reference::Reference;
use crate::resolve::MAX_MANIFEST_BYTES;
use crate::upload::{returned_digest, Failure, Started};

/// Content that can be opened, and opened again, as a reader of exactly the blob's bytes.
///
/// A push opens its source once per attempt: after a broken upload the session is restarted
/// and the source re-read from the start. Implemented for file paths ([`Path`], [`PathBuf`]:
/// a store's blob file), in-memory [`Bytes`], references to openers, and closures through
/// [`OpenWith`].
pub trait BlobOpener: Send + Sync {
    /// The reader [`open`](BlobOpener::open) returns.
    type Reader: AsyncRead + Unpin + Send + 'static;

    /// Opens the content from its first byte.
    fn open(&self) -> impl Future<Output = io::Result<Self::Reader>> + Send;
}

impl BlobOpener for Path {
    type Reader = tokio::fs::File;

    async fn open(&self) -> io::Result<Self::Reader> {
        tokio::fs::File::open(self).await
    }
}

impl BlobOpener for PathBuf {
    type Reader = tokio::fs::File;

    async fn open(&self) -> io::Result<Self::Reader> {
        tokio::fs::File::open(self).await
    }
}

impl BlobOpener for Bytes {
    type Reader = io::Cursor<Bytes>;

    async fn open(&self) -> io::Result<Self::Reader> {
        Ok(io::Cursor::new(self.clone()))
    }
}

impl<T: BlobOpener + ?Sized> BlobOpener for &T {
    type Reader = T::Reader;

    fn open(&self) -> impl Future<Output = io::Result<Self::Reader>> + Send {
        (**self).open()
    }
}

/// A [`BlobOpener`] from a closure returning a future of a reader:
/// `OpenWith(|| async { tokio::fs::File::open(&path).await })`.
#[derive(Debug, Clone)]
pub struct OpenWith<F>(pub F);

impl<F, Fut, R> BlobOpener for OpenWith<F>
where
    F: Fn() -> Fut + Send + Sync,
    Fut: Future<Output = io::Result<R>> + Send,
    R: AsyncRead + Unpin + Send + 'static,
{
    type Reader = R;

    fn open(&self) -> impl Future<Output = io::Result<R>> + Send {
        (self.0)()
    }
}

/// Per-call settings of [`Client::push_blob`].
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct PushBlobOptions<'a> {
    /// Another repository that may hold the blob: on the same registry, the blob is mounted
    /// from there instead of uploaded (`POST ?mount=<digest>&from=<repository>`) when the
    /// registry allows it. Ignored for another registry.
    pub mount_from: Option<&'a Reference>,
}

impl<'a> PushBlobOptions<'a> {
    /// Options that try a cross-repository mount from `source` first.
    pub fn mount_from(source: &'a Reference) -> Self {
        Self { mount_from: Some(source) }
    }
}

/// What [`Client::push_blob`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushOutcome {
    /// The bytes were sent.
    Uploaded,
    /// The repository already had the blob: nothing was sent.
    Existed,
    /// The registry linked the blob from [`PushBlobOptions::mount_from`]: nothing was sent.
    Mounted,
}

impl Client {
    /// Whether `reference`'s repository has the blob `desc` names (`HEAD`).
    ///
    /// # Errors
    ///
    /// [`Error::Status`], [`Error::Unauthorized`], [`Error::Transport`] from the registry.
    pub async fn blob_exists(&self, reference: &Reference, desc: &Descriptor) -> Result<bool> {
        self.head_blob(reference, desc.digest(), Access::Pull).await
    }

    /// Uploads the blob `desc` to `reference`'s repository, reading it from `source`, unless
    /// the repository has it already ([`PushOutcome::Existed`]) or it can be mounted from
    /// [`PushBlobOptions::mount_from`] ([`PushOutcome::Mounted`]).
    ///
    /// Blobs up to [`ClientOptions::upload_chunk_size`](crate::ClientOptions) go in one
    /// `PUT ?digest=`; larger ones in `PATCH` chunks of that size (with `Content-Range`), then
    /// a closing `PUT`. The body streams from the source (at most 64 KiB are buffered) and is
    /// hashed on the way: a source that does not match `desc` aborts the upload before its last
    /// byte, so the registry never stores it. When the upload breaks (connection error, 5xx,
    /// 429, an upload session the registry lost), the session is restarted and the source
    /// re-opened, up to `max_retries` times with backoff; a registry restarted mid-push is
    /// survived this way. The registry's `Docker-Content-Digest` must be `desc`'s digest.
    ///
    /// # Errors
    ///
    /// [`Error::SizeMismatch`], [`Error::DigestMismatch`] or [`Error::BlobRead`] from the
    /// source; [`Error::RegistryDigestMismatch`], [`Error::UnexpectedResponse`],
    /// [`Error::UploadRange`], [`Error::Status`], [`Error::Unauthorized`],
    /// [`Error::Transport`] from the registry (the last failure once retries are spent).
    pub async fn push_blob(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        source: impl BlobOpener,
        options: &PushBlobOptions<'_>,
    ) -> Result<PushOutcome> {
        if desc.size() == 0 {
            // Nothing will be streamed to check it against: check it now.
            verify_bytes(desc.digest(), b"")?;
        }
        let mount_from = options
            .mount_from
            .filter(|from| from.registry() == reference.registry())
            .map(Reference::repository)
            .filter(|from| *from != reference.repository());
        let access = Access::Push { mount_from };
        if self.head_blob(reference, desc.digest(), access).await? {
            return Ok(PushOutcome::Existed);
        }
        let mut attempt = 0;
        loop {
            let failure = match self.start_upload(reference, desc, access, mount_from).await? {
                Started::Mounted => return Ok(PushOutcome::Mounted),
                Started::Session(location) => match self.upload(reference, desc, &source, access, location).await {
                    Ok(()) => return Ok(PushOutcome::Uploaded),
                    Err(Failure::Fatal(e)) => return Err(e),
                    Err(Failure::Retry(e)) => e,
                },
            };
            if attempt >= self.options.max_retries {
                return Err(failure);
            }
            attempt += 1;
            self.backoff(attempt).await;
            // The last attempt may have landed even though its answer was lost.
            if self.head_blob(reference, desc.digest(), access).await? {
                return Ok(PushOutcome::Uploaded);
            }
        }
    }

    /// Stores a manifest (or index) under `reference`'s tag, or its digest when it has no tag,
    /// and returns the manifest's digest (sha256 of `bytes`, or the reference's digest, which
    /// `bytes` must match). The blobs it refers to must have been pushed first.
    ///
    /// # Errors
    ///
    /// [`Error::DigestMismatch`] when the reference pins another digest; [`Error::TooLarge`];
    /// [`Error::RegistryDigestMismatch`] when the registry reports another digest;
    /// [`Error::Status`] (e.g. `MANIFEST_BLOB_UNKNOWN`, `MANIFEST_INVALID` in the envelope),
    /// [`Error::Unauthorized`], [`Error::Transport`].
    pub async fn push_manifest(&self, reference: &Reference, media_type: &MediaType, bytes: Bytes) -> Result<Digest> {
        let digest = match reference.digest() {
            Some(pinned) => {
                verify_bytes(pinned, &bytes)?;
                pinned.clone()
            }
            None => {
                let mut hasher = DigestHasher::sha256();
                hasher.update(&bytes);
                hasher.finish()
            }
        };
        let target = reference.tag().map_or_else(|| digest.to_string(), str::to_owned);
        let url = self.api_url(reference, &format!("manifests/{target}"))?;
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(Error::TooLarge { url: url.into(), limit: MAX_MANIFEST_BYTES });
        }
        let content_type = HeaderValue::from_str(media_type.as_ref())
            .map_err(|_| Error::UnsupportedMediaType { url: (&url).into(), media_type: media_type.to_string() })?;
        let access = Access::Push { mount_from: None };
        let response = self
            .send(reference, access, &url, |http| {
                http.put(url.clone()).header(CONTENT_TYPE, content_type.clone()).body(bytes.clone())
            })
            .await?;
        let response = check_status(response, &url, |envelope| Error::Status {
            url: (&url).into(),
            status: StatusCode::NOT_FOUND,
            envelope,
            excerpt: None,
        })
        .await?;
        if let Some(returned) = returned_digest(&response) {
            if returned != digest.as_ref() {
                return Err(Error::RegistryDigestMismatch { url: url.into(), expected: digest, returned });
            }
        }
        Ok(digest)
    }
}
