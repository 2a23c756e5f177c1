//! The client: options, scheme choice, URLs, retries with backoff, and response checks.
//! Authentication is in `authorize.rs`, TLS trust in `tls.rs`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use reqwest::{RequestBuilder, Response, StatusCode, Url};

use crate::authorize::AuthState;
use crate::credentials::Credentials;
use crate::error::{body_excerpt, Error, ErrorEnvelope, Result};
use crate::reference::{split_host_port, Reference};
use crate::tls::HttpClients;

/// How much of an error body we read looking for an [`ErrorEnvelope`].
const MAX_ERROR_BODY: u64 = 64 * 1024;
/// Backoff never sleeps longer than this between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Settings for a [`Client`]. Start from [`ClientOptions::default`] and change fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Registries spoken to over plain HTTP. An entry `host` matches that host on any port,
    /// `host:port` only that port; IPv6 hosts are bracketed (`[::1]`). Every other registry is
    /// spoken to over HTTPS only: there is no fallback from HTTPS to HTTP. An insecure host
    /// whose `certs_dir` directory holds CA certificates (`*.crt`) is spoken to over HTTPS.
    /// Default: `localhost`, `127.0.0.1` and `[::1]`.
    pub insecure_hosts: Vec<String>,
    /// The `User-Agent` header. Default: `rbuild/<version>`.
    pub user_agent: String,
    /// How many times a transient failure (connection error, timeout, HTTP 5xx or 429) is
    /// retried; for uploads, how many times a broken upload is restarted. Default: 3.
    pub max_retries: u32,
    /// The sleep before the first retry; it doubles for each further one (capped at 10 s).
    /// Default: 250 ms.
    pub retry_delay: Duration,
    /// Limit on establishing a connection. Default: 30 s.
    pub connect_timeout: Duration,
    /// Limit on waiting for any single read. Default: 60 s.
    pub read_timeout: Duration,
    /// PEM files of CA certificates trusted for every HTTPS registry, on top of the system's
    /// bundle and the webpki roots. Default: none.
    pub ca_certs: Vec<PathBuf>,
    /// Docker's per-registry CA directory: the `*.crt` files in `<certs_dir>/<host[:port]>/`
    /// are trusted for that registry only. Default: `/etc/docker/certs.d`; `None` disables it.
    pub certs_dir: Option<PathBuf>,
    /// Credentials by registry (`docker.io`, `host[:port]`); they take precedence over the
    /// docker config. Default: none.
    pub credentials: HashMap<String, Credentials>,
    /// Whether registries without explicit credentials get theirs from docker's config
    /// (`auths`, `credsStore`, `credHelpers`; see [`DockerConfig`](crate::DockerConfig)).
    /// It is read only when a registry asks for authentication. Default: `true`.
    pub use_docker_config: bool,
    /// The docker config file; `None`: `$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`. Default: `None`.
    pub docker_config: Option<PathBuf>,
    /// Blobs up to this size are uploaded with one PUT; larger ones in PATCH requests of this
    /// many bytes, then a closing PUT. Default: 16 MiB.
    pub upload_chunk_size: u64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            insecure_hosts: vec!["localhost".into(), "127.0.0.1".into(), "[::1]".into()],
            user_agent: concat!("rbuild/", env!("CARGO_PKG_VERSION")).to_owned(),
            max_retries: 3,
            retry_delay: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            ca_certs: Vec::new(),
            certs_dir: Some(PathBuf::from("/etc/docker/certs.d")),
            credentials: HashMap::new(),
            use_docker_config: true,
            docker_config: None,
            upload_chunk_size: 16 * 1024 * 1024,
        }
    }
}

/// An OCI distribution client. Cheap to clone; clones share connections, cached tokens and
/// credentials.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) http: Arc<HttpClients>,
    pub(crate) options: Arc<ClientOptions>,
    pub(crate) auth: Arc<AuthState>,
}

impl Client {
    /// A client with these options.
    ///
    /// # Errors
    ///
    /// [`Error::HttpClient`] when the TLS backend cannot be initialised;
    /// [`Error::ReadCaCert`] and [`Error::InvalidCaCert`] for [`ClientOptions::ca_certs`].
    pub fn new(options: ClientOptions) -> Result<Self> {
        Ok(Self { http: Arc::new(HttpClients::new(&options)?), options: Arc::new(options), auth: Arc::default() })
    }

    /// Whether `registry` (`host[:port]`) is spoken to over plain HTTP.
    pub fn is_insecure(&self, registry: &str) -> bool {
        let (host, _) = split_host_port(registry);
        self.options
            .insecure_hosts
            .iter()
            .any(|entry| entry == registry || (entry == host && split_host_port(entry).1.is_none()))
    }

    /// `https`, or `http` for an insecure registry (see [`ClientOptions::insecure_hosts`])
    /// unless its `certs.d` directory holds CA certificates: a registry with a CA of its own
    /// speaks TLS, on loopback too.
    pub(crate) fn scheme(&self, registry: &str) -> &'static str {
        let has_ca = || {
            self.options.certs_dir.as_deref().is_some_and(|dir| {
                std::fs::read_dir(dir.join(registry))
                    .map(|entries| entries.flatten().any(|e| e.path().extension().is_some_and(|x| x == "crt")))
                    .unwrap_or(false)
            })
        };
        if self.is_insecure(registry) && !has_ca() {
            "http"
        } else {
            "https"
        }
    }

    /// `<scheme>://<api host>/v2/<repository>/<tail>`.
    pub(crate) fn api_url(&self, reference: &Reference, tail: &str) -> Result<Url> {
        let scheme = self.scheme(reference.registry());
        let text = format!("{scheme}://{}/v2/{}/{tail}", reference.api_host(), reference.repository());
        Url::parse(&text).map_err(|source| Error::InvalidUrl { url: text, source })
    }

    /// Sends the request `build` makes, rebuilding and resending it after a transient failure
    /// (connection error, timeout, 5xx, 429) up to `max_retries` times with doubling sleeps.
    /// After the last attempt the error, or the 5xx/429 response, is returned.
    pub(crate) async fn execute(&self, build: impl Fn() -> RequestBuilder) -> Result<Response, reqwest::Error> {
        let mut attempt = 0;
        loop {
            let retry = attempt < self.options.max_retries;
            match build().send().await {
                Ok(response) if retry && is_transient_status(response.status()) => {}
                Err(e) if retry && is_transient_error(&e) => {}
                // The URL is dropped from the error: after a redirect it may be a signed one.
                other => return other.map_err(reqwest::Error::without_url),
            }
            attempt += 1;
            self.backoff(attempt).await;
        }
    }

    /// Sleeps before retry number `attempt` (1-based).
    pub(crate) async fn backoff(&self, attempt: u32) {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        let delay = self.options.retry_delay.saturating_mul(factor).min(MAX_BACKOFF);
        tokio::time::sleep(delay).await;
    }
}

pub(crate) fn is_transient_status(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

/// Failures before a response arrived that a new attempt may not hit.
pub(crate) fn is_transient_error(e: &reqwest::Error) -> bool {
    e.is_connect() || e.is_timeout() || e.is_request() || e.is_body()
}

/// Turns a non-success response into an error: 404 becomes `not_found(envelope)`, anything
/// else [`Error::Status`]. Success passes through.
pub(crate) async fn check_status(
    response: Response,
    url: &Url,
    not_found: impl FnOnce(Option<ErrorEnvelope>) -> Error,
) -> Result<Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    if status == StatusCode::NOT_FOUND {
        return Err(not_found(read_envelope(response).await));
    }
    Err(status_error(response, url).await)
}

/// [`Error::Status`] for a response, with its envelope or an excerpt of its body.
pub(crate) async fn status_error(response: Response, url: &Url) -> Error {
    let status = response.status();
    let body = read_limited(response, url, MAX_ERROR_BODY).await.unwrap_or_default();
    let envelope = ErrorEnvelope::parse(&body);
    let excerpt = if envelope.is_none() { body_excerpt(&body) } else { None };
    Error::Status { url: url.into(), status, envelope, excerpt }
}

pub(crate) async fn read_envelope(response: Response) -> Option<ErrorEnvelope> {
    let url = response.url().clone();
    let body = read_limited(response, &url, MAX_ERROR_BODY).await.ok()?;
    ErrorEnvelope::parse(&body)
}

/// Reads a whole body that must not exceed `limit` bytes ([`Error::TooLarge`] otherwise).
pub(crate) async fn read_limited(response: Response, url: &Url, limit: u64) -> Result<Bytes> {
    let too_large = || Error::TooLarge { url: url.into(), limit };
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| Error::Transport { url: url.into(), source: source.without_url() })?;
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// The `Content-Type` of a response, for error messages.
pub(crate) fn content_type_of(response: &Response) -> String {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| "no content type".to_owned(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! insecure {
        ($registry:expr, $expected:expr) => {
            let client = Client::new(ClientOptions::default()).expect("client");
            assert_eq!(client.is_insecure($registry), $expected, "{}", $registry);
        };
    }

    #[test]
    fn insecure_table() {
        insecure!("localhost", true);
        insecure!("localhost:5000", true);
        insecure!("127.0.0.1:41234", true);
        insecure!("[::1]:5000", true);
        insecure!("docker.io", false);
        insecure!("localhost.example.com", false);
        insecure!("127.0.0.2:5000", false);
    }

    #[test]
    fn insecure_entry_with_port_matches_only_that_port() {
        let options = ClientOptions { insecure_hosts: vec!["reg.lan:5000".into()], ..ClientOptions::default() };
        let client = Client::new(options).expect("client");
        assert!(client.is_insecure("reg.lan:5000"));
        assert!(!client.is_insecure("reg.lan:5001"));
        assert!(!client.is_insecure("reg.lan"));
        assert!(!client.is_insecure("localhost:5000"));
    }

    #[test]
    fn options_debug_hides_credentials() {
        let mut options = ClientOptions::default();
        options.credentials.insert("r".into(), Credentials::basic("alice", "hunter2"));
        options.credentials.insert("t".into(), Credentials::identity_token("refresh-hunter2"));
        let client = Client::new(options).expect("client");
        let shown = format!("{client:?} {:?}", client.options);
        assert!(shown.contains("alice") && !shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn api_urls() {
        let client = Client::new(ClientOptions::default()).expect("client");
        let r: Reference = "busybox".parse().expect("ref");
        let url = client.api_url(&r, "manifests/latest").expect("url");
        assert_eq!(url.as_str(), "https://registry-1.docker.io/v2/library/busybox/manifests/latest");
        let r: Reference = "[::1]:5000/a/b".parse().expect("ref");
        let url = client.api_url(&r, "blobs/x").expect("url");
        assert_eq!(url.as_str(), "http://[::1]:5000/v2/a/b/blobs/x");
    }
}
