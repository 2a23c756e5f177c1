//! Committing the build result as an image and writing the requested outputs.

use std::path::Path;

use anyhow::{Context, Result};
use rbuild_cache::ImageRecord;
use rbuild_exporter::oci::{write_oci_archive, write_oci_dir, BuiltImage, BuiltIndex};
use rbuild_exporter::oci_spec::image::{Descriptor, Digest};
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
pub(crate) fn rfc3339(secs: i64) -> String {
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

/// `--annotation` values (buildx syntax) as manifest annotations. Only the manifest level
/// exists for a single-platform image: the other levels are refused with a clear error.
pub fn parse_annotations(values: &[String]) -> Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    for v in values {
        let (kv, level) = match v.split_once(':') {
            Some((level, rest)) if !level.contains('=') => (rest, Some(level)),
            _ => (v.as_str(), None),
        };
        match level {
            None | Some("manifest") => {}
            Some(other @ ("index" | "index-descriptor" | "manifest-descriptor")) => {
                return Err(UserError(format!(
                    "--annotation {v:?}: {other} annotations are not supported yet; use KEY=VALUE for the manifest"
                ))
                .into())
            }
            Some(other) => {
                return Err(UserError(format!(
                    "--annotation {v:?}: unknown level {other:?} (use KEY=VALUE or manifest:KEY=VALUE)"
                ))
                .into())
            }
        }
        let (k, val) = kv
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| UserError(format!("--annotation {v:?}: expected KEY=VALUE")))?;
        out.insert(k.to_owned(), val.to_owned());
    }
    Ok(out)
}

/// `SOURCE_DATE_EPOCH` for reproducible builds: the build argument, else the environment
/// variable (as BuildKit takes it); unset or empty is `None`.
pub fn source_date_epoch(build_args: &std::collections::BTreeMap<String, String>) -> Result<Option<i64>> {
    let value = match build_args.get("SOURCE_DATE_EPOCH") {
        Some(v) => Some(v.clone()),
        None => std::env::var("SOURCE_DATE_EPOCH").ok(),
    };
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else { return Ok(None) };
    match value.trim().parse::<i64>() {
        Ok(secs) if secs >= 0 => Ok(Some(secs)),
        _ => Err(UserError(format!(
            "invalid SOURCE_DATE_EPOCH {value:?}: expected seconds since 1970-01-01 UTC, e.g. $(git log -1 --format=%ct)"
        ))
        .into()),
    }
}

/// The image's `created` time: `SOURCE_DATE_EPOCH` when set (reproducible builds), else now,
/// taken once per process, so every platform's image of a build has the same.
pub(crate) fn created(epoch: Option<i64>) -> String {
    static NOW: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let secs = epoch.unwrap_or_else(|| {
        *NOW.get_or_init(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
        })
    });
    rfc3339(secs)
}

/// Writes layers, config and manifest of the result into the store, with extra top-level
/// config fields (an inline build cache).
#[allow(clippy::too_many_arguments)] // one per image-level build option
pub async fn commit_with(
    worker: &LocalWorker,
    snap: &Snapshot,
    def: &BuildDefinition,
    platform: &Platform,
    layer: &crate::output::LayerOptions,
    epoch: Option<i64>,
    annotations: &std::collections::BTreeMap<String, String>,
    top_level: serde_json::Map<String, serde_json::Value>,
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
        created: Some(created(epoch)),
        author: def.author.clone(),
        extra_config: def.extra_config.clone(),
        compression: layer.compression,
        force_compression: layer.force,
        oci_mediatypes: layer.oci_mediatypes,
        clamp_mtimes: epoch.filter(|_| layer.rewrite_timestamp),
        annotations: annotations.clone(),
    };
    worker.commit_image_with(snap, &spec, top_level).await.context("exporting the image")
}

/// One platform's image of a build.
#[derive(Debug)]
pub struct PlatformImage {
    /// The platform.
    pub platform: Platform,
    /// Its config and manifest (in the store).
    pub image: BuiltImage,
    /// Its filesystem.
    pub snapshot: Snapshot,
}

/// What a build made: one image, or (several platforms) one per platform under an index.
#[derive(Debug)]
pub struct BuildResult {
    /// The images, in `--platform` order.
    pub images: Vec<PlatformImage>,
    /// The image index over them, when there are several (its blob is in the store).
    pub index: Option<BuiltIndex>,
    top: Descriptor,
    id: Digest,
}

impl BuildResult {
    /// Wraps the platforms' images; several, or attestations (listed after the images, their
    /// blobs already stored), get an index (OCI, or Docker's manifest list with
    /// `oci-mediatypes=false`), written to the store.
    pub fn new(
        worker: &LocalWorker,
        images: Vec<PlatformImage>,
        attestations: Vec<Descriptor>,
        oci_mediatypes: bool,
    ) -> Result<BuildResult> {
        let Some(first) = images.first() else { anyhow::bail!("the build made no image") };
        let (top, id, index) = if images.len() > 1 || !attestations.is_empty() {
            let manifests = images.iter().map(|i| i.image.manifest.clone()).chain(attestations).collect();
            let index = crate::manifest::index_of(manifests, oci_mediatypes)?;
            if !worker.store().has_blob(index.index.digest())? {
                worker.store().put_blob(&index.index_json, Some(index.index.digest()))?;
            }
            // The id stays the config digest of a single image with attestations, as buildx's
            // `--iidfile` (BuildKit still reports `containerimage.config.digest` then).
            let id = if images.len() > 1 { index.index.digest().clone() } else { first.image.config.digest().clone() };
            (index.index.clone(), id, Some(index))
        } else {
            (first.image.manifest.clone(), first.image.config.digest().clone(), None)
        };
        Ok(BuildResult { images, index, top, id })
    }

    /// The descriptor a name points to: the index, else the one manifest.
    pub fn top(&self) -> Descriptor {
        self.top.clone()
    }

    /// The image id, as `--iidfile` and `-q` print it: the config digest of a single-platform
    /// image (attested or not), the index digest of a multi-platform one (as BuildKit).
    pub fn id(&self) -> Digest {
        self.id.clone()
    }
}

/// Names the image in the store and writes archive outputs.
pub async fn write_outputs(
    worker: &LocalWorker,
    built: &BuildResult,
    tags: &[String],
    outputs: &[Output],
    attested: &[Vec<crate::attest::Predicate>],
    quiet: bool,
) -> Result<()> {
    let store = worker.store();
    let top = built.top();
    // Pushing goes through the store too (blobs are read from it), as `docker build --push`
    // leaves the image in the local store.
    let wants_store = outputs.is_empty() || outputs.contains(&Output::Image) || outputs.contains(&Output::Registry);
    if wants_store {
        let mut size = 0;
        for one in &built.images {
            size += image_size(worker, &one.image)?;
        }
        for name in tags {
            store.put_image(&ImageRecord {
                name: name.clone(),
                manifest: top.digest().clone(),
                manifest_size: top.size(),
                config: built.id(),
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
    // Each platform's filesystem, and where it goes in a local/tar output: the top, or (several
    // platforms) a directory per platform, `linux_arm64/`, as BuildKit writes them.
    let multi = built.images.len() > 1;
    let filesystems: Vec<(Option<String>, Vec<std::path::PathBuf>)> = built
        .images
        .iter()
        .map(|i| (multi.then(|| crate::platforms::dir_name(&i.platform)), worker.lower_dirs(&i.snapshot)))
        .collect();
    for out in outputs {
        let (manifest, name, blobs) = (top.clone(), tags.first().cloned(), worker.blob_source());
        // A docker archive holds one image, never an index (multi-platform builds are refused
        // before they start; a single image's attestations are left out).
        let image_manifest = built.images[0].image.manifest.clone();
        let filesystems = filesystems.clone();
        let attested = attested.to_vec();
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
                        rbuild_exporter::oci::write_docker_archive(w, &image_manifest, &names, &blobs)
                            .map_err(Into::into)
                    })?;
                    Some(format!("exporting to docker image format {}", dest.display()))
                }
                Output::Local { dest } => {
                    for (i, (subdir, layers)) in filesystems.iter().enumerate() {
                        let dest = subdir.as_ref().map_or_else(|| dest.clone(), |d| dest.join(d));
                        rbuild_exporter::rootfs::write_rootfs_dir(layers, &dest)
                            .with_context(|| format!("writing {}", dest.display()))?;
                        // As BuildKit's local exporter: the attestations as files beside them.
                        crate::attest::write_files(&dest, attested.get(i).map_or(&[][..], Vec::as_slice))?;
                    }
                    Some(format!("copying files to {}", dest.display()))
                }
                Output::Tar { dest } => {
                    atomic_file(dest, |w| write_rootfs_tars(&filesystems, w))?;
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
        match &built.index {
            Some(index) => eprintln!("exporting manifest list {} done", index.index.digest()),
            None => eprintln!("writing image {} done", built.id()),
        }
    }
    Ok(())
}

/// The docker CLI `--load` hands the image to (checked before building).
pub fn docker_cli() -> Result<std::path::PathBuf> {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join("docker")).find(|p| p.is_file()))
        .ok_or_else(|| UserError("--load needs the docker CLI on PATH (or use -o type=docker,dest=FILE)".into()).into())
}

/// `--load`: streams a docker archive of the image into `docker load`.
pub async fn docker_load(worker: &LocalWorker, image: &BuiltImage, tags: &[String], quiet: bool) -> Result<()> {
    let docker = docker_cli()?;
    let (manifest, names, blobs) = (image.manifest.clone(), tags.to_vec(), worker.blob_source());
    tokio::task::spawn_blocking(move || -> Result<()> {
        let mut child = std::process::Command::new(&docker)
            .args(["load", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("running {} load", docker.display()))?;
        let stdin = child.stdin.take().context("docker load's standard input")?;
        let written =
            rbuild_exporter::oci::write_docker_archive(std::io::BufWriter::new(stdin), &manifest, &names, &blobs)
                .map(drop);
        let status = child.wait().context("waiting for docker load")?;
        if !status.success() {
            return Err(UserError(format!("docker load failed ({status}): see its message above")).into());
        }
        written.context("streaming the image to docker load")
    })
    .await
    .context("docker load task")??;
    if !quiet {
        eprintln!("loading image into docker done");
    }
    Ok(())
}

/// One platform's filesystem as a tar, or several under one directory each.
fn write_rootfs_tars<W: std::io::Write>(filesystems: &[(Option<String>, Vec<std::path::PathBuf>)], w: W) -> Result<W> {
    if let [(None, layers)] = filesystems {
        return Ok(rbuild_exporter::rootfs::write_rootfs_tar(layers, w)?);
    }
    let named: Vec<(String, Vec<std::path::PathBuf>)> =
        filesystems.iter().map(|(dir, layers)| (dir.clone().unwrap_or_default(), layers.clone())).collect();
    Ok(rbuild_exporter::rootfs::write_rootfs_tars(&named, w)?)
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
pub(crate) fn atomic_file<F>(dest: &Path, write: F) -> Result<()>
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
    fn annotations_take_buildx_syntax() {
        let a = parse_annotations(&["a=1".into(), "manifest:org.opencontainers.image.url=https://x/y".into()]).unwrap();
        assert_eq!(a.get("a").map(String::as_str), Some("1"));
        assert_eq!(a.get("org.opencontainers.image.url").map(String::as_str), Some("https://x/y"));
        assert!(parse_annotations(&["index:a=1".into()]).is_err());
        assert!(parse_annotations(&["bogus:a=1".into()]).is_err());
        assert!(parse_annotations(&["novalue".into()]).is_err());
        assert!(parse_annotations(&["=v".into()]).is_err());
    }

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
