//! Validation of a topology document: every problem at once, each with its
//! path in the document, before anything runs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::document::{Inputs, KeyBy, OperatorLimits, SinkDoc, TopologyDoc};

/// Highest parallelism of one operator (and never more than its key
/// groups, since each instance owns at least one).
pub const MAX_PARALLELISM: u16 = 256;
const MAX_KEY_GROUPS: u16 = 32_768;
const MIN_CHECKPOINT_INTERVAL_MS: u64 = 10;
/// Most problems one validation lists; the rest are counted in a last
/// summary problem, so the answer stays small whatever the input.
pub const MAX_PROBLEMS: usize = 100;
/// Most candidate names one message suggests.
const MAX_SUGGESTIONS: usize = 3;
/// Most operator names a cycle message spells out.
const MAX_CYCLE_NAMES: usize = 8;
/// Default of [`TopologyLimits::max_operators`].
pub const DEFAULT_MAX_OPERATORS: usize = 256;
/// Default of [`TopologyLimits::max_instances`].
pub const DEFAULT_MAX_INSTANCES: usize = 1024;

/// How big a topology a server accepts (the README's limits table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopologyLimits {
    /// Most operators of one topology; sources and sinks are each bounded
    /// by the same number.
    pub max_operators: usize,
    /// Most operator instances (the sum of every operator's parallelism):
    /// each instance is a thread.
    pub max_instances: usize,
    /// The most an operator's own `limits` may give an instance (the
    /// server's sandbox limits, also what an operator without its own
    /// gets).
    pub operator: OperatorLimits,
}

impl Default for TopologyLimits {
    fn default() -> Self {
        TopologyLimits {
            max_operators: DEFAULT_MAX_OPERATORS,
            max_instances: DEFAULT_MAX_INSTANCES,
            operator: OperatorLimits::UNBOUNDED,
        }
    }
}

/// What a validation checks beyond the document itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidateOptions {
    /// Size bounds; `None` checks none (a local `weir run`).
    pub limits: Option<TopologyLimits>,
    /// Refuse `file:` sources and sinks (the server binds only embedded
    /// streams).
    pub streams_only: bool,
    /// There is no PostgreSQL URL for `postgres:` sinks that give none
    /// (no `--postgres-url`): their `url` is required.
    pub postgres_url_required: bool,
    /// The caller has default Kafka brokers (`--kafka-brokers`), so a
    /// `kafka:` endpoint may leave out `brokers`.
    pub kafka_brokers: bool,
}

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
    #[error(
        "the document nests deeper than {limit} levels: flatten its operator configs (a topology needs fewer than ten)"
    )]
    TooDeep { limit: usize },
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

/// The problems found so far: at most [`MAX_PROBLEMS`] of each severity
/// kept, every one counted.
#[derive(Default)]
struct Report {
    errors: Vec<Problem>,
    warnings: Vec<Problem>,
    error_count: usize,
    warning_count: usize,
}

impl Report {
    fn error(&mut self, path: String, message: impl Into<String>) {
        self.error_count += 1;
        if self.errors.len() < MAX_PROBLEMS {
            self.errors.push(Problem {
                path,
                message: message.into(),
                severity: Severity::Error,
            });
        }
    }
    fn warn(&mut self, path: String, message: impl Into<String>) {
        self.warning_count += 1;
        if self.warnings.len() < MAX_PROBLEMS {
            self.warnings.push(Problem {
                path,
                message: message.into(),
                severity: Severity::Warning,
            });
        }
    }
    /// Whether another error would still be listed (work on a message that
    /// would be dropped can be skipped).
    fn lists_more_errors(&self) -> bool {
        self.errors.len() < MAX_PROBLEMS
    }
    /// Errors first, then warnings, at most [`MAX_PROBLEMS`] in all, plus
    /// one summary problem counting the ones left out.
    fn finish(self) -> Vec<Problem> {
        let total = self.error_count + self.warning_count;
        let has_errors = self.error_count > 0;
        let mut list = self.errors;
        list.extend(self.warnings);
        list.truncate(MAX_PROBLEMS);
        let left_out = total - list.len();
        if left_out > 0 {
            list.push(Problem {
                path: "(document)".into(),
                message: format!(
                    "{total} problems in all ({} errors, {} warnings); only the first {} are listed: fix them and validate again",
                    self.error_count,
                    self.warning_count,
                    list.len()
                ),
                severity: if has_errors {
                    Severity::Error
                } else {
                    Severity::Warning
                },
            });
        }
        list
    }
}

/// What a name in the document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Source,
    Operator(usize),
    Sink,
}

/// Every problem of `doc`, errors first (at most [`MAX_PROBLEMS`], then a
/// count of the rest). Empty means it can run. Checks no size limits: see
/// [`validate_topology_with`].
pub fn validate_topology(doc: &TopologyDoc, modules: &dyn ModuleCheck) -> Vec<Problem> {
    validate_topology_with(doc, modules, ValidateOptions::default())
}

/// [`validate_topology`] with size limits and the server's binding rule.
/// A document over the limits gets those problems alone: nothing else of
/// it is looked at.
pub fn validate_topology_with(
    doc: &TopologyDoc,
    modules: &dyn ModuleCheck,
    options: ValidateOptions,
) -> Vec<Problem> {
    let mut report = Report::default();
    if let Some(limits) = options.limits
        && !within_limits(&mut report, doc, limits)
    {
        return report.finish();
    }
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
        if let Some(kafka) = &s.kafka {
            check_kafka(
                &mut report,
                &format!("sources[{i}]"),
                (&s.stream, &s.file),
                crate::kafka::source_problems(kafka, options.kafka_brokers),
            );
        } else {
            check_endpoint(&mut report, &format!("sources[{i}]"), &s.stream, &s.file);
        }
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
    let resolver = doc.inputs_resolver();
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
            let resolved = resolver.resolve(input);
            if let Some(output) = resolved.output {
                // Side output `output` of an operator: which outputs exist
                // is known once the operator's module declares them at
                // init, and checked then (the engine, before it starts).
                if !output
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                {
                    report.error(
                        at,
                        format!("{input:?}: side output {output:?} is not a valid side output name (A-Z a-z 0-9 _ -)"),
                    );
                } else {
                    read.insert(resolved.node.to_string());
                }
                continue;
            }
            match names.get(input) {
                None => {
                    let hint = if report.lists_more_errors() {
                        suggest_name(
                            input,
                            names
                                .iter()
                                .filter(|(_, (n, _))| *n != Node::Sink)
                                .map(|(name, _)| *name),
                        )
                    } else {
                        String::new()
                    };
                    report.error(
                        at,
                        format!("unknown input {input:?}: name a source or an operator ({hint})"),
                    )
                }
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
        if let Some(own) = &o.limits {
            let max = options
                .limits
                .map_or(OperatorLimits::UNBOUNDED, |l| l.operator);
            for (name, value, most, flag) in max.fields(own) {
                match value {
                    Some(0) => report.error(
                        format!("{path}.limits.{name}"),
                        "must be at least 1 (leave it out for the server's)",
                    ),
                    Some(v) if v > most => report.error(
                        format!("{path}.limits.{name}"),
                        format!(
                            "{v} is over this server's maximum of {most}: lower it, or raise the server's {flag}"
                        ),
                    ),
                    _ => {}
                }
            }
        }
    }
    for (i, s) in doc.sinks.iter().enumerate() {
        let path = format!("sinks[{i}]");
        check_inputs(&mut report, format!("{path}.input"), &s.input);
        if let Some(kafka) = &s.kafka {
            if s.postgres.is_some() || s.http.is_some() {
                report.error(
                    path.clone(),
                    "give one of `stream`, `file`, `kafka`, `postgres` or `http`",
                );
            }
            check_kafka(
                &mut report,
                &path,
                (&s.stream, &s.file),
                crate::kafka::sink_problems(kafka, options.kafka_brokers),
            );
        } else {
            check_sink_target(&mut report, &path, s, options);
        }
    }

    for cycle in cycles(doc) {
        let first = cycle[0];
        let mut names: Vec<&str> = cycle
            .iter()
            .take(MAX_CYCLE_NAMES)
            .map(|&i| doc.operators[i].name.as_str())
            .collect();
        if cycle.len() > MAX_CYCLE_NAMES {
            names.push("…");
        }
        names.push(&doc.operators[first].name);
        let length = if cycle.len() > MAX_CYCLE_NAMES {
            format!(" ({} operators)", cycle.len())
        } else {
            String::new()
        };
        report.error(
            format!("operators[{first}].input"),
            format!(
                "cycle: {}{length}; a topology must be a DAG",
                names.join(" → ")
            ),
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
    if options.streams_only {
        let endpoints = doc
            .sources
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("sources[{i}].file"), s.file.is_some()))
            .chain(
                doc.sinks
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (format!("sinks[{i}].file"), s.file.is_some())),
            );
        for (path, is_file) in endpoints {
            if is_file {
                report.error(
                    path,
                    "the server reads and writes embedded streams and Kafka topics, not files: use `stream: NAME` or `kafka: {topic: NAME}` (files are for `weir run`)",
                );
            }
        }
    }
    report.finish()
}

/// Checks the counts `limits` bound; false when the document is over one.
fn within_limits(report: &mut Report, doc: &TopologyDoc, limits: TopologyLimits) -> bool {
    let max = limits.max_operators;
    for (what, count) in [
        ("operators", doc.operators.len()),
        ("sources", doc.sources.len()),
        ("sinks", doc.sinks.len()),
    ] {
        if count > max {
            report.error(
                what.into(),
                format!("{count} {what} is over this server's limit of {max}: split the topology, or raise --max-operators"),
            );
        }
    }
    let instances: usize = doc
        .operators
        .iter()
        .map(|o| usize::from(o.parallelism.unwrap_or(1)))
        .sum();
    if instances > limits.max_instances {
        report.error(
            "operators".into(),
            format!(
                "the operators' parallelism adds up to {instances} instances, over this server's limit of {}: lower some parallelism, or raise --max-instances",
                limits.max_instances
            ),
        );
    }
    report.error_count == 0
}

/// A short hint for a name that is not among `candidates`: the few nearest
/// ones (by edit distance), or else the first few, with the count. Its
/// length does not grow with the number of candidates.
pub fn suggest_name<'a>(wanted: &str, candidates: impl Iterator<Item = &'a str> + Clone) -> String {
    let mut near: Vec<(usize, &str)> = candidates
        .clone()
        .filter_map(|c| close_enough(wanted, c).map(|d| (d, c)))
        .collect();
    near.sort_unstable();
    near.truncate(MAX_SUGGESTIONS);
    if !near.is_empty() {
        let list: Vec<String> = near.iter().map(|(_, c)| format!("{c:?}")).collect();
        return format!("did you mean {}?", list.join(" or "));
    }
    let count = candidates.clone().count();
    let first: Vec<&str> = candidates.take(MAX_SUGGESTIONS).collect();
    match count {
        0 => "there are none".into(),
        n if n <= MAX_SUGGESTIONS => format!("known: {}", first.join(", ")),
        n => format!("known: {}, … ({n} in all)", first.join(", ")),
    }
}

/// The edit distance of `a` and `b` when it is small for their length,
/// computed in a band so its cost stays linear in the name's length.
fn close_enough(a: &str, b: &str) -> Option<usize> {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let limit = a.len().max(b.len()).div_ceil(3).clamp(1, 3);
    if a.len().abs_diff(b.len()) > limit || a.len() > 256 || b.len() > 256 {
        return None;
    }
    // Levenshtein over rows of b, cells outside the band count as too far.
    let far = limit + 1;
    let mut prev: Vec<usize> = (0..=b.len()).map(|j| j.min(far)).collect();
    let mut row = vec![far; b.len() + 1];
    for i in 1..=a.len() {
        row.fill(far);
        row[0] = i.min(far);
        let lo = i.saturating_sub(limit).max(1);
        let hi = (i + limit).min(b.len());
        for j in lo..=hi {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            row[j] = (prev[j - 1] + cost)
                .min(prev[j] + 1)
                .min(row[j - 1] + 1)
                .min(far);
        }
        std::mem::swap(&mut prev, &mut row);
    }
    let d = prev[b.len()];
    (d <= limit).then_some(d)
}

/// A `kafka:` endpoint: alone (no `stream` or `file` beside it) and its
/// own `problems` under `<path>.kafka`.
fn check_kafka(
    report: &mut Report,
    path: &str,
    (stream, file): (&Option<String>, &Option<String>),
    problems: Vec<(String, String)>,
) {
    if stream.is_some() || file.is_some() {
        report.error(
            path.to_string(),
            "give one of `stream`, `file` or `kafka`, not several",
        );
    }
    for (sub, message) in problems {
        report.error(format!("{path}.kafka.{sub}"), message);
    }
}

fn check_endpoint(report: &mut Report, path: &str, stream: &Option<String>, file: &Option<String>) {
    match (stream, file) {
        (Some(_), Some(_)) => report.error(path.to_string(), "give `stream` or `file`, not both"),
        (None, None) => report.error(path.to_string(), "needs a `stream`, a `file` or `kafka`"),
        (Some(s), None) if !is_safe_name(s) => report.error(
            format!("{path}.stream"),
            format!("{s:?} is not a valid stream name: use 1-128 of A-Z a-z 0-9 _ . -"),
        ),
        _ => {}
    }
}

/// A sink's one target: a stream or file ([`check_endpoint`]), or a
/// `postgres:` or `http:` sink with its settings checked.
fn check_sink_target(report: &mut Report, path: &str, sink: &SinkDoc, options: ValidateOptions) {
    match (&sink.postgres, &sink.http) {
        (None, None) => check_endpoint(report, path, &sink.stream, &sink.file),
        (Some(pg), None) if sink.stream.is_none() && sink.file.is_none() => {
            crate::sinks::check_postgres(
                pg,
                &format!("{path}.postgres"),
                options.postgres_url_required,
                &mut |path, message| report.error(path, message),
            );
        }
        (None, Some(http)) if sink.stream.is_none() && sink.file.is_none() => {
            crate::sinks::check_http(http, &format!("{path}.http"), &mut |path, message| {
                report.error(path, message)
            });
        }
        _ => report.error(
            path.to_string(),
            "give one of `stream`, `file`, `kafka`, `postgres` or `http`",
        ),
    }
}

/// The cycles among operators, each as operator indexes in order, found by
/// an iterative depth-first search (a user's chain may be any length);
/// each cycle once, at most [`MAX_PROBLEMS`] of them.
fn cycles(doc: &TopologyDoc) -> Vec<Vec<usize>> {
    // A duplicated name refers to its first use, as the duplicate error says.
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, o) in doc.operators.iter().enumerate() {
        index.entry(o.name.as_str()).or_insert(i);
    }
    // Edges from an operator to the operators it feeds.
    let mut feeds: Vec<Vec<usize>> = vec![Vec::new(); doc.operators.len()];
    let resolver = doc.inputs_resolver();
    for (i, o) in doc.operators.iter().enumerate() {
        for input in o.input.names() {
            if let Some(&from) = index.get(resolver.resolve(input).node) {
                feeds[from].push(i);
            }
        }
    }
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        /// On the current path, at this depth.
        Open(usize),
        Done,
    }
    let mut marks = vec![Mark::New; doc.operators.len()];
    let mut found = Vec::new();
    let mut seen = BTreeSet::new();
    // The current path, and for each node on it the next edge to follow.
    let mut path: Vec<usize> = Vec::new();
    let mut next_edge: Vec<usize> = Vec::new();
    for start in 0..doc.operators.len() {
        if marks[start] != Mark::New {
            continue;
        }
        marks[start] = Mark::Open(0);
        path.push(start);
        next_edge.push(0);
        while let (Some(&node), Some(edge)) = (path.last(), next_edge.last_mut()) {
            let Some(&next) = feeds[node].get(*edge) else {
                marks[node] = Mark::Done;
                path.pop();
                next_edge.pop();
                continue;
            };
            *edge += 1;
            match marks[next] {
                Mark::New => {
                    marks[next] = Mark::Open(path.len());
                    path.push(next);
                    next_edge.push(0);
                }
                Mark::Open(at) if found.len() < MAX_PROBLEMS => {
                    let cycle = path[at..].to_vec();
                    let mut key = cycle.clone();
                    key.sort_unstable();
                    if seen.insert(key) {
                        found.push(cycle);
                    }
                }
                Mark::Open(_) | Mark::Done => {}
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OperatorLimitsDoc, parse_topology};

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

    /// A chain of `n` operators as JSON, each reading the one before; with
    /// `back_edge`, the first also reads the last (one cycle of `n`).
    fn chain(n: usize, back_edge: bool) -> TopologyDoc {
        let mut ops = Vec::with_capacity(n);
        for i in 0..n {
            let input = match i {
                0 if back_edge => format!("[\"s\", \"o{}\"]", n - 1),
                0 => "\"s\"".into(),
                _ => format!("\"o{}\"", i - 1),
            };
            ops.push(format!(
                "{{\"name\": \"o{i}\", \"module\": \"filter\", \"input\": {input}}}"
            ));
        }
        let text = format!(
            "{{\"name\": \"t\", \"sources\": [{{\"name\": \"s\", \"stream\": \"s\"}}], \"operators\": [{}], \"sinks\": [{{\"name\": \"out\", \"stream\": \"o\", \"input\": \"o{}\"}}]}}",
            ops.join(","),
            n - 1
        );
        parse_topology(&text).unwrap()
    }

    #[test]
    fn a_long_chain_is_walked_without_recursion() {
        // 100,000 nested calls of the old recursive walk overflow a 2 MiB
        // test thread's stack; the iterative one needs none.
        let doc = chain(100_000, true);
        let found = validate_topology(&doc, &());
        assert!(
            found.iter().any(|p| p.message.contains("cycle: o0 → o1")
                && p.message.contains("(100000 operators)")),
            "{found:?}"
        );
        // The cycle message names a few operators, not all of them.
        assert!(found.iter().all(|p| p.message.len() < 500), "{found:?}");
    }

    #[test]
    fn limits_refuse_too_many_operators_and_instances() {
        let limits = TopologyLimits {
            max_operators: 10,
            max_instances: 20,
            ..TopologyLimits::default()
        };
        let options = ValidateOptions {
            limits: Some(limits),
            ..ValidateOptions::default()
        };
        let found = validate_topology_with(&chain(11, false), &(), options);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0]
                .message
                .contains("11 operators is over this server's limit of 10")
                && found[0].message.contains("--max-operators"),
            "{found:?}"
        );
        let mut doc = chain(5, false);
        for o in &mut doc.operators {
            o.parallelism = Some(5);
        }
        let found = validate_topology_with(&doc, &(), options);
        assert!(
            found.iter().any(|p| p.message.contains("25 instances")
                && p.message.contains("limit of 20")
                && p.message.contains("--max-instances")),
            "{found:?}"
        );
        doc.operators[0].parallelism = Some(1);
        doc.operators[1].parallelism = Some(1);
        let found = validate_topology_with(&doc, &(), options);
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn an_operators_own_limits_over_the_servers_maximum_are_refused_by_path() {
        let options = ValidateOptions {
            limits: Some(TopologyLimits {
                operator: OperatorLimits {
                    memory_mb: 64,
                    call_budget_ms: 1_000,
                    max_state_value_bytes: 1 << 20,
                    max_output_bytes_per_call: 1 << 20,
                },
                ..TopologyLimits::default()
            }),
            ..ValidateOptions::default()
        };
        let mut doc = chain(2, false);
        let own = |text: &str| Some(serde_json::from_str::<OperatorLimitsDoc>(text).unwrap());
        doc.operators[0].limits = own(r#"{"memory_mb": 64, "call_budget_ms": 5}"#);
        doc.operators[1].limits = own(r#"{"memory_mb": 65, "max_output_bytes_per_call": 0}"#);
        let found = validate_topology_with(&doc, &(), options);
        let paths: Vec<&str> = found.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "operators[1].limits.memory_mb",
                "operators[1].limits.max_output_bytes_per_call"
            ],
            "{found:?}"
        );
        assert!(
            found[0]
                .message
                .contains("65 is over this server's maximum of 64")
                && found[0].message.contains("--operator-memory-mb"),
            "{found:?}"
        );
        // Without server limits (a local run) only zero is refused.
        let found = validate_topology(&doc, &());
        assert_eq!(found.len(), 1, "{found:?}");
        // An unknown limit is a parse error that names it.
        let err = serde_json::from_str::<OperatorLimitsDoc>(r#"{"memory": 1}"#).unwrap_err();
        assert!(err.to_string().contains("memory_mb"), "{err}");
    }

    #[test]
    fn problems_are_capped_and_counted_and_name_few_candidates() {
        // 5,000 operators, each reading an unknown input: every message
        // used to list every name.
        let mut doc = chain(5_000, false);
        for (i, o) in doc.operators.iter_mut().enumerate() {
            o.input = Inputs::One(format!("ghost{i}"));
        }
        let found = validate_topology(&doc, &());
        assert_eq!(found.len(), MAX_PROBLEMS + 1, "{}", found.len());
        let summary = found.last().unwrap();
        assert_eq!(summary.severity, Severity::Error);
        assert!(
            summary.message.contains("problems in all (5000 errors, "),
            "{summary:?}"
        );
        let bytes: usize = found.iter().map(|p| p.message.len() + p.path.len()).sum();
        assert!(bytes < 64 * 1024, "{bytes} bytes of problems");
        assert!(
            found[0]
                .message
                .contains("(known: o0, o1, o10, … (5001 in all))"),
            "{:?}",
            found[0]
        );
    }

    #[test]
    fn an_unknown_name_suggests_the_nearest() {
        let found = problems(
            r#"
name: t
sources: [{ name: lines, stream: s }]
operators:
  - { name: split, module: filter, input: lines }
  - { name: count, module: filter, input: splt }
sinks: [{ name: out, stream: o, input: count }]
"#,
        );
        assert!(
            found
                .iter()
                .any(|f| f.contains("unknown input \"splt\"")
                    && f.contains("did you mean \"split\"?")),
            "{found:?}"
        );
        assert_eq!(close_enough("split", "split"), Some(0));
        assert_eq!(close_enough("count", "cuont"), Some(2));
        assert_eq!(close_enough("a", "zzzzzz"), None);
    }

    #[test]
    fn a_sink_has_exactly_one_target_and_its_settings_are_checked() {
        let doc = parse_topology(
            "name: t\nsources: [{ name: s, stream: s }]\nsinks:\n  - { name: a, stream: o, input: s, http: { url: 'http://h/x' } }\n  - { name: b, input: s, postgres: { table: totals, key_columns: [k], columns: { k: key, n: '$.n' } } }\n",
        )
        .unwrap();
        let no_default_url = ValidateOptions {
            postgres_url_required: true,
            ..ValidateOptions::default()
        };
        let found = validate_topology_with(&doc, &(), no_default_url);
        let paths: Vec<&str> = found.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["sinks[0]", "sinks[1].postgres.url"], "{found:#?}");
        assert_eq!(validate_topology(&doc, &()).len(), 1);
    }

    #[test]
    fn the_server_refuses_file_endpoints() {
        let doc = parse_topology(
            "name: t\nsources: [{ name: s, file: in.jsonl }]\nsinks: [{ name: o, stream: o, input: s }]\n",
        )
        .unwrap();
        let options = ValidateOptions {
            streams_only: true,
            ..ValidateOptions::default()
        };
        let found = validate_topology_with(&doc, &(), options);
        assert!(
            found
                .iter()
                .any(|p| p.path == "sources[0].file" && p.message.contains("embedded streams")),
            "{found:?}"
        );
        assert!(validate_topology(&doc, &()).is_empty());
    }
}
