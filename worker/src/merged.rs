//! A read-only view of a stack of overlay-format diff directories, as overlayfs would show them,
//! without mounting anything.
//!
//! Rules (overlayfs's): an upper entry hides every lower entry of the same path; a character
//! device 0:0 is a whiteout (the path does not exist); a directory with the opaque xattr hides
//! the lower directories' contents; a non-directory hides whatever is below it; directories of
//! several layers merge.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::Metadata;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

/// Most symlinks followed while resolving one path (Linux's own limit).
const MAX_SYMLINKS: usize = 40;

/// Is this entry an overlay whiteout?
pub fn is_whiteout(md: &Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

/// Does this directory hide the lower layers' contents?
pub fn is_opaque(path: &Path) -> bool {
    for name in ["trusted.overlay.opaque", "user.overlay.opaque"] {
        if let Ok(Some(v)) = xattr_get(path, name) {
            if v == b"y" {
                return true;
            }
        }
    }
    false
}

fn xattr_get(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    match nix_lgetxattr(path, name) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.raw_os_error() == Some(libc::ENODATA) || e.raw_os_error() == Some(libc::ENOTSUP) => Ok(None),
        Err(e) => Err(e),
    }
}

fn nix_lgetxattr(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    // (rustix's `lgetxattr` with an empty buffer returns 0 instead of the size: ask for the
    // size with `lgetxattr_query`.)
    let len = rustix::fs::lgetxattr_query(path, name).map_err(io::Error::from)?;
    let mut buf = vec![0u8; len];
    let n = rustix::fs::lgetxattr(path, name, &mut buf).map_err(io::Error::from)?;
    buf.truncate(n);
    Ok(buf)
}

/// An entry found in the view: which layer holds it and its metadata there.
#[derive(Debug, Clone)]
pub struct Found {
    /// Path on the host of the entry inside its layer.
    pub host_path: PathBuf,
    /// Its metadata (lstat).
    pub meta: Metadata,
}

/// Layers, topmost first.
#[derive(Debug, Clone, Default)]
pub struct MergedView {
    layers: Vec<PathBuf>,
}

impl MergedView {
    /// A view of `layers` (topmost first). An empty list is an empty filesystem.
    pub fn new(layers: Vec<PathBuf>) -> MergedView {
        MergedView { layers }
    }

    /// The directories that hold `rel` (a relative path with normal components only): every
    /// layer's directory for a merged directory, or the single top entry for anything else.
    fn candidates(&self, rel: &Path) -> io::Result<Vec<Found>> {
        let mut current: Vec<PathBuf> = self.layers.clone();
        let mut found: Vec<Found> = Vec::new();
        let comps: Vec<_> = rel.components().filter(|c| matches!(c, Component::Normal(_))).collect();
        if comps.is_empty() {
            for l in &self.layers {
                if let Ok(meta) = std::fs::symlink_metadata(l) {
                    found.push(Found { host_path: l.clone(), meta });
                }
                if is_opaque(l) {
                    break;
                }
            }
            return Ok(found);
        }
        for (i, comp) in comps.iter().enumerate() {
            let last = i + 1 == comps.len();
            found.clear();
            let mut next = Vec::new();
            for dir in &current {
                let p = dir.join(comp);
                let meta = match std::fs::symlink_metadata(&p) {
                    Ok(m) => m,
                    Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) => {
                        continue
                    }
                    Err(e) => return Err(e),
                };
                if is_whiteout(&meta) {
                    break;
                }
                if !meta.is_dir() {
                    // A non-directory hides everything below; below a directory it is hidden.
                    if next.is_empty() {
                        found.push(Found { host_path: p, meta });
                    }
                    break;
                }
                let opaque = is_opaque(&p);
                next.push(p.clone());
                found.push(Found { host_path: p, meta });
                if opaque {
                    break;
                }
            }
            if next.is_empty() {
                // Either nothing, or a non-directory: valid only as the last component.
                return Ok(if last { found } else { Vec::new() });
            }
            current = next;
        }
        Ok(found)
    }

    /// The entry at `rel`, not following a final symlink.
    pub fn lstat(&self, rel: &Path) -> io::Result<Option<Found>> {
        Ok(self.candidates(rel)?.into_iter().next())
    }

    /// Entries of the directory `rel`, merged over layers, sorted by name.
    pub fn read_dir(&self, rel: &Path) -> io::Result<Vec<(OsString, Found)>> {
        let dirs = self.candidates(rel)?;
        let mut out: BTreeMap<OsString, Option<Found>> = BTreeMap::new();
        for d in dirs.iter().filter(|d| d.meta.is_dir()) {
            for entry in std::fs::read_dir(&d.host_path)? {
                let entry = entry?;
                let name = entry.file_name();
                if out.contains_key(&name) {
                    continue;
                }
                let meta = std::fs::symlink_metadata(entry.path())?;
                // A whiteout hides the name in lower layers: remember it as None.
                let v = if is_whiteout(&meta) { None } else { Some(Found { host_path: entry.path(), meta }) };
                out.insert(name, v);
            }
        }
        Ok(out.into_iter().filter_map(|(n, f)| f.map(|f| (n, f))).collect())
    }

    /// Resolves `path` inside the view's root, following symlinks (also in the final component
    /// when `follow_last`), never leaving the root: `..` at the root stays at the root and
    /// absolute link targets are taken relative to the root. Returns the resolved relative path.
    pub fn resolve(&self, path: &Path, follow_last: bool) -> io::Result<PathBuf> {
        resolve_scoped(path, follow_last, |rel| {
            Ok(match self.lstat(rel)? {
                Some(f) if f.meta.file_type().is_symlink() => Some(std::fs::read_link(&f.host_path)?),
                _ => None,
            })
        })
    }
}

/// Resolves `path` within a root, with `readlink(rel)` returning the target when `rel` is a
/// symlink. The result is a relative path of normal components only.
pub fn resolve_scoped(
    path: &Path,
    follow_last: bool,
    mut readlink: impl FnMut(&Path) -> io::Result<Option<PathBuf>>,
) -> io::Result<PathBuf> {
    let mut pending: Vec<OsString> = components_rev(path);
    let mut resolved = PathBuf::new();
    let mut hops = 0;
    while let Some(comp) = pending.pop() {
        if comp == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&comp);
        let is_last = pending.is_empty();
        if is_last && !follow_last {
            resolved = candidate;
            break;
        }
        match readlink(&candidate)? {
            Some(target) => {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                pending.extend(components_rev(&target));
            }
            None => resolved = candidate,
        }
    }
    Ok(resolved)
}

/// Components of `p` (normal and `..`), reversed so they can be popped in order.
fn components_rev(p: &Path) -> Vec<OsString> {
    let mut v: Vec<OsString> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect();
    v.reverse();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn upper_hides_lower_and_dirs_merge() {
        let t = tempfile::tempdir().unwrap();
        let (lo, up) = (t.path().join("lo"), t.path().join("up"));
        std::fs::create_dir_all(lo.join("etc")).unwrap();
        std::fs::create_dir_all(up.join("etc")).unwrap();
        std::fs::write(lo.join("etc/a"), "lower").unwrap();
        std::fs::write(lo.join("etc/b"), "lower").unwrap();
        std::fs::write(up.join("etc/b"), "upper").unwrap();
        std::fs::write(up.join("etc/c"), "upper").unwrap();
        let v = MergedView::new(vec![up.clone(), lo.clone()]);
        let names: Vec<_> = v.read_dir(Path::new("etc")).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let b = v.lstat(Path::new("etc/b")).unwrap().unwrap();
        assert_eq!(std::fs::read_to_string(b.host_path).unwrap(), "upper");
        assert!(v.lstat(Path::new("etc/zz")).unwrap().is_none());
        // A file in the upper layer hides a lower directory's children.
        std::fs::write(up.join("d"), "").unwrap();
        std::fs::create_dir_all(lo.join("d")).unwrap();
        std::fs::write(lo.join("d/x"), "").unwrap();
        assert!(v.lstat(Path::new("d/x")).unwrap().is_none());
    }

    #[test]
    fn opaque_directories_hide_lower_contents() {
        let t = tempfile::tempdir().unwrap();
        let (lo, up) = (t.path().join("lo"), t.path().join("up"));
        std::fs::create_dir_all(lo.join("d")).unwrap();
        std::fs::create_dir_all(up.join("d")).unwrap();
        std::fs::write(lo.join("d/old"), "").unwrap();
        std::fs::write(up.join("d/new"), "").unwrap();
        let v = MergedView::new(vec![up.clone(), lo.clone()]);
        assert_eq!(v.read_dir(Path::new("d")).unwrap().len(), 2, "merged while not opaque");
        // The user namespace's flavour, which any user may set (the trusted one needs root).
        match rustix::fs::lsetxattr(up.join("d"), "user.overlay.opaque", b"y", rustix::fs::XattrFlags::empty()) {
            Ok(()) => {}
            Err(e) => {
                eprintln!("skipping: this filesystem takes no user xattrs ({e})");
                return;
            }
        }
        assert!(is_opaque(&up.join("d")));
        let names: Vec<_> = v.read_dir(Path::new("d")).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["new"]);
        assert!(v.lstat(Path::new("d/old")).unwrap().is_none());
    }

    #[test]
    fn scoped_resolution_never_leaves_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("r");
        std::fs::create_dir_all(root.join("real")).unwrap();
        symlink("/real", root.join("abs")).unwrap();
        symlink("../../../../real", root.join("up")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        let v = MergedView::new(vec![root]);
        assert_eq!(v.resolve(Path::new("/abs/f"), true).unwrap(), Path::new("real/f"));
        assert_eq!(v.resolve(Path::new("up/f"), true).unwrap(), Path::new("real/f"));
        assert_eq!(v.resolve(Path::new("/abs"), false).unwrap(), Path::new("abs"));
        assert_eq!(v.resolve(Path::new("../../x"), true).unwrap(), Path::new("x"));
        assert!(v.resolve(Path::new("loop"), true).is_err());
    }
}
