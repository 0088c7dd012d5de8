//! `{{name}}`: upper-cases the ASCII letters of a JSON string value and
//! counts, per key, the events seen; emits `{"seen": n, "text": ...}`
//! keyed as the input. Values that are not strings fail alone.

use serde::Serialize;
use weir_sdk::{Context, Error, Event, Operator, Setup, ValueState, export_operator};

struct Upper {
    seen: ValueState<u64>,
}

#[derive(Serialize)]
struct Output {
    seen: u64,
    text: String,
}

impl Operator for Upper {
    // The topology's `config` (JSON) is read into this type.
    type Config = ();

    fn init(_: (), setup: &mut Setup) -> Result<Self, String> {
        Ok(Upper {
            seen: setup.value_state("seen"),
        })
    }

    fn process(&mut self, ctx: &mut Context, event: Event) -> Result<(), Error> {
        let text: String = event
            .json()
            .map_err(|_| Error::new("{{name}} expects the value to be a JSON string"))?;
        // Value state needs a keyed input (`key_by` in a topology).
        let seen = self.seen.get(ctx)?.unwrap_or(0) + 1;
        self.seen.set(ctx, &seen)?;
        let output = Output {
            seen,
            text: text.to_ascii_uppercase(),
        };
        ctx.emit_json(event.key, &output, event.timestamp)
    }
}

export_operator!(Upper);
