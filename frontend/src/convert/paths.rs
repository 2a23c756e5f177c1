//! Path arithmetic as BuildKit does it on Linux (Go's `path.Clean`/`path.Join` and
//! `system.NormalizePath`).

/// Go's `path.Clean`: lexical shortening, `""` becomes `"."`.
pub(crate) fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".to_owned();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// Go's `path.Join`: joins the non-empty elements and cleans; `""` when all are empty.
pub(crate) fn join(parts: &[&str]) -> String {
    let nonempty: Vec<&str> = parts.iter().copied().filter(|p| !p.is_empty()).collect();
    if nonempty.is_empty() {
        return String::new();
    }
    clean(&nonempty.join("/"))
}

/// BuildKit's `NormalizePath(parent, new, "linux", keep_slash)`: a relative `new` is joined to
/// `parent`; an absolute one is kept as written.
pub(crate) fn normalize(parent: &str, new: &str, keep_slash: bool) -> String {
    let mut parent = if parent.is_empty() { "/".to_owned() } else { parent.to_owned() };
    if !parent.starts_with('/') {
        parent = join(&["/", &parent]);
    }
    let mut out = if new.is_empty() { parent.clone() } else { new.to_owned() };
    if !out.starts_with('/') {
        out = join(&[&parent, &out]);
    }
    if keep_slash {
        if new.ends_with('/') && !out.ends_with('/') {
            out.push('/');
        } else if new.ends_with("/.") {
            if out != "/" {
                out.push('/');
            }
            out.push('.');
        }
    }
    out
}

/// A `COPY`/`ADD` destination resolved against the working directory, trailing `/` kept.
pub(crate) fn relative_to_workdir(workdir: &str, dest: &str) -> String {
    if dest.starts_with('/') {
        return normalize("/", dest, true);
    }
    let dest = if dest == "." || dest.is_empty() { "./" } else { dest };
    normalize(workdir, dest, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! case {
        ($f:expr, $want:expr) => {
            assert_eq!($f, $want);
        };
    }

    #[test]
    fn go_clean() {
        case!(clean("a/b/../c"), "a/c");
        case!(clean("/../a//b/./"), "/a/b");
        case!(clean("../../a"), "../../a");
        case!(clean(""), ".");
        case!(clean("/"), "/");
        case!(join(&["/app", "../x"]), "/x");
        case!(join(&["", ""]), "");
    }

    #[test]
    fn workdir_and_dest() {
        case!(normalize("/app", "src", false), "/app/src");
        case!(normalize("/app", "/abs/../x", false), "/abs/../x");
        case!(normalize("", "rel", false), "/rel");
        case!(normalize("/app", "", false), "/app");
        case!(relative_to_workdir("/app", "."), "/app/");
        case!(relative_to_workdir("/app", "sub/"), "/app/sub/");
        case!(relative_to_workdir("/app", "sub/."), "/app/sub/.");
        case!(relative_to_workdir("/app", "f"), "/app/f");
        case!(relative_to_workdir("/", "."), "/");
        case!(relative_to_workdir("/app", "/x/"), "/x/");
    }
}
