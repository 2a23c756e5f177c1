//! The HTTP client: scheme choice, retries with backoff, and the 401 → token → retry step.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use reqwest::header::{HeaderMap, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode, Url};

use crate::auth::{
    parse_challenges, BearerChallenge, Challenge, TokenCache, TokenKey, TokenResponse,
};
use crate::error::{Error, ErrorEnvelope, Result};
use crate::reference::{split_host_port, Reference};

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
    /// spoken to over HTTPS only: there is no fallback from HTTPS to HTTP.
    /// Default: `localhost`, `127.0.0.1` and `[::1]`.
    pub insecure_hosts: Vec<String>,
    /// The `User-Agent` header. Default: `rbuild/<version>`.
    pub user_agent: String,
    /// How many times a transient failure (connection error, timeout, HTTP 5xx or 429) is
    /// retried. Default: 3.
    pub max_retries: u32,
    /// The sleep before the first retry; it doubles for each further one (capped at 10 s).
    /// Default: 250 ms.
    pub retry_delay: Duration,
    /// Limit on establishing a connection. Default: 30 s.
    pub connect_timeout: Duration,
    /// Limit on waiting for any single read. Default: 60 s.
    pub read_timeout: Duration,
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
        }
    }
}

/// An OCI distribution client. Cheap to clone; clones share connections and cached tokens.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) http: reqwest::Client,
    pub(crate) options: Arc<ClientOptions>,
    tokens: Arc<TokenCache>,
}

impl Client {
    /// A client with these options.
    ///
    /// # Errors
    ///
    /// [`Error::HttpClient`] when the TLS backend cannot be initialised.
    pub fn new(options: ClientOptions) -> Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(options.user_agent.clone())
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            // Registries redirect blob GETs to storage; reqwest drops Authorization when the
            // host changes.
            .redirect(reqwest::redirect::Policy::limited(10))
            .build()
            .map_err(Error::HttpClient)?;
        Ok(Self {
            http,
            options: Arc::new(options),
            tokens: Arc::default(),
        })
    }

    /// Whether `registry` (`host[:port]`) is spoken to over plain HTTP.
    pub fn is_insecure(&self, registry: &str) -> bool {
        let (host, _) = split_host_port(registry);
        self.options
            .insecure_hosts
            .iter()
            .any(|entry| entry == registry || (entry == host && split_host_port(entry).1.is_none()))
    }

    /// `<scheme>://<api host>/v2/<repository>/<tail>`.
    pub(crate) fn api_url(&self, reference: &Reference, tail: &str) -> Result<Url> {
        let scheme = if self.is_insecure(reference.registry()) {
            "http"
        } else {
            "https"
        };
        let text = format!(
            "{scheme}://{}/v2/{}/{tail}",
            reference.api_host(),
            reference.repository()
        );
        Url::parse(&text).map_err(|source| Error::InvalidUrl { url: text, source })
    }

    /// GET `url` for `reference`'s repository with the pull token, retrying transient failures
    /// and answering one 401 with a token request. Returns any other response as is.
    pub(crate) async fn get(
        &self,
        reference: &Reference,
        url: &Url,
        headers: &HeaderMap,
    ) -> Result<Response> {
        let key = TokenKey {
            registry: reference.registry().to_owned(),
            repository: reference.repository().to_owned(),
            scope: format!("repository:{}:pull", reference.repository()),
        };
        let mut fetched_token = false;
        loop {
            let token = self.tokens.get(&key);
            let response = self
                .execute(|| {
                    let request = self.http.get(url.clone()).headers(headers.clone());
                    match &token {
                        Some(t) => request.bearer_auth(t.expose()),
                        None => request,
                    }
                })
                .await
                .map_err(|source| Error::Transport {
                    url: url.into(),
                    source,
                })?;
            if response.status() != StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            let challenge = bearer_challenge(&response, url)?;
            match challenge {
                Some(challenge) if !fetched_token => {
                    self.fetch_token(&challenge, key.clone()).await?;
                    fetched_token = true;
                }
                _ => {
                    return Err(Error::Unauthorized {
                        url: url.into(),
                        envelope: read_envelope(response).await,
                    })
                }
            }
        }
    }

    async fn fetch_token(&self, challenge: &BearerChallenge, key: TokenKey) -> Result<()> {
        let url = challenge.token_url(&key.scope);
        let response = self
            .execute(|| self.http.get(url.clone()))
            .await
            .map_err(|source| Error::TokenRequest {
                realm: (&url).into(),
                source,
            })?;
        if !response.status().is_success() {
            return Err(Error::TokenStatus {
                realm: url.into(),
                status: response.status(),
            });
        }
        let body = read_limited(response, &url, MAX_ERROR_BODY).await?;
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|source| Error::TokenResponse {
                realm: (&url).into(),
                source,
            })?;
        let Some((token, lifetime)) = parsed.into_token() else {
            let source = <serde_json::Error as serde::de::Error>::missing_field("token");
            return Err(Error::TokenResponse {
                realm: url.into(),
                source,
            });
        };
        self.tokens.insert(key, token, lifetime);
        Ok(())
    }

    /// Sends the request `build` makes, rebuilding and resending it after a transient failure
    /// (connection error, timeout, 5xx, 429) up to `max_retries` times with doubling sleeps.
    /// After the last attempt the error, or the 5xx/429 response, is returned.
    pub(crate) async fn execute(
        &self,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<Response, reqwest::Error> {
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
        let delay = self
            .options
            .retry_delay
            .saturating_mul(factor)
            .min(MAX_BACKOFF);
        tokio::time::sleep(delay).await;
    }
}

fn is_transient_status(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

/// Failures before a response arrived that a new attempt may not hit.
fn is_transient_error(e: &reqwest::Error) -> bool {
    e.is_connect() || e.is_timeout() || e.is_request() || e.is_body()
}

/// The first usable Bearer challenge of a 401, `None` when there is none (e.g. Basic only: we
/// have no credentials to answer it with yet).
fn bearer_challenge(response: &Response, url: &Url) -> Result<Option<BearerChallenge>> {
    for value in response.headers().get_all(WWW_AUTHENTICATE) {
        let header = String::from_utf8_lossy(value.as_bytes()).into_owned();
        let Some(challenge) = parse_challenges(&header)
            .into_iter()
            .find(Challenge::is_bearer)
        else {
            continue;
        };
        let realm = challenge
            .param("realm")
            .and_then(|r| Url::parse(r).ok())
            .filter(|r| matches!(r.scheme(), "http" | "https"));
        let Some(realm) = realm else {
            return Err(Error::InvalidChallenge {
                url: url.into(),
                header,
            });
        };
        let service = challenge.param("service").map(str::to_owned);
        return Ok(Some(BearerChallenge { realm, service }));
    }
    Ok(None)
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
    let envelope = read_envelope(response).await;
    if status == StatusCode::NOT_FOUND {
        return Err(not_found(envelope));
    }
    Err(Error::Status {
        url: url.into(),
        status,
        envelope,
    })
}

async fn read_envelope(response: Response) -> Option<ErrorEnvelope> {
    let url = response.url().clone();
    let body = read_limited(response, &url, MAX_ERROR_BODY).await.ok()?;
    ErrorEnvelope::parse(&body)
}

/// Reads a whole body that must not exceed `limit` bytes ([`Error::TooLarge`] otherwise).
pub(crate) async fn read_limited(response: Response, url: &Url, limit: u64) -> Result<Bytes> {
    let too_large = || Error::TooLarge {
        url: url.into(),
        limit,
    };
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| Error::Transport {
            url: url.into(),
            source: source.without_url(),
        })?;
        if body.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
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
        let options = ClientOptions {
            insecure_hosts: vec!["reg.lan:5000".into()],
            ..ClientOptions::default()
        };
        let client = Client::new(options).expect("client");
        assert!(client.is_insecure("reg.lan:5000"));
        assert!(!client.is_insecure("reg.lan:5001"));
        assert!(!client.is_insecure("reg.lan"));
        assert!(!client.is_insecure("localhost:5000"));
    }

    #[test]
    fn api_urls() {
        let client = Client::new(ClientOptions::default()).expect("client");
        let r: Reference = "busybox".parse().expect("ref");
        let url = client.api_url(&r, "manifests/latest").expect("url");
        assert_eq!(
            url.as_str(),
            "https://registry-1.docker.io/v2/library/busybox/manifests/latest"
        );
        let r: Reference = "[::1]:5000/a/b".parse().expect("ref");
        let url = client.api_url(&r, "blobs/x").expect("url");
        assert_eq!(url.as_str(), "http://[::1]:5000/v2/a/b/blobs/x");
    }
}
