//! The topology document, as users write it (JSON or YAML).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::TopologyError;
use crate::depth::{MAX_DOCUMENT_DEPTH, json_depth, yaml_depth};
use crate::sinks::{HttpSinkDoc, PostgresSinkDoc};

/// A topology: sources → operators → sinks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyDoc {
    pub name: String,
    #[serde(default)]
    pub sources: Vec<SourceDoc>,
    #[serde(default)]
    pub operators: Vec<OperatorDoc>,
    #[serde(default)]
    pub sinks: Vec<SinkDoc>,
    /// Number of key groups keyed state is split into (default 128). Fixed
    /// for the life of the topology's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_groups: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointDoc>,
    /// The stream dead letters (and late events under `on_late:
    /// dead-letter`) go to; default `<name>-dead-letter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_stream: Option<String>,
    /// How the server restarts the topology after a failure; unset fields
    /// take the server's defaults (`weir run` does not restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartDoc>,
    /// How the topology runs on a cluster (`weir serve --cluster`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterDoc>,
}

/// Cluster settings of a topology whose sources are Kafka topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterDoc {
    /// Warm copies of each partition's state kept on other nodes (tailing
    /// its changelog), so the node that takes a partition over restores
    /// only the tail; default 0, at most the cluster's nodes less one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standbys: Option<u32>,
}

/// Where events come from: an embedded stream, a JSON-lines file or a
/// Kafka topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceDoc {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<crate::KafkaSourceDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<WatermarkDoc>,
}

/// How a source's watermark trails the highest timestamp it has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkDoc {
    #[serde(default)]
    pub max_out_of_orderness_ms: i64,
}

/// An operator: a module run over its inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorDoc {
    pub name: String,
    /// `name@version`, `name` (the latest version), `sha256:<hex>`, or (in
    /// local runs) a path to a `.wasm` file.
    pub module: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_by: Option<KeyBy>,
    pub input: Inputs,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<ErrorPolicyDoc>,
    /// What happens to an event that arrives behind the operator's
    /// watermark (it is counted as late in every case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_late: Option<LatePolicyDoc>,
    /// Its own sandbox limits, tighter (or, up to the server's maximum,
    /// looser) than the server's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<OperatorLimitsDoc>,
}

/// An operator's own limits, per instance; each one left out is the
/// server's, and none may be over the server's maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct OperatorLimitsDoc {
    /// Linear memory an instance may grow to, MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Time one call (a batch, or fired timers) may run, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_budget_ms: Option<u64>,
    /// Largest state value (or map entry, or list) one write may store,
    /// bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_state_value_bytes: Option<u64>,
    /// Most bytes of events (keys, values, headers) one call may emit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes_per_call: Option<u64>,
}

/// Limits of an operator instance as they apply: the server's maximum
/// ([`TopologyLimits::operator`](crate::TopologyLimits::operator)), or one
/// operator's own over it ([`OperatorLimits::with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorLimits {
    pub memory_mb: u64,
    pub call_budget_ms: u64,
    pub max_state_value_bytes: u64,
    pub max_output_bytes_per_call: u64,
}

impl OperatorLimits {
    /// No bound: what a local run checks against.
    pub const UNBOUNDED: OperatorLimits = OperatorLimits {
        memory_mb: u64::MAX,
        call_budget_ms: u64::MAX,
        max_state_value_bytes: u64::MAX,
        max_output_bytes_per_call: u64::MAX,
    };

    /// These limits with the ones `own` sets instead.
    pub fn with(self, own: Option<&OperatorLimitsDoc>) -> OperatorLimits {
        let Some(own) = own else { return self };
        OperatorLimits {
            memory_mb: own.memory_mb.unwrap_or(self.memory_mb),
            call_budget_ms: own.call_budget_ms.unwrap_or(self.call_budget_ms),
            max_state_value_bytes: own
                .max_state_value_bytes
                .unwrap_or(self.max_state_value_bytes),
            max_output_bytes_per_call: own
                .max_output_bytes_per_call
                .unwrap_or(self.max_output_bytes_per_call),
        }
    }

    /// Each limit with its name in the document, the value `own` gives it
    /// (if any), and the server flag that raises it.
    pub fn fields(
        &self,
        own: &OperatorLimitsDoc,
    ) -> [(&'static str, Option<u64>, u64, &'static str); 4] {
        [
            (
                "memory_mb",
                own.memory_mb,
                self.memory_mb,
                "--operator-memory-mb",
            ),
            (
                "call_budget_ms",
                own.call_budget_ms,
                self.call_budget_ms,
                "--operator-call-budget-ms",
            ),
            (
                "max_state_value_bytes",
                own.max_state_value_bytes,
                self.max_state_value_bytes,
                "--operator-max-state-value-bytes",
            ),
            (
                "max_output_bytes_per_call",
                own.max_output_bytes_per_call,
                self.max_output_bytes_per_call,
                "--operator-max-output-bytes-per-call",
            ),
        ]
    }
}

/// What happens to a late event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LatePolicyDoc {
    /// Process it like any other (windows decide with their lateness).
    #[default]
    Keep,
    /// Drop it.
    Drop,
    /// Send it to the dead-letter output instead of processing it.
    DeadLetter,
}

/// What to partition an operator's input by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, try_from = "KeyByDoc")]
pub enum KeyBy {
    /// `key`: the event's key as it is.
    Key(KeyByKey),
    /// `{field: user}`: the text of a top-level field of the JSON value,
    /// which also becomes the event's key.
    Field { field: String },
}

/// `key_by` as written, before it is checked (so that a mistake gets a
/// message saying what to write, not serde's "did not match any variant").
#[derive(Deserialize)]
#[serde(untagged)]
enum KeyByDoc {
    Word(String),
    Field { field: String },
    Other(serde::de::IgnoredAny),
}

impl TryFrom<KeyByDoc> for KeyBy {
    type Error = String;

    fn try_from(doc: KeyByDoc) -> Result<Self, String> {
        match doc {
            KeyByDoc::Word(w) if w == "key" => Ok(KeyBy::Key(KeyByKey::Key)),
            KeyByDoc::Word(w) => Err(format!(
                "key_by `{w}` is neither `key` (the event's key) nor a field: to key by the \
                 value's field `{w}`, write `key_by: {{field: {w}}}`"
            )),
            KeyByDoc::Field { field } => Ok(KeyBy::Field { field }),
            KeyByDoc::Other(_) => Err(
                "key_by must be `key` (the event's key) or `{field: NAME}` (a top-level field \
                 of the JSON value)"
                    .into(),
            ),
        }
    }
}

/// The word `key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyByKey {
    Key,
}

/// One input name, or several (their union).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Inputs {
    One(String),
    Many(Vec<String>),
}

impl Inputs {
    pub fn names(&self) -> Vec<&str> {
        match self {
            Inputs::One(n) => vec![n.as_str()],
            Inputs::Many(ns) => ns.iter().map(String::as_str).collect(),
        }
    }
}

/// What an input name refers to: a node's main output, or side output
/// `output` of operator `node` (written `node.output` in a document).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputRef<'a> {
    pub node: &'a str,
    pub output: Option<&'a str>,
}

impl TopologyDoc {
    /// Resolves many input names against this document's names, each in
    /// constant time (a document may hold thousands of operators).
    pub fn inputs_resolver(&self) -> InputResolver<'_> {
        let nodes = (self.sources.iter().map(|s| s.name.as_str()))
            .chain(self.operators.iter().map(|o| o.name.as_str()))
            .chain(self.sinks.iter().map(|s| s.name.as_str()))
            .collect();
        let operators = self.operators.iter().map(|o| o.name.as_str()).collect();
        InputResolver { nodes, operators }
    }
}

/// The names of a document's sources, operators and sinks, to resolve its
/// inputs by.
pub struct InputResolver<'d> {
    nodes: std::collections::HashSet<&'d str>,
    operators: std::collections::HashSet<&'d str>,
}

impl<'d> InputResolver<'d> {
    /// What input `name` refers to. A name that is a source, operator or
    /// sink is that node's (main) output; otherwise `a.b` where `a` is an
    /// operator is side output `b` of `a` (the last `.` splits, since names
    /// may hold dots and side output names may not). Anything else is left
    /// whole, for validation to report as unknown.
    pub fn resolve<'a>(&self, name: &'a str) -> InputRef<'a> {
        let whole = InputRef {
            node: name,
            output: None,
        };
        if self.nodes.contains(name) {
            return whole;
        }
        match name.rsplit_once('.') {
            Some((node, output)) if !output.is_empty() && self.operators.contains(node) => {
                InputRef {
                    node,
                    output: Some(output),
                }
            }
            _ => whole,
        }
    }
}

/// What happens to an event an operator fails on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorPolicyDoc {
    #[default]
    Fail,
    Skip,
    DeadLetter,
}

/// Where events go: an embedded stream, a JSON-lines file, a Kafka topic,
/// a PostgreSQL table or an HTTP endpoint (exactly one of them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkDoc {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<crate::KafkaSinkDoc>,
    pub input: Inputs,
    // Sinks outside Weir (`sinks.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSinkDoc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpSinkDoc>,
}

/// Checkpoint settings (used once state is durable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointDoc {
    pub interval_ms: u64,
    /// Interval checkpoints in a row whose commit may fail (no space, an
    /// I/O error) before the topology fails; default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerable_failed_checkpoints: Option<u32>,
    /// Once every source has read all there is and something new was read,
    /// a checkpoint is taken at once (at most one per `idle_ms`), so
    /// exactly-once output is visible without waiting for the interval;
    /// default 100, 0 turns it off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_ms: Option<u64>,
}

impl CheckpointDoc {
    /// The least time between checkpoints taken as soon as the sources
    /// caught up (`idle_ms`), `None` when turned off; `default` when the
    /// document does not say.
    pub fn on_idle(&self, default: Option<Duration>) -> Option<Duration> {
        match self.idle_ms {
            None => default,
            Some(0) => None,
            Some(ms) => Some(Duration::from_millis(ms)),
        }
    }
}

/// Restart strategy of a topology: after a task fails, the server starts it
/// again from its last checkpoint after an exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartDoc {
    /// Restarts in a row before the topology is `failed` (0: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Wait before the first restart; each next wait doubles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_backoff_ms: Option<u64>,
    /// Longest wait between two restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_backoff_ms: Option<u64>,
    /// A run this long without a failure resets the attempts and backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_after_ms: Option<u64>,
}

/// Reads a topology from JSON or YAML text (JSON is tried first when the
/// text starts with `{`). Text that nests deeper than
/// [`MAX_DOCUMENT_DEPTH`] is refused before it is parsed. Parsing takes
/// time linear in the text: callers on an async runtime run it on the
/// blocking pool.
pub fn parse_topology(text: &str) -> Result<TopologyDoc, TopologyError> {
    let json = text.trim_start().starts_with('{');
    let depth = if json {
        json_depth(text, MAX_DOCUMENT_DEPTH)
    } else {
        yaml_depth(text, MAX_DOCUMENT_DEPTH)
    };
    if depth > MAX_DOCUMENT_DEPTH {
        return Err(TopologyError::TooDeep {
            limit: MAX_DOCUMENT_DEPTH,
        });
    }
    if json {
        serde_json::from_str(text).map_err(|e| TopologyError::Parse {
            format: "JSON",
            message: e.to_string(),
        })
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| TopologyError::Parse {
            format: "YAML",
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_by_word_other_than_key_says_how_to_key_by_a_field() {
        let err = parse_topology(
            "name: t\nsources: [{ name: s, stream: s }]\noperators:\n  - { name: c, module: m, input: s, key_by: user }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("write `key_by: {field: user}`"), "{err}");
        assert!(!err.contains("untagged enum"), "{err}");
        let err = parse_topology(
            r#"{"name":"t","sources":[],"operators":[{"name":"c","module":"m","input":"s","key_by":3}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("key_by must be `key`"), "{err}");
    }

    #[test]
    fn reads_the_documented_yaml_shape() {
        let doc = parse_topology(
            r#"
name: word-count
sources: [{ name: lines, stream: lines }]
operators:
  - { name: split, module: split-words, input: lines }
  - { name: count, module: word-count@1, input: split, key_by: key, parallelism: 2 }
  - name: big
    module: filter
    input: [split, count]
    key_by: { field: user }
    config: { field: amount, op: gt, value: 50 }
    on_error: dead-letter
sinks: [{ name: out, stream: counts, input: count }]
"#,
        )
        .unwrap();
        assert_eq!(doc.name, "word-count");
        assert_eq!(doc.operators[1].key_by, Some(KeyBy::Key(KeyByKey::Key)));
        assert_eq!(doc.operators[1].parallelism, Some(2));
        assert_eq!(doc.operators[2].input.names(), vec!["split", "count"]);
        assert_eq!(
            doc.operators[2].key_by,
            Some(KeyBy::Field {
                field: "user".into()
            })
        );
        assert_eq!(doc.operators[2].on_error, Some(ErrorPolicyDoc::DeadLetter));
        // The same document as JSON reads the same.
        let json = serde_json::to_string(&doc).unwrap();
        assert_eq!(parse_topology(&json).unwrap(), doc);
    }

    #[test]
    fn parse_errors_say_where() {
        let err = parse_topology("{\"name\": 3}").unwrap_err();
        assert!(err.to_string().contains("JSON"), "{err}");
        let err =
            parse_topology("name: x\noperators: [{ name: a, modul: b, input: c }]\n").unwrap_err();
        assert!(err.to_string().contains("modul"), "{err}");
    }

    #[test]
    fn deep_documents_are_refused_before_parsing() {
        // 100,000 levels in 200 KB of YAML took the parser tens of seconds.
        let yaml = format!("name: x\nsinks: {}", "[".repeat(200_000));
        let err = parse_topology(&yaml).unwrap_err();
        assert!(matches!(err, TopologyError::TooDeep { limit: 64 }), "{err}");
        assert!(err.to_string().contains("64 levels"), "{err}");
        let compact = format!("name: x\nsinks:\n{}x\n", "- ".repeat(100_000));
        assert!(matches!(
            parse_topology(&compact),
            Err(TopologyError::TooDeep { .. })
        ));
        let json = format!(
            "{{\"name\": \"x\", \"operators\": [{{\"name\": \"a\", \"module\": \"m\", \"input\": \"s\", \"config\": {}}}]}}",
            "[".repeat(100_000)
        );
        assert!(matches!(
            parse_topology(&json),
            Err(TopologyError::TooDeep { .. })
        ));
        // A config nested a few levels is fine.
        let ok = "name: x\noperators:\n  - { name: a, module: m, input: s, config: { a: { b: [[1]] } } }\n";
        assert!(parse_topology(ok).is_ok());
    }
}
