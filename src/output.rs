//! `-o/--output` parsing (docker buildx's CSV syntax).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use rbuild_exporter::layer::Compression;

/// Where the built image goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The local store (`type=image`, the default), under the `-t` names.
    Image,
    /// Push to the registry named by each `-t` name (`type=registry`, `type=image,push=true`,
    /// `--push`).
    Registry,
    /// An OCI image layout, as a tar archive or (with `tar=false`) a directory.
    Oci {
        /// Destination path.
        dest: PathBuf,
        /// Write a tar archive (default) or a directory.
        tar: bool,
    },
    /// A `docker load` archive.
    Docker {
        /// Destination path.
        dest: PathBuf,
    },
    /// The final filesystem, as a directory.
    Local {
        /// Destination directory.
        dest: PathBuf,
    },
    /// The final filesystem, as a tar archive.
    Tar {
        /// Destination path.
        dest: PathBuf,
    },
}

/// How layers and manifests are written, from the outputs' options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerOptions {
    /// Compression of new layers (`compression=`, `compression-level=`).
    pub compression: Compression,
    /// Re-compress existing layers in another format (`force-compression=true`).
    pub force: bool,
    /// OCI media types (`oci-mediatypes=false` for Docker's).
    pub oci_mediatypes: bool,
    /// Clamp file mtimes in the build's new layers to `SOURCE_DATE_EPOCH`
    /// (`rewrite-timestamp=true`).
    pub rewrite_timestamp: bool,
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions {
            compression: Compression::default(),
            force: false,
            oci_mediatypes: true,
            rewrite_timestamp: false,
        }
    }
}

fn parse_bool(k: &str, v: &str) -> Result<bool> {
    v.trim().parse().with_context(|| format!("invalid {k}={v:?}: expected true or false"))
}

/// Parses one `--output` value, folding its layer options into `layer`.
pub fn parse(spec: &str, layer: &mut LayerOptions) -> Result<Output> {
    let mut kind = None;
    let mut dest = None;
    let mut tar = true;
    let mut push = false;
    let mut compression: Option<String> = None;
    let mut level: Option<i32> = None;
    let mut oci_mediatypes = None;
    for field in spec.split(',') {
        let (k, v) =
            field.split_once('=').with_context(|| format!("invalid output field {field:?}: expected key=value"))?;
        match k.trim() {
            "type" => kind = Some(v.trim().to_owned()),
            "dest" => dest = Some(PathBuf::from(v.trim())),
            "tar" => tar = parse_bool(k, v)?,
            "push" => push = parse_bool(k, v)?,
            "compression" => compression = Some(v.trim().to_owned()),
            "compression-level" => {
                level = Some(v.trim().parse().with_context(|| format!("invalid compression-level={v:?}: expected a number"))?);
            }
            "force-compression" => layer.force = parse_bool(k, v)?,
            "rewrite-timestamp" => layer.rewrite_timestamp = parse_bool(k, v)?,
            "oci-mediatypes" => oci_mediatypes = Some(parse_bool(k, v)?),
            // Accepted for compatibility; names come from -t.
            "name" | "store" | "unpack" => {}
            other => bail!(
                "unsupported output option {other:?} (supported: type, dest, tar, push, compression, compression-level, force-compression, oci-mediatypes, rewrite-timestamp)"
            ),
        }
    }
    if compression.is_some() || level.is_some() {
        let name = compression.as_deref().unwrap_or("gzip");
        layer.compression = Compression::from_options(name, level).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    if let Some(o) = oci_mediatypes {
        layer.oci_mediatypes = o;
    }
    // zstd layers exist only with OCI media types (as in BuildKit).
    if matches!(layer.compression, Compression::Zstd { .. }) {
        layer.oci_mediatypes = true;
    }
    let need_dest = |what: &str| dest.clone().with_context(|| format!("type={what} needs dest=PATH"));
    match kind.as_deref() {
        Some("image") | None if dest.is_none() && push => Ok(Output::Registry),
        Some("registry") => Ok(Output::Registry),
        Some("image") | None if dest.is_none() => Ok(Output::Image),
        Some("oci") => Ok(Output::Oci { dest: need_dest("oci")?, tar }),
        Some("docker") => Ok(Output::Docker { dest: need_dest("docker")? }),
        Some("local") => Ok(Output::Local { dest: need_dest("local")? }),
        Some("tar") => Ok(Output::Tar { dest: need_dest("tar")? }),
        Some(other) => {
            bail!("output type {other:?} is not supported (supported: image, registry, oci, docker, local, tar)")
        }
        None => bail!("output {spec:?} has no type= (e.g. type=oci,dest=out.tar)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Output> {
        parse(s, &mut LayerOptions::default())
    }

    #[test]
    fn parses_buildx_syntax() {
        assert_eq!(p("type=oci,dest=out.tar").unwrap(), Output::Oci { dest: "out.tar".into(), tar: true });
        assert_eq!(p("type=oci,dest=d,tar=false").unwrap(), Output::Oci { dest: "d".into(), tar: false });
        assert_eq!(p("type=image").unwrap(), Output::Image);
        assert_eq!(p("type=image,push=true").unwrap(), Output::Registry);
        assert_eq!(p("type=registry").unwrap(), Output::Registry);
        assert_eq!(p("type=docker,dest=x.tar").unwrap(), Output::Docker { dest: "x.tar".into() });
        assert_eq!(p("type=local,dest=out").unwrap(), Output::Local { dest: "out".into() });
        assert_eq!(p("type=tar,dest=fs.tar").unwrap(), Output::Tar { dest: "fs.tar".into() });
        assert!(p("type=oci").is_err());
        assert!(p("type=weird,dest=x").is_err());
        assert!(p("nonsense").is_err());
    }

    #[test]
    fn layer_options_fold_in() {
        let mut l = LayerOptions::default();
        parse("type=image,compression=zstd,compression-level=5,oci-mediatypes=false", &mut l).unwrap();
        assert_eq!(l.compression, Compression::Zstd { level: 5 });
        assert!(l.oci_mediatypes, "zstd forces OCI media types");
        let mut l = LayerOptions::default();
        parse("type=oci,dest=x,compression=gzip,force-compression=true,oci-mediatypes=false", &mut l).unwrap();
        assert!(l.force && !l.oci_mediatypes);
        assert!(parse("type=image,compression=brotli", &mut LayerOptions::default()).is_err());
    }
}
