//! Resolving a reference to one platform's manifest and image configuration.

use bytes::Bytes;
use oci_spec::image::{Descriptor, Digest, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{Response, Url};
use serde::de::DeserializeOwned;

use crate::client::{check_status, read_limited, Client};
use crate::digest::{verify_bytes, verify_descriptor, DigestHasher};
use crate::error::{Error, Result};
use crate::platform::Platform;
use crate::reference::Reference;

/// Docker's manifest list, the predecessor of the OCI image index.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker's image manifest, schema 2.
pub const DOCKER_MANIFEST_V2: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker's image configuration.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Every manifest kind we can use, in the Accept header.
const ACCEPTED: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// Manifests and indexes larger than this are refused (containerd uses the same limit).
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
/// Image configurations larger than this are refused.
pub const MAX_CONFIG_BYTES: u64 = 8 * 1024 * 1024;
/// How many index levels are followed before giving up.
const MAX_INDEX_DEPTH: usize = 4;

/// One platform's image, as [`Client::resolve`] found it.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// Digest of the image manifest (not of the index it was selected from).
    pub digest: Digest,
    /// Digest of the index the manifest was selected from, when the reference named one.
    pub index_digest: Option<Digest>,
    /// The manifest's media type (OCI or docker schema 2).
    pub media_type: MediaType,
    /// The parsed manifest; docker schema 2 manifests parse into the same type.
    pub manifest: ImageManifest,
    /// The manifest exactly as served, which is what `digest` is the hash of.
    pub manifest_bytes: Bytes,
    /// The parsed image configuration.
    pub config: ImageConfiguration,
    /// The configuration blob exactly as served (hashes to the manifest's config digest).
    pub config_bytes: Bytes,
}

/// A manifest or index exactly as the registry served it, verified against its digest.
#[derive(Debug, Clone)]
pub struct RawManifest {
    /// The document's digest.
    pub digest: Digest,
    /// Its media type (an OCI or docker image manifest, index or manifest list).
    pub media_type: MediaType,
    /// The bytes as served.
    pub bytes: Bytes,
}

impl RawManifest {
    /// Whether this is an index (OCI) or a manifest list (docker) rather than an image manifest.
    pub fn is_index(&self) -> bool {
        matches!(self.media_type.as_ref(), OCI_INDEX | DOCKER_MANIFEST_LIST)
    }
}

/// A manifest-endpoint document, verified against its digest.
struct Document {
    url: Url,
    bytes: Bytes,
    media_type: String,
    digest: Digest,
}

enum Kind {
    Index,
    Manifest,
}

impl Document {
    fn kind(&self) -> Result<Kind> {
        match self.media_type.as_str() {
            OCI_INDEX | DOCKER_MANIFEST_LIST => Ok(Kind::Index),
            OCI_MANIFEST | DOCKER_MANIFEST_V2 => Ok(Kind::Manifest),
            other => Err(Error::UnsupportedMediaType { url: (&self.url).into(), media_type: other.to_owned() }),
        }
    }

    fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.bytes).map_err(|source| Error::ManifestParse {
            url: (&self.url).into(),
            media_type: self.media_type.clone(),
            source,
        })
    }
}

impl Client {
    /// Resolves `reference` to the image for `platform`: its manifest digest, manifest and
    /// configuration, all verified.
    ///
    /// When the reference is pinned by digest, the first document must hash to it. When it is a
    /// tag and the registry sends `Docker-Content-Digest`, the document must hash to that. An
    /// index (OCI) or manifest list (docker) is narrowed to the best entry for `platform` (see
    /// [`Platform::matches`]; exact variants win, then index order), and that manifest must
    /// match the entry's digest and size. The config blob must match the manifest's config
    /// descriptor. A single-platform manifest is returned whatever its platform: check
    /// `config.architecture()` if that matters.
    ///
    /// # Errors
    ///
    /// [`Error::ManifestNotFound`], [`Error::NoMatchingPlatform`],
    /// [`Error::UnsupportedMediaType`] (schema 1), [`Error::NotAnImageConfig`] (artifacts),
    /// verification errors ([`Error::DigestMismatch`], [`Error::SizeMismatch`]), parse errors,
    /// and the registry's [`Error::Status`], [`Error::Unauthorized`] or [`Error::Transport`].
    pub async fn resolve(&self, reference: &Reference, platform: &Platform) -> Result<ResolvedImage> {
        let mut document =
            self.fetch_document(reference, reference.manifest_target(), reference.digest(), None).await?;
        let mut index_digest = None;
        let mut depth = 0;
        while let Kind::Index = document.kind()? {
            depth += 1;
            if depth > MAX_INDEX_DEPTH {
                return Err(Error::IndexTooDeep { url: document.url.into() });
            }
            let index: ImageIndex = document.parse()?;
            let entry = select(&index, platform).ok_or_else(|| Error::NoMatchingPlatform {
                reference: Box::new(reference.clone()),
                platform: Box::new(platform.clone()),
                available: available(&index),
            })?;
            index_digest.get_or_insert_with(|| document.digest.clone());
            document =
                self.fetch_document(reference, entry.digest().as_ref(), Some(entry.digest()), Some(entry)).await?;
        }
        let manifest: ImageManifest = document.parse()?;
        let (config, config_bytes) = self.fetch_config(reference, manifest.config()).await?;
        Ok(ResolvedImage {
            digest: document.digest,
            index_digest,
            media_type: MediaType::from(document.media_type.as_str()),
            manifest,
            manifest_bytes: document.bytes,
            config,
            config_bytes,
        })
    }

    /// Fetches the document `reference` names (an image manifest or an index, whatever its
    /// config's media type: artifacts such as build-cache manifests included), verified
    /// against the reference's digest or `Docker-Content-Digest`. Nothing it points to is
    /// fetched.
    ///
    /// # Errors
    ///
    /// [`Error::ManifestNotFound`], verification errors and the registry's errors, as for
    /// [`Client::resolve`].
    pub async fn fetch_manifest(&self, reference: &Reference) -> Result<RawManifest> {
        let document = self.fetch_document(reference, reference.manifest_target(), reference.digest(), None).await?;
        Ok(RawManifest {
            digest: document.digest,
            media_type: MediaType::from(document.media_type.as_str()),
            bytes: document.bytes,
        })
    }

    /// [`Client::fetch_manifest`] of an image manifest or index only, without choosing a
    /// platform.
    ///
    /// # Errors
    ///
    /// As [`Client::fetch_manifest`], and [`Error::UnsupportedMediaType`] for anything but an
    /// image manifest or index (schema 1, artifacts).
    pub async fn fetch_image_or_index(&self, reference: &Reference) -> Result<RawManifest> {
        let document = self.fetch_document(reference, reference.manifest_target(), reference.digest(), None).await?;
        document.kind()?;
        Ok(RawManifest {
            digest: document.digest,
            media_type: MediaType::from(document.media_type.as_str()),
            bytes: document.bytes,
        })
    }

    /// GETs `/manifests/<target>` and verifies it against `expected` (digest) and `entry`
    /// (digest and size), or against `Docker-Content-Digest` when neither is given.
    async fn fetch_document(
        &self,
        reference: &Reference,
        target: &str,
        expected: Option<&Digest>,
        entry: Option<&Descriptor>,
    ) -> Result<Document> {
        let url = self.api_url(reference, &format!("manifests/{target}"))?;
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(ACCEPTED));
        let response = self.get(reference, &url, &headers).await?;
        let response = check_status(response, &url, |envelope| Error::ManifestNotFound {
            reference: Box::new(reference.clone()),
            url: (&url).into(),
            envelope,
        })
        .await?;
        let header_digest = header_digest(&response);
        let content_type = content_type(&response);
        let bytes = read_limited(response, &url, MAX_MANIFEST_BYTES).await?;
        let media_type = media_type_of(content_type.as_deref(), &bytes);

        let digest = match (entry, expected.or(header_digest.as_ref())) {
            (Some(entry), _) => {
                let mut hasher = DigestHasher::for_digest(entry.digest())?;
                hasher.update(&bytes);
                verify_descriptor(entry, hasher)?;
                entry.digest().clone()
            }
            (None, Some(expected)) => {
                verify_bytes(expected, &bytes)?;
                expected.clone()
            }
            (None, None) => {
                let mut hasher = DigestHasher::sha256();
                hasher.update(&bytes);
                hasher.finish()
            }
        };
        Ok(Document { url, bytes, media_type, digest })
    }

    async fn fetch_config(&self, reference: &Reference, desc: &Descriptor) -> Result<(ImageConfiguration, Bytes)> {
        let media_type = desc.media_type().to_string();
        if media_type != OCI_CONFIG && media_type != DOCKER_CONFIG {
            let url = self.api_url(reference, &format!("blobs/{}", desc.digest()))?;
            return Err(Error::NotAnImageConfig { url: url.into(), media_type });
        }
        if desc.size() > MAX_CONFIG_BYTES {
            let url = self.api_url(reference, &format!("blobs/{}", desc.digest()))?;
            return Err(Error::TooLarge { url: url.into(), limit: MAX_CONFIG_BYTES });
        }
        let mut bytes = Vec::new();
        self.fetch_blob(reference, desc, &mut bytes).await?;
        let config = serde_json::from_slice(&bytes)
            .map_err(|source| Error::ConfigParse { digest: desc.digest().clone(), source })?;
        Ok((config, Bytes::from(bytes)))
    }
}

/// The best manifest entry for `platform`: lowest preference, first in index order on ties.
/// Entries without a platform or that are not image manifests or nested indexes are skipped.
fn select<'a>(index: &'a ImageIndex, platform: &Platform) -> Option<&'a Descriptor> {
    index
        .manifests()
        .iter()
        .filter(|d| {
            matches!(d.media_type().as_ref(), OCI_MANIFEST | DOCKER_MANIFEST_V2 | OCI_INDEX | DOCKER_MANIFEST_LIST)
        })
        .filter_map(|d| {
            let candidate = Platform::from_oci(d.platform().as_ref()?);
            Some((platform.preference(&candidate)?, d))
        })
        .min_by_key(|(preference, _)| *preference)
        .map(|(_, d)| d)
}

fn available(index: &ImageIndex) -> Vec<String> {
    index.manifests().iter().filter_map(|d| d.platform().as_ref().map(|p| Platform::from_oci(p).to_string())).collect()
}

fn content_type(response: &Response) -> Option<String> {
    let value = response.headers().get(CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or(value).trim();
    Some(essence.to_ascii_lowercase())
}

fn header_digest(response: &Response) -> Option<Digest> {
    response.headers().get("docker-content-digest")?.to_str().ok()?.parse().ok()
}

/// The document's media type: the Content-Type when it is specific, else the body's own
/// `mediaType`, else a guess from its shape (`manifests` → index, `config` → manifest).
fn media_type_of(content_type: Option<&str>, body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Shape {
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
        config: Option<serde::de::IgnoredAny>,
    }
    let generic = |t: &str| matches!(t, "application/json" | "text/plain" | "application/octet-stream");
    if let Some(t) = content_type.filter(|t| !t.is_empty() && !generic(t)) {
        return t.to_owned();
    }
    match serde_json::from_slice::<Shape>(body) {
        Ok(Shape { media_type: Some(t), .. }) => t,
        Ok(Shape { manifests: Some(_), .. }) => OCI_INDEX.to_owned(),
        Ok(Shape { config: Some(_), .. }) => OCI_MANIFEST.to_owned(),
        _ => content_type.unwrap_or_default().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(entries: &[(&str, &str, &str)]) -> ImageIndex {
        let manifests: Vec<serde_json::Value> = entries
            .iter()
            .enumerate()
            .map(|(i, (media_type, os, arch))| {
                let (arch, variant) = arch.split_once('/').map_or((*arch, None), |(a, v)| (a, Some(v)));
                serde_json::json!({
                    "mediaType": media_type,
                    "digest": format!("sha256:{i:064}"),
                    "size": 100 + i,
                    "platform": { "os": os, "architecture": arch, "variant": variant },
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({ "schemaVersion": 2, "manifests": manifests })).expect("index")
    }

    /// `selects!(entries, platform, index of the chosen entry or None)`
    macro_rules! selects {
        ($entries:expr, $platform:expr, $expected:expr) => {
            let idx = index($entries);
            let platform: Platform = $platform.parse().expect("platform");
            let chosen = select(&idx, &platform).map(|d| d.size() as usize - 100);
            assert_eq!(chosen, $expected, "{} from {:?}", $platform, $entries);
        };
    }

    const M: &str = OCI_MANIFEST;
    const DM: &str = DOCKER_MANIFEST_V2;
    const ATT: &str = "application/vnd.in-toto+json";

    #[test]
    fn select_table() {
        selects!(&[(M, "linux", "amd64"), (M, "linux", "arm64/v8")], "linux/arm64", Some(1));
        selects!(&[(M, "linux", "amd64"), (M, "linux", "arm64/v8")], "linux/amd64", Some(0));
        selects!(&[(M, "linux", "amd64")], "linux/s390x", None);
        selects!(&[(DM, "linux", "arm/v6"), (DM, "linux", "arm/v7")], "linux/arm/v7", Some(1));
        selects!(&[(DM, "linux", "arm/v6"), (DM, "linux", "arm/v5")], "linux/arm/v7", Some(0));
        selects!(&[(ATT, "linux", "amd64"), (M, "linux", "amd64")], "linux/amd64", Some(1));
        selects!(&[(M, "windows", "amd64"), (M, "linux", "amd64")], "linux/amd64", Some(1));
        selects!(&[(M, "linux", "amd64"), (M, "linux", "amd64")], "linux/amd64", Some(0));
    }

    #[test]
    fn media_type_table() {
        let manifest = br#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        let index = br#"{"schemaVersion":2,"manifests":[]}"#;
        let tagged = br#"{"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#;
        assert_eq!(media_type_of(Some(OCI_INDEX), manifest), OCI_INDEX);
        assert_eq!(media_type_of(Some("application/json"), tagged), DOCKER_MANIFEST_V2);
        assert_eq!(media_type_of(None, index), OCI_INDEX);
        assert_eq!(media_type_of(Some("text/plain"), manifest), OCI_MANIFEST);
        assert_eq!(media_type_of(Some("application/json"), b"nope"), "application/json");
        assert_eq!(media_type_of(None, b"nope"), "");
    }
}
