//! The HTTP clients, and the CA certificates they trust.
//!
//! Every client trusts the system's CA bundle (rustls-native-certs: `SSL_CERT_FILE` or the
//! distribution's bundle), the webpki roots, and [`ClientOptions::ca_certs`]. As docker does
//! (`/etc/docker/certs.d/<host:port>/*.crt`), a registry whose directory exists under
//! [`ClientOptions::certs_dir`] also trusts the `.crt` files found there, for that host only:
//! such hosts get a client of their own, built on first use and kept.
//!
//! Each comes in two flavours: API requests have `ClientOptions::read_timeout` from sending to
//! the response headers (reqwest's read timeout), which an upload of a large chunk on a slow
//! link would exceed; upload requests use a client without it and set a per-request timeout
//! proportional to their size instead.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use reqwest::{Certificate, Url};

use crate::client::ClientOptions;
use crate::error::{Error, Result};

/// The clients of one [`Client`](crate::Client): a shared one, plus one per host with a
/// `certs.d` directory.
#[derive(Debug)]
pub(crate) struct HttpClients {
    base: [reqwest::Client; 2],
    /// The certificates from `ClientOptions::ca_certs`, added to every per-host client too.
    extra: Vec<Certificate>,
    per_host: Mutex<HashMap<(String, Purpose), reqwest::Client>>,
}

/// What a client is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Purpose {
    /// Requests whose answer should come within the read timeout.
    Api = 0,
    /// Requests with a blob body: no read timeout.
    Upload = 1,
}

impl HttpClients {
    /// Loads `options.ca_certs` and builds the shared client.
    pub fn new(options: &ClientOptions) -> Result<Self> {
        let mut extra = Vec::new();
        for path in &options.ca_certs {
            extra.extend(load_ca_file(path)?);
        }
        let base = [build(options, &extra, Purpose::Api)?, build(options, &extra, Purpose::Upload)?];
        Ok(Self { base, extra, per_host: Mutex::default() })
    }

    /// The client for requests to `url`.
    ///
    /// # Errors
    ///
    /// [`Error::ReadCaCert`], [`Error::InvalidCaCert`] for a bad file in the host's `certs.d`
    /// directory, [`Error::HttpClient`].
    pub fn for_url(&self, options: &ClientOptions, url: &Url, purpose: Purpose) -> Result<reqwest::Client> {
        let base = &self.base[purpose as usize];
        let Some(certs_dir) = options.certs_dir.as_deref() else {
            return Ok(base.clone());
        };
        if url.scheme() != "https" {
            return Ok(base.clone());
        }
        let host = authority(url);
        let mut per_host = self.per_host.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = per_host.get(&(host.clone(), purpose)) {
            return Ok(client.clone());
        }
        let files = host_ca_files(&certs_dir.join(&host))?;
        let client = if files.is_empty() {
            base.clone()
        } else {
            let mut certs = self.extra.clone();
            for file in &files {
                certs.extend(load_ca_file(file)?);
            }
            build(options, &certs, purpose)?
        };
        per_host.insert((host, purpose), client.clone());
        Ok(client)
    }
}

/// `host[:port]` as docker names `certs.d` directories (the port only when explicit).
fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// The `*.crt` files of a `certs.d/<host>` directory, sorted; none when it does not exist.
/// (`*.cert`/`*.key` client certificate pairs are not supported yet.)
fn host_ca_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let read_error = |source| Error::ReadCaCert { path: dir.to_owned(), source };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_error(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(read_error)?.path();
        if path.extension().is_some_and(|e| e == "crt") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The PEM certificates in `path`, each checked to be usable as a trust anchor.
fn load_ca_file(path: &Path) -> Result<Vec<Certificate>> {
    let bytes = fs::read(path).map_err(|source| Error::ReadCaCert { path: path.to_owned(), source })?;
    let invalid = |source| Error::InvalidCaCert { path: path.to_owned(), source };
    let certs = Certificate::from_pem_bundle(&bytes).map_err(|e| invalid(Some(e)))?;
    if certs.is_empty() {
        return Err(invalid(None));
    }
    // rustls parses anchors only when a client is built: do it now, with nothing else in the
    // store, so a bad file is reported by name rather than as a failure of the whole client.
    let mut probe = reqwest::Client::builder().tls_built_in_root_certs(false);
    for cert in &certs {
        probe = probe.add_root_certificate(cert.clone());
    }
    probe.build().map_err(|e| invalid(Some(e)))?;
    Ok(certs)
}

fn build(options: &ClientOptions, roots: &[Certificate], purpose: Purpose) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .user_agent(options.user_agent.clone())
        .connect_timeout(options.connect_timeout)
        // Registries redirect blob GETs to storage; reqwest drops Authorization when the
        // host changes.
        .redirect(reqwest::redirect::Policy::limited(10));
    if purpose == Purpose::Api {
        builder = builder.read_timeout(options.read_timeout);
    }
    for cert in roots {
        builder = builder.add_root_certificate(cert.clone());
    }
    builder.build().map_err(Error::HttpClient)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_table() {
        let a = |u: &str| authority(&Url::parse(u).expect("url"));
        assert_eq!(a("https://127.0.0.1:5000/v2/"), "127.0.0.1:5000");
        assert_eq!(a("https://reg.io/v2/"), "reg.io");
        assert_eq!(a("https://reg.io:443/v2/"), "reg.io");
        assert_eq!(a("https://[::1]:5000/v2/"), "[::1]:5000");
    }

    #[test]
    fn bad_ca_files_are_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.crt");
        assert!(matches!(load_ca_file(&missing), Err(Error::ReadCaCert { path, .. }) if path == missing));
        let empty = dir.path().join("empty.crt");
        fs::write(&empty, "no pem here\n").expect("write");
        assert!(matches!(load_ca_file(&empty), Err(Error::InvalidCaCert { path, source: None }) if path == empty));
        let garbage = dir.path().join("garbage.crt");
        fs::write(&garbage, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").expect("write");
        assert!(matches!(load_ca_file(&garbage), Err(Error::InvalidCaCert { source: Some(_), .. })));
        // The directory of a host without CA files falls back to the shared client.
        fs::create_dir(dir.path().join("reg.io:5000")).expect("mkdir");
        fs::write(dir.path().join("reg.io:5000/client.cert"), "x").expect("write");
        assert!(host_ca_files(&dir.path().join("reg.io:5000")).expect("ls").is_empty());
        assert!(host_ca_files(&dir.path().join("absent")).expect("ls").is_empty());
    }
}
