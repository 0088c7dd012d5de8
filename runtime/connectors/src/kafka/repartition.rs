//! A cluster's repartition topics
//! (`weir.<cluster>.<topology>.<operator>.repartition`): where a keyed
//! operator's input goes when an operator before it changed the key, so
//! that each key's records reach the node that holds the key's partition
//! (see `docs/cluster.md`, "Repartition topics").
//!
//! - [`ensure_repartition_topic`]: the topic exists with the partition
//!   count of the topology's input (created when missing; kept until
//!   purged, `retention.ms=-1`, since what no node has read yet must not
//!   expire); one with another count is refused, saying how to fix it.
//! - [`Purger`]: once a node's transaction committed the group's offsets
//!   past records of a repartition topic, nobody reads them again: they
//!   are deleted (`DeleteRecords`) up to those offsets.
//!
//! - **Event-time marks** ([`EVENT_TIME_MARK`]): records of several
//!   upstream tasks (one per input partition, on whichever nodes) meet in
//!   each partition of a repartition topic, so its reader cannot take
//!   event time from the records' timestamps (a task that lags would see
//!   its records turn late). With each checkpoint that moved its event
//!   time, a node writes to every partition, in the same transaction and
//!   after its records, one mark: the tasks it runs (header) and the event
//!   time its upstream sources reached (8 bytes, big-endian). The reader
//!   keeps the latest mark of each task in each partition it reads and
//!   reports the least of them ([`event_time_mark`] and
//!   [`parse_event_time_mark`]).
//!
//! The records themselves are written by the node's transaction (the
//! topology's internal exactly-once sink, `txn.rs`) and read by an
//! internal source like any input (`source.rs`).

use std::collections::{BTreeMap, BTreeSet};

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::config::{
    KafkaError, LOOKUP_TIMEOUT, block_on, create_topic, lookup_consumer, partitions_of,
};

/// The header naming an event-time mark's tasks (a record of a
/// repartition topic that carries no event).
pub const EVENT_TIME_MARK: &str = "weir.event-time-mark";

/// A mark's header value (the tasks, in decimal, comma-separated) and
/// payload (the event time).
pub fn event_time_mark(tasks: &BTreeSet<u32>, time: i64) -> (Vec<u8>, [u8; 8]) {
    let list: Vec<String> = tasks.iter().map(u32::to_string).collect();
    (list.join(",").into_bytes(), time.to_be_bytes())
}

/// The tasks and event time of a mark, when they parse and every task is
/// below `tasks` (the topic's partition count); `None` otherwise.
pub(crate) fn parse_event_time_mark(
    header: &[u8],
    payload: &[u8],
    tasks: u32,
) -> Option<(Vec<u32>, i64)> {
    let time = i64::from_be_bytes(payload.try_into().ok()?);
    let text = std::str::from_utf8(header).ok()?;
    let mut out = Vec::new();
    for t in text.split(',').filter(|t| !t.is_empty()) {
        let t: u32 = t.parse().ok()?;
        if t >= tasks {
            return None;
        }
        out.push(t);
    }
    Some((out, time))
}

/// Makes sure repartition topic `topic` exists on `brokers` with
/// `partitions` partitions (those of the topology's input): creates it
/// when missing; refuses one with another count.
pub fn ensure_repartition_topic(
    brokers: &str,
    topic: &str,
    partitions: u32,
) -> Result<(), KafkaError> {
    let lookup = lookup_consumer(brokers, &Default::default())?;
    match partitions_of(&lookup, brokers, topic) {
        Ok(found) if found.len() == partitions as usize => Ok(()),
        Ok(found) => Err(KafkaError::Topic {
            topic: topic.to_string(),
            brokers: brokers.to_string(),
            reason: wrong_count(found.len(), partitions),
        }),
        Err(KafkaError::NoSuchTopic { .. }) => {
            create_topic(
                brokers,
                topic,
                partitions as i32,
                &[("cleanup.policy", "delete"), ("retention.ms", "-1")],
            )?;
            tracing::info!(
                kafka.topic = topic,
                partitions,
                "created a repartition topic"
            );
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Why a repartition topic with `found` partitions cannot serve an input
/// of `wanted`.
fn wrong_count(found: usize, wanted: u32) -> String {
    format!(
        "this repartition topic has {found} partitions and the topology's input {wanted}: a \
         key's records must land in the partition number its state lives in, so it needs \
         {wanted}; stop the topology, delete the topic (Weir creates it again with {wanted} \
         partitions) and start it again"
    )
}

/// Deletes the records of a repartition topic that a committed
/// transaction read past.
pub struct Purger {
    topic: String,
    admin: AdminClient<DefaultClientContext>,
    /// Per partition, the offset records were last deleted up to.
    done: BTreeMap<u32, u64>,
}

impl std::fmt::Debug for Purger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Purger")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Purger {
    pub fn new(brokers: &str, topic: &str) -> Result<Purger, KafkaError> {
        let admin = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("log.connection.close", "false")
            .create()
            .map_err(|e| KafkaError::Config(e.to_string()))?;
        Ok(Purger {
            topic: topic.to_string(),
            admin,
            done: BTreeMap::new(),
        })
    }

    /// Deletes, in each partition of `committed` (partition → the next
    /// offset to read, committed to the group), the records before it.
    /// Partitions already purged that far are skipped. A failure is
    /// logged: the next commit tries again.
    pub fn purge(&mut self, committed: &BTreeMap<u32, u64>) {
        let due = due(&self.done, committed);
        if due.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for (&p, &next) in &due {
            if let Err(e) =
                list.add_partition_offset(&self.topic, p as i32, Offset::Offset(next as i64))
            {
                tracing::warn!(kafka.topic = %self.topic, error = %e, "cannot purge a repartition topic");
                return;
            }
        }
        let options = AdminOptions::new()
            .operation_timeout(Some(LOOKUP_TIMEOUT))
            .request_timeout(Some(LOOKUP_TIMEOUT));
        match block_on(self.admin.delete_records(&list, &options)) {
            Ok(result) => {
                for e in result.elements() {
                    match e.error() {
                        Ok(()) => {
                            if let Some(&next) = due.get(&(e.partition() as u32)) {
                                self.done.insert(e.partition() as u32, next);
                            }
                        }
                        Err(err) => tracing::warn!(
                            kafka.topic = %self.topic,
                            partition = e.partition(),
                            error = %err,
                            "cannot purge a repartition topic's committed records"
                        ),
                    }
                }
            }
            Err(e) => tracing::warn!(
                kafka.topic = %self.topic,
                error = %e,
                "cannot purge a repartition topic's committed records"
            ),
        }
    }
}

/// The partitions of `committed` whose offset is past the one `done`
/// purged up to.
fn due(done: &BTreeMap<u32, u64>, committed: &BTreeMap<u32, u64>) -> BTreeMap<u32, u64> {
    committed
        .iter()
        .filter(|(p, next)| done.get(p).is_none_or(|d| d < next))
        .map(|(&p, &next)| (p, next))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_partitions_read_further_are_purged_again() {
        let done = BTreeMap::from([(0, 10), (1, 5)]);
        let committed = BTreeMap::from([(0, 10), (1, 7), (2, 3)]);
        assert_eq!(due(&done, &committed), BTreeMap::from([(1, 7), (2, 3)]));
        assert!(due(&committed, &committed).is_empty());
    }

    #[test]
    fn a_wrong_partition_count_says_how_to_fix_it() {
        let why = wrong_count(3, 4);
        assert!(why.contains("has 3 partitions"), "{why}");
        assert!(why.contains("delete the topic"), "{why}");
    }

    #[test]
    fn a_mark_round_trips_and_a_hostile_one_is_refused() {
        let (header, payload) = event_time_mark(&BTreeSet::from([0, 3]), 12_345);
        assert_eq!(header, b"0,3");
        assert_eq!(
            parse_event_time_mark(&header, &payload, 4),
            Some((vec![0, 3], 12_345))
        );
        // A task past the partition count, a short payload, not a number.
        assert_eq!(parse_event_time_mark(&header, &payload, 3), None);
        assert_eq!(parse_event_time_mark(&header, &payload[..7], 4), None);
        assert_eq!(parse_event_time_mark(b"0,x", &payload, 4), None);
        assert_eq!(
            parse_event_time_mark(b"", &payload, 4),
            Some((vec![], 12_345))
        );
    }
}
