//! `fraud-detector`: flags a card (the event key) that makes more than
//! `max_count` transactions of more than `min_amount` within `window_ms`.
//!
//! Each event's value is `{"amount": <number>, ...}`. A transaction over
//! `min_amount` at time `t` is recorded in the map state `large` (time →
//! number of such transactions at that time); the card's count is then the
//! number recorded in `(t - window_ms, t]`, and when it exceeds `max_count`
//! the operator emits `{"card": <key>, "count": <count>, "at": t}` keyed by
//! the card to its side output `alerts` (read in a topology as
//! `<operator>.alerts`). Every transaction goes on, unchanged, on the main
//! output. An event-time timer at `t + window_ms` evicts what has left
//! every window still to come.

use serde::{Deserialize, Serialize};
use weir_sdk::{
    Context, Error, Event, MapState, Operator, Setup, TimeDomain, Timer, export_operator,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    max_count: u64,
    min_amount: f64,
    window_ms: i64,
}

#[derive(Deserialize)]
struct Transaction {
    amount: f64,
}

#[derive(Serialize)]
struct Alert<'a> {
    card: &'a str,
    count: u64,
    at: i64,
}

struct FraudDetector {
    config: Config,
    large: MapState<i64, u64>,
}

impl Operator for FraudDetector {
    type Config = Config;

    fn init(config: Config, setup: &mut Setup) -> Result<Self, String> {
        if config.window_ms <= 0 {
            return Err("window_ms must be positive".into());
        }
        setup.side_output("alerts");
        Ok(FraudDetector {
            config,
            large: setup.map_state("large"),
        })
    }

    fn process(&mut self, ctx: &mut Context, event: Event) -> Result<(), Error> {
        let card = event
            .key_str()
            .ok_or_else(|| Error::new("fraud-detector needs events keyed by card (UTF-8)"))?;
        let txn: Transaction = event.json()?;
        ctx.forward(&event)?;
        if txn.amount <= self.config.min_amount {
            return Ok(());
        }
        let t = event.timestamp;
        let at_t = self.large.get(ctx, &t)?.unwrap_or(0) + 1;
        self.large.put(ctx, &t, &at_t)?;
        ctx.register_timer(TimeDomain::EventTime, t + self.config.window_ms)?;
        let count: u64 = self
            .large
            .entries(ctx)?
            .into_iter()
            .filter(|(time, _)| *time > t - self.config.window_ms && *time <= t)
            .map(|(_, n)| n)
            .sum();
        if count > self.config.max_count {
            ctx.emit_json_to("alerts", event.key, &Alert { card, count, at: t }, t)?;
        }
        Ok(())
    }

    fn on_timer(&mut self, ctx: &mut Context, timer: Timer) -> Result<(), Error> {
        let horizon = timer.time - self.config.window_ms;
        for (time, _) in self.large.entries(ctx)? {
            if time <= horizon {
                self.large.remove(ctx, &time)?;
            }
        }
        Ok(())
    }
}

export_operator!(FraudDetector);
