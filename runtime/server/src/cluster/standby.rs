//! Standby replicas (`cluster: { standbys: N }` in a topology document):
//! each node keeps warm copies of partitions it does not hold, so that the
//! node that takes one over restores only the changelog's tail (see
//! `docs/cluster.md`, "Standbys").
//!
//! - **Who keeps which copy** is decided without an assignor of Weir's
//!   own, from what every node knows already: the live members that run
//!   the topology and each partition's holder, both from the heartbeats
//!   (as `GET /v1/cluster` shows them). [`standby_partitions`] is a plain
//!   function of those: partition `p`'s standbys are the next `N` of the
//!   other runners in node-id order, starting at `p`'s place in that
//!   order, so copies spread over the nodes and every node computes the
//!   same answer. The group's assignor does not know of them: a failed
//!   node's partitions go where cooperative-sticky puts them, which is a
//!   standby only by chance with more than two nodes (with two, always).
//! - **Keeping a copy** ([`Standbys::round`], every second on its own
//!   thread): each standby partition's changelog is read `read_committed`
//!   from the offset the node's database recorded for it to its end, into
//!   that database (the one the topology's job has open: `StateDb::open`
//!   shares it), with the new offset; its timers are parked (they must
//!   not fire here). A write lands only if the partition is not held here
//!   now and its recorded offset is still the one the read started from
//!   (`StateDb::apply_standby`), under the database's changelog lock,
//!   which a restore holds throughout: a copy never overwrites what the
//!   job's own restore or checkpoint wrote.
//! - When the node is given one of those partitions, the job's restore
//!   (`changelog.rs`) starts from the copy's recorded offset.
//! - Each node's heartbeat carries its standby partitions and how many
//!   records each was behind the changelog's end at its last look (`GET
//!   /v1/cluster`, `standbys`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use weir_connectors::{ChangelogTopic, topic_partitions};
use weir_state::{RestoreBatch, StateDb};
use weir_topology::{Problem, Severity, TopologyDoc};

use super::changelog::{changelog_topic, read_changelog, recorded_from};
use super::{Cluster, alive, lead_input};
use crate::ControlPlane;

/// How often a node brings its standby copies up to the changelogs' end.
pub const STANDBY_EVERY: Duration = Duration::from_secs(1);

/// The standbys `doc` asks for.
pub(crate) fn standbys_of(doc: &TopologyDoc) -> u32 {
    doc.cluster.and_then(|c| c.standbys).unwrap_or(0)
}

/// What is wrong with `doc`'s standbys on a cluster of `nodes` live nodes
/// (1: a single node): a standby lives on another node than its
/// partition's holder, so there can be at most `nodes - 1`.
pub(crate) fn standby_problems(doc: &TopologyDoc, nodes: usize, cluster: bool) -> Vec<Problem> {
    let standbys = standbys_of(doc);
    if standbys == 0 || (standbys as usize) < nodes {
        return Vec::new();
    }
    let message = if cluster {
        format!(
            "{standbys} standbys need {} nodes (a standby lives on another node than its \
             partition's holder) and the cluster has {nodes} live: set at most {} or start more \
             nodes first",
            u64::from(standbys) + 1,
            nodes.saturating_sub(1)
        )
    } else {
        format!(
            "{standbys} standbys need a cluster (`weir serve --cluster`): a single node has no \
             other node to keep them on; remove `cluster.standbys` or set it to 0"
        )
    };
    vec![Problem {
        path: "cluster.standbys".into(),
        message,
        severity: Severity::Error,
    }]
}

/// The partitions of which node `me` keeps a standby copy: for each
/// partition with a known holder, its `standbys` standbys are the runners
/// other than the holder, in node-id order, starting at the partition's
/// number (mod their count). `holders`: partition → the node that holds
/// it; `runners`: the live nodes running the topology.
pub(crate) fn standby_partitions(
    me: &str,
    holders: &BTreeMap<u32, String>,
    runners: &BTreeSet<String>,
    standbys: usize,
) -> BTreeSet<u32> {
    let mut mine = BTreeSet::new();
    for (&p, holder) in holders {
        let others: Vec<&String> = runners.iter().filter(|n| *n != holder).collect();
        if others.is_empty() {
            continue;
        }
        let first = p as usize % others.len();
        let chosen = (0..standbys.min(others.len())).map(|i| others[(first + i) % others.len()]);
        if chosen.into_iter().any(|n| n == me) {
            mine.insert(p);
        }
    }
    mine
}

/// One topology's standby work on this node.
#[derive(Debug)]
struct Target {
    name: String,
    doc: TopologyDoc,
    brokers: String,
    /// The lead input topic, which the changelogs are partitioned like.
    input: String,
    group: String,
    /// Partitions to keep a copy of (none of them held here).
    partitions: BTreeSet<u32>,
}

/// This node's standby copies.
#[derive(Debug, Default)]
pub(super) struct Standbys {
    /// Per topology, per standby partition: records it was behind the
    /// changelogs' end at its last look.
    lag: Mutex<BTreeMap<String, BTreeMap<i32, u64>>>,
    /// Input topics' partition counts.
    counts: Mutex<HashMap<String, u32>>,
    /// Changelogs known to exist, by topic.
    logs: Mutex<HashMap<String, Arc<ChangelogTopic>>>,
    /// The last error of each topology, logged once until it changes.
    errors: Mutex<HashMap<String, String>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Standbys {
    /// Per topology, this node's standby partitions and their lag, for
    /// its heartbeat.
    pub fn lag(&self) -> BTreeMap<String, BTreeMap<i32, u64>> {
        locked(&self.lag).clone()
    }

    /// Brings every standby copy of this node up to its changelogs' end
    /// once.
    pub fn round(&self, cluster: &Cluster, plane: &ControlPlane) {
        let running = plane.topologies.running();
        locked(&self.lag).retain(|name, _| running.contains(name));
        for name in running {
            let outcome = self
                .target(cluster, plane, &name)
                .and_then(|target| match target {
                    Some(target) => self.keep(plane, &target),
                    None => {
                        locked(&self.lag).remove(&name);
                        Ok(())
                    }
                });
            let mut errors = locked(&self.errors);
            match outcome {
                Ok(()) => {
                    errors.remove(&name);
                }
                Err(e) => {
                    if errors.get(&name) != Some(&e) {
                        tracing::warn!(topology.name = %name, error = %e, "cannot keep the standby copies");
                        errors.insert(name, e);
                    }
                }
            }
        }
    }

    fn partitions_of(&self, brokers: &str, topic: &str) -> Result<u32, String> {
        if let Some(&n) = locked(&self.counts).get(topic) {
            return Ok(n);
        }
        let n = topic_partitions(brokers, topic).map_err(|e| e.to_string())?;
        locked(&self.counts).insert(topic.to_string(), n);
        Ok(n)
    }

    /// What topology `name` asks of this node: `None` without standbys,
    /// or while it does not run here on an assignment.
    fn target(
        &self,
        cluster: &Cluster,
        plane: &ControlPlane,
        name: &str,
    ) -> Result<Option<Target>, String> {
        let record = plane.topologies.record(name).map_err(|e| e.to_string())?;
        let standbys = standbys_of(&record.doc) as usize;
        let Some(share) = plane.topologies.share(name) else {
            return Ok(None);
        };
        let Some(first) = lead_input(&record.doc) else {
            return Ok(None);
        };
        if standbys == 0 {
            return Ok(None);
        }
        let brokers = first
            .brokers
            .clone()
            .unwrap_or_else(|| cluster.brokers.clone());
        let input = first.topic.clone();
        let held: BTreeSet<i32> = share.partitions.get(&input).cloned().unwrap_or_default();
        let mut holders: BTreeMap<u32, String> = BTreeMap::new();
        let mut runners: BTreeSet<String> = BTreeSet::from([cluster.node.clone()]);
        {
            let now = weir_types::now_ms();
            let view = cluster.view();
            for m in view.members.values().filter(|m| alive(m, now)) {
                if m.node == cluster.node {
                    continue;
                }
                if m.running.iter().any(|t| t == name) {
                    runners.insert(m.node.clone());
                }
                let parts = m.partitions.get(name).and_then(|t| t.get(&input));
                for &p in parts.into_iter().flatten() {
                    holders.insert(p as u32, m.node.clone());
                }
            }
        }
        // This node's own assignment is the truth; a heartbeat may be old.
        for &p in &held {
            holders.insert(p as u32, cluster.node.clone());
        }
        let mut partitions = standby_partitions(&cluster.node, &holders, &runners, standbys);
        partitions.retain(|p| !held.contains(&(*p as i32)));
        Ok(Some(Target {
            name: name.to_string(),
            doc: record.doc,
            brokers,
            input,
            group: share.fence.group().to_string(),
            partitions,
        }))
    }

    /// Brings `target`'s standby partitions up to their changelogs' end.
    fn keep(&self, plane: &ControlPlane, target: &Target) -> Result<(), String> {
        let mut lag: BTreeMap<i32, u64> =
            target.partitions.iter().map(|&p| (p as i32, 0)).collect();
        let dir = plane.topologies.state_dir(&target.name);
        if target.partitions.is_empty() || !dir.join("state.redb").is_file() {
            locked(&self.lag).insert(target.name.clone(), lag);
            return Ok(());
        }
        let partitions = self.partitions_of(&target.brokers, &target.input)?;
        let db = StateDb::open(&dir).map_err(|e| e.to_string())?;
        for operator in &target.doc.operators {
            let Some(log) = self.log(target, &operator.name, partitions)? else {
                continue;
            };
            let from = recorded_from(&db, &operator.name, &target.partitions)?;
            let held_now = || -> bool {
                let share = plane.topologies.share(&target.name);
                let held = share.as_ref().and_then(|s| s.partitions.get(&target.input));
                held.is_none_or(|held| {
                    target
                        .partitions
                        .iter()
                        .any(|p| held.contains(&(*p as i32)))
                })
            };
            let read = read_changelog(
                &log,
                &operator.name,
                &from,
                &RestoreBatch::standby(&target.name, &operator.name),
                &mut |batch, offsets| {
                    let _applying = db.changelog_lock();
                    if held_now() {
                        return Ok(false);
                    }
                    db.apply_standby(batch, &from, offsets)
                        .map_err(|e| e.to_string())
                },
            )?;
            let Some((_, ends)) = read else {
                // A partition moved here meanwhile: the next round sees it.
                return Ok(());
            };
            for (p, end) in ends {
                let behind = end.saturating_sub(from.get(&p).copied().flatten().unwrap_or(0));
                *lag.entry(p as i32).or_default() += behind;
            }
        }
        locked(&self.lag).insert(target.name.clone(), lag);
        Ok(())
    }

    /// The changelog of `operator` of `target`, once it exists.
    fn log(
        &self,
        target: &Target,
        operator: &str,
        partitions: u32,
    ) -> Result<Option<Arc<ChangelogTopic>>, String> {
        let topic = changelog_topic(&target.group, operator);
        if let Some(log) = locked(&self.logs).get(&topic) {
            return Ok(Some(log.clone()));
        }
        let Some(log) = ChangelogTopic::open(&target.brokers, &topic, partitions, false)
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        let log = Arc::new(log);
        locked(&self.logs).insert(topic, log.clone());
        Ok(Some(log))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(nodes: &[&str]) -> BTreeSet<String> {
        nodes.iter().map(|n| n.to_string()).collect()
    }

    fn holders(of: &[(u32, &str)]) -> BTreeMap<u32, String> {
        of.iter().map(|&(p, n)| (p, n.to_string())).collect()
    }

    #[test]
    fn each_partition_has_its_standbys_on_other_nodes_spread_and_agreed_by_all() {
        let runners = set(&["a", "b", "c"]);
        let held = holders(&[
            (0, "a"),
            (1, "a"),
            (2, "a"),
            (3, "b"),
            (4, "b"),
            (5, "c"),
            (6, "c"),
            (7, "c"),
        ]);
        let of = |n: &str, k: usize| standby_partitions(n, &held, &runners, k);
        for k in 1..=2 {
            let mut copies: BTreeMap<u32, usize> = BTreeMap::new();
            for node in ["a", "b", "c"] {
                for p in of(node, k) {
                    assert_ne!(
                        held[&p], node,
                        "{node} keeps a standby of its own partition {p}"
                    );
                    *copies.entry(p).or_default() += 1;
                }
            }
            // Every partition has exactly k copies elsewhere.
            assert_eq!(copies, (0..8).map(|p| (p, k)).collect::<BTreeMap<_, _>>());
        }
        // One standby each: spread over both other nodes, not all on one.
        assert_eq!(of("a", 1), BTreeSet::from([4, 6]));
        assert_eq!(of("b", 1), BTreeSet::from([0, 2, 5, 7]));
        assert_eq!(of("c", 1), BTreeSet::from([1, 3]));
        // More standbys than other nodes: as many as there are.
        assert_eq!(of("b", 5), of("b", 2));
        // The same view gives the same answer whatever the order it was
        // gathered in; a node that does not run the topology keeps none.
        let again: BTreeSet<String> = ["c", "a", "b"].iter().map(|n| n.to_string()).collect();
        assert_eq!(standby_partitions("b", &held, &again, 1), of("b", 1));
        assert!(standby_partitions("d", &held, &runners, 2).is_empty());
    }

    #[test]
    fn partitions_without_a_holder_or_another_node_have_no_standby() {
        let held = holders(&[(0, "a"), (1, "b")]);
        assert_eq!(
            standby_partitions("a", &held, &set(&["a", "b"]), 1),
            BTreeSet::from([1])
        );
        assert_eq!(
            standby_partitions("b", &held, &set(&["a", "b"]), 1),
            BTreeSet::from([0])
        );
        // Alone: nowhere to keep one.
        assert!(standby_partitions("a", &holders(&[(0, "a")]), &set(&["a"]), 1).is_empty());
        // Partition 2 is moving (no holder in any heartbeat): no copy is
        // made for it until it has one.
        assert!(!standby_partitions("a", &held, &set(&["a", "b", "c"]), 2).contains(&2));
        assert!(standby_partitions("a", &held, &set(&["a", "b"]), 0).is_empty());
    }

    #[test]
    fn standbys_are_refused_past_the_nodes_less_one() {
        let doc = |standbys: u32| {
            weir_topology::parse_topology(&format!(
                "name: t\ncluster: {{ standbys: {standbys} }}\nsources: [{{ name: in, kafka: {{ topic: a }} }}]\nsinks: [{{ name: out, kafka: {{ topic: b }}, input: in }}]\n"
            ))
            .unwrap()
        };
        assert!(standby_problems(&doc(2), 3, true).is_empty());
        assert!(standby_problems(&doc(0), 1, false).is_empty());
        let refused = standby_problems(&doc(2), 2, true);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].path, "cluster.standbys");
        assert!(
            refused[0].message.contains("set at most 1"),
            "{}",
            refused[0].message
        );
        let single = standby_problems(&doc(1), 1, false);
        assert!(
            single[0].message.contains("need a cluster"),
            "{}",
            single[0].message
        );
        // An unknown setting in the block is refused when parsed.
        assert!(weir_topology::parse_topology("name: t\ncluster: { replicas: 1 }\n").is_err());
    }
}
