//! Keyed state that moves with its partitions: each operator that keeps
//! state has a compacted changelog topic,
//! `weir.<cluster>.<topology>.<operator>.changelog` (named after the
//! topology's consumer group, so two clusters on one broker never share
//! state), partitioned like the topology's Kafka input (see
//! `docs/cluster.md`, "State").
//!
//! - The partition of a state row is the input partition of its key:
//!   Kafka's key partitioner ([`partition_of`], `murmur2_random`) over the
//!   input's partition count. The engine's key groups (FNV, per instance
//!   inside a node) are not involved: a node holds rows of every key
//!   group, and the changelog partition is computed from each row's key.
//!   The input is the topology's lead topic (its first `kafka:` source):
//!   its other inputs are co-partitioned with it, and an operator keyed
//!   otherwise than its input records reads through a repartition topic
//!   of the lead's partition count (`repartition.rs`). Records a producer
//!   did not partition by their key are the one way left to a row of a
//!   key whose partition this node does not hold: that fails the
//!   checkpoint with a message saying so.
//! - [`attach`], before a job starts on a node's partitions: for each
//!   operator whose changelog exists, drops the timers of keys of
//!   partitions the node does not hold (they must not fire here; the
//!   partition's recorded offset goes with them, so it is read from the
//!   start when it comes back) and reads each held partition
//!   `read_committed` from the offset the local database recorded (from
//!   the start without one) to its end, into the local database.
//! - [`KafkaChangelog`]: each checkpoint of the job is then one Kafka
//!   transaction of the node's producer for the topology
//!   (`weir.<cluster>.<topology>.<node>`, [`NodeProducer`]): the rows'
//!   changelog records, the output of the exactly-once Kafka sinks, and
//!   the sources' positions as offsets of the topology's group, sent with
//!   the member's generation ([`GroupFence`]). It runs before the local
//!   commit, so a crash at any point leaves the local database at or
//!   behind Kafka: the next owner (this node or another) takes the state
//!   from the changelog, the input from the group's offsets and the output
//!   as committed, all three of one transaction.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use weir_connectors::{
    ChangelogTopic, GroupFence, KafkaShare, NodeCommit, NodeProducer, OutputTopic, partition_of,
    topic_partitions,
};
use weir_engine::Position;
use weir_state::{ChangelogOffset, RestoreBatch, SnapshotRow, StateDb, change_records};
use weir_topology::{KafkaDelivery, TopologyDoc};
use weir_types::Batch;

/// Rows kept in memory during a restore before they are written.
const RESTORE_BATCH_ROWS: usize = 50_000;

/// The changelog topic of `operator` of the topology whose consumer group
/// is `group` (`weir.<cluster>.<topology>`).
pub fn changelog_topic(group: &str, operator: &str) -> String {
    format!("{group}.{operator}.changelog")
}

/// How the rows of a topology map to changelog partitions on this node.
#[derive(Debug, Clone)]
struct Partitioning {
    /// The input topic the changelogs are partitioned like.
    input: String,
    partitions: u32,
    /// The input partitions this node holds.
    held: BTreeSet<u32>,
}

/// Commits each checkpoint of a topology's job on this node in one Kafka
/// transaction: changelog records, exactly-once output, input offsets.
#[derive(Debug)]
pub(crate) struct KafkaChangelog {
    topology: String,
    brokers: String,
    partitioning: Partitioning,
    /// Changelogs opened so far, by operator (one is created at its
    /// operator's first state write).
    logs: Mutex<BTreeMap<String, Arc<ChangelogTopic>>>,
    /// Kafka source name → its topic.
    inputs: BTreeMap<String, String>,
    /// Exactly-once Kafka sink name → where its output goes.
    outputs: BTreeMap<String, OutputTopic>,
    producer: NodeProducer,
    fence: GroupFence,
}

/// Per input topic and partition, the next offset to read, from the
/// sources' positions (`inputs`: source name → topic). Sources that are
/// not Kafka topics have none.
fn input_offsets(
    positions: &BTreeMap<String, Position>,
    inputs: &BTreeMap<String, String>,
) -> Result<BTreeMap<(String, i32), u64>, String> {
    let mut out = BTreeMap::new();
    for (source, position) in positions {
        let (Some(topic), Position::Splits(splits)) = (inputs.get(source), position) else {
            continue;
        };
        for (&p, &next) in splits {
            if let Some(other) = out.insert((topic.clone(), p as i32), next)
                && other != next
            {
                return Err(format!(
                    "two sources read topic `{topic}` (partition {p} at offsets \
                     {other} and {next}): in a cluster each input topic is read by one source"
                ));
            }
        }
    }
    Ok(out)
}

impl KafkaChangelog {
    fn log(&self, operator: &str, partitions: u32) -> Result<Arc<ChangelogTopic>, String> {
        if let Some(log) = self
            .logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(operator)
        {
            return Ok(log.clone());
        }
        let topic = changelog_topic(self.fence.group(), operator);
        let log = ChangelogTopic::open(&self.brokers, &topic, partitions, true)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("changelog {topic} could not be created"))?;
        let log = Arc::new(log);
        self.logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(operator.to_string(), log.clone());
        Ok(log)
    }
}

/// A changelog record to write: topic, partition, key, value (`None`: a
/// tombstone).
type Record = (String, u32, Vec<u8>, Option<Vec<u8>>);

impl KafkaChangelog {
    /// The changelog records of `rows`.
    fn changelog_records(&self, rows: &[SnapshotRow]) -> Result<Vec<Record>, String> {
        let records = change_records(&self.topology, rows)?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let to = &self.partitioning;
        let mut out = Vec::with_capacity(records.len());
        let mut topics: BTreeMap<String, String> = BTreeMap::new();
        for r in records {
            let p = partition_of(&r.state_key, to.partitions);
            if !to.held.contains(&p) {
                return Err(format!(
                    "operator `{}` wrote the state of key {:?}, which belongs to partition {p} of \
                     {}, a partition this node does not read: in a cluster an operator that keeps \
                     state must be keyed like its Kafka input (`key_by: key` straight on a source \
                     reads records as the producer partitioned them: write them with Kafka's \
                     default partitioner, murmur2 of the key, or key the operator by a field, \
                     which goes through a repartition topic)",
                    r.operator,
                    String::from_utf8_lossy(&r.state_key),
                    to.input
                ));
            }
            let topic = match topics.get(&r.operator) {
                Some(topic) => topic.clone(),
                None => {
                    // The topic exists before the transaction writes to it.
                    let topic = self.log(&r.operator, to.partitions)?.topic().to_string();
                    topics.insert(r.operator.clone(), topic.clone());
                    topic
                }
            };
            out.push((topic, p, r.key, r.value));
        }
        Ok(out)
    }
}

impl weir_state::Changelog for KafkaChangelog {
    fn commit(
        &self,
        id: u64,
        rows: &[SnapshotRow],
        meta: &[u8],
        pending: &[(String, Vec<u8>)],
    ) -> Result<Vec<ChangelogOffset>, String> {
        let changelog = self.changelog_records(rows)?;
        let mut outputs: Vec<(&OutputTopic, Batch)> = Vec::new();
        for (sink, bytes) in pending {
            // Other exactly-once sinks publish after the local commit.
            let Some(output) = self.outputs.get(sink) else {
                continue;
            };
            let batch = Batch::decode(bytes).ok_or_else(|| {
                format!("the pending output of sink `{sink}` of checkpoint {id} does not parse")
            })?;
            outputs.push((output, batch));
        }
        let positions = weir_engine::checkpoint_positions(meta)?;
        let offsets = input_offsets(&positions, &self.inputs)?;
        if changelog.is_empty() && outputs.is_empty() && offsets.is_empty() {
            return Ok(Vec::new());
        }
        let commit = NodeCommit {
            changelog: changelog
                .iter()
                .map(|(t, p, k, v)| (t.as_str(), *p, k.as_slice(), v.as_deref()))
                .collect(),
            outputs: outputs.iter().map(|(o, b)| (*o, b)).collect(),
            offsets,
        };
        let ends = self
            .producer
            .commit(&commit, &self.fence)
            .map_err(|e| e.to_string())?;
        tracing::trace!(
            topology.name = %self.topology,
            checkpoint = id,
            changelog = commit.changelog.len(),
            offsets = commit.offsets.len(),
            "checkpoint committed in Kafka"
        );
        let operators: BTreeMap<String, String> = self
            .logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .map(|op| (changelog_topic(self.fence.group(), op), op.clone()))
            .collect();
        Ok(ends
            .into_iter()
            .filter_map(|((topic, partition), next)| {
                Some(ChangelogOffset {
                    operator: operators.get(&topic)?.clone(),
                    partition: partition as u32,
                    next,
                })
            })
            .collect())
    }
}

/// Before `doc`'s job starts on `share`: restores the held partitions of
/// every existing changelog into `db` and makes committed checkpoints
/// write to the changelogs. `brokers` stands in for sources that name
/// none.
pub(crate) fn attach(
    doc: &TopologyDoc,
    brokers: Option<&str>,
    share: &KafkaShare,
    db: &StateDb,
) -> Result<(), String> {
    let sources: Vec<_> = doc
        .sources
        .iter()
        .filter_map(|s| s.kafka.as_ref())
        .collect();
    let Some(first) = sources.first() else {
        db.set_changelog(None);
        return Ok(());
    };
    let brokers = first
        .brokers
        .clone()
        .or_else(|| brokers.map(str::to_string))
        .ok_or("no Kafka brokers for the topology's changelogs: give --kafka-brokers")?;
    // The lead input: the other inputs are co-partitioned with it.
    let input = first.topic.clone();
    let partitions = topic_partitions(&brokers, &input).map_err(|e| e.to_string())?;
    let held = share
        .partitions
        .get(&input)
        .map(|ps| ps.iter().map(|&p| p as u32).collect())
        .unwrap_or_default();
    let partitioning = Partitioning {
        input,
        partitions,
        held,
    };
    let inputs = doc
        .sources
        .iter()
        .filter_map(|s| Some((s.name.clone(), s.kafka.as_ref()?.topic.clone())))
        .collect();
    let mut outputs = BTreeMap::new();
    for sink in &doc.sinks {
        let Some(kafka) = &sink.kafka else { continue };
        if kafka.delivery.unwrap_or_default() != KafkaDelivery::ExactlyOnce {
            continue;
        }
        if kafka.brokers.as_ref().is_some_and(|b| *b != brokers) {
            return Err(format!(
                "sink `{}` writes to brokers {} and the topology reads from {brokers}: in a \
                 cluster an exactly-once Kafka sink commits in one transaction with the input \
                 offsets, so it must use the input's brokers (or `delivery: at-least-once`)",
                sink.name,
                kafka.brokers.as_deref().unwrap_or_default()
            ));
        }
        outputs.insert(sink.name.clone(), OutputTopic::of_sink(kafka));
    }
    let changelog = KafkaChangelog {
        topology: doc.name.clone(),
        brokers: brokers.clone(),
        partitioning: partitioning.clone(),
        logs: Mutex::default(),
        inputs,
        outputs,
        producer: NodeProducer::new(&brokers, &format!("{}.{}", share.fence.group(), share.node)),
        fence: share.fence.clone(),
    };
    let to = &partitioning;
    for operator in &doc.operators {
        let topic = changelog_topic(share.fence.group(), &operator.name);
        let Some(log) = ChangelogTopic::open(&brokers, &topic, to.partitions, false)
            .map_err(|e| e.to_string())?
        else {
            continue;
        };
        restore(db, &doc.name, &operator.name, &log, to)?;
        changelog
            .logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(operator.name.clone(), Arc::new(log));
    }
    db.set_changelog(Some(Arc::new(changelog)));
    Ok(())
}

/// Reads the held partitions of `operator`'s changelog into `db`, each
/// from the offset `db` recorded for it.
fn restore(
    db: &StateDb,
    topology: &str,
    operator: &str,
    log: &ChangelogTopic,
    to: &Partitioning,
) -> Result<(), String> {
    let started = std::time::Instant::now();
    let local = db.changelog_offsets(operator).map_err(|e| e.to_string())?;
    let mut stale = BTreeSet::new();
    let dropped = db
        .drop_timers(topology, operator, &mut |key| {
            let p = partition_of(key, to.partitions);
            let held = to.held.contains(&p);
            if !held {
                stale.insert(p);
            }
            held
        })
        .map_err(|e| e.to_string())?;
    let forget: Vec<(String, u32)> = stale
        .into_iter()
        .filter(|p| local.contains_key(p))
        .map(|p| (operator.to_string(), p))
        .collect();
    let from: BTreeMap<u32, Option<u64>> = to
        .held
        .iter()
        .map(|&p| (p, local.get(&p).copied()))
        .collect();
    let mut batch = RestoreBatch::new(topology, operator);
    let mut rows = 0u64;
    let ends = log
        .read(&from, &mut |_, key, value| {
            rows += 1;
            batch.add(key, value)?;
            if batch.len() >= RESTORE_BATCH_ROWS {
                let full = std::mem::replace(&mut batch, RestoreBatch::new(topology, operator));
                db.apply_changelog(Some(full), &[], &[])
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    let offsets: Vec<ChangelogOffset> = ends
        .into_iter()
        .map(|(partition, next)| ChangelogOffset {
            operator: operator.to_string(),
            partition,
            next,
        })
        .collect();
    db.apply_changelog(Some(batch), &offsets, &forget)
        .map_err(|e| e.to_string())?;
    tracing::info!(
        topology.name = topology,
        operator,
        kafka.topic = log.topic(),
        partitions = ?to.held,
        records = rows,
        timers_dropped = dropped,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "restored state from the changelog"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_offsets_are_the_kafka_sources_positions_by_topic() {
        let inputs = BTreeMap::from([
            ("a".to_string(), "in".to_string()),
            ("c".to_string(), "other".to_string()),
        ]);
        let positions = BTreeMap::from([
            (
                "a".to_string(),
                Position::Splits(BTreeMap::from([(0, 5), (3, 7)])),
            ),
            ("c".to_string(), Position::Splits(BTreeMap::from([(2, 3)]))),
            // Not a Kafka source: no offsets to commit.
            ("gen".to_string(), Position::Count(9)),
        ]);
        assert_eq!(
            input_offsets(&positions, &inputs).unwrap(),
            BTreeMap::from([
                (("in".to_string(), 0), 5),
                (("in".to_string(), 3), 7),
                (("other".to_string(), 2), 3),
            ])
        );
        // Two sources of one topic at different offsets: one commit cannot
        // hold both.
        let inputs = BTreeMap::from([
            ("a".to_string(), "in".to_string()),
            ("b".to_string(), "in".to_string()),
        ]);
        let positions = BTreeMap::from([
            ("a".to_string(), Position::Splits(BTreeMap::from([(0, 5)]))),
            ("b".to_string(), Position::Splits(BTreeMap::from([(0, 6)]))),
        ]);
        let err = input_offsets(&positions, &inputs).unwrap_err();
        assert!(
            err.contains("each input topic is read by one source"),
            "{err}"
        );
    }
}
