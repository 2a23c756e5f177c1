//! `rbuild images`: the local store's named images, in `docker images` columns.

use std::path::PathBuf;

use anyhow::{Context, Result};
use rbuild_cache::Store;

use crate::cli::ImagesArgs;
use crate::export::familiar_name;

pub fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.3}{}", units[u]).replace(".000", "")
    }
}

/// Lists images.
#[allow(clippy::print_stdout)]
pub fn run(root: PathBuf, args: ImagesArgs) -> Result<()> {
    let store = Store::open(&root).with_context(|| format!("opening the store at {}", root.display()))?;
    let images = store.list_images()?;
    if args.quiet {
        for img in &images {
            println!("{}", &img.config.digest()[..12]);
        }
        return Ok(());
    }
    let mut rows = vec![vec![
        "REPOSITORY".to_owned(),
        "TAG".to_owned(),
        if args.digests { "DIGEST" } else { "" }.to_owned(),
        "IMAGE ID".to_owned(),
        "SIZE".to_owned(),
    ]];
    for img in &images {
        let name = familiar_name(&img.name);
        // The tag is after the last ':' that follows the last '/'.
        let slash = name.rfind('/').map_or(0, |i| i + 1);
        let (repo, tag) = match name[slash..].rfind(':') {
            Some(i) => (&name[..slash + i], &name[slash + i + 1..]),
            None => (name, "<none>"),
        };
        rows.push(vec![
            repo.to_owned(),
            tag.to_owned(),
            if args.digests { img.manifest.to_string() } else { String::new() },
            img.config.digest()[..12].to_owned(),
            human_size(img.size),
        ]);
    }
    let widths: Vec<usize> = (0..5).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    for r in rows {
        let cols: Vec<String> =
            r.iter().zip(&widths).filter(|(_, w)| **w > 0).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", cols.join("   ").trim_end());
    }
    Ok(())
}

fn open(root: &std::path::Path) -> Result<Store> {
    Store::open(root).with_context(|| format!("opening the store at {}", root.display()))
}

fn normalize(name: &str) -> Result<String> {
    Ok(crate::export::normalize_tags(&[name.to_owned()])?.remove(0))
}

fn lookup(store: &Store, name: &str) -> Result<rbuild_cache::ImageRecord> {
    let full = normalize(name)?;
    store
        .get_image(&full)?
        .ok_or_else(|| crate::render::UserError(format!("no such image: {name} (see `rbuild images`)")).into())
}

/// `rbuild tag SOURCE TARGET`.
pub fn tag(root: PathBuf, source: &str, target: &str) -> Result<()> {
    // A bad new name is reported even when the source is missing too, as `docker tag` does.
    let name = normalize(target)?;
    let store = open(&root)?;
    let mut rec = lookup(&store, source)?;
    rec.name = name;
    store.put_image(&rec)?;
    Ok(())
}

/// `rbuild rmi NAME...`.
#[allow(clippy::print_stdout)]
pub fn rmi(root: PathBuf, names: &[String]) -> Result<()> {
    let store = open(&root)?;
    for n in names {
        let full = normalize(n)?;
        if !store.remove_image(&full)? {
            return Err(crate::render::UserError(format!("no such image: {n}")).into());
        }
        println!("Untagged: {}", familiar_name(&full));
    }
    Ok(())
}

/// `rbuild inspect NAME`: `{ "name", "digest", "id", "manifest", "config" }`; for a
/// multi-platform image `{ "name", "digest", "id", "index", "manifests": [{ "platform",
/// "digest", "manifest", "config" }] }`.
#[allow(clippy::print_stdout)]
pub fn inspect(root: PathBuf, name: &str) -> Result<()> {
    let store = open(&root)?;
    let rec = lookup(&store, name)?;
    let bytes = store.read_blob(&rec.manifest)?;
    let manifest: serde_json::Value = serde_json::from_slice(&bytes)?;
    let out = match crate::push::parse_document(&bytes)?.0 {
        crate::push::Document::Index(index) => {
            let mut manifests = Vec::new();
            for d in index.manifests().iter().filter(|d| !rbuild_exporter::oci::is_attestation(d)) {
                let child: serde_json::Value = serde_json::from_slice(&store.read_blob(d.digest())?)?;
                let config = match child["config"]["digest"].as_str().and_then(|c| c.parse().ok()) {
                    Some(c) => serde_json::from_slice(&store.read_blob(&c)?)?,
                    None => serde_json::Value::Null,
                };
                manifests.push(serde_json::json!({
                    "platform": d.platform(),
                    "digest": d.digest().to_string(),
                    "manifest": child,
                    "config": config,
                }));
            }
            serde_json::json!({
                "name": rec.name,
                "digest": rec.manifest.to_string(),
                "id": rec.config.to_string(),
                "index": manifest,
                "manifests": manifests,
            })
        }
        crate::push::Document::Manifest(_) => {
            let config: serde_json::Value = serde_json::from_slice(&store.read_blob(&rec.config)?)?;
            serde_json::json!({
                "name": rec.name,
                "digest": rec.manifest.to_string(),
                "id": rec.config.to_string(),
                "manifest": manifest,
                "config": config,
            })
        }
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// `rbuild inspect NAME --provenance|--sbom`: the predicates of the image's attestations of that
/// kind, `{"SLSA": ...}` / `{"SPDX": ..., "AdditionalSPDXs": [...]}` (stage SBOMs), keyed by
/// platform when the image has several, as buildx's imagetools shows them.
#[allow(clippy::print_stdout)]
pub fn inspect_attestation(root: PathBuf, name: &str, provenance: bool) -> Result<()> {
    use rbuild_exporter::oci::{is_attestation, ANNOTATION_PREDICATE_TYPE, ANNOTATION_REFERENCE_DIGEST};
    let store = open(&root)?;
    let rec = lookup(&store, name)?;
    let none = || {
        let (what, flag) = if provenance { ("provenance", "provenance=mode=max") } else { ("SBOM", "sbom=true") };
        crate::render::UserError(format!("{name} has no {what} attestation (build it with --{flag})"))
    };
    let crate::push::Document::Index(index) = crate::push::parse_document(&store.read_blob(&rec.manifest)?)?.0 else {
        return Err(none().into());
    };
    let platforms: std::collections::HashMap<String, String> = index
        .manifests()
        .iter()
        .filter(|d| !is_attestation(d))
        .filter_map(|d| d.platform().as_ref().map(|p| (d.digest().to_string(), crate::manifest::platform_text(p))))
        .collect();
    let mut per_platform = serde_json::Map::new();
    for d in index.manifests().iter().filter(|d| is_attestation(d)) {
        let subject = d.annotations().as_ref().and_then(|a| a.get(ANNOTATION_REFERENCE_DIGEST));
        let Some(platform) = subject.and_then(|s| platforms.get(s)) else { continue };
        let manifest: rbuild_exporter::oci_spec::image::ImageManifest =
            serde_json::from_slice(&store.read_blob(d.digest())?).context("reading an attestation manifest")?;
        let mut found = Vec::new();
        for layer in manifest.layers() {
            let kind = layer.annotations().as_ref().and_then(|a| a.get(ANNOTATION_PREDICATE_TYPE)).cloned();
            let wanted = match kind.as_deref() {
                Some(crate::attest::SLSA_V02 | crate::attest::SLSA_V1) => provenance,
                Some(crate::attest::SPDX) => !provenance,
                _ => false,
            };
            if wanted {
                let statement: serde_json::Value =
                    serde_json::from_slice(&store.read_blob(layer.digest())?).context("reading an attestation")?;
                found.push(statement["predicate"].clone());
            }
        }
        let mut entry = serde_json::Map::new();
        let mut found = found.into_iter();
        if let Some(first) = found.next() {
            entry.insert(if provenance { "SLSA" } else { "SPDX" }.into(), first);
        }
        let rest: Vec<_> = found.collect();
        if !rest.is_empty() {
            entry.insert("AdditionalSPDXs".into(), serde_json::Value::Array(rest));
        }
        if !entry.is_empty() {
            per_platform.insert(platform.clone(), serde_json::Value::Object(entry));
        }
    }
    let out = match per_platform.len() {
        0 => return Err(none().into()),
        1 => per_platform.into_iter().next().map(|(_, v)| v).unwrap_or_default(),
        _ => serde_json::Value::Object(per_platform),
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// `rbuild save NAME... -o FILE [--format docker|oci]`.
pub fn save(root: PathBuf, names: &[String], output: &std::path::Path, format: &str) -> Result<()> {
    use rbuild_exporter::oci::{write_docker_archive, write_oci_archive, LayoutBlobs};
    use rbuild_exporter::oci_spec::image::{Descriptor, MediaType};
    use std::io::IsTerminal;

    if !matches!(format, "docker" | "oci") {
        return Err(crate::render::UserError(format!("--format {format}: use docker or oci")).into());
    }
    let store = open(&root)?;
    let records = names.iter().map(|n| lookup(&store, n)).collect::<Result<Vec<_>>>()?;
    let first = &records[0];
    if let Some(other) = records.iter().find(|r| r.manifest != first.manifest) {
        return Err(crate::render::UserError(format!(
            "{} and {} are different images: rbuild save writes one image (under any number of names) per archive",
            familiar_name(&first.name),
            familiar_name(&other.name)
        ))
        .into());
    }
    #[derive(serde::Deserialize)]
    struct Typed {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    let typed: Typed = serde_json::from_slice(&store.read_blob(&first.manifest)?).context("reading the manifest")?;
    let media_type = typed.media_type.map_or(MediaType::ImageManifest, |m| MediaType::from(m.as_str()));
    let manifest = Descriptor::new(media_type, first.manifest_size, first.manifest.clone());
    let blobs = LayoutBlobs::new(store.root());
    let full: Vec<String> = records.iter().map(|r| r.name.clone()).collect();
    let write =
        |w: std::io::BufWriter<tempfile::NamedTempFile>| -> Result<std::io::BufWriter<tempfile::NamedTempFile>> {
            Ok(match format {
                "oci" => write_oci_archive(w, &manifest, Some(&first.name), &blobs)?,
                _ => write_docker_archive(w, &manifest, &full, &blobs)?,
            })
        };
    if output.as_os_str() == "-" {
        let stdout = std::io::stdout();
        if stdout.is_terminal() {
            return Err(crate::render::UserError(
                "refusing to write an archive to a terminal: use -o FILE or redirect standard output".into(),
            )
            .into());
        }
        let out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
        let mut out = match format {
            "oci" => write_oci_archive(out, &manifest, Some(&first.name), &blobs)?,
            _ => write_docker_archive(out, &manifest, &full, &blobs)?,
        };
        std::io::Write::flush(&mut out).context("writing standard output")?;
        return Ok(());
    }
    crate::export::atomic_file(output, write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_500_000), "1.500MB");
        assert_eq!(human_size(2_000_000), "2MB");
    }
}
