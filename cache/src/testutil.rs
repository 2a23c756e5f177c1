//! Helpers for the unit tests: small stores with images, records and snapshots.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::{Digest, ImageRecord, LockMode, Record, RecordLayer, SnapshotMeta, Store, StoreOptions};

pub(crate) fn exclusive(dir: &Path) -> Store {
    Store::open_with(dir, &StoreOptions { lock: LockMode::Exclusive, durable: false, ..StoreOptions::default() })
        .unwrap()
}

/// Commits snapshot `id` holding one file of `len` bytes, with `blob` as its layer blob.
pub(crate) fn snapshot(s: &Store, id: &str, len: usize, blob: Option<&Digest>) {
    let p = s.prepare_snapshot().unwrap();
    std::fs::write(p.diff().join("f"), vec![b'x'; len]).unwrap();
    let meta = SnapshotMeta { blob: blob.cloned(), blob_size: 0, ..SnapshotMeta::default() };
    s.commit_snapshot(p, id, &meta).unwrap();
}

/// A blob with distinct content of about `len` bytes.
pub(crate) fn blob(s: &Store, tag: &str, len: usize) -> Digest {
    let mut bytes = tag.as_bytes().to_vec();
    bytes.resize(len.max(tag.len()), b'.');
    s.put_blob(&bytes, None).unwrap().0
}

pub(crate) fn record(s: &Store, key: &str, ids: &[&str]) {
    let chain = ids.iter().map(|id| RecordLayer { id: (*id).to_owned(), producer: None }).collect();
    s.put_record(key, &Record { chain }).unwrap();
}

/// Names an image whose manifest lists `layers`; returns (manifest, config).
pub(crate) fn image(s: &Store, name: &str, layers: &[&Digest]) -> (Digest, Digest) {
    let (config, _) = s.put_blob(format!("{{\"config-of\":\"{name}\"}}").as_bytes(), None).unwrap();
    let layers: Vec<_> = layers
        .iter()
        .map(|d| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d.to_string(), "size": 1}))
        .collect();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 1},
        "layers": layers,
    });
    let (manifest, size) = s.put_blob(&serde_json::to_vec(&manifest).unwrap(), None).unwrap();
    s.put_image(&ImageRecord {
        name: name.to_owned(),
        manifest: manifest.clone(),
        manifest_size: size,
        config: config.clone(),
        size: 0,
        created: 0,
    })
    .unwrap();
    (manifest, config)
}

/// Sets a file's mtime to `ago` before now.
pub(crate) fn age(path: &Path, ago: Duration) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(SystemTime::now() - ago).unwrap();
}

pub(crate) fn age_record(s: &Store, key: &str, ago: Duration) {
    age(&s.record_path(key), ago);
}
