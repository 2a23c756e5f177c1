//! `ADD <git url>`: the `Git` source, through the `git` command line.
//!
//! The content key is the commit the reference resolves to (`git ls-remote`), so a moved branch
//! is a cache miss and an unchanged one a hit without fetching anything. Executing fetches that
//! commit shallowly (`--depth 1`, by name, or by id for a commit reference), falling back to a
//! full fetch when the server refuses; checks it out with submodules; keeps `subdir` only; and
//! drops `.git` unless `keep_git_dir`.

use std::path::{Path, PathBuf};
use std::process::Command;

use rbuild_solver::ir::OpId;
use rbuild_solver::CacheKey;
use sha2::{Digest as _, Sha256};

use crate::copy::clean;
use crate::error::WorkerError;
use crate::merged::MergedView;
use crate::{LocalWorker, Snapshot};

/// `remote` without credentials, for messages.
fn redact(remote: &str) -> String {
    crate::http::redact_url(remote)
}

fn is_commit_id(r: &str) -> bool {
    (r.len() == 40 || r.len() == 64) && r.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_arg(what: &'static str, value: &str) -> Result<(), WorkerError> {
    // A leading `-` would be read as an option by git.
    if value.is_empty() || value.starts_with('-') || value.contains('\0') {
        return Err(WorkerError::BadGitSource { what, value: redact(value) });
    }
    Ok(())
}

/// For an http(s) remote whose host the registry auth store (docker's `config.json` and its
/// helpers) has a user name and password for: environment that lets git answer a `401` with
/// them. It configures a credential helper reading two variables, which git runs only when
/// the server asks, and nothing lands on a command line.
fn credential_env(remote: &str) -> Vec<(&'static str, String)> {
    let Ok(u) = reqwest::Url::parse(remote) else { return Vec::new() };
    if !matches!(u.scheme(), "http" | "https") || !u.username().is_empty() {
        return Vec::new();
    }
    let Some(host) = u.host_str() else { return Vec::new() };
    let host = match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    match rbuild_registry::docker_config_credentials(&host) {
        Ok(Some(rbuild_registry::Credentials::UsernamePassword { username, password })) => vec![
            ("GIT_CONFIG_COUNT", "1".to_owned()),
            ("GIT_CONFIG_KEY_0", "credential.helper".to_owned()),
            (
                "GIT_CONFIG_VALUE_0",
                "!f() { test \"$1\" = get && printf 'username=%s\\npassword=%s\\n' \"$RBUILD_GIT_USERNAME\" \"$RBUILD_GIT_PASSWORD\"; }; f"
                    .to_owned(),
            ),
            ("RBUILD_GIT_USERNAME", username),
            ("RBUILD_GIT_PASSWORD", password.expose().clone()),
        ],
        _ => Vec::new(),
    }
}

/// Runs git with `args`; returns stdout, or the end of stderr as a [`WorkerError::Git`].
fn git(remote: &str, step: &'static str, dir: Option<&Path>, args: &[&str]) -> Result<String, WorkerError> {
    let mut cmd = Command::new("git");
    if let Some(d) = dir {
        cmd.arg("-C").arg(d);
    }
    cmd.args(["-c", "advice.detachedHead=false", "-c", "init.defaultBranch=main"])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .envs(if matches!(step, "ls-remote" | "fetch" | "submodule update") {
            credential_env(remote)
        } else {
            Vec::new()
        })
        .stdin(std::process::Stdio::null());
    let out = cmd.output().map_err(|e| WorkerError::Git { remote: redact(remote), step, stderr: e.to_string() })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(3)..].join("; ");
        return Err(WorkerError::Git { remote: redact(remote), step, stderr: tail.replace(remote, &redact(remote)) });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The commit `reference` (a branch, tag, full ref or commit id; `None` for HEAD) names in
/// `remote`.
pub(crate) fn resolve_commit(remote: &str, reference: Option<&str>) -> Result<String, WorkerError> {
    check_arg("remote", remote)?;
    let r = reference.unwrap_or("HEAD");
    check_arg("reference", r)?;
    if is_commit_id(r) {
        return Ok(r.to_owned());
    }
    let peeled = format!("{r}^{{}}");
    let out = git(remote, "ls-remote", None, &["ls-remote", "--", remote, r, &peeled])?;
    let refs: Vec<(&str, &str)> = out.lines().filter_map(|l| l.split_once('\t')).collect();
    let find = |name: &str| refs.iter().find(|(_, n)| *n == name).map(|(id, _)| (*id).to_owned());
    let candidates = [
        format!("refs/tags/{r}^{{}}"),
        format!("refs/tags/{r}"),
        format!("refs/heads/{r}"),
        format!("{r}^{{}}"),
        r.to_owned(),
    ];
    candidates
        .iter()
        .find_map(|c| find(c))
        .or_else(|| refs.iter().find(|(_, n)| n.ends_with(&format!("/{r}"))).map(|(id, _)| (*id).to_owned()))
        .ok_or_else(|| WorkerError::GitRefNotFound { remote: redact(remote), reference: r.to_owned() })
}

/// Fetches `commit` of `remote` into a new repository at `dir` and checks it out.
pub(crate) fn checkout(remote: &str, reference: Option<&str>, commit: &str, dir: &Path) -> Result<(), WorkerError> {
    check_arg("remote", remote)?;
    let d = Some(dir);
    git(remote, "init", None, &["init", "-q", &dir.to_string_lossy()])?;
    git(remote, "remote add", d, &["remote", "add", "origin", remote])?;
    // Shallow fetch of what the reference names (or the commit itself).
    let want = match reference {
        Some(r) if !is_commit_id(r) => r,
        _ if reference.is_none() => "HEAD",
        _ => commit,
    };
    let shallow = git(remote, "fetch", d, &["fetch", "-q", "--depth", "1", "--no-tags", "origin", want])
        .and_then(|_| git(remote, "rev-parse", d, &["rev-parse", "--verify", "-q", "FETCH_HEAD^{commit}"]));
    let have = matches!(&shallow, Ok(id) if id.trim() == commit);
    if !have {
        // The server refused a shallow fetch, or the reference moved since `ls-remote`.
        let mut args = vec!["fetch", "-q", "--tags"];
        if dir.join(".git/shallow").exists() {
            args.push("--unshallow");
        }
        args.extend(["origin", "+refs/heads/*:refs/remotes/origin/*"]);
        git(remote, "fetch", d, &args)?;
    }
    git(remote, "checkout", d, &["checkout", "-q", "--detach", commit])?;
    if dir.join(".gitmodules").is_file() {
        git(remote, "submodule update", d, &["submodule", "update", "-q", "--init", "--recursive", "--depth", "1"])?;
    }
    Ok(())
}

fn content_key(commit: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"rbuild.git.v1\0");
    h.update(commit.as_bytes());
    h.finalize().into()
}

impl LocalWorker {
    pub(crate) fn lock_commits(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<OpId, String>> {
        self.git_commits.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The content key of a `Git` source: its resolved commit.
    pub(crate) async fn git_content_key(
        &self,
        id: OpId,
        remote: &str,
        reference: Option<&str>,
    ) -> Result<[u8; 32], WorkerError> {
        let (remote, reference) = (remote.to_owned(), reference.map(str::to_owned));
        let commit = tokio::task::spawn_blocking(move || resolve_commit(&remote, reference.as_deref()))
            .await
            .map_err(|e| WorkerError::Internal(e.to_string()))??;
        let key = content_key(&commit);
        self.lock_commits().insert(id, commit);
        Ok(key)
    }

    /// Executes a `Git` source: the work tree (or `subdir` of it) as a snapshot.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn git_exec(
        &self,
        id: OpId,
        key: &CacheKey,
        remote: &str,
        reference: Option<&str>,
        subdir: Option<&str>,
        keep_git_dir: bool,
    ) -> Result<Snapshot, WorkerError> {
        let known = self.lock_commits().get(&id).cloned();
        let prepared = self.store.prepare_snapshot()?;
        let clone_dir = self.store.tmp_dir().join(format!("git-{}", self.next_tmp()));
        let (remote, reference, subdir) = (remote.to_owned(), reference.map(str::to_owned), subdir.map(str::to_owned));
        let diff = prepared.diff();
        let work = clone_dir.clone();
        let result = tokio::task::spawn_blocking(move || -> Result<(), WorkerError> {
            let commit = match known {
                Some(c) => c,
                None => resolve_commit(&remote, reference.as_deref())?,
            };
            checkout_tree(&remote, reference.as_deref(), &commit, subdir.as_deref(), keep_git_dir, &work, &diff)
        })
        .await
        .map_err(|e| WorkerError::Internal(e.to_string()));
        let _ = std::fs::remove_dir_all(&clone_dir);
        result??;
        self.finish_layer(key, id, Snapshot::default(), prepared, false)
    }
}

/// Checks `commit` out into `work` (a new directory) and moves the tree, or its `subdir`, into
/// the empty directory `dest` (on the same filesystem), without `.git` unless `keep_git_dir`.
pub(crate) fn checkout_tree(
    remote: &str,
    reference: Option<&str>,
    commit: &str,
    subdir: Option<&str>,
    keep_git_dir: bool,
    work: &Path,
    dest: &Path,
) -> Result<(), WorkerError> {
    checkout(remote, reference, commit, work)?;
    if !keep_git_dir {
        let git_dir = work.join(".git");
        std::fs::remove_dir_all(&git_dir).map_err(|source| WorkerError::Io { path: git_dir, source })?;
    }
    let root = match subdir.filter(|s| !clean(s).as_os_str().is_empty()) {
        None => work.to_owned(),
        Some(s) => {
            // Resolved inside the checkout: a symlink in the repository cannot lead out.
            let view = MergedView::new(vec![work.to_owned()]);
            let rel =
                view.resolve(&clean(s), true).map_err(|source| WorkerError::Io { path: PathBuf::from(s), source })?;
            if !view.lstat(&rel).ok().flatten().is_some_and(|f| f.meta.is_dir()) {
                return Err(WorkerError::BadGitSource { what: "subdirectory", value: s.to_owned() });
            }
            work.join(rel)
        }
    };
    move_entries(&root, dest)
}

/// Moves every entry of `from` into the (empty) directory `to`; both are in the store.
fn move_entries(from: &Path, to: &Path) -> Result<(), WorkerError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| WorkerError::Io { path, source }
    };
    for entry in std::fs::read_dir(from).map_err(io(from))? {
        let entry = entry.map_err(io(from))?;
        let dest = to.join(entry.file_name());
        std::fs::rename(entry.path(), &dest).map_err(io(&dest))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
