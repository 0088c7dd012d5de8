//! Binding a topology document's `stream:` sources and sinks, and its
//! dead-letter stream, to the embedded streams: the one place both `weir
//! run` and the server do it.
//!
//! [`bind_streams`] fills in what the caller has not bound already, so a
//! caller binds its own inputs first (files, overrides) and lets the rest
//! fall to streams.

use weir_io::{Bindings, DeadLetter, DeadLetterFn};
use weir_topology::{ErrorPolicyDoc, LatePolicyDoc, TopologyDoc};

use crate::{StreamError, StreamSink, StreamSource, StreamStore};

/// How stream sources read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceMode {
    /// What the stream holds when the run starts, then the input ends.
    Bounded,
    /// Wait for the tail to grow: the input never ends.
    Follow,
}

/// A stream of a topology could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind {what} to its stream: {source}")]
pub struct BindError {
    /// `source `x``, `sink `y`` or `the dead-letter stream`.
    pub what: String,
    #[source]
    pub source: StreamError,
}

/// The stream dead letters of `doc` go to, when one of its operators
/// dead-letters (`on_error` or `on_late`) or a Kafka source may
/// ([`kafka_dead_letters`](crate::kafka_dead_letters)): its
/// `dead_letter_stream`, or `<name>-dead-letter`; or it has a sink outside
/// Weir (rows or events the target refuses).
pub fn dead_letter_stream(doc: &TopologyDoc) -> Option<String> {
    let letters = doc.operators.iter().any(|o| {
        o.on_error == Some(ErrorPolicyDoc::DeadLetter)
            || o.on_late == Some(LatePolicyDoc::DeadLetter)
    }) || crate::kafka_dead_letters(doc)
        || crate::has_outside_sinks(doc);
    letters.then(|| {
        doc.dead_letter_stream
            .clone()
            .unwrap_or_else(|| format!("{}-dead-letter", doc.name))
    })
}

/// Whether binding `doc` over `bindings` would open a stream.
pub fn needs_streams(doc: &TopologyDoc, bindings: &Bindings) -> bool {
    doc.sources
        .iter()
        .any(|s| s.stream.is_some() && !bindings.sources.contains_key(&s.name))
        || doc
            .sinks
            .iter()
            .any(|s| s.stream.is_some() && !bindings.sinks.contains_key(&s.name))
        || (bindings.dead_letter.is_none() && dead_letter_stream(doc).is_some())
}

/// Binds every source and sink of `doc` that names a `stream:` and is not
/// in `bindings` yet, and the dead-letter stream when the document needs
/// one and `bindings` has none.
pub fn bind_streams(
    doc: &TopologyDoc,
    store: &StreamStore,
    mode: SourceMode,
    bindings: &mut Bindings,
) -> Result<(), BindError> {
    let open = |what: String, name: &str| {
        store
            .stream(name)
            .map_err(|source| BindError { what, source })
    };
    for source in &doc.sources {
        let Some(name) = &source.stream else { continue };
        if bindings.sources.contains_key(&source.name) {
            continue;
        }
        let stream = open(format!("source `{}`", source.name), name)?;
        let read = match mode {
            SourceMode::Bounded => StreamSource::bounded(stream),
            SourceMode::Follow => StreamSource::follow(stream),
        };
        bindings.stats.insert(source.name.clone(), read.stats());
        bindings.sources.insert(source.name.clone(), Box::new(read));
    }
    for sink in &doc.sinks {
        let Some(name) = &sink.stream else { continue };
        if bindings.sinks.contains_key(&sink.name) {
            continue;
        }
        let stream = open(format!("sink `{}`", sink.name), name)?;
        bindings
            .sinks
            .insert(sink.name.clone(), Box::new(StreamSink::new(stream)));
    }
    if bindings.dead_letter.is_none()
        && let Some(name) = dead_letter_stream(doc)
    {
        bindings.dead_letter = Some(dead_letter_writer(store, &name)?);
    }
    Ok(())
}

/// A writer of dead letters to the stream `name` (one event each).
pub fn dead_letter_writer(store: &StreamStore, name: &str) -> Result<DeadLetterFn, BindError> {
    let stream = store.stream(name).map_err(|source| BindError {
        what: "the dead-letter stream".into(),
        source,
    })?;
    Ok(Box::new(move |letter: &DeadLetter| {
        stream
            .append(&letter.to_batch())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StreamConfig;
    use weir_io::Source;

    fn doc(yaml: &str) -> TopologyDoc {
        weir_topology::parse_topology(yaml).unwrap()
    }

    const DOC: &str = "
name: t
sources: [{name: in, stream: lines}, {name: other, stream: more}]
operators:
  - {name: op, module: m, input: in, on_error: dead-letter}
sinks: [{name: out, stream: counts, input: op}]
";

    #[test]
    fn binds_what_is_not_bound_and_the_dead_letter_stream() {
        let dir = tempfile::tempdir().unwrap();
        let store = StreamStore::open(dir.path(), StreamConfig::default()).unwrap();
        let d = doc(DOC);
        let mut bindings = Bindings::default();
        let mine: Box<dyn Source> = Box::new(StreamSource::bounded(store.stream("mine").unwrap()));
        bindings.sources.insert("other".into(), mine);
        assert!(needs_streams(&d, &bindings));
        bind_streams(&d, &store, SourceMode::Follow, &mut bindings).unwrap();
        assert_eq!(bindings.sources.len(), 2);
        assert!(bindings.sinks.contains_key("out"));
        assert!(bindings.dead_letter.is_some());
        assert!(!needs_streams(&d, &bindings));
        let names: Vec<String> = store.list().unwrap().into_iter().map(|s| s.name).collect();
        // `more` was bound by the caller, so it was never opened.
        assert!(!names.contains(&"more".to_string()), "{names:?}");
        assert!(names.contains(&"t-dead-letter".to_string()), "{names:?}");
    }

    #[test]
    fn a_bad_stream_name_names_what_it_was_bound_for() {
        let dir = tempfile::tempdir().unwrap();
        let store = StreamStore::open(dir.path(), StreamConfig::default()).unwrap();
        let d = doc(&DOC.replace("stream: counts", "stream: ../x"));
        let err = bind_streams(&d, &store, SourceMode::Bounded, &mut Bindings::default())
            .err()
            .unwrap();
        assert_eq!(err.what, "sink `out`");
        assert_eq!(
            dead_letter_stream(&doc(&DOC.replace("on_error: dead-letter", "on_error: skip"))),
            None
        );
    }
}
