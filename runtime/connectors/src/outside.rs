//! Binding a topology document's sinks outside Weir, `postgres:` tables
//! ([`PgSink`]) and `http:` endpoints ([`HttpSink`]), for `weir run` and
//! the server alike. Both send what their target refuses to the
//! topology's dead-letter output, so the caller hands over a way to open
//! one writer to it per sink.

use std::sync::{Arc, Mutex};

use weir_io::{Bindings, DeadLetter, DeadLetterFn};
use weir_topology::TopologyDoc;

use crate::{HttpSink, HttpSinkConfig, PgSink, PgSinkConfig};

/// What binding outside sinks needs beyond the document.
#[derive(Debug, Clone, Default)]
pub struct OutsideSettings {
    /// For `postgres:` sinks without a `url` (`--postgres-url`).
    pub postgres_url: Option<String>,
}

/// A sink outside Weir could not be bound (bad settings: fix the document).
#[derive(Debug, thiserror::Error)]
#[error("sink `{sink}`: {reason}")]
pub struct OutsideBindError {
    pub sink: String,
    pub reason: String,
}

/// Whether `doc` has a `postgres:` or `http:` sink.
pub fn has_outside_sinks(doc: &TopologyDoc) -> bool {
    doc.sinks
        .iter()
        .any(|s| s.postgres.is_some() || s.http.is_some())
}

/// Binds every `postgres:` and `http:` sink of `doc` not in `bindings`
/// yet; `dead_letters` opens one writer to the dead-letter output per sink.
pub fn bind_outside_sinks(
    doc: &TopologyDoc,
    settings: &OutsideSettings,
    bindings: &mut Bindings,
    dead_letters: &mut dyn FnMut() -> Result<Option<DeadLetterFn>, String>,
) -> Result<(), OutsideBindError> {
    for sink in &doc.sinks {
        if bindings.sinks.contains_key(&sink.name) {
            continue;
        }
        let failed = |reason: String| OutsideBindError {
            sink: sink.name.clone(),
            reason,
        };
        if let Some(pg) = &sink.postgres {
            let config =
                PgSinkConfig::from_doc(&doc.name, &sink.name, pg, settings.postgres_url.as_deref())
                    .map_err(|e| failed(e.to_string()))?;
            let letters = dead_letters().map_err(&failed)?;
            let bound = PgSink::new(config, letters).map_err(|e| failed(e.to_string()))?;
            bindings.sinks.insert(sink.name.clone(), Box::new(bound));
        } else if let Some(http) = &sink.http {
            let letters = dead_letters().map_err(&failed)?;
            let bound = HttpSink::new(HttpSinkConfig::from_doc(&sink.name, http), letters);
            bindings.sinks.insert(sink.name.clone(), Box::new(bound));
        }
    }
    Ok(())
}

/// Writers that all go to `out`, one at a time: how a run with one
/// dead-letter output (a file) gives each outside sink its own writer.
pub fn shared_dead_letters(out: DeadLetterFn) -> impl FnMut() -> DeadLetterFn {
    let out = Arc::new(Mutex::new(out));
    move || {
        let out = out.clone();
        Box::new(move |letter: &DeadLetter| {
            let mut write = out
                .lock()
                .map_err(|_| "dead-letter output lock poisoned".to_string())?;
            write(letter)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_outside_sinks_and_names_the_sink_whose_settings_are_bad() {
        let doc = weir_topology::parse_topology(
            "name: t\nsources: [{name: s, stream: s}]\nsinks:\n  - {name: hook, input: s, http: {url: 'http://127.0.0.1:9/x'}}\n  - {name: pg, input: s, postgres: {table: t, mode: append, columns: {n: '$.n'}}}\n  - {name: o, input: s, stream: o}\n",
        )
        .unwrap();
        assert!(has_outside_sinks(&doc));
        let mut opened = 0;
        let mut letters = || {
            opened += 1;
            Ok(None)
        };
        let mut bindings = Bindings::default();
        let err = bind_outside_sinks(
            &doc,
            &OutsideSettings::default(),
            &mut bindings,
            &mut letters,
        )
        .unwrap_err();
        assert_eq!(err.sink, "pg");
        assert!(err.reason.contains("--postgres-url"), "{err}");
        let settings = OutsideSettings {
            postgres_url: Some("postgres://weir@127.0.0.1:1/db".into()),
        };
        bind_outside_sinks(&doc, &settings, &mut bindings, &mut letters).unwrap();
        let mut bound: Vec<&String> = bindings.sinks.keys().collect();
        bound.sort();
        assert_eq!(bound, ["hook", "pg"]);
        assert_eq!(opened, 2, "one dead-letter writer per sink");
    }
}
