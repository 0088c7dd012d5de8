//! `enrich`: an event-time temporal join. Input 0 carries transactions,
//! input 1 profiles, both keyed by the same key (e.g. `key_by: {field:
//! user}`). A transaction at time `t` is emitted once the watermark passes
//! `t`, enriched with the key's profile valid at `t` (the one with the
//! greatest time `<= t`), as `{"txn":<transaction>,"profile":<profile or
//! null>}` with the transaction's key and time. Since nothing is emitted
//! before the watermark (the least of both inputs') says every profile up
//! to `t` has arrived, the output is the same whatever the arrival order of
//! events within the sources' allowed out-of-orderness.
//!
//! State: map `pending` ((time, transaction text) → how many) holds the
//! transactions waiting for the watermark, with an event-time timer at each
//! one's time; map `profiles` (time → profile text) the profiles that can
//! still be valid for a transaction to come.

use weir_sdk::{
    Context, Error, Event, MapState, Operator, Setup, TimeDomain, Timer, export_operator,
};

/// The input that carries profiles; every other input carries transactions.
const PROFILES: u32 = 1;

struct Enrich {
    pending: MapState<(i64, String), u64>,
    profiles: MapState<i64, String>,
}

impl Operator for Enrich {
    type Config = ();

    fn init(_: (), setup: &mut Setup) -> Result<Self, String> {
        Ok(Enrich {
            pending: setup.map_state("pending"),
            profiles: setup.map_state("profiles"),
        })
    }

    fn process(&mut self, ctx: &mut Context, event: Event) -> Result<(), Error> {
        let text = event.value_str()?.to_string();
        let t = event.timestamp;
        if event.input == PROFILES {
            return self.profiles.put(ctx, &t, &text);
        }
        let entry = (t, text);
        let n = self.pending.get(ctx, &entry)?.unwrap_or(0) + 1;
        self.pending.put(ctx, &entry, &n)?;
        ctx.register_timer(TimeDomain::EventTime, t)
    }

    fn on_timer(&mut self, ctx: &mut Context, timer: Timer) -> Result<(), Error> {
        let mut due: Vec<((i64, String), u64)> = self
            .pending
            .entries(ctx)?
            .into_iter()
            .filter(|((t, _), _)| *t <= timer.time)
            .collect();
        due.sort();
        let mut profiles = self.profiles.entries(ctx)?;
        profiles.sort();
        let key = timer.key.to_vec();
        for ((t, txn), n) in &due {
            let valid = profiles.iter().rev().find(|(pt, _)| pt <= t);
            let profile = valid.map_or("null", |(_, p)| p.as_str());
            let out = format!("{{\"txn\":{txn},\"profile\":{profile}}}");
            for _ in 0..*n {
                ctx.emit(Some(&key), out.as_bytes(), *t)?;
            }
            self.pending.remove(ctx, &(*t, txn.clone()))?;
        }
        // Profiles older than the one valid at the timer's time can serve
        // no transaction to come: those are behind the watermark.
        if let Some(newest) = profiles.iter().rev().find(|(pt, _)| *pt <= timer.time) {
            let newest = newest.0;
            for (pt, _) in profiles.iter().filter(|(pt, _)| *pt < newest) {
                self.profiles.remove(ctx, pt)?;
            }
        }
        Ok(())
    }
}

export_operator!(Enrich);
