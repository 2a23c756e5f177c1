//! Pushing an image from the local store to a registry (`rbuild push`, `--push`,
//! `-o type=registry`): every blob the registry lacks, in parallel, then the manifest. A
//! multi-platform image (an index) pushes each platform's image by digest, then the index
//! under the name.

use anyhow::{Context, Result};
use futures_util::future::try_join_all;
use rbuild_cache::Store;
use rbuild_registry::oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};
use rbuild_registry::{Client, PushBlobOptions, PushOutcome, Reference};

use crate::render::UserError;

/// What a manifest-endpoint document in the store is.
#[derive(Debug)]
pub enum Document {
    /// An image manifest.
    Manifest(Box<ImageManifest>),
    /// An index (or docker manifest list) of manifests.
    Index(Box<ImageIndex>),
}

/// Parses a manifest or index by its `mediaType`, else by its shape (`manifests` → index).
pub fn parse_document(bytes: &[u8]) -> Result<(Document, MediaType)> {
    let value: serde_json::Value = serde_json::from_slice(bytes).context("reading the image manifest")?;
    let declared = value.get("mediaType").and_then(|m| m.as_str()).map(MediaType::from);
    let is_index = match &declared {
        Some(MediaType::ImageIndex) => true,
        Some(m) if m.as_ref() == rbuild_registry::DOCKER_MANIFEST_LIST => true,
        Some(_) => false,
        None => value.get("manifests").is_some(),
    };
    if is_index {
        let index: ImageIndex = serde_json::from_value(value).context("reading the image index")?;
        Ok((Document::Index(Box::new(index)), declared.unwrap_or(MediaType::ImageIndex)))
    } else {
        let manifest: ImageManifest = serde_json::from_value(value).context("reading the image manifest")?;
        Ok((Document::Manifest(Box::new(manifest)), declared.unwrap_or(MediaType::ImageManifest)))
    }
}

/// Pushes the image (or index) whose manifest is `top` (a blob in `store`) as `name`.
pub async fn push(client: &Client, store: &Store, top: &Descriptor, name: &str, quiet: bool) -> Result<()> {
    let reference: Reference = name.parse().map_err(|e| UserError(format!("invalid image name {name:?}: {e}")))?;
    let bytes = store.read_blob(top.digest())?;
    let (document, media_type) = parse_document(&bytes)?;
    if let Document::Index(index) = &document {
        // Children first, by digest: the registry refuses an index whose manifests it lacks.
        for child in index.manifests() {
            let child_ref = by_digest(&reference, child)?;
            let child_bytes = store.read_blob(child.digest())?;
            match parse_document(&child_bytes)? {
                (Document::Manifest(m), child_type) => {
                    push_blobs(client, store, &child_ref, &m, quiet).await?;
                    client
                        .push_manifest(&child_ref, &child_type, child_bytes.into())
                        .await
                        .with_context(|| format!("pushing the manifest {} to {reference}", child.digest()))?;
                }
                (Document::Index(_), _) => {
                    return Err(UserError(format!("{name}: nested image indexes cannot be pushed")).into())
                }
            }
        }
    } else if let Document::Manifest(m) = &document {
        push_blobs(client, store, &reference, m, quiet).await?;
    }
    let digest = client
        .push_manifest(&reference, &media_type, bytes.into())
        .await
        .with_context(|| format!("pushing the manifest to {reference}"))?;
    if !quiet {
        eprintln!("pushed {reference}@{digest}");
    }
    Ok(())
}

/// `registry/repository@digest` of `child`, in `reference`'s repository.
pub fn by_digest(reference: &Reference, child: &Descriptor) -> Result<Reference> {
    format!("{}@{}", reference.name(), child.digest())
        .parse()
        .with_context(|| format!("naming {} in {}", child.digest(), reference.name()))
}

/// Pushes a manifest's config and layers that the repository lacks, in parallel.
async fn push_blobs(
    client: &Client,
    store: &Store,
    reference: &Reference,
    manifest: &ImageManifest,
    quiet: bool,
) -> Result<()> {
    let mut blobs: Vec<Descriptor> = manifest.layers().clone();
    blobs.push(manifest.config().clone());
    let jobs = blobs.iter().map(|desc| async move {
        let path = store.blob_path(desc.digest())?;
        let outcome = client
            .push_blob(reference, desc, path, &PushBlobOptions::default())
            .await
            .with_context(|| format!("pushing {} to {reference}", desc.digest()))?;
        if !quiet {
            let what = match outcome {
                PushOutcome::Uploaded => "pushed",
                PushOutcome::Existed => "already exists",
                PushOutcome::Mounted => "mounted",
                _ => "done",
            };
            eprintln!("{}: {what}", desc.digest());
        }
        anyhow::Ok(())
    });
    try_join_all(jobs).await?;
    Ok(())
}

/// `rbuild push NAME`.
pub async fn run(root: std::path::PathBuf, name: &str, insecure: &[String]) -> Result<()> {
    let store = Store::open(&root).with_context(|| format!("opening the store at {}", root.display()))?;
    let full = crate::export::normalize_tags(&[name.to_owned()])?.remove(0);
    let rec =
        store.get_image(&full)?.ok_or_else(|| UserError(format!("no such image: {name} (see `rbuild images`)")))?;
    let desc = Descriptor::new(MediaType::ImageManifest, rec.manifest_size, rec.manifest.clone());
    let client = client(insecure)?;
    push(&client, &store, &desc, &full, false).await
}

/// A registry client with the user's insecure registries.
pub fn client(insecure: &[String]) -> Result<Client> {
    let mut opts = rbuild_registry::ClientOptions::default();
    opts.insecure_hosts.extend(insecure.iter().cloned());
    Client::new(opts).context("creating the registry client")
}
