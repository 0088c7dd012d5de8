//! librdkafka settings of a source or sink, built from its `kafka:` block,
//! and the few broker look-ups binding needs (a topic's partitions, the
//! progress topic), each with a timeout, so a broker that does not answer
//! gives an error that says so instead of a hang.
//!
//! Settings the connector owns come last, so `properties` cannot weaken
//! the guarantees (the document's validation refuses them too).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::statistics::Statistics;
use weir_io::EndpointStats;
use weir_topology::property_text;

/// The progress topic of exactly-once sinks that name none.
pub const DEFAULT_PROGRESS_TOPIC: &str = "weir-progress";
/// How long a look-up at binding (metadata, topic creation) may take.
pub(crate) const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a Kafka source or sink could not be bound or run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaError {
    #[error(
        "no Kafka brokers: set `kafka.brokers` in the document, or start Weir with \
         --kafka-brokers HOST:PORT (WEIR_KAFKA_BROKERS)"
    )]
    NoBrokers,
    #[error(
        "the Kafka brokers {brokers} did not answer within {timeout_ms} ms ({reason}): check \
         that they run and that `brokers` is right; the topology retries with backoff"
    )]
    Unreachable {
        brokers: String,
        timeout_ms: u64,
        reason: String,
    },
    #[error(
        "topic `{topic}` does not exist on {brokers}: create it (e.g. `kafka-topics.sh \
         --create --topic {topic}`) or fix the topic name"
    )]
    NoSuchTopic { topic: String, brokers: String },
    #[error("topic `{topic}` on {brokers}: {reason}")]
    Topic {
        topic: String,
        brokers: String,
        reason: String,
    },
    #[error("invalid librdkafka setting: {0}")]
    Config(String),
    #[error(
        "the transaction of producer {id} on {brokers} failed ({reason}): nothing of it is \
         visible; the checkpoint's changes go into the next one"
    )]
    Transaction {
        id: String,
        brokers: String,
        reason: String,
    },
}

impl KafkaError {
    /// Whether waiting may fix it (brokers coming back, a topic being
    /// created), so a supervisor should retry.
    pub fn recoverable(&self) -> bool {
        matches!(
            self,
            KafkaError::Unreachable { .. }
                | KafkaError::NoSuchTopic { .. }
                | KafkaError::Topic { .. }
        )
    }
}

/// The client context of Weir's consumers: librdkafka's errors go to
/// `tracing` ([`ErrorLog`]), without the end-of-partition notices that
/// reads ask for; with `ends`, the statistics librdkafka emits (when
/// `statistics.interval.ms` is set) give each partition's last stable
/// offset, the end a `read_committed` reader can reach.
#[derive(Debug, Default)]
pub(crate) struct QuietContext {
    errors: ErrorLog,
    ends: Option<Arc<EndpointStats>>,
}

impl QuietContext {
    /// A context that keeps partition ends in `stats`.
    pub(crate) fn with_ends(stats: Arc<EndpointStats>) -> QuietContext {
        QuietContext {
            ends: Some(stats),
            ..QuietContext::default()
        }
    }
}

/// Sends `record` through `producer`, waiting while librdkafka's queue is
/// full; any other refusal is answered.
pub(crate) fn send_waiting<'a, K, P, C>(
    producer: &rdkafka::producer::ThreadedProducer<C>,
    mut record: rdkafka::producer::BaseRecord<'a, K, P, C::DeliveryOpaque>,
) -> Result<(), RdError>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
    C: rdkafka::producer::ProducerContext + 'static,
{
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((e, back)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                record = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Implements `ClientContext` for a context type with an `errors:
/// ErrorLog` field: librdkafka's log lines through `log_client_line`, its
/// errors through the log (once per kind, see [`ErrorLog`]).
macro_rules! logged_client_context {
    ($context:ty) => {
        impl rdkafka::ClientContext for $context {
            fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
                $crate::kafka::config::log_client_line(level, facility, message);
            }

            fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
                self.errors.report(&error, reason);
            }
        }
    };
}
pub(crate) use logged_client_context;

impl ClientContext for QuietContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_client_line(level, facility, message);
    }

    fn error(&self, error: RdError, reason: &str) {
        self.errors.report(&error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        let Some(ends) = &self.ends else { return };
        for topic in statistics.topics.values() {
            for p in topic.partitions.values() {
                let end = if p.ls_offset >= 0 {
                    p.ls_offset
                } else {
                    p.hi_offset
                };
                if let (Ok(split), Ok(end)) = (u32::try_from(p.partition), u64::try_from(end)) {
                    ends.set_end(split, end);
                }
            }
        }
    }
}

impl ConsumerContext for QuietContext {}

/// A consumer of the connector.
pub(crate) type WeirConsumer = BaseConsumer<QuietContext>;

/// Least time between two warnings of one client that its brokers are
/// down (librdkafka says so at every reconnect attempt).
const BROKERS_DOWN_EVERY: Duration = Duration::from_secs(10);

/// Logs the errors librdkafka reports for a whole client: a partition's
/// end and a single failed connection (it reconnects with backoff) at
/// debug; "all brokers down" at warn once per [`BROKERS_DOWN_EVERY`];
/// the rest at warn.
#[derive(Debug, Default)]
pub(crate) struct ErrorLog {
    brokers_down_at: Mutex<Option<Instant>>,
}

impl ErrorLog {
    pub fn report(&self, error: &RdError, reason: &str) {
        let code = error.rdkafka_error_code();
        let quiet = matches!(error, RdError::PartitionEOF(_))
            || code == Some(RDKafkaErrorCode::PartitionEOF)
            || code == Some(RDKafkaErrorCode::BrokerTransportFailure)
            || (code == Some(RDKafkaErrorCode::AllBrokersDown) && !self.brokers_down_due());
        if quiet {
            tracing::debug!(target: "librdkafka", "{error}: {reason}");
        } else {
            tracing::warn!(target: "librdkafka", "{error}: {reason}");
        }
    }

    /// Whether a "brokers down" warning is due now (and marks it said).
    fn brokers_down_due(&self) -> bool {
        let Ok(mut at) = self.brokers_down_at.lock() else {
            return true;
        };
        let now = Instant::now();
        let due = at.is_none_or(|t| now.duration_since(t) >= BROKERS_DOWN_EVERY);
        if due {
            *at = Some(now);
        }
        due
    }
}

/// A log line of librdkafka, one level lower than it says for
/// connection failures (the error callback reports them already).
pub(crate) fn log_client_line(level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
            tracing::error!(target: "librdkafka", "{facility} {message}")
        }
        RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning if facility != "FAIL" => {
            tracing::warn!(target: "librdkafka", "{facility} {message}")
        }
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", "{facility} {message}")
        }
        _ => tracing::debug!(target: "librdkafka", "{facility} {message}"),
    }
}

/// A client config with `brokers` and the user's `properties`.
pub(crate) fn base_config(
    brokers: &str,
    properties: &std::collections::BTreeMap<String, serde_json::Value>,
) -> Result<ClientConfig, KafkaError> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    // Errors of a broker that is away are retried by librdkafka; say so
    // once at warn, not at error level on every reconnect.
    config.set("log.connection.close", "false");
    for (name, value) in properties {
        let text = property_text(value).ok_or_else(|| {
            KafkaError::Config(format!("`{name}` must be a string, a number or a boolean"))
        })?;
        config.set(name, text);
    }
    Ok(config)
}

/// The partitions of `topic`, sorted, from a metadata request.
pub(crate) fn partitions_of(
    consumer: &WeirConsumer,
    brokers: &str,
    topic: &str,
) -> Result<Vec<i32>, KafkaError> {
    let metadata = consumer
        .fetch_metadata(Some(topic), LOOKUP_TIMEOUT)
        .map_err(|e| KafkaError::Unreachable {
            brokers: brokers.to_string(),
            timeout_ms: LOOKUP_TIMEOUT.as_millis() as u64,
            reason: e.to_string(),
        })?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(KafkaError::NoSuchTopic {
            topic: topic.to_string(),
            brokers: brokers.to_string(),
        });
    };
    match found.error() {
        None => {}
        Some(code) => {
            let code = RDKafkaErrorCode::from(code);
            return Err(if code == RDKafkaErrorCode::UnknownTopicOrPartition {
                KafkaError::NoSuchTopic {
                    topic: topic.to_string(),
                    brokers: brokers.to_string(),
                }
            } else {
                KafkaError::Topic {
                    topic: topic.to_string(),
                    brokers: brokers.to_string(),
                    reason: code.to_string(),
                }
            });
        }
    }
    let mut partitions: Vec<i32> = found.partitions().iter().map(|p| p.id()).collect();
    partitions.sort_unstable();
    if partitions.is_empty() {
        return Err(KafkaError::NoSuchTopic {
            topic: topic.to_string(),
            brokers: brokers.to_string(),
        });
    }
    Ok(partitions)
}

/// A consumer that only looks things up (metadata, watermarks) or reads
/// by assignment, never committing; `read_committed` (a partition's end
/// is its last stable offset).
pub(crate) fn lookup_consumer(
    brokers: &str,
    properties: &std::collections::BTreeMap<String, serde_json::Value>,
) -> Result<WeirConsumer, KafkaError> {
    lookup_consumer_at(brokers, properties, "read_committed")
}

/// [`lookup_consumer`] at `isolation` (`read_uncommitted`: a partition's
/// end is its high watermark, past open transactions' records).
pub(crate) fn lookup_consumer_at(
    brokers: &str,
    properties: &std::collections::BTreeMap<String, serde_json::Value>,
    isolation: &str,
) -> Result<WeirConsumer, KafkaError> {
    let mut config = base_config(brokers, properties)?;
    config
        .set("group.id", "weir.lookup")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation);
    config
        .create_with_context(QuietContext::default())
        .map_err(|e| KafkaError::Config(e.to_string()))
}

/// Creates the compacted progress topic when it is missing (one
/// partition; the broker's default replication factor).
pub(crate) fn ensure_progress_topic(
    consumer: &WeirConsumer,
    brokers: &str,
    topic: &str,
) -> Result<(), KafkaError> {
    match partitions_of(consumer, brokers, topic) {
        Ok(_) => Ok(()),
        Err(KafkaError::NoSuchTopic { .. }) => {
            create_topic(
                brokers,
                topic,
                1,
                &[("cleanup.policy", "compact"), ("segment.ms", "3600000")],
            )?;
            tracing::info!(kafka.topic = topic, "created the progress topic");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Creates `topic` with `partitions` partitions, the broker's default
/// replication factor and the topic `settings`; a topic that exists
/// already is fine. (Weir creates its progress topic this way; tests and
/// tools their input and output topics.)
pub fn create_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    settings: &[(&str, &str)],
) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .map_err(|e| KafkaError::Config(e.to_string()))?;
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    for (name, value) in settings {
        new = new.set(name, value);
    }
    let options = AdminOptions::new()
        .operation_timeout(Some(LOOKUP_TIMEOUT))
        .request_timeout(Some(LOOKUP_TIMEOUT));
    let results =
        block_on(admin.create_topics([&new], &options)).map_err(|e| KafkaError::Unreachable {
            brokers: brokers.to_string(),
            timeout_ms: LOOKUP_TIMEOUT.as_millis() as u64,
            reason: e.to_string(),
        })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(KafkaError::Topic {
                    topic: name,
                    brokers: brokers.to_string(),
                    reason: format!("cannot create it: {code}"),
                });
            }
        }
    }
    Ok(())
}

/// Wakes the thread that waits in [`block_on`].
struct ThreadWaker(std::thread::Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs a future to its end on this thread (the admin client's futures
/// are completed by librdkafka's own thread).
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(out) => return out,
            Poll::Pending => std::thread::park_timeout(Duration::from_millis(100)),
        }
    }
}
