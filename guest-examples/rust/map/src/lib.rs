//! `map`: uppercases one string field of a JSON object value (config
//! `uppercase` = the field's name) and keeps the rest of the object exactly
//! as it was, in its order. A value whose field is missing or not a string
//! passes unchanged; a value that is not a JSON object is an error. Key,
//! timestamp and headers are kept.
//!
//! Written for speed: one pass over the input, the new object written
//! straight into the call's output buffer (`Context::emit_like_with`), the
//! other fields' values copied as raw text, no per-event allocation.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use weir_sdk::{Context, Error, Event, Operator, Setup, export_operator};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    uppercase: String,
}

struct Map {
    field: String,
    /// The uppercased text of the current event's field, reused.
    upper: String,
}

/// Rewrites a JSON object into `out` while reading it: each key
/// re-serialised, each value copied as raw text, except that field
/// `field`, when a string, is uppercased.
struct Rewrite<'m> {
    field: &'m str,
    upper: &'m mut String,
    out: &'m mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for Rewrite<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Rewrite<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.out.push(b'{');
        let mut first = true;
        while let Some(is_field) = map.next_key_seed(Key {
            field: self.field,
            out: self.out,
            first,
        })? {
            first = false;
            let raw: &RawValue = map.next_value()?;
            if is_field && uppercase(raw.get(), self.upper) {
                serde_json::to_writer(&mut *self.out, self.upper.as_str())
                    .map_err(de::Error::custom)?;
            } else {
                self.out.extend_from_slice(raw.get().as_bytes());
            }
        }
        self.out.push(b'}');
        Ok(())
    }
}

/// Writes an object key (after a comma unless it is the first) and its
/// colon; says whether it is the field to uppercase.
struct Key<'m> {
    field: &'m str,
    out: &'m mut Vec<u8>,
    first: bool,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        if !self.first {
            self.out.push(b',');
        }
        serde_json::to_writer(&mut *self.out, key).map_err(E::custom)?;
        self.out.push(b':');
        Ok(key == self.field)
    }
}

/// Puts the uppercase of JSON string `raw` into `upper`; false when `raw`
/// is not a string.
fn uppercase(raw: &str, upper: &mut String) -> bool {
    upper.clear();
    // Borrowed when the string has no escapes, decoded when it has.
    let decoded: String;
    let text = match serde_json::from_str::<&str>(raw) {
        Ok(text) => text,
        Err(_) => match serde_json::from_str::<String>(raw) {
            Ok(text) => {
                decoded = text;
                &decoded
            }
            Err(_) => return false,
        },
    };
    // Per character, as `str::to_uppercase` does.
    upper.extend(text.chars().flat_map(char::to_uppercase));
    true
}

impl Operator for Map {
    type Config = Config;

    fn init(config: Config, _: &mut Setup) -> Result<Self, String> {
        Ok(Map {
            field: config.uppercase,
            upper: String::new(),
        })
    }

    fn process(&mut self, ctx: &mut Context, event: Event) -> Result<(), Error> {
        let (field, upper) = (self.field.as_str(), &mut self.upper);
        ctx.emit_like_with(&event, |out| {
            let rewrite = Rewrite { field, upper, out };
            // Text checked as UTF-8 once reads without checking each string
            // again; other bytes fail either way.
            match std::str::from_utf8(event.value) {
                Ok(text) => rewrite_with(rewrite, serde_json::Deserializer::from_str(text)),
                Err(_) => rewrite_with(rewrite, serde_json::Deserializer::from_slice(event.value)),
            }
            .map_err(|e| Error::new(format!("map expects a JSON object value: {e}")))
        })
    }
}

fn rewrite_with<'de, R: serde_json::de::Read<'de>>(
    rewrite: Rewrite<'_>,
    mut de: serde_json::Deserializer<R>,
) -> Result<(), serde_json::Error> {
    rewrite.deserialize(&mut de)?;
    de.end()
}

export_operator!(Map);
