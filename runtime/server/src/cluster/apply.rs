//! Applying the control topic's records, in topic order, through the same
//! registry and topology calls a single node's API makes. Records are
//! trusted to have been validated by the node that wrote them, but never
//! to be well formed: a record that cannot be applied is an error for the
//! caller to report, never a panic.

use std::collections::{BTreeMap, HashMap, VecDeque};

use std::sync::Arc;

use crate::ControlPlane;
use crate::registry::digest_of;
use crate::topologies::{DesiredState, TopologiesError};

use super::Cluster;
use super::keys::{DesiredEntry, Key, Manifest, Member, TopologyEntry, decode};

/// Chunks of uploads whose manifest has not come yet, bounded in bytes:
/// when a new chunk would pass the bound, the oldest upload's chunks go
/// (its manifest will then be reported as incomplete).
#[derive(Debug, Default)]
pub(super) struct PendingChunks {
    /// `module/<name>/<version>/<hex>` → chunk index → bytes.
    uploads: HashMap<String, BTreeMap<u32, Vec<u8>>>,
    /// Upload keys, oldest first.
    order: VecDeque<String>,
    bytes: usize,
}

impl PendingChunks {
    fn insert(&mut self, upload: String, index: u32, bytes: Vec<u8>, budget: usize) {
        while self.bytes + bytes.len() > budget && !self.order.is_empty() {
            let oldest = self.order.pop_front().expect("not empty");
            if let Some(chunks) = self.uploads.remove(&oldest) {
                self.bytes -= chunks.values().map(Vec::len).sum::<usize>();
                tracing::warn!(upload = %oldest, "dropped the chunks of an unfinished module upload: more chunks are pending than the budget allows");
            }
        }
        let chunks = self.uploads.entry(upload.clone()).or_default();
        if chunks.is_empty() {
            self.order.push_back(upload);
        }
        self.bytes += bytes.len();
        if let Some(old) = chunks.insert(index, bytes) {
            self.bytes -= old.len();
        }
    }

    fn remove_chunk(&mut self, upload: &str, index: u32) {
        if let Some(chunks) = self.uploads.get_mut(upload)
            && let Some(old) = chunks.remove(&index)
        {
            self.bytes -= old.len();
        }
    }

    fn take(&mut self, upload: &str) -> BTreeMap<u32, Vec<u8>> {
        self.order.retain(|u| u != upload);
        let chunks = self.uploads.remove(upload).unwrap_or_default();
        self.bytes -= chunks.values().map(Vec::len).sum::<usize>();
        chunks
    }
}

/// What the reader thread keeps between records.
#[derive(Debug, Default)]
pub(super) struct ApplyState {
    pub chunks: PendingChunks,
    /// Desired state per topology, as the topic last said (it may come
    /// before its topology after compaction).
    pub desired: HashMap<String, DesiredState>,
}

/// What applying a record changed in the cluster's view.
pub(super) enum Applied {
    Nothing,
    /// A module version exists: `(name, version)` → `(hex, chunks)`.
    Manifest((String, u32), (String, u32)),
    ManifestGone((String, u32)),
    Member(Member),
    MemberGone(String),
}

/// Applies one record. `max_module_bytes` bounds what a manifest may
/// announce and what chunks may pile up.
pub(super) fn apply(
    plane: &Arc<ControlPlane>,
    cluster: &Cluster,
    state: &mut ApplyState,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    max_module_bytes: usize,
) -> Result<Applied, String> {
    let key = Key::parse(key.ok_or("the record has no key")?)?;
    let upload_of = |name: &str, version: u32, hex: &str| format!("module/{name}/{version}/{hex}");
    match (key, value) {
        (
            Key::Chunk {
                name,
                version,
                hex,
                index,
            },
            value,
        ) => {
            let upload = upload_of(&name, version, &hex);
            match value {
                Some(bytes) => {
                    if bytes.len() > max_module_bytes {
                        return Err(format!(
                            "a chunk of {} bytes is larger than a module may be ({max_module_bytes})",
                            bytes.len()
                        ));
                    }
                    state
                        .chunks
                        .insert(upload, index, bytes.to_vec(), 2 * max_module_bytes);
                }
                None => state.chunks.remove_chunk(&upload, index),
            }
            Ok(Applied::Nothing)
        }
        (Key::Manifest { name, version, hex }, Some(value)) => {
            let upload = upload_of(&name, version, &hex);
            let chunks = state.chunks.take(&upload);
            let manifest: Manifest = decode("module", value)?;
            if manifest.digest != format!("sha256:{hex}") {
                return Err(format!(
                    "the manifest's digest {} is not the one its key names",
                    manifest.digest
                ));
            }
            if manifest.size > max_module_bytes {
                return Err(format!(
                    "module {name}@{version} is {} bytes, more than this node accepts ({max_module_bytes}, --max-module-bytes)",
                    manifest.size
                ));
            }
            let mut bytes = Vec::with_capacity(manifest.size);
            for index in 0..manifest.chunks {
                let Some(chunk) = chunks.get(&index) else {
                    return Err(format!(
                        "module {name}@{version}: chunk {index} of {} is missing (the upload was cut short, or its chunks were dropped)",
                        manifest.chunks
                    ));
                };
                if bytes.len() + chunk.len() > manifest.size {
                    return Err(format!(
                        "module {name}@{version}: its chunks hold more than the {} bytes the manifest says",
                        manifest.size
                    ));
                }
                bytes.extend_from_slice(chunk);
            }
            if bytes.len() != manifest.size || digest_of(&bytes) != manifest.digest {
                return Err(format!(
                    "module {name}@{version}: its chunks ({} bytes, {}) do not match the manifest ({} bytes, {}); not applied",
                    bytes.len(),
                    digest_of(&bytes),
                    manifest.size,
                    manifest.digest
                ));
            }
            plane
                .registry
                .push_placed(&name, &bytes, Some((version, manifest.created_at)))
                .map_err(|e| e.to_string())?;
            Ok(Applied::Manifest((name, version), (hex, manifest.chunks)))
        }
        (Key::Manifest { name, version, hex }, None) => {
            state.chunks.take(&upload_of(&name, version, &hex));
            let present = plane
                .registry
                .versions(&name)
                .map_err(|e| e.to_string())?
                .into_iter()
                .any(|v| v.version == version && v.digest == format!("sha256:{hex}"));
            if present {
                plane
                    .topologies
                    .delete_module(&name, version)
                    .map_err(|e| e.to_string())?;
            }
            Ok(Applied::ManifestGone((name, version)))
        }
        (Key::Topology(name), Some(value)) => {
            let entry: TopologyEntry = decode("topology", value)?;
            let same = plane
                .topologies
                .record(&name)
                .is_ok_and(|r| r.doc == entry.doc && r.modules == entry.modules);
            if !same {
                super::upgrade::apply_record(plane, &name, entry.doc, &entry.modules)
                    .map_err(|e| e.to_string())?;
            }
            match state.desired.get(&name) {
                Some(&desired) => bring_to(plane, cluster, &name, desired),
                None => Ok(Applied::Nothing),
            }
        }
        (Key::Topology(name), None) => {
            match plane.topologies.record(&name) {
                Err(TopologiesError::NotFound(_)) => return Ok(Applied::Nothing),
                Err(e) => return Err(e.to_string()),
                Ok(_) => {}
            }
            if plane
                .topologies
                .status(&name)
                .is_ok_and(|s| s.state.wants_running())
            {
                plane
                    .topologies
                    .stop(&name, None)
                    .map_err(|e| e.to_string())?;
            }
            plane.topologies.delete(&name).map_err(|e| e.to_string())?;
            Ok(Applied::Nothing)
        }
        (Key::Desired(name), Some(value)) => {
            let entry: DesiredEntry = decode("desired", value)?;
            state.desired.insert(name.clone(), entry.desired);
            match plane.topologies.record(&name) {
                Ok(_) => bring_to(plane, cluster, &name, entry.desired),
                // Its topology record comes later (compaction keeps the
                // newest of each key, in the order they were written).
                Err(TopologiesError::NotFound(_)) => Ok(Applied::Nothing),
                Err(e) => Err(e.to_string()),
            }
        }
        (Key::Desired(name), None) => {
            state.desired.remove(&name);
            Ok(Applied::Nothing)
        }
        (Key::Member(node), Some(value)) => {
            let member: Member = decode("member", value)?;
            if member.node != node {
                return Err(format!(
                    "the heartbeat of node {node} says it is node {}",
                    member.node
                ));
            }
            Ok(Applied::Member(member))
        }
        (Key::Member(node), None) => Ok(Applied::MemberGone(node)),
    }
}

/// Starts or stops topology `name` on this node to match `desired`: a
/// running one reads the partitions its group gives this node.
fn bring_to(
    plane: &Arc<ControlPlane>,
    cluster: &Cluster,
    name: &str,
    desired: DesiredState,
) -> Result<Applied, String> {
    match desired {
        DesiredState::Running => cluster
            .tasks
            .run(plane, &cluster.name, &cluster.node, name)
            .map_err(|e| format!("topology `{name}` did not start on this node: {e}"))?,
        DesiredState::Stopped => cluster
            .tasks
            .stop(plane, name)
            .map_err(|e| format!("topology `{name}` did not stop on this node: {e}"))?,
    }
    Ok(Applied::Nothing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_chunks_stay_within_their_budget_dropping_the_oldest_upload() {
        let mut pending = PendingChunks::default();
        pending.insert("a".into(), 0, vec![0; 40], 100);
        pending.insert("a".into(), 1, vec![0; 40], 100);
        pending.insert("b".into(), 0, vec![0; 40], 100);
        // `a` went whole to make room for `b`.
        assert!(pending.take("a").is_empty());
        assert_eq!(pending.bytes, 40);
        // A chunk sent twice counts once.
        pending.insert("b".into(), 0, vec![0; 30], 100);
        assert_eq!(pending.bytes, 30);
        pending.remove_chunk("b", 0);
        assert_eq!(pending.bytes, 0);
        assert!(pending.take("b").is_empty());
    }
}
