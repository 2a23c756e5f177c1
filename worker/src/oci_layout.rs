//! Images in a local OCI image layout (`--build-context NAME=oci-layout://DIR[:TAG][@DIGEST]`):
//! the frontend resolves them like registry images ([`resolve`]), and the worker "pulls" them
//! by copying the layer blobs into the store, verified, and unpacking them as any pulled layer.
//!
//! Their references are `oci-layout://DIR[:TAG]` (an absolute directory), pinned by the
//! manifest digest like every image source.

use std::io::Read;
use std::path::{Path, PathBuf};

use rbuild_cache::RecordLayer;
use rbuild_registry::oci_spec::image::{Descriptor, Digest, ImageConfiguration, ImageIndex, ImageManifest};
use rbuild_solver::ir::Platform;

use crate::error::WorkerError;
use crate::LocalWorker;

/// The reference prefix.
pub const PREFIX: &str = "oci-layout://";

/// Largest manifest, index or config read from a layout.
const MAX_DOCUMENT: u64 = 8 << 20;

/// `oci-layout://DIR[:TAG][@DIGEST]` split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutRef {
    /// The layout directory.
    pub dir: PathBuf,
    /// The `org.opencontainers.image.ref.name` to select.
    pub tag: Option<String>,
    /// The manifest (or index) digest to select.
    pub digest: Option<String>,
}

impl LayoutRef {
    /// Parses a reference; `None` when it does not start with `oci-layout://`.
    pub fn parse(reference: &str) -> Option<LayoutRef> {
        let rest = reference.strip_prefix(PREFIX)?;
        let (rest, digest) = match rest.rsplit_once('@') {
            Some((r, d)) if d.contains(':') => (r, Some(d.to_owned())),
            _ => (rest, None),
        };
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (dir, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (&rest[..last_slash + i], Some(rest[last_slash + i + 1..].to_owned())),
            None => (rest, None),
        };
        Some(LayoutRef { dir: PathBuf::from(dir), tag: tag.filter(|t| !t.is_empty()), digest })
    }

    /// The reference without the digest (`oci-layout://DIR[:TAG]`).
    pub fn name(&self) -> String {
        match &self.tag {
            Some(t) => format!("{PREFIX}{}:{t}", self.dir.display()),
            None => format!("{PREFIX}{}", self.dir.display()),
        }
    }
}

/// An image found in a layout.
#[derive(Debug, Clone)]
pub struct LayoutImage {
    /// The manifest's digest.
    pub digest: String,
    /// The parsed config.
    pub config: ImageConfiguration,
    /// The config blob.
    pub raw_config: Vec<u8>,
    manifest: ImageManifest,
}

fn bad(r: &LayoutRef, reason: impl Into<String>) -> WorkerError {
    WorkerError::BadContext { context: r.name(), reason: reason.into() }
}

fn blob_path(dir: &Path, digest: &str) -> Option<PathBuf> {
    let (alg, hex) = digest.split_once(':')?;
    let safe = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric());
    (safe(alg) && safe(hex)).then(|| dir.join("blobs").join(alg).join(hex))
}

fn read_document(r: &LayoutRef, path: &Path) -> Result<Vec<u8>, WorkerError> {
    let file = std::fs::File::open(path).map_err(|source| WorkerError::Io { path: path.to_owned(), source })?;
    let mut out = Vec::new();
    file.take(MAX_DOCUMENT + 1)
        .read_to_end(&mut out)
        .map_err(|source| WorkerError::Io { path: path.to_owned(), source })?;
    if out.len() as u64 > MAX_DOCUMENT {
        return Err(bad(r, format!("{} is too large", path.display())));
    }
    Ok(out)
}

/// Reads blob `digest`, checking the content against it.
fn read_blob(r: &LayoutRef, digest: &str) -> Result<Vec<u8>, WorkerError> {
    let path = blob_path(&r.dir, digest).ok_or_else(|| bad(r, format!("invalid digest {digest}")))?;
    let bytes = read_document(r, &path)?;
    let parsed: Digest = digest.parse().map_err(|_| bad(r, format!("invalid digest {digest}")))?;
    let mismatch = || bad(r, format!("blob {digest} does not match its digest"));
    let mut hasher = rbuild_registry::DigestHasher::for_digest(&parsed).map_err(|_| mismatch())?;
    hasher.update(&bytes);
    rbuild_registry::verify(&parsed, hasher).map_err(|_| mismatch())?;
    Ok(bytes)
}

fn is_index(media_type: &str) -> bool {
    media_type.ends_with("image.index.v1+json") || media_type.ends_with("manifest.list.v2+json")
}

/// Finds the image `r` names for `platform`: by digest, else by tag, else the layout's only
/// entry; an index is resolved to the platform's manifest.
pub fn resolve(r: &LayoutRef, platform: &Platform) -> Result<LayoutImage, WorkerError> {
    let index: ImageIndex = serde_json::from_slice(&read_document(r, &r.dir.join("index.json"))?)
        .map_err(|e| bad(r, format!("index.json: {e}")))?;
    let entries = index.manifests();
    let chosen: Descriptor = if let Some(d) = &r.digest {
        match entries.iter().find(|e| e.digest().to_string() == *d) {
            Some(e) => e.clone(),
            // A digest deeper in the layout (a platform manifest of an index).
            None => Descriptor::new(
                rbuild_registry::oci_spec::image::MediaType::ImageManifest,
                0,
                d.parse::<Digest>().map_err(|_| bad(r, format!("invalid digest {d}")))?,
            ),
        }
    } else {
        let tagged: Vec<&Descriptor> = match &r.tag {
            Some(t) => entries
                .iter()
                .filter(|e| {
                    e.annotations()
                        .as_ref()
                        .and_then(|a| a.get("org.opencontainers.image.ref.name"))
                        .is_some_and(|n| n == t)
                })
                .collect(),
            None => entries.iter().collect(),
        };
        match tagged.as_slice() {
            [one] => (*one).clone(),
            [] => return Err(bad(r, "no image with that tag in index.json")),
            _ => return Err(bad(r, "several images in index.json: add :TAG or @DIGEST")),
        }
    };
    let want = rbuild_registry::Platform::new(&platform.os, &platform.architecture, platform.variant.as_deref());
    let mut digest = chosen.digest().to_string();
    for _ in 0..4 {
        let bytes = read_blob(r, &digest)?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| bad(r, format!("{digest}: {e}")))?;
        let media_type = value.get("mediaType").and_then(|m| m.as_str()).unwrap_or_default().to_owned();
        if is_index(&media_type) || (media_type.is_empty() && value.get("manifests").is_some()) {
            let nested: ImageIndex = serde_json::from_slice(&bytes).map_err(|e| bad(r, format!("{digest}: {e}")))?;
            let pick = nested.manifests().iter().find(|m| {
                m.platform().as_ref().is_some_and(|p| {
                    let candidate = rbuild_registry::Platform::new(
                        &p.os().to_string(),
                        &p.architecture().to_string(),
                        p.variant().as_deref(),
                    );
                    want.matches(&candidate)
                })
            });
            digest = pick.ok_or_else(|| bad(r, format!("no image for platform {platform}")))?.digest().to_string();
            continue;
        }
        let manifest: ImageManifest =
            serde_json::from_slice(&bytes).map_err(|e| bad(r, format!("manifest {digest}: {e}")))?;
        let raw_config = read_blob(r, manifest.config().digest().as_ref())?;
        let config: ImageConfiguration =
            serde_json::from_slice(&raw_config).map_err(|e| bad(r, format!("config: {e}")))?;
        return Ok(LayoutImage { digest, config, raw_config, manifest });
    }
    Err(bad(r, "indexes nested too deeply"))
}

/// Copies the image's layers into the store and unpacks them; returns the chain, lowest first.
pub(crate) async fn pull(
    w: &LocalWorker,
    reference: &str,
    digest: Option<&str>,
    platform: &Platform,
) -> Result<Vec<RecordLayer>, WorkerError> {
    let mut r =
        LayoutRef::parse(reference).ok_or_else(|| WorkerError::Internal(format!("not a layout: {reference}")))?;
    if let Some(d) = digest {
        r.digest = Some(d.to_owned());
    }
    let (r2, p2) = (r.clone(), platform.clone());
    let image = tokio::task::spawn_blocking(move || resolve(&r2, &p2))
        .await
        .map_err(|e| WorkerError::Internal(e.to_string()))??;
    let diff_ids = image.config.rootfs().diff_ids().clone();
    let layers = image.manifest.layers().clone();
    if diff_ids.len() != layers.len() {
        return Err(bad(&r, format!("{} layers but {} diff ids in the config", layers.len(), diff_ids.len())));
    }
    let mut chain = Vec::with_capacity(layers.len());
    for (desc, diff_id) in layers.iter().zip(&diff_ids) {
        let id = crate::pull::snapshot_id(diff_id)?;
        if !w.store.has_snapshot(&id) {
            if !w.store.has_blob(desc.digest())? {
                let src = blob_path(&r.dir, desc.digest().as_ref())
                    .ok_or_else(|| bad(&r, format!("invalid digest {}", desc.digest())))?;
                let mut file =
                    std::fs::File::open(&src).map_err(|source| WorkerError::Io { path: src.clone(), source })?;
                let mut writer = w.store.blob_writer()?;
                std::io::copy(&mut file, &mut writer)
                    .map_err(|source| WorkerError::Io { path: src.clone(), source })?;
                // Verified against the descriptor before it becomes visible.
                writer.commit(Some(desc.digest()))?;
            }
            crate::pull::unpack_layer(w, desc, diff_id, &id).await?;
        }
        chain.push(RecordLayer { id, producer: None });
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse() {
        let p = |s: &str| LayoutRef::parse(s).unwrap();
        assert_eq!(p("oci-layout:///srv/l"), LayoutRef { dir: "/srv/l".into(), tag: None, digest: None });
        assert_eq!(p("oci-layout:///srv/l:v1").tag.as_deref(), Some("v1"));
        let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let r = p(&format!("oci-layout:///a:b/l:v1@{d}"));
        assert_eq!((r.dir, r.tag.as_deref(), r.digest.as_deref()), (PathBuf::from("/a:b/l"), Some("v1"), Some(d)));
        assert_eq!(p("oci-layout:///srv/l:v1").name(), "oci-layout:///srv/l:v1");
        assert!(LayoutRef::parse("docker.io/x").is_none());
        assert!(blob_path(Path::new("/l"), "sha256:../../etc").is_none());
    }
}
