//! weir-topology: the topology document and its validation.
//!
//! A topology names sources, operators (a module reference, config,
//! parallelism, `key_by`, error policy) and sinks; each operator and sink
//! names its input or inputs. [`parse_topology`] reads JSON or YAML;
//! [`validate_topology`] reports every problem at once, each with its path
//! in the document (`operators[1].input`), before anything runs.
//!
//! Not here: loading modules (validation asks a [`ModuleCheck`]), running
//! anything (the engine).

mod document;
mod validate;

pub use document::{
    CheckpointDoc, ErrorPolicyDoc, Inputs, KeyBy, LatePolicyDoc, OperatorDoc, RestartDoc, SinkDoc,
    SourceDoc, TopologyDoc, WatermarkDoc, parse_topology,
};
pub use validate::{
    MAX_PARALLELISM, ModuleCheck, Problem, Severity, TopologyError, validate_topology,
};
