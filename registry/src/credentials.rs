//! Registry credentials and docker's `config.json`.
//!
//! Lookup follows the docker CLI (`cli/config/configfile/file.go`, `credentials/native_store.go`):
//!
//! 1. `credHelpers[<registry>]`: run `docker-credential-<helper> get`;
//! 2. else `credsStore`: the same with the default helper;
//! 3. `auths[<registry>]`: `identitytoken` (an OAuth2 refresh token) wins over `auth` (base64 of
//!    `user:password`), which wins over `username`/`password`.
//!
//! A helper that answers "credentials not found" falls through to `auths` (docker stops there;
//! falling through lets `rbuild login`, which writes `auths`, work next to a `credsStore`).
//! Keys: Docker Hub is [`DOCKER_HUB_CONFIG_KEY`]; other registries are `host[:port]`, and keys
//! written as URLs (`https://host:port/v1/`) match too.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;

use crate::error::Result;
use crate::reference::DOCKER_HUB;
use crate::secret::Secret;

/// The `config.json` key (and credential-helper server URL) docker uses for Docker Hub.
pub const DOCKER_HUB_CONFIG_KEY: &str = "https://index.docker.io/v1/";
/// Names under which Docker Hub appears in `config.json` keys, besides [`DOCKER_HUB_CONFIG_KEY`].
const DOCKER_HUB_ALIASES: [&str; 3] = ["index.docker.io", "docker.io", "registry-1.docker.io"];
/// How long a credential helper may take (it may be waiting on a keychain).
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

/// Credentials for one registry. Secrets are [`Secret`]s, so `{:?}` is safe to log.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Credentials {
    /// A user name and a password (or an access token used as the password): sent as HTTP
    /// Basic auth to the registry, or to its token endpoint.
    UsernamePassword {
        /// The user name.
        username: String,
        /// The password.
        password: Secret<String>,
    },
    /// An OAuth2 refresh token (`identitytoken` in `config.json`, or a helper's answer with
    /// user name `<token>`), exchanged at the token endpoint by a `refresh_token` grant.
    IdentityToken {
        /// The refresh token.
        token: Secret<String>,
    },
}

impl Credentials {
    /// User name and password credentials.
    pub fn basic(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self::UsernamePassword { username: username.into(), password: Secret::new(password.into()) }
    }

    /// Identity-token credentials.
    pub fn identity_token(token: impl Into<String>) -> Self {
        Self::IdentityToken { token: Secret::new(token.into()) }
    }
}

/// Why credentials could not be read or stored. No variant holds a secret: JSON problems are
/// reported by position only ([`JsonProblem`]), since serde's messages quote the input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// Neither `DOCKER_CONFIG` nor `HOME` is set, so there is no config file to write.
    #[error("no docker config location: neither DOCKER_CONFIG nor HOME is set")]
    NoConfigLocation,
    /// The config file exists but cannot be read.
    #[error("cannot read docker config {path}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The config file is not the JSON docker writes.
    #[error("docker config {path} is invalid: {problem}")]
    ParseConfig {
        /// The file.
        path: PathBuf,
        /// Where it went wrong.
        problem: JsonProblem,
    },
    /// An `auths` entry's `auth` field is not base64 of `user:password`.
    #[error("docker config {path}: `auths.{key:?}.auth` is not base64 of `user:password`")]
    InvalidAuth {
        /// The file.
        path: PathBuf,
        /// The `auths` key.
        key: String,
    },
    /// The configured credential helper is not on `PATH`.
    #[error("credential helper {program} (configured in {config}) is not on PATH")]
    HelperNotFound {
        /// `docker-credential-<name>`.
        program: String,
        /// The config file naming it.
        config: PathBuf,
    },
    /// The credential helper could not be started or talked to.
    #[error("cannot run credential helper {program}")]
    HelperSpawn {
        /// The program's path.
        program: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The credential helper failed (other than "credentials not found").
    #[error("credential helper {program} failed ({status}): {message}")]
    HelperFailed {
        /// The program's path.
        program: PathBuf,
        /// Its exit status.
        status: ExitStatus,
        /// The first line of its output (helpers print errors to stdout), at most 200 chars.
        message: String,
    },
    /// The credential helper did not finish in time and was killed.
    #[error("credential helper {program} did not answer within {timeout:?}")]
    HelperTimeout {
        /// The program's path.
        program: PathBuf,
        /// The limit.
        timeout: Duration,
    },
    /// The credential helper's answer is not `{"Username": .., "Secret": ..}`.
    #[error("credential helper {program} sent an invalid answer: {problem}")]
    HelperOutput {
        /// The program's path.
        program: PathBuf,
        /// Where it went wrong.
        problem: JsonProblem,
    },
    /// Writing the config file failed.
    #[error("cannot write docker config {path}")]
    WriteConfig {
        /// The file (or its directory, or the temporary file beside it).
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// A JSON error without the input text it would quote: its kind and position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonProblem {
    /// `syntax`, `data` (valid JSON, wrong shape), `eof` or `io`.
    pub category: &'static str,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl From<&serde_json::Error> for JsonProblem {
    fn from(e: &serde_json::Error) -> Self {
        let category = match e.classify() {
            serde_json::error::Category::Io => "io",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "data",
            serde_json::error::Category::Eof => "eof",
        };
        Self { category, line: e.line(), column: e.column() }
    }
}

impl std::fmt::Display for JsonProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.category {
            "data" => "unexpected JSON shape",
            "eof" => "truncated JSON",
            _ => "malformed JSON",
        };
        write!(f, "{what} at line {} column {}", self.line, self.column)
    }
}

/// The parts of `config.json` that hold credentials.
#[derive(Debug, Default, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<Secret<String>>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<Secret<String>>,
    #[serde(default)]
    identitytoken: Option<Secret<String>>,
}

/// A credential helper's answer to `get`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperAnswer {
    #[serde(default)]
    username: String,
    secret: Secret<String>,
}

/// A loaded docker `config.json` (a missing file loads as empty).
#[derive(Debug)]
pub struct DockerConfig {
    path: PathBuf,
    file: ConfigFile,
    /// Where `docker-credential-*` are looked for; `None`: `$PATH`.
    helper_path: Option<OsString>,
    helper_timeout: Duration,
}

impl DockerConfig {
    /// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`; `None` when neither
    /// variable is set.
    pub fn default_path() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
            return Some(PathBuf::from(dir).join("config.json"));
        }
        let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
        Some(PathBuf::from(home).join(".docker/config.json"))
    }

    /// Loads the config file at `path`; a file that does not exist is an empty config.
    ///
    /// # Errors
    ///
    /// [`CredentialsError::ReadConfig`], [`CredentialsError::ParseConfig`].
    pub fn load(path: &Path) -> Result<Self> {
        let file = match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| CredentialsError::ParseConfig { path: path.to_owned(), problem: (&e).into() })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => ConfigFile::default(),
            Err(source) => return Err(CredentialsError::ReadConfig { path: path.to_owned(), source }.into()),
        };
        Ok(Self { path: path.to_owned(), file, helper_path: None, helper_timeout: HELPER_TIMEOUT })
    }

    /// The file this config was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Looks credential helpers up in these directories instead of `$PATH`.
    #[must_use]
    pub fn with_helper_path(mut self, path: impl Into<OsString>) -> Self {
        self.helper_path = Some(path.into());
        self
    }

    /// The credentials for `registry` (`host[:port]`, or `docker.io`), following the order in
    /// the module documentation; `None` when the config has none.
    ///
    /// # Errors
    ///
    /// [`CredentialsError`] from a helper or a malformed `auth` field.
    pub fn credentials(&self, registry: &str) -> Result<Option<Credentials>> {
        let server = config_key(registry);
        let helper = lookup(&self.file.cred_helpers, registry)
            .map(String::as_str)
            .or(self.file.creds_store.as_deref())
            .filter(|h| !h.is_empty());
        if let Some(helper) = helper {
            if let Some(found) = self.run_helper(helper, &server)? {
                return Ok(Some(found));
            }
        }
        let Some((key, entry)) = lookup_entry(&self.file.auths, registry) else {
            return Ok(None);
        };
        let nonempty = |s: &Option<Secret<String>>| s.clone().filter(|s| !s.expose().is_empty());
        if let Some(token) = nonempty(&entry.identitytoken) {
            return Ok(Some(Credentials::IdentityToken { token }));
        }
        if let Some(auth) = nonempty(&entry.auth) {
            let (username, password) = decode_auth(auth.expose())
                .ok_or_else(|| CredentialsError::InvalidAuth { path: self.path.clone(), key: key.to_owned() })?;
            return Ok(Some(Credentials::basic(username, password)));
        }
        match (&entry.username, nonempty(&entry.password)) {
            (Some(username), Some(password)) if !username.is_empty() => {
                Ok(Some(Credentials::UsernamePassword { username: username.clone(), password }))
            }
            _ => Ok(None),
        }
    }

    /// `docker-credential-<helper> get` with `server` on stdin; `None` on "not found".
    fn run_helper(&self, helper: &str, server: &str) -> Result<Option<Credentials>> {
        let name = format!("docker-credential-{helper}");
        let search = self.helper_path.clone().or_else(|| std::env::var_os("PATH"));
        let program = search
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join(&name))
            .find(|p| is_executable(p))
            .ok_or_else(|| CredentialsError::HelperNotFound { program: name.clone(), config: self.path.clone() })?;
        let (status, stdout) = run_with_timeout(&program, server, self.helper_timeout)?;
        if !status.success() {
            let text = String::from_utf8_lossy(&stdout);
            if text.contains("credentials not found") {
                return Ok(None);
            }
            let message: String = text.trim().lines().next().unwrap_or("").chars().take(200).collect();
            return Err(CredentialsError::HelperFailed { program, status, message }.into());
        }
        let answer: HelperAnswer = serde_json::from_slice(&stdout)
            .map_err(|e| CredentialsError::HelperOutput { program: program.clone(), problem: (&e).into() })?;
        if answer.secret.expose().is_empty() {
            return Ok(None);
        }
        Ok(Some(if answer.username == "<token>" {
            Credentials::IdentityToken { token: answer.secret }
        } else {
            Credentials::UsernamePassword { username: answer.username, password: answer.secret }
        }))
    }
}

/// The credentials for `registry` from the default docker config ([`DockerConfig::default_path`]);
/// `None` when there is no config, or it has nothing for `registry`.
///
/// # Errors
///
/// See [`DockerConfig::load`] and [`DockerConfig::credentials`].
pub fn docker_config_credentials(registry: &str) -> Result<Option<Credentials>> {
    match DockerConfig::default_path() {
        Some(path) => DockerConfig::load(&path)?.credentials(registry),
        None => Ok(None),
    }
}

/// Records `username`/`password` for `registry` in the default docker config's `auths` (what
/// `docker login` does without a credential store), and returns the file written.
///
/// # Errors
///
/// [`CredentialsError::NoConfigLocation`], and see [`store_login_at`].
pub fn store_login(registry: &str, username: &str, password: &Secret<String>) -> Result<PathBuf> {
    let path = DockerConfig::default_path().ok_or(CredentialsError::NoConfigLocation)?;
    store_login_at(&path, registry, username, password)?;
    Ok(path)
}

/// [`store_login`] into the config file at `path`. Every other setting in the file is kept; the
/// file is replaced atomically (a temporary file beside it, renamed over it) with mode 0600, and
/// a missing directory is created with mode 0700. A symlinked config is written through.
///
/// # Errors
///
/// [`CredentialsError::ReadConfig`] or [`CredentialsError::ParseConfig`] for an existing file
/// (it is left alone), [`CredentialsError::WriteConfig`].
pub fn store_login_at(path: &Path, registry: &str, username: &str, password: &Secret<String>) -> Result<()> {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let mut config = match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .map_err(|e| CredentialsError::ParseConfig { path: path.clone(), problem: (&e).into() })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => serde_json::json!({}),
        Err(source) => return Err(CredentialsError::ReadConfig { path, source }.into()),
    };
    let not_object = || CredentialsError::ParseConfig {
        path: path.clone(),
        problem: JsonProblem { category: "data", line: 1, column: 1 },
    };
    let root = config.as_object_mut().ok_or_else(not_object)?;
    let auths = root.entry("auths").or_insert_with(|| serde_json::json!({})).as_object_mut().ok_or_else(not_object)?;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{}", password.expose()));
    auths.insert(config_key(registry), serde_json::json!({ "auth": auth }));
    let bytes = serde_json::to_vec_pretty(&config).expect("a JSON value serializes");
    write_atomic(&path, &bytes).map_err(|(path, source)| CredentialsError::WriteConfig { path, source })?;
    Ok(())
}

/// Removes what [`store_login_at`] wrote for `registry` (`docker logout`): every `auths` key
/// naming its host. Returns whether there was anything to remove; a missing file is not an
/// error. Every other setting in the file is kept.
///
/// # Errors
///
/// As [`store_login_at`].
pub fn remove_login_at(path: &Path, registry: &str) -> Result<bool> {
    let path = fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let mut config = match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .map_err(|e| CredentialsError::ParseConfig { path: path.clone(), problem: (&e).into() })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(CredentialsError::ReadConfig { path, source }.into()),
    };
    let Some(auths) = config.get_mut("auths").and_then(serde_json::Value::as_object_mut) else {
        return Ok(false);
    };
    let before = auths.len();
    auths.retain(|key, _| !key_matches(key, registry));
    if auths.len() == before {
        return Ok(false);
    }
    let bytes = serde_json::to_vec_pretty(&config).expect("a JSON value serializes");
    write_atomic(&path, &bytes).map_err(|(path, source)| CredentialsError::WriteConfig { path, source })?;
    Ok(true)
}

/// The key docker files `registry` under, which is also what helpers get on stdin.
fn config_key(registry: &str) -> String {
    if registry == DOCKER_HUB {
        DOCKER_HUB_CONFIG_KEY.to_owned()
    } else {
        registry.to_owned()
    }
}

/// `https://host:port/v1/` → `host:port`.
fn key_host(key: &str) -> &str {
    let rest = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    rest.split('/').next().unwrap_or(rest)
}

fn key_matches(key: &str, registry: &str) -> bool {
    let host = key_host(key);
    host == registry || (registry == DOCKER_HUB && DOCKER_HUB_ALIASES.contains(&host))
}

/// The entry for `registry`: its exact key first, then any key naming the same host.
fn lookup_entry<'a, V>(map: &'a BTreeMap<String, V>, registry: &str) -> Option<(&'a str, &'a V)> {
    let exact = config_key(registry);
    map.get_key_value(&exact)
        .or_else(|| map.iter().find(|(k, _)| key_matches(k, registry)))
        .map(|(k, v)| (k.as_str(), v))
}

fn lookup<'a, V>(map: &'a BTreeMap<String, V>, registry: &str) -> Option<&'a V> {
    lookup_entry(map, registry).map(|(_, v)| v)
}

/// `base64(user:password)` → (user, password); tolerant of missing padding and whitespace.
fn decode_auth(auth: &str) -> Option<(String, String)> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
    let auth = auth.trim();
    let bytes = STANDARD.decode(auth).or_else(|_| STANDARD_NO_PAD.decode(auth.trim_end_matches('='))).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `program get` with `input` on stdin; returns its status and stdout. stderr is appended
/// to stdout (helpers are inconsistent about where errors go). Killed after `timeout`.
fn run_with_timeout(program: &Path, input: &str, timeout: Duration) -> Result<(ExitStatus, Vec<u8>), CredentialsError> {
    let spawn_error = |source| CredentialsError::HelperSpawn { program: program.to_owned(), source };
    let mut child = Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_owned();
    // A helper that exits without reading its input makes this write fail: ignore that, the
    // exit status tells the story.
    let writer = std::thread::spawn(move || drop(stdin.write_all(input.as_bytes())));
    let readers = [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .map(|pipe| {
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut out);
            }
            out
        })
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(spawn_error)? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(CredentialsError::HelperTimeout { program: program.to_owned(), timeout });
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = writer.join();
    let mut output = Vec::new();
    for reader in readers {
        output.extend(reader.join().unwrap_or_default());
    }
    Ok((status, output))
}

/// Writes `bytes` to a temporary file (mode 0600) beside `path`, then renames it over `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), (PathBuf, io::Error)> {
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.as_os_str().is_empty() && !dir.exists() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| (dir.to_owned(), e))?;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(".{name}.tmp-{}-{nanos}", std::process::id()));
    let result = (|| {
        let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        (tmp.clone(), e)
    })
}

#[cfg(test)]
#[path = "credentials_tests.rs"]
mod tests;
