//! Registry auth pieces: `WWW-Authenticate` parsing, scopes, token responses and the cache.
//!
//! The flow (oras-project/rust-oci-client `src/client.rs` `_auth`, and the distribution spec's
//! token auth) lives in `authorize.rs`: a request answered 401 with `Bearer realm=..,service=..`
//! makes us GET `realm?service=..&scope=repository:<repo>:pull[,push]` (with Basic credentials
//! when we have some); the token is cached per (registry, repository, scope) until its
//! `expires_in` runs out, and the request is retried once. A `Basic` challenge is answered with
//! the credentials themselves. There is no separate `/v2/` ping: the 401 on the real request
//! carries the same challenge.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::Url;
use serde::Deserialize;

use crate::secret::Secret;

/// Tokens are dropped this long before the registry says they expire, so one does not lapse
/// between our check and the registry's.
const EXPIRY_SLACK: Duration = Duration::from_secs(10);
/// The distribution spec's default when a token response has no `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(60);

/// One challenge of a `WWW-Authenticate` header: a scheme and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// A parameter by case-insensitive name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn is_bearer(&self) -> bool {
        self.scheme.eq_ignore_ascii_case("bearer")
    }
}

/// Parses a `WWW-Authenticate` value into its challenges (RFC 7235 §4.1): several may share
/// one header, separated by commas, e.g. `Basic realm="x", Bearer realm="y",service="z"`.
/// Malformed trailing input is dropped rather than failing the whole header.
pub(crate) fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut p = Cursor { s: header.as_bytes(), i: 0 };
    let mut out = Vec::new();
    loop {
        p.skip(|b| b == b' ' || b == b'\t' || b == b',');
        let scheme = p.token();
        if scheme.is_empty() {
            break;
        }
        let mut challenge = Challenge { scheme, params: Vec::new() };
        loop {
            let save = p.i;
            p.skip(|b| b == b' ' || b == b'\t' || b == b',');
            let name = p.token();
            p.skip(|b| b == b' ' || b == b'\t');
            if name.is_empty() || !p.eat(b'=') {
                // Not `name=`: the start of the next challenge (or the end).
                p.i = save;
                break;
            }
            p.skip(|b| b == b' ' || b == b'\t');
            let value = if p.peek() == Some(b'"') { p.quoted() } else { p.bare_value() };
            challenge.params.push((name, value));
        }
        out.push(challenge);
    }
    out
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn skip(&mut self, pred: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&pred) {
            self.i += 1;
        }
    }

    fn take(&mut self, pred: impl Fn(u8) -> bool) -> String {
        let start = self.i;
        self.skip(pred);
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    /// RFC 7230 tchar run.
    fn token(&mut self) -> String {
        self.take(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    }

    /// An unquoted value: tolerant of realms sent without quotes (`realm=https://a/b`).
    fn bare_value(&mut self) -> String {
        self.take(|b| b != b',' && b != b' ' && b != b'\t')
    }

    /// A quoted-string with `\` escapes; an unterminated one runs to the end.
    fn quoted(&mut self) -> String {
        self.i += 1;
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    if let Some(next) = self.peek() {
                        out.push(next);
                        self.i += 1;
                    }
                }
                _ => out.push(b),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// What a token request needs from a Bearer challenge.
#[derive(Debug, Clone)]
pub(crate) struct BearerChallenge {
    pub realm: Url,
    pub service: Option<String>,
}

impl BearerChallenge {
    /// The token URL for `scopes` (one `scope` parameter each).
    pub fn token_url(&self, scopes: &[String]) -> Url {
        let mut url = self.realm.clone();
        {
            let mut q = url.query_pairs_mut();
            if let Some(service) = &self.service {
                q.append_pair("service", service);
            }
            for scope in scopes {
                q.append_pair("scope", scope);
            }
        }
        url
    }
}

/// How a registry wants to be authenticated, learnt from its first 401.
#[derive(Debug, Clone)]
pub(crate) enum AuthMode {
    /// `Authorization: Basic` with the credentials on every request.
    Basic,
    /// Scoped tokens from this endpoint.
    Bearer(BearerChallenge),
}

/// What a request needs: it decides the token scopes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Access<'a> {
    /// Read the repository.
    Pull,
    /// Read and write the repository, and read `mount_from` (another repository of the same
    /// registry) when a blob is mounted from there.
    Push { mount_from: Option<&'a str> },
    /// Nothing but proving who we are (`docker login`): a token without scopes.
    Login,
}

impl Access<'_> {
    /// The token scopes for `repository`.
    pub fn scopes(self, repository: &str) -> Vec<String> {
        match self {
            Access::Pull => vec![format!("repository:{repository}:pull")],
            Access::Push { mount_from } => {
                let mut scopes = vec![format!("repository:{repository}:pull,push")];
                scopes.extend(
                    mount_from.filter(|from| *from != repository).map(|from| format!("repository:{from}:pull")),
                );
                scopes
            }
            Access::Login => Vec::new(),
        }
    }
}

/// A token endpoint's answer. Docker Hub sends both `token` and `access_token`; the spec says
/// prefer `token`.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenResponse {
    #[serde(default)]
    token: Option<Secret<String>>,
    #[serde(default)]
    access_token: Option<Secret<String>>,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl TokenResponse {
    /// The token and how long it lives; `None` when the response carries no token.
    pub fn into_token(self) -> Option<(Secret<String>, Duration)> {
        let token = self.token.or(self.access_token)?;
        let lifetime = self.expires_in.map_or(DEFAULT_LIFETIME, Duration::from_secs);
        Some((token, lifetime))
    }
}

/// What a token is good for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TokenKey {
    pub registry: String,
    pub repository: String,
    /// The scopes, space-separated.
    pub scope: String,
}

impl TokenKey {
    /// The key for `access` to `repository` on `registry`.
    pub fn new(registry: &str, repository: &str, access: Access<'_>) -> Self {
        Self {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            scope: access.scopes(repository).join(" "),
        }
    }

    /// The scopes, one per `scope` parameter of a token request.
    pub fn scopes(&self) -> Vec<String> {
        self.scope.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect()
    }
}

#[derive(Debug)]
struct CachedToken {
    token: Secret<String>,
    expires: Instant,
}

/// Tokens by (registry, repository, scope), dropped when expired.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    tokens: Mutex<HashMap<TokenKey, CachedToken>>,
}

impl TokenCache {
    pub fn get(&self, key: &TokenKey) -> Option<Secret<String>> {
        let mut tokens = self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match tokens.get(key) {
            Some(t) if t.expires > Instant::now() => Some(t.token.clone()),
            Some(_) => {
                tokens.remove(key);
                None
            }
            None => None,
        }
    }

    /// Forgets a token the registry refused.
    pub fn remove(&self, key: &TokenKey) {
        self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(key);
    }

    pub fn insert(&self, key: TokenKey, token: Secret<String>, lifetime: Duration) {
        let expires = Instant::now() + lifetime.saturating_sub(EXPIRY_SLACK);
        let mut tokens = self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        tokens.insert(key, CachedToken { token, expires });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `challenge!(header => [(scheme, [(name, value), ...]), ...])`
    macro_rules! challenges {
        ($header:expr => [$(($scheme:expr, [$(($k:expr, $v:expr)),*])),*]) => {
            let expected: Vec<Challenge> = vec![$(Challenge {
                scheme: $scheme.to_owned(),
                params: vec![$(($k.to_owned(), $v.to_owned())),*],
            }),*];
            assert_eq!(parse_challenges($header), expected, "parsing {:?}", $header);
        };
    }

    #[test]
    fn www_authenticate_table() {
        challenges!(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#
            => [("Bearer", [("realm", "https://auth.docker.io/token"), ("service", "registry.docker.io"), ("scope", "repository:library/busybox:pull")])]);
        challenges!(r#"Basic realm="Registry Realm""# => [("Basic", [("realm", "Registry Realm")])]);
        challenges!(r#"Basic realm="a", Bearer realm="b",service="s""#
            => [("Basic", [("realm", "a")]), ("Bearer", [("realm", "b"), ("service", "s")])]);
        challenges!(r#"bearer realm = "x" , error="insufficient_scope""# => [("bearer", [("realm", "x"), ("error", "insufficient_scope")])]);
        challenges!(r#"Bearer realm="q\"uo\\te""# => [("Bearer", [("realm", r#"q"uo\te"#)])]);
        challenges!("Bearer realm=https://a.io/token,service=a.io" => [("Bearer", [("realm", "https://a.io/token"), ("service", "a.io")])]);
        challenges!("Bearer" => [("Bearer", [])]);
        challenges!("" => []);
        challenges!(r#"Bearer realm="unterminated"# => [("Bearer", [("realm", "unterminated")])]);
    }

    #[test]
    fn challenge_lookup_and_token_url() {
        let c = &parse_challenges(r#"BEARER Realm="https://a.io/token?x=1",Service="a io""#)[0];
        assert!(c.is_bearer());
        let bearer = BearerChallenge {
            realm: Url::parse(c.param("realm").expect("realm")).expect("url"),
            service: c.param("service").map(str::to_owned),
        };
        assert_eq!(
            bearer.token_url(&["repository:a/b:pull".into()]).as_str(),
            "https://a.io/token?x=1&service=a+io&scope=repository%3Aa%2Fb%3Apull"
        );
        let key = TokenKey::new("r", "a/b", Access::Push { mount_from: Some("c") });
        assert_eq!(
            bearer.token_url(&key.scopes()).as_str(),
            "https://a.io/token?x=1&service=a+io&scope=repository%3Aa%2Fb%3Apull%2Cpush&scope=repository%3Ac%3Apull"
        );
    }

    #[test]
    fn scope_table() {
        let s = |access: Access<'_>| access.scopes("a/b").join(" ");
        assert_eq!(s(Access::Pull), "repository:a/b:pull");
        assert_eq!(s(Access::Push { mount_from: None }), "repository:a/b:pull,push");
        assert_eq!(s(Access::Push { mount_from: Some("x/y") }), "repository:a/b:pull,push repository:x/y:pull");
        assert_eq!(s(Access::Push { mount_from: Some("a/b") }), "repository:a/b:pull,push");
    }

    #[test]
    fn token_response_prefers_token() {
        let r: TokenResponse =
            serde_json::from_str(r#"{"token":"t","access_token":"a","expires_in":300}"#).expect("json");
        let (t, life) = r.into_token().expect("token");
        assert_eq!((t.expose().as_str(), life), ("t", Duration::from_secs(300)));
        let r: TokenResponse = serde_json::from_str(r#"{"access_token":"a"}"#).expect("json");
        let (t, life) = r.into_token().expect("token");
        assert_eq!((t.expose().as_str(), life), ("a", DEFAULT_LIFETIME));
        let r: TokenResponse = serde_json::from_str("{}").expect("json");
        assert!(r.into_token().is_none());
    }

    #[test]
    fn cache_expires_and_separates_scopes() {
        let cache = TokenCache::default();
        let key = |scope: &str| TokenKey { registry: "r".into(), repository: "a".into(), scope: scope.into() };
        cache.insert(key("pull"), Secret::new("t".into()), Duration::from_secs(300));
        cache.insert(key("old"), Secret::new("o".into()), Duration::from_secs(5)); // below the slack
        assert_eq!(cache.get(&key("pull")).map(|t| t.expose().clone()), Some("t".into()));
        assert!(cache.get(&key("old")).is_none());
        assert!(cache.get(&key("push")).is_none());
        assert!(!format!("{cache:?}").contains("\"t\""));
        cache.remove(&key("pull"));
        assert!(cache.get(&key("pull")).is_none());
    }
}
