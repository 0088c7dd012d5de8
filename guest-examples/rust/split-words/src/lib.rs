//! `split-words`: the value is a JSON string; emits one event per word, keyed
//! by the word. Words are the pieces between Unicode whitespace, lowercased,
//! with ASCII punctuation trimmed from both ends; empty pieces are dropped.

use weir_sdk::{Context, Error, Event, Operator, Setup, export_operator};

struct SplitWords;

impl Operator for SplitWords {
    type Config = ();

    fn init(_: (), _: &mut Setup) -> Result<Self, String> {
        Ok(SplitWords)
    }

    fn process(&mut self, ctx: &mut Context, event: Event) -> Result<(), Error> {
        let text: String = event
            .json()
            .map_err(|_| Error::new("split-words expects the value to be a JSON string"))?;
        for piece in text.split_whitespace() {
            let word = piece
                .to_lowercase()
                .trim_matches(|c: char| c.is_ascii_punctuation())
                .to_string();
            if !word.is_empty() {
                ctx.emit_json(Some(word.as_bytes()), &word, event.timestamp)?;
            }
        }
        Ok(())
    }
}

export_operator!(SplitWords);
