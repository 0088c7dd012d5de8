//! `kafka:` sources and sinks of a topology document, and their checks.
//!
//! A source reads every partition of one topic (`read_committed`); a sink
//! writes one topic, exactly-once by default (one Kafka transaction per
//! checkpoint, with a progress marker). `brokers` may be left out when the
//! server (or `weir run`) has a default (`--kafka-brokers`,
//! `WEIR_KAFKA_BROKERS`). Whether the topic exists is checked when the
//! topology starts, not here: the document alone cannot know.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ErrorPolicyDoc;

/// Most entries of one `properties` map.
pub const MAX_KAFKA_PROPERTIES: usize = 64;
/// Longest property name or value, bytes.
pub const MAX_KAFKA_PROPERTY_BYTES: usize = 4096;
/// Longest Kafka topic name (Kafka's own bound).
pub const MAX_TOPIC_NAME_BYTES: usize = 249;

/// A source reading a Kafka topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceDoc {
    pub topic: String,
    /// `host:port[,host:port…]`; default: the server's `--kafka-brokers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brokers: Option<String>,
    /// Where a partition is read from when no checkpoint says (default
    /// `earliest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<KafkaStart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<KafkaFormat>,
    /// The event's key: the record's key (default) or a field of its JSON
    /// value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KafkaField>,
    /// The event's time: the record's timestamp (default) or a field of
    /// its JSON value (ms since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<KafkaField>,
    /// Carry the record's headers into the event (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<bool>,
    /// A partition with no record for this long does not hold back event
    /// time (default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    /// A record that `format` cannot read (not JSON under `json`, not
    /// UTF-8 under `text`): `dead-letter` (default; with its partition and
    /// offset in headers), `skip`, or `fail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<ErrorPolicyDoc>,
    /// librdkafka consumer settings (`fetch.max.bytes`, `client.id`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, serde_json::Value>,
}

/// A sink writing a Kafka topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkDoc {
    pub topic: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brokers: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<KafkaFormat>,
    /// The record's key, which Kafka partitions by: the event's key
    /// (`record`, default) or the text of a top-level field of the
    /// event's JSON value (as `key_by: {field: NAME}` reads it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KafkaField>,
    /// Carry the event's headers into the record (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<KafkaDelivery>,
    /// The compacted topic of progress markers (exactly-once); default
    /// `weir-progress`, created when missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_topic: Option<String>,
    /// The producer's `transactional.id` (exactly-once); default
    /// `weir.<topology>.<sink>`. Two sinks must never share one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transactional_id: Option<String>,
    /// librdkafka producer settings (`linger.ms`, `compression.type`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, serde_json::Value>,
}

/// Where a partition is read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, try_from = "StartDoc")]
pub enum KafkaStart {
    /// `earliest` or `latest`.
    Edge(KafkaEdge),
    /// `{timestamp: MS}`: the first record at or after this time.
    Timestamp { timestamp: i64 },
    /// `{offsets: {PARTITION: OFFSET}}`; partitions not named start at
    /// `earliest`.
    Offsets { offsets: BTreeMap<u32, u64> },
}

/// The two ends of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KafkaEdge {
    Earliest,
    Latest,
}

/// `start` as written, checked into [`KafkaStart`] with a message that
/// says what to write.
#[derive(Deserialize)]
#[serde(untagged)]
enum StartDoc {
    Word(String),
    Timestamp {
        timestamp: i64,
    },
    Offsets {
        offsets: BTreeMap<PartitionDoc, u64>,
    },
    Other(serde::de::IgnoredAny),
}

/// A partition number as a map key: YAML gives a number, JSON a string.
#[derive(Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(untagged)]
enum PartitionDoc {
    Number(u32),
    Text(String),
}

impl TryFrom<StartDoc> for KafkaStart {
    type Error = String;

    fn try_from(doc: StartDoc) -> Result<Self, String> {
        match doc {
            StartDoc::Word(w) if w == "earliest" => Ok(KafkaStart::Edge(KafkaEdge::Earliest)),
            StartDoc::Word(w) if w == "latest" => Ok(KafkaStart::Edge(KafkaEdge::Latest)),
            StartDoc::Timestamp { timestamp } => Ok(KafkaStart::Timestamp { timestamp }),
            StartDoc::Offsets { offsets } => {
                let mut out = BTreeMap::new();
                for (partition, offset) in offsets {
                    let number = match partition {
                        PartitionDoc::Number(n) => n,
                        PartitionDoc::Text(t) => t.parse().map_err(|_| {
                            format!("kafka start offsets: {t:?} is not a partition number")
                        })?,
                    };
                    out.insert(number, offset);
                }
                Ok(KafkaStart::Offsets { offsets: out })
            }
            StartDoc::Word(_) | StartDoc::Other(_) => Err(
                "kafka start must be `earliest`, `latest`, `{timestamp: MS}` or \
                 `{offsets: {PARTITION: OFFSET}}`"
                    .into(),
            ),
        }
    }
}

/// How record values become event values and back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KafkaFormat {
    /// The value is JSON (events carry it as compact JSON).
    #[default]
    Json,
    /// The value is UTF-8 text (events carry it as a JSON string).
    Text,
    /// The value is opaque bytes, carried as they are.
    Bytes,
}

/// Where a key or timestamp comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, try_from = "FieldDoc")]
pub enum KafkaField {
    /// `record`: the record's own key or timestamp.
    Record(KafkaRecord),
    /// `{field: NAME}`: a top-level field of the JSON value.
    Field { field: String },
}

/// The word `record`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KafkaRecord {
    Record,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FieldDoc {
    Word(String),
    Field { field: String },
    Other(serde::de::IgnoredAny),
}

impl TryFrom<FieldDoc> for KafkaField {
    type Error = String;

    fn try_from(doc: FieldDoc) -> Result<Self, String> {
        match doc {
            FieldDoc::Word(w) if w == "record" => Ok(KafkaField::Record(KafkaRecord::Record)),
            FieldDoc::Field { field } => Ok(KafkaField::Field { field }),
            FieldDoc::Word(_) | FieldDoc::Other(_) => Err(
                "must be `record` or `{field: NAME}` (a top-level field of the JSON value)".into(),
            ),
        }
    }
}

/// What a Kafka sink promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KafkaDelivery {
    /// One transaction per checkpoint, after Weir's commit, with a
    /// progress marker; `read_committed` readers see each result once.
    #[default]
    ExactlyOnce,
    /// An idempotent producer writing as output comes; after a crash some
    /// output may be written twice.
    AtLeastOnce,
}

/// Settings the connector owns: a source's `properties` may not set them.
const SOURCE_OWNED: &[(&str, &str)] = &[
    ("bootstrap.servers", "set `brokers`"),
    ("enable.auto.commit", "offsets live in Weir's checkpoints"),
    (
        "enable.auto.offset.store",
        "offsets live in Weir's checkpoints",
    ),
    (
        "isolation.level",
        "the source reads committed records only, so aborted output is never read",
    ),
];

/// Settings the connector owns: a sink's `properties` may not set them.
const SINK_OWNED: &[(&str, &str)] = &[
    ("bootstrap.servers", "set `brokers`"),
    ("transactional.id", "set `transactional_id`"),
    ("enable.idempotence", "set `delivery`"),
];

/// Problems of a `kafka:` source, as (path below `kafka`, message).
/// `default_brokers`: whether the caller has brokers for a source that
/// names none.
pub(crate) fn source_problems(
    doc: &KafkaSourceDoc,
    default_brokers: bool,
) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    check_topic(&mut problems, "topic", &doc.topic);
    check_brokers(&mut problems, &doc.brokers, default_brokers);
    let json = doc.format.unwrap_or_default() == KafkaFormat::Json;
    for (name, field) in [("key", &doc.key), ("timestamp", &doc.timestamp)] {
        match field {
            Some(KafkaField::Field { field }) if field.is_empty() => {
                problems.push((name.into(), "must name a field of the value".into()));
            }
            Some(KafkaField::Field { .. }) if !json => problems.push((
                name.into(),
                "a field of the value needs `format: json`".into(),
            )),
            _ => {}
        }
    }
    if let Some(KafkaStart::Offsets { offsets }) = &doc.start
        && offsets.is_empty()
    {
        problems.push((
            "start.offsets".into(),
            "name at least one partition, or use `earliest`".into(),
        ));
    }
    if doc.idle_timeout_ms == Some(0) {
        problems.push(("idle_timeout_ms".into(), "must be at least 1".into()));
    }
    check_properties(&mut problems, &doc.properties, SOURCE_OWNED);
    problems
}

/// Problems of a `kafka:` sink, as (path below `kafka`, message).
pub(crate) fn sink_problems(doc: &KafkaSinkDoc, default_brokers: bool) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    check_topic(&mut problems, "topic", &doc.topic);
    check_brokers(&mut problems, &doc.brokers, default_brokers);
    if let Some(KafkaField::Field { field }) = &doc.key
        && field.is_empty()
    {
        problems.push(("key".into(), "must name a field of the value".into()));
    }
    if let Some(topic) = &doc.progress_topic {
        check_topic(&mut problems, "progress_topic", topic);
        if *topic == doc.topic {
            problems.push((
                "progress_topic".into(),
                "must differ from `topic`: markers would mix with the output".into(),
            ));
        }
    }
    if let Some(id) = &doc.transactional_id
        && (id.is_empty() || id.len() > MAX_KAFKA_PROPERTY_BYTES)
    {
        problems.push((
            "transactional_id".into(),
            format!("must be 1-{MAX_KAFKA_PROPERTY_BYTES} bytes"),
        ));
    }
    check_properties(&mut problems, &doc.properties, SINK_OWNED);
    problems
}

fn check_topic(problems: &mut Vec<(String, String)>, path: &str, topic: &str) {
    let valid = !topic.is_empty()
        && topic.len() <= MAX_TOPIC_NAME_BYTES
        && topic != "."
        && topic != ".."
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !valid {
        problems.push((
            path.into(),
            format!(
                "{topic:?} is not a valid Kafka topic name: use 1-{MAX_TOPIC_NAME_BYTES} of \
                 A-Z a-z 0-9 . _ - (not `.` or `..`)"
            ),
        ));
    }
}

fn check_brokers(problems: &mut Vec<(String, String)>, brokers: &Option<String>, default: bool) {
    match brokers {
        None if !default => problems.push((
            "brokers".into(),
            "no brokers: set `brokers: HOST:PORT`, or start Weir with --kafka-brokers \
             (WEIR_KAFKA_BROKERS)"
                .into(),
        )),
        None => {}
        Some(list) => {
            let bad = list.len() > MAX_KAFKA_PROPERTY_BYTES
                || list.split(',').any(|b| {
                    let b = b.trim();
                    match b.rsplit_once(':') {
                        Some((host, port)) => host.is_empty() || port.parse::<u16>().is_err(),
                        None => true,
                    }
                });
            if bad {
                problems.push((
                    "brokers".into(),
                    format!("{list:?} is not a list of HOST:PORT separated by commas"),
                ));
            }
        }
    }
}

fn check_properties(
    problems: &mut Vec<(String, String)>,
    properties: &BTreeMap<String, serde_json::Value>,
    owned: &[(&str, &str)],
) {
    if properties.len() > MAX_KAFKA_PROPERTIES {
        problems.push((
            "properties".into(),
            format!(
                "{} entries, more than {MAX_KAFKA_PROPERTIES}",
                properties.len()
            ),
        ));
        return;
    }
    for (name, value) in properties {
        let path = format!("properties.{name}");
        if let Some((_, why)) = owned.iter().find(|(owned, _)| owned == name) {
            problems.push((path, format!("is set by Weir: {why}")));
            continue;
        }
        match property_text(value) {
            Some(text) if text.len() <= MAX_KAFKA_PROPERTY_BYTES => {}
            Some(_) => problems.push((
                path,
                format!("longer than {MAX_KAFKA_PROPERTY_BYTES} bytes"),
            )),
            None => problems.push((path, "must be a string, a number or a boolean".into())),
        }
    }
    if let Some(name) = properties
        .keys()
        .find(|n| n.is_empty() || n.len() > MAX_KAFKA_PROPERTY_BYTES)
    {
        problems.push((
            "properties".into(),
            format!("{:?} is not a property name", truncate(name)),
        ));
    }
}

/// A property's value as librdkafka takes it (text); `None` for arrays,
/// objects and null.
pub fn property_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn truncate(text: &str) -> &str {
    let mut end = text.len().min(64);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(yaml: &str) -> KafkaSourceDoc {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn reads_every_start_and_field_shape() {
        let doc = source(
            "{topic: t, start: {offsets: {0: 5, 3: 9}}, key: {field: user}, timestamp: record}",
        );
        assert_eq!(
            doc.start,
            Some(KafkaStart::Offsets {
                offsets: BTreeMap::from([(0, 5), (3, 9)])
            })
        );
        assert_eq!(
            doc.key,
            Some(KafkaField::Field {
                field: "user".into()
            })
        );
        assert_eq!(
            source("{topic: t, start: latest}").start,
            Some(KafkaStart::Edge(KafkaEdge::Latest))
        );
        assert_eq!(
            source("{topic: t, start: {timestamp: 17}}").start,
            Some(KafkaStart::Timestamp { timestamp: 17 })
        );
        let err = serde_yaml_ng::from_str::<KafkaSourceDoc>("{topic: t, start: newest}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`earliest`, `latest`"), "{err}");
        let json = serde_json::to_string(&doc).unwrap();
        assert_eq!(serde_json::from_str::<KafkaSourceDoc>(&json).unwrap(), doc);
    }

    #[test]
    fn bad_settings_name_their_field() {
        let doc = source(
            "{topic: 'a b', timestamp: {field: ts}, format: text, idle_timeout_ms: 0, \
             properties: {isolation.level: read_uncommitted, fetch.max.bytes: [1]}}",
        );
        let paths: Vec<String> = source_problems(&doc, false)
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        assert_eq!(
            paths,
            [
                "topic",
                "brokers",
                "timestamp",
                "idle_timeout_ms",
                "properties.fetch.max.bytes",
                "properties.isolation.level"
            ]
        );
        // The server's default brokers stand in for a missing `brokers`.
        assert!(source_problems(&source("{topic: t}"), true).is_empty());
        let bad = source("{topic: t, brokers: 'localhost'}");
        assert_eq!(source_problems(&bad, true)[0].0, "brokers");
        let sink: KafkaSinkDoc = serde_yaml_ng::from_str(
            "{topic: out, key: {field: ''}, progress_topic: out, \
             properties: {transactional.id: x, linger.ms: 5}}",
        )
        .unwrap();
        let problems = sink_problems(&sink, true);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert_eq!(problems[0].0, "key");
        assert_eq!(problems[1].0, "progress_topic");
        assert!(problems[2].1.contains("`transactional_id`"), "{problems:?}");
        let keyed: KafkaSinkDoc =
            serde_yaml_ng::from_str("{topic: out, key: {field: word}}").unwrap();
        assert!(sink_problems(&keyed, true).is_empty());
    }

    #[test]
    fn a_document_reports_kafka_problems_under_their_endpoint() {
        let doc = crate::parse_topology(
            "name: t\nsources: [{ name: s, stream: s, kafka: {topic: in} }]\n\
             sinks: [{ name: o, kafka: {topic: '', delivery: at-least-once}, input: s }]\n",
        )
        .unwrap();
        let options = crate::ValidateOptions {
            kafka_brokers: true,
            ..crate::ValidateOptions::default()
        };
        let found: Vec<String> = crate::validate_topology_with(&doc, &(), options)
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("sources[0]: give one of"), "{found:?}");
        assert!(found[1].contains("sinks[0].kafka.topic"), "{found:?}");
        // Without default brokers, a missing `brokers` is an error too.
        let found = crate::validate_topology(&doc, &());
        assert!(
            found.iter().any(|p| p.path == "sinks[0].kafka.brokers"),
            "{found:?}"
        );
    }
}
