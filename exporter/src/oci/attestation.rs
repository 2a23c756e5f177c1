//! Attestation manifests, as BuildKit stores them beside the images of an index: one OCI
//! manifest per image manifest, listed after all the images with platform `unknown/unknown`
//! (so that no runtime picks it) and the annotations `vnd.docker.reference.type:
//! attestation-manifest` and `vnd.docker.reference.digest: <the image manifest's digest>`. Each
//! of its layers is one in-toto statement (`application/vnd.in-toto+json`) annotated with its
//! predicate type; its config is a placeholder image config whose diff ids are the layers'
//! digests.

use std::collections::HashMap;

use oci_spec::image::{Descriptor, ImageManifestBuilder, MediaType, PlatformBuilder};
use serde_json::json;

use super::error::ImageError;
use super::image::canonical_json;
use crate::hash::sha256_digest;

/// Media type of an in-toto statement layer.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
/// Layer annotation naming the statement's predicate type.
pub const ANNOTATION_PREDICATE_TYPE: &str = "in-toto.io/predicate-type";
/// Index annotation naming what an entry is (`attestation-manifest`).
pub const ANNOTATION_REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// Index annotation naming the manifest an attestation manifest describes.
pub const ANNOTATION_REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
/// The value of [`ANNOTATION_REFERENCE_TYPE`] for attestations.
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";

/// One in-toto statement to attach.
#[derive(Debug, Clone)]
pub struct Statement {
    /// Its `predicateType`.
    pub predicate_type: String,
    /// The statement's JSON.
    pub json: Vec<u8>,
}

/// An attestation manifest and every blob it refers to, ready to store or push.
#[derive(Debug, Clone)]
pub struct BuiltAttestation {
    /// Blobs of the statements and the config, with their descriptors.
    pub blobs: Vec<(Descriptor, Vec<u8>)>,
    /// The manifest document.
    pub manifest_json: Vec<u8>,
    /// Its descriptor as the index lists it (platform `unknown/unknown`, the reference
    /// annotations).
    pub manifest: Descriptor,
}

/// The attestation manifest of `subject` (an image manifest) holding `statements`.
pub fn build_attestation(subject: &Descriptor, statements: &[Statement]) -> Result<BuiltAttestation, ImageError> {
    let mut blobs = Vec::with_capacity(statements.len() + 1);
    let mut layers = Vec::with_capacity(statements.len());
    for s in statements {
        let mut desc = Descriptor::new(MediaType::Other(IN_TOTO.into()), s.json.len() as u64, sha256_digest(&s.json));
        desc.set_annotations(Some(HashMap::from([(ANNOTATION_PREDICATE_TYPE.to_owned(), s.predicate_type.clone())])));
        layers.push(desc.clone());
        blobs.push((desc, s.json.clone()));
    }
    // Only there because a manifest must have a config: BuildKit's placeholder image config.
    let config_json = canonical_json(&json!({
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.digest().to_string()).collect::<Vec<_>>(),
        },
    }))
    .map_err(|source| ImageError::Serialize { what: "attestation config", source })?;
    let config = Descriptor::new(MediaType::ImageConfig, config_json.len() as u64, sha256_digest(&config_json));
    blobs.push((config.clone(), config_json));
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers)
        .build()
        .map_err(|source| ImageError::Build { what: "attestation manifest", source })?;
    let manifest_json =
        canonical_json(&manifest).map_err(|source| ImageError::Serialize { what: "attestation manifest", source })?;
    let mut desc = Descriptor::new(MediaType::ImageManifest, manifest_json.len() as u64, sha256_digest(&manifest_json));
    let platform = PlatformBuilder::default()
        .architecture("unknown")
        .os("unknown")
        .build()
        .map_err(|source| ImageError::Build { what: "attestation platform", source })?;
    desc.set_platform(Some(platform));
    desc.set_annotations(Some(HashMap::from([
        (ANNOTATION_REFERENCE_TYPE.to_owned(), ATTESTATION_MANIFEST.to_owned()),
        (ANNOTATION_REFERENCE_DIGEST.to_owned(), subject.digest().to_string()),
    ])));
    Ok(BuiltAttestation { blobs, manifest_json, manifest: desc })
}

/// Is this index entry an attestation manifest (not an image to run)?
pub fn is_attestation(desc: &Descriptor) -> bool {
    desc.annotations().as_ref().and_then(|a| a.get(ANNOTATION_REFERENCE_TYPE)).map(String::as_str)
        == Some(ATTESTATION_MANIFEST)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::ImageManifest;

    #[test]
    fn lays_out_an_attestation_manifest_as_buildkit_does() {
        let subject = Descriptor::new(MediaType::ImageManifest, 10, sha256_digest(b"image"));
        let statements = [
            Statement { predicate_type: "https://slsa.dev/provenance/v0.2".into(), json: b"{\"a\":1}".to_vec() },
            Statement { predicate_type: "https://spdx.dev/Document".into(), json: b"{\"b\":2}".to_vec() },
        ];
        let built = build_attestation(&subject, &statements).unwrap();
        assert!(is_attestation(&built.manifest));
        let platform = built.manifest.platform().clone().unwrap();
        assert_eq!(platform.architecture().to_string(), "unknown");
        assert_eq!(platform.os().to_string(), "unknown");
        let annotations = built.manifest.annotations().clone().unwrap();
        assert_eq!(annotations[ANNOTATION_REFERENCE_DIGEST], subject.digest().to_string());
        assert_eq!(built.manifest.digest(), &sha256_digest(&built.manifest_json));

        let manifest: ImageManifest = serde_json::from_slice(&built.manifest_json).unwrap();
        assert_eq!(manifest.layers().len(), 2);
        for (layer, s) in manifest.layers().iter().zip(&statements) {
            assert_eq!(layer.media_type().to_string(), IN_TOTO);
            assert_eq!(layer.digest(), &sha256_digest(&s.json));
            assert_eq!(layer.annotations().as_ref().unwrap()[ANNOTATION_PREDICATE_TYPE], s.predicate_type);
        }
        // Every blob the manifest names is there, with its content.
        let config: serde_json::Value = serde_json::from_slice(
            &built.blobs.iter().find(|(d, _)| d.digest() == manifest.config().digest()).unwrap().1,
        )
        .unwrap();
        assert_eq!(config["architecture"], "unknown");
        assert_eq!(config["rootfs"]["diff_ids"][1], manifest.layers()[1].digest().to_string());
        for layer in manifest.layers() {
            assert!(built.blobs.iter().any(|(d, b)| d.digest() == layer.digest() && sha256_digest(b) == *d.digest()));
        }
    }

    #[test]
    fn image_entries_are_not_attestations() {
        let image = Descriptor::new(MediaType::ImageManifest, 10, sha256_digest(b"image"));
        assert!(!is_attestation(&image));
    }
}
