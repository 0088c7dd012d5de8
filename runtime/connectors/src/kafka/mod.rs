//! Kafka topics as a topology's sources and sinks, through librdkafka (the
//! `rdkafka` crate, its bundled library).
//!
//! - [`KafkaSource`] (`source.rs`): every partition of one topic, assigned
//!   by hand (no consumer-group rebalancing), read `read_committed`. Its
//!   position is the next offset of each partition
//!   (`Position::Splits`), kept in Weir's checkpoint: recovery seeks to it
//!   whatever the group's committed offsets say; those are written back
//!   after each checkpoint only for lag tools. Event time is the least of
//!   the partitions' highest timestamps, idle partitions skipped.
//!   librdkafka's prefetch queue is bounded (`queued.max.messages.kbytes`),
//!   so a slow topology stops the fetching instead of buffering.
//! - [`KafkaSink`] (`sink.rs`): exactly-once by default: a checkpoint's
//!   output is part of Weir's durable commit, then published in one Kafka
//!   transaction together with a progress marker (topology, sink, lineage,
//!   checkpoint id) in a compacted topic. At recovery the sink fences its
//!   previous producer (`init_transactions` aborts what it left open),
//!   reads its last marker `read_committed`, and publishes the restored
//!   checkpoint's output again only when the marker is older. Or
//!   `delivery: at-least-once`: an idempotent producer, no transactions.
//! - `format.rs`: records ↔ events (`json`, `text`, `bytes`; key,
//!   timestamp and headers mapping). `config.rs`: librdkafka settings
//!   from the document. `bind.rs`: [`bind_kafka`], the document's `kafka:`
//!   endpoints bound for `weir run` and the server alike. `control.rs`:
//!   [`ControlLog`], a cluster's compacted one-partition control topic
//!   (`weir serve --cluster`). `group.rs`: [`GroupMember`], a node's
//!   share of a topology's partitions through a consumer group, and
//!   [`GroupFence`], its generation for the node's transactions.
//!   `txn.rs`: [`NodeProducer`], a node's one transaction per checkpoint
//!   of a topology (sink output, changelog records, input offsets).
//!   `live.rs`: [`LiveShare`], the partitions a node's running job reads
//!   and commits, changed without stopping it.
//!   `changelog.rs`: [`ChangelogTopic`], a keyed operator's compacted
//!   changelog on a cluster, and Kafka's key partitioner.
//!   `repartition.rs`: a cluster's repartition topics
//!   ([`ensure_repartition_topic`]) and the deletion of what committed
//!   transactions read of them ([`Purger`]). Crash points
//!   for the crash tests go through `weir_io::fault`.

mod bind;
mod changelog;
mod config;
mod control;
mod format;
mod group;
mod live;
mod repartition;
mod sink;
mod source;
mod txn;

pub use bind::{
    KafkaBindError, KafkaShare, bind_kafka, bind_kafka_shared, has_kafka, kafka_dead_letters,
};
pub use changelog::{ChangelogTopic, murmur2, partition_of, topic_partitions};
pub use config::{DEFAULT_PROGRESS_TOPIC, KafkaError, create_topic};
pub use control::{ControlLog, ControlPoll, ControlReader, ControlRecord};
pub use format::{HEADER_OFFSET, HEADER_PARTITION, HEADER_TOPIC};
pub use group::{Assignment, GroupFence, GroupMember, OnAssignment};
pub use live::LiveShare;
pub use repartition::{EVENT_TIME_MARK, Purger, ensure_repartition_topic, event_time_mark};
pub use sink::{KafkaSink, Marker};
pub use source::KafkaSource;
pub use txn::{
    ChangelogRecord, Failure, MarkRecord, NODE_TRANSACTION_TIMEOUT, NodeCommit, NodeProducer,
    OutputTopic, Phase, Recovery, after_failure, failure_of,
};
