//! The JSON wire format of events (JSON lines in files, bodies over HTTP):
//!
//! ```json
//! {"key": "user-1", "value": {"amount": 3}, "timestamp": 1700000000000, "headers": {"source": "web"}}
//! ```
//!
//! - `key`: text, optional; binary keys travel as `key_b64` (base64).
//! - `value`: any JSON; an operator sees its compact JSON text (whitespace
//!   outside strings removed, nothing else changed). Binary values travel as
//!   `value_b64`, and an operator sees the decoded bytes.
//! - `timestamp`: event time in milliseconds since the Unix epoch; when
//!   absent the reader's default applies (ingestion time).
//! - `headers`: text values by name; binary ones as `headers_b64`.
//!
//! Writing is the inverse: a value that is JSON is written as JSON, anything
//! else as `value_b64`; the same for keys and headers.

use std::borrow::Cow;
use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{Batch, Event, EventRef};

/// Why a line is not an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error(
        "not an event object: {0} (expected {{\"key\"?, \"value\", \"timestamp\"?, \"headers\"?}})"
    )]
    Json(String),
    #[error("an event needs `value` (any JSON) or `value_b64`")]
    MissingValue,
    #[error("an event has both `{0}` and `{0}_b64`; give one")]
    Both(&'static str),
    #[error("`{field}` is not valid base64: {reason}")]
    Base64 { field: String, reason: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireIn<'a> {
    #[serde(borrow)]
    key: Option<Cow<'a, str>>,
    #[serde(borrow)]
    key_b64: Option<Cow<'a, str>>,
    #[serde(borrow)]
    value: Option<&'a RawValue>,
    #[serde(borrow)]
    value_b64: Option<Cow<'a, str>>,
    timestamp: Option<i64>,
    headers: Option<BTreeMap<String, String>>,
    headers_b64: Option<BTreeMap<String, String>>,
}

#[derive(Serialize)]
struct WireOut<'a> {
    /// Only in API reads, which number their events.
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_b64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_b64: Option<String>,
    timestamp: i64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    headers_b64: BTreeMap<&'a str, String>,
}

fn decode_b64(field: &str, text: &str) -> Result<Vec<u8>, WireError> {
    BASE64.decode(text).map_err(|e| WireError::Base64 {
        field: field.to_string(),
        reason: e.to_string(),
    })
}

/// `raw` (valid JSON) without whitespace outside strings.
pub fn compact_json(raw: &str) -> Vec<u8> {
    compact(raw).into_owned()
}

/// [`compact_json`], borrowing `raw` when it holds no whitespace outside
/// strings (what a client that writes compact JSON sends).
fn compact(raw: &str) -> Cow<'_, [u8]> {
    let bytes = raw.as_bytes();
    let mut in_string = false;
    let mut escaped = false;
    // Whitespace outside strings is dropped; the bytes between drops are
    // copied a run at a time.
    let mut out: Option<Vec<u8>> = None;
    let mut run_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            let out = out.get_or_insert_with(|| Vec::with_capacity(bytes.len()));
            out.extend_from_slice(&bytes[run_start..i]);
            run_start = i + 1;
        } else if b == b'"' {
            in_string = true;
        }
    }
    match out {
        None => Cow::Borrowed(bytes),
        Some(mut out) => {
            out.extend_from_slice(&bytes[run_start..]);
            Cow::Owned(out)
        }
    }
}

/// One event read from its wire text, borrowing from it where it can.
struct Parsed<'a> {
    key: Option<Cow<'a, [u8]>>,
    value: Cow<'a, [u8]>,
    timestamp: Option<i64>,
    headers: Vec<(String, Vec<u8>)>,
}

fn parse(text: &str) -> Result<Parsed<'_>, WireError> {
    let wire: WireIn<'_> =
        serde_json::from_str(text).map_err(|e| WireError::Json(e.to_string()))?;
    let key = match (wire.key, wire.key_b64) {
        (Some(_), Some(_)) => return Err(WireError::Both("key")),
        (Some(Cow::Borrowed(k)), None) => Some(Cow::Borrowed(k.as_bytes())),
        (Some(Cow::Owned(k)), None) => Some(Cow::Owned(k.into_bytes())),
        (None, Some(b)) => Some(Cow::Owned(decode_b64("key_b64", &b)?)),
        (None, None) => None,
    };
    let value = match (wire.value, wire.value_b64) {
        (Some(_), Some(_)) => return Err(WireError::Both("value")),
        (Some(raw), None) => compact(raw.get()),
        (None, Some(b)) => Cow::Owned(decode_b64("value_b64", &b)?),
        (None, None) => return Err(WireError::MissingValue),
    };
    let mut headers: Vec<(String, Vec<u8>)> = wire
        .headers
        .unwrap_or_default()
        .into_iter()
        .map(|(n, v)| (n, v.into_bytes()))
        .collect();
    for (name, b64) in wire.headers_b64.unwrap_or_default() {
        let value = decode_b64(&format!("headers_b64.{name}"), &b64)?;
        headers.push((name, value));
    }
    Ok(Parsed {
        key,
        value,
        timestamp: wire.timestamp,
        headers,
    })
}

/// Parses one event; `default_timestamp` applies when it has none.
pub fn parse_event(text: &str, default_timestamp: i64) -> Result<Event, WireError> {
    let p = parse(text)?;
    Ok(Event {
        key: p.key.map(Cow::into_owned),
        value: p.value.into_owned(),
        timestamp: p.timestamp.unwrap_or(default_timestamp),
        headers: p.headers,
    })
}

/// Parses one event straight into `batch`'s columns, with no owned
/// [`Event`] in between (the produce path); `default_timestamp` applies
/// when it has none. Nothing is added when the text is not an event.
pub fn push_event(batch: &mut Batch, text: &str, default_timestamp: i64) -> Result<(), WireError> {
    let p = parse(text)?;
    let index = batch.len() as u32;
    batch
        .headers
        .extend(p.headers.into_iter().map(|(n, v)| (index, n, v)));
    batch.push(
        p.key.as_deref(),
        &p.value,
        p.timestamp.unwrap_or(default_timestamp),
    );
    Ok(())
}

/// Parses JSON lines (blank lines skipped) into `batch`; errors carry the
/// 1-based line, and a batch with an error is to be dropped whole.
pub fn push_lines(
    batch: &mut Batch,
    text: &str,
    default_timestamp: i64,
) -> Result<(), (usize, WireError)> {
    for (i, line) in text.lines().enumerate() {
        if !line.trim().is_empty() {
            push_event(batch, line, default_timestamp).map_err(|e| (i + 1, e))?;
        }
    }
    Ok(())
}

/// Parses JSON lines (blank lines skipped); errors carry the 1-based line.
pub fn parse_lines(text: &str, default_timestamp: i64) -> Result<Vec<Event>, (usize, WireError)> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| parse_event(line, default_timestamp).map_err(|e| (i + 1, e)))
        .collect()
}

/// Writes one event as a line of compact JSON (no newline).
pub fn format_event(event: &EventRef<'_>) -> String {
    let mut out = Vec::with_capacity(event.value.len() + 64);
    write_event(&mut out, None, event);
    // Only JSON text and base64 are written: always UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Appends one event as compact JSON (no newline) to `out`, with an
/// `"offset"` field first when `offset` is given; no allocation for an
/// event whose key, value and headers are text.
pub fn write_event(out: &mut Vec<u8>, offset: Option<u64>, event: &EventRef<'_>) {
    let key_text = event.key.map(std::str::from_utf8);
    let value_json = serde_json::from_slice::<&RawValue>(event.value).ok();
    let mut headers = BTreeMap::new();
    let mut headers_b64 = BTreeMap::new();
    for (_, name, value) in event.headers {
        match std::str::from_utf8(value) {
            Ok(text) => {
                headers.insert(name.as_str(), text);
            }
            Err(_) => {
                headers_b64.insert(name.as_str(), BASE64.encode(value));
            }
        }
    }
    let wire = WireOut {
        offset,
        key: match key_text {
            Some(Ok(k)) => Some(k),
            _ => None,
        },
        key_b64: match (key_text, event.key) {
            (Some(Err(_)), Some(k)) => Some(BASE64.encode(k)),
            _ => None,
        },
        value: value_json,
        value_b64: match value_json {
            Some(_) => None,
            None => Some(BASE64.encode(event.value)),
        },
        timestamp: event.timestamp,
        headers,
        headers_b64,
    };
    // Writing into a Vec fails only if serialising fails, which these
    // field types never do.
    if let Err(e) = serde_json::to_writer(&mut *out, &wire) {
        out.extend_from_slice(format!("{{\"error\":{:?}}}", e.to_string()).as_bytes());
    }
}

/// The key `key_by: {field: F}` gives an event: the text of field `F` of
/// a JSON object value when it is a string, its JSON text otherwise;
/// `None` when the value is not an object with that field.
///
/// Only that field is built; the others are read past as strictly as a
/// whole `serde_json::Value` would read them (a value that is not JSON has
/// no key), with no allocation: the per-event cost of keying by a field.
pub fn field_key(value: &[u8], field: &str) -> Option<Vec<u8>> {
    field_key_ref(value, field).map(Cow::into_owned)
}

/// [`field_key`], borrowing the key from `value` when it is a string
/// without escapes (the usual case: no copy, no allocation).
pub fn field_key_ref<'a>(value: &'a [u8], field: &str) -> Option<Cow<'a, [u8]>> {
    let key_text = |found: serde_json::Value| match found {
        serde_json::Value::String(s) => s.into_bytes(),
        other => other.to_string().into_bytes(),
    };
    if let Ok(text) = std::str::from_utf8(value)
        && let Some(found) = json_field::raw_field(text, field)
    {
        let raw = found?;
        if let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"'))
            && !inner.contains('\\')
        {
            return Some(Cow::Borrowed(inner.as_bytes()));
        }
        // The scan checked the whole value and found the field: only the
        // field's own text is read again, not the event.
        if let Ok(found) = serde_json::from_str(raw) {
            return Some(Cow::Owned(key_text(found)));
        }
    }
    Some(Cow::Owned(key_text(
        json_field::field::<serde_json::Value>(value, field).ok()??,
    )))
}

/// The Rust SDK's one-field reader, compiled here too so that the host and
/// the guests read a field by the same rules.
#[path = "../../../sdk/rust/src/json.rs"]
mod json_field;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Batch;

    #[test]
    fn field_keys_are_a_strings_text_or_the_json_text() {
        assert_eq!(
            field_key(br#"{"user":"ann","n":1}"#, "user"),
            Some(b"ann".to_vec())
        );
        assert_eq!(
            field_key(br#"{"user":"ann","n":1}"#, "n"),
            Some(b"1".to_vec())
        );
        assert_eq!(
            field_key(br#"{"user":{"id":2}}"#, "user"),
            Some(br#"{"id":2}"#.to_vec())
        );
        assert_eq!(field_key(br#"{"user":"ann"}"#, "missing"), None);
        assert!(matches!(
            field_key_ref(br#"{"user":"ann","n":1}"#, "user"),
            Some(Cow::Borrowed(b"ann"))
        ));
        assert!(matches!(
            field_key_ref(br#"{"user":"a\"b"}"#, "user"),
            Some(Cow::Owned(k)) if k == b"a\"b"
        ));
        assert_eq!(field_key(b"[1,2]", "user"), None);
    }

    #[test]
    fn field_keys_agree_with_reading_the_whole_object() {
        // What keying did before it read one field: the whole object.
        fn whole(value: &[u8], field: &str) -> Option<Vec<u8>> {
            let map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(value).ok()?;
            Some(match map.get(field)? {
                serde_json::Value::String(s) => s.clone().into_bytes(),
                other => other.to_string().into_bytes(),
            })
        }
        for text in [
            r#"{"user":"u1","amount":3}"#,
            r#"{"user":"u1","amount":3,"n":[{"a":-1.5},true,null,"x\ty"]}"#,
            r#"{"user":"a\"b\\c"}"#,
            r#"{"user":"a","user":"b"}"#,
            r#"{"user":"a","user":7}"#,
            r#"{"user":12,"x":[]}"#,
            r#"{"user":"u1","x":[1,]}"#,
            r#"{"user":"u1","x":01}"#,
            r#"{"us\u0065r":"esc\"aped"}"#,
            r#"{"user":1.50e2}"#,
            r#"{"user":[1,{"b":2,"a":1}],"x":null}"#,
            r#"{"x":"\ud83d\ude00","user":-0}"#,
            r#"{"user":"u1"} trailing"#,
            r#"{"user":"u1","x":"lone \ud800"}"#,
            r#"{"user":"u1","x":1e999}"#,
            r#"{"user":"u1","x":tru}"#,
            r#"{"user":"u1""#,
            r#""user""#,
            "",
        ] {
            assert_eq!(
                field_key(text.as_bytes(), "user"),
                whole(text.as_bytes(), "user"),
                "{text}"
            );
        }
        let bad_utf8 = b"{\"user\":\"u1\",\"x\":\"\xff\"}";
        assert_eq!(field_key(bad_utf8, "user"), None);
        assert_eq!(whole(bad_utf8, "user"), None);
    }

    #[test]
    fn value_is_compact_json_text() {
        let e = parse_event(
            r#"{"key":"k","value":{ "a" : [1, 2], "s": "x y\" z" },"timestamp":5}"#,
            0,
        )
        .unwrap();
        assert_eq!(e.value, br#"{"a":[1,2],"s":"x y\" z"}"#);
        assert_eq!(e.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(e.timestamp, 5);
    }

    #[test]
    fn defaults_and_binary_fields() {
        let e = parse_event(r#"{"value_b64":"AAEC","key_b64":"/w=="}"#, 42).unwrap();
        assert_eq!(e.value, vec![0, 1, 2]);
        assert_eq!(e.key, Some(vec![0xff]));
        assert_eq!(e.timestamp, 42);
        let batch: Batch = vec![e].into_iter().collect();
        let line = format_event(&batch.iter().next().unwrap());
        assert_eq!(
            line,
            r#"{"key_b64":"/w==","value_b64":"AAEC","timestamp":42}"#
        );
    }

    #[test]
    fn round_trips_headers() {
        let line = r#"{"key":"k","value":"v","timestamp":1,"headers":{"a":"b"}}"#;
        let e = parse_event(line, 0).unwrap();
        let batch: Batch = vec![e].into_iter().collect();
        assert_eq!(format_event(&batch.iter().next().unwrap()), line);
    }

    #[test]
    fn compact_values_are_borrowed_and_spaced_ones_rewritten() {
        assert!(matches!(
            compact(r#"{"a":"x y","b":[1,2]}"#),
            Cow::Borrowed(_)
        ));
        let spaced = compact("{ \"a\" :\t\"x \\\" y\" ,\n\"b\": [1, 2] }\r");
        assert!(matches!(spaced, Cow::Owned(_)));
        assert_eq!(&*spaced, br#"{"a":"x \" y","b":[1,2]}"#);
    }

    #[test]
    fn events_pushed_into_a_batch_equal_parsed_events() {
        let lines = [
            r#"{"key":"k\u00e9","value":{ "a" : 1 },"timestamp":5}"#,
            r#"{"key_b64":"/w==","value_b64":"AAEC"}"#,
            r#"{"value":"v","headers":{"a":"b"},"headers_b64":{"c":"AA=="}}"#,
            r#"{"value":[ 1 , "two words" ]}"#,
        ];
        let text = lines.join("\n\n");
        let mut pushed = Batch::default();
        push_lines(&mut pushed, &text, 9).unwrap();
        let parsed: Batch = parse_lines(&text, 9).unwrap().into_iter().collect();
        assert_eq!(pushed.len(), 4);
        for (a, b) in pushed.iter().zip(parsed.iter()) {
            assert_eq!(a.to_event(), b.to_event());
        }
        // API reads number their events, first; the rest is format_event.
        let mut out = Vec::new();
        write_event(&mut out, Some(7), &pushed.iter().nth(2).unwrap());
        let plain = format_event(&pushed.iter().nth(2).unwrap());
        assert_eq!(out, format!("{{\"offset\":7,{}", &plain[1..]).into_bytes());
        // A bad line names itself; what the batch holds is dropped whole.
        let mut batch = Batch::default();
        let err = push_lines(&mut batch, "{\"value\":1}\n{\"key\":\"k\"}", 0).unwrap_err();
        assert_eq!(err, (2, WireError::MissingValue));
    }

    #[test]
    fn rejects_bad_events() {
        assert_eq!(
            parse_event(r#"{"key":"k"}"#, 0),
            Err(WireError::MissingValue)
        );
        assert!(matches!(parse_event("[1]", 0), Err(WireError::Json(_))));
        assert!(matches!(
            parse_event(r#"{"value":1,"vaule":2}"#, 0),
            Err(WireError::Json(_))
        ));
        assert_eq!(
            parse_event(r#"{"value":1,"value_b64":"AA=="}"#, 0),
            Err(WireError::Both("value"))
        );
        assert!(matches!(
            parse_event(r#"{"value_b64":"***"}"#, 0),
            Err(WireError::Base64 { .. })
        ));
        let err = parse_lines("{\"value\":1}\n\nnot json\n", 0).unwrap_err();
        assert_eq!(err.0, 3);
    }
}
