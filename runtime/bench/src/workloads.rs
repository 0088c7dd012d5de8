//! The fixed workloads W1–W3 of `docs/benchmarks.md`, through the engine
//! against native Rust doing the same work in the same run.
//!
//! Event `i` (0-based) is generated in-process, on both sides, as
//! `{"user":"u<(i*7919)%10000>","amount":<(i*13)%101>,"ts":<1.7e12 + i/100>,
//! "region":"eu-west-1","note":"lorem-ipsum-dolor"}` with that timestamp;
//! every workload starts from this JSON text.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde::Serialize;
use weir_engine::{ExecOptions, Modules, SourceIter};
use weir_tests::guest_bytes;
use weir_types::{Batch, Event};
use weir_wasm::{HostConfig, WasmHost};

use crate::native;

const BASE_TS: i64 = 1_700_000_000_000;

pub(crate) fn generate(i: u64) -> Event {
    let user = format!("u{}", (i * 7919) % 10_000);
    let ts = BASE_TS + (i / 100) as i64;
    let value = format!(
        r#"{{"user":"{user}","amount":{},"ts":{ts},"region":"eu-west-1","note":"lorem-ipsum-dolor"}}"#,
        (i * 13) % 101
    );
    Event {
        key: None,
        value: value.into_bytes(),
        timestamp: ts,
        headers: vec![],
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
    pub native_events_per_sec: f64,
    pub native_spread_pct: f64,
    pub ratio: f64,
    /// Peak resident set of the whole bench process so far, in MiB.
    pub peak_rss_mib: f64,
}

pub fn peak_rss_mib() -> f64 {
    status_mib("/proc/self/status", "VmHWM:")
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

fn stats(times: &mut [Duration]) -> (Duration, f64) {
    times.sort();
    let median = times[times.len() / 2];
    let (min, max) = (times[0].as_secs_f64(), times[times.len() - 1].as_secs_f64());
    (
        median,
        if min > 0.0 {
            (max - min) / min * 100.0
        } else {
            0.0
        },
    )
}

fn run_weir(doc: &str, modules: &Modules, n: u64) -> Result<(Duration, u64)> {
    let source: SourceIter = Box::new((0..n).map(|i| Ok(generate(i))));
    crate::topology::run_counted(doc, modules, source, ExecOptions::default())
}

/// Native: generate, batch by 1024, and hand each batch to `work`, which
/// returns how many events it emitted.
fn run_native(n: u64, mut work: impl FnMut(&Batch) -> Result<u64>) -> Result<(Duration, u64)> {
    let start = Instant::now();
    let mut out = 0;
    let mut batch = Batch::with_capacity(1024, 1024 * 128);
    for i in 0..n {
        batch.push_event(&generate(i));
        if batch.len() == 1024 || i + 1 == n {
            out += work(&batch)?;
            batch.clear();
        }
    }
    Ok((start.elapsed(), out))
}

fn measure(
    workload: &'static str,
    n: u64,
    rounds: usize,
    expected: Option<u64>,
    mut weir: impl FnMut() -> Result<(Duration, u64)>,
    mut native: impl FnMut() -> Result<(Duration, u64)>,
) -> Result<Figures> {
    // Warm-up, then measured rounds, each side.
    let (_, warm) = weir()?;
    let (_, nwarm) = native()?;
    if warm != nwarm {
        bail!("{workload}: weir emitted {warm} events, native {nwarm}");
    }
    if let Some(e) = expected
        && warm != e
    {
        bail!("{workload}: emitted {warm} events, the definition says {e}");
    }
    let mut wt = Vec::new();
    let mut nt = Vec::new();
    for _ in 0..rounds {
        wt.push(weir()?.0);
        nt.push(native()?.0);
    }
    let (w, ws) = stats(&mut wt);
    let (nat, ns) = stats(&mut nt);
    let figures = Figures {
        workload,
        events: n,
        out: warm,
        weir_events_per_sec: n as f64 / w.as_secs_f64(),
        weir_spread_pct: ws,
        native_events_per_sec: n as f64 / nat.as_secs_f64(),
        native_spread_pct: ns,
        ratio: nat.as_secs_f64() / w.as_secs_f64(),
        peak_rss_mib: peak_rss_mib(),
    };
    println!(
        "{:<10} {:>9} {:>9} {:>12.0} ±{:>4.1}% {:>12.0} ±{:>4.1}% {:>7.1}% {:>8.0}",
        workload,
        n,
        warm,
        figures.weir_events_per_sec,
        ws,
        figures.native_events_per_sec,
        ns,
        figures.ratio * 100.0,
        figures.peak_rss_mib
    );
    Ok(figures)
}

/// Native W2 state: running (count, sum) per user.
#[derive(Serialize)]
struct Update<'a> {
    key: &'a str,
    count: u64,
    sum: f64,
}

/// Native W3: open windows per key, closed as the watermark passes them.
#[derive(Default)]
struct NativeWindows {
    open: HashMap<(String, i64), (f64, u64)>,
    by_end: BTreeMap<i64, Vec<String>>,
    max_ts: i64,
}

#[derive(Serialize)]
struct WindowOut<'a> {
    key: &'a str,
    start: i64,
    end: i64,
    sum: f64,
    count: u64,
}

impl NativeWindows {
    fn add(&mut self, key: &str, ts: i64, amount: f64) {
        let start = ts - ts.rem_euclid(1000);
        let entry = self
            .open
            .entry((key.to_string(), start))
            .or_insert_with(|| {
                self.by_end
                    .entry(start + 1000)
                    .or_default()
                    .push(key.to_string());
                (0.0, 0)
            });
        entry.0 += amount;
        entry.1 += 1;
        self.max_ts = self.max_ts.max(ts);
    }

    /// Emits windows whose end − 1 the watermark has reached.
    fn fire(&mut self, watermark: i64, out: &mut Batch) -> Result<u64> {
        let mut n = 0;
        let mut value = Vec::new();
        while let Some((&end, _)) = self.by_end.first_key_value() {
            if end - 1 > watermark {
                break;
            }
            let keys = self.by_end.remove(&end).unwrap_or_default();
            for key in keys {
                if let Some((sum, count)) = self.open.remove(&(key.clone(), end - 1000)) {
                    value.clear();
                    serde_json::to_writer(
                        &mut value,
                        &WindowOut {
                            key: &key,
                            start: end - 1000,
                            end,
                            sum,
                            count,
                        },
                    )?;
                    out.push(Some(key.as_bytes()), &value, end - 1);
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

/// Runs W1–W3 with `n` events and `rounds` measured rounds.
pub fn run(n: u64, rounds: usize, only: Option<&str>) -> Result<Vec<Figures>> {
    let wanted = |w: &str| only.is_none_or(|o| o == w);
    let host = WasmHost::new(HostConfig::default())?;
    let mut modules = Modules::new();
    for name in ["filter", "map", "keyed-sum", "window-sum"] {
        modules.insert(name.to_string(), host.load(&guest_bytes(name))?);
    }
    println!(
        "W1–W3: {n} events, warm-up + median of {rounds} rounds; native Rust in the same run (single thread); weir uses a thread per task"
    );
    println!(
        "{:<10} {:>9} {:>9} {:>20} {:>20} {:>8} {:>8}",
        "workload", "events", "out", "weir ev/s", "native ev/s", "ratio", "RSS MiB"
    );
    let mut all = Vec::new();

    // W1 stateless.
    if wanted("stateless") {
        let w1 = "name: w1\nsources: [{ name: in, stream: in }]\noperators:\n  - { name: f, module: filter, input: in, config: { field: amount, op: gt, value: 50 } }\n  - { name: m, module: map, input: f, config: { uppercase: user } }\nsinks: [{ name: out, stream: out, input: m }]\n";
        let expected_w1 = (0..n).filter(|i| (i * 13) % 101 > 50).count() as u64;
        all.push(measure(
            "stateless",
            n,
            rounds,
            Some(expected_w1),
            || run_weir(w1, &modules, n),
            || {
                run_native(n, |b| {
                    let kept = native::filter_gt(b, "amount", 50.0)?;
                    Ok(native::map(&kept, "user")?.len() as u64)
                })
            },
        )?);
    }
    // W2 keyed: running (count, sum) per user.
    if wanted("keyed") {
        let w2 = "name: w2\nsources: [{ name: in, stream: in }]\noperators:\n  - { name: agg, module: keyed-sum, input: in, key_by: { field: user } }\nsinks: [{ name: out, stream: out, input: agg }]\n";
        all.push(measure(
            "keyed",
            n,
            rounds,
            Some(n),
            || run_weir(w2, &modules, n),
            || {
                let mut state: HashMap<Vec<u8>, (u64, f64)> = HashMap::new();
                run_native(n, |b| {
                    let mut out = Batch::with_capacity(b.len(), b.len() * 48);
                    let mut value = Vec::with_capacity(64);
                    for e in b.iter() {
                        let v: serde_json::Value = serde_json::from_slice(e.value)?;
                        let user = v["user"].as_str().unwrap_or_default();
                        let amount = v["amount"].as_f64().unwrap_or_default();
                        let agg = state.entry(user.as_bytes().to_vec()).or_default();
                        agg.0 += 1;
                        agg.1 += amount;
                        value.clear();
                        serde_json::to_writer(
                            &mut value,
                            &Update {
                                key: user,
                                count: agg.0,
                                sum: agg.1,
                            },
                        )?;
                        out.push(Some(user.as_bytes()), &value, e.timestamp);
                    }
                    Ok(out.len() as u64)
                })
            },
        )?);
    }
    // W3 window: 1 s tumbling sums and counts per user, watermark = max
    // event time − 200 ms.
    if wanted("window") {
        let w3 = "name: w3\nsources: [{ name: in, stream: in, watermark: { max_out_of_orderness_ms: 199 } }]\noperators:\n  - { name: win, module: window-sum, input: in, key_by: { field: user } }\nsinks: [{ name: out, stream: out, input: win }]\n";
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
                        users.insert((i * 7919) % 10_000);
                        if users.len() == 10_000 {
                            break;
                        }
                    }
                    users.len() as u64
                })
                .sum()
        };
        all.push(measure(
            "window",
            n,
            rounds,
            Some(expected_w3),
            || run_weir(w3, &modules, n),
            || {
                let mut windows = NativeWindows::default();
                let mut fired = 0;
                let (took, _) = run_native(n, |b| {
                    for e in b.iter() {
                        let v: serde_json::Value = serde_json::from_slice(e.value)?;
                        windows.add(
                            v["user"].as_str().unwrap_or_default(),
                            e.timestamp,
                            v["amount"].as_f64().unwrap_or_default(),
                        );
                    }
                    let mut out = Batch::default();
                    let watermark = windows.max_ts - 200;
                    fired += windows.fire(watermark, &mut out)?;
                    Ok(0)
                })?;
                let mut out = Batch::default();
                fired += windows.fire(i64::MAX - 1, &mut out)?;
                Ok((took, fired))
            },
        )?);
    }
    for f in &all {
        crate::report::result(format!(
            "RESULT workload={} events={} out={} events_per_sec={:.0} spread_pct={:.1} native_events_per_sec={:.0} native_spread_pct={:.1} ratio={:.3} peak_rss_mib={:.0}",
            f.workload,
            f.events,
            f.out,
            f.weir_events_per_sec,
            f.weir_spread_pct,
            f.native_events_per_sec,
            f.native_spread_pct,
            f.ratio,
            f.peak_rss_mib
        ));
    }
    Ok(all)
}
