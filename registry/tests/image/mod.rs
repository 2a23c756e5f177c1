//! Small OCI images built in memory for push tests: blobs with their descriptors, a config and
//! a manifest that refer to them.
#![allow(dead_code)]

use bytes::Bytes;
use rbuild_registry::oci_spec::image::{Descriptor, Digest, MediaType};
use rbuild_registry::DigestHasher;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// sha256 of `bytes`.
pub fn sha(bytes: &[u8]) -> Digest {
    let mut h = DigestHasher::sha256();
    h.update(bytes);
    h.finish()
}

/// `n` deterministic bytes that differ with `seed`.
pub fn data(n: usize, seed: u32) -> Bytes {
    (0..n as u32).map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8).collect::<Vec<u8>>().into()
}

/// A blob and its descriptor.
#[derive(Debug, Clone)]
pub struct Blob {
    pub desc: Descriptor,
    pub bytes: Bytes,
}

impl Blob {
    pub fn new(media_type: MediaType, bytes: Bytes) -> Self {
        let desc = Descriptor::new(media_type, bytes.len() as u64, sha(&bytes));
        Self { desc, bytes }
    }

    pub fn layer(n: usize, seed: u32) -> Self {
        Self::new(MediaType::ImageLayer, data(n, seed))
    }
}

/// An image: layers, config and manifest.
#[derive(Debug, Clone)]
pub struct Image {
    pub layers: Vec<Blob>,
    pub config: Blob,
    pub manifest: Bytes,
}

impl Image {
    /// An amd64 image with these layers.
    pub fn new(layers: Vec<Blob>) -> Self {
        let diff_ids: Vec<String> = layers.iter().map(|l| l.desc.digest().to_string()).collect();
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": { "Cmd": ["sh"] },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        });
        let config = Blob::new(MediaType::ImageConfig, serde_json::to_vec(&config).expect("config").into());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.desc,
            "layers": layers.iter().map(|l| &l.desc).collect::<Vec<_>>(),
        });
        let manifest = serde_json::to_vec(&manifest).expect("manifest").into();
        Self { layers, config, manifest }
    }

    pub fn manifest_digest(&self) -> Digest {
        sha(&self.manifest)
    }

    /// Layers then config.
    pub fn blobs(&self) -> impl Iterator<Item = &Blob> {
        self.layers.iter().chain([&self.config])
    }
}
