//! weir-topology: the topology document and its validation.
//!
//! A topology names sources, operators (a module reference, config,
//! parallelism, `key_by`, error policy, own sandbox limits) and sinks (streams, files, and
//! outside Weir PostgreSQL tables and HTTP endpoints, `sinks.rs`); each operator and sink
//! names its input or inputs. [`parse_topology`] reads JSON or YAML;
//! [`validate_topology`] reports every problem at once, each with its path
//! in the document (`operators[1].input`), before anything runs.
//!
//! `kafka:` sources and sinks ([`KafkaSourceDoc`], [`KafkaSinkDoc`]) are
//! described and checked in `kafka.rs`.
//!
//! Not here: loading modules (validation asks a [`ModuleCheck`]), running
//! anything (the engine).

mod depth;
mod document;
mod kafka;
mod sinks;
mod validate;

pub use depth::MAX_DOCUMENT_DEPTH;
pub use document::{
    CheckpointDoc, ClusterDoc, ErrorPolicyDoc, InputRef, InputResolver, Inputs, KeyBy,
    LatePolicyDoc, OperatorDoc, OperatorLimits, OperatorLimitsDoc, RestartDoc, SinkDoc, SourceDoc,
    TopologyDoc, WatermarkDoc, parse_topology,
};
pub use kafka::{
    KafkaDelivery, KafkaEdge, KafkaField, KafkaFormat, KafkaRecord, KafkaSinkDoc, KafkaSourceDoc,
    KafkaStart, MAX_KAFKA_PROPERTIES, MAX_TOPIC_NAME_BYTES, property_text,
};
pub use sinks::{
    ColumnDoc, HttpSinkDoc, MAX_HTTP_BATCH, PostgresModeDoc, PostgresSinkDoc, is_column_source,
    is_sql_identifier,
};
pub use validate::{
    DEFAULT_MAX_INSTANCES, DEFAULT_MAX_OPERATORS, MAX_PARALLELISM, MAX_PROBLEMS, ModuleCheck,
    Problem, Severity, TopologyError, TopologyLimits, ValidateOptions, suggest_name,
    validate_topology, validate_topology_with,
};
