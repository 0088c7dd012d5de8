//! [`Job`]: a topology running in the background, and what can be asked of
//! it while it runs: metrics, a checkpoint or savepoint now, the current
//! state of a key, stop (always with a last checkpoint when it has
//! checkpoints, optionally exported as a savepoint).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::channel;
use std::time::Duration;

use weir_io::{Bindings, EndpointSnapshot, EndpointStats};
use weir_state::{KeyedState, StateBudget, StateDb};
use weir_topology::TopologyDoc;
use weir_types::KeyGroupRange;

use crate::checkpoint::{CheckpointInfo, Request};
use crate::error::EngineError;
use crate::executor::{ExecOptions, Launched, Modules, StateConfig, TopologyReport, launch};
use crate::metrics::{MetricsRegistry, MetricsSnapshot};
use crate::protocol::{Envelope, Msg, OUTSIDE, Query, StateRead, StateValue, read_state};

/// How long a caller waits for a checkpoint before giving up.
const CHECKPOINT_WAIT: Duration = Duration::from_secs(600);

/// A running topology.
pub struct Job {
    launched: Launched,
    /// Live figures of the sources and sinks that keep them.
    endpoints: BTreeMap<String, Arc<EndpointStats>>,
}

impl Job {
    /// Validates `doc`, restores its newest checkpoint when `state` has
    /// checkpoints, and starts it in the background.
    pub fn start(
        doc: &TopologyDoc,
        modules: &Modules,
        mut bindings: Bindings,
        options: ExecOptions,
        state: Option<StateConfig>,
    ) -> Result<Job, EngineError> {
        let endpoints = std::mem::take(&mut bindings.stats);
        let launched = launch(
            doc,
            modules,
            bindings,
            options,
            state,
            Arc::new(MetricsRegistry::default()),
        )?;
        Ok(Job {
            launched,
            endpoints,
        })
    }

    pub fn name(&self) -> &str {
        &self.launched.topology
    }

    /// `(operator, instance, metrics)` of every instance, now.
    pub fn metrics(&self) -> Vec<(String, usize, MetricsSnapshot)> {
        self.launched.metrics.snapshot()
    }

    /// `(source, events read)` of every source in this run, now.
    pub fn source_counts(&self) -> Vec<(String, u64)> {
        self.launched
            .source_counts
            .iter()
            .map(|(s, c)| (s.clone(), c.load(Ordering::Relaxed)))
            .collect()
    }

    /// `(source or sink, its figures)` of every endpoint that keeps them.
    pub fn endpoints(&self) -> Vec<(String, EndpointSnapshot)> {
        self.endpoints
            .iter()
            .map(|(name, stats)| (name.clone(), stats.snapshot()))
            .collect()
    }

    /// Whether every task has finished (input over, stopped or failed).
    pub fn is_finished(&self) -> bool {
        self.launched.handles.iter().all(|h| h.is_finished())
    }

    /// The first error of the run so far.
    pub fn error(&self) -> Option<String> {
        self.launched
            .abort
            .error
            .lock()
            .ok()
            .and_then(|e| e.as_ref().map(|e| e.to_string()))
    }

    /// Checkpoints completed by this run, oldest first (the last 100).
    pub fn checkpoints(&self) -> Vec<CheckpointInfo> {
        self.launched
            .history
            .lock()
            .map(|h| h.clone())
            .unwrap_or_default()
    }

    fn request(
        &self,
        savepoint: Option<(String, std::path::PathBuf)>,
        stop: bool,
    ) -> Result<CheckpointInfo, EngineError> {
        let Some(requests) = &self.launched.requests else {
            return Err(EngineError::NotRunning(format!(
                "topology `{}` runs without checkpoints: give it a checkpoint interval",
                self.launched.topology
            )));
        };
        let (tx, rx) = channel();
        requests
            .send(Request {
                savepoint,
                stop,
                reply: tx,
            })
            .map_err(|_| self.not_running())?;
        rx.recv_timeout(CHECKPOINT_WAIT)
            .map_err(|_| {
                EngineError::NotRunning(format!(
                    "topology `{}` stopped before the checkpoint completed{}",
                    self.launched.topology,
                    self.error().map(|e| format!(": {e}")).unwrap_or_default()
                ))
            })?
            .map_err(EngineError::NotRunning)
    }

    fn not_running(&self) -> EngineError {
        EngineError::NotRunning(format!(
            "topology `{}` is not running{}",
            self.launched.topology,
            self.error().map(|e| format!(": {e}")).unwrap_or_default()
        ))
    }

    /// Interval checkpoints skipped so far because nothing had changed
    /// since the last one (an idle topology commits nothing).
    pub fn skipped_checkpoints(&self) -> u64 {
        self.launched
            .skipped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Checkpoints of this run whose commit failed and that were aborted
    /// (their changes went into the next one): in all, in a row now, and
    /// why the last one failed.
    pub fn failed_checkpoints(&self) -> (u64, u64, Option<String>) {
        let failed = &self.launched.failed;
        (
            failed.total.load(std::sync::atomic::Ordering::Relaxed),
            failed.in_a_row.load(std::sync::atomic::Ordering::Relaxed),
            failed.last_error.lock().ok().and_then(|e| e.clone()),
        )
    }

    /// Takes a checkpoint now and waits until it is durable.
    pub fn checkpoint(&self) -> Result<CheckpointInfo, EngineError> {
        self.request(None, false)
    }

    /// Takes a checkpoint now and exports it as savepoint `name` to `path`.
    pub fn savepoint(&self, name: &str, path: &Path) -> Result<CheckpointInfo, EngineError> {
        self.request(Some((name.to_string(), path.to_path_buf())), false)
    }

    /// Stops the run: with checkpoints, after a last checkpoint (exported as
    /// a savepoint when `savepoint` is given), otherwise at once. Returns
    /// the run's report.
    pub fn stop(self, savepoint: Option<(&str, &Path)>) -> Result<TopologyReport, EngineError> {
        if self.launched.requests.is_some() && !self.is_finished() {
            let last = self.request(
                savepoint.map(|(n, p)| (n.to_string(), p.to_path_buf())),
                true,
            );
            if let Err(e) = last {
                self.launched.control.stop_now.store(true, Ordering::SeqCst);
                self.launched.abort.fail(e);
            }
        } else if savepoint.is_some() {
            let topology = self.launched.topology.clone();
            self.launched.control.stop_now.store(true, Ordering::SeqCst);
            self.launched.join()?;
            return Err(EngineError::NotRunning(format!(
                "topology `{topology}` has no checkpoints to write a savepoint from: it was stopped without one"
            )));
        } else {
            self.launched.control.stop_now.store(true, Ordering::SeqCst);
        }
        self.launched.join()
    }

    /// Waits until the input is over (bounded sources) or the run fails.
    pub fn wait(self) -> Result<TopologyReport, EngineError> {
        self.launched.join()
    }

    /// The current state `name` of `key` in operator `operator`: asked of
    /// the instance that owns the key while the run goes on, read from the
    /// state database once it is over.
    pub fn query_state(
        &self,
        operator: &str,
        name: &str,
        key: &[u8],
    ) -> Result<Option<StateValue>, EngineError> {
        let Some((parallelism, inputs)) = self.launched.query_routes.get(operator) else {
            return Err(EngineError::NotRunning(format!(
                "topology `{}` has no operator `{operator}`",
                self.launched.topology
            )));
        };
        let groups = self.launched.key_groups;
        let instance = (0..*parallelism)
            .find(|&i| KeyGroupRange::for_instance(i, *parallelism, groups).owns(key))
            .unwrap_or(0) as usize;
        if !self.is_finished() {
            let (tx, rx) = channel();
            let query = Query {
                operator: operator.to_string(),
                state: name.to_string(),
                key: key.to_vec(),
                reply: tx,
            };
            let sent = inputs[instance].send(Envelope {
                from: OUTSIDE,
                msg: Msg::Query(query),
            });
            if sent.is_ok()
                && let Ok(answer) = rx.recv_timeout(Duration::from_secs(30))
            {
                return answer.map_err(EngineError::NotRunning);
            }
        }
        // The run is over: what the state database holds.
        match &self.launched.state {
            Some(s) => {
                let range = KeyGroupRange::for_instance(instance as u16, *parallelism, groups);
                let mut state =
                    KeyedState::open(&s.db, &self.launched.topology, operator, range, s.budget)?;
                read_state(&mut state, name, key).map_err(EngineError::NotRunning)
            }
            None => Err(self.not_running()),
        }
    }

    /// State `name` of `key` in operator `operator`, as [`Job::query_state`]
    /// reads it, a miss told apart (no value for the key, no such state,
    /// a stateless operator) by the value states the operator declared.
    pub fn read_state(
        &self,
        operator: &str,
        name: &str,
        key: &[u8],
    ) -> Result<StateRead, EngineError> {
        let found = self.query_state(operator, name, key)?;
        let declared = self
            .launched
            .declared
            .get(operator)
            .map(Vec::as_slice)
            .unwrap_or_default();
        Ok(StateRead::of(found, name, declared))
    }
}

/// State `name` of `key` in operator `operator` of the stopped topology
/// `topology` whose state database is `db`, as its newest checkpoint holds
/// it; `None` when it has no checkpoint. Only reads: nothing may run on
/// `db` meanwhile.
pub fn read_checkpointed_state(
    db: &StateDb,
    topology: &str,
    operator: &str,
    name: &str,
    key: &[u8],
) -> Result<Option<StateRead>, EngineError> {
    let Some(restored) = crate::checkpoint::restore(db)? else {
        return Ok(None);
    };
    let meta = &restored.meta;
    let declared = meta
        .operators
        .get(operator)
        .map(|o| o.value_states.clone())
        .unwrap_or_default();
    let range = KeyGroupRange::all(meta.key_groups);
    let mut state = KeyedState::open(db, topology, operator, range, StateBudget::default())?;
    let found = read_state(&mut state, name, key).map_err(EngineError::NotRunning)?;
    Ok(Some(StateRead::of(found, name, &declared)))
}
