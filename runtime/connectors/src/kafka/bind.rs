//! Binding a topology document's `kafka:` sources and sinks: the one place
//! both `weir run` and the server do it.
//!
//! Binding connects: it finds each topic's partitions (an error naming the
//! topic when it does not exist, or the brokers when they do not answer),
//! and creates the progress topic of exactly-once sinks when it is
//! missing. Sources whose records may be unreadable share the bound
//! dead-letter output with the engine, so [`bind_kafka`] runs after the
//! caller bound its dead letters (`bind_streams` or a file).

use std::sync::{Arc, Mutex};

use weir_io::{Bindings, DeadLetter, DeadLetterFn};
use weir_topology::{ErrorPolicyDoc, KafkaFormat, TopologyDoc};

use super::config::KafkaError;
use super::group::{Assignment, GroupFence};
use super::sink::KafkaSink;
use super::source::{KafkaSource, NodeRead, SharedDeadLetters};
use crate::SourceMode;

/// A `kafka:` source or sink of a topology could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind {what}: {source}")]
pub struct KafkaBindError {
    /// `source `x`` or `sink `y``.
    pub what: String,
    #[source]
    pub source: KafkaError,
}

/// Whether `doc` reads or writes Kafka.
pub fn has_kafka(doc: &TopologyDoc) -> bool {
    doc.sources.iter().any(|s| s.kafka.is_some()) || doc.sinks.iter().any(|s| s.kafka.is_some())
}

/// Whether a `kafka:` source of `doc` dead-letters the records its format
/// cannot read (`on_error: dead-letter`, the default, under `json` or
/// `text`).
pub fn kafka_dead_letters(doc: &TopologyDoc) -> bool {
    doc.sources
        .iter()
        .filter_map(|s| s.kafka.as_ref())
        .any(|k| {
            k.format.unwrap_or_default() != KafkaFormat::Bytes
                && k.on_error.unwrap_or(ErrorPolicyDoc::DeadLetter) == ErrorPolicyDoc::DeadLetter
        })
}

/// What a cluster's node binds of a topology: the partitions its group
/// gave it, by topic, its id, and its membership in the group. Sources
/// start at the offsets the group committed (the node's transactions
/// commit them); exactly-once sinks publish through the node's
/// transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaShare {
    pub partitions: Assignment,
    pub node: String,
    /// The topology's group (`weir.<cluster>.<topology>`) and this node's
    /// member in it.
    pub fence: GroupFence,
    /// Repartition topics among the inputs: the records a checkpoint's
    /// transaction read past are deleted after it.
    pub purge: std::collections::BTreeSet<String>,
    /// What the running job reads and commits, changed while it runs; the
    /// same for every share of one group membership.
    pub live: std::sync::Arc<super::LiveShare>,
}

/// Binds every `kafka:` source and sink of `doc` not in `bindings` yet.
/// `brokers` stands in for a block that names none; `mode` says whether
/// sources end at the end their partitions have now (`weir run`) or
/// follow them (the server).
pub fn bind_kafka(
    doc: &TopologyDoc,
    brokers: Option<&str>,
    mode: SourceMode,
    bindings: &mut Bindings,
) -> Result<(), KafkaBindError> {
    bind_kafka_shared(doc, brokers, mode, None, bindings)
}

/// [`bind_kafka`] on a cluster's node when `share` is given: sources read
/// only its partitions, from the offsets its group committed; exactly-once
/// sinks leave their output to the node's transaction.
pub fn bind_kafka_shared(
    doc: &TopologyDoc,
    brokers: Option<&str>,
    mode: SourceMode,
    share: Option<&KafkaShare>,
    bindings: &mut Bindings,
) -> Result<(), KafkaBindError> {
    let letters = shared_dead_letters(doc, bindings);
    for source in &doc.sources {
        let Some(kafka) = &source.kafka else { continue };
        if bindings.sources.contains_key(&source.name) {
            continue;
        }
        let what = format!("source `{}`", source.name);
        let brokers = brokers_of(&kafka.brokers, brokers, &what)?;
        let group = match share {
            Some(share) => share.fence.group().to_string(),
            None => format!("weir.{}.{}", doc.name, source.name),
        };
        let read = KafkaSource::connect(
            what.clone(),
            &group,
            kafka,
            &brokers,
            mode == SourceMode::Bounded,
            letters.clone(),
            share.map(|s| NodeRead {
                live: &s.live,
                purge: s.purge.contains(&kafka.topic),
            }),
        )
        .map_err(|source| KafkaBindError { what, source })?;
        bindings.stats.insert(source.name.clone(), read.stats());
        bindings.sources.insert(source.name.clone(), Box::new(read));
    }
    for sink in &doc.sinks {
        let Some(kafka) = &sink.kafka else { continue };
        if bindings.sinks.contains_key(&sink.name) {
            continue;
        }
        let what = format!("sink `{}`", sink.name);
        let brokers = brokers_of(&kafka.brokers, brokers, &what)?;
        let write = KafkaSink::connect(
            what.clone(),
            &doc.name,
            &sink.name,
            kafka,
            &brokers,
            share.is_some(),
        )
        .map_err(|source| KafkaBindError { what, source })?;
        bindings.stats.insert(sink.name.clone(), write.stats());
        bindings.sinks.insert(sink.name.clone(), Box::new(write));
    }
    Ok(())
}

fn brokers_of(
    own: &Option<String>,
    default: Option<&str>,
    what: &str,
) -> Result<String, KafkaBindError> {
    own.clone()
        .or_else(|| default.map(str::to_string))
        .ok_or_else(|| KafkaBindError {
            what: what.to_string(),
            source: KafkaError::NoBrokers,
        })
}

/// The bound dead-letter output, shared: the engine keeps writing through
/// `bindings.dead_letter`, and Kafka sources get a handle on the same
/// writer. `None` when no source needs one or none is bound.
fn shared_dead_letters(doc: &TopologyDoc, bindings: &mut Bindings) -> Option<SharedDeadLetters> {
    if !kafka_dead_letters(doc) {
        return None;
    }
    let write = bindings.dead_letter.take()?;
    let shared: SharedDeadLetters = Arc::new(Mutex::new(write));
    let engine = shared.clone();
    let forward: DeadLetterFn = Box::new(move |letter: &DeadLetter| {
        let mut write = engine
            .lock()
            .map_err(|_| "the dead-letter output's lock is poisoned".to_string())?;
        (*write)(letter)
    });
    bindings.dead_letter = Some(forward);
    Some(shared)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kafka_endpoint_without_brokers_says_where_to_set_them() {
        let doc = weir_topology::parse_topology(
            "name: t\nsources: [{name: in, kafka: {topic: a}}]\nsinks: [{name: out, kafka: {topic: b}, input: in}]\n",
        )
        .unwrap();
        assert!(has_kafka(&doc));
        assert!(kafka_dead_letters(&doc));
        let err = bind_kafka(&doc, None, SourceMode::Follow, &mut Bindings::default())
            .err()
            .unwrap();
        assert_eq!(err.what, "source `in`");
        assert!(err.to_string().contains("--kafka-brokers"), "{err}");
        assert!(!err.source.recoverable());
    }

    #[test]
    fn sources_share_the_bound_dead_letters_with_the_engine() {
        let doc = weir_topology::parse_topology(
            "name: t\nsources: [{name: in, kafka: {topic: a, format: text}}]\nsinks: [{name: out, stream: o, input: in}]\n",
        )
        .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let mut bindings = Bindings {
            dead_letter: Some(Box::new(move |l: &DeadLetter| {
                log.lock().unwrap().push(l.operator.clone());
                Ok(())
            })),
            ..Bindings::default()
        };
        let shared = shared_dead_letters(&doc, &mut bindings).unwrap();
        let letter = |operator: &str| DeadLetter {
            operator: operator.into(),
            error: "bad".into(),
            failed_at: 0,
            event: weir_types::Event::default(),
            context: weir_io::FailureContext::default(),
        };
        (bindings.dead_letter.as_mut().unwrap())(&letter("op")).unwrap();
        (*shared.lock().unwrap())(&letter("source `in`")).unwrap();
        assert_eq!(*seen.lock().unwrap(), ["op", "source `in`"]);
        // `bytes` never fails to read: nothing to share.
        let bytes = weir_topology::parse_topology(
            "name: t\nsources: [{name: in, kafka: {topic: a, format: bytes}}]\nsinks: [{name: out, stream: o, input: in}]\n",
        )
        .unwrap();
        assert!(!kafka_dead_letters(&bytes));
    }
}
