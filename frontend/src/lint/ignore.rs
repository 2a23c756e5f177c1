//! `CopyIgnoredFile`: does `.dockerignore` exclude a path `COPY`/`ADD` reads from the build
//! context? BuildKit's `validateCopySourcePath` with moby/patternmatcher's
//! `MatchesOrParentMatches`: a pattern matches the path or one of its parent directories; the
//! last matching pattern decides. With `!` exceptions in the file the check is skipped (whether
//! a path ends up excluded then depends on what is below it).

use globset::{GlobBuilder, GlobMatcher};

/// Go's `filepath.Clean` for slash paths.
fn clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// A `.dockerignore` line as the matcher sees it: cleaned, without a leading `/`.
fn pattern_text(line: &str) -> String {
    let c = clean(line.trim());
    match c.strip_prefix('/') {
        Some(rest) if !rest.is_empty() => rest.to_owned(),
        _ => c,
    }
}

fn compile(pattern: &str) -> Option<GlobMatcher> {
    GlobBuilder::new(pattern).literal_separator(true).backslash_escape(true).build().ok().map(|g| g.compile_matcher())
}

/// True when the ignore `patterns` (the `.dockerignore` lines) exclude `src`, a source path of
/// `COPY`/`ADD` after variable expansion.
pub(crate) fn copy_ignored(patterns: &[String], src: &str) -> bool {
    let patterns: Vec<&String> = patterns.iter().filter(|p| !p.trim().is_empty()).collect();
    if patterns.is_empty() || patterns.iter().any(|p| p.trim_start().starts_with('!')) {
        return false;
    }
    let texts: Vec<String> = patterns.iter().map(|p| pattern_text(p)).collect();
    let src = clean(src);
    if src == "." || src == "/" {
        // The context root is only "excluded" by patterns that exclude everything in it.
        return texts.iter().any(|t| matches!(t.as_str(), "*" | "**" | "**/*"));
    }
    let parts: Vec<&str> = src.split('/').collect();
    texts
        .iter()
        .filter_map(|t| compile(t))
        .any(|m| m.is_match(&src) || (1..parts.len()).any(|n| parts.get(..n).is_some_and(|p| m.is_match(p.join("/")))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignored(patterns: &[&str], src: &str) -> bool {
        let p: Vec<String> = patterns.iter().map(|s| (*s).to_owned()).collect();
        copy_ignored(&p, src)
    }

    #[test]
    fn matches_paths_and_parents() {
        assert!(ignored(&["Dockerfile"], "Dockerfile"));
        assert!(ignored(&["Dockerfile"], "./Dockerfile"));
        assert!(ignored(&["/build"], "build/out/app"));
        assert!(ignored(&["*.log"], "x.log"));
        assert!(!ignored(&["*.log"], "dir/x.log"), "* does not cross /");
        assert!(ignored(&["**/*.log"], "dir/x.log"));
        assert!(!ignored(&["foobar"], "Dockerfile"));
        assert!(!ignored(&[], "Dockerfile"));
    }

    #[test]
    fn exceptions_and_context_root() {
        assert!(!ignored(&["**", "!Dockerfile"], "Dockerfile"), "exceptions turn the check off");
        assert!(!ignored(&[".*"], "."));
        assert!(ignored(&["*"], "."));
        assert!(!ignored(&["node_modules"], "."));
        assert_eq!(clean("a/./b/../c/"), "a/c");
        assert_eq!(clean("./"), ".");
    }
}
