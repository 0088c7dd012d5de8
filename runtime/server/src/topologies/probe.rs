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
use weir_types::KeyGroupRange;
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
                KeyGroupRange::all(doc.key_groups.unwrap_or(1).max(1)),
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
    problems
}

fn error(path: String, message: String) -> Problem {
    Problem {
        path,
        message,
        severity: Severity::Error,
    }
}
