//! [`KafkaSink`]: a topology's output to one Kafka topic.
//!
//! Exactly-once (the default): the engine hands the sink a checkpoint's
//! output only after Weir's checkpoint commit made it durable
//! ([`Sink::publish`]); the sink writes it in one Kafka transaction
//! together with a [`Marker`] (topology, sink, lineage, checkpoint id),
//! keyed by topology and sink, in a compacted progress topic. The
//! producer's `transactional.id` is stable per sink, so a new process
//! fences the old one and `init_transactions` aborts whatever it left open.
//! At a restore ([`Sink::recover`]), the sink reads its last marker
//! `read_committed`: when it names the restored checkpoint (or a later one
//! of the same lineage), that output is in Kafka already; otherwise it is
//! published again. librdkafka cannot take over a prepared transaction
//! after a crash, so nothing is "committed on recovery": output is
//! republished from Weir's own durable copy instead.
//!
//! At-least-once (`delivery: at-least-once`): an idempotent producer
//! writes each batch as it comes and waits for its acknowledgement; a
//! crash may write some output twice.
//!
//! On a cluster's node an exactly-once sink publishes nothing itself: its
//! checkpoint output goes into the node's transaction with the changelog
//! records and the input offsets ([`NodeProducer`](super::NodeProducer)),
//! through [`send_event`], the one place an event becomes a record.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use weir_io::{CheckpointRef, EndpointStats, Sink};
use weir_topology::{KafkaDelivery, KafkaSinkDoc, property_text};
use weir_types::{Batch, EventRef};

use super::config::{KafkaError, lookup_consumer, partitions_of, send_waiting};
use super::format::RecordFormat;
use weir_io::fault::{self, FaultPoint};

/// How long a transaction step (init, commit, abort) or a flush may take.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long reading the progress topic to its end may take.
const MARKER_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// What an exactly-once sink writes to the progress topic with each
/// checkpoint's output, in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub topology: String,
    pub sink: String,
    pub lineage: String,
    pub checkpoint: u64,
}

impl Marker {
    /// Whether the output of checkpoint `at` is in Kafka when this is the
    /// last marker: checkpoints are published in order within a lineage.
    pub fn covers(&self, at: &CheckpointRef) -> bool {
        self.lineage == at.lineage && self.checkpoint >= at.id
    }
}

/// Records the first delivery failure (the at-least-once path checks it
/// after each flush).
#[derive(Default)]
struct SinkContext {
    failed: Mutex<Option<String>>,
    errors: super::config::ErrorLog,
}

super::config::logged_client_context!(SinkContext);

impl ProducerContext for SinkContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result
            && let Ok(mut failed) = self.failed.lock()
            && failed.is_none()
        {
            *failed = Some(e.to_string());
        }
    }
}

/// The progress topic side of an exactly-once sink.
#[derive(Debug, Clone)]
struct Progress {
    topic: String,
    /// The marker's record key: `<topology>/<sink>`.
    key: String,
    topology: String,
    sink: String,
}

/// A Kafka topic as a sink. Created by [`bind_kafka`](super::bind_kafka).
pub struct KafkaSink {
    /// `sink `name``, for messages.
    what: String,
    topic: String,
    brokers: String,
    producer: ThreadedProducer<SinkContext>,
    format: RecordFormat,
    /// `Some` for exactly-once on its own.
    progress: Option<Progress>,
    /// Exactly-once on a cluster's node: the node's transaction publishes
    /// the checkpoint output, this sink nothing.
    in_node_transaction: bool,
    /// `init_transactions` done (exactly-once).
    ready: bool,
    /// Transactions committed and aborted by this sink instance.
    commits: u64,
    aborts: u64,
    /// `records_out`, `transactions_committed`, `transactions_aborted`.
    stats: Arc<EndpointStats>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.topic)
            .field("exactly_once", &self.progress.is_some())
            .field("commits", &self.commits)
            .field("aborts", &self.aborts)
            .finish()
    }
}

impl KafkaSink {
    /// Its live figures: `records_out`, `transactions_committed`,
    /// `transactions_aborted`.
    pub fn stats(&self) -> Arc<EndpointStats> {
        self.stats.clone()
    }

    /// A producer for `doc`'s topic (checked to exist); exactly-once ones
    /// also get their progress topic (created when missing), unless
    /// `in_cluster`: then the node's transaction publishes their output.
    pub(crate) fn connect(
        what: String,
        topology: &str,
        sink: &str,
        doc: &KafkaSinkDoc,
        brokers: &str,
        in_cluster: bool,
    ) -> Result<KafkaSink, KafkaError> {
        let lookup = lookup_consumer(brokers, &Default::default())?;
        let partitions = partitions_of(&lookup, brokers, &doc.topic)?;
        let eos = doc.delivery.unwrap_or_default() == KafkaDelivery::ExactlyOnce;
        let in_node_transaction = eos && in_cluster;
        let exactly_once = eos && !in_cluster;
        let progress = if exactly_once {
            let topic = doc
                .progress_topic
                .clone()
                .unwrap_or_else(|| super::DEFAULT_PROGRESS_TOPIC.to_string());
            super::config::ensure_progress_topic(&lookup, brokers, &topic)?;
            Some(Progress {
                topic,
                key: format!("{topology}/{sink}"),
                topology: topology.to_string(),
                sink: sink.to_string(),
            })
        } else {
            None
        };
        let mut config = ClientConfig::new();
        config
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "5")
            .set("log.connection.close", "false");
        if exactly_once {
            config.set("transaction.timeout.ms", "60000");
        }
        for (name, value) in &doc.properties {
            if let Some(text) = property_text(value) {
                config.set(name, text);
            }
        }
        // What the connector's guarantees rest on comes last.
        config
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true");
        if exactly_once {
            let id = doc
                .transactional_id
                .clone()
                .unwrap_or_else(|| format!("weir.{topology}.{sink}"));
            config.set("transactional.id", id);
        }
        let producer: ThreadedProducer<SinkContext> = config
            .create_with_context(SinkContext::default())
            .map_err(|e| KafkaError::Config(e.to_string()))?;
        tracing::info!(
            kafka.topic = %doc.topic,
            partitions = partitions.len(),
            exactly_once = eos,
            in_node_transaction,
            "{what} writes a Kafka topic"
        );
        Ok(KafkaSink {
            what,
            topic: doc.topic.clone(),
            brokers: brokers.to_string(),
            producer,
            format: RecordFormat::of_sink(doc),
            progress,
            in_node_transaction,
            ready: false,
            commits: 0,
            aborts: 0,
            stats: Arc::default(),
        })
    }

    fn fault(&mut self, point: FaultPoint) {
        if fault::is_armed(point) {
            // What the crash interrupts must be in the broker already.
            let _ = self.producer.flush(TRANSACTION_TIMEOUT);
            let _ = fault::reach(point);
        }
    }

    /// Fences earlier producers of this sink and aborts what they left
    /// open, once.
    fn ensure_ready(&mut self) -> Result<(), String> {
        if self.ready || self.progress.is_none() {
            return Ok(());
        }
        self.producer
            .init_transactions(TRANSACTION_TIMEOUT)
            .map_err(|e| {
                format!(
                    "{}: cannot start transactions on {}: {e}",
                    self.what, self.brokers
                )
            })?;
        self.ready = true;
        Ok(())
    }

    /// Queues `batch`'s events as records of the sink's topic.
    fn send_batch<'b>(&self, events: impl Iterator<Item = EventRef<'b>>) -> Result<(), String> {
        for e in events {
            send_event(&self.producer, &self.format, &self.topic, &e).map_err(|e| {
                format!(
                    "{}: cannot queue a record for topic `{}`: {e}",
                    self.what, self.topic
                )
            })?;
        }
        Ok(())
    }

    /// One transaction: `batch`, then the marker of `at` when given.
    fn transaction(&mut self, batch: &Batch, at: Option<&CheckpointRef>) -> Result<(), String> {
        self.ensure_ready()?;
        self.producer
            .begin_transaction()
            .map_err(|e| format!("{}: cannot begin a transaction: {e}", self.what))?;
        let sent = self.fill(batch, at).and_then(|()| {
            self.producer
                .commit_transaction(TRANSACTION_TIMEOUT)
                .map_err(|e| format!("{}: cannot commit the transaction: {e}", self.what))
        });
        match sent {
            Ok(()) => {
                self.commits += 1;
                self.stats.add("transactions_committed", 1);
                self.stats.add("records_out", batch.len() as u64);
                Ok(())
            }
            Err(reason) => {
                self.aborts += 1;
                self.stats.add("transactions_aborted", 1);
                if let Err(e) = self.producer.abort_transaction(TRANSACTION_TIMEOUT) {
                    // The producer is unusable (fenced, fatal): the
                    // restart makes a new one.
                    self.ready = false;
                    tracing::warn!(kafka.topic = %self.topic, "{}: abort failed too: {e}", self.what);
                }
                Err(reason)
            }
        }
    }

    /// Queues `batch` and then the marker of `at` (when given) in the open
    /// transaction, passing the crash points.
    fn fill(&mut self, batch: &Batch, at: Option<&CheckpointRef>) -> Result<(), String> {
        let half = batch.len() / 2;
        self.send_batch(batch.iter().take(half))?;
        if at.is_some() {
            self.fault(FaultPoint::MidPublish);
        }
        self.send_batch(batch.iter().skip(half))?;
        let marker = match (at, &self.progress) {
            (Some(at), Some(progress)) => {
                let marker = Marker {
                    topology: progress.topology.clone(),
                    sink: progress.sink.clone(),
                    lineage: at.lineage.clone(),
                    checkpoint: at.id,
                };
                let value = serde_json::to_vec(&marker).map_err(|e| e.to_string())?;
                Some((progress.topic.clone(), progress.key.clone(), value))
            }
            _ => None,
        };
        if let Some((topic, key, value)) = marker {
            let record = BaseRecord::<[u8], [u8]>::to(&topic)
                .key(key.as_bytes())
                .payload(&value);
            send_waiting(&self.producer, record).map_err(|e| {
                format!(
                    "{}: cannot queue the progress marker for topic `{topic}`: {e}",
                    self.what
                )
            })?;
            self.fault(FaultPoint::BeforeKafkaCommit);
        }
        Ok(())
    }

    /// The last marker of this sink in the progress topic, read
    /// `read_committed` to its end.
    fn last_marker(&self) -> Result<Option<Marker>, String> {
        let Some(progress) = &self.progress else {
            return Ok(None);
        };
        let err = |e: KafkaError| format!("{}: {e}", self.what);
        let consumer = lookup_consumer(&self.brokers, &Default::default()).map_err(err)?;
        let partitions = partitions_of(&consumer, &self.brokers, &progress.topic).map_err(err)?;
        let mut list = TopicPartitionList::new();
        for &p in &partitions {
            list.add_partition_offset(&progress.topic, p, Offset::Beginning)
                .map_err(|e| e.to_string())?;
        }
        consumer.assign(&list).map_err(|e| e.to_string())?;
        let mut unfinished: std::collections::BTreeSet<i32> = partitions.into_iter().collect();
        let mut last = None;
        let deadline = Instant::now() + MARKER_READ_TIMEOUT;
        while !unfinished.is_empty() {
            if Instant::now() > deadline {
                return Err(format!(
                    "{}: could not read the progress topic `{}` to its end within {} s",
                    self.what,
                    progress.topic,
                    MARKER_READ_TIMEOUT.as_secs()
                ));
            }
            match consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(msg)) => {
                    if msg.key() != Some(progress.key.as_bytes()) {
                        continue;
                    }
                    match msg.payload().map(serde_json::from_slice::<Marker>) {
                        Some(Ok(marker)) => last = Some(marker),
                        Some(Err(e)) => tracing::warn!(
                            kafka.topic = %progress.topic,
                            offset = msg.offset(),
                            "{}: a progress marker is not readable ({e}); ignored",
                            self.what
                        ),
                        // A tombstone: the marker was deleted.
                        None => last = None,
                    }
                }
                Some(Err(RdError::PartitionEOF(p))) => {
                    unfinished.remove(&p);
                }
                Some(Err(e)) => tracing::debug!("{}: reading markers: {e}", self.what),
            }
        }
        Ok(last)
    }
}

/// Queues event `e` as a record of `topic` in `format` (key, value,
/// timestamp, headers), waiting while the producer's queue is full.
pub(crate) fn send_event<C>(
    producer: &ThreadedProducer<C>,
    format: &RecordFormat,
    topic: &str,
    e: &EventRef<'_>,
) -> Result<(), RdError>
where
    C: ProducerContext<DeliveryOpaque = ()> + 'static,
{
    let value = format.record_value(e.value);
    let key = format.record_key(e.key, e.value);
    let mut record = BaseRecord::<[u8], [u8]>::to(topic).payload(&*value);
    if let Some(key) = &key {
        record = record.key(&**key);
    }
    if e.timestamp >= 0 {
        record = record.timestamp(e.timestamp);
    }
    if format.headers && !e.headers.is_empty() {
        let mut headers = OwnedHeaders::new_with_capacity(e.headers.len());
        for (_, name, value) in e.headers {
            headers = headers.insert(Header {
                key: name.as_str(),
                value: Some(value.as_slice()),
            });
        }
        record = record.headers(headers);
    }
    send_waiting(producer, record)
}

impl Sink for KafkaSink {
    fn write(&mut self, batch: &Batch) -> Result<(), String> {
        if batch.is_empty() {
            return Ok(());
        }
        if self.in_node_transaction {
            return Err(format!(
                "{}: on a cluster's node an exactly-once Kafka sink publishes with the \
                 topology's checkpoints: give the topology a `checkpoint` interval",
                self.what
            ));
        }
        if self.progress.is_some() {
            // Exactly-once without checkpoints: a transaction per batch.
            return self.transaction(batch, None);
        }
        self.send_batch(batch.iter())?;
        self.producer.flush(TRANSACTION_TIMEOUT).map_err(|e| {
            format!(
                "{}: records were not acknowledged by {}: {e}",
                self.what, self.brokers
            )
        })?;
        let failed = self
            .producer
            .context()
            .failed
            .lock()
            .map_err(|_| "the delivery report lock is poisoned".to_string())?
            .take();
        match failed {
            Some(reason) => Err(format!(
                "{}: a record was not delivered to topic `{}`: {reason}",
                self.what, self.topic
            )),
            None => {
                self.stats.add("records_out", batch.len() as u64);
                Ok(())
            }
        }
    }

    fn exactly_once(&self) -> bool {
        self.progress.is_some() || self.in_node_transaction
    }

    fn publish(&mut self, at: &CheckpointRef, batch: &Batch) -> Result<(), String> {
        if batch.is_empty() {
            return Ok(());
        }
        if self.in_node_transaction {
            // Committed already, in the node's transaction of checkpoint
            // `at`, before Weir's own commit.
            self.stats.add("records_out", batch.len() as u64);
            return Ok(());
        }
        self.transaction(batch, Some(at))
    }

    fn recover(
        &mut self,
        at: &CheckpointRef,
        _position: u64,
        pending: &Batch,
    ) -> Result<(), String> {
        if self.in_node_transaction {
            // The restored checkpoint's output was committed in Kafka with
            // the checkpoint's input offsets before the checkpoint was
            // committed here: publishing it again would repeat it.
            return Ok(());
        }
        if self.progress.is_none() {
            return self.write(pending);
        }
        // Fence first: init_transactions aborts what a crashed producer
        // left open, so reading the markers to their end cannot wait on it.
        self.ensure_ready()?;
        match self.last_marker()? {
            Some(marker) if marker.covers(at) => {
                tracing::info!(
                    kafka.topic = %self.topic,
                    checkpoint = at.id,
                    "{}: the restored checkpoint's output is in Kafka already",
                    self.what
                );
                Ok(())
            }
            marker => {
                tracing::info!(
                    kafka.topic = %self.topic,
                    checkpoint = at.id,
                    events = pending.len(),
                    last_marker = ?marker.map(|m| m.checkpoint),
                    "{}: publishing the restored checkpoint's output again",
                    self.what
                );
                if pending.is_empty() {
                    return Ok(());
                }
                self.transaction(pending, Some(at))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_covers_its_checkpoint_and_earlier_ones_of_its_lineage() {
        let marker = Marker {
            topology: "t".into(),
            sink: "out".into(),
            lineage: "a".into(),
            checkpoint: 7,
        };
        let at = |lineage: &str, id| CheckpointRef {
            lineage: lineage.into(),
            id,
        };
        assert!(marker.covers(&at("a", 7)));
        assert!(marker.covers(&at("a", 3)));
        assert!(!marker.covers(&at("a", 8)));
        // Another run (a fresh start, a savepoint) begins a new lineage.
        assert!(!marker.covers(&at("b", 2)));
    }
}
