//! Starting a topology's job: its pinned modules from the registry, its
//! streams bound (`weir_connectors::bind_streams`) and its Kafka topics
//! (`weir_connectors::bind_kafka`), its state opened (from a
//! savepoint when given), checkpointed at its interval. The job restores
//! its newest checkpoint itself. On a cluster's node the document is
//! first cut at its repartition topics (`cluster/repartition.rs`). Slow work: called with no lock held.

use std::path::Path;
use std::time::Duration;

use weir_connectors::{
    KafkaShare, OutsideSettings, SourceMode, StreamStore, bind_kafka_shared, bind_outside_sinks,
    bind_streams, dead_letter_stream, dead_letter_writer,
};
use weir_engine::{
    Bindings, CheckpointConfig, DEFAULT_TOLERABLE_FAILED_CHECKPOINTS, EngineError, ExecOptions,
    Job, Modules, StateConfig,
};
use weir_state::{StateBudget, StateDb};

use super::{TopologiesError, TopologyRecord};
use crate::registry::ModuleRegistry;

/// Checkpoint interval of a topology whose document sets none.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// Complete checkpoints kept per topology (for fallback past a damaged one).
const RETAINED_CHECKPOINTS: usize = 3;

/// What a job is started with.
pub(super) struct Launcher<'a> {
    pub registry: &'a ModuleRegistry,
    pub streams: &'a StreamStore,
    pub options: ExecOptions,
    pub outside: &'a OutsideSettings,
    /// Brokers of `kafka:` endpoints that name none.
    pub kafka_brokers: Option<&'a str>,
    /// On a cluster's node: the partitions it reads.
    pub share: Option<&'a KafkaShare>,
}

impl Launcher<'_> {
    /// Starts the job of `record`, its state in `dir`.
    pub fn start_job(
        &self,
        record: &TopologyRecord,
        dir: &Path,
        savepoint: Option<&Path>,
    ) -> Result<Job, TopologiesError> {
        let rewritten;
        let doc = match self.share {
            // A cluster's node runs the document cut at its repartition
            // topics (made by the group's member before it joined).
            Some(share) => {
                rewritten = crate::cluster::repartition::rewrite(&record.doc, share.fence.group())
                    .map_err(|reason| TopologiesError::Binding {
                        topology: record.doc.name.clone(),
                        io: false,
                        what: "its repartition topics".into(),
                        reason,
                    })?
                    .doc;
                &rewritten
            }
            None => &record.doc,
        };
        let topology = doc.name.clone();
        let mut modules = Modules::new();
        for (reference, pinned) in &record.modules {
            let version = self.registry.resolve(pinned)?;
            let label = format!("{}@{}", version.name, version.version);
            let module = self.registry.load(&version)?.labelled(&label);
            modules.insert(reference.clone(), module);
        }
        let mut bindings = Bindings::default();
        // Sinks outside Weir (PostgreSQL, HTTP), each with a writer to the
        // dead-letter stream.
        let mut letters = || match dead_letter_stream(doc) {
            Some(name) => dead_letter_writer(self.streams, &name)
                .map(Some)
                .map_err(|e| e.to_string()),
            None => Ok(None),
        };
        bind_outside_sinks(doc, self.outside, &mut bindings, &mut letters).map_err(|e| {
            TopologiesError::Binding {
                topology: topology.clone(),
                io: false,
                what: format!("sink `{}`", e.sink),
                reason: e.reason,
            }
        })?;
        bind_streams(doc, self.streams, SourceMode::Follow, &mut bindings).map_err(|e| {
            TopologiesError::Binding {
                topology: topology.clone(),
                io: matches!(e.source, weir_connectors::StreamError::Io { .. }),
                what: e.what,
                reason: e.source.to_string(),
            }
        })?;
        // Kafka: a topic that is missing or brokers that do not answer may
        // come right, so the supervisor retries with backoff (`io: true`).
        bind_kafka_shared(
            doc,
            self.kafka_brokers,
            SourceMode::Follow,
            self.share,
            &mut bindings,
        )
        .map_err(|e| TopologiesError::Binding {
            topology: topology.clone(),
            io: e.source.recoverable(),
            what: e.what,
            reason: e.source.to_string(),
        })?;
        let engine_err = |source: EngineError| TopologiesError::Engine {
            topology: topology.clone(),
            source,
        };
        let db = match savepoint {
            Some(path) => StateDb::open_from(dir, path),
            None => StateDb::open(dir),
        }
        .map_err(|e| engine_err(e.into()))?;
        if let Some(share) = self.share {
            // The held partitions' state from the changelogs, before the
            // job reads anything.
            // Watermarks start where the held partitions' event time was.
            bindings.event_times =
                crate::cluster::changelog::attach(doc, self.kafka_brokers, share, &db).map_err(
                    |reason| TopologiesError::Binding {
                        topology: topology.clone(),
                        io: true,
                        what: "its state's changelogs".into(),
                        reason,
                    },
                )?;
        }
        let interval = doc
            .checkpoint
            .map(|c| Duration::from_millis(c.interval_ms))
            .unwrap_or(DEFAULT_CHECKPOINT_INTERVAL);
        let tolerable_failed = doc
            .checkpoint
            .and_then(|c| c.tolerable_failed_checkpoints)
            .unwrap_or(DEFAULT_TOLERABLE_FAILED_CHECKPOINTS);
        let defaults = CheckpointConfig::default();
        let state = StateConfig {
            db,
            budget: StateBudget::default(),
            checkpoints: Some(CheckpointConfig {
                interval: Some(interval),
                retain: RETAINED_CHECKPOINTS,
                tolerable_failed,
                on_idle: doc
                    .checkpoint
                    .map_or(defaults.on_idle, |c| c.on_idle(defaults.on_idle)),
                ..defaults
            }),
        };
        Job::start(doc, &modules, bindings, self.options, Some(state)).map_err(engine_err)
    }
}
