//! A cluster's control log: one compacted topic with one partition, so
//! every node reads the same writes in the same order (`weir serve
//! --cluster`, see `docs/cluster.md`).
//!
//! [`ControlLog`] appends keyed records (a `None` value is a tombstone)
//! through an idempotent producer with `acks=all` and answers with the
//! offset each got; [`ControlReader`] reads the topic from its beginning,
//! record by record, and says when it has reached the end. What the
//! records mean is the server's business, not this module's.

use std::sync::mpsc::{SyncSender, sync_channel};
use std::time::Duration;

use rdkafka::Message;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError as RdError;
use rdkafka::producer::{BaseRecord, DeliveryResult, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::config::{
    ErrorLog, KafkaError, LOOKUP_TIMEOUT, QuietContext, WeirConsumer, base_config, create_topic,
    partitions_of, send_waiting,
};

/// How long one append may take before it is reported as failed.
pub const APPEND_TIMEOUT: Duration = Duration::from_secs(30);

/// One record of the control topic as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlRecord {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    /// `None`: a tombstone (a delete).
    pub value: Option<Vec<u8>>,
}

/// What one poll of the reader gave.
#[derive(Debug)]
pub enum ControlPoll {
    Record(ControlRecord),
    /// Nothing more for now: the reader is at the end of the topic.
    AtEnd,
    /// Nothing within the poll's wait (or a transient error, logged).
    Idle,
}

/// The producer side's context: each delivery answers the append that
/// waits for it.
#[derive(Default)]
struct ControlContext {
    errors: ErrorLog,
}

super::config::logged_client_context!(ControlContext);

impl ProducerContext for ControlContext {
    type DeliveryOpaque = Box<SyncSender<Result<i64, String>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, answer: Self::DeliveryOpaque) {
        let outcome = match result {
            Ok(m) => Ok(m.offset()),
            Err((e, _)) => Err(e.to_string()),
        };
        let _ = answer.send(outcome);
    }
}

/// The writing side of a cluster's control topic.
pub struct ControlLog {
    brokers: String,
    topic: String,
    producer: ThreadedProducer<ControlContext>,
}

impl std::fmt::Debug for ControlLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlLog")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl ControlLog {
    /// Connects to `brokers` and creates `topic` (compacted, one
    /// partition) when it is missing. A topic that exists with more than
    /// one partition is refused: the control plane needs one order.
    pub fn open(brokers: &str, topic: &str) -> Result<ControlLog, KafkaError> {
        let lookup = super::config::lookup_consumer(brokers, &Default::default())?;
        match partitions_of(&lookup, brokers, topic) {
            Ok(partitions) if partitions.len() == 1 => {}
            Ok(partitions) => {
                return Err(KafkaError::Topic {
                    topic: topic.to_string(),
                    brokers: brokers.to_string(),
                    reason: format!(
                        "it has {} partitions, a cluster's control topic must have one (delete it, \
                         or name another cluster)",
                        partitions.len()
                    ),
                });
            }
            Err(KafkaError::NoSuchTopic { .. }) => {
                create_topic(
                    brokers,
                    topic,
                    1,
                    &[
                        ("cleanup.policy", "compact"),
                        ("min.compaction.lag.ms", "60000"),
                    ],
                )?;
                tracing::info!(kafka.topic = topic, "created the cluster's control topic");
            }
            Err(e) => return Err(e),
        }
        let producer: ThreadedProducer<ControlContext> = base_config(brokers, &Default::default())?
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            .set("message.timeout.ms", APPEND_TIMEOUT.as_millis().to_string())
            .create_with_context(ControlContext::default())
            .map_err(|e| KafkaError::Config(e.to_string()))?;
        Ok(ControlLog {
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            producer,
        })
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Appends `records` in order (the idempotent producer keeps their
    /// order) and waits for every one; answers the offset of the last.
    pub fn append(&self, records: &[(String, Option<Vec<u8>>)]) -> Result<i64, KafkaError> {
        let failed = |reason: String| KafkaError::Topic {
            topic: self.topic.clone(),
            brokers: self.brokers.clone(),
            reason,
        };
        let mut answers = Vec::with_capacity(records.len());
        for (key, value) in records {
            let (tx, rx) = sync_channel(1);
            let mut record = BaseRecord::<str, [u8], _>::with_opaque_to(&self.topic, Box::new(tx))
                .key(key.as_str());
            if let Some(v) = value {
                record = record.payload(v.as_slice());
            }
            send_waiting(&self.producer, record)
                .map_err(|e| failed(format!("cannot append record `{key}`: {e}")))?;
            answers.push((key, rx));
        }
        let mut last = -1;
        for (key, rx) in answers {
            match rx.recv_timeout(APPEND_TIMEOUT + Duration::from_secs(5)) {
                Ok(Ok(offset)) => last = offset,
                Ok(Err(e)) => {
                    return Err(failed(format!("record `{key}` was not written: {e}")));
                }
                Err(_) => {
                    return Err(failed(format!(
                        "record `{key}` was not acknowledged within {} s: check the brokers",
                        APPEND_TIMEOUT.as_secs()
                    )));
                }
            }
        }
        Ok(last)
    }

    /// A reader of the topic from its first record.
    pub fn reader(&self) -> Result<ControlReader, KafkaError> {
        ControlReader::open(&self.brokers, &self.topic)
    }

    /// The offset the next record will get (the end of the topic now).
    pub fn end(&self) -> Result<i64, KafkaError> {
        let lookup = super::config::lookup_consumer(&self.brokers, &Default::default())?;
        let (_, high) = lookup
            .fetch_watermarks(&self.topic, 0, LOOKUP_TIMEOUT)
            .map_err(|e| KafkaError::Unreachable {
                brokers: self.brokers.clone(),
                timeout_ms: LOOKUP_TIMEOUT.as_millis() as u64,
                reason: e.to_string(),
            })?;
        Ok(high)
    }
}

/// The reading side of a cluster's control topic: every record in offset
/// order, from the beginning.
pub struct ControlReader {
    consumer: WeirConsumer,
}

impl std::fmt::Debug for ControlReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlReader").finish_non_exhaustive()
    }
}

impl ControlReader {
    fn open(brokers: &str, topic: &str) -> Result<ControlReader, KafkaError> {
        let mut config: ClientConfig = base_config(brokers, &Default::default())?;
        config
            .set("group.id", "weir.control")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed");
        let consumer: WeirConsumer = config
            .create_with_context(QuietContext::default())
            .map_err(|e| KafkaError::Config(e.to_string()))?;
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(topic, 0, Offset::Beginning)
            .map_err(|e| KafkaError::Config(e.to_string()))?;
        consumer
            .assign(&list)
            .map_err(|e| KafkaError::Config(e.to_string()))?;
        Ok(ControlReader { consumer })
    }

    /// The next record, waiting up to `wait`.
    pub fn poll(&self, wait: Duration) -> ControlPoll {
        match self.consumer.poll(wait) {
            None => ControlPoll::Idle,
            Some(Ok(m)) => ControlPoll::Record(ControlRecord {
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
            }),
            Some(Err(RdError::PartitionEOF(_))) => ControlPoll::AtEnd,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "reading the cluster's control topic");
                ControlPoll::Idle
            }
        }
    }
}
