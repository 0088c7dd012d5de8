//! The fixed workloads W1–W3 of `docs/benchmarks.md`, through the engine
//! against native Rust doing the same work in the same run.
//!
//! Event `i` (0-based) is generated in-process, on both sides, as
//! `{"user":"u<(i*7919)%10000>","amount":<(i*13)%101>,"ts":<1.7e12 + i/100>,
//! "region":"eu-west-1","note":"lorem-ipsum-dolor"}` with that timestamp;
//! every workload starts from this JSON text.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde::Serialize;
use weir_engine::{ExecOptions, Modules, Next, Pull, Pulled, Source};
use weir_tests::guest_bytes;
use weir_types::{Batch, Event};
use weir_wasm::{HostConfig, WasmHost};

use crate::native;
use crate::stats::{median, spread};

const BASE_TS: i64 = 1_700_000_000_000;

/// Event `i` of the input, unkeyed: [`crate::event`]'s value.
pub(crate) fn generate(i: u64) -> Event {
    Event {
        key: None,
        value: crate::event(i).1.into_bytes(),
        timestamp: BASE_TS + (i / 100) as i64,
        headers: vec![],
    }
}

/// Appends event `i` to `batch`, its value written in place: the event
/// of [`generate`] without its two `format!`s and three allocations. Both
/// sides of W1–W3 make their input this way, so that the input costs
/// little next to the work measured.
pub(crate) fn push_generated(batch: &mut Batch, i: u64) {
    let ts = BASE_TS + (i / 100) as i64;
    let start = batch.values.len();
    let v = &mut batch.values;
    v.extend_from_slice(br#"{"user":"u"#);
    push_decimal(v, crate::user_number(i));
    v.extend_from_slice(br#"","amount":"#);
    push_decimal(v, (i * 13) % 101);
    v.extend_from_slice(br#","ts":"#);
    push_decimal(v, ts as u64);
    v.extend_from_slice(br#","region":"eu-west-1","note":"lorem-ipsum-dolor"}"#);
    batch.value_lens.push((batch.values.len() - start) as u32);
    batch.key_lens.push(-1);
    batch.timestamps.push(ts);
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Events `next..end` of the W1–W3 input as a source that writes them
/// straight into the engine's batches ([`push_generated`]).
struct Generated {
    next: u64,
    end: u64,
}

impl Source for Generated {
    fn pull(&mut self) -> Result<Pull, String> {
        if self.next == self.end {
            return Ok(Pull::End);
        }
        self.next += 1;
        Ok(Pull::Event(generate(self.next - 1)))
    }

    // It never waits, so it fills the batch without looking at the clock.
    fn pull_batch(
        &mut self,
        batch: &mut Batch,
        max: usize,
        _until: Instant,
    ) -> Result<Pulled, String> {
        let take = (max as u64).min(self.end - self.next);
        for i in self.next..self.next + take {
            push_generated(batch, i);
        }
        self.next += take;
        Ok(Pulled {
            events: take as usize,
            highest_ts: match take {
                0 => i64::MIN,
                _ => BASE_TS + ((self.next - 1) / 100) as i64,
            },
            next: if self.next == self.end {
                Next::End
            } else {
                Next::More
            },
        })
    }
}

/// One workload's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub workload: &'static str,
    pub events: u64,
    pub out: u64,
    pub weir_events_per_sec: f64,
    pub weir_spread_pct: f64,
    /// The fastest plain Rust (typed serde, borrowed strings, one pass).
    pub native_events_per_sec: f64,
    pub native_spread_pct: f64,
    /// Weir against that.
    pub ratio: f64,
    /// Plain Rust doing the generic work (a `serde_json::Value` per event).
    pub generic_events_per_sec: f64,
    pub generic_spread_pct: f64,
    /// Weir against that.
    pub generic_ratio: f64,
    /// Peak resident set of the whole bench process so far, in MiB.
    pub peak_rss_mib: f64,
}

pub fn peak_rss_mib() -> f64 {
    status_mib("/proc/self/status", "VmHWM:")
}

/// CPU time (user + system) process `pid` has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    /// `sysconf(_SC_CLK_TCK)` (USER_HZ) on Linux: the unit of the times.
    const TICKS_PER_SECOND: f64 = 100.0;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): utime and
    // stime are the 12th and 13th.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        bail!("/proc/{pid}/stat has no command name");
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize, what: &str| -> Result<u64> {
        match fields.get(i).map(|f| f.parse::<u64>()) {
            Some(Ok(n)) => Ok(n),
            _ => bail!("/proc/{pid}/stat has no {what}"),
        }
    };
    Ok((ticks(11, "utime")? + ticks(12, "stime")?) as f64 / TICKS_PER_SECOND)
}

/// A `kB` line (`field`, e.g. `VmHWM:`) of a `/proc/<pid>/status` file, in
/// MiB; 0 when it cannot be read.
pub fn status_mib(status: &str, field: &str) -> f64 {
    std::fs::read_to_string(status)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn run_weir(doc: &str, modules: &Modules, n: u64) -> Result<(Duration, u64)> {
    let source = Box::new(Generated { next: 0, end: n });
    crate::topology::run_counted(doc, modules, source, ExecOptions::default())
}

/// Native: generate, batch by 1024, and hand each batch to `work`, which
/// returns how many events it emitted.
fn run_native(n: u64, mut work: impl FnMut(&Batch) -> Result<u64>) -> Result<(Duration, u64)> {
    let start = Instant::now();
    let mut out = 0;
    let mut batch = Batch::with_capacity(1024, 1024 * 128);
    for i in 0..n {
        push_generated(&mut batch, i);
        if batch.len() == 1024 || i + 1 == n {
            out += work(&batch)?;
            batch.clear();
        }
    }
    Ok((start.elapsed(), out))
}

/// A way to run a workload once: its time and the events it emitted.
type Side<'a> = &'a mut (dyn FnMut() -> Result<(Duration, u64)> + 'a);

/// Warm-up, then `rounds` rounds of Weir, typed native and generic native
/// in turn; all three must emit the same count (and `expected`, if given).
fn measure<'a>(
    workload: &'static str,
    n: u64,
    rounds: usize,
    expected: Option<u64>,
    weir: Side<'a>,
    native: Side<'a>,
    generic: Side<'a>,
) -> Result<Figures> {
    let mut sides = [("weir", weir), ("native", native), ("generic", generic)];
    let mut counts = Vec::new();
    for (name, side) in sides.iter_mut() {
        counts.push((*name, side()?.1));
    }
    let out = counts[0].1;
    for (name, count) in &counts {
        if *count != out {
            bail!("{workload}: weir emitted {out} events, {name} {count}");
        }
    }
    if let Some(e) = expected
        && out != e
    {
        bail!("{workload}: emitted {out} events, the definition says {e}");
    }
    let mut times = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (i, (_, side)) in sides.iter_mut().enumerate() {
            times[i].push(side()?.0);
        }
    }
    let rate = |t: &[Duration]| n as f64 / median(t).as_secs_f64();
    let [w, nat, gen_] = &times;
    let figures = Figures {
        workload,
        events: n,
        out,
        weir_events_per_sec: rate(w),
        weir_spread_pct: spread(w),
        native_events_per_sec: rate(nat),
        native_spread_pct: spread(nat),
        ratio: median(nat).as_secs_f64() / median(w).as_secs_f64(),
        generic_events_per_sec: rate(gen_),
        generic_spread_pct: spread(gen_),
        generic_ratio: median(gen_).as_secs_f64() / median(w).as_secs_f64(),
        peak_rss_mib: peak_rss_mib(),
    };
    println!(
        "{:<10} {:>9} {:>9} {:>12.0} ±{:>4.1}% {:>12.0} ±{:>4.1}% {:>7.1}% {:>12.0} ±{:>4.1}% {:>7.1}% {:>8.0}",
        workload,
        n,
        out,
        figures.weir_events_per_sec,
        figures.weir_spread_pct,
        figures.native_events_per_sec,
        figures.native_spread_pct,
        figures.ratio * 100.0,
        figures.generic_events_per_sec,
        figures.generic_spread_pct,
        figures.generic_ratio * 100.0,
        figures.peak_rss_mib
    );
    Ok(figures)
}

/// `doc` with every operator at `parallelism` (the documents name each
/// operator as `{ name: …, module: … }`).
fn at_parallelism(doc: &str, parallelism: usize) -> String {
    if parallelism == 1 {
        return doc.to_string();
    }
    doc.replace(
        ", module:",
        &format!(", parallelism: {parallelism}, module:"),
    )
}

/// Runs W1–W3 with `n` events and `rounds` measured rounds, every
/// operator at `parallelism`.
pub fn run(n: u64, rounds: usize, only: Option<&str>, parallelism: usize) -> Result<Vec<Figures>> {
    let wanted = |w: &str| only.is_none_or(|o| o == w);
    let host = WasmHost::new(HostConfig::default())?;
    let mut modules = Modules::new();
    for name in ["filter", "map", "keyed-sum", "window-sum"] {
        modules.insert(name.to_string(), host.load(&guest_bytes(name))?);
    }
    println!(
        "W1–W3: {n} events, warm-up + median of {rounds} rounds, operators at parallelism {parallelism}; native Rust in the same run (one thread): typed = the fastest plain Rust (typed serde, borrowed strings, one pass), generic = a serde_json::Value per event as the guests once did; weir runs every task on its worker pool (a thread per core)"
    );
    println!(
        "{:<10} {:>9} {:>9} {:>20} {:>20} {:>8} {:>20} {:>8} {:>8}",
        "workload",
        "events",
        "out",
        "weir ev/s",
        "typed ev/s",
        "ratio",
        "generic ev/s",
        "ratio",
        "RSS MiB"
    );
    let mut all = Vec::new();

    // W1 stateless.
    if wanted("stateless") {
        let w1 = at_parallelism(
            "name: w1\nsources: [{ name: in, stream: in }]\noperators:\n  - { name: f, module: filter, input: in, config: { field: amount, op: gt, value: 50 } }\n  - { name: m, module: map, input: f, config: { uppercase: user } }\nsinks: [{ name: out, stream: out, input: m }]\n",
            parallelism,
        );
        let expected_w1 = (0..n).filter(|i| (i * 13) % 101 > 50).count() as u64;
        let mut out = Batch::with_capacity(1024, 1024 * 128);
        all.push(measure(
            "stateless",
            n,
            rounds,
            Some(expected_w1),
            &mut || run_weir(&w1, &modules, n),
            &mut || run_native(n, |b| native::w1_typed(b, &mut out)),
            &mut || {
                run_native(n, |b| {
                    let kept = native::filter_gt(b, "amount", 50.0)?;
                    Ok(native::map(&kept, "user")?.len() as u64)
                })
            },
        )?);
    }
    // W2 keyed: running (count, sum) per user.
    if wanted("keyed") {
        let w2 = at_parallelism(
            "name: w2\nsources: [{ name: in, stream: in }]\noperators:\n  - { name: agg, module: keyed-sum, input: in, key_by: { field: user } }\nsinks: [{ name: out, stream: out, input: agg }]\n",
            parallelism,
        );
        let mut out = Batch::with_capacity(1024, 1024 * 64);
        all.push(measure(
            "keyed",
            n,
            rounds,
            Some(n),
            &mut || run_weir(&w2, &modules, n),
            &mut || {
                let mut w2 = native::W2Typed::default();
                run_native(n, |b| w2.process(b, &mut out))
            },
            &mut || {
                let mut w2 = native::W2Generic::default();
                run_native(n, |b| w2.process(b))
            },
        )?);
    }
    // W3 window: 1 s tumbling sums and counts per user, watermark = max
    // event time − 200 ms.
    if wanted("window") {
        let w3 = at_parallelism(
            "name: w3\nsources: [{ name: in, stream: in, watermark: { max_out_of_orderness_ms: 199 } }]\noperators:\n  - { name: win, module: window-sum, input: in, key_by: { field: user } }\nsinks: [{ name: out, stream: out, input: win }]\n",
            parallelism,
        );
        let expected_w3 = {
            let span_ms = if n == 0 { 0 } else { (n - 1) / 100 + 1 };
            let windows = span_ms.div_ceil(1000);
            // Each 1 s window holds 100,000 events: all 10,000 users when full.
            (0..windows)
                .map(|w| {
                    let first = w * 100_000;
                    let last = ((w + 1) * 100_000).min(n);
                    let mut users = std::collections::HashSet::new();
                    for i in first..last {
                        users.insert(crate::user_number(i));
                        if users.len() == 10_000 {
                            break;
                        }
                    }
                    users.len() as u64
                })
                .sum()
        };
        let mut out = Batch::with_capacity(1024, 1024 * 64);
        all.push(measure(
            "window",
            n,
            rounds,
            Some(expected_w3),
            &mut || run_weir(&w3, &modules, n),
            &mut || {
                let mut windows = native::W3Typed::default();
                let mut fired = 0;
                let (took, _) = run_native(n, |b| {
                    fired += windows.process(b, &mut out)?;
                    Ok(0)
                })?;
                fired += windows.fire(i64::MAX - 1, &mut out)?;
                Ok((took, fired))
            },
            &mut || {
                let mut windows = native::W3Generic::default();
                let mut fired = 0;
                let (took, _) = run_native(n, |b| {
                    fired += windows.process(b)?;
                    Ok(0)
                })?;
                fired += windows.fire(i64::MAX - 1)?;
                Ok((took, fired))
            },
        )?);
    }
    for f in &all {
        crate::report::result(format!(
            "RESULT workload={} events={} out={} events_per_sec={:.0} spread_pct={:.1} native_events_per_sec={:.0} native_spread_pct={:.1} ratio={:.3} generic_events_per_sec={:.0} generic_spread_pct={:.1} generic_ratio={:.3} peak_rss_mib={:.0}",
            f.workload,
            f.events,
            f.out,
            f.weir_events_per_sec,
            f.weir_spread_pct,
            f.native_events_per_sec,
            f.native_spread_pct,
            f.ratio,
            f.generic_events_per_sec,
            f.generic_spread_pct,
            f.generic_ratio,
            f.peak_rss_mib
        ));
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_written_in_place_are_the_generated_events() {
        let at = [
            0,
            1,
            99,
            100,
            101,
            9_999,
            10_000,
            123_456,
            4_999_999,
            u32::MAX as u64,
        ];
        let mut batch = Batch::default();
        for &i in &at {
            push_generated(&mut batch, i);
        }
        let expected: Batch = at.iter().map(|&i| generate(i)).collect();
        assert_eq!(batch, expected);
    }

    #[test]
    fn the_generated_source_hands_out_every_event_once_in_batches() {
        let mut source = Generated {
            next: 0,
            end: 2_500,
        };
        let mut all = Batch::default();
        let mut sizes = Vec::new();
        loop {
            let pulled = source.pull_batch(&mut all, 1024, Instant::now()).unwrap();
            sizes.push(pulled.events);
            assert_eq!(pulled.highest_ts, *all.timestamps.last().unwrap());
            if pulled.next == Next::End {
                break;
            }
        }
        assert_eq!(sizes, [1024, 1024, 452]);
        let expected: Batch = (0..2_500).map(generate).collect();
        assert_eq!(all, expected);
        assert!(matches!(source.pull(), Ok(Pull::End)));
    }
}
