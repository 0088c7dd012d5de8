//! `window-sum`: per key, the sum and count of a numeric field over
//! tumbling event-time windows. Config: `size_ms` (default 1000), `field`
//! (default `amount`), `allowed_lateness_ms` (default 0), `state_encoding`
//! (`compact`, the default: the open windows in the SDK's compact
//! encoding, read and written for every event; or `json`. Either reads
//! what the other wrote, so a savepoint restores across a change).
//!
//! Each value is a JSON object whose `field` is a number (others are
//! errors). When the watermark passes a window's end, it emits, keyed like
//! the input and timestamped `end - 1`:
//! `{"key": <key>, "start": s, "end": e, "sum": <f64>, "count": n}`.
//! A late event within the allowed lateness re-emits its window's updated
//! result at once; a later one is dropped (counter `late_dropped`).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use weir_sdk::window::{Aggregate, WindowKind, WindowResult, Windows};
use weir_sdk::{Context, Encoding, Error, Event, Operator, Setup, Timer, export_operator};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    size_ms: Option<i64>,
    field: Option<String>,
    allowed_lateness_ms: Option<i64>,
    state_encoding: Option<String>,
}

#[derive(Serialize, Deserialize, Default)]
struct SumCount {
    sum: f64,
    count: u64,
}

struct Sum;

impl Aggregate for Sum {
    type Input = f64;
    type Acc = SumCount;
    type Output = (f64, u64);
    fn add(&self, acc: &mut SumCount, x: f64) {
        acc.sum += x;
        acc.count += 1;
    }
    fn merge(&self, acc: &mut SumCount, other: SumCount) {
        acc.sum += other.sum;
        acc.count += other.count;
    }
    fn result(&self, acc: &SumCount) -> (f64, u64) {
        (acc.sum, acc.count)
    }
}

#[derive(Serialize)]
struct Output<'a> {
    key: &'a str,
    start: i64,
    end: i64,
    sum: f64,
    count: u64,
}

struct WindowSum {
    field: String,
    windows: Windows<Sum>,
}

fn emit(
    ctx: &mut Context,
    key: &[u8],
    results: Vec<WindowResult<(f64, u64)>>,
) -> Result<(), Error> {
    let text = std::str::from_utf8(key).map_err(|_| Error::new("window-sum needs UTF-8 keys"))?;
    for r in results {
        let (sum, count) = r.value;
        let out = Output {
            key: text,
            start: r.start,
            end: r.end,
            sum,
            count,
        };
        ctx.emit_json(Some(key), &out, r.end - 1)?;
    }
    Ok(())
}

impl Operator for WindowSum {
    type Config = Config;

    fn init(config: Config, setup: &mut Setup) -> Result<Self, String> {
        let size_ms = config.size_ms.unwrap_or(1000);
        Ok(WindowSum {
            field: config.field.unwrap_or_else(|| "amount".into()),
            windows: Windows::new_encoded(
                setup,
                "windows",
                config
                    .state_encoding
                    .as_deref()
                    .map_or(Ok(Encoding::Compact), str::parse)?,
                WindowKind::Tumbling { size_ms },
                config.allowed_lateness_ms.unwrap_or(0),
                Sum,
            )?,
        })
    }

    fn process(&mut self, ctx: &mut Context, event: Event) -> Result<(), Error> {
        let key = event
            .key
            .ok_or_else(|| Error::new("window-sum needs keyed events (key_by)"))?;
        let x = event
            .json_field::<Value>(&self.field)?
            .as_ref()
            .and_then(Value::as_f64)
            .ok_or_else(|| {
                Error::new(format!("field `{}` is missing or not a number", self.field))
            })?;
        let late = self.windows.add(ctx, event.timestamp, x)?;
        emit(ctx, key, late)
    }

    fn on_timer(&mut self, ctx: &mut Context, timer: Timer) -> Result<(), Error> {
        let fired = self.windows.on_timer(ctx, &timer)?;
        emit(ctx, timer.key, fired)
    }
}

export_operator!(WindowSum);
