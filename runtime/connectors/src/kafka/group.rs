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
//! - [`Handoff`]: a source's last checkpointed position, committed to its
//!   offsets group (`weir.<topology>.<source>`) once the job that read it
//!   has stopped after a final checkpoint: the next owner of a partition
//!   starts there (`KafkaSource` takes the further of its own checkpoint
//!   and the group's offset).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError as RdError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::config::{ErrorLog, KafkaError, LOOKUP_TIMEOUT, base_config};

/// Partitions by topic.
pub type Assignment = BTreeMap<String, BTreeSet<i32>>;

/// What a member calls with its new assignment; it may take its time
/// (a revocation waits for it).
pub type OnAssignment = Box<dyn Fn(&Assignment) + Send + Sync>;

struct MemberContext {
    errors: ErrorLog,
    on_change: OnAssignment,
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
            (self.on_change)(&now);
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
            (self.on_change)(&assignment_of(&now));
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
        let context = MemberContext {
            errors: ErrorLog::default(),
            on_change,
            leaving: leaving.clone(),
        };
        let consumer: BaseConsumer<MemberContext> = config
            .create_with_context(context)
            .map_err(|e| KafkaError::Config(e.to_string()))?;
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

/// A source's positions as its last checkpoint recorded them, to commit to
/// its offsets group when the job stopped after a final checkpoint.
#[derive(Debug)]
pub struct Handoff {
    pub(crate) brokers: String,
    pub(crate) group: String,
    pub(crate) topic: String,
    /// The position the source last reported (at its last barrier).
    pub(crate) last: Mutex<BTreeMap<u32, u64>>,
}

impl Handoff {
    /// Commits the last reported offsets to the group (synchronously),
    /// each only where it is beyond what the group has.
    pub fn commit(&self) -> Result<(), KafkaError> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if last.is_empty() {
            return Ok(());
        }
        let mut config = base_config(&self.brokers, &BTreeMap::new())?;
        config
            .set("group.id", &self.group)
            .set("enable.auto.commit", "false");
        let consumer: BaseConsumer = config
            .create()
            .map_err(|e| KafkaError::Config(e.to_string()))?;
        let unreachable = |e: RdError| KafkaError::Unreachable {
            brokers: self.brokers.clone(),
            timeout_ms: LOOKUP_TIMEOUT.as_millis() as u64,
            reason: e.to_string(),
        };
        let mut asked = TopicPartitionList::new();
        for &p in last.keys() {
            asked.add_partition(&self.topic, p as i32);
        }
        let have = consumer
            .committed_offsets(asked, LOOKUP_TIMEOUT)
            .map_err(unreachable)?;
        let mut list = TopicPartitionList::new();
        for (&p, &next) in &last {
            let behind = match have
                .find_partition(&self.topic, p as i32)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) => o < next as i64,
                _ => true,
            };
            if behind {
                list.add_partition_offset(&self.topic, p as i32, Offset::Offset(next as i64))
                    .map_err(|e| KafkaError::Config(e.to_string()))?;
            }
        }
        if list.count() > 0 {
            consumer
                .commit(&list, CommitMode::Sync)
                .map_err(unreachable)?;
        }
        tracing::debug!(kafka.topic = %self.topic, group = %self.group, partitions = list.count(), "handed over source offsets");
        Ok(())
    }
}
