//! Validation of a topology document: every problem at once, each with its
//! path in the document, before anything runs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::document::{Inputs, KeyBy, TopologyDoc};

/// Highest parallelism of one operator (and never more than its key
/// groups, since each instance owns at least one).
pub const MAX_PARALLELISM: u16 = 256;
const MAX_KEY_GROUPS: u16 = 32_768;
const MIN_CHECKPOINT_INTERVAL_MS: u64 = 10;

/// How bad a problem is: errors stop the topology from running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where, e.g. `operators[1].input`.
    pub path: String,
    pub message: String,
    pub severity: Severity,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: {}: {}", self.path, self.message)
    }
}

/// A topology could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    #[error("the topology document ({format}) is not valid: {message}")]
    Parse {
        format: &'static str,
        message: String,
    },
    #[error("the topology has {} problem(s):\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

/// Answers whether a module reference names a loadable operator module
/// (one that implements the world), and if not, why.
pub trait ModuleCheck {
    fn check(&self, module: &str) -> Result<(), String>;
}

/// Accepts every module: for checking a document's shape alone.
impl ModuleCheck for () {
    fn check(&self, _module: &str) -> Result<(), String> {
        Ok(())
    }
}

use weir_types::is_safe_name;

struct Report(Vec<Problem>);

impl Report {
    fn error(&mut self, path: String, message: impl Into<String>) {
        self.0.push(Problem {
            path,
            message: message.into(),
            severity: Severity::Error,
        });
    }
    fn warn(&mut self, path: String, message: impl Into<String>) {
        self.0.push(Problem {
            path,
            message: message.into(),
            severity: Severity::Warning,
        });
    }
}

/// What a name in the document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Source,
    Operator(usize),
    Sink,
}

/// Every problem of `doc`, errors first. Empty means it can run.
pub fn validate_topology(doc: &TopologyDoc, modules: &dyn ModuleCheck) -> Vec<Problem> {
    let mut report = Report(Vec::new());
    if !is_safe_name(&doc.name) {
        report.error(
            "name".into(),
            format!("{:?} is not a valid name: use 1-128 of A-Z a-z 0-9 _ . - (not starting with . or -)", doc.name),
        );
    }
    let groups = doc.key_groups.unwrap_or(128);
    if groups == 0 || groups > MAX_KEY_GROUPS {
        report.error(
            "key_groups".into(),
            format!("must be between 1 and {MAX_KEY_GROUPS}, not {groups}"),
        );
    }
    if let Some(cp) = &doc.checkpoint
        && cp.interval_ms < MIN_CHECKPOINT_INTERVAL_MS
    {
        report.error(
            "checkpoint.interval_ms".into(),
            format!(
                "must be at least {MIN_CHECKPOINT_INTERVAL_MS} ms, not {}",
                cp.interval_ms
            ),
        );
    }
    if let Some(stream) = &doc.dead_letter_stream
        && !is_safe_name(stream)
    {
        report.error(
            "dead_letter_stream".into(),
            format!("{stream:?} is not a valid stream name: use 1-128 of A-Z a-z 0-9 _ . -"),
        );
    }
    if doc.sources.is_empty() {
        report.error("sources".into(), "a topology needs at least one source");
    }
    if doc.sinks.is_empty() {
        report.error("sinks".into(), "a topology needs at least one sink");
    }

    // Names: safe, and unique across sources, operators and sinks.
    let mut names: BTreeMap<&str, (Node, String)> = BTreeMap::new();
    let all = doc
        .sources
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), Node::Source, format!("sources[{i}]")))
        .chain(doc.operators.iter().enumerate().map(|(i, o)| {
            (
                o.name.as_str(),
                Node::Operator(i),
                format!("operators[{i}]"),
            )
        }))
        .chain(
            doc.sinks
                .iter()
                .enumerate()
                .map(|(i, s)| (s.name.as_str(), Node::Sink, format!("sinks[{i}]"))),
        );
    for (name, node, path) in all {
        if !is_safe_name(name) {
            report.error(
                format!("{path}.name"),
                format!("{name:?} is not a valid name: use 1-128 of A-Z a-z 0-9 _ . -"),
            );
        }
        match names.get(name) {
            Some((_, first)) => report.error(
                format!("{path}.name"),
                format!("duplicate name {name:?} (first used at {first})"),
            ),
            None => {
                names.insert(name, (node, path));
            }
        }
    }

    for (i, s) in doc.sources.iter().enumerate() {
        check_endpoint(&mut report, &format!("sources[{i}]"), &s.stream, &s.file);
        if let Some(w) = &s.watermark
            && w.max_out_of_orderness_ms < 0
        {
            report.error(
                format!("sources[{i}].watermark.max_out_of_orderness_ms"),
                "must not be negative",
            );
        }
    }

    // Inputs of operators and sinks.
    let mut read: BTreeSet<String> = BTreeSet::new();
    let mut check_inputs = |report: &mut Report, path: String, inputs: &Inputs| {
        let list = inputs.names();
        if list.is_empty() {
            report.error(path.clone(), "needs at least one input");
        }
        let mut seen = BTreeSet::new();
        for (j, input) in list.iter().enumerate() {
            let at = match inputs {
                Inputs::One(_) => path.clone(),
                Inputs::Many(_) => format!("{path}[{j}]"),
            };
            if !seen.insert(*input) {
                report.error(at.clone(), format!("input {input:?} is listed twice"));
            }
            match names.get(input) {
                None => report.error(
                    at,
                    format!(
                        "unknown input {input:?}: name a source or an operator (known: {})",
                        known(&names, |n| n != Node::Sink)
                    ),
                ),
                Some((Node::Sink, _)) => report.error(
                    at,
                    format!("input {input:?} is a sink; sinks cannot be read from"),
                ),
                Some(_) => {
                    read.insert(input.to_string());
                }
            }
        }
    };
    for (i, o) in doc.operators.iter().enumerate() {
        let path = format!("operators[{i}]");
        check_inputs(&mut report, format!("{path}.input"), &o.input);
        if let Err(why) = modules.check(&o.module) {
            report.error(format!("{path}.module"), why);
        }
        let p = o.parallelism.unwrap_or(1);
        let max = MAX_PARALLELISM.min(groups.max(1));
        if p == 0 || p > max {
            report.error(
                format!("{path}.parallelism"),
                format!("must be between 1 and {max} (at most the topology's key groups), not {p}"),
            );
        }
        if let Some(KeyBy::Field { field }) = &o.key_by
            && field.is_empty()
        {
            report.error(
                format!("{path}.key_by.field"),
                "must name a field of the value",
            );
        }
        if let Some(config) = &o.config
            && !config.is_object()
        {
            report.error(format!("{path}.config"), "must be an object");
        }
    }
    for (i, s) in doc.sinks.iter().enumerate() {
        let path = format!("sinks[{i}]");
        check_inputs(&mut report, format!("{path}.input"), &s.input);
        check_endpoint(&mut report, &path, &s.stream, &s.file);
    }

    for cycle in cycles(doc) {
        let first = cycle[0];
        let mut names: Vec<&str> = cycle
            .iter()
            .map(|&i| doc.operators[i].name.as_str())
            .collect();
        names.push(&doc.operators[first].name);
        report.error(
            format!("operators[{first}].input"),
            format!("cycle: {}; a topology must be a DAG", names.join(" → ")),
        );
    }

    for (i, o) in doc.operators.iter().enumerate() {
        if !read.contains(&o.name) {
            report.warn(
                format!("operators[{i}]"),
                format!("nothing reads operator {:?}: its output is dropped", o.name),
            );
        }
    }
    for (i, s) in doc.sources.iter().enumerate() {
        if !read.contains(&s.name) {
            report.warn(
                format!("sources[{i}]"),
                format!("nothing reads source {:?}", s.name),
            );
        }
    }
    report.0.sort_by_key(|p| p.severity);
    report.0
}

fn known(names: &BTreeMap<&str, (Node, String)>, keep: impl Fn(Node) -> bool) -> String {
    let list: Vec<&str> = names
        .iter()
        .filter(|(_, (n, _))| keep(*n))
        .map(|(name, _)| *name)
        .collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

fn check_endpoint(report: &mut Report, path: &str, stream: &Option<String>, file: &Option<String>) {
    match (stream, file) {
        (Some(_), Some(_)) => report.error(path.to_string(), "give `stream` or `file`, not both"),
        (None, None) => report.error(path.to_string(), "needs a `stream` or a `file`"),
        (Some(s), None) if !is_safe_name(s) => report.error(
            format!("{path}.stream"),
            format!("{s:?} is not a valid stream name: use 1-128 of A-Z a-z 0-9 _ . -"),
        ),
        _ => {}
    }
}

/// The cycles among operators, each as operator indexes in order, found by
/// depth-first search; each cycle once.
fn cycles(doc: &TopologyDoc) -> Vec<Vec<usize>> {
    // A duplicated name refers to its first use, as the duplicate error says.
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, o) in doc.operators.iter().enumerate() {
        index.entry(o.name.as_str()).or_insert(i);
    }
    // Edges from an operator to the operators it feeds.
    let mut feeds: Vec<Vec<usize>> = vec![Vec::new(); doc.operators.len()];
    for (i, o) in doc.operators.iter().enumerate() {
        for input in o.input.names() {
            if let Some(&from) = index.get(input) {
                feeds[from].push(i);
            }
        }
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        node: usize,
        feeds: &[Vec<usize>],
        marks: &mut [Mark],
        stack: &mut Vec<usize>,
        found: &mut Vec<Vec<usize>>,
        seen: &mut BTreeSet<Vec<usize>>,
    ) {
        marks[node] = Mark::Open;
        stack.push(node);
        for &next in &feeds[node] {
            match marks[next] {
                Mark::New => visit(next, feeds, marks, stack, found, seen),
                Mark::Open => {
                    let at = stack.iter().position(|&n| n == next).unwrap_or(0);
                    let cycle = stack[at..].to_vec();
                    let mut key = cycle.clone();
                    key.sort_unstable();
                    if seen.insert(key) {
                        found.push(cycle);
                    }
                }
                Mark::Done => {}
            }
        }
        stack.pop();
        marks[node] = Mark::Done;
    }
    let mut marks = vec![Mark::New; doc.operators.len()];
    let mut found = Vec::new();
    let mut seen = BTreeSet::new();
    for start in 0..doc.operators.len() {
        if marks[start] == Mark::New {
            visit(
                start,
                &feeds,
                &mut marks,
                &mut Vec::new(),
                &mut found,
                &mut seen,
            );
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_topology;

    struct Known(&'static [&'static str]);

    impl ModuleCheck for Known {
        fn check(&self, module: &str) -> Result<(), String> {
            let name = module.split('@').next().unwrap_or(module);
            if self.0.contains(&name) {
                Ok(())
            } else {
                Err(format!("unknown module {module:?}"))
            }
        }
    }

    const MODULES: Known = Known(&["split-words", "word-count", "filter"]);

    fn problems(yaml: &str) -> Vec<String> {
        let doc = parse_topology(yaml).unwrap();
        validate_topology(&doc, &MODULES)
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn a_valid_topology_has_no_problems() {
        let found = problems(
            r#"
name: word-count
sources: [{ name: lines, stream: lines }]
operators:
  - { name: split, module: split-words, input: lines }
  - { name: count, module: word-count@1, input: split, key_by: key, parallelism: 2 }
sinks: [{ name: out, stream: counts, input: count }]
"#,
        );
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_path() {
        let found = problems(
            r#"
name: "bad name!"
key_groups: 64
sources:
  - { name: lines, stream: lines, file: x.jsonl }
  - { name: idle, stream: "../etc" }
operators:
  - { name: a, module: split-words, input: c }
  - { name: b, module: nope, input: a, parallelism: 65 }
  - { name: c, module: filter, input: [b, b] }
  - { name: a, module: filter, input: ghost }
  - { name: lonely, module: filter, input: out, parallelism: 0 }
sinks:
  - { name: out, stream: counts, input: [] }
"#,
        );
        let expect = [
            "error: name: \"bad name!\" is not a valid name",
            "error: sources[0]: give `stream` or `file`, not both",
            "error: sources[1].stream: \"../etc\" is not a valid stream name",
            "error: operators[3].name: duplicate name \"a\" (first used at operators[0])",
            "error: operators[1].module: unknown module \"nope\"",
            "error: operators[1].parallelism: must be between 1 and 64",
            "error: operators[2].input[1]: input \"b\" is listed twice",
            "error: operators[3].input: unknown input \"ghost\"",
            "error: operators[4].input: input \"out\" is a sink",
            "error: operators[4].parallelism: must be between 1 and 64",
            "error: sinks[0].input: needs at least one input",
            "error: operators[0].input: cycle: a → b → c → a",
            "warning: operators[4]: nothing reads operator \"lonely\"",
            "warning: sources[1]: nothing reads source \"idle\"",
        ];
        for e in expect {
            assert!(
                found.iter().any(|f| f.starts_with(e)),
                "missing {e:?} in {found:#?}"
            );
        }
        // Errors come before warnings.
        let first_warning = found.iter().position(|f| f.starts_with("warning")).unwrap();
        assert!(
            found[first_warning..]
                .iter()
                .all(|f| f.starts_with("warning"))
        );
    }

    #[test]
    fn a_self_loop_is_a_cycle() {
        let found = problems(
            r#"
name: t
sources: [{ name: s, stream: s }]
operators:
  - { name: x, module: filter, input: [s, x] }
sinks: [{ name: out, stream: o, input: x }]
"#,
        );
        assert!(
            found.iter().any(|f| f.contains("cycle: x → x")),
            "{found:?}"
        );
    }

    #[test]
    fn empty_topologies_and_bad_settings_are_refused() {
        let found = problems("name: t\ncheckpoint: { interval_ms: 1 }\nkey_groups: 0\n");
        for e in [
            "error: sources: a topology needs at least one source",
            "error: sinks: a topology needs at least one sink",
            "error: checkpoint.interval_ms: must be at least 10 ms",
            "error: key_groups: must be between 1 and 32768",
        ] {
            assert!(
                found.iter().any(|f| f.starts_with(e)),
                "missing {e:?} in {found:#?}"
            );
        }
    }
}
