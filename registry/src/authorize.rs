//! The auth flow: what each request carries, learning a registry's scheme from its 401, token
//! requests (anonymous, with Basic credentials, or with an identity token), and credentials.
//!
//! Once a registry has challenged us, later requests are authorised *before* they are sent (a
//! token for the new scope is fetched first, or Basic credentials attached), so uploads whose
//! bodies cannot be replayed are not spent on a 401.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode, Url};

use crate::auth::{
    parse_challenges, Access, AuthMode, BearerChallenge, Challenge, TokenCache, TokenKey, TokenResponse,
};
use crate::client::{read_envelope, read_limited, Client};
use crate::credentials::{Credentials, DockerConfig};
use crate::error::{Error, Result};
use crate::reference::Reference;
use crate::secret::Secret;
use crate::tls::Purpose;

/// Token bodies larger than this are refused.
const MAX_TOKEN_BODY: u64 = 64 * 1024;
/// The OAuth2 `client_id` sent with identity-token grants.
const OAUTH_CLIENT_ID: &str = "rbuild";

/// Auth state shared by a client's clones.
#[derive(Debug, Default)]
pub(crate) struct AuthState {
    pub tokens: TokenCache,
    /// By registry, once it has challenged us.
    modes: Mutex<HashMap<String, AuthMode>>,
    /// Docker-config lookups by registry (`None`: looked up, nothing there).
    found: Mutex<HashMap<String, Option<Credentials>>>,
}

impl AuthState {
    fn mode(&self, registry: &str) -> Option<AuthMode> {
        let modes = self.modes.lock().unwrap_or_else(PoisonError::into_inner);
        modes.get(registry).cloned()
    }

    fn set_mode(&self, registry: &str, mode: AuthMode) {
        let mut modes = self.modes.lock().unwrap_or_else(PoisonError::into_inner);
        modes.insert(registry.to_owned(), mode);
    }
}

impl Client {
    /// GET `url` for `reference`'s repository with pull access; see [`Client::send`].
    pub(crate) async fn get(&self, reference: &Reference, url: &Url, headers: &HeaderMap) -> Result<Response> {
        self.send(reference, Access::Pull, url, |http| http.get(url.clone()).headers(headers.clone())).await
    }

    /// Sends the request `build` makes (it must be replayable: no streaming body) with auth
    /// for `access`, retrying transient failures; a 401 is answered once by learning the
    /// challenge (a token for the scope, or Basic credentials) and resending. Any other
    /// response is returned as is.
    ///
    /// # Errors
    ///
    /// [`Error::Unauthorized`] for a second 401, or a first one we cannot answer;
    /// [`Error::Transport`] after retries; token and credential errors.
    pub(crate) async fn send(
        &self,
        reference: &Reference,
        access: Access<'_>,
        url: &Url,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response> {
        let http = self.http.for_url(&self.options, url, Purpose::Api)?;
        let key = TokenKey::new(reference.registry(), reference.repository(), access);
        let mut challenged = false;
        loop {
            let auth = self.authorization(&key).await?;
            let response = self
                .execute(|| with_auth(build(&http), auth.as_ref()))
                .await
                .map_err(|source| Error::Transport { url: url.into(), source })?;
            if response.status() != StatusCode::UNAUTHORIZED {
                return Ok(response);
            }
            // A request sent before a concurrent one learnt the registry's scheme went out
            // without credentials: resend it with them rather than report a refusal.
            let learnt_meanwhile = auth.is_none() && self.auth.mode(&key.registry).is_some();
            if !challenged && (learnt_meanwhile || self.learn(&response, url, &key).await?) {
                challenged = true;
                continue;
            }
            return Err(Error::Unauthorized {
                url: url.into(),
                sent_credentials: auth.is_some() && self.has_credentials(&key.registry),
                envelope: read_envelope(response).await,
            });
        }
    }

    /// The `Authorization` header for a request needing `key`, as far as the registry's
    /// scheme is known: `None` before its first challenge.
    pub(crate) async fn authorization(&self, key: &TokenKey) -> Result<Option<HeaderValue>> {
        match self.auth.mode(&key.registry) {
            None => Ok(None),
            Some(AuthMode::Basic) => Ok(match self.credentials(&key.registry).await? {
                Some(Credentials::UsernamePassword { username, password }) => Some(basic_header(&username, &password)),
                _ => None,
            }),
            Some(AuthMode::Bearer(challenge)) => {
                let token = match self.auth.tokens.get(key) {
                    Some(token) => token,
                    None => self.fetch_token(&challenge, key).await?,
                };
                Ok(Some(sensitive(format!("Bearer {}", token.expose()))))
            }
        }
    }

    /// Records what a 401 asks for. `true` when resending can help: a Bearer challenge (the
    /// refused token, if any, is dropped), or a first Basic challenge we have credentials for.
    async fn learn(&self, response: &Response, url: &Url, key: &TokenKey) -> Result<bool> {
        let mut basic = false;
        for value in response.headers().get_all(WWW_AUTHENTICATE) {
            let header = String::from_utf8_lossy(value.as_bytes()).into_owned();
            for challenge in parse_challenges(&header) {
                if challenge.is_bearer() {
                    let bearer = bearer_challenge(&challenge, url, &header)?;
                    self.auth.set_mode(&key.registry, AuthMode::Bearer(bearer));
                    self.auth.tokens.remove(key);
                    return Ok(true);
                }
                basic |= challenge.scheme.eq_ignore_ascii_case("basic");
            }
        }
        let already_basic = matches!(self.auth.mode(&key.registry), Some(AuthMode::Basic));
        if !basic || already_basic {
            return Ok(false);
        }
        let usable = matches!(self.credentials(&key.registry).await?, Some(Credentials::UsernamePassword { .. }));
        if usable {
            self.auth.set_mode(&key.registry, AuthMode::Basic);
        }
        Ok(usable)
    }

    /// Requests a token for `key` from `challenge`'s realm and caches it.
    async fn fetch_token(&self, challenge: &BearerChallenge, key: &TokenKey) -> Result<Secret<String>> {
        let credentials = self.credentials(&key.registry).await?;
        let scopes = key.scopes();
        let url = challenge.token_url(&scopes);
        let http = self.http.for_url(&self.options, &url, Purpose::Api)?;
        let response = match &credentials {
            // OAuth2 refresh-token grant, as docker does for identity tokens.
            Some(Credentials::IdentityToken { token }) => {
                let mut form = vec![
                    ("grant_type", "refresh_token".to_owned()),
                    ("refresh_token", token.expose().clone()),
                    ("client_id", OAUTH_CLIENT_ID.to_owned()),
                    ("scope", scopes.join(" ")),
                ];
                form.extend(challenge.service.clone().map(|s| ("service", s)));
                self.execute(|| http.post(challenge.realm.clone()).form(&form)).await
            }
            Some(Credentials::UsernamePassword { username, password }) => {
                let header = basic_header(username, password);
                self.execute(|| http.get(url.clone()).header(AUTHORIZATION, header.clone())).await
            }
            None => self.execute(|| http.get(url.clone())).await,
        }
        .map_err(|source| Error::TokenRequest { realm: (&url).into(), source })?;
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(Error::Unauthorized {
                url: (&url).into(),
                sent_credentials: credentials.is_some(),
                envelope: read_envelope(response).await,
            });
        }
        if !status.is_success() {
            return Err(Error::TokenStatus { realm: url.into(), status });
        }
        let body = read_limited(response, &url, MAX_TOKEN_BODY).await?;
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|source| Error::TokenResponse { realm: (&url).into(), source })?;
        let Some((token, lifetime)) = parsed.into_token() else {
            let source = <serde_json::Error as serde::de::Error>::missing_field("token");
            return Err(Error::TokenResponse { realm: url.into(), source });
        };
        self.auth.tokens.insert(key.clone(), token.clone(), lifetime);
        Ok(token)
    }

    /// The credentials for `registry`: [`ClientOptions::credentials`](crate::ClientOptions),
    /// else the docker config (looked up once per registry, off the async workers: a helper
    /// may take a while).
    pub(crate) async fn credentials(&self, registry: &str) -> Result<Option<Credentials>> {
        if let Some(explicit) = self.options.credentials.get(registry) {
            return Ok(Some(explicit.clone()));
        }
        if !self.options.use_docker_config {
            return Ok(None);
        }
        if let Some(found) = self.cached_credentials(registry) {
            return Ok(found);
        }
        let Some(path) = self.options.docker_config.clone().or_else(DockerConfig::default_path) else {
            return Ok(None);
        };
        let name = registry.to_owned();
        let found = tokio::task::spawn_blocking(move || DockerConfig::load(&path)?.credentials(&name))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
        let mut cache = self.auth.found.lock().unwrap_or_else(PoisonError::into_inner);
        cache.insert(registry.to_owned(), found.clone());
        Ok(found)
    }

    fn cached_credentials(&self, registry: &str) -> Option<Option<Credentials>> {
        let cache = self.auth.found.lock().unwrap_or_else(PoisonError::into_inner);
        cache.get(registry).cloned()
    }

    /// Whether credentials for `registry` are known (explicit, or found in the docker config).
    fn has_credentials(&self, registry: &str) -> bool {
        self.options.credentials.contains_key(registry) || self.cached_credentials(registry).flatten().is_some()
    }
}

/// Adds the `Authorization` header, if any.
pub(crate) fn with_auth(request: RequestBuilder, auth: Option<&HeaderValue>) -> RequestBuilder {
    match auth {
        Some(value) => request.header(AUTHORIZATION, value.clone()),
        None => request,
    }
}

fn basic_header(username: &str, password: &Secret<String>) -> HeaderValue {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{}", password.expose()));
    sensitive(format!("Basic {encoded}"))
}

/// A header value that hyper keeps out of its debug output (and HPACK tables).
fn sensitive(value: String) -> HeaderValue {
    // Base64 and token68 characters only: always a valid header value; a token with control
    // characters would be refused by the registry anyway, so send it empty rather than panic.
    let mut header = HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""));
    header.set_sensitive(true);
    header
}

/// The Bearer challenge's realm (an http(s) URL) and service.
fn bearer_challenge(challenge: &Challenge, url: &Url, header: &str) -> Result<BearerChallenge> {
    let realm =
        challenge.param("realm").and_then(|r| Url::parse(r).ok()).filter(|r| matches!(r.scheme(), "http" | "https"));
    let Some(realm) = realm else {
        return Err(Error::InvalidChallenge { url: url.into(), header: header.to_owned() });
    };
    let service = challenge.param("service").map(str::to_owned);
    Ok(BearerChallenge { realm, service })
}
