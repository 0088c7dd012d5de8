//! How a topology's inputs are laid out over a cluster's tasks, and the
//! repartition topics that put a re-keyed stream back on that layout
//! (see `docs/cluster.md`, "Tasks" and "Repartition topics").
//!
//! - **Co-partitioned inputs** ([`Layout`]): the topology's group
//!   subscribes to one topic, the *lead* (its first `kafka:` source's
//!   topic); a node that the group gives partition *p* of the lead reads
//!   partition *p* of every other input too, by assignment (one task per
//!   partition number). A topology that keeps keyed state needs every
//!   input to have the lead's partition count (its state is partitioned
//!   like the lead); a stateless one may read others of any count (a
//!   partition *q* goes with lead partition *q mod n*).
//! - **Repartition topics** ([`rewrite`]): a keyed operator whose key an
//!   operator before it may have changed (any `key_by` but `key` straight
//!   on `kafka:` sources that key their events by the record key) reads
//!   through `weir.<cluster>.<topology>.<operator>.repartition`, created
//!   with the lead's partition count. The plan is cut at the cluster's
//!   edge, not in the engine: the operator's inputs feed an internal
//!   exactly-once Kafka sink keyed by the operator's key (written in the
//!   node's transaction, partitioned by murmur2 of the key), and the
//!   operator reads an internal source of that topic, as one more
//!   co-partitioned input. The engine runs the rewritten document as any
//!   other.

use std::collections::{BTreeMap, BTreeSet};

use weir_connectors::{Assignment, ensure_repartition_topic, topic_partitions};
use weir_topology::{
    Inputs, KafkaDelivery, KafkaEdge, KafkaField, KafkaFormat, KafkaSinkDoc, KafkaSourceDoc,
    KafkaStart, KeyBy, MAX_TOPIC_NAME_BYTES, OperatorDoc, SinkDoc, SourceDoc, TopologyDoc,
};

/// Name of the internal source an operator reads its repartitioned input
/// from: this prefix and the operator's name.
const SOURCE_PREFIX: &str = "_repartitioned_";
/// Name of the internal sink that writes an operator's input to its
/// repartition topic: this prefix and the operator's name.
const SINK_PREFIX: &str = "_to_repartition_";
/// Longest name of a source, operator or sink.
const MAX_NAME_BYTES: usize = 128;

/// The repartition topic of `operator` of the topology whose group is
/// `group` (`weir.<cluster>.<topology>`).
pub fn repartition_topic(group: &str, operator: &str) -> String {
    format!("{group}.{operator}.repartition")
}

/// Whether `op`'s input must go through a repartition topic: it is keyed,
/// and its key is not the record key of `kafka:` sources it reads
/// straight from (those records are in the partition of their key
/// already).
pub fn needs_repartition(doc: &TopologyDoc, op: &OperatorDoc) -> bool {
    match &op.key_by {
        None => false,
        Some(KeyBy::Field { .. }) => true,
        Some(KeyBy::Key(_)) => !op.input.names().iter().all(|name| {
            doc.sources.iter().any(|s| {
                s.name == *name
                    && s.kafka
                        .as_ref()
                        .is_some_and(|k| matches!(k.key, None | Some(KafkaField::Record(_))))
            })
        }),
    }
}

/// A topology document cut at its repartition topics.
#[derive(Debug, Clone, PartialEq)]
pub struct Rewritten {
    /// The document the node runs.
    pub doc: TopologyDoc,
    /// Operator → its repartition topic.
    pub topics: BTreeMap<String, String>,
}

/// `doc` with each operator that [`needs_repartition`] reading its input
/// through its repartition topic (`group`: the topology's consumer
/// group). A document without `kafka:` sources is left as it is.
pub fn rewrite(doc: &TopologyDoc, group: &str) -> Result<Rewritten, String> {
    let mut out = doc.clone();
    let mut topics = BTreeMap::new();
    let Some(first) = doc.sources.iter().find_map(|s| s.kafka.as_ref()) else {
        return Ok(Rewritten { doc: out, topics });
    };
    // Event time crosses the topic in the records' timestamps; the
    // internal source's watermark trails them as far as the most
    // lenient source's does.
    let watermark = doc
        .sources
        .iter()
        .filter_map(|s| s.watermark)
        .max_by_key(|w| w.max_out_of_orderness_ms);
    let taken: BTreeSet<&str> = (doc.sources.iter().map(|s| s.name.as_str()))
        .chain(doc.operators.iter().map(|o| o.name.as_str()))
        .chain(doc.sinks.iter().map(|s| s.name.as_str()))
        .collect();
    for (i, op) in doc.operators.iter().enumerate() {
        if !needs_repartition(doc, op) {
            continue;
        }
        let topic = repartition_topic(group, &op.name);
        let source = format!("{SOURCE_PREFIX}{}", op.name);
        let sink = format!("{SINK_PREFIX}{}", op.name);
        for name in [&source, &sink] {
            if taken.contains(name.as_str()) {
                return Err(format!(
                    "`{name}` is the name Weir gives the repartition of operator `{}` in a \
                     cluster: rename your `{name}`",
                    op.name
                ));
            }
            if name.len() > MAX_NAME_BYTES {
                return Err(format!(
                    "operator `{}` reads through a repartition topic in a cluster, and its name \
                     is too long for the internal endpoint `{name}`: shorten it to at most {} \
                     bytes",
                    op.name,
                    MAX_NAME_BYTES - SINK_PREFIX.len()
                ));
            }
        }
        if topic.len() > MAX_TOPIC_NAME_BYTES {
            return Err(format!(
                "the repartition topic of operator `{}`, `{topic}`, is longer than Kafka's \
                 {MAX_TOPIC_NAME_BYTES} bytes: shorten the cluster's, topology's or operator's \
                 name",
                op.name
            ));
        }
        let key = match &op.key_by {
            Some(KeyBy::Field { field }) => Some(KafkaField::Field {
                field: field.clone(),
            }),
            _ => None,
        };
        out.sinks.push(SinkDoc {
            name: sink,
            stream: None,
            file: None,
            kafka: Some(KafkaSinkDoc {
                topic: topic.clone(),
                brokers: first.brokers.clone(),
                format: Some(KafkaFormat::Bytes),
                key,
                headers: Some(true),
                delivery: Some(KafkaDelivery::ExactlyOnce),
                progress_topic: None,
                transactional_id: None,
                properties: BTreeMap::new(),
            }),
            input: op.input.clone(),
            postgres: None,
            http: None,
        });
        out.sources.push(SourceDoc {
            name: source.clone(),
            stream: None,
            file: None,
            kafka: Some(KafkaSourceDoc {
                topic: topic.clone(),
                brokers: first.brokers.clone(),
                start: Some(KafkaStart::Edge(KafkaEdge::Earliest)),
                format: Some(KafkaFormat::Bytes),
                key: None,
                timestamp: None,
                headers: Some(true),
                // Marks idle as long as the most patient source's
                // partitions.
                idle_timeout_ms: doc
                    .sources
                    .iter()
                    .filter_map(|s| s.kafka.as_ref()?.idle_timeout_ms)
                    .max(),
                on_error: None,
                properties: BTreeMap::new(),
            }),
            watermark,
        });
        out.operators[i].input = Inputs::One(source);
        topics.insert(op.name.clone(), topic);
    }
    Ok(Rewritten { doc: out, topics })
}

/// The repartition topics `doc` (a [`rewrite`]n document) writes, each
/// with the sources upstream of its internal sink: the event time those
/// reached is what a node marks the topic with (see the connectors'
/// `repartition.rs`, "Event-time marks"). Walks the graph with a work
/// list, not recursion.
pub fn marked_topics(doc: &TopologyDoc) -> Vec<(String, BTreeSet<String>)> {
    let resolver = doc.inputs_resolver();
    let sources: BTreeSet<&str> = doc.sources.iter().map(|s| s.name.as_str()).collect();
    let operators: BTreeMap<&str, &OperatorDoc> =
        doc.operators.iter().map(|o| (o.name.as_str(), o)).collect();
    let mut out = Vec::new();
    for sink in doc.sinks.iter().filter(|s| s.name.starts_with(SINK_PREFIX)) {
        let Some(kafka) = &sink.kafka else { continue };
        let mut upstream = BTreeSet::new();
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&str> = sink.input.names();
        while let Some(name) = todo.pop() {
            let node = resolver.resolve(name).node;
            if !seen.insert(node) {
                continue;
            }
            if sources.contains(node) {
                upstream.insert(node.to_string());
            } else if let Some(op) = operators.get(node) {
                todo.extend(op.input.names());
            }
        }
        out.push((kafka.topic.clone(), upstream));
    }
    out
}

/// How a topology's input topics map to tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The topic the group assigns: its partition *p* is task *p*.
    pub lead: String,
    pub partitions: u32,
    /// The other input topics (repartition topics included) and their
    /// partition counts.
    pub others: BTreeMap<String, u32>,
}

impl Layout {
    /// The layout of inputs whose partition counts are `counts` (the
    /// lead's among them), for topology `topology`; `keyed`: it keeps
    /// keyed state, so every input must have the lead's count.
    pub fn new(
        topology: &str,
        lead: &str,
        counts: &BTreeMap<String, u32>,
        keyed: bool,
    ) -> Result<Layout, String> {
        let partitions = *counts
            .get(lead)
            .ok_or_else(|| format!("no partition count for topic `{lead}`"))?;
        let others: BTreeMap<String, u32> = counts
            .iter()
            .filter(|(t, _)| t.as_str() != lead)
            .map(|(t, &n)| (t.clone(), n))
            .collect();
        let unlike: Vec<String> = others
            .iter()
            .filter(|&(_, &n)| n != partitions)
            .map(|(t, n)| format!("`{t}` has {n}"))
            .collect();
        if keyed && !unlike.is_empty() {
            return Err(format!(
                "topology `{topology}` keeps keyed state and its Kafka inputs are not \
                 co-partitioned: `{lead}` has {partitions} partitions, {}; in a cluster the node \
                 that holds partition p of `{lead}` reads partition p of every input, so give \
                 them all {partitions} partitions (or make `{lead}` the first source)",
                unlike.join(", ")
            ));
        }
        Ok(Layout {
            lead: lead.to_string(),
            partitions,
            others,
        })
    }

    /// What a node reads when the group gave it `held` (partitions of the
    /// lead): the same partition numbers of every other input, or for an
    /// input with another count (a stateless topology's), the partitions
    /// *q* with *q mod n* held.
    pub fn expand(&self, held: &Assignment) -> Assignment {
        let Some(lead) = held.get(&self.lead).filter(|ps| !ps.is_empty()) else {
            return Assignment::new();
        };
        let n = self.partitions.max(1) as i32;
        let mut out = Assignment::from([(self.lead.clone(), lead.clone())]);
        for (topic, &count) in &self.others {
            let mine: BTreeSet<i32> = (0..count as i32)
                .filter(|q| lead.contains(&(q % n)))
                .collect();
            if !mine.is_empty() {
                out.insert(topic.clone(), mine);
            }
        }
        out
    }
}

/// Looks up the partition counts of `doc`'s Kafka inputs on `brokers`,
/// makes sure the repartition topics of `rewritten` exist with the lead's
/// count, and answers the layout.
pub fn prepare(doc: &TopologyDoc, rewritten: &Rewritten, brokers: &str) -> Result<Layout, String> {
    let topics: Vec<&str> = doc
        .sources
        .iter()
        .filter_map(|s| Some(s.kafka.as_ref()?.topic.as_str()))
        .collect();
    let Some(&lead) = topics.first() else {
        return Err(format!("topology `{}` reads no Kafka topic", doc.name));
    };
    let mut counts = BTreeMap::new();
    for topic in topics {
        if !counts.contains_key(topic) {
            let n = topic_partitions(brokers, topic).map_err(|e| e.to_string())?;
            counts.insert(topic.to_string(), n);
        }
    }
    let partitions = counts[lead];
    for topic in rewritten.topics.values() {
        ensure_repartition_topic(brokers, topic, partitions).map_err(|e| e.to_string())?;
        counts.insert(topic.clone(), partitions);
    }
    let keyed = doc.operators.iter().any(|o| o.key_by.is_some());
    Layout::new(&doc.name, lead, &counts, keyed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(yaml: &str) -> TopologyDoc {
        weir_topology::parse_topology(yaml).unwrap()
    }

    const WORDS: &str = "name: wc\n\
        sources:\n\
        \x20 - { name: lines, kafka: { topic: in, format: text }, watermark: { max_out_of_orderness_ms: 50 } }\n\
        \x20 - { name: more, kafka: { topic: in2 }, watermark: { max_out_of_orderness_ms: 70 } }\n\
        operators:\n\
        \x20 - { name: split, module: s, input: lines }\n\
        \x20 - { name: direct, module: c, input: [lines, more], key_by: key }\n\
        \x20 - { name: count, module: c, input: split, key_by: key }\n\
        \x20 - { name: by_user, module: c, input: more, key_by: { field: user } }\n\
        \x20 - { name: free, module: s, input: count }\n\
        sinks:\n\
        \x20 - { name: out, kafka: { topic: out }, input: [count, by_user, direct, free] }\n";

    #[test]
    fn only_operators_keyed_otherwise_than_their_records_are_repartitioned() {
        let d = doc(WORDS);
        let needs: Vec<&str> = d
            .operators
            .iter()
            .filter(|o| needs_repartition(&d, o))
            .map(|o| o.name.as_str())
            .collect();
        // `direct`: `key_by: key` straight on Kafka sources; `split`,
        // `free`: not keyed.
        assert_eq!(needs, ["count", "by_user"]);
        // A source that takes its key from a field does not key its
        // events like its records.
        let fielded = WORDS.replace("topic: in2 }", "topic: in2, key: { field: user } }");
        let d = doc(&fielded);
        assert!(needs_repartition(&d, &d.operators[1]));
    }

    #[test]
    fn the_rewrite_cuts_the_plan_at_each_repartition_topic() {
        let d = doc(WORDS);
        let r = rewrite(&d, "weir.c.wc").unwrap();
        assert_eq!(
            r.topics,
            BTreeMap::from([
                ("by_user".into(), "weir.c.wc.by_user.repartition".into()),
                ("count".into(), "weir.c.wc.count.repartition".into()),
            ])
        );
        let op = |name: &str| r.doc.operators.iter().find(|o| o.name == name).unwrap();
        assert_eq!(
            op("count").input,
            Inputs::One("_repartitioned_count".into())
        );
        assert_eq!(op("direct").input, d.operators[1].input);
        // The upstream part ends in a sink keyed like the operator.
        let sink = r
            .doc
            .sinks
            .iter()
            .find(|s| s.name == "_to_repartition_by_user")
            .unwrap();
        assert_eq!(sink.input, Inputs::One("more".into()));
        let kafka = sink.kafka.as_ref().unwrap();
        assert_eq!(kafka.topic, "weir.c.wc.by_user.repartition");
        assert_eq!(
            kafka.key,
            Some(KafkaField::Field {
                field: "user".into()
            })
        );
        assert_eq!(kafka.delivery, Some(KafkaDelivery::ExactlyOnce));
        let to_count = r
            .doc
            .sinks
            .iter()
            .find(|s| s.name == "_to_repartition_count");
        assert_eq!(to_count.unwrap().kafka.as_ref().unwrap().key, None);
        // The downstream part starts at a source of the topic, its events
        // as they were written, with the most lenient watermark.
        let source = r
            .doc
            .sources
            .iter()
            .find(|s| s.name == "_repartitioned_count")
            .unwrap();
        let kafka = source.kafka.as_ref().unwrap();
        assert_eq!(kafka.topic, "weir.c.wc.count.repartition");
        assert_eq!(kafka.format, Some(KafkaFormat::Bytes));
        assert_eq!(source.watermark.unwrap().max_out_of_orderness_ms, 70);
        // The rewritten document is a valid one, and rewriting is stable.
        let problems = weir_topology::validate_topology_with(
            &r.doc,
            &(),
            weir_topology::ValidateOptions {
                kafka_brokers: true,
                ..weir_topology::ValidateOptions::default()
            },
        );
        assert!(
            problems
                .iter()
                .all(|p| p.severity != weir_topology::Severity::Error),
            "{problems:?}"
        );
        assert_eq!(rewrite(&d, "weir.c.wc").unwrap(), r);
        // `count` straight on its Kafka source: only `by_user` is cut.
        let plain = doc(&WORDS.replace("input: split, key_by: key", "input: lines, key_by: key"));
        let cut: Vec<String> = rewrite(&plain, "g").unwrap().topics.into_keys().collect();
        assert_eq!(cut, ["by_user"]);
    }

    #[test]
    fn internal_names_that_clash_or_overflow_are_refused_with_a_fix() {
        let clash = WORDS.replace("name: free,", "name: _repartitioned_count,");
        let err = rewrite(&doc(&clash), "g").unwrap_err();
        assert!(err.contains("rename your `_repartitioned_count`"), "{err}");
        let long = WORDS.replace("name: count,", &format!("name: {},", "o".repeat(120)));
        let err = rewrite(&doc(&long), "g").unwrap_err();
        assert!(err.contains("shorten it"), "{err}");
    }

    #[test]
    fn co_partitioned_inputs_go_to_the_same_task() {
        let counts = BTreeMap::from([
            ("in".to_string(), 4),
            ("in2".to_string(), 4),
            ("r".to_string(), 4),
        ]);
        let layout = Layout::new("t", "in", &counts, true).unwrap();
        let held = Assignment::from([("in".to_string(), BTreeSet::from([1, 3]))]);
        let all = layout.expand(&held);
        for topic in ["in", "in2", "r"] {
            assert_eq!(all[topic], BTreeSet::from([1, 3]), "{topic}");
        }
        // Holding nothing of the lead: nothing at all.
        assert!(layout.expand(&Assignment::new()).is_empty());
    }

    #[test]
    fn unlike_partition_counts_are_refused_only_with_keyed_state() {
        let counts = BTreeMap::from([("in".to_string(), 4), ("in2".to_string(), 6)]);
        let err = Layout::new("t", "in", &counts, true).unwrap_err();
        assert!(err.contains("`in2` has 6"), "{err}");
        assert!(err.contains("give them all 4 partitions"), "{err}");
        // Stateless: every partition of `in2` is read by exactly one
        // holder of a partition of `in`.
        let layout = Layout::new("t", "in", &counts, false).unwrap();
        let mut seen = Vec::new();
        for p in 0..4 {
            let held = Assignment::from([("in".to_string(), BTreeSet::from([p]))]);
            seen.extend(layout.expand(&held).get("in2").cloned().unwrap_or_default());
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..6).collect::<Vec<_>>());
    }
}
