//! The physical plan of a validated topology document, as a plain value:
//! which operators are chained into one task, how many instances each
//! task has, which route each producer's output takes to each consumer,
//! and which sender ids each consumer instance waits on. No channel,
//! thread or instance is made here (`executor.rs` wires them from the
//! plan), so the plan can be inspected and tested on its own.
//!
//! - Operators connected one-to-one (single input, its producer's only
//!   consumer, same parallelism, no `key_by`) are **chained**.
//! - An edge into a keyed operator partitions by key group; an unkeyed edge
//!   between equal parallelisms forwards instance i to instance i, and
//!   otherwise spreads batches round-robin; a sink is fed round-robin (it
//!   has one instance).
//! - Producers get ids in order: sources first, then each chain's
//!   instances; consumers learn the ids they read from, for watermarks,
//!   alignment and the end.
//! - A consumer may read a producer's main output and side outputs
//!   (`fraud`, `fraud.alerts`): that is one route with several
//!   [`Feed`]s, each naming the output and the consumer's input index, so
//!   the consumer hears each producer instance once. An operator whose side
//!   outputs are read ends its chain (side outputs leave a chain from its
//!   last operator only).

use std::collections::HashMap;
use std::sync::Arc;

use weir_topology::{KeyBy, TopologyDoc};
use weir_types::{DEFAULT_KEY_GROUPS, KeyGroupRange};

use crate::routes::RouteKind;

/// Who reads a producer's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Consumer {
    /// An operator chain, by chain index.
    Chain(usize),
    /// A sink, by its index in the document.
    Sink(usize),
}

/// One output of a producer that a consumer reads, and as which input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Feed {
    /// `None`: the main output; `Some(name)`: side output `name`.
    pub(crate) output: Option<String>,
    /// The index of this output in the consumer's `input` list.
    pub(crate) input: u32,
}

/// One route of a producer's output.
#[derive(Debug, Clone)]
pub(crate) struct RoutePlan {
    pub(crate) consumer: Consumer,
    pub(crate) kind: RouteKind,
    /// What the consumer reads of the producer (at least one).
    pub(crate) feeds: Vec<Feed>,
}

/// A source or chain, as a producer: instance i has id `first_id + i`.
#[derive(Debug, Clone)]
pub(crate) struct Producer {
    pub(crate) first_id: usize,
    pub(crate) parallelism: usize,
    pub(crate) routes: Vec<RoutePlan>,
}

/// Operators that run as one task, one batch through all of them.
#[derive(Debug, Clone)]
pub(crate) struct ChainPlan {
    /// Indexes into the document's operators, in data order.
    pub(crate) operators: Vec<usize>,
    pub(crate) parallelism: usize,
    /// Sender ids each instance reads from.
    pub(crate) senders: Vec<Vec<usize>>,
    pub(crate) output: Producer,
}

/// The plan of a topology.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) key_groups: u16,
    pub(crate) chains: Vec<ChainPlan>,
    /// One per document source, in order.
    pub(crate) sources: Vec<Producer>,
    /// Sender ids each sink reads from, one per document sink.
    pub(crate) sink_senders: Vec<Vec<usize>>,
}

/// The owning instance of each key group, for `parallelism` instances.
fn owners(parallelism: usize, groups: u16) -> Vec<u16> {
    let mut owner = vec![0u16; groups as usize];
    for inst in 0..parallelism {
        let r = KeyGroupRange::for_instance(inst as u16, parallelism as u16, groups);
        for g in r.start..r.end {
            owner[g as usize] = inst as u16;
        }
    }
    owner
}

/// The operators of `doc` grouped as they run: one list of names per
/// chain (one task), in data order. `doc` must have passed validation.
pub fn operator_chains(doc: &TopologyDoc) -> Vec<Vec<String>> {
    plan_topology(doc)
        .chains
        .iter()
        .map(|c| {
            c.operators
                .iter()
                .map(|&i| doc.operators[i].name.clone())
                .collect()
        })
        .collect()
}

/// Plans `doc`, which must have passed validation (every input names a
/// source or operator, no cycle).
pub(crate) fn plan_topology(doc: &TopologyDoc) -> Plan {
    let groups = doc.key_groups.unwrap_or(DEFAULT_KEY_GROUPS);
    let op_index: HashMap<&str, usize> = doc
        .operators
        .iter()
        .enumerate()
        .map(|(i, o)| (o.name.as_str(), i))
        .collect();
    let parallelism = |i: usize| doc.operators[i].parallelism.unwrap_or(1).max(1) as usize;

    // Who reads each node, which of its outputs, as which input.
    let mut readers: HashMap<&str, Vec<(Consumer, Feed)>> = HashMap::new();
    let consumers = doc
        .operators
        .iter()
        .enumerate()
        .map(|(i, o)| (Consumer::Chain(i), &o.input))
        .chain(
            doc.sinks
                .iter()
                .enumerate()
                .map(|(i, s)| (Consumer::Sink(i), &s.input)),
        );
    let resolver = doc.inputs_resolver();
    for (consumer, inputs) in consumers {
        for (j, input) in inputs.names().into_iter().enumerate() {
            let r = resolver.resolve(input);
            let feed = Feed {
                output: r.output.map(str::to_string),
                input: j as u32,
            };
            // Chain(i) holds the operator index until chains are known.
            readers.entry(r.node).or_default().push((consumer, feed));
        }
    }
    // An operator joins its input's chain when it is the only reader of
    // that operator (side outputs included), reads only its main output
    // and nothing else, has its parallelism and is not keyed.
    let chained_into = |i: usize| -> Option<usize> {
        let o = &doc.operators[i];
        let inputs = o.input.names();
        if inputs.len() != 1 || o.key_by.is_some() {
            return None;
        }
        let input = resolver.resolve(inputs[0]);
        if input.output.is_some() {
            return None;
        }
        let &up = op_index.get(input.node)?;
        let only_reader = readers.get(input.node).is_some_and(|r| r.len() == 1);
        (only_reader && parallelism(up) == parallelism(i)).then_some(up)
    };
    let mut chain_ops: Vec<Vec<usize>> = Vec::new();
    let mut chain_of = vec![usize::MAX; doc.operators.len()];
    for i in 0..doc.operators.len() {
        if chained_into(i).is_some() {
            continue;
        }
        let mut chain = vec![i];
        let mut last = i;
        while let Some(&(Consumer::Chain(next), _)) = readers
            .get(doc.operators[last].name.as_str())
            .filter(|r| r.len() == 1)
            .and_then(|r| r.first())
        {
            if chained_into(next) != Some(last) {
                break;
            }
            chain.push(next);
            last = next;
        }
        for &op in &chain {
            chain_of[op] = chain_ops.len();
        }
        chain_ops.push(chain);
    }

    let chain_parallelism: Vec<usize> = chain_ops.iter().map(|c| parallelism(c[0])).collect();
    let mut chain_senders: Vec<Vec<Vec<usize>>> = chain_parallelism
        .iter()
        .map(|&p| vec![Vec::new(); p])
        .collect();
    let mut sink_senders: Vec<Vec<usize>> = vec![Vec::new(); doc.sinks.len()];
    let mut next_id = 0usize;
    // The routes of the producer of `name`, with `producer_parallelism`
    // instances; registers its instances with their consumers.
    let mut producer = |name: &str, producer_parallelism: usize| -> Producer {
        // One route per consumer, whatever it reads of this producer.
        let mut routes: Vec<RoutePlan> = Vec::new();
        for (reader, feed) in readers.get(name).into_iter().flatten() {
            let (consumer, kind) = match *reader {
                Consumer::Sink(s) => (Consumer::Sink(s), RouteKind::Rebalance),
                // Operators chained behind another are fed by it.
                Consumer::Chain(op) if chain_ops[chain_of[op]][0] != op => continue,
                Consumer::Chain(op) => {
                    let c = chain_of[op];
                    let p = chain_parallelism[c];
                    let kind = match &doc.operators[op].key_by {
                        Some(key_by) => RouteKind::Keyed {
                            field: match key_by {
                                KeyBy::Field { field } => Some(field.clone()),
                                KeyBy::Key(_) => None,
                            },
                            groups,
                            owner: Arc::new(owners(p, groups)),
                        },
                        None if p == producer_parallelism => RouteKind::Forward,
                        None => RouteKind::Rebalance,
                    };
                    (Consumer::Chain(c), kind)
                }
            };
            match routes.iter_mut().find(|r| r.consumer == consumer) {
                Some(route) => route.feeds.push(feed.clone()),
                None => routes.push(RoutePlan {
                    consumer,
                    kind,
                    feeds: vec![feed.clone()],
                }),
            }
        }
        let first_id = next_id;
        next_id += producer_parallelism;
        for index in 0..producer_parallelism {
            let id = first_id + index;
            for route in &routes {
                match (route.consumer, &route.kind) {
                    (Consumer::Sink(s), _) => sink_senders[s].push(id),
                    (Consumer::Chain(c), RouteKind::Forward) => {
                        let t = index.min(chain_senders[c].len() - 1);
                        chain_senders[c][t].push(id);
                    }
                    (Consumer::Chain(c), _) => {
                        for senders in chain_senders[c].iter_mut() {
                            senders.push(id);
                        }
                    }
                }
            }
        }
        Producer {
            first_id,
            parallelism: producer_parallelism,
            routes,
        }
    };
    let sources: Vec<Producer> = doc.sources.iter().map(|s| producer(&s.name, 1)).collect();
    let outputs: Vec<Producer> = chain_ops
        .iter()
        .zip(&chain_parallelism)
        .map(|(c, &p)| {
            let last = c.last().copied().unwrap_or(c[0]);
            producer(&doc.operators[last].name, p)
        })
        .collect();
    let chains = chain_ops
        .into_iter()
        .zip(chain_parallelism)
        .zip(chain_senders)
        .zip(outputs)
        .map(|(((operators, parallelism), senders), output)| ChainPlan {
            operators,
            parallelism,
            senders,
            output,
        })
        .collect();
    Plan {
        key_groups: groups,
        chains,
        sources,
        sink_senders,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_topology::parse_topology;

    fn plan(yaml: &str) -> Plan {
        plan_topology(&parse_topology(yaml).expect("a valid document"))
    }

    fn names(doc: &str) -> Vec<Vec<String>> {
        operator_chains(&parse_topology(doc).unwrap())
    }

    const LINE: &str = r#"
name: line
sources: [{name: in, file: in.jsonl}]
operators:
  - {name: parse, module: m, input: in}
  - {name: enrich, module: m, input: parse}
  - {name: count, module: m, input: enrich, key_by: key, parallelism: 4}
  - {name: format, module: m, input: count, parallelism: 4}
sinks: [{name: out, file: out.jsonl, input: format}]
"#;

    #[test]
    fn one_to_one_operators_chain_and_a_key_by_starts_a_new_chain() {
        let p = plan(LINE);
        assert_eq!(
            names(LINE),
            vec![vec!["parse", "enrich"], vec!["count", "format"]]
        );
        assert_eq!(p.chains[0].parallelism, 1);
        assert_eq!(p.chains[1].parallelism, 4);
    }

    #[test]
    fn producers_get_ids_sources_first_and_consumers_know_them() {
        let p = plan(LINE);
        // Source 0; chain 0 instance 1; chain 1 instances 2..6.
        assert_eq!(p.sources[0].first_id, 0);
        assert_eq!(p.chains[0].output.first_id, 1);
        assert_eq!(p.chains[1].output.first_id, 2);
        assert_eq!(p.chains[0].senders, vec![vec![0]]);
        // A keyed edge: every instance hears the one upstream instance.
        assert_eq!(p.chains[1].senders, vec![vec![1]; 4]);
        // The sink hears every instance of the last chain.
        assert_eq!(p.sink_senders, vec![vec![2, 3, 4, 5]]);
    }

    #[test]
    fn route_kinds_follow_key_by_and_parallelism() {
        let p = plan(LINE);
        let kinds = |producer: &Producer| -> Vec<String> {
            producer
                .routes
                .iter()
                .map(|r| match &r.kind {
                    RouteKind::Forward => "forward".to_string(),
                    RouteKind::Rebalance => "rebalance".to_string(),
                    RouteKind::Keyed {
                        field,
                        groups,
                        owner,
                    } => {
                        format!("keyed {field:?} {groups} {}", owner.len())
                    }
                })
                .collect()
        };
        assert_eq!(kinds(&p.sources[0]), vec!["forward"]);
        assert_eq!(kinds(&p.chains[0].output), vec!["keyed None 128 128"]);
        assert_eq!(kinds(&p.chains[1].output), vec!["rebalance"]);
        assert_eq!(p.chains[1].output.routes[0].consumer, Consumer::Sink(0));
    }

    #[test]
    fn forward_edges_pair_instances_and_rebalance_edges_fan_in() {
        let doc = r#"
name: fan
sources: [{name: in, file: in.jsonl}]
operators:
  - {name: a, module: m, input: in, parallelism: 3}
  - {name: b, module: m, input: a, parallelism: 3}
  - {name: c, module: m, input: a, parallelism: 2}
sinks:
  - {name: out, file: out.jsonl, input: [b, c]}
"#;
        let p = plan(doc);
        // `a` has two readers, so nothing chains.
        assert_eq!(names(doc), vec![vec!["a"], vec!["b"], vec!["c"]]);
        // a: ids 1..4; b: 4..7; c: 7..9.
        assert_eq!(
            p.chains[1].senders,
            vec![vec![1], vec![2], vec![3]],
            "forward"
        );
        assert_eq!(p.chains[2].senders, vec![vec![1, 2, 3]; 2], "rebalance");
        assert_eq!(p.sink_senders, vec![vec![4, 5, 6, 7, 8]]);
    }

    #[test]
    fn a_field_key_by_routes_by_that_field_and_splits_key_groups_among_instances() {
        let doc = r#"
name: field
key_groups: 8
sources: [{name: in, file: in.jsonl}]
operators:
  - {name: per_user, module: m, input: in, key_by: {field: user}, parallelism: 3}
sinks: [{name: out, file: out.jsonl, input: per_user}]
"#;
        let p = plan(doc);
        let RouteKind::Keyed {
            field,
            groups,
            owner,
        } = &p.sources[0].routes[0].kind
        else {
            panic!("not keyed: {:?}", p.sources[0].routes[0].kind);
        };
        assert_eq!(field.as_deref(), Some("user"));
        assert_eq!(*groups, 8);
        for (g, &inst) in owner.iter().enumerate() {
            let range = KeyGroupRange::for_instance(inst, 3, 8);
            assert!(
                (range.start..range.end).contains(&(g as u16)),
                "group {g} owned by {inst}, whose range is {range:?}"
            );
        }
        let mut seen: Vec<u16> = owner.to_vec();
        seen.dedup();
        assert_eq!(seen, vec![0, 1, 2], "every instance owns a contiguous run");
    }

    #[test]
    fn an_unread_output_has_no_routes() {
        let doc = r#"
name: dangling
sources: [{name: in, file: in.jsonl}, {name: spare, file: s.jsonl}]
operators:
  - {name: a, module: m, input: in}
sinks: [{name: out, file: out.jsonl, input: a}]
"#;
        let p = plan(doc);
        assert!(p.sources[1].routes.is_empty());
        assert_eq!(p.sources[1].first_id, 1);
        assert_eq!(p.chains[0].output.first_id, 2);
    }
}
