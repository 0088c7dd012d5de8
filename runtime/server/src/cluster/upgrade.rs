//! Upgrades of a running topology in a cluster: a new document (a module
//! version, an operator's config) sent through any node's API while the
//! topology runs. Every node, when it applies the record, restarts its
//! own job on it: the job stops after a last checkpoint (whose
//! transaction commits its output, changelog and input offsets), the
//! record is replaced, and the job starts again from that committed
//! state on the same partitions. Nodes stay in the topology's group, so
//! the upgrade moves no partition; each node pauses for one stop and one
//! start, at about the same time as the others (each applies the record
//! when its reader reaches it).
//!
//! Only what the group reads cannot change while it runs: the Kafka
//! input topics and their brokers, the operators that read through
//! repartition topics, and whether it keeps keyed state ([`refusal`]).
//! An operator renamed or
//! removed starts without its old state (state and changelogs are named
//! after operators).

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use weir_topology::TopologyDoc;

use super::repartition;
use crate::ControlPlane;
use crate::topologies::TopologiesError;

/// How many times an upgrade on a node is tried again when a change of
/// partitions restarted the job between its steps.
const ATTEMPTS: usize = 3;

/// Why `new` cannot replace `old` while the topology runs, if it cannot.
pub(super) fn refusal(old: &TopologyDoc, new: &TopologyDoc) -> Option<String> {
    let inputs = |doc: &TopologyDoc| -> BTreeSet<(String, Option<String>)> {
        doc.sources
            .iter()
            .filter_map(|s| s.kafka.as_ref())
            .map(|k| (k.topic.clone(), k.brokers.clone()))
            .collect()
    };
    let (before, after) = (inputs(old), inputs(new));
    if before == after {
        return layout_refusal(old, new);
    }
    let list = |set: &BTreeSet<(String, Option<String>)>| {
        set.iter()
            .map(|(topic, _)| topic.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(format!(
        "its Kafka inputs would change from [{}] to [{}] (or their brokers), and its consumer group reads them: stop it, apply the document, and start it again",
        list(&before),
        list(&after)
    ))
}

/// Why `new` cannot replace `old` on the same inputs while it runs: the
/// operators that read through repartition topics, and whether it keeps
/// keyed state (which needs co-partitioned inputs), are settled when the
/// topology starts on a node (`repartition.rs`).
fn layout_refusal(old: &TopologyDoc, new: &TopologyDoc) -> Option<String> {
    let cut = |doc: &TopologyDoc| -> (Vec<String>, bool) {
        let names = doc
            .operators
            .iter()
            .filter(|o| repartition::needs_repartition(doc, o))
            .map(|o| o.name.clone())
            .collect();
        (names, doc.operators.iter().any(|o| o.key_by.is_some()))
    };
    let ((before, keyed_before), (after, keyed_after)) = (cut(old), cut(new));
    if before == after && keyed_before == keyed_after {
        return None;
    }
    if before != after {
        return Some(format!(
            "the operators that read through repartition topics would change from [{}] to [{}], \
             and their topics are laid out when the topology starts: stop it, apply the \
             document, and start it again",
            before.join(", "),
            after.join(", ")
        ));
    }
    Some(
        "it would start or stop keeping keyed state, which decides whether its inputs must be \
         co-partitioned when it starts: stop it, apply the document, and start it again"
            .into(),
    )
}

/// Applies topology record `name` (`doc` pinned to `modules`) on this
/// node; a topology that runs here is stopped, replaced and started
/// again on the partitions it had.
pub(super) fn apply_record(
    plane: &ControlPlane,
    name: &str,
    doc: TopologyDoc,
    modules: &BTreeMap<String, String>,
) -> Result<(), TopologiesError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let running = plane
            .topologies
            .status(name)
            .is_ok_and(|s| s.state.wants_running());
        if !running {
            return plane
                .topologies
                .apply_pinned(name, doc, modules)
                .map(|_| ());
        }
        let outcome = plane
            .topologies
            .stop(name, None)
            .and_then(|_| plane.topologies.apply_pinned(name, doc.clone(), modules))
            .and_then(|_| plane.topologies.start(name, None));
        match outcome {
            Ok(()) => {
                tracing::info!(
                    topology.name = name,
                    ?modules,
                    "topology upgraded on this node"
                );
                return Ok(());
            }
            // A new assignment restarted the job between the steps.
            Err(TopologiesError::Running(_) | TopologiesError::Busy { .. })
                if attempt < ATTEMPTS =>
            {
                continue;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(inputs: &[&str], module: &str) -> TopologyDoc {
        let mut text = String::from("name: t\nsources:\n");
        for (i, topic) in inputs.iter().enumerate() {
            text.push_str(&format!(
                "  - {{ name: s{i}, kafka: {{ topic: {topic}, format: text }} }}\n"
            ));
        }
        text.push_str(&format!(
            "operators:\n  - {{ name: op, module: {module}, input: s0 }}\nsinks:\n  - {{ name: out, kafka: {{ topic: out }}, input: op }}\n"
        ));
        crate::topologies::Topologies::parse(&text).unwrap()
    }

    #[test]
    fn a_new_module_version_on_the_same_inputs_is_an_upgrade() {
        assert_eq!(refusal(&doc(&["in"], "m@1"), &doc(&["in"], "m@2")), None);
        // The order of the sources does not matter.
        assert_eq!(
            refusal(&doc(&["a", "b"], "m"), &doc(&["b", "a"], "m")),
            None
        );
    }

    #[test]
    fn a_new_repartition_or_keyed_state_is_refused_while_it_runs() {
        let plain = doc(&["in"], "m");
        let keyed = |key_by: &str| {
            let text = format!(
                "name: t\nsources: [{{ name: s0, kafka: {{ topic: in }} }}]\n\
                 operators: [{{ name: op, module: m, input: s0, key_by: {key_by} }}]\n\
                 sinks: [{{ name: out, kafka: {{ topic: out }}, input: op }}]\n"
            );
            crate::topologies::Topologies::parse(&text).unwrap()
        };
        // `key_by: key` straight on the source: keyed, no repartition.
        let why = refusal(&plain, &keyed("key")).unwrap();
        assert!(why.contains("keyed state"), "{why}");
        let why = refusal(&keyed("key"), &keyed("{field: user}")).unwrap();
        assert!(why.contains("from [] to [op]"), "{why}");
        assert_eq!(refusal(&keyed("{field: a}"), &keyed("{field: b}")), None);
    }

    #[test]
    fn other_kafka_inputs_are_refused_while_it_runs_saying_what_to_do() {
        let why = refusal(&doc(&["in"], "m"), &doc(&["in", "more"], "m")).unwrap();
        assert!(why.contains("[in] to [in, more]"), "{why}");
        assert!(why.contains("stop it"), "{why}");
        assert!(refusal(&doc(&["in"], "m"), &doc(&["other"], "m")).is_some());
    }
}
