//! The build context: a directory on the client, filtered by `.dockerignore`, and its content
//! digest (the part of cache keys that changes when a context file changes).

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use globset::{GlobBuilder, GlobMatcher};
use sha2::{Digest as _, Sha256};

use crate::context_index::{digest_files, now_secs, ContextIndex, FileJob, Stamp};
use crate::merged::{resolve_scoped, Found};

/// One `.dockerignore` pattern.
#[derive(Debug, Clone)]
struct Pattern {
    original: String,
    exception: bool,
    matcher: GlobMatcher,
    /// Number of path components, to also match parents of a path.
    depth: usize,
}

/// `.dockerignore` rules, BuildKit's semantics: patterns apply in order and the last one that
/// matches a path (or one of its parents) decides; `!` re-includes; `**` spans directories;
/// a leading `/` is ignored; `#` lines are comments.
#[derive(Debug, Clone, Default)]
pub struct IgnoreMatcher {
    patterns: Vec<Pattern>,
}

/// A `.dockerignore` pattern that does not compile.
#[derive(Debug, thiserror::Error)]
#[error("invalid .dockerignore pattern {pattern:?}")]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// Why.
    #[source]
    pub source: globset::Error,
}

impl IgnoreMatcher {
    /// Parses the text of a `.dockerignore` file into patterns (comments and blanks dropped).
    pub fn parse_file(text: &str) -> Vec<String> {
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect()
    }

    /// Compiles patterns.
    pub fn new(patterns: &[String]) -> Result<IgnoreMatcher, PatternError> {
        let mut out = Vec::new();
        for raw in patterns {
            let (exception, body) = match raw.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, raw.as_str()),
            };
            let cleaned = clean(body);
            if cleaned.is_empty() {
                continue;
            }
            let matcher = GlobBuilder::new(&cleaned)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|source| PatternError { pattern: raw.clone(), source })?
                .compile_matcher();
            let depth = cleaned.split('/').count();
            out.push(Pattern { original: raw.clone(), exception, matcher, depth });
        }
        Ok(IgnoreMatcher { patterns: out })
    }

    /// True when there are no patterns at all.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// True when some pattern re-includes paths (then excluded directories must still be walked).
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exception)
    }

    /// Is `rel` (slash-separated, relative to the context root) excluded?
    pub fn is_excluded(&self, rel: &str) -> bool {
        self.deciding_pattern(rel).is_some_and(|p| !p.exception)
    }

    /// The pattern, as written, that excludes `rel`, if any (for explaining a missing file).
    pub fn excluded_by(&self, rel: &str) -> Option<&str> {
        self.deciding_pattern(rel).filter(|p| !p.exception).map(|p| p.original.as_str())
    }

    fn deciding_pattern(&self, rel: &str) -> Option<&Pattern> {
        let mut decided = None;
        for p in &self.patterns {
            let mut hit = p.matcher.is_match(rel);
            if !hit {
                // A pattern naming a directory applies to everything below it.
                let parts: Vec<&str> = rel.split('/').collect();
                if parts.len() > p.depth {
                    hit = p.matcher.is_match(parts[..p.depth].join("/"));
                }
            }
            if hit {
                decided = Some(p);
            }
        }
        decided
    }
}

/// `filepath.Clean` and strip a leading `/`.
fn clean(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out.join("/")
}

/// The build context: a directory and its ignore rules.
#[derive(Debug, Clone)]
pub struct ContextDir {
    /// Root directory.
    pub root: PathBuf,
    /// `.dockerignore` rules.
    pub ignore: IgnoreMatcher,
}

fn slash(rel: &Path) -> String {
    rel.to_string_lossy().into_owned()
}

impl ContextDir {
    /// The entry at `rel` (not following a final symlink), or `None` if missing or excluded.
    pub fn lstat(&self, rel: &Path) -> io::Result<Option<Found>> {
        if rel.as_os_str().is_empty() {
            let meta = std::fs::symlink_metadata(&self.root)?;
            return Ok(Some(Found { host_path: self.root.clone(), meta }));
        }
        if self.ignore.is_excluded(&slash(rel)) {
            return Ok(None);
        }
        let host_path = self.root.join(rel);
        match std::fs::symlink_metadata(&host_path) {
            Ok(meta) => Ok(Some(Found { host_path, meta })),
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Included entries of directory `rel`, sorted by name.
    pub fn read_dir(&self, rel: &Path) -> io::Result<Vec<(OsString, Found)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.root.join(rel))? {
            let entry = entry?;
            let child = rel.join(entry.file_name());
            // Relative to the open directory (no path walk from the root), not following links.
            let meta = entry.metadata()?;
            let excluded = self.ignore.is_excluded(&slash(&child));
            if excluded && !(meta.is_dir() && self.ignore.has_exceptions()) {
                continue;
            }
            out.push((entry.file_name(), Found { host_path: entry.path(), meta }));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// [`read_dir`](Self::read_dir) of every directory it leads to from the root, on all cores
    /// (a stat per entry is most of a no-op rebuild's work).
    fn list_all(&self) -> io::Result<HashMap<PathBuf, Vec<(OsString, Found)>>> {
        #[derive(Default)]
        struct Walk {
            queue: Vec<PathBuf>,
            busy: usize,
            done: HashMap<PathBuf, Vec<(OsString, Found)>>,
            error: Option<io::Error>,
        }
        let walk = Mutex::new(Walk { queue: vec![PathBuf::new()], ..Walk::default() });
        let wake = std::sync::Condvar::new();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
        let work = || loop {
            let dir = {
                let Ok(mut w) = walk.lock() else { return };
                loop {
                    if w.error.is_some() {
                        return;
                    }
                    if let Some(d) = w.queue.pop() {
                        w.busy += 1;
                        break d;
                    }
                    if w.busy == 0 {
                        wake.notify_all();
                        return;
                    }
                    w = match wake.wait(w) {
                        Ok(w) => w,
                        Err(_) => return,
                    };
                }
            };
            let listed = self.read_dir(&dir);
            let Ok(mut w) = walk.lock() else { return };
            w.busy -= 1;
            match listed {
                Ok(entries) => {
                    for (name, found) in &entries {
                        if found.meta.is_dir() {
                            w.queue.push(dir.join(name));
                        }
                    }
                    w.done.insert(dir, entries);
                }
                Err(e) => w.error = Some(e),
            }
            wake.notify_all();
        };
        std::thread::scope(|s| {
            for _ in 1..threads {
                s.spawn(work);
            }
            work();
        });
        let w = walk.into_inner().map_err(|_| io::Error::other("context walk panicked"))?;
        match w.error {
            Some(e) => Err(e),
            None => Ok(w.done),
        }
    }

    /// Resolves `path` inside the context, following symlinks but never leaving the root.
    pub fn resolve(&self, path: &Path, follow_last: bool) -> io::Result<PathBuf> {
        resolve_scoped(path, follow_last, |rel| {
            let p = self.root.join(rel);
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => Ok(Some(std::fs::read_link(&p)?)),
                _ => Ok(None),
            }
        })
    }

    /// Digest of everything COPY could read: for each included entry in path order its path,
    /// type, permission bits, size, link target and content digest. Owners and mtimes are left
    /// out: COPY gives context files root ownership, and a touched file must not miss the cache.
    ///
    /// With `index`, file digests whose stat is unchanged since the last build are taken from
    /// it (nothing is read), the rest are hashed on all cores, and the index is updated.
    pub fn content_digest(&self, index: Option<&Path>) -> io::Result<[u8; 32]> {
        Ok(self.entries(index)?.digest())
    }

    /// Every included entry with what its digest covers (see [`ContextDir::content_digest`]),
    /// for digests of the whole context or of the paths one instruction reads.
    pub fn entries(&self, index: Option<&Path>) -> io::Result<ContextEntries> {
        struct Item {
            rel: PathBuf,
            kind: u8,
            mode: u32,
            size: u64,
            link: Option<PathBuf>,
        }
        let mut items = Vec::new();
        let mut files: Vec<FileJob> = Vec::new();
        let mut listed = self.list_all()?;
        let mut stack = vec![PathBuf::new()];
        while let Some(dir) = stack.pop() {
            let entries = listed.remove(&dir).ok_or_else(|| io::Error::other("directory not listed"))?;
            // Depth-first in sorted order: push reversed so the first name is visited first.
            let mut subdirs = Vec::new();
            for (name, found) in entries {
                let rel = dir.join(&name);
                let md = &found.meta;
                let ft = md.file_type();
                let kind: u8 = if ft.is_dir() {
                    b'd'
                } else if ft.is_symlink() {
                    b'l'
                } else if ft.is_file() {
                    b'f'
                } else if ft.is_fifo() {
                    b'p'
                } else {
                    b'o'
                };
                let link = if kind == b'l' { Some(std::fs::read_link(&found.host_path)?) } else { None };
                match kind {
                    b'f' => files.push((rel.clone(), found.host_path.clone(), Stamp::of(md))),
                    b'd' => subdirs.push(rel.clone()),
                    _ => {}
                }
                items.push(Item { rel, kind, mode: md.mode() & 0o7777, size: md.size(), link });
            }
            for d in subdirs.into_iter().rev() {
                stack.push(d);
            }
        }
        let old = index.map(ContextIndex::load).unwrap_or_default();
        let started = now_secs();
        // The index is rewritten only when something had to be read.
        let (digests, _hashed) = digest_files(&files, &old, index)?;
        let mut out = ContextEntries {
            entries: Vec::with_capacity(items.len()),
            symlinks: HashSet::new(),
            files: files.into_iter().zip(&digests).map(|((rel, _, st), d)| (rel, st, *d)).collect(),
            by_path: OnceLock::new(),
            index: index.map(Path::to_owned),
            now: started,
        };
        let mut digests = digests.into_iter();
        for Item { rel, kind, mode, size, link } in items {
            let mut record = Vec::with_capacity(64);
            let rel_bytes = rel.as_os_str().as_encoded_bytes();
            record.extend_from_slice(&(rel_bytes.len() as u64).to_le_bytes());
            record.extend_from_slice(rel_bytes);
            record.push(kind);
            record.extend_from_slice(&mode.to_le_bytes());
            match kind {
                b'f' => {
                    record.extend_from_slice(&size.to_le_bytes());
                    let d = digests.next().ok_or_else(|| io::Error::other("file digest missing"))?;
                    record.extend_from_slice(&d);
                }
                b'l' => {
                    let t = link.unwrap_or_default();
                    let t = t.as_os_str().as_encoded_bytes();
                    record.extend_from_slice(&(t.len() as u64).to_le_bytes());
                    record.extend_from_slice(t);
                    out.symlinks.insert(rel.clone());
                }
                _ => {}
            }
            out.entries.push((rel, record));
        }
        Ok(out)
    }
}

/// One walk of a context: its included entries in path order (depth first, names sorted), each
/// with the bytes its digest covers (path, type, permission bits, and size and content digest
/// for files or target for symlinks), and what was learnt about its regular files. Cache keys
/// take digests of it; COPY from the context uses it to link files it copied before instead of
/// copying them again (`copy::reuse`); `--explain` names the files that changed.
#[derive(Debug, Default)]
pub struct ContextEntries {
    entries: Vec<(PathBuf, Vec<u8>)>,
    symlinks: HashSet<PathBuf>,
    /// Each regular file's path relative to the root, stamp when digested, and digest.
    files: Vec<(PathBuf, Stamp, [u8; 32])>,
    /// Path → position in `files`, built on first use (a no-op build never needs it).
    by_path: OnceLock<HashMap<PathBuf, usize>>,
    /// The index file the digests were checked against and saved to (COPY's memos live
    /// beside it), when the walk had one.
    index: Option<PathBuf>,
    /// When the digests were taken (seconds since the epoch).
    now: i64,
}

impl ContextEntries {
    /// Each regular file's path relative to the root and digest.
    pub(crate) fn file_digests(&self) -> impl Iterator<Item = (&Path, &[u8; 32])> {
        self.files.iter().map(|(p, _, d)| (p.as_path(), d))
    }

    /// The stamp the regular file `rel` had when it was digested, and its digest.
    pub(crate) fn file(&self, rel: &Path) -> Option<(Stamp, [u8; 32])> {
        let map =
            self.by_path.get_or_init(|| self.files.iter().enumerate().map(|(i, (p, _, _))| (p.clone(), i)).collect());
        let (_, st, d) = &self.files[*map.get(rel)?];
        Some((*st, *d))
    }

    /// The context's index file in the store, when the walk used one.
    pub(crate) fn index(&self) -> Option<&Path> {
        self.index.as_deref()
    }

    /// When the file digests were taken (seconds since the epoch).
    pub(crate) fn digested_at(&self) -> i64 {
        self.now
    }

    /// Tests: the walk as if taken long after every file was written (files a test just wrote
    /// are otherwise too fresh to be vouched for).
    #[cfg(test)]
    pub(crate) fn settled(mut self) -> Self {
        self.now = i64::MAX / 2;
        self
    }

    /// The digest of the whole context.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"rbuild.context.v2\0");
        for (_, record) in &self.entries {
            h.update(record);
        }
        h.finalize().into()
    }

    /// The digest of what reading `sources` can see: for each source path (relative to the
    /// context, wildcards allowed, as `COPY` takes them) the entries at or below the part of
    /// it before the first wildcard. A source whose path runs through a symlink of the context
    /// (which `COPY` follows, possibly anywhere in the context) covers the whole context. A
    /// source that names nothing still counts by its name, so creating it changes the digest.
    pub fn selection_digest(&self, sources: &[String]) -> [u8; 32] {
        let mut prefixes: Vec<PathBuf> = sources.iter().map(|s| literal_prefix(s)).collect();
        prefixes.sort();
        prefixes.dedup();
        let through_symlink = prefixes.iter().any(|p| p.ancestors().any(|a| self.symlinks.contains(a)));
        if prefixes.iter().any(|p| p.as_os_str().is_empty()) || through_symlink {
            return self.digest();
        }
        let mut h = Sha256::new();
        h.update(b"rbuild.context-selection.v1\0");
        for p in &prefixes {
            let bytes = p.as_os_str().as_encoded_bytes();
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        }
        for (rel, record) in &self.entries {
            if prefixes.iter().any(|p| rel.starts_with(p)) {
                h.update(record);
            }
        }
        h.finalize().into()
    }
}

/// The part of a `COPY` source path before its first wildcard, cleaned and relative to the
/// context root (empty: the whole context): what a COPY of it can read lies at or below it.
pub fn literal_prefix(source: &str) -> PathBuf {
    let cleaned = clean(source);
    let mut out = PathBuf::new();
    for part in cleaned.split('/').filter(|p| !p.is_empty()) {
        if part.contains(['*', '?', '[', '\\']) {
            break;
        }
        out.push(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &[&str]) -> IgnoreMatcher {
        IgnoreMatcher::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn dockerignore_rules() {
        let cases: &[(&[&str], &str, bool)] = &[
            (&["*.log"], "a.log", true),
            (&["*.log"], "dir/a.log", false),
            (&["**/*.log"], "dir/a.log", true),
            (&["node_modules"], "node_modules/x/y.js", true),
            (&["/build"], "build/out", true),
            (&["docs/", "!docs/keep.md"], "docs/keep.md", false),
            (&["docs/", "!docs/keep.md"], "docs/other.md", true),
            (&["*", "!src"], "src/main.rs", false),
            (&["a/../b"], "b", true),
            (&["# comment-like is a pattern only in files"], "x", false),
        ];
        for (pats, path, want) in cases {
            assert_eq!(m(pats).is_excluded(path), *want, "{pats:?} on {path}");
        }
        assert_eq!(IgnoreMatcher::parse_file("# c\n\n *.tmp \n!keep.tmp\n"), vec!["*.tmp", "!keep.tmp"]);
    }

    #[test]
    fn content_digest_tracks_content_not_mtime() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        std::fs::write(t.path().join("d/f"), "1").unwrap();
        std::fs::write(t.path().join("x.log"), "1").unwrap();
        let ctx = ContextDir { root: t.path().into(), ignore: m(&["*.log"]) };
        let a = ctx.content_digest(None).unwrap();
        crate::fsmeta::set_mtime(&t.path().join("d/f"), (1, 0)).unwrap();
        assert_eq!(a, ctx.content_digest(None).unwrap());
        std::fs::write(t.path().join("x.log"), "2").unwrap();
        assert_eq!(a, ctx.content_digest(None).unwrap(), "ignored files do not count");
        std::fs::write(t.path().join("d/f"), "2").unwrap();
        assert_ne!(a, ctx.content_digest(None).unwrap());
    }

    #[test]
    fn selections_cover_what_a_copy_can_read() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        for (p, c) in [("src/a.c", "a"), ("src/b.h", "b"), ("docs/readme", "r"), ("pkg.json", "{}")] {
            std::fs::create_dir_all(root.join(p).parent().unwrap()).unwrap();
            std::fs::write(root.join(p), c).unwrap();
        }
        std::os::unix::fs::symlink("src", root.join("alias")).unwrap();
        let ctx = ContextDir { root: root.into(), ignore: m(&[]) };
        let sel = |paths: &[&str]| {
            let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
            ctx.entries(None).unwrap().selection_digest(&paths)
        };
        let before = [sel(&["pkg.json"]), sel(&["src/*.c"]), sel(&["./docs/"]), sel(&["alias/a.c"]), sel(&["new"])];
        // Another file than the ones named: only selections reaching it change.
        std::fs::write(root.join("docs/readme"), "r2").unwrap();
        assert_eq!(sel(&["pkg.json"]), before[0]);
        assert_eq!(sel(&["src/*.c"]), before[1]);
        assert_ne!(sel(&["./docs/"]), before[2]);
        // Through a symlink, COPY may read anything: the whole context counts.
        assert_ne!(sel(&["alias/a.c"]), before[3]);
        assert_eq!(sel(&["alias/a.c"]), ctx.entries(None).unwrap().digest());
        // A wildcard counts everything below its literal part (src/b.h too).
        std::fs::write(root.join("src/b.h"), "b2").unwrap();
        assert_ne!(sel(&["src/*.c"]), before[1]);
        // A path that names nothing yet changes when it appears.
        assert_eq!(sel(&["new"]), before[4]);
        std::fs::write(root.join("new"), "n").unwrap();
        assert_ne!(sel(&["new"]), before[4]);
        // "." and "" are the whole context; the order of sources does not matter.
        assert_eq!(sel(&["."]), ctx.entries(None).unwrap().digest());
        assert_eq!(sel(&["pkg.json", "src"]), sel(&["src", "/pkg.json"]));
        assert_eq!(literal_prefix("/a/../b/[ab]*/c"), PathBuf::from("b"));
    }
}
