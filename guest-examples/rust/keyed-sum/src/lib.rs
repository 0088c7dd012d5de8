//! `keyed-sum`: per key, a running count and sum of a numeric field
//! (config `field`, default `amount`) in the value state `agg`; after each
//! event emits `{"key": <key>, "count": n, "sum": s}` keyed like the input.
//! A value without the field as a number is an error.
//!
//! `agg` is stored in the SDK's compact encoding (only this operator reads
//! it: less work per event, fewer bytes per key); config
//! `state_encoding: json` stores it as JSON instead, for state queries that
//! want JSON. Either reads what the other wrote, so a savepoint restores
//! across a change of this setting.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_sdk::{Context, Encoding, Error, Event, Operator, Setup, ValueState, export_operator};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    field: Option<String>,
    state_encoding: Option<String>,
}

#[derive(Serialize, Deserialize, Default)]
struct Agg {
    count: u64,
    sum: f64,
}

#[derive(Serialize)]
struct Update<'a> {
    key: &'a str,
    count: u64,
    sum: f64,
}

struct KeyedSum {
    field: String,
    agg: ValueState<Agg>,
}

impl Operator for KeyedSum {
    type Config = Config;

    fn init(config: Config, setup: &mut Setup) -> Result<Self, String> {
        Ok(KeyedSum {
            field: config.field.unwrap_or_else(|| "amount".into()),
            agg: setup.value_state_encoded(
                "agg",
                config
                    .state_encoding
                    .as_deref()
                    .map_or(Ok(Encoding::Compact), str::parse)?,
            ),
        })
    }

    fn process(&mut self, ctx: &mut Context, event: Event) -> Result<(), Error> {
        let key = event
            .key_str()
            .ok_or_else(|| Error::new("keyed-sum needs events keyed by UTF-8 text (key_by)"))?;
        let x = event
            .json_field::<Value>(&self.field)?
            .as_ref()
            .and_then(Value::as_f64)
            .ok_or_else(|| {
                Error::new(format!("field `{}` is missing or not a number", self.field))
            })?;
        let mut agg = self.agg.get(ctx)?.unwrap_or_default();
        agg.count += 1;
        agg.sum += x;
        self.agg.set(ctx, &agg)?;
        let update = Update {
            key,
            count: agg.count,
            sum: agg.sum,
        };
        ctx.emit_json(event.key, &update, event.timestamp)
    }
}

export_operator!(KeyedSum);
