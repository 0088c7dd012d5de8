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
//!   operator whose changelog exists, parks the timers of keys of
//!   partitions the node does not hold (they must not fire here) and
//!   moves back those of partitions it holds again, then reads each held
//!   partition `read_committed` from the offset the local database
//!   recorded (from the start without one; a standby keeps that offset
//!   close to the end, `standby.rs`) to its end, into the local database.
//!   It answers the event time each source had reached on the held
//!   partitions ([`start_event_times`]), where the job's watermarks start.
//! - Each checkpoint also writes, per Kafka source and held partition, the
//!   event time the source reached (when it moved since the last one this
//!   job wrote), to every changelog of the topology: a node that takes the
//!   partition over starts its watermark there, never from an end of
//!   input.
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
    ChangelogTopic, GroupFence, KafkaShare, LiveShare, NodeCommit, NodeProducer, OutputTopic,
    event_time_mark, partition_of, topic_partitions,
};
use weir_engine::Position;
use weir_state::{
    ChangelogOffset, KeyTest, RestoreBatch, SnapshotRow, StateDb, change_records, event_time_record,
};
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
    /// The input partitions this node holds (as of the job's start, or of
    /// the last change while it ran).
    held: BTreeSet<u32>,
}

impl Partitioning {
    /// Of `doc`'s lead input on `brokers`, held as `share` says now.
    fn of(doc: &TopologyDoc, brokers: &str, share: &KafkaShare) -> Result<Partitioning, String> {
        let input = super::lead_input(doc)
            .ok_or_else(|| format!("topology `{}` reads no Kafka topic", doc.name))?
            .topic
            .clone();
        let partitions = topic_partitions(brokers, &input).map_err(|e| e.to_string())?;
        let held = held_of(&share.live.owned(), &input);
        Ok(Partitioning {
            input,
            partitions,
            held,
        })
    }

    /// Whether a state key belongs to a held partition.
    fn key_test(&self) -> KeyTest {
        let (held, partitions) = (self.held.clone(), self.partitions);
        Arc::new(move |key: &[u8]| held.contains(&partition_of(key, partitions)))
    }
}

/// The partitions of `topic` in `assignment`.
pub(super) fn held_of(assignment: &weir_connectors::Assignment, topic: &str) -> BTreeSet<u32> {
    assignment
        .get(topic)
        .map(|ps| ps.iter().map(|&p| p as u32).collect())
        .unwrap_or_default()
}

/// Commits each checkpoint of a topology's job on this node in one Kafka
/// transaction: changelog records, exactly-once output, input offsets.
#[derive(Debug)]
pub(crate) struct KafkaChangelog {
    topology: String,
    brokers: String,
    /// The lead input and its partition count (`held` is not used: the
    /// held partitions are `live`'s owned ones at each commit).
    partitioning: Partitioning,
    live: Arc<LiveShare>,
    /// Changelogs opened so far, by operator (one is created at its
    /// operator's first state write).
    logs: Mutex<BTreeMap<String, Arc<ChangelogTopic>>>,
    /// Kafka source name → its topic.
    inputs: BTreeMap<String, String>,
    /// Exactly-once Kafka sink name → where its output goes.
    outputs: BTreeMap<String, OutputTopic>,
    producer: NodeProducer,
    fence: GroupFence,
    /// The event time this job last committed to each changelog
    /// partition for each source.
    written_times: Mutex<BTreeMap<TimeSlot, i64>>,
    /// Each repartition topic it writes and the sources upstream of it
    /// (their event time marks the topic).
    marked: Vec<(String, BTreeSet<String>)>,
    /// The last mark committed to each repartition topic: the event time
    /// and the tasks.
    written_marks: Mutex<BTreeMap<String, (i64, BTreeSet<u32>)>>,
}

/// An event-time mark to write: topic, the tasks (header value), time.
type Mark = (String, Vec<u8>, i64);

/// Each source's event time, from a checkpoint's sources.
fn times_of(sources: &BTreeMap<String, (Position, i64)>) -> BTreeMap<String, i64> {
    sources.iter().map(|(s, (_, t))| (s.clone(), *t)).collect()
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
    /// The lead input's partitions this node owns now (they change while
    /// the job runs, see `tasks.rs`).
    fn held(&self) -> BTreeSet<u32> {
        held_of(&self.live.owned(), &self.partitioning.input)
    }

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

/// Where an event-time record goes: operator, partition, source.
type TimeSlot = (String, u32, String);

impl KafkaChangelog {
    /// The changelog records of `rows`.
    fn changelog_records(&self, rows: &[SnapshotRow]) -> Result<Vec<Record>, String> {
        let records = change_records(&self.topology, rows)?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let to = &self.partitioning;
        let held = self.held();
        let mut out = Vec::with_capacity(records.len());
        let mut topics: BTreeMap<String, String> = BTreeMap::new();
        for r in records {
            let p = partition_of(&r.state_key, to.partitions);
            if !held.contains(&p) {
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

impl KafkaChangelog {
    /// The event-time records of a checkpoint whose sources reached
    /// `times` (source → event time): per Kafka source, held partition
    /// and open changelog, where it moved since this job last wrote it;
    /// with the `(operator, partition, source)` each one sets.
    fn event_time_records(
        &self,
        times: &BTreeMap<String, i64>,
    ) -> (Vec<Record>, Vec<(TimeSlot, i64)>) {
        let held = self.held();
        let (mut records, mut set) = (Vec::new(), Vec::new());
        let logs: Vec<(String, String)> = self
            .logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(op, log)| (op.clone(), log.topic().to_string()))
            .collect();
        let written = {
            let mut written = self.written_times.lock().unwrap_or_else(|p| p.into_inner());
            // A partition let go forgets what this job wrote to it: if it
            // comes back, its last owner may have written since.
            written.retain(|(_, p, _), _| held.contains(p));
            written.clone()
        };
        for (source, &reached) in times {
            if !self.inputs.contains_key(source) {
                continue;
            }
            let Some((key, value)) = event_time_record(source, reached) else {
                continue;
            };
            for (operator, topic) in &logs {
                for &p in &held {
                    let slot = (operator.clone(), p, source.clone());
                    if written.get(&slot) == Some(&reached) {
                        continue;
                    }
                    records.push((topic.clone(), p, key.clone(), Some(value.clone())));
                    set.push((slot, reached));
                }
            }
        }
        (records, set)
    }
}

impl KafkaChangelog {
    /// The event-time marks of a checkpoint whose sources reached `times`:
    /// per repartition topic, when the least event time its upstream
    /// sources reached (those that read something) or the tasks this node
    /// runs changed since the last committed mark; with what each sets.
    fn marks(&self, times: &BTreeMap<String, i64>) -> Vec<(Mark, BTreeSet<u32>)> {
        let tasks = self.held();
        let written = self
            .written_marks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut out = Vec::new();
        for (topic, upstream) in &self.marked {
            let reached = upstream
                .iter()
                .filter_map(|s| times.get(s).copied())
                .filter(|&t| t != i64::MIN && t != i64::MAX)
                .min();
            let Some(reached) = reached else { continue };
            if written.get(topic) == Some(&(reached, tasks.clone())) {
                continue;
            }
            let (header, _) = event_time_mark(&tasks, reached);
            out.push(((topic.clone(), header, reached), tasks.clone()));
        }
        out
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
        let mut changelog = self.changelog_records(rows)?;
        let sources = weir_engine::checkpoint_sources(meta)?;
        let (times, times_set) = self.event_time_records(&times_of(&sources));
        changelog.extend(times);
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
        let marks = self.marks(&times_of(&sources));
        let positions = sources.into_iter().map(|(s, (p, _))| (s, p)).collect();
        let mut offsets = input_offsets(&positions, &self.inputs)?;
        // A source keeps the position of a partition it let go: committed
        // by the checkpoint after its last read, never again (its new
        // owner commits it from then on).
        let owned = self.live.owned();
        offsets.retain(|(topic, p), _| owned.get(topic).is_some_and(|ps| ps.contains(p)));
        if changelog.is_empty() && outputs.is_empty() && offsets.is_empty() && marks.is_empty() {
            return Ok(Vec::new());
        }
        let commit = NodeCommit {
            changelog: changelog
                .iter()
                .map(|(t, p, k, v)| (t.as_str(), *p, k.as_slice(), v.as_deref()))
                .collect(),
            outputs: outputs.iter().map(|(o, b)| (*o, b)).collect(),
            // Every partition of each topic: each holds records of every
            // task.
            marks: marks
                .iter()
                .flat_map(|((topic, header, time), _)| {
                    (0..self.partitioning.partitions)
                        .map(move |q| (topic.as_str(), q, header.as_slice(), *time))
                })
                .collect(),
            offsets,
        };
        let ends = self
            .producer
            .commit(&commit, &self.fence)
            .map_err(|e| e.to_string())?;
        self.written_times
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(times_set);
        self.written_marks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(
                marks
                    .iter()
                    .map(|((topic, _, time), tasks)| (topic.clone(), (*time, tasks.clone()))),
            );
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
/// write to the changelogs; answers the event time each Kafka source had
/// reached on the held partitions (for `Bindings::event_times`).
/// `brokers` stands in for sources that name none.
pub(crate) fn attach(
    doc: &TopologyDoc,
    brokers: Option<&str>,
    share: &KafkaShare,
    db: &StateDb,
) -> Result<BTreeMap<String, i64>, String> {
    let sources: Vec<_> = doc
        .sources
        .iter()
        .filter_map(|s| s.kafka.as_ref())
        .collect();
    let Some(first) = sources.first() else {
        db.set_changelog(None);
        return Ok(BTreeMap::new());
    };
    let brokers = first
        .brokers
        .clone()
        .or_else(|| brokers.map(str::to_string))
        .ok_or("no Kafka brokers for the topology's changelogs: give --kafka-brokers")?;
    // The lead input: the other inputs are co-partitioned with it.
    let partitioning = Partitioning::of(doc, &brokers, share)?;
    // Only the held keys' timers are loaded, and fire.
    db.set_held_keys(Some(partitioning.key_test()));
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
        live: share.live.clone(),
        logs: Mutex::default(),
        inputs,
        outputs,
        producer: NodeProducer::new(&brokers, &format!("{}.{}", share.fence.group(), share.node)),
        fence: share.fence.clone(),
        written_times: Mutex::default(),
        marked: super::repartition::marked_topics(doc),
        written_marks: Mutex::default(),
    };
    let to = &partitioning;
    let mut recorded = Vec::new();
    // A standby's tailer waits while the held partitions are restored.
    let restoring = db.changelog_lock();
    for operator in &doc.operators {
        let topic = changelog_topic(share.fence.group(), &operator.name);
        let Some(log) = ChangelogTopic::open(&brokers, &topic, to.partitions, false)
            .map_err(|e| e.to_string())?
        else {
            continue;
        };
        restore(db, &doc.name, &operator.name, &log, to, &to.held)?;
        recorded.push(
            db.changelog_event_times(&operator.name)
                .map_err(|e| e.to_string())?,
        );
        changelog
            .logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(operator.name.clone(), Arc::new(log));
    }
    drop(restoring);
    db.set_changelog(Some(Arc::new(changelog)));
    let mut times = start_event_times(&partitioning.held, &recorded);
    times.retain(|source, _| doc.sources.iter().any(|s| &s.name == source));
    Ok(times)
}

/// While `doc`'s job runs on this node: restores the partitions of the
/// lead input in `added` (the node holds them from now on, with those
/// `share` owns) from every existing changelog into `db`, and moves the
/// held keys to them; answers, per input topic, the event time its
/// source had reached on the added partitions (their floor), and the
/// changelog records read.
pub(crate) fn take_over(
    doc: &TopologyDoc,
    brokers: &str,
    share: &KafkaShare,
    db: &StateDb,
    added: &BTreeSet<u32>,
) -> Result<(BTreeMap<String, i64>, u64), String> {
    let mut to = Partitioning::of(doc, brokers, share)?;
    to.held.extend(added);
    let mut recorded = Vec::new();
    let mut records = 0;
    {
        let _restoring = db.changelog_lock();
        for operator in &doc.operators {
            let topic = changelog_topic(share.fence.group(), &operator.name);
            let Some(log) = ChangelogTopic::open(brokers, &topic, to.partitions, false)
                .map_err(|e| e.to_string())?
            else {
                continue;
            };
            records += restore(db, &doc.name, &operator.name, &log, &to, added)?;
            recorded.push(
                db.changelog_event_times(&operator.name)
                    .map_err(|e| e.to_string())?,
            );
        }
    }
    // Instances see the keys at their next state call: after the rows.
    db.set_held_keys(Some(to.key_test()));
    let times = start_event_times(added, &recorded);
    let floors = doc
        .sources
        .iter()
        .filter_map(|s| Some((s.kafka.as_ref()?.topic.clone(), *times.get(&s.name)?)))
        .collect();
    Ok((floors, records))
}

/// While `doc`'s job runs: the node no longer holds the lead input's
/// partitions outside `kept` (their timers stop firing here).
pub(crate) fn let_go(
    doc: &TopologyDoc,
    brokers: &str,
    share: &KafkaShare,
    db: &StateDb,
    kept: &BTreeSet<u32>,
) -> Result<(), String> {
    let mut to = Partitioning::of(doc, brokers, share)?;
    to.held = kept.clone();
    db.set_held_keys(Some(to.key_test()));
    Ok(())
}

/// Where each source's event time starts on a node holding `held`:
/// the latest any changelog (`recorded`: per operator, `(partition,
/// source)` → event time) says a source had reached on a held partition.
/// Partitions held elsewhere say nothing here, and an end of input
/// (`i64::MAX`) or nothing read (`i64::MIN`) is never a start.
pub(crate) fn start_event_times(
    held: &BTreeSet<u32>,
    recorded: &[BTreeMap<(u32, String), i64>],
) -> BTreeMap<String, i64> {
    let mut out: BTreeMap<String, i64> = BTreeMap::new();
    for ((partition, source), &time) in recorded.iter().flatten() {
        if !held.contains(partition) || time == i64::MAX || time == i64::MIN {
            continue;
        }
        let at = out.entry(source.clone()).or_insert(time);
        *at = (*at).max(time);
    }
    out
}

/// What a [`read_changelog`] that went to the end read: its records and
/// where each partition ended (the next offset).
pub(super) type ReadTo = (u64, BTreeMap<u32, u64>);

/// What [`read_changelog`] hands each batch to, with the offsets the
/// partitions end at (empty but for the last batch); `false`: the batch
/// is stale, the read stops.
pub(super) type WriteBatch<'a> =
    dyn FnMut(RestoreBatch, &[ChangelogOffset]) -> Result<bool, String> + 'a;

/// Reads `from` (partition → the recorded offset to start at) of
/// `operator`'s changelog `log` to the end each partition has now, in
/// batches like `empty` of at most [`RESTORE_BATCH_ROWS`], handed to
/// `write`. Answers the records read and where each partition ended, or
/// `None` when `write` found a batch stale.
pub(super) fn read_changelog(
    log: &ChangelogTopic,
    operator: &str,
    from: &BTreeMap<u32, Option<u64>>,
    empty: &RestoreBatch,
    write: &mut WriteBatch<'_>,
) -> Result<Option<ReadTo>, String> {
    const STALE: &str = "a newer copy of the partition was written meanwhile";
    let mut batch = empty.emptied();
    let mut records = 0u64;
    let mut stale = false;
    let read = log.read(from, &mut |partition, key, value| {
        records += 1;
        batch.add(partition, key, value)?;
        if batch.len() >= RESTORE_BATCH_ROWS {
            let full = std::mem::replace(&mut batch, empty.emptied());
            if !write(full, &[])? {
                stale = true;
                return Err(STALE.into());
            }
        }
        Ok(())
    });
    let ends = match read {
        Ok(ends) => ends,
        Err(_) if stale => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let offsets: Vec<ChangelogOffset> = ends
        .iter()
        .map(|(&partition, &next)| ChangelogOffset {
            operator: operator.to_string(),
            partition,
            next,
        })
        .collect();
    Ok(write(batch, &offsets)?.then_some((records, ends)))
}

/// Where each of `partitions` of `operator`'s changelog is read from:
/// the offset `db` recorded for it (`None`: from its beginning).
pub(super) fn recorded_from(
    db: &StateDb,
    operator: &str,
    partitions: &BTreeSet<u32>,
) -> Result<BTreeMap<u32, Option<u64>>, String> {
    let recorded = db.changelog_offsets(operator).map_err(|e| e.to_string())?;
    Ok(partitions
        .iter()
        .map(|&p| (p, recorded.get(&p).copied()))
        .collect())
}

/// Parks the timers of partitions not in `to.held` (and moves back those
/// in it), then reads `partitions` of `operator`'s changelog into
/// `db`, each from the offset `db` recorded for it; answers the records
/// read.
fn restore(
    db: &StateDb,
    topology: &str,
    operator: &str,
    log: &ChangelogTopic,
    to: &Partitioning,
    partitions: &BTreeSet<u32>,
) -> Result<u64, String> {
    let started = std::time::Instant::now();
    let (parked, back) = db
        .park_timers(topology, operator, &mut |key| {
            to.held.contains(&partition_of(key, to.partitions))
        })
        .map_err(|e| e.to_string())?;
    let from = recorded_from(db, operator, partitions)?;
    let records = read_changelog(
        log,
        operator,
        &from,
        &RestoreBatch::new(topology, operator),
        &mut |batch, offsets| {
            db.apply_changelog(Some(batch), offsets)
                .map_err(|e| e.to_string())?;
            Ok(true)
        },
    )?
    .map_or(0, |(records, _)| records);
    tracing::info!(
        topology.name = topology,
        operator,
        kafka.topic = log.topic(),
        partitions = ?partitions,
        from = ?from,
        records,
        timers_parked = parked,
        timers_back = back,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "restored state from the changelog"
    );
    Ok(records)
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

    #[test]
    fn a_node_starts_from_the_latest_event_time_of_the_partitions_it_holds() {
        let of = |entries: &[(u32, &str, i64)]| -> BTreeMap<(u32, String), i64> {
            entries
                .iter()
                .map(|&(p, s, t)| ((p, s.to_string()), t))
                .collect()
        };
        let count = of(&[(0, "in", 10), (1, "in", 30), (2, "in", 99), (1, "other", 5)]);
        // A second operator's changelog saw partition 0 further.
        let sum = of(&[(0, "in", 20), (3, "in", i64::MAX), (1, "gone", i64::MIN)]);
        let held = BTreeSet::from([0, 1, 3]);
        assert_eq!(
            start_event_times(&held, &[count.clone(), sum]),
            BTreeMap::from([("in".to_string(), 30), ("other".to_string(), 5)])
        );
        // Partition 2 (the furthest) is another node's: it says nothing.
        assert_eq!(
            start_event_times(&BTreeSet::from([0]), &[count]),
            BTreeMap::from([("in".to_string(), 10)])
        );
        assert!(start_event_times(&held, &[]).is_empty());
    }
}
