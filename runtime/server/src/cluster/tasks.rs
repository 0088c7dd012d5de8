//! Which partitions of a running topology this node reads: one consumer
//! group per topology, `weir.<cluster>.<topology>` (classic protocol,
//! cooperative-sticky), one [`GroupMember`] per topology on each node,
//! subscribed to the topology's lead input topic; the node reads the same
//! partition numbers of its other inputs and repartition topics
//! (`repartition.rs`), so co-partitioned inputs share a task.
//! A change of assignment moves only the partitions that move, while the
//! job runs on the others ([`move_live`], with the connectors'
//! `LiveShare`):
//! - **revoked** partitions: their keys' timers stop firing here, the
//!   sources stop reading them, then a checkpoint is taken, whose
//!   transaction commits how far they were read (and their last state
//!   changes) to the group; only then does the revocation return, so
//!   another node starts a partition only after this one let it go, and
//!   from exactly there;
//! - **assigned** partitions: their state is restored from the
//!   changelogs into the running job's database, their keys become held
//!   (instances load their timers and drop what they cached of them),
//!   and the sources start reading them where the group's offsets say,
//!   their event time not below what the last owner had reached.
//!
//! When that cannot be done (the job is not running, or a step fails), the
//! job is stopped (a final checkpoint commits what it read) and started
//! again on the new partitions, as a first start is.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use weir_connectors::{Assignment, GroupFence, GroupMember, KafkaShare, LiveShare, OnAssignment};
use weir_state::StateDb;

use super::{changelog, repartition};
use crate::ControlPlane;

/// `session.timeout.ms` of the members: a node that goes away loses its
/// partitions after this long.
pub const SESSION_TIMEOUT: Duration = Duration::from_millis(6000);
/// How long a start waits for the group's first assignment.
const FIRST_ASSIGNMENT_WAIT: Duration = Duration::from_secs(60);
/// How long a change of partitions waits for the running job's sources
/// to read the new set (they look at every pull, at least every 200 ms).
const READ_CHANGE_WAIT: Duration = Duration::from_secs(20);

/// How a node's job of one topology followed its assignments.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Moves {
    /// Job starts on an assignment (the first one included).
    pub starts: u64,
    /// Changes of assignment made while the job ran on.
    pub live: u64,
    /// Of those: changelog records restored for partitions taken over,
    /// and the time from the change to the sources reading them.
    pub restored_records: u64,
    pub take_over_ms: u64,
}

/// The outcome of the first start on an assignment.
type First = Arc<(Mutex<Option<Result<(), String>>>, Condvar)>;

/// The group members of this node, by topology.
#[derive(Default)]
pub(super) struct Tasks {
    members: Mutex<HashMap<String, GroupMember>>,
    moves: Arc<Mutex<HashMap<String, Moves>>>,
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasks").finish_non_exhaustive()
    }
}

impl Tasks {
    fn members(&self) -> MutexGuard<'_, HashMap<String, GroupMember>> {
        self.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How each topology's job followed its assignments on this node.
    pub fn moves(&self) -> HashMap<String, Moves> {
        self.moves.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs topology `name` on the partitions its group gives this node:
    /// joins the group and waits for the first assignment's start.
    pub fn run(
        &self,
        plane: &Arc<ControlPlane>,
        cluster: &str,
        node: &str,
        name: &str,
    ) -> Result<(), String> {
        if self.members().contains_key(name) {
            // A member already: the job runs on its assignment, or failed.
            let status = plane.topologies.status(name).map_err(|e| e.to_string())?;
            if !status.state.wants_running() {
                plane
                    .topologies
                    .start(name, None)
                    .map_err(|e| e.to_string())?;
            }
            return Ok(());
        }
        let record = plane.topologies.record(name).map_err(|e| e.to_string())?;
        let sources: Vec<_> = record
            .doc
            .sources
            .iter()
            .filter_map(|s| s.kafka.as_ref())
            .collect();
        let Some(first_source) = sources.first() else {
            // Nothing to share out.
            return plane
                .topologies
                .start(name, None)
                .map_err(|e| e.to_string());
        };
        let brokers = first_source
            .brokers
            .clone()
            .or_else(|| plane.config.kafka_brokers.clone())
            .ok_or("no Kafka brokers for the topology's group: give --kafka-brokers")?;
        let group = format!("weir.{cluster}.{name}");
        // Co-partitioned inputs and repartition topics: the group assigns
        // the lead topic's partitions, the others follow them.
        let rewritten = repartition::rewrite(&record.doc, &group)?;
        let layout = repartition::prepare(&record.doc, &rewritten, &brokers)?;
        let purge: BTreeSet<String> = rewritten.topics.into_values().collect();
        let lead = vec![layout.lead.clone()];
        let first: First = Arc::default();
        let (weak, topology, me, told, moves, at) = (
            Arc::downgrade(plane),
            name.to_string(),
            node.to_string(),
            first.clone(),
            self.moves.clone(),
            brokers.clone(),
        );
        let live = LiveShare::new(Assignment::new());
        let on_change: OnAssignment = Box::new(
            move |assignment: &Assignment, fence: &GroupFence| {
                let Some(plane) = weak.upgrade() else { return };
                let share = KafkaShare {
                    partitions: layout.expand(assignment),
                    node: me.clone(),
                    fence: fence.clone(),
                    purge: purge.clone(),
                    live: live.clone(),
                };
                let outcome = reassign(&plane, &topology, share, &at, &moves);
                if let Err(e) = &outcome {
                    tracing::error!(topology.name = %topology, error = %e, "cannot run the topology on its new partitions");
                }
                let mut slot = told.0.lock().unwrap_or_else(|p| p.into_inner());
                if slot.is_none() {
                    *slot = Some(outcome);
                    told.1.notify_all();
                }
            },
        );
        let member = GroupMember::join(&brokers, &group, &lead, SESSION_TIMEOUT, on_change)
            .map_err(|e| format!("cannot join group {group}: {e}"))?;
        self.members().insert(name.to_string(), member);
        let deadline = Instant::now() + FIRST_ASSIGNMENT_WAIT;
        let mut slot = first.0.lock().unwrap_or_else(|p| p.into_inner());
        while slot.is_none() {
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "group {group} gave this node no assignment within {} s: check the brokers",
                    FIRST_ASSIGNMENT_WAIT.as_secs()
                ));
            }
            slot = first
                .1
                .wait_timeout(slot, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        slot.clone().unwrap_or(Ok(()))
    }

    /// Stops topology `name` on this node (its last checkpoint commits
    /// its offsets to the group) and leaves its group.
    pub fn stop(&self, plane: &ControlPlane, name: &str) -> Result<(), String> {
        let member = self.members().remove(name);
        if let Some(m) = &member {
            m.quiet();
        }
        let status = plane.topologies.status(name).map_err(|e| e.to_string())?;
        let outcome = if status.state.wants_running()
            || status.record.desired == crate::topologies::DesiredState::Running
        {
            plane
                .topologies
                .stop(name, None)
                .map(|_| ())
                .map_err(|e| e.to_string())
        } else {
            Ok(())
        };
        if let Some(m) = member {
            m.leave();
        }
        plane.topologies.set_share(name, None);
        outcome
    }

    /// At shutdown, after the topologies stopped (their last checkpoints
    /// committed their offsets): leaves every group.
    pub fn leave_all(&self) {
        let members: Vec<(String, GroupMember)> = self.members().drain().collect();
        for (_, member) in members {
            member.quiet();
            member.leave();
        }
    }

    /// Quiets every member (shutdown begins: no restart on a new
    /// assignment).
    pub fn quiet_all(&self) {
        for member in self.members().values() {
            member.quiet();
        }
    }
}

/// Runs `name` on `share`: moves the running job's partitions while it
/// runs, or (re)starts it on them.
fn reassign(
    plane: &ControlPlane,
    name: &str,
    share: KafkaShare,
    brokers: &str,
    moves: &Mutex<HashMap<String, Moves>>,
) -> Result<(), String> {
    let running = plane
        .topologies
        .status(name)
        .is_ok_and(|s| s.state.wants_running());
    let current = plane.topologies.share(name);
    if running && current.as_ref() == Some(&share) {
        return Ok(());
    }
    tracing::info!(topology.name = name, partitions = ?share.partitions, "the topology's partitions on this node changed");
    if running && let Some(current) = current {
        let started = Instant::now();
        match move_live(plane, name, &current, &share, brokers) {
            Ok(restored) => {
                tracing::info!(
                    topology.name = name,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "the running job moved to its new partitions"
                );
                plane.topologies.set_share(name, Some(share));
                let took = started.elapsed().as_millis() as u64;
                note(moves, name, |m| {
                    m.live += 1;
                    if let Some(records) = restored {
                        m.restored_records += records;
                        m.take_over_ms += took;
                    }
                });
                return Ok(());
            }
            Err(e) => tracing::warn!(
                topology.name = name,
                error = %e,
                "cannot move the running job's partitions: restarting it on the new ones"
            ),
        }
    }
    plane.topologies.set_share(name, Some(share.clone()));
    if running {
        plane
            .topologies
            .stop(name, None)
            .map_err(|e| e.to_string())?;
    }
    share.live.reset(share.partitions.clone());
    note(moves, name, |m| m.starts += 1);
    plane
        .topologies
        .start(name, None)
        .map_err(|e| e.to_string())
}

/// Applies `change` to topology `name`'s [`Moves`].
fn note(moves: &Mutex<HashMap<String, Moves>>, name: &str, change: impl FnOnce(&mut Moves)) {
    change(
        moves
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_default(),
    );
}

/// The partitions of each topic in both.
fn common(a: &Assignment, b: &Assignment) -> Assignment {
    a.iter()
        .filter_map(|(topic, ps)| {
            let both: BTreeSet<i32> = ps.intersection(b.get(topic)?).copied().collect();
            (!both.is_empty()).then(|| (topic.clone(), both))
        })
        .collect()
}

/// Moves `name`'s running job from the partitions of `from` to those of
/// `to` (see the module doc): first it lets go of those it loses, then
/// takes those it gains; answers the changelog records restored when it
/// gained any.
fn move_live(
    plane: &ControlPlane,
    name: &str,
    from: &KafkaShare,
    to: &KafkaShare,
    brokers: &str,
) -> Result<Option<u64>, String> {
    let record = plane.topologies.record(name).map_err(|e| e.to_string())?;
    let doc = repartition::rewrite(&record.doc, to.fence.group())?.doc;
    let lead = &super::lead_input(&doc)
        .ok_or("the topology reads no Kafka topic")?
        .topic;
    let lead_of = |a: &Assignment| changelog::held_of(a, lead);
    // The running job's database (this handle shares its file's store).
    let db = StateDb::open(&plane.topologies.state_dir(name)).map_err(|e| e.to_string())?;
    let live = &to.live;
    let kept = common(&from.partitions, &to.partitions);
    if kept != from.partitions {
        changelog::let_go(&doc, brokers, to, &db, &lead_of(&kept))?;
        let epoch = live.set_reads(kept.clone(), BTreeMap::new());
        if !live.wait_read(epoch, READ_CHANGE_WAIT) {
            return Err(format!(
                "its sources did not stop reading the revoked partitions within {} s",
                READ_CHANGE_WAIT.as_secs()
            ));
        }
        // Its transaction commits how far they were read.
        plane
            .topologies
            .checkpoint_now(name)
            .map_err(|e| e.to_string())?;
        live.set_owned(kept.clone());
    }
    if kept != to.partitions {
        let added: BTreeSet<u32> = lead_of(&to.partitions)
            .difference(&lead_of(&kept))
            .copied()
            .collect();
        let (floors, records) = changelog::take_over(&doc, brokers, to, &db, &added)?;
        live.set_owned(to.partitions.clone());
        let epoch = live.set_reads(to.partitions.clone(), floors);
        if !live.wait_read(epoch, READ_CHANGE_WAIT) {
            return Err(format!(
                "its sources did not start reading the assigned partitions within {} s",
                READ_CHANGE_WAIT.as_secs()
            ));
        }
        return Ok(Some(records));
    }
    Ok(None)
}
