//! A node of a Weir cluster (`weir serve --cluster NAME --kafka-brokers
//! LIST`): the control plane lives in a Kafka topic, `weir-cluster-<name>`
//! (compacted, one partition), that every node reads in order and applies
//! to its own data directory (see `docs/cluster.md`).
//!
//! - A write through any node's API (module upload or delete, topology
//!   document, start, stop, delete) is validated on that node as a single
//!   node would, then appended to the topic (idempotent producer,
//!   `acks=all`); the call is answered once this node's reader has applied
//!   that offset, with the outcome of applying it and the offset
//!   (`control_offset`), so a read after a write on the same node sees it.
//! - The reader thread applies each record through the registry and
//!   topology calls the single-node API makes (`apply.rs`); a record it
//!   cannot apply is kept in the problems `GET /v1/cluster` shows, and it
//!   goes on with the next.
//! - Each node appends a heartbeat (`member/<node>`) every few seconds:
//!   its address, version, applied offset and the topologies it runs; a
//!   clean shutdown deletes it.
//! - `tasks.rs`: a running topology reads only the partitions of its
//!   Kafka inputs that its consumer group (`weir.<cluster>.<topology>`)
//!   gives this node; its job restarts on each change of assignment.
//! - `keys.rs`: the records' keys and values.
//! - `query.rs`: a state query on any node, forwarded to the node that
//!   holds the key's partition.
//! - `repartition.rs`: co-partitioned inputs (the group assigns the lead
//!   topic, the other inputs follow its partition numbers) and the
//!   repartition topics a re-keyed operator reads through.
//! - `upgrade.rs`: a new document for a running topology (a module
//!   upgrade) restarts each node's job on it from its committed state.
//!
//! - `changelog.rs`: keyed state that moves with its partitions: a
//!   compacted changelog topic per operator that keeps state, written
//!   with each checkpoint and read by the node that gets a partition.
//! - `standby.rs`: warm copies of other nodes' partitions (`standbys`),
//!   kept from their changelogs, so a move restores only the tail.
//!
//!   Each checkpoint of a topology on a node is one Kafka transaction
//!   (its exactly-once sinks' output, its changelog records and its
//!   input offsets, committed to the group with the member's generation)
//!   before the local commit: exactly-once across a node's crash.

mod apply;
pub(crate) mod changelog;
pub mod keys;
mod query;
pub(crate) mod repartition;
mod standby;
mod tasks;
mod upgrade;

pub use query::{Forwarded, QueryRoute};
pub(crate) use standby::standby_problems;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use weir_connectors::{ControlLog, ControlPoll, KafkaError};
use weir_topology::TopologyDoc;
use weir_types::{is_safe_name, now_ms};

use crate::ControlPlane;
use crate::registry::{ModuleVersion, Prepared, Pushed, RegistryError};
use crate::topologies::{DesiredState, TopologiesError, TopologyRecord};

use apply::{Applied, ApplyState};
use keys::{DesiredEntry, Key, Manifest, Member, TopologyEntry, encode};

/// Largest chunk of a module upload by default: under the broker's
/// default `max.message.bytes` (1 MiB) with room for the record's key.
pub const DEFAULT_CHUNK_BYTES: usize = 512 << 10;
/// Smallest chunk size allowed.
pub const MIN_CHUNK_BYTES: usize = 1 << 10;
/// How often a node sends its heartbeat by default.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(3);
/// How long a write waits for this node to apply it.
pub const APPLY_WAIT: Duration = Duration::from_secs(120);
/// How long a starting node waits to catch up with the topic before it
/// serves anyway (saying so).
pub const CATCH_UP_WAIT: Duration = Duration::from_secs(300);
/// Problems kept for `GET /v1/cluster`.
const KEPT_PROBLEMS: usize = 100;
/// Outcomes of applied records kept for the writes that wait on them.
const KEPT_OUTCOMES: usize = 4096;

/// Settings of a cluster node.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The cluster's name: its control topic is `weir-cluster-<name>`.
    pub name: String,
    /// The brokers of the control topic.
    pub brokers: String,
    /// This node's id; `None`: the one kept in `<data>/node-id` (made at
    /// the first start).
    pub node_id: Option<String>,
    /// Module uploads are cut into records of at most this many bytes.
    pub chunk_bytes: usize,
    pub heartbeat: Duration,
}

/// A cluster operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    #[error(
        "cluster name {0:?} is not valid: use 1-128 of A-Z a-z 0-9 _ . - (it names the control topic weir-cluster-<name>)"
    )]
    BadName(String),
    #[error("--cluster-chunk-bytes {0} is too small: use at least {MIN_CHUNK_BYTES}")]
    ChunkSize(usize),
    #[error("the cluster's control topic: {0}")]
    Kafka(#[from] KafkaError),
    #[error("cannot keep this node's id in {path}: {reason}")]
    NodeId { path: String, reason: String },
    /// Applying the write on this node failed; other nodes report it too.
    #[error("{0}")]
    Refused(String),
    #[error(
        "the write is in the control topic at offset {offset}, but this node has not applied it within {waited_s} s (it is applying earlier records): read it again later"
    )]
    NotApplied { offset: i64, waited_s: u64 },
    #[error(
        "no node holds partition {partition} of {topic} for topology `{topology}` now (it is not running, or the partition is moving): ask again in a few seconds"
    )]
    NoOwner {
        topology: String,
        topic: String,
        partition: i32,
    },
    #[error("cannot forward the query to node {node} at {address}: {reason}")]
    Forward {
        node: String,
        address: String,
        reason: String,
    },
    #[error("topology `{topology}` runs and cannot take this document: {reason}")]
    UpgradeRefused { topology: String, reason: String },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Topologies(#[from] TopologiesError),
}

/// A record this node could not apply.
#[derive(Debug, Clone)]
pub struct ApplyProblem {
    pub offset: i64,
    pub key: String,
    pub error: String,
    pub at: i64,
}

/// How far this node's reader is.
#[derive(Debug)]
struct Progress {
    /// Offset of the last record applied (-1: none).
    applied: i64,
    /// The reader reached the end of the topic at least once.
    at_end: bool,
    /// Outcome of applying each recent offset.
    outcomes: BTreeMap<i64, Result<(), String>>,
}

/// What this node knows of the cluster besides its own data directory.
#[derive(Debug, Default)]
struct View {
    /// The last heartbeat of each node.
    members: BTreeMap<String, Member>,
    problems: VecDeque<ApplyProblem>,
    /// `(module, version)` → `(hex digest, chunks)` of each manifest
    /// applied, so a delete can tombstone its chunks.
    manifests: BTreeMap<(String, u32), (String, u32)>,
}

/// This node's side of the cluster.
pub struct Cluster {
    pub name: String,
    pub node: String,
    log: ControlLog,
    chunk_bytes: usize,
    heartbeat: Duration,
    max_module_bytes: usize,
    started_at: i64,
    /// Where this node's API listens (known once bound).
    address: Mutex<String>,
    progress: Mutex<Progress>,
    applied_changed: Condvar,
    view: Mutex<View>,
    closing: AtomicBool,
    /// The topologies' group members on this node.
    tasks: tasks::Tasks,
    /// The brokers of the control topic (and of topologies that name none).
    brokers: String,
    /// Input topics' partition counts, for routing state queries.
    partition_counts: query::PartitionCounts,
    /// This node's standby copies of other nodes' partitions.
    standbys: standby::Standbys,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("name", &self.name)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// Whether `member`'s last heartbeat is under three intervals old at
/// `now` (by the sender's clock: nodes' clocks are assumed to agree within
/// a heartbeat or so).
fn alive(member: &Member, now: i64) -> bool {
    now - member.at <= 3 * member.every_ms as i64
}

/// Per running topology of this node, per Kafka input topic, per
/// partition read here: its consumer lag (the partition's end when the
/// source last looked it up, less the source's position).
fn lag_of(plane: &ControlPlane) -> BTreeMap<String, BTreeMap<String, BTreeMap<i32, u64>>> {
    let mut out = BTreeMap::new();
    for name in plane.topologies.running() {
        let Ok(status) = plane.topologies.status(&name) else {
            continue;
        };
        let topics: BTreeMap<&str, &str> = status
            .record
            .doc
            .sources
            .iter()
            .filter_map(|s| Some((s.name.as_str(), s.kafka.as_ref()?.topic.as_str())))
            .collect();
        let mut of_topology: BTreeMap<String, BTreeMap<i32, u64>> = BTreeMap::new();
        for (endpoint, figures) in &status.endpoints {
            let Some(topic) = topics.get(endpoint.as_str()) else {
                continue;
            };
            for (&partition, split) in &figures.splits {
                if let Some(lag) = split.lag() {
                    of_topology
                        .entry(topic.to_string())
                        .or_default()
                        .insert(partition as i32, lag);
                }
            }
        }
        if !of_topology.is_empty() {
            out.insert(name, of_topology);
        }
    }
    out
}

/// The lead input of `doc`, its first `kafka:` source: its other inputs
/// and its repartition topics are co-partitioned with it, so state,
/// queries and standbys are partitioned by its topic; `None` when it
/// reads no Kafka topic.
fn lead_input(doc: &TopologyDoc) -> Option<&weir_topology::KafkaSourceDoc> {
    doc.sources.iter().find_map(|s| s.kafka.as_ref())
}

/// This node's id: the one in `<data>/node-id`, or a new one kept there.
fn node_id(data_dir: &std::path::Path) -> Result<String, ClusterError> {
    let path = data_dir.join("node-id");
    let err = |e: std::io::Error| ClusterError::NodeId {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if is_safe_name(text.trim()) => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let mut hash = Sha256::new();
    hash.update(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            .to_le_bytes(),
    );
    hash.update(std::process::id().to_le_bytes());
    hash.update(data_dir.as_os_str().as_encoded_bytes());
    let id: String = hash.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let id = format!("node-{id}");
    crate::fsutil::write_atomically(&path, id.as_bytes()).map_err(err)?;
    Ok(id)
}

impl Cluster {
    /// Connects to the control topic (creating it when missing) and
    /// starts this node's reader and heartbeat threads over `plane`.
    /// Returns once the reader has caught up with what the topic held at
    /// the start (or after [`CATCH_UP_WAIT`], saying so).
    pub fn join(
        plane: &Arc<ControlPlane>,
        config: ClusterConfig,
    ) -> Result<Arc<Cluster>, ClusterError> {
        if !is_safe_name(&config.name) {
            return Err(ClusterError::BadName(config.name));
        }
        if config.chunk_bytes < MIN_CHUNK_BYTES {
            return Err(ClusterError::ChunkSize(config.chunk_bytes));
        }
        let node = match config.node_id {
            Some(id) if is_safe_name(&id) => id,
            Some(id) => return Err(ClusterError::BadName(id)),
            None => node_id(&plane.config.data_dir)?,
        };
        let topic = format!("weir-cluster-{}", config.name);
        let log = ControlLog::open(&config.brokers, &topic)?;
        let end = log.end()?;
        let reader = log.reader()?;
        let cluster = Arc::new(Cluster {
            name: config.name,
            node,
            brokers: config.brokers.clone(),
            log,
            chunk_bytes: config.chunk_bytes,
            heartbeat: config.heartbeat,
            max_module_bytes: plane.config.max_module_bytes,
            started_at: now_ms(),
            address: Mutex::new(plane.config.listen.to_string()),
            progress: Mutex::new(Progress {
                applied: -1,
                at_end: false,
                outcomes: BTreeMap::new(),
            }),
            applied_changed: Condvar::new(),
            view: Mutex::new(View::default()),
            closing: AtomicBool::new(false),
            tasks: tasks::Tasks::default(),
            partition_counts: query::PartitionCounts::default(),
            standbys: standby::Standbys::default(),
        });
        let (me, on) = (cluster.clone(), plane.clone());
        std::thread::Builder::new()
            .name("weir-cluster-reader".into())
            .spawn(move || me.read_and_apply(&on, reader))
            .map_err(|e| ClusterError::Refused(format!("cannot start the cluster reader: {e}")))?;
        let started = Instant::now();
        let caught_up = cluster.wait(CATCH_UP_WAIT, |p| p.at_end || p.applied >= end - 1);
        tracing::info!(
            cluster = %cluster.name,
            node = %cluster.node,
            topic,
            applied = cluster.applied(),
            caught_up,
            took_ms = started.elapsed().as_millis() as u64,
            "joined the cluster"
        );
        if !caught_up {
            tracing::warn!(
                "this node has not caught up with the cluster's control topic within {} s: it serves what it has applied so far",
                CATCH_UP_WAIT.as_secs()
            );
        }
        Ok(cluster)
    }

    /// Starts the heartbeat thread; `address` is where this node's API
    /// listens.
    pub fn announce(self: &Arc<Self>, plane: &Arc<ControlPlane>, address: String) {
        *self.address.lock().unwrap_or_else(|p| p.into_inner()) = address;
        let (me, on) = (self.clone(), plane.clone());
        let spawned = std::thread::Builder::new()
            .name("weir-cluster-heartbeat".into())
            .spawn(move || {
                while !me.closing.load(Ordering::SeqCst) {
                    me.beat(&on);
                    let until = Instant::now() + me.heartbeat;
                    while Instant::now() < until && !me.closing.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the cluster heartbeat");
        }
        let (me, on) = (self.clone(), plane.clone());
        let spawned = std::thread::Builder::new()
            .name("weir-cluster-standby".into())
            .spawn(move || {
                while !me.closing.load(Ordering::SeqCst) {
                    me.standbys.round(&me, &on);
                    let until = Instant::now() + standby::STANDBY_EVERY;
                    while Instant::now() < until && !me.closing.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the standby copies' thread");
        }
    }

    fn beat(&self, plane: &ControlPlane) {
        let member = Member {
            node: self.node.clone(),
            address: self
                .address
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            applied_offset: self.applied(),
            started_at: self.started_at,
            at: now_ms(),
            every_ms: self.heartbeat.as_millis() as u64,
            running: plane.topologies.running(),
            partitions: plane
                .topologies
                .running()
                .into_iter()
                .filter_map(|t| Some((t.clone(), plane.topologies.share(&t)?.partitions)))
                .collect(),
            lag: lag_of(plane),
            standbys: self.standbys.lag(),
        };
        let key = Key::Member(self.node.clone()).text();
        if let Err(e) = self.log.append(&[(key, Some(encode(&member)))]) {
            tracing::warn!(error = %e, "cannot send this node's heartbeat");
        }
    }

    /// Stops the threads and deletes this node's heartbeat (a clean
    /// leave).
    pub fn leave(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.tasks.quiet_all();
        let key = Key::Member(self.node.clone()).text();
        if let Err(e) = self.log.append(&[(key, None)]) {
            tracing::warn!(error = %e, "cannot delete this node's heartbeat");
        }
    }

    /// After the topologies stopped at shutdown (their last checkpoints
    /// committed their offsets): leaves their groups.
    pub fn leave_groups(&self) {
        self.tasks.leave_all();
    }

    fn progress(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn view(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Offset of the last record this node applied (-1: none).
    pub fn applied(&self) -> i64 {
        self.progress().applied
    }

    /// Waits up to `limit` for `done`; whether it came.
    fn wait(&self, limit: Duration, done: impl Fn(&Progress) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        let mut progress = self.progress();
        while !done(&progress) {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            progress = self
                .applied_changed
                .wait_timeout(progress, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// The reader thread: applies every record in order until shutdown.
    fn read_and_apply(&self, plane: &Arc<ControlPlane>, reader: weir_connectors::ControlReader) {
        let mut state = ApplyState::default();
        while !self.closing.load(Ordering::SeqCst) {
            match reader.poll(Duration::from_millis(200)) {
                ControlPoll::Record(record) => {
                    let outcome = apply::apply(
                        plane,
                        self,
                        &mut state,
                        record.key.as_deref(),
                        record.value.as_deref(),
                        self.max_module_bytes,
                    );
                    let outcome = match outcome {
                        Ok(applied) => {
                            self.remember(applied);
                            Ok(())
                        }
                        Err(error) => {
                            let key = record
                                .key
                                .as_deref()
                                .map(|k| {
                                    String::from_utf8_lossy(&k[..k.len().min(200)]).into_owned()
                                })
                                .unwrap_or_default();
                            tracing::warn!(
                                offset = record.offset,
                                key,
                                error,
                                "cannot apply a control record"
                            );
                            let mut view = self.view();
                            if view.problems.len() == KEPT_PROBLEMS {
                                view.problems.pop_front();
                            }
                            view.problems.push_back(ApplyProblem {
                                offset: record.offset,
                                key,
                                error: error.clone(),
                                at: now_ms(),
                            });
                            Err(error)
                        }
                    };
                    let mut progress = self.progress();
                    progress.applied = progress.applied.max(record.offset);
                    progress.outcomes.insert(record.offset, outcome);
                    while progress.outcomes.len() > KEPT_OUTCOMES {
                        progress.outcomes.pop_first();
                    }
                    drop(progress);
                    self.applied_changed.notify_all();
                }
                ControlPoll::AtEnd => {
                    let mut progress = self.progress();
                    if !progress.at_end {
                        progress.at_end = true;
                        drop(progress);
                        self.applied_changed.notify_all();
                    }
                }
                ControlPoll::Idle => {}
            }
        }
    }

    fn remember(&self, applied: Applied) {
        let mut view = self.view();
        match applied {
            Applied::Nothing => {}
            Applied::Manifest(id, chunks) => {
                view.manifests.insert(id, chunks);
            }
            Applied::ManifestGone(id) => {
                view.manifests.remove(&id);
            }
            Applied::Member(member) => {
                view.members.insert(member.node.clone(), member);
            }
            Applied::MemberGone(node) => {
                view.members.remove(&node);
            }
        }
    }

    /// Appends `records` and waits until this node applied the last one;
    /// answers its offset, or the error applying it gave.
    fn write(&self, records: Vec<(String, Option<Vec<u8>>)>) -> Result<i64, ClusterError> {
        let offset = self.log.append(&records)?;
        if !self.wait(APPLY_WAIT, |p| p.applied >= offset) {
            return Err(ClusterError::NotApplied {
                offset,
                waited_s: APPLY_WAIT.as_secs(),
            });
        }
        match self.progress().outcomes.get(&offset) {
            Some(Err(e)) => Err(ClusterError::Refused(e.clone())),
            _ => Ok(offset),
        }
    }

    /// `POST /v1/modules/{name}` on a node: validated and compiled here,
    /// then written as chunks and a manifest.
    pub fn push_module(
        &self,
        plane: &ControlPlane,
        name: &str,
        bytes: &[u8],
    ) -> Result<(Pushed, i64), ClusterError> {
        let version = match plane.registry.prepare(name, bytes)? {
            Prepared::Existing(v) => return Ok((Pushed::Existing(v), self.applied())),
            Prepared::Next(v) => v,
        };
        let digest = crate::registry::digest_of(bytes);
        let hex = digest.trim_start_matches("sha256:").to_string();
        let mut records = Vec::new();
        let chunks = bytes.chunks(self.chunk_bytes);
        let count = chunks.len() as u32;
        for (index, chunk) in chunks.enumerate() {
            let key = Key::Chunk {
                name: name.to_string(),
                version,
                hex: hex.clone(),
                index: index as u32,
            };
            records.push((key.text(), Some(chunk.to_vec())));
        }
        let manifest = Manifest {
            digest,
            size: bytes.len(),
            chunks: count,
            created_at: now_ms(),
        };
        let key = Key::Manifest {
            name: name.to_string(),
            version,
            hex,
        };
        records.push((key.text(), Some(encode(&manifest))));
        let offset = self.write(records)?;
        Ok((
            Pushed::Created(plane.registry.version(name, version)?),
            offset,
        ))
    }

    /// `DELETE /v1/modules/{name}/versions/{version}` on a node: refused
    /// here while a topology pins it, else tombstones for its manifest
    /// and chunks.
    pub fn delete_module(
        &self,
        plane: &ControlPlane,
        name: &str,
        version: u32,
    ) -> Result<(ModuleVersion, i64), ClusterError> {
        let meta = plane.registry.version(name, version)?;
        if let Some(topology) = plane.topologies.module_user(&meta.reference()) {
            return Err(RegistryError::InUse {
                module: meta.reference(),
                topology,
            }
            .into());
        }
        let hex = meta.digest.trim_start_matches("sha256:").to_string();
        let chunks = self
            .view()
            .manifests
            .get(&(name.to_string(), version))
            .map_or(0, |(_, n)| *n);
        let mut records: Vec<(String, Option<Vec<u8>>)> = (0..chunks)
            .map(|index| {
                let key = Key::Chunk {
                    name: name.to_string(),
                    version,
                    hex: hex.clone(),
                    index,
                };
                (key.text(), None)
            })
            .collect();
        let key = Key::Manifest {
            name: name.to_string(),
            version,
            hex,
        };
        records.push((key.text(), None));
        let offset = self.write(records)?;
        Ok((meta, offset))
    }

    /// `PUT /v1/topologies/{name}` on a node: validated here (operators
    /// instantiated), its module references pinned here, then written. A
    /// running topology takes it as an upgrade (`upgrade.rs`).
    pub fn apply_topology(
        &self,
        plane: &ControlPlane,
        name: &str,
        doc: TopologyDoc,
    ) -> Result<(TopologyRecord, bool, i64), ClusterError> {
        if doc.name != name {
            return Err(TopologiesError::NameMismatch {
                doc: doc.name,
                path: name.to_string(),
            }
            .into());
        }
        let mut problems = plane.topologies.validate(&doc);
        let now = now_ms();
        let live = self
            .view()
            .members
            .values()
            .filter(|m| alive(m, now))
            .count();
        problems.extend(standby::standby_problems(&doc, live.max(1), true));
        if problems
            .iter()
            .any(|p| p.severity == weir_topology::Severity::Error)
        {
            return Err(TopologiesError::Invalid(problems).into());
        }
        let created = match plane.topologies.status(name) {
            // A running topology is upgraded in place on every node
            // (`upgrade.rs`), unless what its group reads would change.
            Ok(s) if s.state.wants_running() || s.record.desired == DesiredState::Running => {
                if let Some(reason) = upgrade::refusal(&s.record.doc, &doc) {
                    return Err(ClusterError::UpgradeRefused {
                        topology: name.to_string(),
                        reason,
                    });
                }
                false
            }
            Ok(_) => false,
            Err(TopologiesError::NotFound(_)) => true,
            Err(e) => return Err(e.into()),
        };
        let modules = plane.topologies.resolve_pins(&doc)?;
        let entry = TopologyEntry { doc, modules };
        let offset = self.write(vec![(
            Key::Topology(name.to_string()).text(),
            Some(encode(&entry)),
        )])?;
        Ok((plane.topologies.record(name)?, created, offset))
    }

    /// Start or stop through the cluster: every node brings its copy of
    /// `name` to `desired`.
    pub fn set_desired(
        &self,
        plane: &ControlPlane,
        name: &str,
        desired: DesiredState,
    ) -> Result<i64, ClusterError> {
        plane.topologies.record(name)?;
        self.write(vec![(
            Key::Desired(name.to_string()).text(),
            Some(encode(&DesiredEntry { desired })),
        )])
    }

    /// `DELETE /v1/topologies/{name}` on a node: refused while it should
    /// run, else tombstones for its desired state and document.
    pub fn delete_topology(&self, plane: &ControlPlane, name: &str) -> Result<i64, ClusterError> {
        let status = plane.topologies.status(name)?;
        if status.state.wants_running() || status.record.desired == DesiredState::Running {
            return Err(TopologiesError::Running(name.to_string()).into());
        }
        self.write(vec![
            (Key::Desired(name.to_string()).text(), None),
            (Key::Topology(name.to_string()).text(), None),
        ])
    }

    /// `GET /v1/cluster`.
    pub fn status_json(&self) -> Value {
        let applied = self.applied();
        let now = now_ms();
        let view = self.view();
        let members: Vec<Value> = view
            .members
            .values()
            .map(|m| {
                json!({
                    "node": m.node,
                    "address": m.address,
                    "version": m.version,
                    "applied_offset": m.applied_offset,
                    "started_at": m.started_at,
                    "heartbeat_at": m.at,
                    "alive": alive(m, now),
                    "running": m.running,
                    "partitions": m.partitions,
                    "lag": m.lag,
                    "standbys": m.standbys,
                    "this_node": m.node == self.node,
                })
            })
            .collect();
        // Per topology, per topic, per partition: the node that holds it
        // and its lag there, from the alive members' heartbeats.
        let mut assignment: BTreeMap<&str, BTreeMap<&str, BTreeMap<i32, Value>>> = BTreeMap::new();
        for m in view.members.values().filter(|m| alive(m, now)) {
            for (topology, topics) in &m.partitions {
                for (topic, partitions) in topics {
                    let lag = m.lag.get(topology).and_then(|t| t.get(topic));
                    for &p in partitions {
                        assignment
                            .entry(topology)
                            .or_default()
                            .entry(topic)
                            .or_default()
                            .insert(
                                p,
                                json!({ "node": m.node, "lag": lag.and_then(|l| l.get(&p)), "standbys": [] }),
                            );
                    }
                }
            }
        }
        // The nodes that keep a standby copy of each held partition.
        for m in view.members.values().filter(|m| alive(m, now)) {
            for (topology, copies) in &m.standbys {
                let Some(topics) = assignment.get_mut(topology.as_str()) else {
                    continue;
                };
                for held in topics.values_mut() {
                    for (p, lag) in copies {
                        if let Some(Value::Array(standbys)) =
                            held.get_mut(p).and_then(|at| at.get_mut("standbys"))
                        {
                            standbys.push(json!({ "node": m.node, "lag": lag }));
                        }
                    }
                }
            }
        }
        let problems: Vec<Value> = view
            .problems
            .iter()
            .map(|p| json!({ "offset": p.offset, "key": p.key, "error": p.error, "at": p.at }))
            .collect();
        // How this node's jobs followed their assignments: started on one,
        // or moved while they ran.
        let moves: BTreeMap<String, Value> = self
            .tasks
            .moves()
            .into_iter()
            .map(|(t, m)| {
                let moved = json!({
                    "job_starts": m.starts,
                    "while_running": m.live,
                    "restored_records": m.restored_records,
                    "take_over_ms": m.take_over_ms,
                });
                (t, moved)
            })
            .collect();
        json!({
            "cluster": self.name,
            "topic": self.log.topic(),
            "node": self.node,
            "applied_offset": applied,
            "members": members,
            "assignment": assignment,
            "problems": problems,
            "moves": moves,
        })
    }
}
