//! Checking operators before anything starts: `validate` and `apply`
//! instantiate each operator with its config, in the sandbox (a throwaway
//! instance over in-memory state), so a config the operator rejects is a
//! problem of the document, not a failed start. The value states an
//! operator declares are checked against its `key_by`: state is kept per
//! key, so a stateful operator must say how its input is keyed.
//!
//! Each distinct module version and config is instantiated once per
//! request, and the whole check stops at a time budget (an operator left
//! unchecked is a warning, and its start checks it again). Slow work:
//! called on the blocking pool, with no lock held.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use weir_topology::{Problem, Severity, TopologyDoc};
use weir_types::{DEFAULT_KEY_GROUPS, KeyGroupRange};
use weir_wasm::{InstanceError, MemoryState, OperatorInstance, OperatorModule};

use crate::registry::ModuleRegistry;

/// Longest one validation spends instantiating operators.
pub const PROBE_BUDGET: Duration = Duration::from_secs(10);

/// Operators an unchecked-configs warning names at most.
const NAMED_UNCHECKED: usize = 5;

/// What instantiating one module version with one config found: the
/// value states it declares, or why it could not start.
type Outcome = Result<Vec<String>, InstanceError>;

/// Instantiates every operator of `doc` with its config (each distinct
/// module version and config once) until `budget` is spent; returns the
/// problems found. `doc` is otherwise valid: its module references
/// resolve.
pub(super) fn probe_operators(
    registry: &ModuleRegistry,
    doc: &TopologyDoc,
    budget: Duration,
) -> Vec<Problem> {
    probe(registry, doc, budget).0
}

/// [`probe_operators`], and how many instances it made.
fn probe(registry: &ModuleRegistry, doc: &TopologyDoc, budget: Duration) -> (Vec<Problem>, usize) {
    let deadline = Instant::now() + budget;
    let mut loaded: HashMap<String, OperatorModule> = HashMap::new();
    let mut outcomes: HashMap<(String, String), Outcome> = HashMap::new();
    let mut problems = Vec::new();
    let mut unchecked = Vec::new();
    for (i, o) in doc.operators.iter().enumerate() {
        let path = format!("operators[{i}]");
        // The references resolved in the document's own validation; a
        // module deleted meanwhile is the start's to report.
        let Ok(version) = registry.resolve(&o.module) else {
            continue;
        };
        let config = o
            .config
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_else(|| "{}".into());
        let key = (version.reference(), config);
        if !outcomes.contains_key(&key) {
            if Instant::now() >= deadline {
                unchecked.push(o.name.as_str());
                continue;
            }
            let module = match loaded.get(&key.0) {
                Some(m) => m.clone(),
                None => match registry.load(&version) {
                    Ok(m) => {
                        loaded.insert(key.0.clone(), m.clone());
                        m
                    }
                    Err(e) => {
                        problems.push(error(
                            format!("{path}.module"),
                            format!(
                                "operator `{}`: module {} cannot be loaded: {e}",
                                o.name, key.0
                            ),
                        ));
                        continue;
                    }
                },
            };
            let outcome = OperatorInstance::new(
                &module,
                &o.name,
                &key.1,
                Box::new(MemoryState::new()),
                KeyGroupRange::all(doc.key_groups.unwrap_or(DEFAULT_KEY_GROUPS).max(1)),
            )
            .map(|instance| instance.value_states().to_vec());
            outcomes.insert(key.clone(), outcome);
        }
        match &outcomes[&key] {
            Ok(states) => {
                if !states.is_empty() && o.key_by.is_none() {
                    problems.push(error(
                        format!("{path}.key_by"),
                        format!(
                            "operator `{}` keeps value state per key ({}) but has no key_by: \
                             add `key_by: key` (the event's key) or `key_by: {{field: NAME}}` \
                             (a field of the value)",
                            o.name,
                            states.join(", ")
                        ),
                    ));
                }
            }
            Err(InstanceError::Init { message, .. }) => problems.push(error(
                format!("{path}.config"),
                format!(
                    "operator `{}` rejects its config ({} says: {message}): fix `config` and \
                     validate again",
                    o.name, key.0
                ),
            )),
            Err(e) => problems.push(error(
                format!("{path}.module"),
                format!(
                    "operator `{}` cannot start with its config ({}): {e}",
                    o.name, key.0
                ),
            )),
        }
    }
    if !unchecked.is_empty() {
        let named: Vec<&str> = unchecked.iter().take(NAMED_UNCHECKED).copied().collect();
        let more = unchecked.len() - named.len();
        problems.push(Problem {
            path: "operators".into(),
            message: format!(
                "the configs of {}{} were not checked: instantiating the operators took longer \
                 than {} s; their start checks them",
                named.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                },
                budget.as_secs()
            ),
            severity: Severity::Warning,
        });
    }
    (problems, outcomes.len())
}

fn error(path: String, message: String) -> Problem {
    Problem {
        path,
        message,
        severity: Severity::Error,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use weir_wasm::{HostConfig, WasmHost};

    use super::*;

    fn registry(dir: &std::path::Path) -> ModuleRegistry {
        let host = Arc::new(WasmHost::new(HostConfig::default()).unwrap());
        let registry = ModuleRegistry::open(dir, host).unwrap();
        let filter = weir_fixtures::guest_bytes("filter");
        registry.push("filter", &filter).unwrap();
        registry
    }

    /// `n` filter operators, the odd ones with a config it rejects.
    fn doc(n: usize) -> TopologyDoc {
        let mut text = String::from("name: t\nsources: [{ name: s, stream: s }]\noperators:\n");
        for i in 0..n {
            let op = if i % 2 == 0 { "gt" } else { "nonsense" };
            text.push_str(&format!(
                "  - {{ name: f{i}, module: filter, input: s, config: {{ field: a, op: {op}, value: 1 }} }}\n"
            ));
        }
        text.push_str("sinks: [{ name: o, stream: o, input: f0 }]\n");
        weir_topology::parse_topology(&text).unwrap()
    }

    #[test]
    fn each_rejected_config_is_an_error_at_its_operator() {
        let dir = tempfile::tempdir().unwrap();
        let (problems, instances) = probe(&registry(dir.path()), &doc(4), PROBE_BUDGET);
        // Two distinct configs of one module version: two instances.
        assert_eq!(instances, 2);
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["operators[1].config", "operators[3].config"],
            "{problems:?}"
        );
        assert!(problems.iter().all(|p| p.severity == Severity::Error));
        assert!(
            problems[1]
                .message
                .contains("operator `f3` rejects its config")
        );
    }

    #[test]
    fn what_the_budget_leaves_unchecked_is_one_warning_naming_a_few() {
        let dir = tempfile::tempdir().unwrap();
        let problems = probe_operators(&registry(dir.path()), &doc(8), Duration::ZERO);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].severity, Severity::Warning);
        assert!(
            problems[0]
                .message
                .contains("f0, f1, f2, f3, f4 and 3 more were not checked"),
            "{}",
            problems[0].message
        );
    }
}
