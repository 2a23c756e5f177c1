//! rbuild-registry: an OCI distribution client.
//!
//! It resolves image references to one platform's manifest and configuration and streams
//! blobs, verifying every byte against the digest that names it; it pushes blobs (mounting or
//! skipping what the registry has, uploading in one request or in chunks, restarting broken
//! uploads) and manifests. Registries are reached over HTTPS with the system's CAs plus
//! configured ones and docker's `certs.d`, authenticated with Basic auth or scoped tokens,
//! with credentials given explicitly or found in docker's `config.json` and its helpers.
//!
//! ```no_run
//! use rbuild_registry::{Client, ClientOptions, Platform, Reference};
//! # async fn pull() -> Result<(), rbuild_registry::Error> {
//! let client = Client::new(ClientOptions::default())?;
//! let reference: Reference = "127.0.0.1:5000/busybox:latest".parse()?;
//! let image = client.resolve(&reference, &Platform::host()).await?;
//! for layer in image.manifest.layers() {
//!     let mut file = tokio::fs::File::create(layer.digest().digest()).await.expect("create");
//!     client.fetch_blob(&reference, layer, &mut file).await?;
//! }
//! # Ok(()) }
//! ```
//!
//! Pushing an image is its blobs, then its manifest:
//!
//! ```no_run
//! use rbuild_registry::oci_spec::image::{Descriptor, MediaType};
//! use rbuild_registry::{Client, ClientOptions, PushBlobOptions, Reference};
//! # async fn push(layers: Vec<(Descriptor, std::path::PathBuf)>, config: Descriptor,
//! #     config_path: std::path::PathBuf, manifest: bytes::Bytes) -> Result<(), rbuild_registry::Error> {
//! let client = Client::new(ClientOptions::default())?;
//! let target: Reference = "127.0.0.1:5000/app:1.0".parse()?;
//! for (desc, path) in layers.iter().chain([(config, config_path)].iter()) {
//!     client.push_blob(&target, desc, path.as_path(), &PushBlobOptions::default()).await?;
//! }
//! let digest = client.push_manifest(&target, &MediaType::ImageManifest, manifest).await?;
//! # Ok(()) }
//! ```
//!
//! Invariants:
//! - Nothing is returned or left "complete" unverified: manifests are checked against the
//!   digest they were asked by (or the index entry, or `Docker-Content-Digest`), configs and
//!   blobs against their descriptor's digest and size ([`verify`] is the one comparison).
//! - Tokens are [`Secret`]s and URLs in errors are [`RedactedUrl`]s, so `{:?}` of anything in
//!   this crate is safe to log.
//! - Plain HTTP only for [`ClientOptions::insecure_hosts`] (loopback by default); no fallback
//!   from HTTPS to HTTP.
//! - Pushed content is hashed as it streams and must match its descriptor before its last
//!   byte is sent; what the registry says it stored (`Docker-Content-Digest`) must match too.
//! - Secrets are never logged: credentials, tokens and `Authorization` headers are
//!   [`Secret`]s or sensitive headers, and JSON errors from config files carry no input text.

mod auth;
mod authorize;
mod blob;
mod client;
mod credentials;
mod digest;
mod error;
mod platform;
mod push;
mod reference;
mod resolve;
mod secret;
mod tls;
mod upload;

pub use oci_spec;

pub use client::{Client, ClientOptions};
pub use credentials::{
    docker_config_credentials, store_login, store_login_at, Credentials, CredentialsError, DockerConfig, JsonProblem,
    DOCKER_HUB_CONFIG_KEY,
};
pub use digest::{verify, verify_descriptor, DigestHasher};
pub use error::{Error, ErrorEnvelope, RegistryErrorInfo, Result, UrlParseError};
pub use platform::{Platform, PlatformError};
pub use push::{BlobOpener, OpenWith, PushBlobOptions, PushOutcome};
pub use reference::{Reference, ReferenceError, DEFAULT_TAG, DOCKER_HUB};
pub use resolve::{
    FetchedManifest, ResolvedImage, DOCKER_CONFIG, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST_V2, MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
};
pub use secret::{RedactedUrl, Secret};
