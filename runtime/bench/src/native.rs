//! The benchmark's operators as plain Rust over batches: the baseline every
//! Wasm figure is divided by. Each produces exactly the output batch its
//! guest produces.

use std::collections::HashMap;
use std::fmt;

use anyhow::Result;
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use weir_types::Batch;

/// Every event, copied into a new batch (what `identity` returns).
pub fn identity(input: &Batch) -> Batch {
    let mut out = Batch::with_capacity(input.len(), input.values.len());
    for e in input.iter() {
        out.push_ref(&e);
    }
    out
}

/// The fields of a JSON object in order, values as raw text.
struct Fields<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(8);
                while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
                    fields.push(entry);
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// Uppercases string field `field` of each JSON object value (`map`).
pub fn map(input: &Batch, field: &str) -> Result<Batch> {
    let mut out = Batch::with_capacity(input.len(), input.values.len());
    let mut value = Vec::with_capacity(128);
    for e in input.iter() {
        let Fields(fields) = serde_json::from_slice(e.value)?;
        value.clear();
        value.push(b'{');
        for (i, (name, raw)) in fields.iter().enumerate() {
            if i > 0 {
                value.push(b',');
            }
            serde_json::to_writer(&mut value, name)?;
            value.push(b':');
            if name == field
                && let Ok(text) = serde_json::from_str::<String>(raw.get())
            {
                serde_json::to_writer(&mut value, &text.to_uppercase())?;
                continue;
            }
            value.extend_from_slice(raw.get().as_bytes());
        }
        value.push(b'}');
        out.push(e.key, &value, e.timestamp);
    }
    Ok(out)
}

/// A count per key in a hash map, emitting `{"word": key, "count": n}`
/// after each event (`word-count`).
#[derive(Default)]
pub struct KeyedCount {
    counts: HashMap<Vec<u8>, u64>,
}

#[derive(serde::Serialize)]
struct Count<'a> {
    word: &'a str,
    count: u64,
}

impl KeyedCount {
    pub fn process(&mut self, input: &Batch) -> Result<Batch> {
        let mut out = Batch::with_capacity(input.len(), input.len() * 32);
        let mut value = Vec::with_capacity(64);
        for e in input.iter() {
            let key = e.key.unwrap_or_default();
            let count = match self.counts.get_mut(key) {
                Some(c) => {
                    *c += 1;
                    *c
                }
                None => {
                    self.counts.insert(key.to_vec(), 1);
                    1
                }
            };
            value.clear();
            serde_json::to_writer(
                &mut value,
                &Count {
                    word: std::str::from_utf8(key)?,
                    count,
                },
            )?;
            out.push(e.key, &value, e.timestamp);
        }
        Ok(out)
    }
}

/// The events whose JSON object value has a number `field` above `limit`
/// (`filter` with `op: gt`).
pub fn filter_gt(input: &Batch, field: &str, limit: f64) -> Result<Batch> {
    let mut out = Batch::with_capacity(input.len(), input.values.len());
    for e in input.iter() {
        let value: serde_json::Value = serde_json::from_slice(e.value)?;
        if value
            .get(field)
            .and_then(serde_json::Value::as_f64)
            .is_some_and(|x| x > limit)
        {
            out.push_ref(&e);
        }
    }
    Ok(out)
}

/// One event per word of each JSON string value, keyed by the word
/// (`split-words`).
pub fn split_words(input: &Batch) -> Result<Batch> {
    let mut out = Batch::with_capacity(input.len() * 10, input.values.len());
    let mut value = Vec::with_capacity(32);
    for e in input.iter() {
        let text: String = serde_json::from_slice(e.value)?;
        for piece in text.split_whitespace() {
            let lower = piece.to_lowercase();
            let word = lower.trim_matches(|c: char| c.is_ascii_punctuation());
            if !word.is_empty() {
                value.clear();
                serde_json::to_writer(&mut value, word)?;
                out.push(Some(word.as_bytes()), &value, e.timestamp);
            }
        }
    }
    Ok(out)
}
