//! Where a build's inputs come from, and the build-wide `RUN` options:
//!
//! - the context argument: a directory, `-` (stdin: a tar archive, plain or gzip/bzip2/xz, or
//!   a Dockerfile alone), a tar archive file, a git URL (`https://host/repo.git#ref:subdir`,
//!   `git@host:repo`, `ssh://`, `git://`, and `file://` for a local repository) or an HTTP(S)
//!   URL (an archive, or a Dockerfile alone). A context that is not a directory is materialised
//!   into the store's temp area ([`materialize`]) and then used like a directory;
//! - `--build-context NAME=VALUE` ([`parse_named_contexts`]);
//! - `--add-host`, `--ulimit`, `--shm-size`, `--network` ([`parse_run_defaults`]).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rbuild_frontend::{parse_git_url, GitUrl, NamedContext, RunDefaults};
use rbuild_solver::ir::{HostEntry, NetworkMode, Ulimit};
use rbuild_worker::remote;
use rbuild_worker::{ArchiveLimits, ContextDir, IgnoreMatcher};

use crate::render::UserError;

/// What the context argument names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContextArg {
    /// A local directory.
    Dir(PathBuf),
    /// `-`: a tar archive or a Dockerfile on stdin.
    Stdin,
    /// A tar archive file (plain or compressed).
    Archive(PathBuf),
    /// A git repository.
    Git(GitUrl),
    /// An HTTP(S) URL: an archive, or a Dockerfile.
    Url(String),
}

/// `file://PATH[#ref[:subdir]]`: a local git repository (git reads `file://` URLs itself).
fn file_git_url(s: &str) -> Option<GitUrl> {
    let rest = s.strip_prefix("file://")?;
    let (path, fragment) = rest.split_once('#').unwrap_or((rest, ""));
    let (reference, subdir) = fragment.split_once(':').unwrap_or((fragment, ""));
    let subdir = subdir.trim_matches('/');
    Some(GitUrl {
        remote: format!("file://{path}"),
        reference: Some(reference.to_owned()).filter(|r| !r.is_empty()),
        subdir: Some(subdir.to_owned()).filter(|s| !s.is_empty()),
    })
}

/// A work tree with `.git`, or a bare repository.
fn is_git_repo(dir: &Path) -> bool {
    dir.join(".git").exists() || (dir.join("HEAD").is_file() && dir.join("objects").is_dir())
}

/// A git URL by BuildKit's rules, or `file://`.
fn git_url(s: &str) -> Result<Option<GitUrl>> {
    if let Some(g) = file_git_url(s) {
        return Ok(Some(g));
    }
    parse_git_url(s).map_err(|e| UserError(format!("invalid git URL {s:?}: {e}")).into())
}

/// Classifies the context argument as `docker build` does (a directory wins over everything
/// but `-`), plus archive files and `file://` repositories.
pub fn classify(arg: &Path) -> Result<ContextArg> {
    if arg.as_os_str() == "-" {
        return Ok(ContextArg::Stdin);
    }
    if arg.is_dir() {
        return Ok(ContextArg::Dir(arg.to_owned()));
    }
    if let Some(s) = arg.to_str() {
        if let Some(g) = git_url(s)? {
            return Ok(ContextArg::Git(g));
        }
        // `PATH#ref[:subdir]`: a local repository, fetched like a remote one.
        if let Some((path, fragment)) = s.split_once('#') {
            if is_git_repo(Path::new(path)) {
                let abs = std::fs::canonicalize(path).with_context(|| format!("resolving {path}"))?;
                if let Some(g) = file_git_url(&format!("file://{}#{fragment}", abs.display())) {
                    return Ok(ContextArg::Git(g));
                }
            }
        }
        if s.starts_with("http://") || s.starts_with("https://") {
            return Ok(ContextArg::Url(s.to_owned()));
        }
    }
    if arg.is_file() {
        return Ok(ContextArg::Archive(arg.to_owned()));
    }
    Err(UserError(format!(
        "build context {} not found: give a directory, `-` (stdin), a tar archive, a git URL or an HTTP(S) URL",
        arg.display()
    ))
    .into())
}

/// A context ready to use as a directory.
#[derive(Debug)]
pub struct Materialized {
    /// The directory.
    pub root: PathBuf,
    /// Whether `root` was made for this build (its content came from elsewhere: paths in it
    /// are then resolved inside it, and it is forgotten afterwards).
    pub temporary: bool,
    /// The Dockerfile when the input was one (stdin or a URL to a text file): the context is
    /// then empty.
    pub dockerfile: Option<Vec<u8>>,
    /// A git context: its URL (credentials removed, `#ref` kept) and the commit checked out.
    pub git_source: Option<(String, String)>,
}

impl ContextArg {
    /// How messages name the context.
    fn shown(&self) -> String {
        match self {
            ContextArg::Dir(d) | ContextArg::Archive(d) => d.display().to_string(),
            ContextArg::Stdin => "stdin".to_owned(),
            ContextArg::Git(g) => redact(&g.remote),
            ContextArg::Url(u) => redact(u),
        }
    }
}

/// A URL without `user:password@`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// Materialises `arg` under `tmp` (the store's temp area, on the store's filesystem). A
/// context that cannot be used (a hostile or corrupt archive, a missing git reference, a
/// failed download) is the user's error, named after where it came from.
pub async fn materialize(arg: &ContextArg, tmp: &Path) -> Result<Materialized> {
    let shown = arg.shown();
    materialize_inner(arg, tmp, &shown)
        .await
        .map_err(|e| e.context(UserError(format!("cannot use build context {shown}"))))
}

async fn materialize_inner(arg: &ContextArg, tmp: &Path, shown: &str) -> Result<Materialized> {
    let fresh = |what: &str| -> Result<PathBuf> {
        let dir = tempfile::Builder::new().prefix(what).tempdir_in(tmp).context("creating a context directory")?;
        Ok(dir.keep())
    };
    let limits = ArchiveLimits::default();
    match arg {
        ContextArg::Dir(d) => {
            let root = std::fs::canonicalize(d).with_context(|| format!("resolving {}", d.display()))?;
            Ok(Materialized { root, temporary: false, dockerfile: None, git_source: None })
        }
        ContextArg::Archive(path) => {
            let root = fresh("context-")?;
            let (p, r, name) = (path.clone(), root.clone(), shown.to_owned());
            tokio::task::spawn_blocking(move || remote::extract_archive(&p, &name, &r, limits)).await??;
            Ok(Materialized { root, temporary: true, dockerfile: None, git_source: None })
        }
        ContextArg::Stdin => {
            use std::io::IsTerminal as _;
            if std::io::stdin().is_terminal() {
                return Err(UserError(
                    "the build context `-` is read from stdin, which is a terminal: pipe an archive or a Dockerfile \
                     (rbuild build - < ctx.tar.gz)"
                        .into(),
                )
                .into());
            }
            let file = tmp.join(format!("stdin-{}", std::process::id()));
            let f = file.clone();
            tokio::task::spawn_blocking(move || -> Result<()> {
                let mut out = std::fs::File::create_new(&f).with_context(|| format!("creating {}", f.display()))?;
                std::io::copy(&mut std::io::stdin().lock(), &mut out)
                    .context("reading the build context from stdin")?;
                Ok(())
            })
            .await??;
            let result = archive_or_dockerfile(&file, shown, fresh("context-")?, limits).await;
            let _ = std::fs::remove_file(&file);
            result
        }
        ContextArg::Url(url) => {
            let file = tmp.join(format!("download-{}", std::process::id()));
            remote::download(url, &file).await?;
            let result = archive_or_dockerfile(&file, shown, fresh("context-")?, limits).await;
            let _ = std::fs::remove_file(&file);
            result
        }
        ContextArg::Git(g) => {
            let root = fresh("context-")?;
            let scratch = tmp.join(format!("git-{}", root.file_name().unwrap_or_default().to_string_lossy()));
            let (g, r) = (g.clone(), root.clone());
            let (remote_url, reference) = (g.remote.clone(), g.reference.clone());
            let commit = tokio::task::spawn_blocking(move || {
                remote::checkout_git(&g.remote, g.reference.as_deref(), g.subdir.as_deref(), &r, &scratch)
            })
            .await??;
            let uri = match reference {
                Some(r) => format!("{}#{r}", crate::attest::redact_url(&remote_url)),
                None => crate::attest::redact_url(&remote_url),
            };
            Ok(Materialized { root, temporary: true, dockerfile: None, git_source: Some((uri, commit)) })
        }
    }
}

/// An archive is extracted into `root`; anything else is a Dockerfile, with `root` (empty) as
/// the context.
async fn archive_or_dockerfile(file: &Path, shown: &str, root: PathBuf, limits: ArchiveLimits) -> Result<Materialized> {
    if remote::is_archive(file)? {
        let (f, r, name) = (file.to_owned(), root.clone(), shown.to_owned());
        tokio::task::spawn_blocking(move || remote::extract_archive(&f, &name, &r, limits)).await??;
        return Ok(Materialized { root, temporary: true, dockerfile: None, git_source: None });
    }
    let text = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    Ok(Materialized { root, temporary: true, dockerfile: Some(text), git_source: None })
}

/// Reads the file `rel` of a materialised context, resolving symlinks inside it: nothing
/// outside `root` is ever read. `Ok(None)` when missing.
pub fn read_confined(root: &Path, rel: &Path) -> Result<Option<Vec<u8>>> {
    let ctx = ContextDir { root: root.to_owned(), ignore: IgnoreMatcher::default() };
    let resolved = ctx.resolve(rel, true).with_context(|| format!("resolving {} in the context", rel.display()))?;
    let path = root.join(resolved);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => Ok(Some(std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?)),
        Ok(_) => Ok(None),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || e.raw_os_error() == Some(nix::errno::Errno::ENOTDIR as i32) =>
        {
            Ok(None)
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Reads a Dockerfile from stdin (`-f -`).
pub fn read_stdin_dockerfile() -> Result<Vec<u8>> {
    use std::io::IsTerminal as _;
    if std::io::stdin().is_terminal() {
        return Err(UserError("-f - reads the Dockerfile from stdin, which is a terminal: pipe it in".into()).into());
    }
    let mut out = Vec::new();
    std::io::stdin().lock().read_to_end(&mut out).context("reading the Dockerfile from stdin")?;
    Ok(out)
}

/// A `--build-context` directory: what the worker and the frontend are given.
#[derive(Debug)]
pub struct LocalNamed {
    /// The worker's context name.
    pub name: String,
    /// The directory and its `.dockerignore`.
    pub dir: ContextDir,
}

/// Parses `--build-context NAME=VALUE` values (buildx syntax): `docker-image://REF`,
/// `target:STAGE`, a git URL (or `file://` repository), an HTTP(S) URL to a tar archive, or a
/// local directory. Directories come back separately, for the worker.
pub fn parse_named_contexts(values: &[String]) -> Result<(BTreeMap<String, NamedContext>, Vec<LocalNamed>)> {
    let mut named = BTreeMap::new();
    let mut locals = Vec::new();
    for v in values {
        let Some((name, value)) = v.split_once('=').filter(|(n, v)| !n.is_empty() && !v.is_empty()) else {
            return Err(UserError(format!("invalid --build-context {v:?}: use NAME=VALUE")).into());
        };
        let ctx = if let Some(reference) = value.strip_prefix("docker-image://") {
            NamedContext::Image { reference: reference.to_owned() }
        } else if let Some(stage) = value.strip_prefix("target:") {
            NamedContext::Stage { name: stage.to_owned() }
        } else if let Some(mut layout) = rbuild_worker::oci_layout::LayoutRef::parse(value) {
            layout.dir = std::fs::canonicalize(&layout.dir)
                .map_err(|e| UserError(format!("--build-context {name}={value}: {}: {e}", layout.dir.display())))?;
            if !layout.dir.join("index.json").is_file() {
                return Err(UserError(format!(
                    "--build-context {name}={value}: {} is not an OCI image layout (no index.json)",
                    layout.dir.display()
                ))
                .into());
            }
            let digest = layout.digest.as_deref().map(|d| format!("@{d}")).unwrap_or_default();
            NamedContext::Image { reference: format!("{}{digest}", layout.name()) }
        } else if let Some(g) = git_url(value)? {
            NamedContext::Git { remote: g.remote, reference: g.reference, subdir: g.subdir }
        } else if value.starts_with("http://") || value.starts_with("https://") {
            NamedContext::Archive { url: value.to_owned() }
        } else {
            let dir = Path::new(value);
            if !dir.is_dir() {
                return Err(UserError(format!("--build-context {name}={value}: {value} is not a directory")).into());
            }
            let root = std::fs::canonicalize(dir).with_context(|| format!("resolving {value}"))?;
            let excludes = match std::fs::read_to_string(root.join(".dockerignore")) {
                Ok(text) => IgnoreMatcher::parse_file(&text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(e).with_context(|| format!("reading {value}/.dockerignore")),
            };
            let ignore = IgnoreMatcher::new(&excludes).map_err(|e| UserError(e.to_string()))?;
            let worker_name = format!("context:{name}");
            locals.push(LocalNamed { name: worker_name.clone(), dir: ContextDir { root, ignore } });
            NamedContext::Local { name: worker_name, exclude: excludes }
        };
        if named.insert(name.to_owned(), ctx).is_some() {
            return Err(UserError(format!("--build-context {name} is given twice")).into());
        }
    }
    Ok((named, locals))
}

/// Parses `--add-host`, `--ulimit`, `--shm-size` and `--network` (docker's syntax).
pub fn parse_run_defaults(
    add_hosts: &[String],
    ulimits: &[String],
    shm_size: Option<&str>,
    network: &str,
) -> Result<RunDefaults> {
    let network = match network {
        "" | "default" => NetworkMode::Default,
        "none" => NetworkMode::None,
        "host" => NetworkMode::Host,
        other => return Err(UserError(format!("invalid --network {other:?}: use default, none or host")).into()),
    };
    let mut extra_hosts = Vec::new();
    for h in add_hosts {
        extra_hosts.extend(parse_host(h, host_gateway)?);
    }
    let ulimits = ulimits.iter().map(|u| parse_ulimit(u)).collect::<Result<_>>()?;
    let shm_size = shm_size.map(parse_ram_size).transpose()?;
    Ok(RunDefaults { network, extra_hosts, ulimits, shm_size })
}

/// The `--add-host` value that stands for the host's address.
const HOST_GATEWAY: &str = "host-gateway";

/// Sets what `host-gateway` stands for: one address or a comma-separated list.
const HOST_GATEWAY_ENV: &str = "RBUILD_HOST_GATEWAY_IP";

/// The addresses `host-gateway` stands for: `$RBUILD_HOST_GATEWAY_IP`, else `127.0.0.1`.
///
/// Docker resolves `host-gateway` to its daemon's `host-gateway-ip` setting, by default the
/// address of the `docker0` bridge: the host as its containers, on that bridge, reach it
/// (buildx asks the docker driver's BuildKit worker for it; other drivers refuse the value).
/// rbuild's RUN steps are not on a bridge: they share the host's network namespace (with
/// `--network=none` there is no network to reach anything on), so the host is reached on its
/// loopback address. That also reaches services that listen on loopback only, needs no
/// interface or route (offline machines, CI containers), and is the same on every machine:
/// the entry is part of the step's cache key, so an address that depended on the machine would
/// keep its cache from being shared. `RBUILD_HOST_GATEWAY_IP` is the daemon setting's
/// counterpart, for hosts where something else is wanted.
fn host_gateway() -> Result<Vec<std::net::IpAddr>> {
    match std::env::var_os(HOST_GATEWAY_ENV).filter(|v| !v.is_empty()) {
        None => Ok(vec![std::net::Ipv4Addr::LOCALHOST.into()]),
        Some(value) => parse_gateway(&value.to_string_lossy()),
    }
}

/// A `RBUILD_HOST_GATEWAY_IP` value: addresses separated by commas.
fn parse_gateway(value: &str) -> Result<Vec<std::net::IpAddr>> {
    value
        .split(',')
        .map(|ip| {
            ip.trim().parse().map_err(|_| {
                UserError(format!("invalid {HOST_GATEWAY_ENV} {value:?}: {ip:?} is not an IP address")).into()
            })
        })
        .collect()
}

/// `host:ip` or `host=ip` (buildx's syntax): the address may be IPv6 (`host:fd00::1`, in
/// brackets or not), a comma-separated list of addresses (one entry each), or `host-gateway`
/// (the host's address, from `gateway`).
fn parse_host(s: &str, gateway: fn() -> Result<Vec<std::net::IpAddr>>) -> Result<Vec<HostEntry>> {
    let bad = |why: &str| UserError(format!("invalid --add-host {s:?}: {why} (use host:ip or host:{HOST_GATEWAY})"));
    let (host, ips) = s.split_once('=').or_else(|| s.split_once(':')).ok_or_else(|| bad("no address"))?;
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control() || c == '#') {
        return Err(bad("invalid host name").into());
    }
    let addrs = if ips == HOST_GATEWAY {
        gateway()?
    } else {
        ips.split(',')
            .map(|ip| {
                let ip = ip.strip_prefix('[').and_then(|v| v.strip_suffix(']')).unwrap_or(ip);
                ip.parse().map_err(|_| bad("invalid IP address"))
            })
            .collect::<Result<_, _>>()?
    };
    Ok(addrs
        .into_iter()
        .map(|addr: std::net::IpAddr| HostEntry { host: host.to_owned(), ip: addr.to_string() })
        .collect())
}

/// `name=soft[:hard]`, `-1` for unlimited.
fn parse_ulimit(s: &str) -> Result<Ulimit> {
    let bad = |why: String| UserError(format!("invalid --ulimit {s:?}: {why} (e.g. nofile=1024:2048)"));
    let (name, limits) = s.split_once('=').ok_or_else(|| bad("no value".into()))?;
    if rbuild_executor::RlimitResource::from_name(name).is_none() {
        return Err(bad(format!("unknown resource {name:?}")).into());
    }
    let (soft, hard) = limits.split_once(':').unwrap_or((limits, limits));
    let num = |v: &str| -> Result<i64> {
        match v.parse::<i64>() {
            Ok(n) if n >= -1 => Ok(n),
            _ => Err(bad(format!("{v:?} is not a limit")).into()),
        }
    };
    let (soft, hard) = (num(soft)?, num(hard)?);
    let unlimited = |n: i64| if n == -1 { i64::MAX } else { n };
    if unlimited(soft) > unlimited(hard) {
        return Err(bad(format!("soft limit {soft} is above hard limit {hard}")).into());
    }
    Ok(Ulimit { name: name.to_owned(), soft, hard })
}

/// Docker's `RAMInBytes`: a number with an optional binary unit (`64m`, `1g`, `512MiB`).
fn parse_ram_size(s: &str) -> Result<u64> {
    let bad = || UserError(format!("invalid --shm-size {s:?} (e.g. 128m, 1g)"));
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.trim_start();
    let unit = unit.strip_suffix('b').unwrap_or(unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(bad().into()),
    };
    let bytes = n * (1u64 << shift) as f64;
    if !(1.0..=1e15).contains(&bytes) {
        return Err(bad().into());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_arguments() {
        assert_eq!(classify(Path::new("-")).unwrap(), ContextArg::Stdin);
        assert_eq!(classify(Path::new("/")).unwrap(), ContextArg::Dir("/".into()));
        let ContextArg::Git(g) = classify(Path::new("https://example.com/r.git#v1:sub/dir")).unwrap() else { panic!() };
        assert_eq!((g.reference.as_deref(), g.subdir.as_deref()), (Some("v1"), Some("sub/dir")));
        let ContextArg::Git(g) = classify(Path::new("file:///srv/repo#main:app/")).unwrap() else { panic!() };
        assert_eq!(
            g,
            GitUrl { remote: "file:///srv/repo".into(), reference: Some("main".into()), subdir: Some("app".into()) }
        );
        assert_eq!(
            classify(Path::new("http://127.0.0.1/ctx.tgz")).unwrap(),
            ContextArg::Url("http://127.0.0.1/ctx.tgz".into())
        );
        assert!(classify(Path::new("/nonexistent/ctx")).is_err());
    }

    #[test]
    fn run_options() {
        let v = |s: &[&str]| s.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        let d = parse_run_defaults(
            &v(&["db:10.0.0.9", "v6=fd00::1", "h6:::1"]),
            &v(&["nofile=1024:2048", "core=-1"]),
            Some("128m"),
            "none",
        )
        .unwrap();
        assert_eq!(d.network, NetworkMode::None);
        let hosts: Vec<(&str, &str)> = d.extra_hosts.iter().map(|h| (h.host.as_str(), h.ip.as_str())).collect();
        assert_eq!(hosts, [("db", "10.0.0.9"), ("v6", "fd00::1"), ("h6", "::1")]);
        assert_eq!(d.ulimits[0], Ulimit { name: "nofile".into(), soft: 1024, hard: 2048 });
        assert_eq!((d.ulimits[1].soft, d.ulimits[1].hard), (-1, -1));
        assert_eq!(d.shm_size, Some(128 << 20));
        assert_eq!(parse_ram_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_ram_size("65536").unwrap(), 65536);
        assert_eq!(parse_ram_size("64 MiB").unwrap(), 64 << 20);
        assert_eq!(parse_ram_size("2kb").unwrap(), 2048);
        assert!(parse_ram_size("m").is_err() && parse_ram_size("0").is_err() && parse_ram_size("1x").is_err());
        for bad_host in ["nohost", "x:notanip", "x:1.2.3.4,", "x:[::1", "a b:1.2.3.4", ":1.2.3.4"] {
            assert!(parse_run_defaults(&v(&[bad_host]), &[], None, "").is_err(), "{bad_host}");
        }
        for bad_ulimit in ["nofile", "files=1", "nofile=2:1", "nofile=x"] {
            assert!(parse_run_defaults(&[], &v(&[bad_ulimit]), None, "").is_err(), "{bad_ulimit}");
        }
        assert!(parse_run_defaults(&[], &[], Some("12q"), "").is_err());
        assert!(parse_run_defaults(&[], &[], None, "bridge").is_err());
    }

    #[test]
    fn host_gateway_and_address_lists() {
        let gateway = || parse_gateway("10.0.0.1, fd00::1");
        let hosts = |s: &str| -> Vec<(String, String)> {
            parse_host(s, gateway).unwrap().into_iter().map(|h| (h.host, h.ip)).collect()
        };
        let pair = |h: &str, ip: &str| (h.to_owned(), ip.to_owned());
        assert_eq!(hosts("docker:host-gateway"), [pair("docker", "10.0.0.1"), pair("docker", "fd00::1")]);
        assert_eq!(hosts("multi=10.0.0.2,[fd00::2]"), [pair("multi", "10.0.0.2"), pair("multi", "fd00::2")]);
        assert_eq!(hosts("v6:[::1]"), [pair("v6", "::1")]);
        assert!(parse_host("x:host-gateway", || parse_gateway("nope")).is_err());
        assert!(parse_gateway("10.0.0.1,").is_err() && parse_gateway("").is_err());
        // Without RBUILD_HOST_GATEWAY_IP (CI does not set it): the host's loopback address.
        if std::env::var_os(HOST_GATEWAY_ENV).is_none() {
            assert_eq!(host_gateway().unwrap(), [std::net::IpAddr::from([127, 0, 0, 1])]);
        }
    }

    #[test]
    fn named_context_values() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".dockerignore"), "*.tmp\n").unwrap();
        let values = [
            "img=docker-image://127.0.0.1:5000/base:1".to_owned(),
            "st=target:builder".to_owned(),
            "src=https://example.com/r.git#main".to_owned(),
            "tar=https://example.com/ctx.tar.gz".to_owned(),
            format!("dir={}", dir.path().display()),
        ];
        let (named, locals) = parse_named_contexts(&values).unwrap();
        assert_eq!(named["img"], NamedContext::Image { reference: "127.0.0.1:5000/base:1".into() });
        assert_eq!(named["st"], NamedContext::Stage { name: "builder".into() });
        assert!(matches!(&named["src"], NamedContext::Git { reference: Some(r), .. } if r == "main"));
        assert!(matches!(&named["tar"], NamedContext::Archive { .. }));
        assert_eq!(named["dir"], NamedContext::Local { name: "context:dir".into(), exclude: vec!["*.tmp".into()] });
        assert_eq!(locals.len(), 1);
        assert!(parse_named_contexts(&["x".to_owned()]).is_err());
        assert!(parse_named_contexts(&["x=/nonexistent".to_owned()]).is_err());
        assert!(parse_named_contexts(&["a=target:x".to_owned(), "a=target:y".to_owned()]).is_err());
    }
}
