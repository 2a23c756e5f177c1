//! `ADD <url>`: the `Http` source. The download streams into a file in the store's temp area
//! (hashed as it arrives, never held in memory); the output is a snapshot holding that one file,
//! mode 0600, owned by root, with the `Last-Modified` time as its mtime.
//!
//! Caching follows BuildKit: with `--checksum` the content key is the checksum itself, so a
//! cached build downloads nothing; without it, computing the key downloads the file (the key is
//! its digest and `Last-Modified`), and executing the op then reuses that download.

use std::path::PathBuf;

use rbuild_solver::ir::OpId;
use rbuild_solver::{CacheKey, Progress};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::WorkerError;
use crate::fsmeta::{apply, Attrs};
use crate::{LocalWorker, Snapshot};

/// A finished download, waiting in the store's temp area to become a snapshot.
#[derive(Debug)]
pub(crate) struct Downloaded {
    file: PathBuf,
    digest: [u8; 32],
    last_modified: Option<String>,
}

impl Drop for Downloaded {
    fn drop(&mut self) {
        // Consumed downloads were renamed away; this only removes unused ones.
        let _ = std::fs::remove_file(&self.file);
    }
}

/// `url` without user info, for messages.
pub(crate) fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// `host[:port]` of `url`, as the registry auth store keys it; `None` when the URL carries its
/// own user info.
fn auth_host(url: &str) -> Option<String> {
    let u = reqwest::Url::parse(url).ok()?;
    if !u.username().is_empty() || u.password().is_some() {
        return None;
    }
    let host = u.host_str()?;
    Some(match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    })
}

/// `GET url`; on `401 Unauthorized`, once more with the user name and password the registry
/// auth store (docker's `config.json` and its credential helpers) has for the URL's host.
pub(crate) async fn get_with_credentials(
    client: &reqwest::Client,
    url: &str,
) -> Result<reqwest::Response, WorkerError> {
    let shown = redact_url(url);
    let err = |source| WorkerError::Download { url: shown.clone(), source };
    let resp = client.get(url).send().await.map_err(err)?;
    if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
        return Ok(resp);
    }
    let Some(host) = auth_host(url) else { return Ok(resp) };
    let creds = tokio::task::spawn_blocking(move || rbuild_registry::docker_config_credentials(&host))
        .await
        .ok()
        .and_then(Result::ok)
        .flatten();
    match creds {
        Some(rbuild_registry::Credentials::UsernamePassword { username, password }) => {
            client.get(url).basic_auth(username, Some(password.expose())).send().await.map_err(err)
        }
        _ => Ok(resp),
    }
}

/// Parses `sha256:<64 hex>` into its bytes.
pub(crate) fn parse_checksum(checksum: &str) -> Result<[u8; 32], WorkerError> {
    let bad = || WorkerError::BadChecksum { checksum: checksum.to_owned() };
    let hex_part = checksum.strip_prefix("sha256:").ok_or_else(bad)?;
    let mut out = [0u8; 32];
    if hex_part.len() != 64 || hex_part.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(bad());
    }
    hex::decode_to_slice(hex_part, &mut out).map_err(|_| bad())?;
    Ok(out)
}

fn content_key(digest: &[u8; 32], last_modified: Option<&str>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"rbuild.http.v1\0");
    h.update(digest);
    if let Some(lm) = last_modified {
        h.update([1u8]);
        h.update(lm.as_bytes());
    }
    h.finalize().into()
}

impl LocalWorker {
    fn http_client(&self) -> Result<&reqwest::Client, WorkerError> {
        if let Some(c) = self.http.get() {
            return Ok(c);
        }
        let client = reqwest::Client::builder()
            .user_agent(concat!("rbuild/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(30))
            .read_timeout(std::time::Duration::from_secs(120))
            .build()
            .map_err(|source| WorkerError::Download { url: String::new(), source })?;
        Ok(self.http.get_or_init(|| client))
    }

    /// The content key of an `Http` source (see the module docs).
    pub(crate) async fn http_content_key(
        &self,
        id: OpId,
        url: &str,
        checksum: Option<&str>,
        progress: &Progress,
    ) -> Result<[u8; 32], WorkerError> {
        if let Some(c) = checksum {
            return Ok(content_key(&parse_checksum(c)?, None));
        }
        let dl = self.download(url, progress).await?;
        let key = content_key(&dl.digest, dl.last_modified.as_deref());
        self.http_digests.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, dl.digest);
        self.lock_downloads().insert(id, dl);
        Ok(key)
    }

    pub(crate) fn lock_downloads(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<OpId, Downloaded>> {
        self.downloads.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Streams `url` into a temp file of the store, hashing it.
    async fn download(&self, url: &str, progress: &Progress) -> Result<Downloaded, WorkerError> {
        let shown = redact_url(url);
        progress.status(format!("downloading {shown}"));
        let err = |source| WorkerError::Download { url: shown.clone(), source };
        let mut resp = get_with_credentials(self.http_client()?, url).await?;
        if !resp.status().is_success() {
            return Err(WorkerError::HttpStatus { url: shown, status: resp.status().as_u16() });
        }
        let last_modified =
            resp.headers().get(reqwest::header::LAST_MODIFIED).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let path = self.store.tmp_dir().join(format!("download-{}", self.next_tmp()));
        let io = |source| WorkerError::Io { path: path.clone(), source };
        let mut file = tokio::fs::File::create_new(&path).await.map_err(io)?;
        // From here the file is removed again if anything fails.
        let mut dl = Downloaded { file: path.clone(), digest: [0; 32], last_modified };
        let mut hasher = Sha256::new();
        while let Some(chunk) = resp.chunk().await.map_err(err)? {
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        file.sync_all().await.map_err(io)?;
        dl.digest = hasher.finalize().into();
        Ok(dl)
    }

    /// Executes an `Http` source: the snapshot holding `filename`.
    pub(crate) async fn http_exec(
        &self,
        id: OpId,
        key: &CacheKey,
        url: &str,
        checksum: Option<&str>,
        filename: &str,
        progress: &Progress,
    ) -> Result<Snapshot, WorkerError> {
        if filename.is_empty()
            || filename == "."
            || filename == ".."
            || filename.contains('/')
            || filename.contains('\0')
        {
            return Err(WorkerError::BadFileName { name: filename.to_owned() });
        }
        let expected = checksum.map(parse_checksum).transpose()?;
        let pending = self.lock_downloads().remove(&id);
        let dl = match pending {
            Some(dl) => dl,
            None => self.download(url, progress).await?,
        };
        if let Some(expected) = expected {
            if dl.digest != expected {
                return Err(WorkerError::DigestMismatch {
                    actual: format!("sha256:{}", hex::encode(dl.digest)),
                    expected: format!("sha256:{}", hex::encode(expected)),
                });
            }
        }
        let prepared = self.store.prepare_snapshot()?;
        let target = prepared.diff().join(filename);
        let mtime = dl.last_modified.as_deref().and_then(parse_http_date);
        let io = |source| WorkerError::Io { path: target.clone(), source };
        std::fs::rename(&dl.file, &target).map_err(io)?;
        let mut attrs = Attrs::new_now(0, 0, 0o600);
        if let Some(secs) = mtime {
            attrs.mtime = (secs, 0);
        }
        apply(&target, &attrs, false).map_err(io)?;
        self.finish_layer(key, id, Snapshot::default(), prepared, false)
    }
}

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Seconds since the epoch of an HTTP date in any of the three formats of RFC 9110 (as Go's
/// `http.ParseTime`): `Sun, 06 Nov 1994 08:49:37 GMT`, `Sunday, 06-Nov-94 08:49:37 GMT`,
/// `Sun Nov  6 08:49:37 1994`.
pub(crate) fn parse_http_date(s: &str) -> Option<i64> {
    let s = s.trim();
    let (day, month, year, time) = if let Some((_, rest)) = s.split_once(", ") {
        let rest = rest.strip_suffix(" GMT")?;
        if rest.contains('-') {
            // RFC 850: 06-Nov-94 08:49:37 (two-digit years: 69..99 are 19xx, as Go reads them)
            let (date, time) = rest.split_once(' ')?;
            let mut p = date.split('-');
            let (d, m, y) = (p.next()?, p.next()?, p.next()?);
            let y: i64 = y.parse().ok()?;
            (d.parse().ok()?, m, if y < 69 { 2000 + y } else { 1900 + y }, time)
        } else {
            let mut p = rest.split(' ');
            let (d, m, y, t) = (p.next()?, p.next()?, p.next()?, p.next()?);
            (d.parse().ok()?, m, y.parse().ok()?, t)
        }
    } else {
        // asctime: Sun Nov  6 08:49:37 1994
        let mut p = s.split_whitespace().skip(1);
        let (m, d, t, y) = (p.next()?, p.next()?, p.next()?, p.next()?);
        (d.parse().ok()?, m, y.parse().ok()?, t)
    };
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let mut hms = time.split(':').map(|v| v.parse::<i64>().ok());
    let (h, mi, se) = (hms.next()??, hms.next()??, hms.next()??);
    let day: i64 = day;
    if !(1..=31).contains(&day) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + mi * 60 + se)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests;
