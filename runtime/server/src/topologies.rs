//! Topologies of the server: their documents and desired state on disk,
//! and their lifecycle.
//!
//! Layout: `<data>/topologies/<name>/topology.json` holds a
//! [`TopologyRecord`]: the document as applied, the module versions its
//! references were pinned to at apply time, and whether it should be
//! running. The same directory holds its state (`state.redb`). Savepoints
//! are `<data>/savepoints/<topology>/<name>.redb`.
//!
//! A topology is applied stopped; `start` loads its pinned modules from the
//! registry, binds its `stream:` sources and sinks to the embedded streams
//! and starts a [`Job`]. At boot, every topology whose desired state is
//! `running` is started again ([`Topologies::resume`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use weir_connectors::{StreamSink, StreamSource, StreamStore};
use weir_engine::{
    Bindings, CheckpointConfig, CheckpointInfo, DeadLetter, EngineError, ExecOptions, Job,
    MetricsSnapshot, Modules, StateConfig, StateValue,
};
use weir_state::{StateBudget, StateDb};
use weir_topology::{
    ErrorPolicyDoc, LatePolicyDoc, ModuleCheck, Problem, Severity, TopologyDoc, TopologyLimits,
    ValidateOptions, validate_topology_with,
};
use weir_types::is_safe_name;

use crate::registry::{ModuleRegistry, ModuleVersion, RegistryError};
use crate::{fsutil, now_ms};

/// Checkpoint interval of a topology whose document sets none.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// Complete checkpoints kept per topology (for fallback past a damaged one).
const RETAINED_CHECKPOINTS: usize = 3;

/// Whether a topology should be running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    Running,
    Stopped,
}

/// What is stored of a topology.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopologyRecord {
    pub doc: TopologyDoc,
    /// Each module reference of the document and the `name@version` it
    /// was pinned to when the topology was applied.
    pub modules: BTreeMap<String, String>,
    pub desired: DesiredState,
    /// Last change, ms since the Unix epoch.
    pub updated_at: i64,
    /// Why it last failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Where a topology is now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    Stopped,
    Failed,
}

/// A topology as the API shows it.
#[derive(Debug, Clone)]
pub struct TopologyStatus {
    pub record: TopologyRecord,
    pub state: RunState,
    /// `(operator, instance, metrics)` while it runs.
    pub operators: Vec<(String, usize, MetricsSnapshot)>,
    /// The newest checkpoint of its last or current run.
    pub last_checkpoint: Option<CheckpointInfo>,
}

/// A stored savepoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SavepointInfo {
    pub topology: String,
    pub name: String,
    pub bytes: u64,
    pub created_at: i64,
}

/// A topology operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopologiesError {
    #[error(
        "{what} name {name:?} is not valid: use 1-128 of A-Z a-z 0-9 _ . - (not starting with . or -)"
    )]
    BadName { what: &'static str, name: String },
    #[error("the topology document ({format}) is not valid: {message}")]
    Parse {
        format: &'static str,
        message: String,
    },
    #[error("the topology has {} error(s); fix them and apply it again", .0.iter().filter(|p| p.severity == Severity::Error).count())]
    Invalid(Vec<Problem>),
    #[error(
        "the document is named `{doc}` but was sent to /v1/topologies/{path}: make them the same"
    )]
    NameMismatch { doc: String, path: String },
    #[error("no topology named `{0}`: apply one with `weir topology apply FILE`")]
    NotFound(String),
    #[error("topology `{0}` is running: stop it first (`weir topology stop {0}`)")]
    Running(String),
    #[error("topology `{0}` is not running: start it first (`weir topology start {0}`)")]
    NotRunning(String),
    #[error("topology `{topology}` has no operator `{operator}` ({hint})")]
    NoSuchOperator {
        topology: String,
        operator: String,
        /// The nearest few names it has.
        hint: String,
    },
    #[error("topology `{topology}` has no savepoint `{name}`")]
    NoSuchSavepoint { topology: String, name: String },
    #[error("topology `{topology}` already has a savepoint `{name}`: pick another name")]
    SavepointExists { topology: String, name: String },
    #[error("topology `{0}` has no checkpoint to write a savepoint from: start it first")]
    NoCheckpoint(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("topology `{topology}`: {source}")]
    Engine {
        topology: String,
        #[source]
        source: EngineError,
    },
    #[error("topology `{topology}`: cannot bind {what}: {reason}")]
    Binding {
        topology: String,
        what: String,
        reason: String,
    },
    #[error("topology store: {what}: {reason}")]
    Io { what: String, reason: String },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TopologiesError {
    let what = what.into();
    move |e| TopologiesError::Io {
        what,
        reason: e.to_string(),
    }
}

/// Removes a savepoint folder that a refused or failed savepoint left
/// empty (a folder holding a savepoint is left alone).
struct RemoveIfEmpty(Option<PathBuf>);

impl Drop for RemoveIfEmpty {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Checks a document's module references against the registry.
struct RegistryCheck<'a>(&'a ModuleRegistry);

impl ModuleCheck for RegistryCheck<'_> {
    fn check(&self, module: &str) -> Result<(), String> {
        self.0
            .resolve(module)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// The topologies of one data directory.
pub struct Topologies {
    dir: PathBuf,
    savepoints: PathBuf,
    registry: Arc<ModuleRegistry>,
    streams: Arc<StreamStore>,
    options: ExecOptions,
    /// How big a topology may be.
    limits: TopologyLimits,
    /// Serializes changes of records and the jobs map.
    jobs: Mutex<HashMap<String, Job>>,
    /// Checkpoints of each topology's last finished run (this process).
    history: Mutex<HashMap<String, Vec<CheckpointInfo>>>,
}

impl std::fmt::Debug for Topologies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topologies")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Topologies {
    pub fn open(
        data_dir: &Path,
        registry: Arc<ModuleRegistry>,
        streams: Arc<StreamStore>,
        options: ExecOptions,
        limits: TopologyLimits,
    ) -> Result<Self, TopologiesError> {
        let dir = data_dir.join("topologies");
        std::fs::create_dir_all(&dir)
            .map_err(io_err(format!("cannot create {}", dir.display())))?;
        Ok(Topologies {
            dir,
            savepoints: data_dir.join("savepoints"),
            registry,
            streams,
            options,
            limits,
            jobs: Mutex::new(HashMap::new()),
            history: Mutex::new(HashMap::new()),
        })
    }

    fn jobs(&self) -> MutexGuard<'_, HashMap<String, Job>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_name(what: &'static str, name: &str) -> Result<(), TopologiesError> {
        if is_safe_name(name) {
            Ok(())
        } else {
            Err(TopologiesError::BadName {
                what,
                name: name.to_string(),
            })
        }
    }

    /// Reads a document from JSON or YAML text.
    pub fn parse(text: &str) -> Result<TopologyDoc, TopologiesError> {
        weir_topology::parse_topology(text).map_err(|e| match e {
            weir_topology::TopologyError::Parse { format, message } => {
                TopologiesError::Parse { format, message }
            }
            other => TopologiesError::Parse {
                format: "document",
                message: other.to_string(),
            },
        })
    }

    /// Every problem of `doc` on this server (the first hundred, then a
    /// count): the document's own, its size against the server's limits,
    /// its module references against the registry, and bindings the
    /// server cannot make (files).
    pub fn validate(&self, doc: &TopologyDoc) -> Vec<Problem> {
        let options = ValidateOptions {
            limits: Some(self.limits),
            streams_only: true,
        };
        validate_topology_with(doc, &RegistryCheck(&self.registry), options)
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("topology.json")
    }

    fn read_record(&self, name: &str) -> Result<TopologyRecord, TopologiesError> {
        Self::check_name("topology", name)?;
        let path = self.record_path(name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TopologiesError::NotFound(name.to_string()));
            }
            Err(e) => return Err(io_err(format!("cannot read {}", path.display()))(e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| TopologiesError::Io {
            what: format!("cannot read {}", path.display()),
            reason: e.to_string(),
        })
    }

    fn write_record(&self, record: &TopologyRecord) -> Result<(), TopologiesError> {
        let path = self.record_path(&record.doc.name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(io_err(format!("cannot create {}", dir.display())))?;
        }
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| TopologiesError::Io {
            what: "cannot encode the topology".into(),
            reason: e.to_string(),
        })?;
        fsutil::write_atomically(&path, &bytes)
            .map_err(io_err(format!("cannot write {}", path.display())))
    }

    /// Creates or replaces the stopped topology `name` with `doc`; returns
    /// the record and whether it is new.
    pub fn apply(
        &self,
        name: &str,
        doc: TopologyDoc,
    ) -> Result<(TopologyRecord, bool), TopologiesError> {
        Self::check_name("topology", name)?;
        if doc.name != name {
            return Err(TopologiesError::NameMismatch {
                doc: doc.name,
                path: name.to_string(),
            });
        }
        let problems = self.validate(&doc);
        if problems.iter().any(|p| p.severity == Severity::Error) {
            return Err(TopologiesError::Invalid(problems));
        }
        let mut modules = BTreeMap::new();
        for op in &doc.operators {
            let version = self.registry.resolve(&op.module)?;
            modules.insert(op.module.clone(), version.reference());
        }
        let jobs = self.jobs();
        if jobs.contains_key(name) {
            return Err(TopologiesError::Running(name.to_string()));
        }
        let created = !self.record_path(name).exists();
        let record = TopologyRecord {
            doc,
            modules,
            desired: DesiredState::Stopped,
            updated_at: now_ms(),
            last_error: None,
        };
        self.write_record(&record)?;
        drop(jobs);
        tracing::info!(topology.name = name, created, "topology applied");
        Ok((record, created))
    }

    /// Names of every topology, sorted.
    pub fn names(&self) -> Result<Vec<String>, TopologiesError> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .map_err(io_err(format!("cannot list {}", self.dir.display())))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| is_safe_name(n) && self.record_path(n).is_file())
            .collect();
        names.sort();
        Ok(names)
    }

    fn remember(&self, name: &str, checkpoints: Vec<CheckpointInfo>) {
        if !checkpoints.is_empty() {
            self.history
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.to_string(), checkpoints);
        }
    }

    /// Checkpoints of `name`: of the current run while it runs, else of
    /// its last run in this process.
    pub fn checkpoints(&self, name: &str) -> Result<Vec<CheckpointInfo>, TopologiesError> {
        self.read_record(name)?;
        if let Some(job) = self.jobs().get(name) {
            return Ok(job.checkpoints());
        }
        Ok(self
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .unwrap_or_default())
    }

    /// The topology `name`, its run state and live metrics.
    pub fn status(&self, name: &str) -> Result<TopologyStatus, TopologiesError> {
        let mut record = self.read_record(name)?;
        let mut jobs = self.jobs();
        if jobs.get(name).is_some_and(Job::is_finished) {
            // It stopped by itself: keep why, and note it is not running.
            let job = jobs.remove(name).expect("checked above");
            let error = match job.wait() {
                Ok(report) => {
                    self.remember(name, report.checkpoints);
                    "all its sources ended".to_string()
                }
                Err(e) => e.to_string(),
            };
            tracing::warn!(topology.name = name, error = %error, "topology stopped by itself");
            record.last_error = Some(error);
            self.write_record(&record)?;
        }
        let last = |list: Vec<CheckpointInfo>| list.into_iter().last();
        Ok(match jobs.get(name) {
            Some(job) => TopologyStatus {
                record,
                state: RunState::Running,
                operators: job.metrics(),
                last_checkpoint: last(job.checkpoints()),
            },
            None => TopologyStatus {
                state: if record.desired == DesiredState::Running {
                    RunState::Failed
                } else {
                    RunState::Stopped
                },
                last_checkpoint: self
                    .history
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(name)
                    .and_then(|h| h.last().cloned()),
                record,
                operators: Vec::new(),
            },
        })
    }

    /// Starts `name`, from savepoint `savepoint` when given.
    pub fn start(&self, name: &str, savepoint: Option<&str>) -> Result<(), TopologiesError> {
        let started = Instant::now();
        let mut record = self.read_record(name)?;
        let mut jobs = self.jobs();
        if jobs.get(name).is_some_and(|j| !j.is_finished()) {
            return Err(TopologiesError::Running(name.to_string()));
        }
        jobs.remove(name);
        let from = match savepoint {
            Some(sp) => {
                let path = self.savepoint_path(name, sp)?;
                if !path.is_file() {
                    return Err(TopologiesError::NoSuchSavepoint {
                        topology: name.to_string(),
                        name: sp.to_string(),
                    });
                }
                Some(path)
            }
            None => None,
        };
        let job = self.start_job(&record, from.as_deref()).inspect_err(|e| {
            record.last_error = Some(e.to_string());
            let _ = self.write_record(&record);
        })?;
        jobs.insert(name.to_string(), job);
        record.desired = DesiredState::Running;
        record.updated_at = now_ms();
        record.last_error = None;
        self.write_record(&record)?;
        tracing::info!(
            topology.name = name,
            took_ms = started.elapsed().as_millis() as u64,
            "topology started"
        );
        Ok(())
    }

    /// Loads the pinned modules, binds the streams, opens the state (from
    /// a savepoint when given) and starts the job; it restores its newest
    /// checkpoint itself.
    fn start_job(
        &self,
        record: &TopologyRecord,
        savepoint: Option<&Path>,
    ) -> Result<Job, TopologiesError> {
        let doc = &record.doc;
        let topology = doc.name.clone();
        let mut modules = Modules::new();
        for (reference, pinned) in &record.modules {
            let version = self.registry.resolve(pinned)?;
            modules.insert(reference.clone(), self.registry.load(&version)?);
        }
        let bind_err = |what: String| {
            let topology = topology.clone();
            move |e: weir_connectors::StreamError| TopologiesError::Binding {
                topology,
                what,
                reason: e.to_string(),
            }
        };
        let mut bindings = Bindings::default();
        for source in &doc.sources {
            let name = source.stream.as_deref().unwrap_or_default();
            let stream = self
                .streams
                .stream(name)
                .map_err(bind_err(format!("source `{}`", source.name)))?;
            bindings
                .sources
                .insert(source.name.clone(), Box::new(StreamSource::follow(stream)));
        }
        for sink in &doc.sinks {
            let name = sink.stream.as_deref().unwrap_or_default();
            let stream = self
                .streams
                .stream(name)
                .map_err(bind_err(format!("sink `{}`", sink.name)))?;
            bindings
                .sinks
                .insert(sink.name.clone(), Box::new(StreamSink::new(stream)));
        }
        if doc.operators.iter().any(|o| {
            o.on_error == Some(ErrorPolicyDoc::DeadLetter)
                || o.on_late == Some(LatePolicyDoc::DeadLetter)
        }) {
            let name = doc
                .dead_letter_stream
                .clone()
                .unwrap_or_else(|| format!("{}-dead-letter", doc.name));
            let stream = self
                .streams
                .stream(&name)
                .map_err(bind_err("the dead-letter stream".into()))?;
            bindings.dead_letter = Some(Box::new(move |letter: &DeadLetter| {
                stream
                    .append(&letter.to_batch())
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }));
        }
        let dir = self.dir.join(&topology);
        let engine_err = |source: EngineError| TopologiesError::Engine {
            topology: topology.clone(),
            source,
        };
        let db = match savepoint {
            Some(path) => StateDb::open_from(&dir, path),
            None => StateDb::open(&dir),
        }
        .map_err(|e| engine_err(e.into()))?;
        let interval = doc
            .checkpoint
            .map(|c| Duration::from_millis(c.interval_ms))
            .unwrap_or(DEFAULT_CHECKPOINT_INTERVAL);
        let state = StateConfig {
            db,
            budget: StateBudget::default(),
            checkpoints: Some(CheckpointConfig {
                interval: Some(interval),
                retain: RETAINED_CHECKPOINTS,
                ..CheckpointConfig::default()
            }),
        };
        Job::start(doc, &modules, bindings, self.options, Some(state)).map_err(engine_err)
    }

    /// Stops `name` after a last checkpoint, exported as savepoint
    /// `savepoint` when given.
    pub fn stop(
        &self,
        name: &str,
        savepoint: Option<&str>,
    ) -> Result<Option<SavepointInfo>, TopologiesError> {
        let mut record = self.read_record(name)?;
        let path = match savepoint {
            Some(sp) => Some(self.new_savepoint_path(name, sp)?),
            None => None,
        };
        let _tidy = RemoveIfEmpty(
            path.as_deref()
                .and_then(Path::parent)
                .map(Path::to_path_buf),
        );
        let job = self.jobs().remove(name);
        let Some(job) = job else {
            if record.desired == DesiredState::Running && path.is_none() {
                // It had failed: stopping it records that it should stay stopped.
                record.desired = DesiredState::Stopped;
                record.updated_at = now_ms();
                self.write_record(&record)?;
                return Ok(None);
            }
            return Err(TopologiesError::NotRunning(name.to_string()));
        };
        record.desired = DesiredState::Stopped;
        record.updated_at = now_ms();
        let outcome = job.stop(savepoint.zip(path.as_deref()));
        match &outcome {
            Ok(report) => self.remember(name, report.checkpoints.clone()),
            Err(e) => record.last_error = Some(e.to_string()),
        }
        self.write_record(&record)?;
        outcome.map_err(|source| TopologiesError::Engine {
            topology: name.to_string(),
            source,
        })?;
        tracing::info!(topology.name = name, "topology stopped");
        match (savepoint, path) {
            (Some(sp), Some(path)) => Ok(Some(self.savepoint_info(name, sp, &path))),
            _ => Ok(None),
        }
    }

    /// Deletes the stopped topology `name` with its state and savepoints.
    pub fn delete(&self, name: &str) -> Result<(), TopologiesError> {
        self.read_record(name)?;
        let jobs = self.jobs();
        if jobs.contains_key(name) {
            return Err(TopologiesError::Running(name.to_string()));
        }
        let dir = self.dir.join(name);
        // The record goes first: without it the topology no longer exists.
        std::fs::remove_file(self.record_path(name))
            .map_err(io_err(format!("cannot remove {}", dir.display())))?;
        std::fs::remove_dir_all(&dir)
            .map_err(io_err(format!("cannot remove {}", dir.display())))?;
        let sp = self.savepoints.join(name);
        if sp.exists() {
            std::fs::remove_dir_all(&sp)
                .map_err(io_err(format!("cannot remove {}", sp.display())))?;
        }
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        drop(jobs);
        tracing::info!(topology.name = name, "topology deleted");
        Ok(())
    }

    /// State `state` of `key` in `operator`, read from the running
    /// topology.
    pub fn query_state(
        &self,
        name: &str,
        operator: &str,
        state: &str,
        key: &[u8],
    ) -> Result<Option<StateValue>, TopologiesError> {
        let record = self.read_record(name)?;
        if !record.doc.operators.iter().any(|o| o.name == operator) {
            return Err(TopologiesError::NoSuchOperator {
                topology: name.to_string(),
                operator: operator.to_string(),
                hint: weir_topology::suggest_name(
                    operator,
                    record.doc.operators.iter().map(|o| o.name.as_str()),
                ),
            });
        }
        let jobs = self.jobs();
        let job = jobs
            .get(name)
            .ok_or_else(|| TopologiesError::NotRunning(name.to_string()))?;
        job.query_state(operator, state, key)
            .map_err(|source| TopologiesError::Engine {
                topology: name.to_string(),
                source,
            })
    }

    /// The topology (by name) that uses module version `version`, if any.
    pub fn user_of(&self, version: &ModuleVersion) -> Option<String> {
        let reference = version.reference();
        self.names().ok()?.into_iter().find(|n| {
            self.read_record(n)
                .is_ok_and(|r| r.modules.values().any(|m| *m == reference))
        })
    }

    fn savepoint_path(&self, topology: &str, name: &str) -> Result<PathBuf, TopologiesError> {
        Self::check_name("savepoint", name)?;
        Ok(self.savepoints.join(topology).join(format!("{name}.redb")))
    }

    fn new_savepoint_path(&self, topology: &str, name: &str) -> Result<PathBuf, TopologiesError> {
        let path = self.savepoint_path(topology, name)?;
        if path.exists() {
            return Err(TopologiesError::SavepointExists {
                topology: topology.to_string(),
                name: name.to_string(),
            });
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(io_err(format!("cannot create {}", dir.display())))?;
        }
        Ok(path)
    }

    fn savepoint_info(&self, topology: &str, name: &str, path: &Path) -> SavepointInfo {
        let meta = std::fs::metadata(path).ok();
        SavepointInfo {
            topology: topology.to_string(),
            name: name.to_string(),
            bytes: meta.as_ref().map(|m| m.len()).unwrap_or(0),
            created_at: meta
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
        }
    }

    /// The savepoints of `name`, by name.
    pub fn savepoints(&self, name: &str) -> Result<Vec<SavepointInfo>, TopologiesError> {
        self.read_record(name)?;
        let dir = self.savepoints.join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let mut out: Vec<SavepointInfo> = entries
            .filter_map(|e| {
                let e = e.ok()?;
                let file = e.file_name().into_string().ok()?;
                let sp = file.strip_suffix(".redb")?.to_string();
                Some(self.savepoint_info(name, &sp, &e.path()))
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Writes savepoint `savepoint` of `name`: of a running topology
    /// through a checkpoint taken now; of a stopped one, its last
    /// checkpoint.
    pub fn savepoint(&self, name: &str, savepoint: &str) -> Result<SavepointInfo, TopologiesError> {
        self.read_record(name)?;
        let jobs = self.jobs();
        let path = self.new_savepoint_path(name, savepoint)?;
        let _tidy = RemoveIfEmpty(path.parent().map(Path::to_path_buf));
        let engine_err = |source: EngineError| TopologiesError::Engine {
            topology: name.to_string(),
            source,
        };
        match jobs.get(name) {
            Some(job) => {
                job.savepoint(savepoint, &path).map_err(engine_err)?;
            }
            None => {
                let db = StateDb::open(&self.dir.join(name)).map_err(|e| engine_err(e.into()))?;
                if db
                    .latest_checkpoint()
                    .map_err(|e| engine_err(e.into()))?
                    .is_none()
                {
                    return Err(TopologiesError::NoCheckpoint(name.to_string()));
                }
                db.export(&path).map_err(|e| engine_err(e.into()))?;
            }
        }
        drop(jobs);
        Ok(self.savepoint_info(name, savepoint, &path))
    }

    /// Starts every topology whose desired state is `running` (at boot).
    /// One that fails to start is logged and left failed.
    pub fn resume(&self) -> usize {
        let mut started = 0;
        for name in self.names().unwrap_or_default() {
            if self
                .read_record(&name)
                .is_ok_and(|r| r.desired == DesiredState::Running)
            {
                match self.start(&name, None) {
                    Ok(()) => started += 1,
                    Err(e) => {
                        tracing::error!(topology.name = %name, error = %e, "cannot resume topology")
                    }
                }
            }
        }
        started
    }

    /// Stops every running topology, keeping their desired state, so they
    /// resume at the next boot (at shutdown).
    pub fn shutdown(&self) {
        let jobs: Vec<(String, Job)> = self.jobs().drain().collect();
        for (name, job) in jobs {
            match job.stop(None) {
                Ok(report) => tracing::info!(
                    topology.name = %name,
                    checkpoint = report.checkpoints.last().map(|c| c.id),
                    "topology stopped for shutdown after a final checkpoint"
                ),
                Err(e) => {
                    tracing::error!(topology.name = %name, error = %e, "topology failed while stopping")
                }
            }
        }
    }

    /// Names of running topologies.
    pub fn running(&self) -> Vec<String> {
        let mut names: Vec<String> = self.jobs().keys().cloned().collect();
        names.sort();
        names
    }
}
