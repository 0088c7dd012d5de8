//! A keyed operator's changelog topic on a cluster
//! (`weir.<cluster>.<topology>.<operator>.changelog`, compacted, partitioned like
//! the topology's input): [`ChangelogTopic`] makes sure the topic exists
//! with the right partition count and reads partitions from given offsets
//! to their end, `read_committed` (the node's transactions write it:
//! `txn.rs`). [`partition_of`] is the partitioner of Kafka's
//! clients (and librdkafka's `murmur2_random` for keyed records), so a
//! state key goes to the changelog partition of the input partition its
//! records come from. What the records mean is `weir-state`'s business.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError as RdError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::config::{
    KafkaError, LOOKUP_TIMEOUT, create_topic, lookup_consumer, lookup_consumer_at, partitions_of,
};

/// A restore that reads nothing for this long fails (the brokers are
/// away).
const READ_STALL: Duration = Duration::from_secs(60);

/// Kafka's murmur2 (the Java client's `Utils.murmur2`, seed
/// `0x9747b28c`).
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition of a record keyed `key` among `partitions`, as Kafka's
/// default partitioner and librdkafka's `murmur2_random` choose it.
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// How many partitions `topic` has.
pub fn topic_partitions(brokers: &str, topic: &str) -> Result<u32, KafkaError> {
    let lookup = lookup_consumer(brokers, &Default::default())?;
    Ok(partitions_of(&lookup, brokers, topic)?.len() as u32)
}

/// What [`ChangelogTopic::read`] hands each record to: its partition,
/// key and value (`None`: a tombstone); an error ends the read.
pub type OnChangelogRecord<'a> = dyn FnMut(u32, &[u8], Option<&[u8]>) -> Result<(), String> + 'a;

/// A keyed operator's changelog topic.
pub struct ChangelogTopic {
    brokers: String,
    topic: String,
    partitions: u32,
}

impl std::fmt::Debug for ChangelogTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangelogTopic")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl ChangelogTopic {
    /// Connects to `topic` on `brokers`; when it is missing, creates it
    /// (compacted, `partitions` partitions) if `create`, else answers
    /// `None`. One with another number of partitions is refused (its rows
    /// would be in the wrong partitions).
    pub fn open(
        brokers: &str,
        topic: &str,
        partitions: u32,
        create: bool,
    ) -> Result<Option<ChangelogTopic>, KafkaError> {
        let lookup = lookup_consumer(brokers, &Default::default())?;
        match partitions_of(&lookup, brokers, topic) {
            Ok(found) if found.len() == partitions as usize => {}
            Ok(found) => {
                return Err(KafkaError::Topic {
                    topic: topic.to_string(),
                    brokers: brokers.to_string(),
                    reason: format!(
                        "the changelog has {} partitions and the topology's input {partitions}: \
                         a changelog is partitioned like the input (delete the changelog to \
                         start the operator's state afresh, or give the input its old count)",
                        found.len()
                    ),
                });
            }
            Err(KafkaError::NoSuchTopic { .. }) if !create => return Ok(None),
            Err(KafkaError::NoSuchTopic { .. }) => {
                create_topic(
                    brokers,
                    topic,
                    partitions as i32,
                    &[("cleanup.policy", "compact")],
                )?;
                tracing::info!(kafka.topic = topic, partitions, "created a changelog topic");
            }
            Err(e) => return Err(e),
        }
        Ok(Some(ChangelogTopic {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            partitions,
        }))
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    fn failed(&self, reason: String) -> KafkaError {
        KafkaError::Topic {
            topic: self.topic.clone(),
            brokers: self.brokers.clone(),
            reason,
        }
    }

    /// Reads `from` (partition → the offset to start at, `None`: the
    /// beginning) `read_committed` to the end each partition has now
    /// (its high watermark, so waiting for transactions open before that
    /// end to be ended: records committed after them are part of it),
    /// handing every record to `each` in offset order within its
    /// partition; answers where each partition ended (the next offset).
    /// A start past a partition's end (the topic was made anew) reads it
    /// from its beginning.
    pub fn read(
        &self,
        from: &BTreeMap<u32, Option<u64>>,
        each: &mut OnChangelogRecord<'_>,
    ) -> Result<BTreeMap<u32, u64>, KafkaError> {
        let consumer = lookup_consumer(&self.brokers, &Default::default())?;
        // The ends are high watermarks, past the records of open
        // transactions (a `read_committed` lookup answers the last stable
        // offset, the start of the first open transaction: the restore
        // would stop there instead of waiting).
        let ends_of = lookup_consumer_at(&self.brokers, &Default::default(), "read_uncommitted")?;
        let unreachable = |e: RdError| KafkaError::Unreachable {
            brokers: self.brokers.clone(),
            timeout_ms: LOOKUP_TIMEOUT.as_millis() as u64,
            reason: e.to_string(),
        };
        let mut ends = BTreeMap::new();
        let mut list = TopicPartitionList::new();
        for (&p, &start) in from {
            let (low, high) = ends_of
                .fetch_watermarks(&self.topic, p as i32, LOOKUP_TIMEOUT)
                .map_err(unreachable)?;
            let start = match start {
                Some(s) if s as i64 > high => {
                    tracing::warn!(kafka.topic = %self.topic, partition = p, local = s, end = high, "the local copy is past the changelog's end: reading it from its beginning");
                    None
                }
                other => other,
            };
            let first = start.map_or(low, |s| (s as i64).max(low));
            ends.insert(p, high.max(0) as u64);
            if first < high {
                list.add_partition_offset(&self.topic, p as i32, Offset::Offset(first))
                    .map_err(|e| KafkaError::Config(e.to_string()))?;
            }
        }
        let mut open: BTreeMap<i32, i64> = list
            .elements()
            .iter()
            .map(|e| (e.partition(), ends[&(e.partition() as u32)] as i64))
            .collect();
        if open.is_empty() {
            return Ok(ends);
        }
        consumer
            .assign(&list)
            .map_err(|e| KafkaError::Config(e.to_string()))?;
        let mut last_read = Instant::now();
        while !open.is_empty() {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    last_read = Instant::now();
                    let p = m.partition();
                    each(p as u32, m.key().unwrap_or_default(), m.payload())
                        .map_err(|reason| self.failed(reason))?;
                    if open.get(&p).is_some_and(|&end| m.offset() + 1 >= end) {
                        open.remove(&p);
                    }
                }
                Some(Err(RdError::PartitionEOF(p))) => {
                    // `read_committed` stops at the last stable offset: a
                    // transaction still open there (a previous owner's,
                    // killed inside it) is waited for until the broker
                    // ends it, since records committed after it by later
                    // owners are part of the state.
                    let at = consumer
                        .position()
                        .ok()
                        .and_then(|l| l.find_partition(&self.topic, p).map(|e| e.offset()));
                    let reached = match (at, open.get(&p)) {
                        (Some(Offset::Offset(at)), Some(&end)) => at >= end,
                        _ => true,
                    };
                    if reached {
                        open.remove(&p);
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(kafka.topic = %self.topic, error = %e, "reading a changelog");
                }
                None => {
                    // Past an ended transaction's records and marker
                    // without a record after them.
                    if let Ok(at) = consumer.position() {
                        open.retain(|&p, &mut end| {
                            !matches!(
                                at.find_partition(&self.topic, p).map(|e| e.offset()),
                                Some(Offset::Offset(o)) if o >= end
                            )
                        });
                    }
                }
            }
            if last_read.elapsed() > READ_STALL {
                return Err(self.failed(format!(
                    "nothing read for {} s with partitions {:?} not at their end: check the brokers",
                    READ_STALL.as_secs(),
                    open.keys().collect::<Vec<_>>()
                )));
            }
        }
        Ok(ends)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_is_the_java_clients() {
        // Values of Kafka's own `Utils.murmur2` test, as signed ints.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, want) in cases {
            assert_eq!(murmur2(key) as i32, want, "{key:?}");
        }
        assert_eq!(
            partition_of(b"21", 7),
            ((-973_932_308i32 & 0x7fff_ffff) % 7) as u32
        );
        for key in [&b""[..], b"x", b"word"] {
            assert!(partition_of(key, 8) < 8);
        }
    }
}
