//! State queries across a cluster: `GET .../state/{state}?key=K` on any
//! node is answered by the node that holds the key's partition.
//!
//! The key's partition is Kafka's key partitioner over the topology's
//! input partition count (the changelog's partitioning, `changelog.rs`);
//! its owner is the member whose last heartbeat lists that partition. The
//! asking node forwards the request there once (marked `forwarded=1`, so
//! it is never forwarded again); the owner checks against its own current
//! assignment, which is the truth where a heartbeat may be a few seconds
//! old, and answers, naming itself (`node`). A topology without a Kafka
//! input is answered where it is asked. Keyed state is partitioned like
//! the topology's lead input (its first `kafka:` source's topic), which
//! its other inputs and repartition topics are co-partitioned with.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use weir_connectors::{partition_of, topic_partitions};

use super::{Cluster, ClusterError};
use crate::ControlPlane;

/// How long a forwarded query may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a state query is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryRoute {
    Here,
    /// Forward to this node's API.
    There {
        node: String,
        address: String,
    },
}

/// An answer another node gave: its status and body.
#[derive(Debug)]
pub struct Forwarded {
    pub status: u16,
    pub body: serde_json::Value,
}

/// Partition counts of input topics, looked up once.
#[derive(Debug, Default)]
pub(super) struct PartitionCounts(Mutex<HashMap<String, u32>>);

impl Cluster {
    /// The lead input topic of topology `name` and the partition of `key`
    /// in it; `None` when the topology reads no Kafka topic.
    fn key_partition(
        &self,
        plane: &ControlPlane,
        name: &str,
        key: &[u8],
    ) -> Result<Option<(String, i32)>, ClusterError> {
        let record = plane.topologies.record(name)?;
        // The lead input: the other inputs and the repartition topics
        // are co-partitioned with it (`repartition.rs`).
        let Some(first) = super::lead_input(&record.doc) else {
            return Ok(None);
        };
        let topic = first.topic.clone();
        let known = self
            .partition_counts
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&topic)
            .copied();
        let count = match known {
            Some(n) => n,
            None => {
                let brokers = first
                    .brokers
                    .clone()
                    .or_else(|| plane.config.kafka_brokers.clone())
                    .unwrap_or_else(|| self.brokers.clone());
                let n = topic_partitions(&brokers, &topic)?;
                self.partition_counts
                    .0
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(topic.clone(), n);
                n
            }
        };
        Ok(Some((topic, partition_of(key, count) as i32)))
    }

    /// Where the query for `key` of topology `name` is answered: here,
    /// or at the member whose heartbeat holds the key's partition.
    pub fn route_state_query(
        &self,
        plane: &ControlPlane,
        name: &str,
        key: &[u8],
    ) -> Result<QueryRoute, ClusterError> {
        let Some((topic, partition)) = self.key_partition(plane, name, key)? else {
            return Ok(QueryRoute::Here);
        };
        if self.holds(plane, name, &topic, partition) {
            return Ok(QueryRoute::Here);
        }
        let view = self.view();
        // Only a member whose heartbeat is recent: a killed node's last
        // heartbeat still lists the partitions it held.
        let now = weir_types::now_ms();
        let owner = view.members.values().find(|m| {
            m.node != self.node
                && super::alive(m, now)
                && m.partitions
                    .get(name)
                    .and_then(|t| t.get(&topic))
                    .is_some_and(|ps| ps.contains(&partition))
        });
        match owner {
            Some(m) => Ok(QueryRoute::There {
                node: m.node.clone(),
                address: m.address.clone(),
            }),
            None => Err(ClusterError::NoOwner {
                topology: name.to_string(),
                topic,
                partition,
            }),
        }
    }

    /// A forwarded query arrived here: answered only if this node holds
    /// the key's partition now.
    pub fn check_owner(
        &self,
        plane: &ControlPlane,
        name: &str,
        key: &[u8],
    ) -> Result<(), ClusterError> {
        match self.key_partition(plane, name, key)? {
            Some((topic, partition)) if !self.holds(plane, name, &topic, partition) => {
                Err(ClusterError::NoOwner {
                    topology: name.to_string(),
                    topic,
                    partition,
                })
            }
            _ => Ok(()),
        }
    }

    fn holds(&self, plane: &ControlPlane, name: &str, topic: &str, partition: i32) -> bool {
        plane.topologies.running().iter().any(|t| t == name)
            && plane
                .topologies
                .share(name)
                .and_then(|s| s.partitions.get(topic).cloned())
                .is_some_and(|ps| ps.contains(&partition))
    }

    /// Sends the query `path_and_query` (with `forwarded=1` added) to
    /// `address`, with this cluster's token; answers its status and body.
    pub fn forward(
        &self,
        plane: &ControlPlane,
        node: &str,
        address: &str,
        path_and_query: &str,
    ) -> Result<Forwarded, ClusterError> {
        let sep = if path_and_query.contains('?') {
            '&'
        } else {
            '?'
        };
        let url = format!("{address}{path_and_query}{sep}forwarded=1");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(FORWARD_TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        let mut request = agent.get(&url);
        if let Some(token) = &plane.config.token {
            request = request.header("authorization", &format!("Bearer {token}"));
        }
        let unreachable = |reason: String| ClusterError::Forward {
            node: node.to_string(),
            address: address.to_string(),
            reason,
        };
        let mut answer = request.call().map_err(|e| unreachable(e.to_string()))?;
        let status = answer.status().as_u16();
        let body = answer
            .body_mut()
            .read_json::<serde_json::Value>()
            .map_err(|e| unreachable(format!("its answer is not JSON: {e}")))?;
        Ok(Forwarded { status, body })
    }
}
