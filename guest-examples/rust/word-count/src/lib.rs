//! `word-count`: counts events per key in the value state `count`; after
//! each event emits `{"word": <key>, "count": <new count>}` keyed by the word.

use serde::Serialize;
use weir_sdk::{Context, Error, Event, Operator, Setup, ValueState, export_operator};

struct WordCount {
    count: ValueState<u64>,
}

#[derive(Serialize)]
struct Count<'a> {
    word: &'a str,
    count: u64,
}

impl Operator for WordCount {
    type Config = ();

    fn init(_: (), setup: &mut Setup) -> Result<Self, String> {
        Ok(WordCount {
            count: setup.value_state("count"),
        })
    }

    fn process(&mut self, ctx: &mut Context, event: Event) -> Result<(), Error> {
        let word = event
            .key_str()
            .ok_or_else(|| Error::new("word-count needs events keyed by a UTF-8 word"))?;
        let count = self.count.get(ctx)?.unwrap_or(0) + 1;
        self.count.set(ctx, &count)?;
        ctx.emit_json(event.key, &Count { word, count }, event.timestamp)
    }
}

export_operator!(WordCount);
