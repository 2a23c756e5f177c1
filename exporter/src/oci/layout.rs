//! OCI image layout outputs: a tar archive (`-o type=oci,dest=x.tar`) or a
//! directory. Both hold `oci-layout`, `index.json` and `blobs/<alg>/<hex>`
//! for every blob reachable from the given manifest (or index).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, Digest, DigestAlgorithm, ImageIndex, ImageManifest, MediaType};
use tar::{EntryType, Header};

use super::blobs::BlobSource;
use super::error::LayoutError;
use super::image::index_document;
use super::mediatype::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST as DOCKER_LIST};
use crate::hash::{ExactReader, HashingReader};

/// Annotation with the full image name (containerd's).
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// Annotation with the tag (OCI's).
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
const MAX_MANIFEST: u64 = 4 << 20;
const MAX_DEPTH: usize = 4;

/// The `index.json` annotations BuildKit writes for `name`: the name itself
/// as `io.containerd.image.name` and its tag (`latest` when it has neither a
/// tag nor a digest) as `org.opencontainers.image.ref.name`.
///
/// `name` is used as given: normalise it first (`docker.io/library/app:1.0`)
/// to match BuildKit byte for byte.
pub fn name_annotations(name: &str) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::new();
    annotations.insert(ANNOTATION_IMAGE_NAME.to_owned(), name.to_owned());
    let (named, digest) = match name.split_once('@') {
        Some((named, _)) => (named, true),
        None => (name, false),
    };
    let last = named.rsplit('/').next().unwrap_or(named);
    let tag = match last.split_once(':') {
        Some((_, tag)) => Some(tag),
        None if !digest => Some("latest"),
        None => None,
    };
    if let Some(tag) = tag {
        annotations.insert(ANNOTATION_REF_NAME.to_owned(), tag.to_owned());
    }
    annotations
}

/// Streams an OCI layout tar to `out`: `oci-layout`, `index.json` (one entry,
/// annotated from `name`), then each blob once. Headers are deterministic
/// (mtime 0, uid/gid 0, mode 0644 or 0755).
///
/// Each blob's size and sha256 are checked while it is copied; on error the
/// output is incomplete and must be discarded. Returns `out`, unflushed
/// beyond what the tar needed.
pub fn write_oci_archive<W: Write>(
    out: W,
    manifest: &Descriptor,
    name: Option<&str>,
    blobs: &dyn BlobSource,
) -> Result<W, LayoutError> {
    write_layout_archive(out, manifest, vec![index_entry(manifest, name)], &[], blobs)
}

/// An OCI layout tar whose `index.json` lists `entries`, with `extra` files
/// after it (the docker archive's `manifest.json` and `repositories`), then
/// every blob reachable from `root`.
pub(super) fn write_layout_archive<W: Write>(
    out: W,
    root: &Descriptor,
    entries: Vec<Descriptor>,
    extra: &[(&str, Vec<u8>)],
    blobs: &dyn BlobSource,
) -> Result<W, LayoutError> {
    let all = reachable_blobs(root, blobs)?;
    let index = index_document(entries).map_err(|source| LayoutError::BuildIndex { source })?;
    let mut builder = tar::Builder::new(out);
    append_file(&mut builder, "oci-layout", OCI_LAYOUT)?;
    append_file(&mut builder, "index.json", &index)?;
    for (path, bytes) in extra {
        append_file(&mut builder, path, bytes)?;
    }
    append_dir(&mut builder, "blobs/")?;
    let mut dirs = HashSet::new();
    for desc in &all {
        let alg = desc.digest().algorithm().to_string();
        if dirs.insert(alg.clone()) {
            append_dir(&mut builder, &format!("blobs/{alg}/"))?;
        }
        let path = format!("blobs/{alg}/{}", desc.digest().digest());
        let (reader, _) = open_checked(desc, blobs)?;
        let mut reader = Verifying::new(desc, reader);
        let mut header = file_header(desc.size(), 0o644);
        let result = builder.append_data(&mut header, &path, &mut reader);
        reader.check(result, Path::new(&path))?;
    }
    builder.into_inner().map_err(|source| LayoutError::Write { path: "<end of archive>".into(), source })
}

/// Writes the same layout into directory `dir` (created if missing). Blobs
/// already present with the right size are kept; new ones are written to a
/// temporary name, verified, then renamed. An existing `index.json` keeps its
/// other entries; one with the same `org.opencontainers.image.ref.name` is
/// replaced.
pub fn write_oci_dir(
    dir: &Path,
    manifest: &Descriptor,
    name: Option<&str>,
    blobs: &dyn BlobSource,
) -> Result<(), LayoutError> {
    let all = reachable_blobs(manifest, blobs)?;
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LayoutError::Write { path, source }
    };
    fs::create_dir_all(dir).map_err(write_err(dir))?;
    for desc in &all {
        let blob_dir = dir.join("blobs").join(desc.digest().algorithm().as_ref());
        let path = blob_dir.join(desc.digest().digest());
        if fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == desc.size()) {
            continue;
        }
        fs::create_dir_all(&blob_dir).map_err(write_err(&blob_dir))?;
        let tmp = blob_dir.join(format!(".tmp-{}-{}", std::process::id(), desc.digest().digest()));
        let result = copy_verified(desc, blobs, &tmp).and_then(|()| fs::rename(&tmp, &path).map_err(write_err(&path)));
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
    }

    let index_path = dir.join("index.json");
    let entry = index_entry(manifest, name);
    let mut manifests = match fs::read(&index_path) {
        Ok(bytes) => serde_json::from_slice::<ImageIndex>(&bytes)
            .map_err(|e| LayoutError::ReadIndex {
                path: index_path.clone(),
                source: io::Error::new(io::ErrorKind::InvalidData, e),
            })?
            .manifests()
            .clone(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(source) => return Err(LayoutError::ReadIndex { path: index_path, source }),
    };
    let ref_name = |d: &Descriptor| d.annotations().as_ref().and_then(|a| a.get(ANNOTATION_REF_NAME).cloned());
    let new_ref = ref_name(&entry);
    manifests.retain(|d| match (&new_ref, ref_name(d)) {
        (Some(new), Some(old)) => *new != old,
        (None, None) => d.digest() != entry.digest(),
        _ => true,
    });
    manifests.push(entry);
    let index = index_document(manifests).map_err(|source| LayoutError::BuildIndex { source })?;
    write_atomic(&dir.join("oci-layout"), OCI_LAYOUT)?;
    write_atomic(&index_path, &index)
}

/// The manifest descriptor as listed in `index.json`.
pub(super) fn index_entry(manifest: &Descriptor, name: Option<&str>) -> Descriptor {
    let mut entry = manifest.clone();
    if let Some(name) = name {
        let mut annotations: HashMap<String, String> = entry.annotations().clone().unwrap_or_default();
        annotations.extend(name_annotations(name));
        entry.set_annotations(Some(annotations));
    }
    entry
}

/// Every blob reachable from `root`, each once, in discovery order:
/// manifest, config, layers (indexes recurse into their manifests).
fn reachable_blobs(root: &Descriptor, blobs: &dyn BlobSource) -> Result<Vec<Descriptor>, LayoutError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    visit(root, blobs, 0, &mut seen, &mut out)?;
    Ok(out)
}

fn visit(
    desc: &Descriptor,
    blobs: &dyn BlobSource,
    depth: usize,
    seen: &mut HashSet<Digest>,
    out: &mut Vec<Descriptor>,
) -> Result<(), LayoutError> {
    if !seen.insert(desc.digest().clone()) {
        return Ok(());
    }
    out.push(desc.clone());
    let media_type = desc.media_type().to_string();
    if *desc.media_type() == MediaType::ImageIndex || media_type == DOCKER_LIST {
        if depth >= MAX_DEPTH {
            return Err(LayoutError::TooDeep { digest: desc.digest().clone() });
        }
        let index: ImageIndex = read_json(desc, blobs)?;
        for child in index.manifests() {
            visit(child, blobs, depth + 1, seen, out)?;
        }
    } else if *desc.media_type() == MediaType::ImageManifest || media_type == DOCKER_MANIFEST {
        let manifest: ImageManifest = read_json(desc, blobs)?;
        for child in std::iter::once(manifest.config()).chain(manifest.layers()) {
            if seen.insert(child.digest().clone()) {
                out.push(child.clone());
            }
        }
    }
    Ok(())
}

pub(super) fn read_json<T: serde::de::DeserializeOwned>(
    desc: &Descriptor,
    blobs: &dyn BlobSource,
) -> Result<T, LayoutError> {
    if desc.size() > MAX_MANIFEST {
        return Err(LayoutError::ManifestTooLarge { digest: desc.digest().clone(), size: desc.size() });
    }
    let (reader, _) = open_checked(desc, blobs)?;
    let mut reader = Verifying::new(desc, reader);
    let mut bytes = Vec::new();
    let result = reader.read_to_end(&mut bytes).map(|_| ());
    reader.check(result, Path::new("<memory>"))?;
    serde_json::from_slice(&bytes)
        .map_err(|source| LayoutError::ParseManifest { digest: desc.digest().clone(), source })
}

/// Opens a blob and checks the source agrees with the descriptor on its size.
fn open_checked<'a>(desc: &Descriptor, blobs: &'a dyn BlobSource) -> Result<(Box<dyn Read + 'a>, u64), LayoutError> {
    if *desc.digest().algorithm() != DigestAlgorithm::Sha256 {
        return Err(LayoutError::UnsupportedDigest { digest: desc.digest().clone() });
    }
    let (reader, size) =
        blobs.open(desc.digest()).map_err(|source| LayoutError::OpenBlob { digest: desc.digest().clone(), source })?;
    if size != desc.size() {
        return Err(LayoutError::BlobSizeMismatch {
            digest: desc.digest().clone(),
            expected: desc.size(),
            found: size,
        });
    }
    Ok((reader, size))
}

/// Reads exactly the descriptor's size while hashing.
struct Verifying<'a, R> {
    desc: &'a Descriptor,
    inner: HashingReader<ExactReader<R>>,
}

impl<'a, R: Read> Verifying<'a, R> {
    fn new(desc: &'a Descriptor, reader: R) -> Self {
        Self { desc, inner: HashingReader::new(ExactReader::new(reader, desc.size())) }
    }

    /// Classifies the copy's outcome and compares the digest.
    fn check(self, result: io::Result<()>, dest: &Path) -> Result<(), LayoutError> {
        let digest = self.desc.digest().clone();
        if let Err(source) = result {
            return Err(if self.inner.get_ref().read_failed {
                LayoutError::ReadBlob { digest, source }
            } else {
                LayoutError::Write { path: dest.to_path_buf(), source }
            });
        }
        let (found, _) = self.inner.finish();
        if found != digest {
            return Err(LayoutError::BlobDigestMismatch { expected: digest, found });
        }
        Ok(())
    }
}

impl<R: Read> Read for Verifying<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

fn copy_verified(desc: &Descriptor, blobs: &dyn BlobSource, tmp: &Path) -> Result<(), LayoutError> {
    let (reader, _) = open_checked(desc, blobs)?;
    let mut file = File::create(tmp).map_err(|source| LayoutError::Write { path: tmp.to_path_buf(), source })?;
    let mut reader = Verifying::new(desc, reader);
    let result = io::copy(&mut reader, &mut file).map(|_| ());
    reader.check(result, tmp)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LayoutError> {
    let write_err = |source| LayoutError::Write { path: path.to_path_buf(), source };
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp: PathBuf = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    fs::write(&tmp, bytes).and_then(|()| fs::rename(&tmp, path)).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        write_err(e)
    })
}

fn file_header(size: u64, mode: u32) -> Header {
    let mut header = Header::new_ustar();
    header.set_entry_type(EntryType::Regular);
    header.set_size(size);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

fn append_file<W: Write>(builder: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> Result<(), LayoutError> {
    let mut header = file_header(bytes.len() as u64, 0o644);
    builder.append_data(&mut header, path, bytes).map_err(|source| LayoutError::Write { path: path.into(), source })
}

fn append_dir<W: Write>(builder: &mut tar::Builder<W>, path: &str) -> Result<(), LayoutError> {
    let mut header = file_header(0, 0o755);
    header.set_entry_type(EntryType::Directory);
    builder
        .append_data(&mut header, path, io::empty())
        .map_err(|source| LayoutError::Write { path: path.into(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! names {
        ($name:expr => $tag:expr) => {
            let a = name_annotations($name);
            assert_eq!(a.get(ANNOTATION_IMAGE_NAME).map(String::as_str), Some($name));
            assert_eq!(a.get(ANNOTATION_REF_NAME).map(String::as_str), $tag, "{}", $name);
        };
    }

    #[test]
    fn tags_from_names() {
        names!("docker.io/library/app:1.0" => Some("1.0"));
        names!("app" => Some("latest"));
        names!("localhost:5000/app" => Some("latest"));
        names!("localhost:5000/app:v2" => Some("v2"));
        names!("app@sha256:0000000000000000000000000000000000000000000000000000000000000000" => None);
        names!("app:t@sha256:0000000000000000000000000000000000000000000000000000000000000000" => Some("t"));
    }
}
