//! weir-connectors: where events come from and go to.
//!
//! Today: **embedded streams** ([`StreamStore`], [`Stream`]): named,
//! append-only, durable logs of events in the data directory, the default
//! source and sink, needing no other service. An append is acknowledged
//! only once it is on disk (`fsync`); events are read by offset, and a
//! reader can wait for the tail to grow. Retention drops whole old
//! segments by size or age.
//!
//! Delivery: appends are durable when acknowledged; a torn tail left by a
//! crash is detected by checksum and cut off at open; an event the record
//! format cannot hold is refused before the append, so what was acknowledged
//! reads back.
//!
//! Bindings of a topology (the engine's `Source` and `Sink`):
//! [`StreamSource`] / [`StreamSink`] for embedded streams (`bind.rs`) and
//! [`FileSource`] / [`FileSink`] for JSON-lines files (`files.rs`); both
//! sinks are exactly-once under checkpoints. [`bind_streams`]
//! (`topology.rs`) binds a topology document's `stream:` sources, sinks and
//! dead-letter stream, for `weir run` and the server alike.
//!
//! Kafka (`kafka/`): [`KafkaSource`] (every partition of a topic,
//! `read_committed`, offsets in Weir's checkpoints) and [`KafkaSink`]
//! (exactly-once: one transaction per checkpoint with a progress marker;
//! or at-least-once), bound by [`bind_kafka`].
//!
//! Sinks outside Weir ([`bind_outside_sinks`], `outside.rs`): a
//! PostgreSQL table ([`PgSink`], `postgres/`: exactly-once through a
//! progress table) and an HTTP endpoint ([`HttpSink`], `http.rs`:
//! at-least-once with idempotency keys), both retrying with [`Backoff`]
//! (`backoff.rs`) and dead-lettering what their target refuses.

mod backoff;
mod bind;
mod files;
mod http;
mod kafka;
mod outside;
mod postgres;
mod record;
mod stream;
mod topology;

pub use backoff::Backoff;
pub use http::{DEFAULT_HTTP_TIMEOUT, HttpSink, HttpSinkConfig, IDEMPOTENCY_HEADER};
pub use outside::{
    OutsideBindError, OutsideSettings, bind_outside_sinks, has_outside_sinks, shared_dead_letters,
};
pub use postgres::{PgSink, PgSinkConfig, PgSinkError};

pub use bind::{StreamSink, StreamSource};
pub use files::{FileSink, FileSource};
pub use kafka::{
    Assignment, ChangelogTopic, ControlLog, ControlPoll, ControlReader, ControlRecord,
    DEFAULT_PROGRESS_TOPIC, GroupMember, HEADER_OFFSET, HEADER_PARTITION, HEADER_TOPIC,
    KafkaBindError, KafkaError, KafkaShare, KafkaSink, KafkaSource, LiveShare, Marker,
    OnAssignment, bind_kafka, bind_kafka_shared, create_topic, has_kafka, kafka_dead_letters,
    murmur2, partition_of, topic_partitions,
};
pub use kafka::{
    ChangelogRecord, EVENT_TIME_MARK, Failure, GroupFence, MarkRecord, NODE_TRANSACTION_TIMEOUT,
    NodeCommit, NodeProducer, OutputTopic, Phase, Purger, Recovery, after_failure,
    ensure_repartition_topic, event_time_mark, failure_of,
};
pub use record::{
    MAX_HEADER_NAME_BYTES, MAX_HEADERS, MAX_PRODUCER_ID_BYTES, MAX_RECORD_BYTES, ProducerBatch,
    RecordLimit, batch_hash,
};
pub use stream::{
    Appended, MAX_PRODUCERS_PER_STREAM, PRODUCER_BATCHES_KEPT, PRODUCER_EXPIRY, Stream,
    StreamConfig, StreamError, StreamInfo, StreamStore,
};
pub use topology::{
    BindError, SourceMode, bind_streams, dead_letter_stream, dead_letter_writer, needs_streams,
};
