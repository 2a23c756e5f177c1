//! `--cache-to` / `--cache-from` values (docker buildx syntax) and running the exports.

use std::path::PathBuf;

use anyhow::{Context, Result};
use rbuild_registry::Reference;
use rbuild_solver::CacheKey;
use rbuild_worker::{CacheLocation, CacheMode, LocalWorker, Snapshot};

use crate::render::UserError;

/// Where `--cache-to` sends the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheExport {
    /// `type=registry,ref=REF[,mode=min|max]`.
    Registry {
        /// The reference pushed to.
        reference: String,
        /// Which records.
        mode: CacheMode,
        /// `ignore-error=true`: a failed export is a warning.
        ignore_error: bool,
    },
    /// `type=local,dest=DIR[,mode=min|max][,tag=TAG]`.
    Local {
        /// The OCI layout directory.
        dest: PathBuf,
        /// The `index.json` entry's tag.
        tag: String,
        /// Which records.
        mode: CacheMode,
        /// `ignore-error=true`: a failed export is a warning.
        ignore_error: bool,
    },
    /// `type=inline`: the records of the image's own layers, in its config.
    Inline,
}

/// Where `--cache-from` reads a cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheImport {
    /// `type=registry,ref=REF` or a bare `REF`: a cache manifest or an image with an inline
    /// cache.
    Registry {
        /// The reference.
        reference: String,
    },
    /// `type=local,src=DIR[,tag=TAG]`.
    Local {
        /// The OCI layout directory.
        src: PathBuf,
        /// The `index.json` entry's tag.
        tag: String,
    },
}

/// Attributes accepted for compatibility and ignored: our cache blobs are the image's own
/// compressed layers, and the manifest is always an OCI image manifest.
const IGNORED: [&str; 5] =
    ["compression", "compression-level", "force-compression", "oci-mediatypes", "image-manifest"];

fn attributes(value: &str, flag: &str) -> Result<Vec<(String, String)>, String> {
    if !value.contains('=') {
        // buildx: a bare value is a registry reference.
        return Ok(vec![("type".into(), "registry".into()), ("ref".into(), value.to_owned())]);
    }
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .ok_or_else(|| format!("{flag} {value:?}: {kv:?} is not KEY=VALUE"))
        })
        .collect()
}

fn cache_type(attrs: &[(String, String)], flag: &str, value: &str) -> Result<String, String> {
    let t = attrs.iter().find(|(k, _)| k == "type").map(|(_, v)| v.as_str()).unwrap_or("registry");
    match t {
        "registry" | "local" | "inline" => Ok(t.to_owned()),
        other => Err(format!("{flag} {value:?}: cache type {other:?} is not supported: use registry, local or inline")),
    }
}

fn parse_mode(v: &str, flag: &str) -> Result<CacheMode, String> {
    match v {
        "min" => Ok(CacheMode::Min),
        "max" => Ok(CacheMode::Max),
        other => Err(format!("{flag}: mode={other} is not min or max")),
    }
}

fn parse_bool(v: &str, flag: &str, key: &str) -> Result<bool, String> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(format!("{flag}: {key}={other} is not true or false")),
    }
}

/// Parses one `--cache-to` value.
pub fn parse_cache_to(value: &str) -> Result<CacheExport, String> {
    const FLAG: &str = "--cache-to";
    let attrs = attributes(value, FLAG)?;
    let kind = cache_type(&attrs, FLAG, value)?;
    let (mut reference, mut dest, mut tag, mut mode, mut ignore_error) = (None, None, None, CacheMode::Min, false);
    for (k, v) in &attrs {
        match k.as_str() {
            "type" => {}
            "ref" if kind == "registry" => reference = Some(v.clone()),
            "dest" if kind == "local" => dest = Some(PathBuf::from(v)),
            "tag" if kind == "local" => tag = Some(v.clone()),
            "mode" if kind != "inline" => mode = parse_mode(v, FLAG)?,
            "ignore-error" => ignore_error = parse_bool(v, FLAG, k)?,
            k if IGNORED.contains(&k) => {}
            other => return Err(format!("{FLAG} {value:?}: unknown attribute {other:?} for type={kind}")),
        }
    }
    match kind.as_str() {
        "registry" => Ok(CacheExport::Registry {
            reference: reference.ok_or_else(|| format!("{FLAG} {value:?}: type=registry needs ref=REFERENCE"))?,
            mode,
            ignore_error,
        }),
        "local" => Ok(CacheExport::Local {
            dest: dest.ok_or_else(|| format!("{FLAG} {value:?}: type=local needs dest=DIRECTORY"))?,
            tag: tag.unwrap_or_else(|| "latest".into()),
            mode,
            ignore_error,
        }),
        _ => Ok(CacheExport::Inline),
    }
}

/// Parses one `--cache-from` value.
pub fn parse_cache_from(value: &str) -> Result<CacheImport, String> {
    const FLAG: &str = "--cache-from";
    let attrs = attributes(value, FLAG)?;
    let kind = cache_type(&attrs, FLAG, value)?;
    if kind == "inline" {
        return Err(format!(
            "{FLAG} {value:?}: an inline cache is imported from its image: use type=registry,ref=IMAGE"
        ));
    }
    let (mut reference, mut src, mut tag) = (None, None, None);
    for (k, v) in &attrs {
        match k.as_str() {
            "type" => {}
            "ref" if kind == "registry" => reference = Some(v.clone()),
            "src" if kind == "local" => src = Some(PathBuf::from(v)),
            "tag" if kind == "local" => tag = Some(v.clone()),
            "digest" | "mode" | "ignore-error" => {}
            k if IGNORED.contains(&k) => {}
            other => return Err(format!("{FLAG} {value:?}: unknown attribute {other:?} for type={kind}")),
        }
    }
    match kind.as_str() {
        "registry" => Ok(CacheImport::Registry {
            reference: reference.ok_or_else(|| format!("{FLAG} {value:?}: type=registry needs ref=REFERENCE"))?,
        }),
        _ => Ok(CacheImport::Local {
            src: src.ok_or_else(|| format!("{FLAG} {value:?}: type=local needs src=DIRECTORY"))?,
            tag: tag.unwrap_or_else(|| "latest".into()),
        }),
    }
}

fn reference(r: &str, flag: &str) -> Result<Reference> {
    r.parse().map_err(|e| UserError(format!("{flag}: invalid reference {r:?}: {e}")).into())
}

/// Where an import reads from.
pub fn import_location(import: &CacheImport) -> Result<CacheLocation> {
    Ok(match import {
        CacheImport::Registry { reference: r } => CacheLocation::Registry(reference(r, "--cache-from")?),
        CacheImport::Local { src, tag } => CacheLocation::Local { dir: src.clone(), tag: tag.clone() },
    })
}

/// Reads every `--cache-from` cache's metadata. One that cannot be read is a warning (the
/// first CI run has no cache yet), as with BuildKit.
pub async fn load_imports(
    worker: &LocalWorker,
    values: &[String],
    quiet: bool,
) -> Result<Vec<rbuild_worker::RemoteCache>> {
    let mut caches = Vec::new();
    for v in values {
        let location = import_location(&parse_cache_from(v).map_err(UserError)?)?;
        match worker.load_remote_cache(location.clone()).await {
            Ok(Some(cache)) => caches.push(cache),
            Ok(None) if !quiet => eprintln!("WARNING: {location} has no rbuild cache metadata; not using it"),
            Err(e) if !quiet => {
                eprintln!("WARNING: importing cache from {location}: {}", crate::render::error_chain(&e))
            }
            _ => {}
        }
    }
    Ok(caches)
}

/// The inline cache field for the image config, when `--cache-to type=inline` asks for one.
pub async fn inline_field(
    worker: &LocalWorker,
    exports: &[CacheExport],
    keys: &[CacheKey],
    result: &Snapshot,
    compression: rbuild_exporter::layer::Compression,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    let mut top = serde_json::Map::new();
    if exports.contains(&CacheExport::Inline) {
        let collected = worker
            .collect_cache(keys, result, CacheMode::Min, compression)
            .await
            .context("collecting the inline cache")?;
        let (k, v) = rbuild_worker::inline_cache_field(&collected)?;
        top.insert(k, v);
    }
    Ok(top)
}

/// Runs the registry and local exports.
pub async fn export(
    worker: &LocalWorker,
    client: &rbuild_registry::Client,
    exports: &[CacheExport],
    keys: &[CacheKey],
    result: &Snapshot,
    compression: rbuild_exporter::layer::Compression,
    quiet: bool,
) -> Result<()> {
    for e in exports {
        let (mode, ignore_error) = match e {
            CacheExport::Registry { mode, ignore_error, .. } | CacheExport::Local { mode, ignore_error, .. } => {
                (*mode, *ignore_error)
            }
            CacheExport::Inline => continue,
        };
        let outcome = export_one(worker, client, e, mode, keys, result, compression).await;
        match outcome {
            Ok(what) if !quiet => eprintln!("{what} done"),
            Ok(_) => {}
            Err(err) if ignore_error => {
                if !quiet {
                    eprintln!("WARNING: exporting the cache failed (ignore-error=true): {err:#}");
                }
            }
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

async fn export_one(
    worker: &LocalWorker,
    client: &rbuild_registry::Client,
    export: &CacheExport,
    mode: CacheMode,
    keys: &[CacheKey],
    result: &Snapshot,
    compression: rbuild_exporter::layer::Compression,
) -> Result<String> {
    let collected =
        worker.collect_cache(keys, result, mode, compression).await.context("collecting the cache to export")?;
    let manifest = worker.write_cache_manifest(&collected)?;
    let records = collected.config.records.len();
    match export {
        CacheExport::Registry { reference: r, .. } => {
            let name = reference(r, "--cache-to")?.to_string();
            crate::push::push(client, worker.store(), &manifest, &name, true)
                .await
                .with_context(|| format!("exporting the cache to {name}"))?;
            Ok(format!("exporting cache ({records} records) to {name}"))
        }
        CacheExport::Local { dest, tag, .. } => {
            let (dest2, name, blobs) = (dest.clone(), format!("rbuild-cache:{tag}"), worker.blob_source());
            tokio::task::spawn_blocking(move || {
                rbuild_exporter::oci::write_oci_dir(&dest2, &manifest, Some(&name), &blobs)
                    .with_context(|| format!("exporting the cache to {}", dest2.display()))
            })
            .await
            .context("cache export task")??;
            Ok(format!("exporting cache ({records} records) to {}", dest.display()))
        }
        CacheExport::Inline => Ok(String::new()),
    }
}

/// The stage of a numbered step's progress name (`[build 3/5] RUN make` → `build`).
fn stage_of(name: &str) -> Option<&str> {
    let label = name.strip_prefix('[')?.split_once("] ")?.0;
    let (stage, position) = label.trim_start().rsplit_once(' ')?;
    position.contains('/').then_some(stage.trim())
}

/// `--no-cache-filter`: every numbered step of the named stages (as BuildKit, only stages
/// named with `AS`, case-insensitively) ignores the cache. Their dependants keep their keys,
/// so they run again only if they miss for their own reasons. Returns the names that match
/// no stage of the Dockerfile.
pub fn apply_no_cache_filter(
    graph: &mut rbuild_solver::ir::Graph,
    dockerfile: &[u8],
    filter: &[String],
) -> Vec<String> {
    if filter.is_empty() {
        return Vec::new();
    }
    let stages: Vec<String> = rbuild_frontend::parse(dockerfile)
        .ok()
        .and_then(|p| rbuild_frontend::instructions::parse_dockerfile(&p).ok())
        .map(|d| d.stages.into_iter().map(|s| s.name.unwrap_or_default()).collect())
        .unwrap_or_default();
    let wanted: Vec<String> = filter.iter().map(|f| f.trim().to_ascii_lowercase()).filter(|f| !f.is_empty()).collect();
    let named = |n: &str| !n.is_empty() && wanted.iter().any(|w| w == n);
    // A single-stage Dockerfile's steps carry no stage in their names.
    let only_stage = (stages.len() == 1 && named(&stages[0])).then(|| stages[0].clone());
    let ids: Vec<_> = graph
        .topological()
        .filter(|(_, op)| !matches!(op, rbuild_solver::ir::Op::Source(_)))
        .map(|(id, _)| id)
        .filter(|id| {
            let name = graph.meta(id).map(|m| m.name.as_str()).unwrap_or("");
            match stage_of(name) {
                Some(stage) => {
                    let stage = stage.to_ascii_lowercase();
                    stages.contains(&stage) && named(&stage)
                }
                None => {
                    only_stage.is_some()
                        && name.strip_prefix('[').and_then(|r| r.split_once("] ")).is_some_and(|(l, _)| l.contains('/'))
                }
            }
        })
        .collect();
    for id in &ids {
        graph.set_ignore_cache(id);
    }
    wanted.into_iter().filter(|w| !stages.contains(w)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_to_values() {
        assert_eq!(
            parse_cache_to("type=registry,ref=r.example/app:cache,mode=max").unwrap(),
            CacheExport::Registry {
                reference: "r.example/app:cache".into(),
                mode: CacheMode::Max,
                ignore_error: false
            }
        );
        assert_eq!(
            parse_cache_to("r.example/app:cache").unwrap(),
            CacheExport::Registry {
                reference: "r.example/app:cache".into(),
                mode: CacheMode::Min,
                ignore_error: false
            }
        );
        assert_eq!(
            parse_cache_to("type=local,dest=/tmp/c,ignore-error=true,compression=zstd").unwrap(),
            CacheExport::Local {
                dest: "/tmp/c".into(),
                tag: "latest".into(),
                mode: CacheMode::Min,
                ignore_error: true
            }
        );
        assert_eq!(parse_cache_to("type=inline").unwrap(), CacheExport::Inline);
        for (bad, says) in [
            ("type=gha", "not supported"),
            ("type=registry", "needs ref="),
            ("type=local", "needs dest="),
            ("type=local,dest=x,mode=all", "not min or max"),
            ("type=local,dest=x,src=y", "unknown attribute \"src\""),
            ("type=inline,mode=max", "unknown attribute \"mode\""),
            ("type=local,dest", "not KEY=VALUE"),
        ] {
            let err = parse_cache_to(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn stage_names_come_from_progress_names() {
        assert_eq!(stage_of("[build 3/5] RUN make"), Some("build"));
        assert_eq!(stage_of("[stage-1  3/12] COPY a b"), Some("stage-1"));
        assert_eq!(stage_of("[3/5] RUN make"), None);
        assert_eq!(stage_of("[internal] load build context"), None);
    }

    #[test]
    fn cache_from_values() {
        assert_eq!(
            parse_cache_from("type=registry,ref=r/app:cache").unwrap(),
            CacheImport::Registry { reference: "r/app:cache".into() }
        );
        assert_eq!(parse_cache_from("r/app:1").unwrap(), CacheImport::Registry { reference: "r/app:1".into() });
        assert_eq!(
            parse_cache_from("type=local,src=/c,tag=v2").unwrap(),
            CacheImport::Local { src: "/c".into(), tag: "v2".into() }
        );
        assert!(parse_cache_from("type=local,dest=/c").unwrap_err().contains("unknown attribute"));
        assert!(parse_cache_from("type=inline").unwrap_err().contains("type=registry,ref=IMAGE"));
        assert!(parse_cache_from("type=s3,bucket=x").unwrap_err().contains("not supported"));
    }
}
