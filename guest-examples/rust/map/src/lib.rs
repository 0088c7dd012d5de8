//! `map`: uppercases one string field of a JSON object value (config
//! `uppercase` = the field's name) and keeps the rest of the object exactly
//! as it was, in its order. A value whose field is missing or not a string
//! passes unchanged; a value that is not a JSON object is an error. Key,
//! timestamp and headers are kept.
//!
//! Written for speed: the object's members read in one pass
//! ([`Members`]), the new object written straight into the call's output
//! buffer (`Context::emit_like_with`), the other members' values copied as
//! raw text, no per-event allocation.

use serde::Deserialize;
use weir_sdk::{Context, Error, Event, Members, Operator, Setup, export_operator};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    uppercase: String,
}

struct Map {
    field: String,
    /// The members of the current event's object; memory reused.
    members: Members,
    /// The uppercased text of the current event's field, reused.
    upper: String,
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
            members: Members::default(),
            upper: String::new(),
        })
    }

    fn process(&mut self, ctx: &mut Context, event: Event) -> Result<(), Error> {
        let object = self
            .members
            .read(event.value)
            .map_err(|e| Error::new(format!("map expects a JSON object value: {e}")))?;
        let (field, upper) = (self.field.as_str(), &mut self.upper);
        ctx.emit_like_with(&event, |out| {
            out.push(b'{');
            for (i, (key, raw)) in object.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key)?;
                out.push(b':');
                if key == field && uppercase(raw, upper) {
                    serde_json::to_writer(&mut *out, upper.as_str())?;
                } else {
                    out.extend_from_slice(raw.as_bytes());
                }
            }
            out.push(b'}');
            Ok(())
        })
    }
}

export_operator!(Map);
