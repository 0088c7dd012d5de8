//! `map`: uppercases one string field of a JSON object value (config
//! `uppercase` = the field's name) and keeps the rest of the object exactly
//! as it was, in its order. A value whose field is missing or not a string
//! passes unchanged; a value that is not a JSON object is an error. Key,
//! timestamp and headers are kept.

use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use weir_sdk::{Context, Error, Event, Operator, Setup, export_operator};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    uppercase: String,
}

struct Map {
    field: String,
}

/// The fields of a JSON object in their order, values left as raw text.
struct Fields<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
                    fields.push(entry);
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

impl Operator for Map {
    type Config = Config;

    fn init(config: Config, _: &mut Setup) -> Result<Self, String> {
        Ok(Map {
            field: config.uppercase,
        })
    }

    fn process(&mut self, ctx: &mut Context, event: Event) -> Result<(), Error> {
        let Fields(fields) = serde_json::from_slice(event.value)
            .map_err(|e| Error::new(format!("map expects a JSON object value: {e}")))?;
        let mut out = Vec::with_capacity(event.value.len());
        out.push(b'{');
        for (i, (name, raw)) in fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, name)?;
            out.push(b':');
            if *name == self.field
                && let Ok(text) = serde_json::from_str::<String>(raw.get())
            {
                serde_json::to_writer(&mut out, &text.to_uppercase())?;
                continue;
            }
            out.extend_from_slice(raw.get().as_bytes());
        }
        out.push(b'}');
        ctx.emit_like(&event, &out);
        Ok(())
    }
}

export_operator!(Map);
