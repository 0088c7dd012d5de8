//! Sharing a topology's input partitions among a cluster's nodes.
//!
//! - [`GroupMember`]: one consumer per topology per node in the group
//!   `weir.<cluster>.<topology>` (classic protocol, `cooperative-sticky`),
//!   subscribed to the topology's input topics. It reads nothing (its
//!   partitions are paused); it is there for the assignment, which it
//!   hands to a callback each time it changes. Before partitions are
//!   revoked the callback runs with what stays, and the revocation waits
//!   for it, so the node stops reading them (and hands their offsets over)
//!   before another node starts.
//! - [`GroupFence`]: the member's current group metadata (member id and
//!   generation) for the node's transactions, which commit the input
//!   offsets to this group (`send_offsets_to_transaction`): the broker
//!   refuses them from a member of an older generation, so a node the
//!   group has moved on from (a zombie) cannot commit.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance,
};
use rdkafka::topic_partition_list::TopicPartitionList;

use super::config::{ErrorLog, KafkaError, base_config};

/// Partitions by topic.
pub type Assignment = BTreeMap<String, BTreeSet<i32>>;

/// What a member calls with its new assignment and its fence; it may
/// take its time (a revocation waits for it).
pub type OnAssignment = Box<dyn Fn(&Assignment, &GroupFence) + Send + Sync>;

/// A handle on a node's membership in a topology's group, for the
/// transactions that commit input offsets to the group: it answers the
/// member's group metadata as it is at that moment (its generation).
/// It does not keep the member alive: once the member left, it answers
/// an error.
#[derive(Clone)]
pub struct GroupFence {
    group: String,
    consumer: Arc<OnceLock<Weak<BaseConsumer<MemberContext>>>>,
}

impl GroupFence {
    /// The group (`weir.<cluster>.<topology>`).
    pub fn group(&self) -> &str {
        &self.group
    }

    /// A fence of no member (it answers an error), for tests.
    #[cfg(test)]
    pub(crate) fn detached(group: &str) -> GroupFence {
        GroupFence {
            group: group.to_string(),
            consumer: Arc::default(),
        }
    }

    /// The member's group metadata now, for `send_offsets_to_transaction`.
    pub fn metadata(&self) -> Result<ConsumerGroupMetadata, KafkaError> {
        let left = || {
            KafkaError::Config(format!(
                "this node is no longer a member of group {}: it cannot commit the group's offsets",
                self.group
            ))
        };
        let consumer = self
            .consumer
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(left)?;
        consumer.group_metadata().ok_or_else(left)
    }
}

impl PartialEq for GroupFence {
    /// The same membership.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.consumer, &other.consumer)
    }
}

impl Eq for GroupFence {}

impl std::fmt::Debug for GroupFence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupFence")
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

pub(crate) struct MemberContext {
    errors: ErrorLog,
    on_change: OnAssignment,
    fence: GroupFence,
    /// Set when the node leaves: no assignment is passed on any more.
    leaving: Arc<AtomicBool>,
}

fn assignment_of(list: &TopicPartitionList) -> Assignment {
    let mut out = Assignment::new();
    for e in list.elements() {
        out.entry(e.topic().to_string())
            .or_default()
            .insert(e.partition());
    }
    out
}

super::config::logged_client_context!(MemberContext);

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(revoked) = rebalance
            && !self.leaving.load(Ordering::SeqCst)
        {
            let mut now = consumer
                .assignment()
                .map(|a| assignment_of(&a))
                .unwrap_or_default();
            for (topic, partitions) in assignment_of(revoked) {
                if let Some(held) = now.get_mut(&topic) {
                    held.retain(|p| !partitions.contains(p));
                }
            }
            (self.on_change)(&now, &self.fence);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance
            && !self.leaving.load(Ordering::SeqCst)
            && let Ok(now) = consumer.assignment()
        {
            // It only holds the assignment: nothing is fetched.
            if let Err(e) = consumer.pause(&now) {
                tracing::warn!(error = %e, "cannot pause the group member's partitions");
            }
            (self.on_change)(&assignment_of(&now), &self.fence);
        }
    }
}

/// A node's membership in a topology's group. Dropping it without
/// [`GroupMember::leave`] leaves the group too.
pub struct GroupMember {
    leaving: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for GroupMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupMember").finish_non_exhaustive()
    }
}

impl GroupMember {
    /// Joins `group` on `brokers`, subscribed to `topics`; `on_change`
    /// gets every new assignment (on the member's own thread).
    pub fn join(
        brokers: &str,
        group: &str,
        topics: &[String],
        session_timeout: Duration,
        on_change: OnAssignment,
    ) -> Result<GroupMember, KafkaError> {
        let mut config = base_config(brokers, &BTreeMap::new())?;
        config
            .set("group.id", group)
            .set("group.protocol", "classic")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set(
                "session.timeout.ms",
                session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (session_timeout.as_millis() / 3).max(100).to_string(),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        let leaving = Arc::new(AtomicBool::new(false));
        let fence = GroupFence {
            group: group.to_string(),
            consumer: Arc::default(),
        };
        let context = MemberContext {
            errors: ErrorLog::default(),
            on_change,
            fence: fence.clone(),
            leaving: leaving.clone(),
        };
        let consumer: Arc<BaseConsumer<MemberContext>> = Arc::new(
            config
                .create_with_context(context)
                .map_err(|e| KafkaError::Config(e.to_string()))?,
        );
        // Before anything is polled: the first assignment's fence works.
        let _ = fence.consumer.set(Arc::downgrade(&consumer));
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|e| KafkaError::Config(e.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("weir-group-member".into())
            .spawn(move || {
                while !stopping.load(Ordering::SeqCst) {
                    // Records fetched before a pause are dropped: this
                    // consumer only holds the assignment.
                    let _ = consumer.poll(Duration::from_millis(100));
                }
                consumer.unsubscribe();
                drop(consumer);
            })
            .map_err(|e| KafkaError::Config(format!("cannot start a group member: {e}")))?;
        Ok(GroupMember {
            leaving,
            stop,
            thread: Some(thread),
        })
    }

    /// Passes no assignment on from now on (the node is stopping what it
    /// runs).
    pub fn quiet(&self) {
        self.leaving.store(true, Ordering::SeqCst);
    }

    /// Leaves the group without passing on the last revocation (the
    /// caller stopped what it ran already).
    pub fn leave(mut self) {
        self.leaving.store(true, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for GroupMember {
    fn drop(&mut self) {
        self.leaving.store(true, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
    }
}
