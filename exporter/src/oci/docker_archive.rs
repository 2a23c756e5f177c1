//! The `docker save` / `docker load` archive (`-o type=docker,dest=x.tar`).
//!
//! Written in the layout docker 25+ saves: an OCI image layout (`oci-layout`,
//! `index.json`, `blobs/sha256/…`) that also holds docker's `manifest.json`
//! and `repositories`, whose paths point into `blobs/`. Older docker (since
//! 1.10) reads only `manifest.json` and finds what it needs there; skopeo
//! reads it as `docker-archive:` and umoci as an OCI layout.
//!
//! Layers are copied as their (compressed) blobs, not re-encoded as plain
//! tars: `docker load` decompresses whatever it finds (gzip always, zstd
//! since docker 23) and checks the result against the config's diff ids, and
//! skopeo does the same.

use std::collections::BTreeMap;
use std::io::Write;

use oci_spec::image::{Descriptor, ImageManifest, MediaType};
use serde::Serialize;
use serde_json::Value;

use super::blobs::BlobSource;
use super::error::LayoutError;
use super::layout::{index_entry, read_json, write_layout_archive};
use super::mediatype::DOCKER_MANIFEST;

/// One entry of `manifest.json`, fields in docker's order.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestItem {
    config: String,
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Streams a docker archive of the image `manifest` to `out`, tagged with
/// `names` (each normalised the way docker prints it: `app:1.0`,
/// `localhost:5000/app:latest`; names with a digest are listed in
/// `index.json` only, as docker does).
///
/// Entries: `oci-layout`, `index.json` (one entry per name), `manifest.json`,
/// `repositories`, then every blob. Headers are deterministic (mtime 0,
/// uid/gid 0). Each blob's size and sha256 are checked while it is copied;
/// on error the output is incomplete and must be discarded. Returns `out`.
pub fn write_docker_archive<W: Write>(
    out: W,
    manifest: &Descriptor,
    names: &[String],
    blobs: &dyn BlobSource,
) -> Result<W, LayoutError> {
    let media_type = manifest.media_type();
    if *media_type != MediaType::ImageManifest && media_type.as_ref() != DOCKER_MANIFEST {
        return Err(LayoutError::NotAnImageManifest {
            digest: manifest.digest().clone(),
            media_type: media_type.to_string(),
        });
    }
    let image: ImageManifest = read_json(manifest, blobs)?;
    let config: Value = read_json(image.config(), blobs)?;
    let diff_ids: Vec<&str> = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .map(|ids| ids.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if diff_ids.len() != image.layers().len() {
        return Err(LayoutError::LayerCountMismatch {
            digest: manifest.digest().clone(),
            layers: image.layers().len(),
            diff_ids: diff_ids.len(),
        });
    }

    let blob_path = |d: &Descriptor| format!("blobs/{}/{}", d.digest().algorithm().as_ref(), d.digest().digest());
    let mut repo_tags = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    // What `repositories` maps a tag to: docker writes the top layer's diff id.
    let top = diff_ids
        .last()
        .map_or_else(|| manifest.digest().digest().to_owned(), |id| id.rsplit(':').next().unwrap_or(id).to_owned());
    for name in names {
        if let Some((repo, tag)) = familiar_tagged(name) {
            let tagged = format!("{repo}:{tag}");
            if !repo_tags.contains(&tagged) {
                repo_tags.push(tagged);
            }
            repositories.entry(repo).or_default().insert(tag, top.clone());
        }
    }
    let item = ManifestItem {
        config: blob_path(image.config()),
        repo_tags: (!repo_tags.is_empty()).then_some(repo_tags),
        layers: image.layers().iter().map(blob_path).collect(),
    };
    let mut extra = vec![("manifest.json", json_line("manifest.json", &[item])?)];
    if !repositories.is_empty() {
        extra.push(("repositories", json_line("repositories", &repositories)?));
    }

    let entries = if names.is_empty() {
        vec![index_entry(manifest, None)]
    } else {
        names.iter().map(|name| index_entry(manifest, Some(name))).collect()
    };
    write_layout_archive(out, manifest, entries, &extra, blobs)
}

/// Compact JSON plus a newline, as docker's encoder writes these files.
fn json_line<T: Serialize + ?Sized>(what: &'static str, value: &T) -> Result<Vec<u8>, LayoutError> {
    let mut bytes = serde_json::to_vec(value).map_err(|source| LayoutError::Serialize { what, source })?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// `(repository, tag)` as docker prints them: `docker.io/library/` and
/// `docker.io/` dropped, tag `latest` when there is none; `None` for a name
/// pinned by digest (docker lists only tags in `RepoTags`).
fn familiar_tagged(name: &str) -> Option<(String, String)> {
    if name.contains('@') {
        return None;
    }
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match name[slash..].rfind(':') {
        Some(i) => (&name[..slash + i], &name[slash + i + 1..]),
        None => (name, "latest"),
    };
    let repo = ["docker.io/library/", "index.docker.io/library/"]
        .iter()
        .find_map(|p| repo.strip_prefix(p).filter(|r| !r.contains('/')))
        .or_else(|| ["docker.io/", "index.docker.io/"].iter().find_map(|p| repo.strip_prefix(p)))
        .unwrap_or(repo);
    Some((repo.to_owned(), tag.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! familiar {
        ($name:expr => None) => {
            assert_eq!(familiar_tagged($name), None, "{}", $name);
        };
        ($name:expr => $repo:expr, $tag:expr) => {
            assert_eq!(familiar_tagged($name), Some(($repo.to_owned(), $tag.to_owned())), "{}", $name);
        };
    }

    #[test]
    fn familiar_names() {
        familiar!("docker.io/library/app:1.0" => "app", "1.0");
        familiar!("docker.io/library/app" => "app", "latest");
        familiar!("docker.io/me/app:v2" => "me/app", "v2");
        familiar!("app" => "app", "latest");
        familiar!("localhost:5000/app" => "localhost:5000/app", "latest");
        familiar!("localhost:5000/app:t" => "localhost:5000/app", "t");
        familiar!("ghcr.io/o/app:1" => "ghcr.io/o/app", "1");
        familiar!("app@sha256:0000000000000000000000000000000000000000000000000000000000000000" => None);
    }
}
