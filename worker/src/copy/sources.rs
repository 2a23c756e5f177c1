//! Where COPY reads from, and which source paths a `src` argument selects: wildcards, and with
//! `--parents` the part of the path that is kept under the destination (`a/./b/c` keeps `b/c`).
//!
//! Every path handed out is resolved inside the source's root (symlinks followed, never
//! leaving it), so reading it on the host cannot escape the context or the stage.

use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::context::{ContextDir, ContextEntries};
use crate::error::WorkerError;
use crate::merged::{Found, MergedView};

/// Where COPY reads from.
#[derive(Debug)]
pub enum CopySource<'a> {
    /// The build context (owners become root unless `--chown`).
    Context {
        /// The context directory.
        dir: &'a ContextDir,
        /// The walk of it that gave the step its cache key, if any: with it, a COPY links
        /// files an earlier run of the same COPY wrote instead of copying them again.
        walk: Option<&'a ContextEntries>,
    },
    /// Another stage's or image's filesystem (owners kept unless `--chown`).
    Fs(MergedView),
}

impl CopySource<'_> {
    pub(crate) fn lstat(&self, rel: &Path) -> io::Result<Option<Found>> {
        match self {
            CopySource::Context { dir, .. } => dir.lstat(rel),
            CopySource::Fs(v) => v.lstat(rel),
        }
    }

    pub(crate) fn read_dir(&self, rel: &Path) -> io::Result<Vec<(OsString, Found)>> {
        match self {
            CopySource::Context { dir, .. } => dir.read_dir(rel),
            CopySource::Fs(v) => v.read_dir(rel),
        }
    }

    pub(crate) fn resolve(&self, p: &Path, follow_last: bool) -> io::Result<PathBuf> {
        match self {
            CopySource::Context { dir, .. } => dir.resolve(p, follow_last),
            CopySource::Fs(v) => v.resolve(p, follow_last),
        }
    }

    pub(crate) fn is_context(&self) -> bool {
        matches!(self, CopySource::Context { .. })
    }
}

/// One source entry a COPY argument selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Selected {
    /// Its path in the source, resolved.
    pub path: PathBuf,
    /// With `--parents`: the directory the kept path starts from (resolved) and the kept path
    /// itself, as written below it (`a/./b/c` → `("a", "b/c")`).
    pub keep: Option<(PathBuf, PathBuf)>,
}

/// True when a path segment is a glob (BuildKit's `containsWildcards`).
pub(crate) fn has_wildcard(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// `filepath.Clean` of a relative path: `.` and empty segments dropped, `..` pops (never above
/// the root).
pub(crate) fn clean(p: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

fn io_err(path: &str, source: io::Error) -> WorkerError {
    WorkerError::Io { path: PathBuf::from(path), source }
}

fn not_found(src: &CopySource<'_>, written: &str, rel: &Path) -> WorkerError {
    let hint = match src {
        CopySource::Context { dir, .. } => dir
            .ignore
            .excluded_by(&rel.to_string_lossy())
            .map(|pat| format!("the path is excluded by the .dockerignore pattern {pat:?}")),
        CopySource::Fs(_) => None,
    };
    WorkerError::SourceNotFound { path: written.to_owned(), hint }
}

/// The entries one `src` argument selects, sorted.
pub(crate) fn select(src: &CopySource<'_>, written: &str, parents: bool) -> Result<Vec<Selected>, WorkerError> {
    if parents {
        // BuildKit: the optional `/./` pivot; without it the whole path is kept.
        let (pivot, pattern) = written.split_once("/./").unwrap_or(("", written));
        let base = src.resolve(Path::new(pivot), true).map_err(|e| io_err(written, e))?;
        if !src.lstat(&base).map_err(|e| io_err(written, e))?.is_some_and(|f| f.meta.is_dir()) {
            return Err(not_found(src, written, &base));
        }
        let pattern = clean(pattern);
        let matches = if pattern.to_str().is_some_and(has_wildcard) {
            expand_wildcard(src, &base, &pattern.to_string_lossy()).map_err(|e| io_err(written, e))?
        } else {
            let path = src.resolve(&base.join(&pattern), true).map_err(|e| io_err(written, e))?;
            if src.lstat(&path).map_err(|e| io_err(written, e))?.is_none() {
                return Err(not_found(src, written, &path));
            }
            vec![(pattern, path)]
        };
        if matches.is_empty() {
            return Err(WorkerError::SourceNotFound { path: written.to_owned(), hint: None });
        }
        return Ok(matches
            .into_iter()
            .map(|(kept, path)| Selected { path, keep: Some((base.clone(), kept)) })
            .collect());
    }
    if has_wildcard(written) {
        let matches = expand_wildcard(src, Path::new(""), written).map_err(|e| io_err(written, e))?;
        if matches.is_empty() {
            return Err(WorkerError::SourceNotFound { path: written.to_owned(), hint: None });
        }
        return Ok(matches.into_iter().map(|(_, path)| Selected { path, keep: None }).collect());
    }
    let path = src.resolve(Path::new(written), true).map_err(|e| io_err(written, e))?;
    if src.lstat(&path).map_err(|e| io_err(written, e))?.is_none() {
        return Err(not_found(src, written, &path));
    }
    Ok(vec![Selected { path, keep: None }])
}

/// Expands a wildcard `pattern` below `base` (a resolved directory), one segment at a time.
/// Returns `(path as matched below base, resolved path)` pairs sorted by the former. Every
/// intermediate directory is resolved inside the source before it is listed, so a symlink in
/// the context never leads the listing outside it.
fn expand_wildcard(src: &CopySource<'_>, base: &Path, pattern: &str) -> io::Result<Vec<(PathBuf, PathBuf)>> {
    let segments: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
    let mut current = vec![(PathBuf::new(), base.to_owned())];
    for seg in segments {
        let mut next = Vec::new();
        if has_wildcard(seg) {
            let Ok(glob) = globset::GlobBuilder::new(seg).literal_separator(true).build() else {
                return Ok(Vec::new());
            };
            let m = glob.compile_matcher();
            for (lit, dir) in &current {
                let Ok(entries) = src.read_dir(dir) else { continue };
                for (name, _) in entries {
                    if m.is_match(Path::new(&name)) {
                        next.push((lit.join(&name), dir.join(&name)));
                    }
                }
            }
        } else {
            for (lit, dir) in &current {
                let p = dir.join(seg);
                if src.lstat(&p)?.is_some() {
                    next.push((lit.join(seg), p));
                }
            }
        }
        current = Vec::with_capacity(next.len());
        for (lit, p) in next {
            let resolved = src.resolve(&p, true)?;
            if src.lstat(&resolved)?.is_some() {
                current.push((lit, resolved));
            }
        }
    }
    current.sort();
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::IgnoreMatcher;
    use std::os::unix::fs::symlink;

    fn ctx(root: &Path) -> ContextDir {
        ContextDir { root: root.to_owned(), ignore: IgnoreMatcher::default() }
    }

    #[test]
    fn parents_pivot_and_wildcards() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("a/b/c")).unwrap();
        std::fs::create_dir_all(t.path().join("a/x/c")).unwrap();
        std::fs::write(t.path().join("a/b/c/f.txt"), "1").unwrap();
        std::fs::write(t.path().join("a/x/c/f.txt"), "2").unwrap();
        let c = ctx(t.path());
        let src = CopySource::Context { dir: &c, walk: None };
        let kept = |v: Vec<Selected>| -> Vec<String> {
            v.into_iter().map(|s| s.keep.unwrap().1.display().to_string()).collect()
        };
        assert_eq!(kept(select(&src, "a/./b/c/f.txt", true).unwrap()), ["b/c/f.txt"]);
        assert_eq!(kept(select(&src, "a/b/c/f.txt", true).unwrap()), ["a/b/c/f.txt"]);
        assert_eq!(kept(select(&src, "a/*/c/f.txt", true).unwrap()), ["a/b/c/f.txt", "a/x/c/f.txt"]);
        assert_eq!(kept(select(&src, "./a/./*/c", true).unwrap()), ["b/c", "x/c"]);
        assert!(select(&src, "a/./nope", true).is_err());
        let plain = select(&src, "a/*/c/f.txt", false).unwrap();
        assert_eq!(plain.len(), 2);
        assert!(plain.iter().all(|s| s.keep.is_none()));
    }

    #[test]
    fn wildcards_never_list_outside_the_context() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), "s").unwrap();
        let root = t.path().join("ctx");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        symlink(&outside, root.join("link")).unwrap();
        let c = ctx(&root);
        let src = CopySource::Context { dir: &c, walk: None };
        // `link` points at an absolute host path: inside the context it means `/outside`,
        // which does not exist there.
        assert!(select(&src, "link/*", false).is_err());
        assert!(select(&src, "link/secret", false).is_err());
    }
}
