//! Kafka records ↔ Weir events, by a `kafka:` block's `format`, `key`,
//! `timestamp` and `headers` settings. Pure functions over bytes, so the
//! rules are tested without a broker.
//!
//! - `json`: the record value must be JSON; the event carries it compact
//!   (as every JSON event value). Out, the event value is written as it is.
//! - `text`: the record value must be UTF-8; the event carries it as a
//!   JSON string. Out, a JSON string value is written as its text, any
//!   other value as it is.
//! - `bytes`: values pass unchanged both ways.

use std::borrow::Cow;

use weir_topology::{KafkaField, KafkaFormat, KafkaSinkDoc, KafkaSourceDoc};
use weir_types::Event;
use weir_types::wire::{compact_json, field_key, field_key_ref};

/// Header of a dead-lettered record: the topic it was read from.
pub const HEADER_TOPIC: &str = "kafka.topic";
/// Header of a dead-lettered record: its partition.
pub const HEADER_PARTITION: &str = "kafka.partition";
/// Header of a dead-lettered record: its offset.
pub const HEADER_OFFSET: &str = "kafka.offset";

/// How one source's records become events, or one sink's events records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordFormat {
    pub format: KafkaFormat,
    /// In, the event key from this field of the JSON value instead of the
    /// record key; out, the record key from this field of the event's
    /// value instead of the event key.
    pub key_field: Option<String>,
    /// The event time from this field of the JSON value instead of the
    /// record timestamp.
    pub time_field: Option<String>,
    pub headers: bool,
}

/// A record as read, borrowed from the consumer's message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordIn<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// The record's timestamp (create or log-append time), when it has one.
    pub timestamp: Option<i64>,
}

fn field_name(field: &Option<KafkaField>) -> Option<String> {
    match field {
        Some(KafkaField::Field { field }) => Some(field.clone()),
        _ => None,
    }
}

impl RecordFormat {
    pub fn of_source(doc: &KafkaSourceDoc) -> RecordFormat {
        RecordFormat {
            format: doc.format.unwrap_or_default(),
            key_field: field_name(&doc.key),
            time_field: field_name(&doc.timestamp),
            headers: doc.headers.unwrap_or(true),
        }
    }

    pub fn of_sink(doc: &KafkaSinkDoc) -> RecordFormat {
        RecordFormat {
            format: doc.format.unwrap_or_default(),
            key_field: field_name(&doc.key),
            time_field: None,
            headers: doc.headers.unwrap_or(true),
        }
    }

    /// The event of `record` (headers added by the caller); `now` stands in
    /// for a missing timestamp. `Err` says why the record cannot be read.
    pub fn to_event(&self, record: RecordIn<'_>, now: i64) -> Result<Event, String> {
        let raw = record.value.unwrap_or_default();
        let value = match self.format {
            KafkaFormat::Bytes => raw.to_vec(),
            KafkaFormat::Json => {
                let text = std::str::from_utf8(raw)
                    .map_err(|e| format!("the value is not JSON (not UTF-8: {e})"))?;
                serde_json::from_str::<serde::de::IgnoredAny>(text)
                    .map_err(|e| format!("the value is not JSON: {e}"))?;
                compact_json(text)
            }
            KafkaFormat::Text => {
                let text = std::str::from_utf8(raw)
                    .map_err(|e| format!("the value is not UTF-8 text: {e}"))?;
                serde_json::to_vec(text).map_err(|e| e.to_string())?
            }
        };
        let key = match &self.key_field {
            Some(field) => field_key(&value, field),
            None => record.key.map(<[u8]>::to_vec),
        };
        let timestamp = match &self.time_field {
            Some(field) => time_of(&value, field)?,
            None => record.timestamp.unwrap_or(now),
        };
        Ok(Event {
            key,
            value,
            timestamp,
            headers: Vec::new(),
        })
    }

    /// The record key of an event: its key, or the text of field
    /// `key_field` of its value (none when the value has no such field).
    pub fn record_key<'a>(&self, key: Option<&'a [u8]>, value: &'a [u8]) -> Option<Cow<'a, [u8]>> {
        match &self.key_field {
            Some(field) => field_key_ref(value, field),
            None => key.map(Cow::Borrowed),
        }
    }

    /// The record value of an event value.
    pub fn record_value<'a>(&self, value: &'a [u8]) -> Cow<'a, [u8]> {
        if self.format == KafkaFormat::Text
            && value.first() == Some(&b'"')
            && let Ok(text) = serde_json::from_slice::<String>(value)
        {
            return Cow::Owned(text.into_bytes());
        }
        Cow::Borrowed(value)
    }
}

/// The event time in field `field` of a JSON object value: a whole number
/// of ms since the Unix epoch.
fn time_of(value: &[u8], field: &str) -> Result<i64, String> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(value)
        .map_err(|_| format!("the value is not a JSON object with the time field `{field}`"))?;
    match map.get(field) {
        Some(v) => v.as_i64().ok_or_else(|| {
            format!("the time field `{field}` is {v}, not whole ms since the Unix epoch")
        }),
        None => Err(format!("the value has no time field `{field}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(format: KafkaFormat) -> RecordFormat {
        RecordFormat {
            format,
            key_field: None,
            time_field: None,
            headers: true,
        }
    }

    fn record(value: &[u8]) -> RecordIn<'_> {
        RecordIn {
            key: Some(b"k"),
            value: Some(value),
            timestamp: Some(5),
        }
    }

    #[test]
    fn json_values_are_checked_and_compacted() {
        let e = format(KafkaFormat::Json)
            .to_event(record(b"{ \"a\" : [1, 2] }"), 0)
            .unwrap();
        assert_eq!(e.value, br#"{"a":[1,2]}"#);
        assert_eq!(e.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(e.timestamp, 5);
        let err = format(KafkaFormat::Json)
            .to_event(record(b"not json"), 0)
            .unwrap_err();
        assert!(err.contains("not JSON"), "{err}");
        // A hostile nesting is refused by the parser's depth limit, not a
        // stack overflow.
        let deep = "[".repeat(100_000);
        assert!(
            format(KafkaFormat::Json)
                .to_event(record(deep.as_bytes()), 0)
                .is_err()
        );
    }

    #[test]
    fn text_travels_as_a_json_string_and_back() {
        let f = format(KafkaFormat::Text);
        let e = f.to_event(record(b"a \"quoted\" line"), 0).unwrap();
        assert_eq!(e.value, br#""a \"quoted\" line""#);
        assert_eq!(&*f.record_value(&e.value), b"a \"quoted\" line");
        assert_eq!(&*f.record_value(br#"{"n":1}"#), br#"{"n":1}"#);
        assert!(f.to_event(record(&[0xff, 0xfe]), 0).is_err());
        let bytes = format(KafkaFormat::Bytes);
        assert_eq!(bytes.to_event(record(&[0xff]), 0).unwrap().value, [0xff]);
        assert_eq!(&*bytes.record_value(br#""x""#), br#""x""#);
    }

    #[test]
    fn a_sink_keys_records_by_a_field_of_the_value_when_told() {
        let by_key = format(KafkaFormat::Bytes);
        assert_eq!(
            by_key.record_key(Some(b"k"), br#"{"w":"x"}"#).as_deref(),
            Some(&b"k"[..])
        );
        let by_field = RecordFormat {
            key_field: Some("w".into()),
            ..format(KafkaFormat::Bytes)
        };
        assert_eq!(
            by_field.record_key(Some(b"k"), br#"{"w":"x"}"#).as_deref(),
            Some(&b"x"[..])
        );
        // No such field: no key (Kafka spreads such records).
        assert_eq!(by_field.record_key(Some(b"k"), br#"{"v":1}"#), None);
    }

    #[test]
    fn key_and_time_can_come_from_fields() {
        let f = RecordFormat {
            key_field: Some("user".into()),
            time_field: Some("at".into()),
            ..format(KafkaFormat::Json)
        };
        let e = f
            .to_event(record(br#"{"user":"ann","at":1700}"#), 0)
            .unwrap();
        assert_eq!(e.key.as_deref(), Some(&b"ann"[..]));
        assert_eq!(e.timestamp, 1700);
        let err = f
            .to_event(record(br#"{"user":"ann","at":"x"}"#), 0)
            .unwrap_err();
        assert!(err.contains("not whole ms"), "{err}");
        // No record timestamp: the reader's clock.
        let e = format(KafkaFormat::Json)
            .to_event(
                RecordIn {
                    key: None,
                    value: Some(b"1"),
                    timestamp: None,
                },
                42,
            )
            .unwrap();
        assert_eq!((e.key, e.timestamp), (None, 42));
    }
}
