//! Which partitions of a running topology this node reads: one consumer
//! group per topology, `weir.<cluster>.<topology>` (classic protocol,
//! cooperative-sticky), one [`GroupMember`] per topology on each node,
//! subscribed to the topology's lead input topic; the node reads the same
//! partition numbers of its other inputs and repartition topics
//! (`repartition.rs`), so co-partitioned inputs share a task.
//! Each time the node's assignment changes, its job is stopped (a final
//! checkpoint, whose transaction commits the offsets of what it read to
//! the group) and started again on the new partitions; a revocation waits
//! for that, so another node starts a partition only after this one let
//! it go.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use weir_connectors::{Assignment, GroupFence, GroupMember, KafkaShare, OnAssignment};

use super::repartition;
use crate::ControlPlane;

/// `session.timeout.ms` of the members: a node that goes away loses its
/// partitions after this long.
pub const SESSION_TIMEOUT: Duration = Duration::from_millis(6000);
/// How long a start waits for the group's first assignment.
const FIRST_ASSIGNMENT_WAIT: Duration = Duration::from_secs(60);

/// The outcome of the first start on an assignment.
type First = Arc<(Mutex<Option<Result<(), String>>>, Condvar)>;

/// The group members of this node, by topology.
#[derive(Default)]
pub(super) struct Tasks {
    members: Mutex<HashMap<String, GroupMember>>,
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
        let (weak, topology, me, told) = (
            Arc::downgrade(plane),
            name.to_string(),
            node.to_string(),
            first.clone(),
        );
        let on_change: OnAssignment = Box::new(
            move |assignment: &Assignment, fence: &GroupFence| {
                let Some(plane) = weak.upgrade() else { return };
                let share = KafkaShare {
                    partitions: layout.expand(assignment),
                    node: me.clone(),
                    fence: fence.clone(),
                    purge: purge.clone(),
                };
                let outcome = reassign(&plane, &topology, share);
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

/// Restarts `name` on `share` (unless it already runs on it).
fn reassign(plane: &ControlPlane, name: &str, share: KafkaShare) -> Result<(), String> {
    let running = plane
        .topologies
        .status(name)
        .is_ok_and(|s| s.state.wants_running());
    if running && plane.topologies.share(name).as_ref() == Some(&share) {
        return Ok(());
    }
    tracing::info!(topology.name = name, partitions = ?share.partitions, "the topology's partitions on this node changed");
    plane.topologies.set_share(name, Some(share));
    if running {
        plane
            .topologies
            .stop(name, None)
            .map_err(|e| e.to_string())?;
    }
    plane
        .topologies
        .start(name, None)
        .map_err(|e| e.to_string())
}
