//! Fuzzes the manifest and index walker of the exporters: the input is a blob served as an
//! image manifest (OCI or docker), an OCI index, or a docker manifest list, whose descriptor
//! matches it, in a blob source that also holds a valid config and layer. Writing an OCI archive
//! and a docker archive from it may fail; it must not panic or loop, and an archive written
//! is a tar whose entries all stay relative.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rbuild_exporter::oci::{write_docker_archive, write_oci_archive, MemoryBlobs};
use rbuild_exporter::oci_spec::image::{Descriptor, MediaType};

const MEDIA_TYPES: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

fn check_archive(bytes: &[u8]) {
    let mut archive = tar::Archive::new(bytes);
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let path = entry.path().unwrap().into_owned();
        assert!(path.is_relative() && !path.components().any(|c| c.as_os_str() == ".."), "{path:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, doc)) = data.split_first() else { return };
    let mut blobs = MemoryBlobs::new();
    blobs.insert(br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec());
    blobs.insert(b"layer".to_vec());
    let digest = blobs.insert(doc.to_vec());
    let media_type = MediaType::from(MEDIA_TYPES[usize::from(sel) % MEDIA_TYPES.len()]);
    let desc = Descriptor::new(media_type, doc.len() as u64, digest);
    if let Ok(out) = write_oci_archive(Vec::new(), &desc, Some("fuzz:latest"), &blobs) {
        check_archive(&out);
    }
    if let Ok(out) = write_docker_archive(Vec::new(), &desc, &["fuzz:latest".to_owned()], &blobs) {
        check_archive(&out);
    }
});
