//! Topologies of the server: their documents and desired state on disk,
//! and their lifecycle.
//!
//! Layout: `<data>/topologies/<name>/topology.json` holds a
//! [`TopologyRecord`]: the document as applied, the module versions its
//! references were pinned to at apply time, and whether it should be
//! running. The same directory holds its state (`state.redb`). Savepoints
//! are `<data>/savepoints/<topology>/<name>.redb`.
//!
//! The parts, one job each:
//! - `records.rs`: the records on disk, validation against the registry,
//!   and the module pins (atomic against module deletion).
//! - `lifecycle.rs`: the [`Phase`] of a topology, the one transition
//!   function, and the owner that holds phase and job; no lock is held
//!   across an engine call or I/O.
//! - `restart.rs`: the restart strategy (backoff, attempts, failures).
//! - `launch.rs`: loading modules, binding streams and starting the job.
//! - `savepoints.rs`: savepoints on disk and the checkpoint history.
//! - `letters.rs`: reading the dead letters and replaying them.
//! - `supervisor.rs`: the thread that notices a job that ended and
//!   restarts it after its backoff.
//!
//! A topology is applied stopped; `start` starts its job. At boot, every
//! topology whose desired state is `running` is started again
//! ([`Topologies::resume`]). GET requests and `/metrics` only read.

mod error;
mod launch;
mod letters;
mod lifecycle;
mod probe;
mod records;
mod restart;
mod savepoints;
mod supervisor;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use weir_connectors::{OutsideSettings, StreamStore};
use weir_engine::{
    CheckpointInfo, EndpointSnapshot, EngineError, ExecOptions, MetricsSnapshot, StateRead,
};
use weir_state::StateDb;
use weir_topology::{OperatorLimits, Problem, Severity, TopologyDoc, TopologyLimits};

use crate::registry::{ModuleRegistry, ModuleVersion, RegistryError};
use weir_types::now_ms;

pub use error::TopologiesError;
pub use launch::DEFAULT_CHECKPOINT_INTERVAL;
pub use letters::{DeadLetterPage, MAX_DEAD_LETTERS_READ, MAX_DEAD_LETTERS_REPLAY, ReplayReport};
pub use lifecycle::{Phase, Refusal, Step, transition};
pub use records::{DesiredState, TopologyRecord};
pub use restart::{Failure, KEPT_FAILURES, RestartPolicy};
pub use savepoints::SavepointInfo;

use launch::Launcher;
use lifecycle::{Claim, ClaimError, Owner};
use records::{Pins, Records, check_name};
use restart::AfterFailure;
use savepoints::{History, Savepoints};

/// Where a topology is now (its phase).
pub type RunState = Phase;

/// Failures and restarts of a topology, as its status shows them.
#[derive(Debug, Clone, Default)]
pub struct RestartStatus {
    /// Restarts in a row so far (0 after a stable run).
    pub attempt: u32,
    /// When the next restart is due, ms since the Unix epoch.
    pub next_try_ms: Option<i64>,
    /// Restarts since the server started.
    pub restarts_total: u64,
    /// The last failures, oldest first.
    pub failures: Vec<Failure>,
    /// The policy in force.
    pub max_attempts: u32,
}

/// A topology as the API shows it.
#[derive(Debug, Clone)]
pub struct TopologyStatus {
    pub record: TopologyRecord,
    pub state: Phase,
    /// An operation under way (`"starting"`, `"writing a savepoint"`, ...).
    pub busy: Option<&'static str>,
    /// `(operator, instance, metrics)` while it runs.
    pub operators: Vec<(String, usize, MetricsSnapshot)>,
    /// `(source or sink, its figures)` while it runs, for those that keep
    /// them (stream and Kafka sources: position and end per split; Kafka
    /// sinks: records and transactions).
    pub endpoints: Vec<(String, EndpointSnapshot)>,
    /// The newest checkpoint of its last or current run.
    pub last_checkpoint: Option<CheckpointInfo>,
    /// Interval checkpoints the current run skipped because nothing had
    /// changed (an idle topology commits nothing).
    pub skipped_checkpoints: u64,
    /// What it costs the node while it runs (CPU, memory).
    pub usage: Option<weir_engine::Usage>,
    /// `(source, events read)` of the current run, or of the last one
    /// once it stopped (in this process).
    pub sources: Vec<(String, u64)>,
    /// Checkpoints of the current run whose commit failed and that were
    /// aborted (their changes went into the next): in all, in a row now,
    /// and why the last one failed.
    pub failed_checkpoints: (u64, u64, Option<String>),
    pub restart: RestartStatus,
    /// Each operator's limits as they apply to its instances: its own
    /// `limits`, else the server's.
    pub operator_limits: Vec<(String, OperatorLimits)>,
}

/// How a start was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartedBy {
    /// A user: a failure is answered and the phase goes back.
    User,
    /// The boot or a restart: a failure follows the restart strategy.
    Supervisor,
}

/// The topologies of one data directory.
pub struct Topologies {
    records: Records,
    savepoints: Savepoints,
    history: History,
    pins: Pins,
    registry: Arc<ModuleRegistry>,
    streams: Arc<StreamStore>,
    options: ExecOptions,
    /// How big a topology may be.
    limits: TopologyLimits,
    /// The server's restart strategy (a document's `restart:` overrides it).
    restart: RestartPolicy,
    /// Settings of sinks outside Weir (`--postgres-url`).
    outside: OutsideSettings,
    /// Brokers of `kafka:` endpoints that name none (`--kafka-brokers`).
    kafka_brokers: Option<String>,
    /// A node of a cluster: inputs and outputs on this node's disk
    /// (embedded streams) are refused.
    cluster: bool,
    /// On a cluster's node: the partitions each topology reads here.
    shares: Mutex<HashMap<String, weir_connectors::KafkaShare>>,
    /// One owner per topology; the map lock is held only to look up.
    owners: Mutex<HashMap<String, Arc<Owner>>>,
    /// Set at shutdown: nothing restarts any more.
    closing: AtomicBool,
    /// Wakes the supervisor: a job ended or a restart was scheduled.
    bell: Arc<supervisor::Bell>,
}

impl std::fmt::Debug for Topologies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topologies")
            .field("dir", &self.records.dir)
            .finish_non_exhaustive()
    }
}

fn engine_err(topology: &str) -> impl Fn(EngineError) -> TopologiesError + '_ {
    move |source| TopologiesError::Engine {
        topology: topology.to_string(),
        source,
    }
}

/// The server settings topologies run with.
#[derive(Debug, Clone)]
pub struct TopologySettings {
    pub options: ExecOptions,
    pub limits: TopologyLimits,
    pub restart: RestartPolicy,
    /// Where sinks outside Weir go by default (`--postgres-url`).
    pub outside: OutsideSettings,
    /// Default Kafka brokers (`--kafka-brokers`).
    pub kafka_brokers: Option<String>,
    /// This server is a node of a cluster (`--cluster`).
    pub cluster: bool,
}

impl Topologies {
    /// Opens the topologies of `data_dir` and starts their supervisor
    /// (which acts only on topologies started later).
    pub fn open(
        data_dir: &Path,
        registry: Arc<ModuleRegistry>,
        streams: Arc<StreamStore>,
        settings: TopologySettings,
    ) -> Result<Arc<Self>, TopologiesError> {
        let TopologySettings {
            options,
            limits,
            restart,
            outside,
            kafka_brokers,
            cluster,
        } = settings;
        let records = Records::open(data_dir)?;
        let pins = Pins::load(&records);
        let topologies = Arc::new(Topologies {
            records,
            savepoints: Savepoints::new(data_dir),
            history: History::default(),
            pins,
            registry,
            streams,
            options,
            limits,
            restart,
            outside,
            kafka_brokers,
            cluster,
            shares: Mutex::new(HashMap::new()),
            owners: Mutex::new(HashMap::new()),
            closing: AtomicBool::new(false),
            bell: Arc::default(),
        });
        supervisor::spawn(&topologies);
        Ok(topologies)
    }

    fn owners(&self) -> MutexGuard<'_, HashMap<String, Arc<Owner>>> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn owner(&self, name: &str) -> Arc<Owner> {
        self.owners().entry(name.to_string()).or_default().clone()
    }

    fn existing_owner(&self, name: &str) -> Option<Arc<Owner>> {
        self.owners().get(name).cloned()
    }

    /// Runs `body` with `step` claimed on `name`'s owner; a refusal
    /// becomes the error the API answers.
    fn with_claim<R>(
        &self,
        name: &str,
        step: Option<Step>,
        what: &'static str,
        body: impl FnOnce(&Owner, Claim<'_>) -> Result<R, TopologiesError>,
    ) -> Result<R, TopologiesError> {
        loop {
            let owner = self.owner(name);
            match owner.claim(step, what) {
                Ok(claim) => return body(owner.as_ref(), claim),
                // Deleted meanwhile: the next lookup gets the new owner.
                Err(ClaimError::Retired) => continue,
                Err(e) => return Err(refused(name, e)),
            }
        }
    }

    /// Reads a document from JSON or YAML text.
    pub fn parse(text: &str) -> Result<TopologyDoc, TopologiesError> {
        records::parse(text)
    }

    /// Every problem of `doc` on this server: the document's own and, when
    /// it has none, what its operators say of their configs once
    /// instantiated (`probe.rs`). Slow: call it off the async runtime.
    pub fn validate(&self, doc: &TopologyDoc) -> Vec<Problem> {
        let mut problems = self.validate_quickly(doc);
        if !problems.iter().any(|p| p.severity == Severity::Error) {
            problems.extend(probe::probe_operators(
                &self.registry,
                doc,
                probe::PROBE_BUDGET,
            ));
        }
        problems
    }

    /// The problems of `doc` short of instantiating its operators: the
    /// document's own, its modules against the registry, and, on a
    /// cluster's node, endpoints that live on one node's disk.
    fn validate_quickly(&self, doc: &TopologyDoc) -> Vec<Problem> {
        let mut problems = records::validate(
            &self.registry,
            doc,
            self.limits,
            &self.outside,
            self.kafka_brokers.is_some(),
        );
        if self.cluster {
            problems.extend(records::cluster_problems(doc));
        } else {
            problems.extend(crate::cluster::standby_problems(doc, 1, false));
        }
        problems
    }

    /// Creates or replaces the stopped topology `name` with `doc`; returns
    /// the record and whether it is new.
    pub fn apply(
        &self,
        name: &str,
        doc: TopologyDoc,
    ) -> Result<(TopologyRecord, bool), TopologiesError> {
        let problems = self.validate(&doc);
        self.apply_checked(name, doc, problems, None)
    }

    /// The module versions `doc`'s references resolve to now (`name` →
    /// `name@version`), as [`Topologies::apply`] would pin them.
    pub fn resolve_pins(
        &self,
        doc: &TopologyDoc,
    ) -> Result<std::collections::BTreeMap<String, String>, TopologiesError> {
        let mut modules = std::collections::BTreeMap::new();
        for op in &doc.operators {
            let version = self.registry.resolve(&op.module)?;
            modules.insert(op.module.clone(), version.reference());
        }
        Ok(modules)
    }

    /// [`Topologies::apply`] of a document a cluster's control topic
    /// holds: pinned to the module versions the node that took the write
    /// resolved (`modules`), and validated without instantiating the
    /// operators again (that node did).
    pub fn apply_pinned(
        &self,
        name: &str,
        doc: TopologyDoc,
        modules: &std::collections::BTreeMap<String, String>,
    ) -> Result<(TopologyRecord, bool), TopologiesError> {
        let problems = self.validate_quickly(&doc);
        self.apply_checked(name, doc, problems, Some(modules))
    }

    fn apply_checked(
        &self,
        name: &str,
        doc: TopologyDoc,
        problems: Vec<Problem>,
        pinned: Option<&std::collections::BTreeMap<String, String>>,
    ) -> Result<(TopologyRecord, bool), TopologiesError> {
        check_name("topology", name)?;
        if doc.name != name {
            return Err(TopologiesError::NameMismatch {
                doc: doc.name,
                path: name.to_string(),
            });
        }
        if problems.iter().any(|p| p.severity == Severity::Error) {
            return Err(TopologiesError::Invalid(problems));
        }
        self.with_claim(name, Some(Step::Apply), "applying", |_, claim| {
            let created = !self.records.exists(name);
            let record =
                self.pins
                    .pin_and_write(&self.registry, name, &doc, pinned, |modules| {
                        let record = TopologyRecord {
                            doc: doc.clone(),
                            modules,
                            desired: DesiredState::Stopped,
                            updated_at: now_ms(),
                            last_error: None,
                        };
                        self.records.write(&record)?;
                        Ok(record)
                    })?;
            claim.finish(None, |slot| slot.restart.reset());
            tracing::info!(topology.name = name, created, "topology applied");
            Ok((record, created))
        })
    }

    /// Sets (or clears) the partitions topology `name` reads on this
    /// cluster node from its next start on.
    pub fn set_share(&self, name: &str, share: Option<weir_connectors::KafkaShare>) {
        let mut shares = self.shares.lock().unwrap_or_else(|p| p.into_inner());
        match share {
            Some(s) => shares.insert(name.to_string(), s),
            None => shares.remove(name),
        };
    }

    /// The partitions topology `name` reads on this cluster node.
    pub fn share(&self, name: &str) -> Option<weir_connectors::KafkaShare> {
        self.shares
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// The directory of topology `name`'s record and state database.
    pub(crate) fn state_dir(&self, name: &str) -> PathBuf {
        self.records.dir_of(name)
    }

    /// The stored record of topology `name`.
    pub fn record(&self, name: &str) -> Result<TopologyRecord, TopologiesError> {
        self.records.read(name)
    }

    /// A topology that pins module version `reference` (`name@version`).
    pub fn module_user(&self, reference: &str) -> Option<String> {
        self.pins.user_of(reference)
    }

    /// Names of every topology, sorted.
    pub fn names(&self) -> Result<Vec<String>, TopologiesError> {
        self.records.names()
    }

    /// Checkpoints of `name`: of the current run while it runs, else of
    /// its last run in this process.
    pub fn checkpoints(&self, name: &str) -> Result<Vec<CheckpointInfo>, TopologiesError> {
        self.records.read(name)?;
        if let Some(owner) = self.existing_owner(name)
            && let Some(job) = owner.lease()
        {
            return Ok(job.checkpoints());
        }
        Ok(self.history.of(name))
    }

    /// The topology `name`, its phase, live metrics and failures. Reads
    /// only: a job that ended is noticed by the supervisor, not here.
    pub fn status(&self, name: &str) -> Result<TopologyStatus, TopologiesError> {
        let record = self.records.read(name)?;
        let policy = self.restart.with(record.doc.restart.as_ref());
        let operator_limits = record
            .doc
            .operators
            .iter()
            .map(|o| (o.name.clone(), self.limits.operator.with(o.limits.as_ref())))
            .collect();
        let mut status = TopologyStatus {
            operator_limits,
            record,
            state: Phase::Stopped,
            busy: None,
            operators: Vec::new(),
            endpoints: Vec::new(),
            last_checkpoint: None,
            skipped_checkpoints: 0,
            usage: None,
            sources: Vec::new(),
            failed_checkpoints: (0, 0, None),
            restart: RestartStatus {
                max_attempts: policy.max_attempts,
                ..RestartStatus::default()
            },
        };
        let lease = match self.existing_owner(name) {
            Some(owner) => {
                {
                    let slot = owner.lock();
                    status.state = slot.phase.0;
                    status.busy = slot.busy;
                    let track = &slot.restart;
                    status.restart.attempt = track.attempt;
                    status.restart.next_try_ms = track.next_try_ms;
                    status.restart.restarts_total = track.restarts_total;
                    status.restart.failures = track.failures.iter().cloned().collect();
                }
                owner.lease().map(|job| {
                    (
                        job.metrics(),
                        job.endpoints(),
                        job.checkpoints(),
                        job.skipped_checkpoints(),
                        job.failed_checkpoints(),
                        job.usage(),
                        job.source_counts(),
                    )
                })
            }
            None => None,
        };
        match lease {
            Some((metrics, endpoints, checkpoints, skipped, failed, usage, sources)) => {
                status.operators = metrics;
                status.endpoints = endpoints;
                status.last_checkpoint = checkpoints.into_iter().last();
                status.skipped_checkpoints = skipped;
                status.usage = Some(usage);
                status.failed_checkpoints = failed;
                status.sources = sources;
            }
            None => {
                status.last_checkpoint = self.history.of(name).into_iter().last();
                status.sources = self.history.sources_of(name);
            }
        }
        Ok(status)
    }

    /// Starts `name`, from savepoint `savepoint` when given. A failed
    /// or restarting topology is started at once.
    pub fn start(&self, name: &str, savepoint: Option<&str>) -> Result<(), TopologiesError> {
        self.records.read(name)?;
        self.with_claim(name, Some(Step::Start), "starting", |owner, claim| {
            let from = match savepoint {
                Some(sp) => {
                    let path = self.savepoints.path(name, sp)?;
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
            self.launch(name, owner, claim, from.as_deref(), StartedBy::User)
        })
    }

    /// Starts the job of a claimed start (or restart); the outcome is the
    /// claim's completion.
    fn launch(
        &self,
        name: &str,
        owner: &Owner,
        claim: Claim<'_>,
        from: Option<&Path>,
        by: StartedBy,
    ) -> Result<(), TopologiesError> {
        let started = Instant::now();
        let mut record = self.records.read(name)?;
        let share = self.share(name);
        let launcher = Launcher {
            registry: &self.registry,
            streams: &self.streams,
            options: self.options,
            outside: &self.outside,
            kafka_brokers: self.kafka_brokers.as_deref(),
            share: share.as_ref(),
        };
        let outcome = launcher
            .start_job(&record, &self.records.dir_of(name), from)
            .and_then(|job| {
                record.desired = DesiredState::Running;
                record.updated_at = now_ms();
                record.last_error = None;
                match self.records.write(&record) {
                    Ok(()) => Ok(job),
                    Err(e) => {
                        let _ = job.stop(None);
                        Err(e)
                    }
                }
            });
        match outcome {
            Ok(job) => {
                // Its end (a failure, or sources that ended) wakes the
                // supervisor, which otherwise looks only now and then.
                let bell = self.bell.clone();
                job.on_end(move || bell.ring());
                claim.finish(Some(Step::Started), |slot| {
                    slot.job = Some(Arc::new(job));
                    if by == StartedBy::User {
                        slot.restart.reset();
                    }
                    slot.restart.on_running(Instant::now());
                });
                // A job that ended before it was in its slot rang before
                // the supervisor could find it there: ring again. (No copy
                // of the job is kept here: a stop or a recovery waits until
                // the slot's is the only one.)
                if owner.lock().job.as_ref().is_some_and(|j| j.is_finished()) {
                    self.bell.ring();
                }
                tracing::info!(
                    topology.name = name,
                    took_ms = started.elapsed().as_millis() as u64,
                    "topology started"
                );
                Ok(())
            }
            Err(e) => {
                record.last_error = Some(e.to_string());
                // A user's start that failed for a cause waiting may fix
                // (brokers down, a topic not created yet, an I/O error) is
                // kept: the topology restarts with backoff, as after a
                // failure while running.
                let keep = by == StartedBy::Supervisor || e.recoverable();
                if keep {
                    record.desired = DesiredState::Running;
                }
                let _ = self.records.write(&record);
                match keep {
                    // The phase goes back to what it was.
                    false => drop(claim),
                    true => {
                        let policy = self.restart.with(record.doc.restart.as_ref());
                        let retry =
                            self.after_failure(owner, &policy, &e.to_string(), e.recoverable());
                        claim.finish(Some(Step::StartFailed { retry }), |_| {});
                        self.bell.ring();
                        tracing::error!(topology.name = %name, error = %e, retry, "topology could not start");
                    }
                }
                Err(e)
            }
        }
    }

    /// Records a failure on `owner` and decides whether to restart.
    fn after_failure(
        &self,
        owner: &Owner,
        policy: &RestartPolicy,
        cause: &str,
        recoverable: bool,
    ) -> bool {
        let jitter = supervisor::jitter();
        let mut slot = owner.lock();
        let decision = slot.restart.on_failure(
            policy,
            cause.to_string(),
            recoverable && !self.closing.load(Ordering::SeqCst),
            Instant::now(),
            now_ms(),
            jitter,
        );
        matches!(decision, AfterFailure::Restart { .. })
    }

    /// Stops `name` after a last checkpoint, exported as savepoint
    /// `savepoint` when given. A failed or restarting topology is just
    /// marked stopped.
    pub fn stop(
        &self,
        name: &str,
        savepoint: Option<&str>,
    ) -> Result<Option<SavepointInfo>, TopologiesError> {
        self.records.read(name)?;
        let reserved = match savepoint {
            Some(sp) => Some(self.savepoints.reserve(name, sp)?),
            None => None,
        };
        self.with_claim(name, Some(Step::Stop), "stopping", |owner, claim| {
            let mut record = self.records.read(name)?;
            record.desired = DesiredState::Stopped;
            record.updated_at = now_ms();
            let Some(job) = owner.take_job() else {
                if reserved.is_some() {
                    // Dropping the claim puts the phase back.
                    return Err(TopologiesError::NotRunning(name.to_string()));
                }
                self.records.write(&record)?;
                claim.finish(None, |slot| slot.restart.reset());
                return Ok(None);
            };
            let job = owner.reclaim(job);
            let outcome = job.stop(
                savepoint
                    .zip(reserved.as_ref())
                    .map(|(sp, r)| (sp, r.path.as_path())),
            );
            match &outcome {
                Ok(report) => {
                    self.history.remember(name, report.checkpoints.clone());
                    self.history.remember_sources(name, report.sources.clone());
                }
                Err(e) => {
                    record.last_error = Some(e.to_string());
                    if let Some(r) = &reserved {
                        let _ = std::fs::remove_file(&r.path);
                    }
                }
            }
            let written = self.records.write(&record);
            claim.finish(Some(Step::Stopped), |slot| slot.restart.reset());
            // A job that had failed by itself is stopped all the same: its
            // failure is the record's last error, and only a savepoint that
            // could not be written makes the stop itself fail.
            if let Err(e) = outcome {
                if reserved.is_some() {
                    return Err(engine_err(name)(e));
                }
                tracing::info!(topology.name = name, error = %e, "stopped a topology that had failed");
            }
            written?;
            tracing::info!(topology.name = name, "topology stopped");
            Ok(match (savepoint, reserved) {
                (Some(sp), Some(r)) => Some(self.savepoints.info(name, sp, &r.path)),
                _ => None,
            })
        })
    }

    /// Deletes the stopped topology `name` with its state and savepoints.
    pub fn delete(&self, name: &str) -> Result<(), TopologiesError> {
        self.records.read(name)?;
        self.with_claim(name, Some(Step::Edit), "deleting", |owner, claim| {
            self.records.read(name)?;
            self.records.remove(name)?;
            self.pins.unpin(name);
            self.history.forget(name);
            let removed = self.savepoints.remove_all(name);
            claim.finish(None, |slot| slot.retired = true);
            let mut owners = self.owners();
            if owners
                .get(name)
                .is_some_and(|o| std::ptr::eq(Arc::as_ptr(o), owner))
            {
                owners.remove(name);
            }
            drop(owners);
            removed?;
            tracing::info!(topology.name = name, "topology deleted");
            Ok(())
        })
    }

    /// State `state` of `key` in `operator`: asked of the running
    /// topology, or read from the last checkpoint of a stopped one. A miss
    /// says what was wrong (the key, the state's name, a stateless
    /// operator).
    pub fn query_state(
        &self,
        name: &str,
        operator: &str,
        state: &str,
        key: &[u8],
    ) -> Result<StateRead, TopologiesError> {
        let record = self.records.read(name)?;
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
        self.on_job_or_stored(
            name,
            "reading state",
            |job| {
                job.read_state(operator, state, key)
                    .map_err(engine_err(name))
            },
            || read_stopped_state(name, &self.records.dir_of(name), operator, state, key),
        )
    }

    /// Runs `running` on `name`'s job when it runs, else `stopped` (on its
    /// stored state) with the topology claimed for `what`, so that it
    /// cannot start meanwhile. It may start or stop in between: a few
    /// rounds of "lease the job, else claim the stored state".
    fn on_job_or_stored<R>(
        &self,
        name: &str,
        what: &'static str,
        running: impl Fn(&weir_engine::Job) -> Result<R, TopologiesError>,
        stopped: impl Fn() -> Result<R, TopologiesError>,
    ) -> Result<R, TopologiesError> {
        for _ in 0..3 {
            let owner = self.owner(name);
            if let Some(job) = owner.lease() {
                return running(&job);
            }
            match owner.claim(Some(Step::Edit), what) {
                Ok(claim) => {
                    // Deleted since the caller looked: answer 404 rather
                    // than open (and so create) its state directory again.
                    let result = self.records.read(name).and_then(|_| stopped());
                    claim.finish(None, |_| {});
                    return result;
                }
                Err(ClaimError::Refused(Refusal::Running) | ClaimError::Retired) => continue,
                Err(e) => return Err(refused(name, e)),
            }
        }
        Err(TopologiesError::Busy {
            topology: name.to_string(),
            what: "changing phase (starting, stopping or restarting)".into(),
        })
    }

    /// Deletes module version `name`@`version` unless a topology pins it
    /// (atomic against a concurrent apply pinning it).
    pub fn delete_module(&self, name: &str, version: u32) -> Result<ModuleVersion, RegistryError> {
        self.pins.delete_module(&self.registry, name, version)
    }

    /// The savepoints of `name`, by name.
    pub fn savepoints(&self, name: &str) -> Result<Vec<SavepointInfo>, TopologiesError> {
        self.records.read(name)?;
        Ok(self.savepoints.list(name))
    }

    /// Takes a checkpoint of running topology `name` now and waits until
    /// it is durable (a cluster node lets partitions go after one).
    pub fn checkpoint_now(&self, name: &str) -> Result<CheckpointInfo, TopologiesError> {
        match self.owner(name).lease() {
            Some(job) => job.checkpoint().map_err(engine_err(name)),
            None => Err(TopologiesError::NotRunning(name.to_string())),
        }
    }

    /// Writes savepoint `savepoint` of `name`: of a running topology
    /// through a checkpoint taken now; of a stopped one, its last
    /// checkpoint. Only this call waits for it.
    pub fn savepoint(&self, name: &str, savepoint: &str) -> Result<SavepointInfo, TopologiesError> {
        self.records.read(name)?;
        let reserved = self.savepoints.reserve(name, savepoint)?;
        let path = reserved.path.clone();
        let written = self.write_savepoint(name, savepoint, &path);
        if written.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        written?;
        Ok(self.savepoints.info(name, savepoint, &path))
    }

    fn write_savepoint(
        &self,
        name: &str,
        savepoint: &str,
        path: &Path,
    ) -> Result<(), TopologiesError> {
        self.on_job_or_stored(
            name,
            "writing a savepoint",
            |job| {
                job.savepoint(savepoint, path)
                    .map(|_| ())
                    .map_err(engine_err(name))
            },
            || export_last_checkpoint(name, &self.records.dir_of(name), path),
        )
    }

    /// Starts every topology whose desired state is `running` (at boot).
    /// One that fails to start follows its restart strategy.
    pub fn resume(&self) -> usize {
        let mut started = 0;
        for name in self.names().unwrap_or_default() {
            if !self
                .records
                .read(&name)
                .is_ok_and(|r| r.desired == DesiredState::Running)
            {
                continue;
            }
            let result = self.with_claim(&name, Some(Step::Start), "starting", |owner, claim| {
                self.launch(&name, owner, claim, None, StartedBy::Supervisor)
            });
            match result {
                Ok(()) => started += 1,
                Err(e) => {
                    tracing::error!(topology.name = %name, error = %e, "cannot resume topology")
                }
            }
        }
        started
    }

    /// Stops every running topology, keeping their desired state, so they
    /// resume at the next boot (at shutdown). Nothing restarts afterwards.
    pub fn shutdown(&self) {
        self.closing.store(true, Ordering::SeqCst);
        let owners: Vec<(String, Arc<Owner>)> = self
            .owners()
            .iter()
            .map(|(n, o)| (n.clone(), o.clone()))
            .collect();
        for (name, owner) in owners {
            let Ok(claim) = owner.claim(Some(Step::Stop), "stopping for shutdown") else {
                continue;
            };
            let Some(job) = owner.take_job() else {
                drop(claim);
                continue;
            };
            match owner.reclaim(job).stop(None) {
                Ok(report) => {
                    tracing::info!(
                        topology.name = name,
                        checkpoint = report.checkpoints.last().map(|c| c.id),
                        "topology stopped for shutdown after a final checkpoint"
                    );
                    self.history.remember(&name, report.checkpoints);
                }
                Err(e) => {
                    tracing::error!(topology.name = %name, error = %e, "topology failed while stopping")
                }
            }
            claim.finish(Some(Step::Stopped), |_| {});
        }
    }

    /// Names of running topologies. Waits on nothing slow.
    pub fn running(&self) -> Vec<String> {
        let owners: Vec<(String, Arc<Owner>)> = self
            .owners()
            .iter()
            .map(|(n, o)| (n.clone(), o.clone()))
            .collect();
        let mut names: Vec<String> = owners
            .into_iter()
            .filter(|(_, o)| o.phase() == Phase::Running)
            .map(|(n, _)| n)
            .collect();
        names.sort();
        names
    }

    /// `(topology, phase, restarts so far)` of every topology with an
    /// owner in this process, for `/metrics`.
    pub fn phases(&self) -> Vec<(String, Phase, u64)> {
        let owners: Vec<(String, Arc<Owner>)> = self
            .owners()
            .iter()
            .map(|(n, o)| (n.clone(), o.clone()))
            .collect();
        let mut out: Vec<(String, Phase, u64)> = owners
            .into_iter()
            .map(|(n, o)| {
                let slot = o.lock();
                (n, slot.phase.0, slot.restart.restarts_total)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// State `state` of `key` in `operator` of the stopped topology in `dir`,
/// from its newest checkpoint (nothing is created when it has none).
fn read_stopped_state(
    name: &str,
    dir: &Path,
    operator: &str,
    state: &str,
    key: &[u8],
) -> Result<StateRead, TopologiesError> {
    let err = engine_err(name);
    if !dir.join("state.redb").is_file() {
        return Err(TopologiesError::NoState(name.to_string()));
    }
    let db = StateDb::open(dir).map_err(|e| err(e.into()))?;
    weir_engine::read_checkpointed_state(&db, name, operator, state, key)
        .map_err(err)?
        .ok_or_else(|| TopologiesError::NoState(name.to_string()))
}

/// Exports the newest checkpoint of the stopped topology in `dir` to
/// `path`.
fn export_last_checkpoint(name: &str, dir: &Path, path: &Path) -> Result<(), TopologiesError> {
    let err = engine_err(name);
    let db = StateDb::open(dir).map_err(|e| err(e.into()))?;
    if db.latest_checkpoint().map_err(|e| err(e.into()))?.is_none() {
        return Err(TopologiesError::NoCheckpoint(name.to_string()));
    }
    db.export(path).map_err(|e| err(e.into()))?;
    Ok(())
}

/// The error a refused claim answers with.
fn refused(name: &str, e: ClaimError) -> TopologiesError {
    let busy = |what: &str| TopologiesError::Busy {
        topology: name.to_string(),
        what: what.to_string(),
    };
    match e {
        ClaimError::Refused(Refusal::Running) => TopologiesError::Running(name.to_string()),
        ClaimError::Refused(Refusal::NotRunning) => TopologiesError::NotRunning(name.to_string()),
        ClaimError::Refused(Refusal::Busy(phase)) => busy(match phase {
            Phase::Starting => "starting",
            Phase::Stopping => "stopping",
            _ => "changing",
        }),
        ClaimError::Busy(what) => busy(what),
        ClaimError::Retired => busy("being deleted"),
    }
}
