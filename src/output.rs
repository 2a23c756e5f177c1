//! `-o/--output` parsing (docker buildx's CSV syntax).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

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
}

/// Parses one `--output` value.
pub fn parse(spec: &str) -> Result<Output> {
    let mut kind = None;
    let mut dest = None;
    let mut tar = true;
    let mut push = false;
    for field in spec.split(',') {
        let (k, v) =
            field.split_once('=').with_context(|| format!("invalid output field {field:?}: expected key=value"))?;
        match k.trim() {
            "type" => kind = Some(v.trim().to_owned()),
            "dest" => dest = Some(PathBuf::from(v.trim())),
            "tar" => {
                tar = v.trim().parse().with_context(|| format!("invalid tar={v:?}: expected true or false"))?;
            }
            "push" => {
                push = v.trim().parse().with_context(|| format!("invalid push={v:?}: expected true or false"))?;
            }
            other => bail!("unsupported output option {other:?} (supported so far: type, dest, tar, push)"),
        }
    }
    match kind.as_deref() {
        Some("image") | None if dest.is_none() && push => Ok(Output::Registry),
        Some("registry") => Ok(Output::Registry),
        Some("image") | None if dest.is_none() => Ok(Output::Image),
        Some("oci") => {
            let dest = dest.context("type=oci needs dest=PATH")?;
            Ok(Output::Oci { dest, tar })
        }
        Some(other) => bail!("output type {other:?} is not supported yet (supported: image, oci)"),
        None => bail!("output {spec:?} has no type= (e.g. type=oci,dest=out.tar)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildx_syntax() {
        assert_eq!(parse("type=oci,dest=out.tar").unwrap(), Output::Oci { dest: "out.tar".into(), tar: true });
        assert_eq!(parse("type=oci,dest=d,tar=false").unwrap(), Output::Oci { dest: "d".into(), tar: false });
        assert_eq!(parse("type=image").unwrap(), Output::Image);
        assert_eq!(parse("type=image,push=true").unwrap(), Output::Registry);
        assert_eq!(parse("type=registry").unwrap(), Output::Registry);
        assert!(parse("type=oci").is_err());
        assert!(parse("type=weird,dest=x").is_err());
        assert!(parse("nonsense").is_err());
    }
}
