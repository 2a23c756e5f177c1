//! The frontend's image resolver, backed by the registry client.

use std::collections::HashMap;
use std::sync::Mutex;

use rbuild_frontend::{ImageResolver, ResolveError, ResolvedImage};
use rbuild_registry::{Client, Reference};
use rbuild_solver::ir::Platform;

/// Resolves base images over the network, once per reference and platform per build.
#[derive(Debug)]
pub struct RegistryResolver {
    client: Client,
    handle: tokio::runtime::Handle,
    seen: Mutex<HashMap<(String, Platform), ResolvedImage>>,
}

impl RegistryResolver {
    /// A resolver that runs requests on `handle` (it is called from a blocking thread).
    pub fn new(client: Client, handle: tokio::runtime::Handle) -> RegistryResolver {
        RegistryResolver { client, handle, seen: Mutex::new(HashMap::new()) }
    }
}

impl ImageResolver for RegistryResolver {
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, ResolveError> {
        let key = (reference.to_owned(), platform.clone());
        if let Some(hit) = self.seen.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(hit);
        }
        if let Some(layout) = rbuild_worker::oci_layout::LayoutRef::parse(reference) {
            // `--build-context NAME=oci-layout://DIR`: read from the local layout.
            let image = rbuild_worker::oci_layout::resolve(&layout, platform)
                .map_err(|e| ResolveError::Registry(Box::new(e)))?;
            return Ok(ResolvedImage {
                reference: layout.name(),
                digest: image.digest,
                config: image.config,
                raw_config: Some(image.raw_config),
            });
        }
        let r: Reference = reference.parse().map_err(|e| ResolveError::Registry(Box::new(e)))?;
        let rp = rbuild_registry::Platform::new(&platform.os, &platform.architecture, platform.variant.as_deref());
        // The registry's own error where it says more: which platforms the image has, and
        // that credentials were sent and refused (not that none were found).
        let resolved = self.handle.block_on(self.client.resolve(&r, &rp)).map_err(|e| match e {
            rbuild_registry::Error::ManifestNotFound { .. } => ResolveError::NotFound,
            rbuild_registry::Error::Unauthorized { sent_credentials: false, .. } => ResolveError::Unauthorized,
            other => ResolveError::Registry(Box::new(other)),
        })?;
        let out = ResolvedImage {
            reference: r.to_string(),
            digest: resolved.digest.to_string(),
            config: resolved.config,
            raw_config: Some(resolved.config_bytes.to_vec()),
        };
        if let Ok(mut m) = self.seen.lock() {
            m.insert(key, out.clone());
        }
        Ok(out)
    }
}
