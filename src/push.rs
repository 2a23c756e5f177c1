//! Pushing an image from the local store to a registry (`rbuild push`, `--push`,
//! `-o type=registry`): every blob the registry lacks, in parallel, then the manifest.

use anyhow::{Context, Result};
use futures_util::future::try_join_all;
use rbuild_cache::Store;
use rbuild_registry::oci_spec::image::{Descriptor, ImageManifest, MediaType};
use rbuild_registry::{Client, PushBlobOptions, PushOutcome, Reference};

use crate::render::UserError;

/// Pushes the image whose manifest is `manifest` (a blob in `store`) as `name`.
pub async fn push(client: &Client, store: &Store, manifest: &Descriptor, name: &str, quiet: bool) -> Result<()> {
    let reference: Reference = name.parse().map_err(|e| UserError(format!("invalid image name {name:?}: {e}")))?;
    let bytes = store.read_blob(manifest.digest())?;
    let parsed: ImageManifest = serde_json::from_slice(&bytes).context("reading the image manifest")?;
    let mut blobs: Vec<Descriptor> = parsed.layers().clone();
    blobs.push(parsed.config().clone());
    let jobs = blobs.iter().map(|desc| {
        let reference = &reference;
        async move {
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
        }
    });
    try_join_all(jobs).await?;
    let media_type = parsed.media_type().clone().unwrap_or(MediaType::ImageManifest);
    let digest = client
        .push_manifest(&reference, &media_type, bytes.into())
        .await
        .with_context(|| format!("pushing the manifest to {reference}"))?;
    if !quiet {
        eprintln!("pushed {reference}@{digest}");
    }
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
