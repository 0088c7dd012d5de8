//! [`Members`]: the members of an event's JSON object in one pass, each
//! key with its value as raw JSON text, for operators that rewrite an
//! object (keep most members as they are, change a few) without building
//! it. The quick scan of `json.rs` reads the usual events; serde_json
//! reads what it is not sure of and words every error.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::json::Scan;

/// Reads the members of JSON objects, event after event, reusing its
/// memory: keep one in the operator.
///
/// ```ignore
/// let object = self.members.read(event.value)?;
/// for (key, raw) in object.iter() {
///     // `key` decoded, `raw` the member's value as JSON text
/// }
/// ```
#[derive(Debug, Default)]
pub struct Members {
    spans: Vec<Member>,
    /// Keys that had escapes, decoded.
    decoded: String,
}

/// Where one member's key and value are.
#[derive(Debug, Clone, Copy)]
struct Member {
    key: KeySpan,
    value: (usize, usize),
}

#[derive(Debug, Clone, Copy)]
enum KeySpan {
    /// A range of the value's text (a key without escapes).
    Text(usize, usize),
    /// A range of [`Members::decoded`].
    Decoded(usize, usize),
}

/// The members of one JSON object, in order (see [`Members::read`]).
#[derive(Debug, Clone, Copy)]
pub struct Object<'s, 'a> {
    text: &'a str,
    spans: &'s [Member],
    decoded: &'s str,
}

impl Members {
    /// Reads `value`, a JSON object: its members in order, each key
    /// decoded and each value as raw JSON text borrowed from `value`. An
    /// error when `value` is not JSON, or is JSON but not an object
    /// (serde_json's words, as for any `deserialize_map` that expects "a
    /// JSON object"). A repeated key is there each time it occurs.
    pub fn read<'s, 'a: 's>(
        &'s mut self,
        value: &'a [u8],
    ) -> Result<Object<'s, 'a>, serde_json::Error> {
        self.spans.clear();
        self.decoded.clear();
        let text = match std::str::from_utf8(value) {
            Ok(text) => {
                if quick(text, &mut self.spans).is_none() {
                    self.spans.clear();
                    self.collect(
                        text.as_ptr() as usize,
                        text.len(),
                        serde_json::Deserializer::from_str(text),
                    )?;
                }
                text
            }
            Err(_) => {
                // Not UTF-8, so not JSON: serde_json says where.
                self.collect(
                    value.as_ptr() as usize,
                    value.len(),
                    serde_json::Deserializer::from_slice(value),
                )?;
                return Err(de::Error::custom("the value is not UTF-8"));
            }
        };
        Ok(Object {
            text,
            spans: &self.spans,
            decoded: &self.decoded,
        })
    }

    /// Reads the members with serde_json.
    fn collect<'de, R: serde_json::de::Read<'de>>(
        &mut self,
        base: usize,
        len: usize,
        mut de: serde_json::Deserializer<R>,
    ) -> Result<(), serde_json::Error> {
        Deserializer::deserialize_map(
            &mut de,
            Collect {
                base,
                len,
                spans: &mut self.spans,
                decoded: &mut self.decoded,
            },
        )?;
        de.end()
    }
}

impl<'s, 'a: 's> Object<'s, 'a> {
    /// Each member's key and its value's JSON text, in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&'s str, &'a str)> + use<'s, 'a> {
        let (text, spans, decoded) = (self.text, self.spans, self.decoded);
        spans.iter().map(move |m| {
            let key = match m.key {
                KeySpan::Text(start, end) => &text[start..end],
                KeySpan::Decoded(start, end) => &decoded[start..end],
            };
            (key, &text[m.value.0..m.value.1])
        })
    }

    /// The JSON text of member `name`'s value (the last one, when the key
    /// repeats).
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.iter().rev().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// How many members (a repeated key counts each time).
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the object is `{}`.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

/// The quick scan of a whole object; `None` when it is not sure (then
/// serde_json reads it).
fn quick(text: &str, spans: &mut Vec<Member>) -> Option<()> {
    let mut s = Scan {
        b: text.as_bytes(),
        i: 0,
    };
    s.ws();
    s.eat(b'{')?;
    s.ws();
    if s.peek()? == b'}' {
        s.i += 1;
    } else {
        loop {
            let len = s.key()?.len();
            let key = KeySpan::Text(s.i - 1 - len, s.i - 1);
            s.ws();
            s.eat(b':')?;
            s.ws();
            let start = s.i;
            s.value()?;
            spans.push(Member {
                key,
                value: (start, s.i),
            });
            s.ws();
            match s.next()? {
                b',' => s.ws(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    s.at_end().then_some(())
}

/// serde_json's reading of an object's members into spans.
struct Collect<'m> {
    base: usize,
    len: usize,
    spans: &'m mut Vec<Member>,
    decoded: &'m mut String,
}

impl<'de> Visitor<'de> for Collect<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Collect {
            base,
            len,
            spans,
            decoded,
        } = self;
        while let Some(key) = map.next_key_seed(KeyAt {
            base,
            len,
            decoded: &mut *decoded,
        })? {
            let raw: &RawValue = map.next_value()?;
            let start = within(base, len, raw.get()).ok_or_else(|| {
                <A::Error as de::Error>::custom("a member's value is not in the text read")
            })?;
            spans.push(Member {
                key,
                value: (start, start + raw.get().len()),
            });
        }
        Ok(())
    }
}

/// Where `part` starts in the `len` bytes at address `base`, if it is
/// inside them.
fn within(base: usize, len: usize, part: &str) -> Option<usize> {
    let start = (part.as_ptr() as usize).checked_sub(base)?;
    (start + part.len() <= len).then_some(start)
}

/// Reads a key: where it is in the text, or decoded into `decoded`.
struct KeyAt<'m> {
    base: usize,
    len: usize,
    decoded: &'m mut String,
}

impl<'de> DeserializeSeed<'de> for KeyAt<'_> {
    type Value = KeySpan;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<KeySpan, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyAt<'_> {
    type Value = KeySpan;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<KeySpan, E> {
        match within(self.base, self.len, key) {
            Some(start) => Ok(KeySpan::Text(start, start + key.len())),
            None => self.visit_str(key),
        }
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<KeySpan, E> {
        let start = self.decoded.len();
        self.decoded.push_str(key);
        Ok(KeySpan::Decoded(start, self.decoded.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the map example did before: serde_json, key by key.
    fn through_serde(text: &[u8]) -> Result<Vec<(String, String)>, String> {
        struct All(Vec<(String, String)>);
        impl<'de> Visitor<'de> for All {
            type Value = Vec<(String, String)>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Self::Value, A::Error> {
                while let Some(k) = map.next_key::<String>()? {
                    let raw: &RawValue = map.next_value()?;
                    self.0.push((k, raw.get().to_string()));
                }
                Ok(self.0)
            }
        }
        let mut de = serde_json::Deserializer::from_slice(text);
        let all = de
            .deserialize_map(All(Vec::new()))
            .map_err(|e| e.to_string())?;
        de.end().map_err(|e| e.to_string())?;
        Ok(all)
    }

    fn read(members: &mut Members, text: &[u8]) -> Result<Vec<(String, String)>, String> {
        let object = members.read(text).map_err(|e| e.to_string())?;
        assert_eq!(object.len(), object.iter().count());
        Ok(object
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect())
    }

    #[test]
    fn members_are_those_serde_json_reads_and_errors_say_the_same() {
        let mut members = Members::default();
        for text in [
            &br#"{"user":"u1","amount":42,"ts":1700000000123,"region":"eu-west-1"}"#[..],
            br#" { "a" : [ 1 , {"b": null} ] , "c":"x\"y" } "#,
            br#"{}"#,
            br#"{"a\u0062":1,"a\"":2,"ab":3}"#,
            br#"{"a":1,"a":2}"#,
            br#"{"a":1e400}"#,
            br#"{"a":1,}"#,
            br#"{"a":1} x"#,
            br#"[1,2]"#,
            b"5",
            br#""text""#,
            b"",
            b"{\"a\":\"\xff\"}",
            b"{\"a\xff\":1}",
        ] {
            assert_eq!(
                read(&mut members, text),
                through_serde(text),
                "{:?}",
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn a_key_with_escapes_is_decoded_and_the_rest_borrowed() {
        let mut members = Members::default();
        let text = br#"{"n\u0061me":"ada","tags":["x"],"name":"bob"}"#;
        let object = members.read(text).unwrap();
        let all: Vec<(&str, &str)> = object.iter().collect();
        assert_eq!(
            all,
            [
                ("name", r#""ada""#),
                ("tags", r#"["x"]"#),
                ("name", r#""bob""#)
            ]
        );
        assert_eq!(object.get("name"), Some(r#""bob""#));
        assert_eq!(object.get("none"), None);
        // Read again with the same memory: nothing of the last one is left.
        let object = members.read(br#"{"k":true}"#).unwrap();
        assert_eq!(object.iter().collect::<Vec<_>>(), [("k", "true")]);
        assert!(!object.is_empty());
    }
}
