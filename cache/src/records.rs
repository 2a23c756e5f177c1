//! Cache records: what a cache key resolved to.

use serde::{Deserialize, Serialize};

/// One layer of a recorded result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordLayer {
    /// Snapshot id.
    pub id: String,
    /// Opaque label of what produced the layer (the build op's id), so an exporter can tell
    /// which build step a layer belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<String>,
}

/// The result of one build vertex: the chain of snapshots (bottom first) that makes its
/// filesystem.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Layers, lowest first.
    pub chain: Vec<RecordLayer>,
}
