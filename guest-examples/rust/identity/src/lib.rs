//! `identity`: emits every event unchanged. Measures the pure cost of
//! crossing into a guest and back.

use weir_sdk::{Context, Error, Event, Operator, Setup, export_operator};

struct Identity;

impl Operator for Identity {
    type Config = ();

    fn init(_: (), _: &mut Setup) -> Result<Self, String> {
        Ok(Identity)
    }

    fn process(&mut self, ctx: &mut Context, event: Event) -> Result<(), Error> {
        ctx.forward(&event)?;
        Ok(())
    }
}

export_operator!(Identity);
