//! Events → rows: each mapped column's text from the event's key, its
//! timestamp or a field of its JSON value, and the folding of an upsert
//! batch to one row per key (the last event of a key wins), since one
//! `INSERT … ON CONFLICT` cannot touch a row twice. Values travel as text
//! and PostgreSQL parses them into the columns' types, so a value a column
//! cannot hold is refused with the database's own message.

use std::collections::HashMap;

use serde_json::Value;
use weir_types::EventRef;

/// Where one column's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ColumnSource {
    /// The event's key, as UTF-8 text.
    Key,
    /// Event time, ms since the Unix epoch.
    Timestamp,
    /// The whole value as written (`$`), e.g. for a `jsonb` column.
    Value,
    /// A field of the JSON value (`$.a.b`; a number picks an array item).
    Path(Vec<String>),
}

impl ColumnSource {
    /// `key`, `timestamp`, `$` or `$.a.b` (checked by the topology's
    /// validation; `None` otherwise).
    pub(crate) fn parse(from: &str) -> Option<ColumnSource> {
        if !weir_topology::is_column_source(from) {
            return None;
        }
        Some(match from {
            "key" => ColumnSource::Key,
            "timestamp" => ColumnSource::Timestamp,
            "$" => ColumnSource::Value,
            path => ColumnSource::Path(path[2..].split('.').map(str::to_string).collect()),
        })
    }

    fn needs_json(&self) -> bool {
        matches!(self, ColumnSource::Path(_))
    }
}

/// One row: a text value (or SQL NULL) per mapped column.
pub(crate) type RowValues = Vec<Option<String>>;

/// A row and the index of the event it came from (for dead letters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub values: RowValues,
    pub event: usize,
}

/// The row of `event` under `sources`, or why it has none (a missing
/// field, a value that is not JSON, a missing or binary key).
pub(crate) fn map_event(
    sources: &[ColumnSource],
    event: &EventRef<'_>,
) -> Result<RowValues, String> {
    let json: Option<Value> = if sources.iter().any(ColumnSource::needs_json) {
        Some(serde_json::from_slice(event.value).map_err(|e| {
            format!("the value is not JSON ({e}): columns mapped from `$.…` need a JSON value")
        })?)
    } else {
        None
    };
    sources
        .iter()
        .map(|source| match source {
            ColumnSource::Key => match event.key {
                None => Err("the event has no key, but a column is mapped from `key`".to_string()),
                Some(k) => std::str::from_utf8(k)
                    .map(|k| Some(k.to_string()))
                    .map_err(|_| "the event's key is not UTF-8 text".to_string()),
            },
            ColumnSource::Timestamp => Ok(Some(event.timestamp.to_string())),
            ColumnSource::Value => std::str::from_utf8(event.value)
                .map(|v| Some(v.to_string()))
                .map_err(|_| {
                    "the value is not UTF-8 text, but a column is mapped from `$`".to_string()
                }),
            ColumnSource::Path(fields) => {
                let mut at = json.as_ref();
                for field in fields {
                    at = match at {
                        Some(Value::Object(map)) => map.get(field),
                        Some(Value::Array(items)) => {
                            field.parse::<usize>().ok().and_then(|i| items.get(i))
                        }
                        _ => None,
                    };
                }
                at.map(text_of)
                    .ok_or_else(|| format!("the value has no field `$.{}`", fields.join(".")))
            }
        })
        .collect()
}

/// A JSON value as column text: strings as they are, `null` as SQL NULL,
/// anything else as its JSON text (a number, `true`, an object for `jsonb`).
fn text_of(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// `rows` with one row per key (the values at `key_columns`): the last row
/// of a key replaces earlier ones, keeping the place of its first.
pub(crate) fn fold_by_key(rows: Vec<Row>, key_columns: &[usize]) -> Vec<Row> {
    let mut slot: HashMap<Vec<Option<String>>, usize> = HashMap::with_capacity(rows.len());
    let mut out: Vec<Row> = Vec::with_capacity(rows.len());
    for row in rows {
        let key: Vec<Option<String>> = key_columns.iter().map(|&i| row.values[i].clone()).collect();
        match slot.get(&key) {
            Some(&i) => out[i] = row,
            None => {
                slot.insert(key, out.len());
                out.push(row);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event<'a>(key: Option<&'a [u8]>, value: &'a [u8]) -> EventRef<'a> {
        EventRef {
            key,
            value,
            timestamp: 42,
            headers: &[],
        }
    }

    fn sources(list: &[&str]) -> Vec<ColumnSource> {
        list.iter()
            .map(|s| ColumnSource::parse(s).unwrap())
            .collect()
    }

    #[test]
    fn columns_come_from_key_timestamp_and_json_paths() {
        let s = sources(&[
            "key",
            "timestamp",
            "$.user.id",
            "$.tags.1",
            "$.n",
            "$.gone",
            "$",
        ]);
        let value = br#"{"user":{"id":"u1"},"tags":["a","b"],"n":3,"gone":null}"#;
        let row = map_event(&s, &event(Some(b"k"), value)).unwrap();
        let text: Vec<Option<&str>> = row.iter().map(Option::as_deref).collect();
        assert_eq!(
            text,
            [
                Some("k"),
                Some("42"),
                Some("u1"),
                Some("b"),
                Some("3"),
                None,
                Some(std::str::from_utf8(value).unwrap())
            ]
        );
    }

    #[test]
    fn an_event_without_a_mapped_field_or_key_says_which() {
        let s = sources(&["key", "$.amount"]);
        let err = map_event(&s, &event(Some(b"k"), br#"{"other":1}"#)).unwrap_err();
        assert_eq!(err, "the value has no field `$.amount`");
        let err = map_event(&s, &event(None, br#"{"amount":1}"#)).unwrap_err();
        assert!(err.contains("no key"), "{err}");
        let err = map_event(&s, &event(Some(b"k"), b"not json")).unwrap_err();
        assert!(err.contains("not JSON"), "{err}");
        let err = map_event(&s, &event(Some(&[0xff]), br#"{"amount":1}"#)).unwrap_err();
        assert!(err.contains("UTF-8"), "{err}");
        assert_eq!(ColumnSource::parse("$.a..b"), None);
        assert_eq!(ColumnSource::parse("value"), None);
    }

    #[test]
    fn folding_keeps_the_last_row_of_each_key_in_first_seen_order() {
        let row = |k: &str, n: &str, event| Row {
            values: vec![Some(k.into()), Some(n.into())],
            event,
        };
        let folded = fold_by_key(
            vec![
                row("a", "1", 0),
                row("b", "1", 1),
                row("a", "2", 2),
                row("a", "3", 3),
            ],
            &[0],
        );
        assert_eq!(folded, vec![row("a", "3", 3), row("b", "1", 1)]);
    }
}
