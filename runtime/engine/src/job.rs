//! [`Job`]: a topology running in the background, and what can be asked of
//! it while it runs: metrics, a checkpoint or savepoint now, the current
//! state of a key, dead letters fed back into an operator ([`Job::replay`]),
//! stop (always with a last checkpoint when it has checkpoints, optionally
//! exported as a savepoint).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::Duration;

use weir_io::{Bindings, EndpointSnapshot, EndpointStats};
use weir_state::{KeyedState, StateBudget, StateDb};
use weir_topology::TopologyDoc;
use weir_types::{Batch, Event, KeyGroupRange};

use crate::checkpoint::{CheckpointInfo, Request};
use crate::error::EngineError;
use crate::executor::{ExecOptions, Launched, Modules, StateConfig, TopologyReport, launch};
use crate::metrics::{MetricsRegistry, MetricsSnapshot};
use crate::pool::WorkerPool;
use crate::protocol::{Envelope, Msg, OUTSIDE, Query, Replay, StateRead, StateValue, read_state};

/// How long a replay waits for an instance to answer.
const REPLAY_WAIT: Duration = Duration::from_secs(60);

/// How long a caller waits for a checkpoint before giving up.
const CHECKPOINT_WAIT: Duration = Duration::from_secs(600);

/// What a running topology costs the node, now.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Worker time its tasks used since it started, seconds.
    pub cpu_seconds: f64,
    /// Its part of the worker time all topologies used (0 to 1), over the
    /// window since the previous sample (samples are at least 1 s apart).
    pub cpu_share: f64,
    /// Slices after which one of its tasks was paused for running long
    /// (guest calls using their whole budget again and again).
    pub throttled: u64,
    /// Linear memory of its operator instances, bytes.
    pub wasm_memory_bytes: u64,
    /// Working sets of its operators' keyed state, bytes.
    pub state_bytes: u64,
}

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
        bindings: Bindings,
        options: ExecOptions,
        state: Option<StateConfig>,
    ) -> Result<Job, EngineError> {
        Job::start_on(WorkerPool::shared(), doc, modules, bindings, options, state)
    }

    /// [`Job::start`] on a given worker pool (the process's shared pool by
    /// default).
    pub fn start_on(
        pool: &WorkerPool,
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
            pool,
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
            .map(|(s, c)| (s.clone(), c.load(std::sync::atomic::Ordering::Relaxed)))
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
        self.launched.group.is_finished()
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
        if let Some(c) = &self.launched.coordinator {
            c.wake();
        }
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

    /// What the topology costs the node: worker time and its share, throttled
    /// slices, memory.
    pub fn usage(&self) -> Usage {
        let l = &self.launched;
        let own = l
            .group
            .busy_nanos
            .load(std::sync::atomic::Ordering::Relaxed);
        let pool = l.pool.busy().as_nanos() as u64;
        let share = match l.cpu_window.lock() {
            Ok(mut w) => {
                if w.at.elapsed() >= Duration::from_secs(1) {
                    let all = pool.saturating_sub(w.pool);
                    w.share = if all == 0 {
                        0.0
                    } else {
                        (own.saturating_sub(w.own) as f64 / all as f64).min(1.0)
                    };
                    w.at = std::time::Instant::now();
                    w.own = own;
                    w.pool = pool;
                }
                w.share
            }
            Err(_) => 0.0,
        };
        Usage {
            cpu_seconds: own as f64 / 1e9,
            cpu_share: share,
            throttled: l.group.throttled.load(std::sync::atomic::Ordering::Relaxed),
            wasm_memory_bytes: l
                .footprint
                .wasm_bytes
                .load(std::sync::atomic::Ordering::Relaxed),
            state_bytes: l
                .footprint
                .state_bytes
                .load(std::sync::atomic::Ordering::Relaxed),
        }
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
                self.launched.control.stop_at_once();
                self.launched.abort.fail(e);
            }
        } else if savepoint.is_some() {
            let topology = self.launched.topology.clone();
            self.launched.control.stop_at_once();
            self.launched.join()?;
            return Err(EngineError::NotRunning(format!(
                "topology `{topology}` has no checkpoints to write a savepoint from: it was stopped without one"
            )));
        } else {
            self.launched.control.stop_at_once();
        }
        self.launched.join()
    }

    /// Calls `f` once the run is over (at once if it is): a task failed,
    /// the input ended or it was stopped. `f` runs on the thread that saw
    /// the end, so it must be quick (e.g. wake someone).
    pub fn on_end(&self, f: impl FnOnce() + Send + 'static) {
        self.launched.group.on_end(Box::new(f));
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
            let sent = inputs[instance].force_send(Envelope {
                from: OUTSIDE,
                msg: Msg::Query(query),
            });
            if sent && let Ok(answer) = rx.recv_timeout(Duration::from_secs(30)) {
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

    /// Feeds `events` (each with the input index it came on) back into
    /// operator `operator` while the run goes on: each goes to the
    /// instance that owns its key, skips the late-event policy, and what
    /// it emits flows downstream as usual. Returns, per event in order,
    /// the message it failed with again (`None`: it passed); an event that
    /// fails again is also dead-lettered again. What replayed events emit
    /// is as durable as the next checkpoint: a crash before it loses it
    /// (the dead letters stay, so the replay can be repeated).
    pub fn replay(
        &self,
        operator: &str,
        events: &[(u32, Event)],
    ) -> Result<Vec<Option<String>>, EngineError> {
        let Some((parallelism, inputs)) = self.launched.query_routes.get(operator) else {
            return Err(EngineError::NotRunning(format!(
                "topology `{}` has no operator `{operator}`",
                self.launched.topology
            )));
        };
        if self.is_finished() {
            return Err(self.not_running());
        }
        let groups = self.launched.key_groups;
        // Events by (instance, input), their places in `events` kept.
        let mut parts: BTreeMap<(usize, u32), (Batch, Vec<usize>)> = BTreeMap::new();
        for (i, (input, event)) in events.iter().enumerate() {
            let instance = match &event.key {
                Some(key) => (0..*parallelism)
                    .find(|&n| KeyGroupRange::for_instance(n, *parallelism, groups).owns(key))
                    .unwrap_or(0) as usize,
                None => 0,
            };
            let (batch, places) = parts.entry((instance, *input)).or_default();
            batch.push_event(event);
            places.push(i);
        }
        let mut out = vec![None; events.len()];
        for ((instance, input), (batch, places)) in parts {
            let (tx, rx) = channel();
            let replay = Replay {
                operator: operator.to_string(),
                input,
                batch,
                reply: tx,
            };
            let sent = inputs[instance].force_send(Envelope {
                from: OUTSIDE,
                msg: Msg::Replay(Box::new(replay)),
            });
            if !sent {
                return Err(self.not_running());
            }
            let again = match rx.recv_timeout(REPLAY_WAIT) {
                Ok(answer) => answer.map_err(EngineError::NotRunning)?,
                Err(RecvTimeoutError::Disconnected) => return Err(self.not_running()),
                Err(RecvTimeoutError::Timeout) if self.is_finished() => {
                    return Err(self.not_running());
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(EngineError::NotRunning(format!(
                        "instance {instance} of operator `{operator}` did not answer the replay within {REPLAY_WAIT:?}: it is busy; replay fewer letters at once"
                    )));
                }
            };
            for (place, failed) in places.into_iter().zip(again) {
                out[place] = failed;
            }
        }
        Ok(out)
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
