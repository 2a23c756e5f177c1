//! The crate's error type and the OCI distribution error envelope.

use std::fmt;
use std::path::PathBuf;

use oci_spec::image::Digest;
use reqwest::StatusCode;
use serde::Deserialize;

use crate::credentials::CredentialsError;
use crate::platform::{Platform, PlatformError};
use crate::reference::{Reference, ReferenceError};
use crate::secret::RedactedUrl;

/// The error `url::Url::parse` returns (the `url` crate, as re-exported by reqwest).
pub type UrlParseError = <reqwest::Url as std::str::FromStr>::Err;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while talking to a registry.
///
/// Variants that come from an HTTP response carry the (redacted) URL and, when the registry sent
/// one, the parsed [`ErrorEnvelope`]. Large fields are boxed to keep `Result` small.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An image reference did not parse.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// A platform string did not parse.
    #[error(transparent)]
    Platform(#[from] PlatformError),
    /// Registry credentials could not be read or stored.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The HTTP client could not be built (TLS backend initialisation).
    #[error("cannot initialise the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// A CA certificate file ([`ClientOptions::ca_certs`](crate::ClientOptions::ca_certs) or a
    /// `certs.d` directory) could not be read.
    #[error("cannot read CA certificate {path}")]
    ReadCaCert {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A CA certificate file holds no usable PEM certificate.
    #[error("invalid CA certificate {path}")]
    InvalidCaCert {
        /// The file.
        path: PathBuf,
        /// Why it was refused (`None`: the file has no `CERTIFICATE` block).
        #[source]
        source: Option<reqwest::Error>,
    },
    /// A URL built from a reference or sent by the registry is not valid.
    #[error("invalid URL {url:?}")]
    InvalidUrl {
        /// The text that failed to parse.
        url: String,
        /// Why it failed.
        #[source]
        source: UrlParseError,
    },
    /// The request could not be sent or its response headers were not received, after retries.
    #[error("request to {url} failed")]
    Transport {
        /// The URL requested.
        url: RedactedUrl,
        /// The transport error (its own URL stripped, it may be a signed redirect target).
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered with an unexpected status.
    #[error("{url} answered {status}{}{}", envelope_suffix(.envelope.as_ref()), excerpt_suffix(.excerpt.as_deref()))]
    Status {
        /// The URL requested.
        url: RedactedUrl,
        /// The HTTP status.
        status: StatusCode,
        /// The registry's error body, when it sent one.
        envelope: Option<ErrorEnvelope>,
        /// When the body is not an error envelope (a proxy's HTML page): its title or first line,
        /// at most 120 characters.
        excerpt: Option<String>,
    },
    /// The registry (or its token endpoint) refused access: no credentials were found for a
    /// registry that needs them, the credentials were rejected, or they lack the permission.
    /// Never retried more than once, so bad credentials cannot loop.
    #[error("access to {url} denied{}{}", envelope_suffix(.envelope.as_ref()),
        if *.sent_credentials { " (the credentials were rejected or lack permission)" }
        else { " (no credentials were sent: the repository may need a login, or may not exist)" })]
    Unauthorized {
        /// The URL requested (the token endpoint when that is what refused).
        url: RedactedUrl,
        /// The registry's error body, when it sent one.
        envelope: Option<ErrorEnvelope>,
        /// Whether credentials were sent (to the registry or its token endpoint).
        sent_credentials: bool,
    },
    /// The registry has no manifest for this tag or digest.
    #[error("manifest for {reference} not found at {url}{}", envelope_suffix(.envelope.as_ref()))]
    ManifestNotFound {
        /// The reference asked for.
        reference: Box<Reference>,
        /// The URL requested.
        url: RedactedUrl,
        /// The registry's error body, when it sent one.
        envelope: Option<ErrorEnvelope>,
    },
    /// The registry has no blob with this digest in this repository.
    #[error("blob {digest} not found at {url}{}", envelope_suffix(.envelope.as_ref()))]
    BlobNotFound {
        /// The blob's digest.
        digest: Digest,
        /// The URL requested.
        url: RedactedUrl,
        /// The registry's error body, when it sent one.
        envelope: Option<ErrorEnvelope>,
    },
    /// A `WWW-Authenticate` header could not be used.
    #[error("unusable authentication challenge from {url}: {header:?}")]
    InvalidChallenge {
        /// The URL that sent the challenge.
        url: RedactedUrl,
        /// The header's value.
        header: String,
    },
    /// The token endpoint could not be reached, after retries.
    #[error("token request to {realm} failed")]
    TokenRequest {
        /// The token endpoint (realm) with its query.
        realm: RedactedUrl,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The token endpoint answered with an error status.
    #[error("token endpoint {realm} answered {status}")]
    TokenStatus {
        /// The token endpoint (realm) with its query.
        realm: RedactedUrl,
        /// The HTTP status.
        status: StatusCode,
    },
    /// The token endpoint's answer is not a token response.
    #[error("token endpoint {realm} sent an invalid response")]
    TokenResponse {
        /// The token endpoint (realm) with its query.
        realm: RedactedUrl,
        /// Why it did not parse (a missing token is reported as a parse error too).
        #[source]
        source: serde_json::Error,
    },
    /// The document is not an image manifest or index we understand.
    #[error("{url} sent a {media_type:?} document, not an image manifest or index")]
    UnsupportedMediaType {
        /// The URL requested.
        url: RedactedUrl,
        /// The media type it declared (or `""` when it declared none).
        media_type: String,
    },
    /// The manifest's config is not an image configuration: the manifest is an artifact (a
    /// Helm chart, a signature, an attestation), not a container image.
    #[error(
        "{url} is a {media_type:?} config, not a container image configuration (the reference \
         names an artifact, not an image)"
    )]
    NotAnImageConfig {
        /// The config blob's URL.
        url: RedactedUrl,
        /// The config's media type.
        media_type: String,
    },
    /// A manifest or index did not parse.
    #[error("{url} sent an invalid {media_type}")]
    ManifestParse {
        /// The URL requested.
        url: RedactedUrl,
        /// The media type it was parsed as.
        media_type: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The image configuration blob did not parse.
    #[error("image configuration {digest} is invalid")]
    ConfigParse {
        /// The config blob's digest.
        digest: Digest,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// An index has no manifest for the requested platform.
    #[error("{reference} has no image for {platform} (it has: {})", .available.join(", "))]
    NoMatchingPlatform {
        /// The reference resolved.
        reference: Box<Reference>,
        /// The platform asked for.
        platform: Box<Platform>,
        /// The platforms the index offers, as `os/arch[/variant]`.
        available: Vec<String>,
    },
    /// An index points at another index more levels deep than we follow.
    #[error("{url}: image indexes nested too deeply")]
    IndexTooDeep {
        /// The URL of the innermost index.
        url: RedactedUrl,
    },
    /// Content does not hash to the digest that names it.
    #[error("digest mismatch: expected {expected}, found {found}")]
    DigestMismatch {
        /// The digest asked for.
        expected: Digest,
        /// The digest of the bytes received.
        found: Digest,
    },
    /// Content does not have the size its descriptor declares.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {found}")]
    SizeMismatch {
        /// The content's digest.
        digest: Digest,
        /// The size the descriptor declares.
        expected: u64,
        /// The bytes received (a lower bound when the transfer was cut short for being too long).
        found: u64,
    },
    /// The digest uses an algorithm we cannot compute.
    #[error("unsupported digest algorithm in {digest}")]
    UnsupportedDigest {
        /// The digest.
        digest: Digest,
    },
    /// A manifest or configuration is larger than we are willing to hold in memory.
    #[error("{url} sent more than {limit} bytes")]
    TooLarge {
        /// The URL requested.
        url: RedactedUrl,
        /// The limit in bytes.
        limit: u64,
    },
    /// Writing a downloaded blob to its destination failed.
    #[error("writing blob {digest} failed")]
    BlobWrite {
        /// The blob's digest.
        digest: Digest,
        /// The I/O error from the destination.
        #[source]
        source: std::io::Error,
    },
    /// A download broke mid-stream and could not be resumed, after retries.
    #[error("download of {digest} from {url} broke after {written} bytes")]
    BlobStream {
        /// The blob's digest.
        digest: Digest,
        /// The URL requested.
        url: RedactedUrl,
        /// Bytes written to the destination before giving up.
        written: u64,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// Opening or reading the content being pushed failed.
    #[error("reading blob {digest} for upload failed")]
    BlobRead {
        /// The blob's digest.
        digest: Digest,
        /// The I/O error from the source.
        #[source]
        source: std::io::Error,
    },
    /// The registry reports a different digest (`Docker-Content-Digest`) for content we sent.
    #[error("{url} stored the content as {returned:?}, but its digest is {expected}")]
    RegistryDigestMismatch {
        /// The URL of the request that stored it.
        url: RedactedUrl,
        /// The digest of the content sent.
        expected: Digest,
        /// The header's value.
        returned: String,
    },
    /// A response is not what this step of the protocol requires (e.g. an upload started
    /// without a `Location`, or an HTML page where the registry API was expected).
    #[error("{url} answered {status} ({content_type}), expected {expected}")]
    UnexpectedResponse {
        /// The URL requested.
        url: RedactedUrl,
        /// The HTTP status.
        status: StatusCode,
        /// The response's `Content-Type` (`"no content type"` when absent).
        content_type: String,
        /// What the protocol step expects.
        expected: &'static str,
    },
    /// After an upload chunk, the registry's `Range` does not end where the chunk did.
    #[error("{url} acknowledged range {range:?} after a chunk ending at byte {expected_end}")]
    UploadRange {
        /// The URL of the chunk request.
        url: RedactedUrl,
        /// The last byte (inclusive) sent so far.
        expected_end: u64,
        /// The `Range` header received.
        range: String,
    },
    /// A resumed download's `Content-Range` does not start where the previous attempt stopped.
    #[error("{url} resumed {digest} with range {content_range:?}, expected it to start at byte {offset}")]
    ResumeMismatch {
        /// The blob's digest.
        digest: Digest,
        /// The URL requested.
        url: RedactedUrl,
        /// The byte offset asked for.
        offset: u64,
        /// The `Content-Range` header received.
        content_range: String,
    },
}

fn envelope_suffix(envelope: Option<&ErrorEnvelope>) -> String {
    envelope.map(|e| format!(": {e}")).unwrap_or_default()
}

fn excerpt_suffix(excerpt: Option<&str>) -> String {
    excerpt.map(|e| format!(": {e:?}")).unwrap_or_default()
}

/// A short description of a non-envelope error body: an HTML page's `<title>`, else its first
/// line of text with tags stripped, cut to 120 characters; `None` when nothing is left.
pub(crate) fn body_excerpt(body: &[u8]) -> Option<String> {
    const LIMIT: usize = 120;
    let text = String::from_utf8_lossy(body);
    let lower = text.to_ascii_lowercase();
    let title = lower.find("<title>").and_then(|start| {
        let start = start + "<title>".len();
        let end = start + lower[start..].find("</title>")?;
        text.get(start..end)
    });
    let source = title.map_or_else(|| strip_tags(&text), str::to_owned);
    let line = source.lines().map(str::trim).find(|l| !l.is_empty())?.to_owned();
    if line.chars().count() <= LIMIT {
        return Some(line);
    }
    let mut cut: String = line.chars().take(LIMIT).collect();
    cut.push('…');
    Some(cut)
}

fn strip_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push('\n');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// The error body of the OCI distribution spec: `{"errors": [{"code", "message", "detail"}]}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ErrorEnvelope {
    /// The errors, in the registry's order.
    pub errors: Vec<RegistryErrorInfo>,
}

/// One entry of an [`ErrorEnvelope`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RegistryErrorInfo {
    /// A code such as `MANIFEST_UNKNOWN`, `BLOB_UNKNOWN`, `UNAUTHORIZED`, `DENIED`, `TOOMANYREQUESTS`.
    pub code: String,
    /// Human-readable text.
    #[serde(default)]
    pub message: String,
    /// Unstructured extra information.
    #[serde(default)]
    pub detail: Option<serde_json::Value>,
}

impl ErrorEnvelope {
    /// Parses a response body; `None` when it is not an envelope with at least one error.
    pub fn parse(body: &[u8]) -> Option<Self> {
        serde_json::from_slice::<Self>(body).ok().filter(|e| !e.errors.is_empty())
    }

    /// Whether any entry has this code (e.g. `"MANIFEST_UNKNOWN"`).
    pub fn has_code(&self, code: &str) -> bool {
        self.errors.iter().any(|e| e.code == code)
    }
}

impl fmt::Display for ErrorEnvelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            if e.message.is_empty() {
                f.write_str(&e.code)?;
            } else {
                write!(f, "{}: {}", e.code, e.message)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_parses_and_displays() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}},{"code":"DENIED"}]}"#;
        let env = ErrorEnvelope::parse(body).expect("envelope");
        assert!(env.has_code("DENIED"));
        assert_eq!(env.to_string(), "MANIFEST_UNKNOWN: manifest unknown; DENIED");
        assert_eq!(ErrorEnvelope::parse(b"<html>"), None);
        assert_eq!(ErrorEnvelope::parse(br#"{"errors":[]}"#), None);
    }

    #[test]
    fn excerpt_table() {
        let ex = |b: &str| body_excerpt(b.as_bytes());
        assert_eq!(
            ex("<html><head><TITLE>502 Bad Gateway</TITLE></head><body>x</body></html>"),
            Some("502 Bad Gateway".into())
        );
        assert_eq!(
            ex("<html><body>\n<h1>Access denied</h1><p>by proxy</p></body></html>"),
            Some("Access denied".into())
        );
        assert_eq!(ex("  \nplain text\nmore"), Some("plain text".into()));
        assert_eq!(ex(""), None);
        assert_eq!(ex("<br/>"), None);
        assert_eq!(ex(&"x".repeat(200)).map(|e| e.chars().count()), Some(121));
    }

    #[test]
    fn error_stays_small() {
        // Results are returned through every await point; keep them cheap to move.
        assert!(std::mem::size_of::<Error>() <= 128, "{}", std::mem::size_of::<Error>());
    }
}
