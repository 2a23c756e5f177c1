//! Committing the build result as an image and writing the requested outputs.

use std::path::Path;

use anyhow::{Context, Result};
use rbuild_cache::ImageRecord;
use rbuild_exporter::oci::{write_oci_archive, write_oci_dir, BuiltImage};
use rbuild_frontend::BuildDefinition;
use rbuild_registry::Reference;
use rbuild_solver::ir::Platform;
use rbuild_worker::{HistoryEntry, ImageSpec, LocalWorker, Snapshot};

use crate::output::Output;
use crate::render::UserError;

/// `demo:1.0` → `docker.io/library/demo:1.0`, as docker names images.
pub fn normalize_tags(tags: &[String]) -> Result<Vec<String>> {
    tags.iter()
        .map(|t| {
            t.parse::<Reference>()
                .map(|r| r.to_string())
                .map_err(|e| UserError(format!("invalid tag {t:?}: {e}")).into())
        })
        .collect()
}

/// `docker.io/library/demo:1.0` → `demo:1.0`, as `docker images` shows it.
pub fn familiar_name(name: &str) -> &str {
    name.strip_prefix("docker.io/library/").or_else(|| name.strip_prefix("docker.io/")).unwrap_or(name)
}

/// RFC 3339 UTC for a unix time.
fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The image's `created` time: `SOURCE_DATE_EPOCH` when set (reproducible builds), else now.
fn created() -> String {
    let secs =
        std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|v| v.trim().parse::<i64>().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
        });
    rfc3339(secs)
}

/// Writes layers, config and manifest of the result into the store.
pub async fn commit(
    worker: &LocalWorker,
    snap: &Snapshot,
    def: &BuildDefinition,
    platform: &Platform,
    layer: &crate::output::LayerOptions,
) -> Result<BuiltImage> {
    let spec = ImageSpec {
        base: def.base.as_ref().map(|b| b.config.clone()),
        runtime: def.config.clone(),
        history: def
            .history
            .iter()
            .map(|h| HistoryEntry {
                created_by: h.created_by.clone(),
                comment: h.comment.clone(),
                layer_op: h.layer_op,
            })
            .collect(),
        platform: platform.clone(),
        created: Some(created()),
        author: def.author.clone(),
        extra_config: def.extra_config.clone(),
        compression: layer.compression,
        force_compression: layer.force,
        oci_mediatypes: layer.oci_mediatypes,
    };
    worker.commit_image(snap, &spec).await.context("exporting the image")
}

/// Names the image in the store and writes archive outputs.
pub async fn write_outputs(
    worker: &LocalWorker,
    image: &BuiltImage,
    snap: &Snapshot,
    tags: &[String],
    outputs: &[Output],
    quiet: bool,
) -> Result<()> {
    let store = worker.store();
    // Pushing goes through the store too (blobs are read from it), as `docker build --push`
    // leaves the image in the local store.
    let wants_store = outputs.is_empty() || outputs.contains(&Output::Image) || outputs.contains(&Output::Registry);
    if wants_store {
        let size = image_size(worker, image)?;
        for name in tags {
            store.put_image(&ImageRecord {
                name: name.clone(),
                manifest: image.manifest.digest().clone(),
                manifest_size: image.manifest.size(),
                config: image.config.digest().clone(),
                size,
                created: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64),
            })?;
            if !quiet {
                eprintln!("naming to {name} done");
            }
        }
    }
    for out in outputs {
        let (manifest, name, blobs) = (image.manifest.clone(), tags.first().cloned(), worker.blob_source());
        let layers = worker.lower_dirs(snap);
        let out2 = out.clone();
        let names = tags.to_vec();
        let what = tokio::task::spawn_blocking(move || -> Result<Option<String>> {
            Ok(match &out2 {
                Output::Oci { dest, tar } => {
                    write_oci(dest, *tar, &manifest, name.as_deref(), &blobs)?;
                    Some(format!("exporting to oci image format {}", dest.display()))
                }
                Output::Docker { dest } => {
                    atomic_file(dest, |w| {
                        rbuild_exporter::oci::write_docker_archive(w, &manifest, &names, &blobs).map_err(Into::into)
                    })?;
                    Some(format!("exporting to docker image format {}", dest.display()))
                }
                Output::Local { dest } => {
                    rbuild_exporter::rootfs::write_rootfs_dir(&layers, dest)
                        .with_context(|| format!("writing {}", dest.display()))?;
                    Some(format!("copying files to {}", dest.display()))
                }
                Output::Tar { dest } => {
                    atomic_file(dest, |w| rbuild_exporter::rootfs::write_rootfs_tar(&layers, w).map_err(Into::into))?;
                    Some(format!("sending tarball {}", dest.display()))
                }
                Output::Image | Output::Registry => None,
            })
        })
        .await
        .context("export task")??;
        if let (Some(what), false) = (what, quiet) {
            eprintln!("{what} done");
        }
    }
    if !quiet {
        eprintln!("writing image {} done", image.config.digest());
    }
    Ok(())
}

fn write_oci(
    dest: &Path,
    tar: bool,
    manifest: &rbuild_exporter::oci_spec::image::Descriptor,
    name: Option<&str>,
    blobs: &rbuild_exporter::oci::LayoutBlobs,
) -> Result<()> {
    if !tar {
        return write_oci_dir(dest, manifest, name, blobs).with_context(|| format!("writing {}", dest.display()));
    }
    atomic_file(dest, |w| write_oci_archive(w, manifest, name, blobs).map_err(Into::into))
}

/// Writes `dest` through a temp file beside it, renamed into place only when complete, so a
/// failed export never leaves a torn archive.
fn atomic_file<F>(dest: &Path, write: F) -> Result<()>
where
    F: FnOnce(std::io::BufWriter<tempfile::NamedTempFile>) -> Result<std::io::BufWriter<tempfile::NamedTempFile>>,
{
    let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("writing {}: cannot create a temp file in {}", dest.display(), dir.display()))?;
    let out = write(std::io::BufWriter::with_capacity(1 << 20, tmp))
        .with_context(|| format!("writing {}", dest.display()))?;
    let tmp = out.into_inner().map_err(|e| e.into_error()).with_context(|| format!("writing {}", dest.display()))?;
    tmp.persist(dest).with_context(|| format!("writing {}", dest.display()))?;
    Ok(())
}

fn image_size(worker: &LocalWorker, image: &BuiltImage) -> Result<u64> {
    let manifest: rbuild_exporter::oci_spec::image::ImageManifest =
        serde_json::from_slice(&worker.store().read_blob(image.manifest.digest())?)
            .context("reading back the manifest")?;
    Ok(manifest.layers().iter().map(|l| l.size()).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn tags_are_normalized_like_docker() {
        assert_eq!(normalize_tags(&["demo:1.0".into()]).unwrap(), vec!["docker.io/library/demo:1.0"]);
        assert_eq!(normalize_tags(&["demo".into()]).unwrap(), vec!["docker.io/library/demo:latest"]);
        assert_eq!(familiar_name("docker.io/library/demo:1.0"), "demo:1.0");
        assert_eq!(familiar_name("127.0.0.1:5000/x:1"), "127.0.0.1:5000/x:1");
        assert!(normalize_tags(&["Bad Tag".into()]).is_err());
    }
}
