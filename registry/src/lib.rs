//! rbuild-registry: an OCI distribution client (the pull side).
//!
//! It resolves image references to one platform's manifest and configuration and streams
//! blobs, verifying every byte against the digest that names it.
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
//! Invariants:
//! - Nothing is returned or left "complete" unverified: manifests are checked against the
//!   digest they were asked by (or the index entry, or `Docker-Content-Digest`), configs and
//!   blobs against their descriptor's digest and size ([`verify`] is the one comparison).
//! - Tokens are [`Secret`]s and URLs in errors are [`RedactedUrl`]s, so `{:?}` of anything in
//!   this crate is safe to log.
//! - Plain HTTP only for [`ClientOptions::insecure_hosts`] (loopback by default); no fallback
//!   from HTTPS to HTTP.
//! - Only anonymous pulls for now: no credentials, no push.

mod auth;
mod blob;
mod client;
mod digest;
mod error;
mod platform;
mod reference;
mod resolve;
mod secret;

pub use oci_spec;

pub use client::{Client, ClientOptions};
pub use digest::{verify, verify_descriptor, DigestHasher};
pub use error::{Error, ErrorEnvelope, RegistryErrorInfo, Result, UrlParseError};
pub use platform::{Platform, PlatformError};
pub use reference::{Reference, ReferenceError, DEFAULT_TAG, DOCKER_HUB};
pub use resolve::{
    ResolvedImage, DOCKER_CONFIG, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST_V2, MAX_CONFIG_BYTES,
    MAX_MANIFEST_BYTES,
};
pub use secret::{RedactedUrl, Secret};
