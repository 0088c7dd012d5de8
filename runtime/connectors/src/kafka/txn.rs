//! [`NodeProducer`]: a cluster node's transactional producer for one
//! topology (Kafka's exactly-once v2): per checkpoint, one transaction
//! holds the output of the node's exactly-once sinks, the changelog
//! records of its state and the input offsets it read up to, the offsets
//! sent with the consumer group's metadata (`send_offsets_to_transaction`)
//! so that the broker refuses them from a member of an older generation.
//! Either all of it is visible to `read_committed` readers and the group,
//! or none of it; a member the group has moved on from (a zombie) has its
//! offsets refused, so its transaction aborts.
//!
//! The producer's `transactional.id` is stable per node and topology
//! (`weir.<cluster>.<topology>.<node>`): a new instance fences the old
//! one and `init_transactions` aborts what it left open.
//!
//! [`Phase`] and [`after_failure`] are the decisions (what a failed step
//! leaves the producer fit for), without I/O; [`NodeProducer::commit`]
//! is the I/O around them.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use weir_io::fault::{self, FaultPoint};
use weir_topology::KafkaSinkDoc;
use weir_types::Batch;

use super::config::{ErrorLog, KafkaError, send_waiting};
use super::format::RecordFormat;
use super::group::GroupFence;
use super::repartition::EVENT_TIME_MARK;
use super::sink::send_event;

/// How long a transaction may stay open before the broker aborts it: a
/// node killed inside one holds back `read_committed` readers of the
/// partitions it wrote (and the next owner's restore) this long at most.
pub const NODE_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one step (init, offsets, commit, abort) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the producer is between two commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No producer instance, or one whose `init_transactions` has not run.
    Fresh,
    /// Transactions initialised, none open.
    Ready,
    /// Another instance with the same `transactional.id`, or the group,
    /// fenced this one: it must not write again.
    Fenced,
}

/// What kind of failure a step had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The transaction can be aborted and the producer used again.
    Abortable,
    /// The producer instance is unusable (librdkafka's fatal errors).
    Fatal,
    /// A newer producer of this `transactional.id` took over.
    Fenced,
}

/// What to do after a failed step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Abort the open transaction; the producer stays.
    Abort,
    /// Drop the producer; the next commit makes and initialises a new one
    /// (which aborts what this one left open).
    Renew,
}

/// The phase after a failure of kind `failure`, and what to do about it.
/// A producer whose abort fails too is renewed.
pub fn after_failure(failure: Failure, abort_failed: bool) -> (Phase, Recovery) {
    match failure {
        Failure::Fenced => (Phase::Fenced, Recovery::Renew),
        Failure::Fatal => (Phase::Fresh, Recovery::Renew),
        Failure::Abortable if abort_failed => (Phase::Fresh, Recovery::Renew),
        Failure::Abortable => (Phase::Ready, Recovery::Abort),
    }
}

/// The kind of a librdkafka error of a transactional step.
pub fn failure_of(error: &RdError) -> Failure {
    let code = match error {
        RdError::Transaction(e) if e.is_fatal() => return Failure::Fatal,
        RdError::Transaction(e) => Some(e.code()),
        other => other.rdkafka_error_code(),
    };
    match code {
        // A newer instance of this `transactional.id`.
        Some(RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch) => {
            Failure::Fenced
        }
        // The group moved to a newer generation (or expelled this member)
        // between reading its metadata and sending the offsets: the
        // transaction is aborted, and the next checkpoint reads the
        // metadata again; a member that lost its partitions has its job
        // stopped by the revocation, and until then each commit it tries
        // is refused the same way.
        Some(RDKafkaErrorCode::Fatal) => Failure::Fatal,
        _ => Failure::Abortable,
    }
}

/// An exactly-once sink's topic and record format, for its output in
/// the node's transaction.
#[derive(Debug, Clone)]
pub struct OutputTopic {
    topic: String,
    format: RecordFormat,
}

impl OutputTopic {
    pub fn of_sink(doc: &KafkaSinkDoc) -> OutputTopic {
        OutputTopic {
            topic: doc.topic.clone(),
            format: RecordFormat::of_sink(doc),
        }
    }
}

/// One changelog record: topic, partition, key, value (`None`: a
/// tombstone).
pub type ChangelogRecord<'a> = (&'a str, u32, &'a [u8], Option<&'a [u8]>);

/// One event-time mark of a repartition topic: topic, partition, the
/// tasks (header value) and the event time (see `repartition.rs`).
pub type MarkRecord<'a> = (&'a str, u32, &'a [u8], i64);

/// What one checkpoint commits in Kafka.
#[derive(Debug, Default)]
pub struct NodeCommit<'a> {
    pub changelog: Vec<ChangelogRecord<'a>>,
    pub outputs: Vec<(&'a OutputTopic, &'a Batch)>,
    /// Written after the outputs, so each follows the records it covers.
    pub marks: Vec<MarkRecord<'a>>,
    /// Input topic and partition → the next offset to read.
    pub offsets: BTreeMap<(String, i32), u64>,
}

/// Acknowledged writes of the open transaction.
#[derive(Debug, Default)]
struct Delivered {
    /// Per topic and partition, the highest offset written.
    last: BTreeMap<(String, i32), i64>,
    error: Option<String>,
}

#[derive(Default)]
struct TxnContext {
    errors: ErrorLog,
    delivered: Mutex<Delivered>,
}

super::config::logged_client_context!(TxnContext);

impl ProducerContext for TxnContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let mut delivered = self.delivered.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(m) => {
                let last = delivered
                    .last
                    .entry((m.topic().to_string(), m.partition()))
                    .or_insert(-1);
                *last = (*last).max(m.offset());
            }
            Err((e, _)) => {
                delivered.error.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

type TxnProducer = ThreadedProducer<TxnContext>;

/// The state between commits: the phase, and the producer when one is
/// not in use (it is taken out while a commit runs, so no lock is held
/// across the broker's answers).
struct Slot {
    phase: Phase,
    producer: Option<TxnProducer>,
}

/// A node's transactional producer for one topology.
pub struct NodeProducer {
    brokers: String,
    id: String,
    slot: Mutex<Slot>,
}

impl std::fmt::Debug for NodeProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeProducer")
            .field("transactional_id", &self.id)
            .finish_non_exhaustive()
    }
}

impl NodeProducer {
    /// A producer with `transactional.id` `id`; it connects at its first
    /// commit.
    pub fn new(brokers: &str, id: &str) -> NodeProducer {
        NodeProducer {
            brokers: brokers.to_string(),
            id: id.to_string(),
            slot: Mutex::new(Slot {
                phase: Phase::Fresh,
                producer: None,
            }),
        }
    }

    pub fn transactional_id(&self) -> &str {
        &self.id
    }

    fn failed(&self, reason: String) -> KafkaError {
        KafkaError::Transaction {
            id: self.id.clone(),
            brokers: self.brokers.clone(),
            reason,
        }
    }

    /// A producer ready for a transaction: the kept one, or a new one
    /// (fencing earlier instances of the id and aborting what they left
    /// open).
    fn take_ready(&self) -> Result<TxnProducer, KafkaError> {
        let (phase, kept) = {
            let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
            (slot.phase, slot.producer.take())
        };
        match (phase, kept) {
            (Phase::Fenced, _) => Err(self.failed(
                "another instance of this node's producer for the topology took over: this \
                 job must stop"
                    .into(),
            )),
            (Phase::Ready, Some(producer)) => Ok(producer),
            _ => {
                let producer: TxnProducer = ClientConfig::new()
                    .set("bootstrap.servers", &self.brokers)
                    .set("log.connection.close", "false")
                    .set("partitioner", "murmur2_random")
                    .set("linger.ms", "5")
                    .set("enable.idempotence", "true")
                    .set("acks", "all")
                    .set("transactional.id", &self.id)
                    .set(
                        "transaction.timeout.ms",
                        NODE_TRANSACTION_TIMEOUT.as_millis().to_string(),
                    )
                    .create_with_context(TxnContext::default())
                    .map_err(|e| KafkaError::Config(e.to_string()))?;
                producer
                    .init_transactions(STEP_TIMEOUT)
                    .map_err(|e| self.failed(format!("cannot start transactions: {e}")))?;
                Ok(producer)
            }
        }
    }

    fn put_back(&self, phase: Phase, producer: Option<TxnProducer>) {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        slot.phase = phase;
        slot.producer = producer;
    }

    /// Commits `commit` in one transaction, the offsets to `fence`'s
    /// group; answers, per topic and partition written, the offset after
    /// the last record written there. On failure nothing of it is
    /// visible (the transaction is aborted, or left to the broker's
    /// timeout when the producer is unusable).
    pub fn commit(
        &self,
        commit: &NodeCommit<'_>,
        fence: &GroupFence,
    ) -> Result<BTreeMap<(String, i32), u64>, KafkaError> {
        let producer = self.take_ready()?;
        *producer
            .context()
            .delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Delivered::default();
        match self.run(&producer, commit, fence) {
            Ok(()) => {
                let delivered = std::mem::take(
                    &mut *producer
                        .context()
                        .delivered
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()),
                );
                self.put_back(Phase::Ready, Some(producer));
                Ok(delivered
                    .last
                    .into_iter()
                    .map(|(tp, o)| (tp, (o + 1) as u64))
                    .collect())
            }
            Err((failure, reason)) => {
                let abort_failed = failure == Failure::Abortable
                    && producer.abort_transaction(STEP_TIMEOUT).is_err();
                let (phase, recovery) = after_failure(failure, abort_failed);
                tracing::warn!(transactional_id = %self.id, ?failure, ?recovery, %reason, "the node's transaction failed");
                let kept = (recovery == Recovery::Abort).then_some(producer);
                self.put_back(phase, kept);
                Err(self.failed(reason))
            }
        }
    }

    /// The transaction's steps.
    fn run(
        &self,
        producer: &TxnProducer,
        commit: &NodeCommit<'_>,
        fence: &GroupFence,
    ) -> Result<(), (Failure, String)> {
        fn step(what: impl std::fmt::Display) -> impl Fn(RdError) -> (Failure, String) {
            move |e: RdError| (failure_of(&e), format!("{what}: {e}"))
        }
        producer
            .begin_transaction()
            .map_err(step("cannot begin a transaction"))?;
        for &(topic, partition, key, value) in &commit.changelog {
            let mut record = BaseRecord::<[u8], [u8]>::to(topic)
                .partition(partition as i32)
                .key(key);
            if let Some(v) = value {
                record = record.payload(v);
            }
            send_waiting(producer, record)
                .map_err(step(format!("cannot queue a record for changelog {topic}")))?;
        }
        for (output, batch) in &commit.outputs {
            for e in batch.iter() {
                send_event(producer, &output.format, &output.topic, &e).map_err(step(format!(
                    "cannot queue a record for topic `{}`",
                    output.topic
                )))?;
            }
        }
        for &(topic, partition, tasks, time) in &commit.marks {
            let payload = time.to_be_bytes();
            let headers = OwnedHeaders::new().insert(Header {
                key: EVENT_TIME_MARK,
                value: Some(tasks),
            });
            let record = BaseRecord::<[u8], [u8]>::to(topic)
                .partition(partition as i32)
                .payload(&payload[..])
                .headers(headers);
            send_waiting(producer, record).map_err(step(format!(
                "cannot queue an event-time mark for topic `{topic}`"
            )))?;
        }
        if !commit.offsets.is_empty() {
            let mut list = TopicPartitionList::new();
            for ((topic, partition), &next) in &commit.offsets {
                list.add_partition_offset(topic, *partition, Offset::Offset(next as i64))
                    .map_err(step("bad offset"))?;
            }
            let metadata = fence
                .metadata()
                .map_err(|e| (Failure::Abortable, e.to_string()))?;
            producer
                .send_offsets_to_transaction(&list, &metadata, STEP_TIMEOUT)
                .map_err(step(format!(
                    "cannot add the input offsets to the transaction (group {})",
                    fence.group()
                )))?;
        }
        if fault::is_armed(FaultPoint::BeforeKafkaCommit) {
            // What the crash interrupts must be in the broker already.
            let _ = producer.flush(STEP_TIMEOUT);
            let _ = fault::reach(FaultPoint::BeforeKafkaCommit);
        }
        producer
            .commit_transaction(STEP_TIMEOUT)
            .map_err(step("cannot commit the transaction"))?;
        let failed = producer
            .context()
            .delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .error
            .take();
        match failed {
            // Not reached: a commit fails when a record does.
            Some(e) => Err((Failure::Abortable, format!("a record was not written: {e}"))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_step_leaves_the_producer_fit_for_what_it_can_still_do() {
        // A broker's passing refusal: abort, keep the producer.
        assert_eq!(
            after_failure(Failure::Abortable, false),
            (Phase::Ready, Recovery::Abort)
        );
        // The abort failing too: a new producer, whose init aborts it.
        assert_eq!(
            after_failure(Failure::Abortable, true),
            (Phase::Fresh, Recovery::Renew)
        );
        assert_eq!(
            after_failure(Failure::Fatal, false),
            (Phase::Fresh, Recovery::Renew)
        );
        // Fenced: never writes again, whatever the abort did.
        for abort_failed in [false, true] {
            assert_eq!(
                after_failure(Failure::Fenced, abort_failed).0,
                Phase::Fenced
            );
        }
    }

    #[test]
    fn fencing_errors_are_told_from_passing_ones() {
        let of = |code| failure_of(&RdError::MessageProduction(code));
        for code in [
            RDKafkaErrorCode::ProducerFenced,
            RDKafkaErrorCode::InvalidProducerEpoch,
        ] {
            assert_eq!(of(code), Failure::Fenced, "{code:?}");
        }
        // The group's generation moved on: this transaction is refused,
        // the producer is not.
        for code in [
            RDKafkaErrorCode::IllegalGeneration,
            RDKafkaErrorCode::UnknownMemberId,
            RDKafkaErrorCode::RequestTimedOut,
        ] {
            assert_eq!(of(code), Failure::Abortable, "{code:?}");
        }
        assert_eq!(
            failure_of(&RdError::MessageProduction(RDKafkaErrorCode::Fatal)),
            Failure::Fatal
        );
    }

    #[test]
    fn a_fenced_producer_refuses_to_commit_without_touching_the_brokers() {
        // Nothing listens on port 1: a producer that tried would fail with
        // a connection error, not with the fence's message.
        let node = NodeProducer::new("127.0.0.1:1", "weir.c.t.n");
        node.put_back(Phase::Fenced, None);
        let fence = GroupFence::detached("weir.c.t");
        let err = node.commit(&NodeCommit::default(), &fence).unwrap_err();
        assert!(err.to_string().contains("took over"), "{err}");
    }
}
