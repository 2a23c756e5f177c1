//! What an `ADD` source is: a git repository, an HTTP(S) URL or a local path, by BuildKit's rules
//! (`dfgitutil.ParseGitRef`, `gitutil.ParseURL`, `isHTTPSource`).
//!
//! - `http(s)://…` is git only when its path ends in `.git`; `ssh://` and `git://` always are,
//!   and so is the scp form `user@host:path`. Any other `scheme://` is a local path, and so is
//!   everything starting with `./`, `../` or the old `github.com/` shorthand.
//! - A git URL's fragment is `#ref:subdir`; the query may say `ref=`, `tag=`, `branch=`,
//!   `subdir=` and `keep-git-dir=`.

/// A git source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GitRef {
    /// URL to clone, without fragment and query.
    pub remote: String,
    /// Branch, tag or commit.
    pub reference: Option<String>,
    /// Subdirectory of the repository.
    pub subdir: Option<String>,
    /// `?keep-git-dir=`.
    pub keep_git_dir: Option<bool>,
}

/// Classification of one `ADD` source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AddSource {
    /// A git repository.
    Git(GitRef),
    /// A URL to download; `filename` is what it is saved as.
    Http {
        /// The URL as written.
        url: String,
        /// The last segment of the URL path without the query, or `__unnamed__`.
        filename: String,
    },
    /// A path in the build context.
    Local,
}

/// Why a git URL is unusable (it is a git URL, so it is not a local path either).
pub(crate) type GitError = String;

/// A git URL as BuildKit reads one (`https://host/repo.git#ref:subdir`, `git@host:repo`,
/// `ssh://`, `git://`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitUrl {
    /// URL to clone, without fragment and query.
    pub remote: String,
    /// Branch, tag or commit.
    pub reference: Option<String>,
    /// Subdirectory of the repository.
    pub subdir: Option<String>,
}

/// Parses `src` as a git URL by BuildKit's rules (`Ok(None)`: not a git URL; `Err`: a git URL
/// that is unusable, e.g. an unknown query parameter).
pub fn parse_git_url(src: &str) -> Result<Option<GitUrl>, String> {
    Ok(parse_git_ref(src)?.map(|g| GitUrl { remote: g.remote, reference: g.reference, subdir: g.subdir }))
}

/// Classifies `src`.
pub(crate) fn classify(src: &str) -> Result<AddSource, GitError> {
    if let Some(git) = parse_git_ref(src)? {
        return Ok(AddSource::Git(git));
    }
    if src.starts_with("http://") || src.starts_with("https://") {
        return Ok(AddSource::Http { url: src.to_owned(), filename: url_filename(src) });
    }
    Ok(AddSource::Local)
}

/// The parts of `scheme://authority/path?query#fragment` Go's `url.Parse` would give (path and
/// fragment percent-decoded); `None` where Go would fail.
struct Url<'a> {
    scheme: String,
    without_opts: &'a str,
    path: String,
    query: Option<&'a str>,
    fragment: Option<String>,
}

fn parse_url(s: &str) -> Option<Url<'_>> {
    if s.chars().any(|c| (c as u32) < 0x20 || c == '\x7f') {
        return None;
    }
    let (scheme, rest) = s.split_once("://")?;
    let (before_frag, fragment) = match s.split_once('#') {
        Some((b, f)) => (b, Some(percent_decode(f, false)?)),
        None => (s, None),
    };
    let (without_opts, query) = match before_frag.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (before_frag, None),
    };
    let after_scheme = &without_opts[scheme.len() + 3..];
    let _ = rest;
    let path = match after_scheme.find('/') {
        Some(i) => percent_decode(&after_scheme[i..], false)?,
        None => String::new(),
    };
    Some(Url { scheme: scheme.to_lowercase(), without_opts, path, query, fragment })
}

fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The file name `ADD <url>` saves to: `path.Base` of the URL path, `__unnamed__` for none.
pub(crate) fn url_filename(src: &str) -> String {
    let Some(u) = parse_url(src) else {
        return "__unnamed__".to_owned();
    };
    let trimmed = u.path.trim_end_matches('/');
    let base = trimmed.rsplit('/').next().unwrap_or_default();
    if base.is_empty() || base == "." {
        "__unnamed__".to_owned()
    } else {
        base.to_owned()
    }
}

/// The scp form `user@host:path[?query][#fragment]`.
fn scp_style(s: &str) -> Option<(&str, Option<&str>, Option<&str>)> {
    let (user, rest) = s.split_once('@')?;
    if user.is_empty() || !user.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return None;
    }
    let (host, rest) = rest.split_once(':')?;
    if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') {
        return None;
    }
    let (before_frag, fragment) = match rest.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (rest, None),
    };
    let query = before_frag.split_once('?').map(|(_, q)| q);
    let remote_len = s.len() - rest.len() + before_frag.split_once('?').map_or(before_frag.len(), |(p, _)| p.len());
    Some((&s[..remote_len], query, fragment))
}

/// `gitutil.ParseURL` + `dfgitutil.ParseGitRef`: `Ok(None)` when `src` is not a git URL.
pub(crate) fn parse_git_ref(src: &str) -> Result<Option<GitRef>, GitError> {
    if src.starts_with("./") || src.starts_with("../") || src.starts_with("github.com/") {
        return Ok(None);
    }
    let (remote, query, fragment) = if let Some(proto_end) = proto_len(src) {
        let proto = src[..proto_end].to_lowercase();
        if !["http", "https", "ssh", "git"].contains(&proto.as_str()) {
            return Ok(None);
        }
        let Some(u) = parse_url(src) else { return Ok(None) };
        if (u.scheme == "http" || u.scheme == "https") && !u.path.ends_with(".git") {
            return Ok(None);
        }
        (u.without_opts.to_owned(), u.query, u.fragment)
    } else if let Some((remote, query, fragment)) = scp_style(src) {
        (remote.to_owned(), query, fragment.map(str::to_owned))
    } else {
        return Ok(None);
    };
    let mut git = GitRef { remote, reference: None, subdir: None, keep_git_dir: None };
    if let Some(f) = fragment.filter(|f| !f.is_empty()) {
        let (r, sub) = f.split_once(':').unwrap_or((&f, ""));
        git.reference = Some(r.to_owned()).filter(|r| !r.is_empty());
        let sub = super::paths::join(&["/", sub]);
        git.subdir = Some(sub.trim_start_matches('/').to_owned()).filter(|s| !s.is_empty());
    }
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        apply_query(&mut git, q)?;
    }
    Ok(Some(git))
}

/// Length of a leading `[a-zA-Z0-9]+` followed by `://`.
fn proto_len(s: &str) -> Option<usize> {
    let n = s.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(s.len());
    (n > 0 && s[n..].starts_with("://")).then_some(n)
}

/// BuildKit's `GitRef.loadQuery`, for the parameters rbuild's git source can honour.
fn apply_query(git: &mut GitRef, query: &str) -> Result<(), GitError> {
    let mut seen: Vec<String> = Vec::new();
    let (mut tag, mut branch) = (None::<String>, None::<String>);
    for pair in query.split('&') {
        if pair.contains(';') {
            return Err("invalid semicolon separator in query".to_owned());
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode(k, true).ok_or_else(|| format!("invalid URL escape in query {query:?}"))?;
        let v = percent_decode(v, true).ok_or_else(|| format!("invalid URL escape in query {query:?}"))?;
        if seen.contains(&k) {
            return Err(format!("query {} has multiple values", crate::parser::go_quote(&k)));
        }
        seen.push(k.clone());
        if v.is_empty() && k != "keep-git-dir" {
            return Err(format!("query {} has no value", crate::parser::go_quote(&k)));
        }
        let conflict = |a: &str, b: &str| {
            format!("{k} conflicts: {} vs {}", crate::parser::go_quote(a), crate::parser::go_quote(b))
        };
        match k.as_str() {
            "ref" => {
                if let Some(r) = git.reference.as_deref().filter(|r| *r != v) {
                    return Err(conflict(r, &v));
                }
                git.reference = Some(v);
            }
            "tag" => tag = Some(v),
            "branch" => branch = Some(v),
            "subdir" => {
                if let Some(s) = git.subdir.as_deref().filter(|s| *s != v) {
                    return Err(conflict(s, &v));
                }
                git.subdir = Some(v);
            }
            "keep-git-dir" => {
                let b = match v.as_str() {
                    "" | "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
                    "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
                    _ => return Err(format!("invalid keep-git-dir value: {}", crate::parser::go_quote(&v))),
                };
                git.keep_git_dir = Some(b);
            }
            "checksum" | "commit" | "submodules" | "mtime" | "fetch-by-commit" => {
                return Err(format!("git query {} is not supported by rbuild yet", crate::parser::go_quote(&k)));
            }
            _ => return Err(format!("unexpected query {}", crate::parser::go_quote(&k))),
        }
    }
    let with_prefix = |v: String, prefix: &str| if v.starts_with(prefix) { v } else { format!("{prefix}{v}") };
    if let Some(t) = tag {
        let t = with_prefix(t, "refs/tags/");
        if let Some(r) = git.reference.as_deref().filter(|r| *r != t) {
            return Err(format!("ref conflicts: {} vs {}", crate::parser::go_quote(r), crate::parser::go_quote(&t)));
        }
        if branch.is_some() {
            return Err("branch conflicts with tag".to_owned());
        }
        git.reference = Some(t);
    }
    if let Some(b) = branch {
        let b = with_prefix(b, "refs/heads/");
        if let Some(r) = git.reference.as_deref().filter(|r| *r != b) {
            return Err(format!("ref conflicts: {} vs {}", crate::parser::go_quote(r), crate::parser::go_quote(&b)));
        }
        git.reference = Some(b);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(remote: &str, reference: Option<&str>, subdir: Option<&str>) -> AddSource {
        AddSource::Git(GitRef {
            remote: remote.into(),
            reference: reference.map(Into::into),
            subdir: subdir.map(Into::into),
            keep_git_dir: None,
        })
    }

    fn http(url: &str, filename: &str) -> AddSource {
        AddSource::Http { url: url.into(), filename: filename.into() }
    }

    macro_rules! classifies {
        ($src:expr, $want:expr) => {
            assert_eq!(classify($src), Ok($want), "{:?}", $src);
        };
    }

    #[test]
    fn kinds() {
        classifies!("https://github.com/moby/buildkit.git", git("https://github.com/moby/buildkit.git", None, None));
        classifies!(
            "https://github.com/moby/buildkit.git#v0.13.0:frontend/./dockerfile/",
            git("https://github.com/moby/buildkit.git", Some("v0.13.0"), Some("frontend/dockerfile"))
        );
        classifies!(
            "git@github.com:moby/buildkit.git#main",
            git("git@github.com:moby/buildkit.git", Some("main"), None)
        );
        classifies!("ssh://git@example.com/x/y#:sub", git("ssh://git@example.com/x/y", None, Some("sub")));
        classifies!("git://example.com/r", git("git://example.com/r", None, None));
        classifies!("HTTPS://example.com/r.git", git("HTTPS://example.com/r.git", None, None));
        classifies!("https://example.com/a/b.tar.gz?x=1", http("https://example.com/a/b.tar.gz?x=1", "b.tar.gz"));
        classifies!("http://example.com", http("http://example.com", "__unnamed__"));
        classifies!("http://example.com/", http("http://example.com/", "__unnamed__"));
        classifies!("https://example.com/dir/", http("https://example.com/dir/", "dir"));
        classifies!("https://example.com/my%20file", http("https://example.com/my%20file", "my file"));
        classifies!("https://example.com/file.git.txt", http("https://example.com/file.git.txt", "file.git.txt"));
        classifies!("app.tar.gz", AddSource::Local);
        classifies!("github.com/moby/buildkit", AddSource::Local);
        classifies!("./git@host:x", AddSource::Local);
        classifies!("ftp://example.com/x", AddSource::Local);
        classifies!("dir/repo.git", AddSource::Local);
        classifies!("user@host", AddSource::Local);
    }

    #[test]
    fn queries() {
        let g = |s: &str| match classify(s) {
            Ok(AddSource::Git(g)) => Ok(g),
            Ok(other) => panic!("{s}: {other:?}"),
            Err(e) => Err(e),
        };
        let r = g("https://x.io/r.git?tag=v1&subdir=docs&keep-git-dir").unwrap();
        assert_eq!(r.remote, "https://x.io/r.git");
        assert_eq!(r.reference.as_deref(), Some("refs/tags/v1"));
        assert_eq!(r.subdir.as_deref(), Some("docs"));
        assert_eq!(r.keep_git_dir, Some(true));
        assert_eq!(g("git@h:r.git?branch=dev").unwrap().reference.as_deref(), Some("refs/heads/dev"));
        assert_eq!(g("https://x.io/r.git#a?ref=b").unwrap().reference.as_deref(), Some("a?ref=b"));
        assert!(g("https://x.io/r.git#a?x").is_ok());
        assert_eq!(g("https://x.io/r.git?ref=a#b").unwrap_err(), "ref conflicts: \"b\" vs \"a\"");
        assert_eq!(g("https://x.io/r.git?foo=1").unwrap_err(), "unexpected query \"foo\"");
        assert_eq!(g("https://x.io/r.git?tag=").unwrap_err(), "query \"tag\" has no value");
        assert!(g("https://x.io/r.git?tag=a&branch=b").unwrap_err().contains("branch conflicts with tag"));
        assert!(g("https://x.io/r.git?commit=abc").unwrap_err().contains("not supported"));
    }
}
