//! The merged view of a stack of overlay-format diff directories, walked in
//! the same deterministic order as `layer::pack` (a directory, then its
//! children sorted by name bytes).
//!
//! Overlay rules, per name in a merged directory, looking at the layers that
//! contribute to that directory from the top down: the first layer with an
//! entry of that name decides. A whiteout (char device 0:0) deletes it. A
//! non-directory is taken as is. A directory merges with the same-named
//! directories of the layers below it, down to the first layer where the
//! name is not a directory (a file or whiteout hides everything beneath) or
//! down to, and including, the first layer where that directory is opaque.
//! The top-most directory gives the merged directory's metadata.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::io::Errno;

use crate::layer::{children, Kind, Node, PackError, OPAQUE_XATTRS};

/// One entry of the merged tree.
#[derive(Debug)]
pub(crate) struct Merged {
    /// The winning entry (top-most layer that has it).
    pub(crate) node: Node,
    /// For a directory: the directories merged into it, top first
    /// (`node.fs_path` first). Empty for anything else.
    pub(crate) layers: Vec<PathBuf>,
}

enum State {
    Deleted,
    Leaf(Node),
    Dir { node: Node, layers: Vec<PathBuf>, closed: bool },
}

/// Calls `visit` on every entry of the merged tree of `layers_top_first`
/// (the root itself excluded), parents before children, siblings by name.
pub(crate) fn walk_merged<E: From<PackError>>(
    layers_top_first: &[PathBuf],
    visit: impl FnMut(&Merged) -> Result<(), E>,
) -> Result<(), E> {
    walk_merged_under(layers_top_first, &[], visit)
}

/// [`walk_merged`] with every archive path under `root_tar` (`linux_arm64/bin/sh`); empty for
/// the top.
pub(crate) fn walk_merged_under<E: From<PackError>>(
    layers_top_first: &[PathBuf],
    root_tar: &[u8],
    mut visit: impl FnMut(&Merged) -> Result<(), E>,
) -> Result<(), E> {
    // Explicit stack: layers can nest directories deeper than recursion allows.
    let mut stack = merged_children(layers_top_first, root_tar)?;
    stack.reverse();
    while let Some(entry) = stack.pop() {
        visit(&entry)?;
        if entry.node.kind == Kind::Dir {
            let mut kids = merged_children(&entry.layers, &entry.node.tar_path)?;
            kids.reverse();
            stack.extend(kids);
        }
    }
    Ok(())
}

/// The merged children of one directory, given the directories (top first)
/// that contribute to it.
fn merged_children(dirs: &[PathBuf], dir_tar: &[u8]) -> Result<Vec<Merged>, PackError> {
    let mut by_name: BTreeMap<Vec<u8>, State> = BTreeMap::new();
    for dir in dirs {
        for node in children(dir, dir_tar)? {
            let name = node.fs_path.file_name().map(|n| n.as_bytes().to_vec()).unwrap_or_default();
            match by_name.get_mut(&name) {
                None => {
                    let state = match node.kind {
                        Kind::Whiteout => State::Deleted,
                        Kind::Dir => {
                            State::Dir { closed: is_opaque(&node.fs_path)?, layers: vec![node.fs_path.clone()], node }
                        }
                        _ => State::Leaf(node),
                    };
                    by_name.insert(name, state);
                }
                Some(State::Dir { layers, closed: closed @ false, .. }) => {
                    if node.kind == Kind::Dir {
                        *closed = is_opaque(&node.fs_path)?;
                        layers.push(node.fs_path);
                    } else {
                        *closed = true;
                    }
                }
                Some(_) => {}
            }
        }
    }
    Ok(by_name
        .into_values()
        .filter_map(|state| match state {
            State::Deleted => None,
            State::Leaf(node) => Some(Merged { node, layers: Vec::new() }),
            State::Dir { node, layers, .. } => Some(Merged { node, layers }),
        })
        .collect())
}

/// Whether overlayfs treats the directory at `path` as opaque.
fn is_opaque(path: &Path) -> Result<bool, PackError> {
    for name in OPAQUE_XATTRS {
        let mut value = [0u8; 4];
        match rustix::fs::lgetxattr(path, name, &mut value) {
            Ok(n) if &value[..n] == b"y" => return Ok(true),
            Ok(_) | Err(Errno::NODATA | Errno::NOTSUP | Errno::RANGE) => {}
            Err(e) => return Err(PackError::ReadXattrs { path: path.to_path_buf(), source: e.into() }),
        }
    }
    Ok(false)
}
