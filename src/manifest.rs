//! `rbuild manifest create NAME SRC...`: one multi-platform image (an image index) from images
//! built separately, on different runners say, as `docker buildx imagetools create -t NAME
//! SRC...` makes it. A source is a name in the local store or a registry reference; a source
//! that is itself an index contributes each of its manifests. The index is stored under NAME in
//! the local store (with everything it needs), or with `--push` pushed to NAME's registry
//! (copying there what that repository lacks).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use rbuild_cache::{ImageRecord, Store};
use rbuild_exporter::oci::{build_index_as, BuiltIndex, DOCKER_MANIFEST_LIST};
use rbuild_exporter::oci_spec::image::{
    Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType, Platform, PlatformBuilder,
};
use rbuild_registry::{Client, PushBlobOptions, Reference};
use rbuild_worker::LocalWorker;

use crate::cli::ManifestCreateArgs;
use crate::push::{by_digest, parse_document, Document};
use crate::render::UserError;

/// An index over `manifests`: OCI's, or docker's manifest list when `oci_mediatypes` is false.
pub fn index_of(manifests: Vec<Descriptor>, oci_mediatypes: bool) -> Result<BuiltIndex> {
    let media_type = if oci_mediatypes { MediaType::ImageIndex } else { MediaType::from(DOCKER_MANIFEST_LIST) };
    build_index_as(manifests, media_type).context("building the image index")
}

/// Where a manifest of the new index comes from.
#[derive(Debug, Clone)]
enum Origin {
    /// The local store has it, and everything it refers to.
    Store,
    /// This registry repository has it.
    Registry(Reference),
}

/// One manifest of the new index.
#[derive(Debug, Clone)]
struct Entry {
    /// Its descriptor, platform set.
    desc: Descriptor,
    origin: Origin,
    /// The source as the user named it, for messages.
    source: String,
}

/// `rbuild manifest create`.
pub async fn create(root: PathBuf, args: ManifestCreateArgs) -> Result<()> {
    let name = crate::export::normalize_tags(std::slice::from_ref(&args.name))?.remove(0);
    let target: Reference = name.parse().map_err(|e| UserError(format!("invalid image name {:?}: {e}", args.name)))?;
    let store = Arc::new(Store::open(&root).with_context(|| format!("opening the store at {}", root.display()))?);
    let client = crate::push::client(&args.insecure_registries)?;

    let mut entries: Vec<Entry> = Vec::new();
    for source in &args.sources {
        for entry in collect(&store, &client, source).await? {
            if entries.iter().any(|e| e.desc.digest() == entry.desc.digest()) {
                continue;
            }
            entries.push(entry);
        }
    }
    // Attestation manifests (of sources that are indexes) come after every image, as
    // BuildKit lists them; they are not images, so never a platform's duplicate.
    entries.sort_by_key(|e| rbuild_exporter::oci::is_attestation(&e.desc));
    let mut seen: HashMap<String, &Entry> = HashMap::new();
    for e in entries.iter().filter(|e| !rbuild_exporter::oci::is_attestation(&e.desc)) {
        if let Some(platform) = e.desc.platform() {
            let key = platform_text(platform);
            if let Some(first) = seen.insert(key.clone(), e) {
                eprintln!(
                    "warning: {} and {} both have an image for {key}; the index lists both",
                    first.source, e.source
                );
            }
        }
    }
    // All docker schema 2 manifests make a docker manifest list, else an OCI index (buildx).
    let all_docker = entries.iter().all(|e| e.desc.media_type().as_ref() == rbuild_registry::DOCKER_MANIFEST_V2);
    let index = index_of(entries.iter().map(|e| e.desc.clone()).collect(), !all_docker)?;

    if args.dry_run {
        let value: serde_json::Value = serde_json::from_slice(&index.index_json)?;
        #[allow(clippy::print_stdout)]
        {
            println!("{}", serde_json::to_string_pretty(&value)?);
        }
        return Ok(());
    }
    let exe = std::env::current_exe().context("locating the rbuild binary")?;
    let worker = LocalWorker::new(store.clone(), client.clone(), exe, HashMap::new());
    if args.push {
        for e in &entries {
            copy_to_registry(&worker, &client, &store, e, &target).await?;
        }
        let digest = client
            .push_manifest(&target, index.index.media_type(), index.index_json.clone().into())
            .await
            .with_context(|| format!("pushing the index to {target}"))?;
        eprintln!("pushed {target}@{digest}");
        return Ok(());
    }
    let mut size = 0;
    for e in &entries {
        size += copy_to_store(&worker, &client, &store, e).await?;
    }
    if !store.has_blob(index.index.digest())? {
        store.put_blob(&index.index_json, Some(index.index.digest()))?;
    }
    store.put_image(&ImageRecord {
        name: name.clone(),
        manifest: index.index.digest().clone(),
        manifest_size: index.index.size(),
        config: index.index.digest().clone(),
        size,
        created: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64),
    })?;
    eprintln!("naming to {name} done");
    eprintln!("{}", index.index.digest());
    Ok(())
}

/// `os/arch[/variant]`.
pub(crate) fn platform_text(p: &Platform) -> String {
    let mut s = format!("{}/{}", p.os(), p.architecture());
    if let Some(v) = p.variant() {
        s.push('/');
        s.push_str(v);
    }
    s
}

/// The manifests `source` stands for: a local image (or index), else a registry's.
async fn collect(store: &Store, client: &Client, source: &str) -> Result<Vec<Entry>> {
    let full = crate::export::normalize_tags(&[source.to_owned()])?.remove(0);
    if let Some(rec) = store.get_image(&full)? {
        let bytes = store.read_blob(&rec.manifest)?;
        return match parse_document(&bytes)? {
            (Document::Index(index), _) => index
                .manifests()
                .iter()
                .map(|d| {
                    let desc = match d.platform() {
                        Some(_) => d.clone(),
                        None => with_platform(d.clone(), &store.read_blob(d.digest())?, |c| store.read_blob(c))?,
                    };
                    Ok(Entry { desc, origin: Origin::Store, source: source.to_owned() })
                })
                .collect(),
            (Document::Manifest(manifest), media_type) => {
                let desc = Descriptor::new(media_type, rec.manifest_size, rec.manifest.clone());
                let config = store.read_blob(manifest.config().digest())?;
                let desc = set_platform(desc, &config)?;
                Ok(vec![Entry { desc, origin: Origin::Store, source: source.to_owned() }])
            }
        };
    }
    let reference: Reference = source.parse().map_err(|e| UserError(format!("invalid image name {source:?}: {e}")))?;
    let raw = client.fetch_image_or_index(&reference).await.map_err(|e| {
        UserError(format!(
            "{source}: not in the local store, and the registry cannot give it: {}",
            crate::render::error_chain(&e)
        ))
    })?;
    let origin = Origin::Registry(reference.clone());
    if raw.is_index() {
        let index: ImageIndex = serde_json::from_slice(&raw.bytes).with_context(|| format!("reading {source}"))?;
        return Ok(index
            .manifests()
            .iter()
            .map(|d| Entry { desc: d.clone(), origin: origin.clone(), source: source.to_owned() })
            .collect());
    }
    let manifest: ImageManifest = serde_json::from_slice(&raw.bytes).with_context(|| format!("reading {source}"))?;
    let mut config = Vec::new();
    client
        .fetch_blob(&reference, manifest.config(), &mut config)
        .await
        .with_context(|| format!("reading the config of {source}"))?;
    let desc = Descriptor::new(raw.media_type.clone(), raw.bytes.len() as u64, raw.digest.clone());
    Ok(vec![Entry { desc: set_platform(desc, &config)?, origin, source: source.to_owned() }])
}

/// `desc` with the platform its manifest's config names, the config read through `read`.
fn with_platform(
    desc: Descriptor,
    manifest: &[u8],
    read: impl Fn(&rbuild_exporter::oci_spec::image::Digest) -> rbuild_cache::Result<Vec<u8>>,
) -> Result<Descriptor> {
    let manifest: ImageManifest = serde_json::from_slice(manifest).context("reading an image manifest")?;
    set_platform(desc, &read(manifest.config().digest())?)
}

/// `desc` with the platform of the image config `config`.
fn set_platform(mut desc: Descriptor, config: &[u8]) -> Result<Descriptor> {
    let config: ImageConfiguration = serde_json::from_slice(config).context("reading an image config")?;
    let mut platform = PlatformBuilder::default().architecture(config.architecture().clone()).os(config.os().clone());
    if let Some(v) = config.variant() {
        platform = platform.variant(v.clone());
    }
    desc.set_platform(Some(platform.build().context("the platform of an image config")?));
    Ok(desc)
}

/// Makes sure `target`'s repository has `entry`'s manifest and every blob it names.
async fn copy_to_registry(
    worker: &LocalWorker,
    client: &Client,
    store: &Store,
    entry: &Entry,
    target: &Reference,
) -> Result<()> {
    let child = by_digest(target, &entry.desc)?;
    let (bytes, from) = match &entry.origin {
        Origin::Store => (store.read_blob(entry.desc.digest())?, None),
        Origin::Registry(source) => {
            if source.registry() == target.registry() && source.repository() == target.repository() {
                // Already there, with its blobs.
                return Ok(());
            }
            let raw = client.fetch_image_or_index(&by_digest(source, &entry.desc)?).await?;
            (raw.bytes.to_vec(), Some(source))
        }
    };
    let manifest = match parse_document(&bytes)? {
        (Document::Manifest(m), _) => m,
        (Document::Index(_), _) => {
            return Err(UserError(format!("{}: nested image indexes are not supported", entry.source)).into())
        }
    };
    let mut blobs = manifest.layers().clone();
    blobs.push(manifest.config().clone());
    for blob in &blobs {
        if let Some(source) = from {
            if client.blob_exists(target, blob).await? {
                continue;
            }
            worker
                .fetch_blob(source, blob)
                .await
                .with_context(|| format!("copying {} from {source}", blob.digest()))?;
        }
        let options = from.map_or_else(PushBlobOptions::default, PushBlobOptions::mount_from);
        client
            .push_blob(target, blob, store.blob_path(blob.digest())?, &options)
            .await
            .with_context(|| format!("pushing {} to {target}", blob.digest()))?;
    }
    client
        .push_manifest(&child, entry.desc.media_type(), bytes.into())
        .await
        .with_context(|| format!("pushing the manifest {} to {target}", entry.desc.digest()))?;
    Ok(())
}

/// Makes sure the local store has `entry`'s manifest and every blob it names; returns the
/// size of its layers.
async fn copy_to_store(worker: &LocalWorker, client: &Client, store: &Store, entry: &Entry) -> Result<u64> {
    let bytes = match &entry.origin {
        Origin::Store => store.read_blob(entry.desc.digest())?,
        Origin::Registry(source) => {
            let raw = client.fetch_image_or_index(&by_digest(source, &entry.desc)?).await?;
            if !store.has_blob(&raw.digest)? {
                store.put_blob(&raw.bytes, Some(&raw.digest))?;
            }
            raw.bytes.to_vec()
        }
    };
    let manifest = match parse_document(&bytes)? {
        (Document::Manifest(m), _) => m,
        (Document::Index(_), _) => {
            return Err(UserError(format!("{}: nested image indexes are not supported", entry.source)).into())
        }
    };
    if let Origin::Registry(source) = &entry.origin {
        let mut blobs = manifest.layers().clone();
        blobs.push(manifest.config().clone());
        for blob in &blobs {
            worker
                .fetch_blob(source, blob)
                .await
                .with_context(|| format!("pulling {} from {source}", blob.digest()))?;
        }
    }
    Ok(manifest.layers().iter().map(Descriptor::size).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_comes_from_the_config() {
        let config = br#"{"architecture":"arm","os":"linux","variant":"v7","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let digest: rbuild_exporter::oci_spec::image::Digest =
            "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".parse().unwrap();
        let desc = Descriptor::new(MediaType::ImageManifest, 3, digest);
        let desc = set_platform(desc, config).unwrap();
        assert_eq!(platform_text(desc.platform().as_ref().unwrap()), "linux/arm/v7");
        let list = index_of(vec![desc.clone()], false).unwrap();
        assert_eq!(list.index.media_type().as_ref(), DOCKER_MANIFEST_LIST);
        let oci = index_of(vec![desc], true).unwrap();
        assert_eq!(*oci.index.media_type(), MediaType::ImageIndex);
    }
}
