//! Docker schema 2 media types and their OCI equivalents, for images written
//! with `oci-mediatypes=false` (old registries) and for bases pulled with
//! docker media types.

use oci_spec::image::{Descriptor, MediaType};

use super::error::ImageError;

/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker uncompressed layer (containerd's name; registries accept it).
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker foreign (non-distributable) gzip layer.
pub const DOCKER_FOREIGN_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

/// (OCI, docker) pairs of layer media types.
const LAYER_PAIRS: [(MediaType, &str); 3] = [
    (MediaType::ImageLayerGzip, DOCKER_LAYER_GZIP),
    (MediaType::ImageLayer, DOCKER_LAYER),
    (MediaType::ImageLayerNonDistributableGzip, DOCKER_FOREIGN_LAYER_GZIP),
];

/// The layer descriptor with its media type in the wanted family (OCI when
/// `oci`, else docker). Unknown media types are kept; a zstd layer has no
/// docker media type and is refused.
pub(crate) fn convert_layer(layer: &Descriptor, oci: bool) -> Result<Descriptor, ImageError> {
    let current = layer.media_type();
    let mut converted = layer.clone();
    for (oci_type, docker_type) in LAYER_PAIRS {
        if oci && current.as_ref() == docker_type {
            converted.set_media_type(oci_type);
            return Ok(converted);
        }
        if !oci && *current == oci_type {
            converted.set_media_type(MediaType::Other(docker_type.to_owned()));
            return Ok(converted);
        }
    }
    if !oci && matches!(current, MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd) {
        return Err(ImageError::ZstdNeedsOciMediaTypes { digest: layer.digest().clone() });
    }
    Ok(converted)
}

/// Manifest and config media types of the wanted family.
pub(crate) fn manifest_and_config(oci: bool) -> (MediaType, MediaType) {
    if oci {
        (MediaType::ImageManifest, MediaType::ImageConfig)
    } else {
        (MediaType::Other(DOCKER_MANIFEST.to_owned()), MediaType::Other(DOCKER_CONFIG.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sha256_digest;

    fn layer(media_type: MediaType) -> Descriptor {
        Descriptor::new(media_type, 1, sha256_digest(b"x"))
    }

    macro_rules! convert {
        ($from:expr, oci = $oci:expr => $to:expr) => {
            let got = convert_layer(&layer(MediaType::from($from)), $oci).unwrap();
            assert_eq!(got.media_type().as_ref(), $to, "{} (oci={})", $from, $oci);
        };
    }

    #[test]
    fn layer_types() {
        convert!("application/vnd.oci.image.layer.v1.tar+gzip", oci = false => DOCKER_LAYER_GZIP);
        convert!(DOCKER_LAYER_GZIP, oci = true => "application/vnd.oci.image.layer.v1.tar+gzip");
        convert!(DOCKER_LAYER_GZIP, oci = false => DOCKER_LAYER_GZIP);
        convert!("application/vnd.oci.image.layer.v1.tar", oci = false => DOCKER_LAYER);
        convert!(DOCKER_LAYER, oci = true => "application/vnd.oci.image.layer.v1.tar");
        convert!(DOCKER_FOREIGN_LAYER_GZIP, oci = true => "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip");
        convert!("application/x-custom", oci = false => "application/x-custom");
        assert!(matches!(
            convert_layer(&layer(MediaType::ImageLayerZstd), false),
            Err(ImageError::ZstdNeedsOciMediaTypes { .. })
        ));
    }
}
