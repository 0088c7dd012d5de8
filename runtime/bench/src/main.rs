//! `weir-bench`: measures Wasm operators against native Rust closures doing
//! the same work, in the same run, and prints the figures and their ratios.
//!
//! ```sh
//! cargo xtask guests
//! cargo run --release -p weir-bench -- host [--events N] [--rounds R]
//! ```
//!
//! Options: `--only identity|map|keyed-count`, `--batch N` (one size).
//!
//! `topology` runs whole topologies through the engine (stateless
//! `filter → map`, keyed `split-words → word-count` over 10,000 words)
//! against native closures; `latency [--rate N] [--seconds S]` measures
//! p50/p99/p999 from source to sink through three operators at a steady
//! rate (default 50,000 events/s for 4 s).
//!
//! `fixed [--events N] [--rounds R] [--parallelism P]` runs the fixed
//! workloads W1 stateless, W2 keyed, W3 window of `docs/benchmarks.md`
//! (`--only stateless|keyed|window` for one; `--parallelism 2` runs their
//! operators twice over, against the same one-thread native baselines).
//!
//! `checkpointed [--events N] [--rounds R]` is W4: W2 with state in redb
//! and a checkpoint every second vs W2 without, in the same run.
//! `recovery [--keys N]`: the checkpoint of N dirty keys (1M by default)
//! and the time to restore it and read every key back.
//! `state-store [--keys N] [--rounds R]`: redb alone, with N rows shaped
//! like keyed state: insert per row against cursor runs, value sizes, one
//! table against eight, `Durability`, overwrites; range scan against point
//! gets.
//!
//! `compare [--events N] [--rounds R] [--only stateless|keyed]` (also
//! `fixed --compare`): W1 and W2 natively, in-process and
//! through a real `weir serve` process over HTTP (produce → topology →
//! consume); needs `cargo build --release -p weir` first.
//!
//! `cluster [--events N] [--keys K] [--standbys S] [--only failover]`: W2
//! over a 6-partition Kafka topic through 1, 2 and 3 `weir serve
//! --cluster` processes (one throwaway broker), then the failover time
//! when one of 3 processes counting K keys (with S standbys per
//! partition, 0 by default) is killed; `--only failover` skips W2;
//! needs `cargo build --release -p weir` first.
//!
//! `postgres [--events N] [--rounds R]`: W2 with its totals upserted into
//! a throwaway PostgreSQL (Debian's `postgresql`) through the exactly-once
//! sink, checkpoints every 200 ms and every 1 s: row updates/s.
//!
//! `produce [--events N] [--rounds R]`: appends to an embedded stream from
//! 8 threads, plain against idempotent (`?producer=&sequence=`), and from
//! one thread: events/s and appends per fsync (group commit).
//!
//! `languages [--events N] [--rounds R]`: `word-count` in Rust, C,
//! Go, JavaScript and Python: size, compile and instantiate time, events/s and
//! the ratio to the Rust guest.
//!
//! `density [--topologies N]` (default 1,000): N copies of `split-words →
//! word-count (parallelism 2)` on one `weir serve` (release build), each
//! fed 200 lines and checked for its exact counts, then left idle: the
//! server's RSS, threads and CPU while idle; then a healthy topology's
//! time for 20,000 lines alone and next to two hostile topologies whose
//! guest loops to its call budget on every batch.
//!
//! `visibility [--seconds S]` (release build): one event per produce call
//! at 10 and 50 calls/s through `weir serve` into `keyed-sum` and an
//! exactly-once stream; p50/p99/max from the produce call to its output
//! read by a follower, with checkpoints when input goes quiet (the default)
//! and on the 1 s interval only.
//!
//! `host` measures the Wasm host alone (no engine, no I/O): for batches of
//! 1, 64 and 1024 ~100-byte JSON events, events/s on one core of
//! - `identity` (the guest forwards every event: the pure cost of crossing
//!   into Wasm and back),
//! - `map` (uppercase one field of the JSON object, keep the rest),
//! - `keyed-count` (the `word-count` guest: a count per key in value state,
//!   10,000 keys, one JSON update emitted per event),
//!
//! each against a native closure producing the same output batch; plus the
//! time to instantiate an operator (fresh `Store`, instantiate, `init`).
//!
//! Every workload prints `RESULT key=value …` lines; `--json FILE` writes
//! them as a JSON array of objects (`report.rs`).

#![allow(clippy::print_stdout)]

mod checkpoints;
mod cluster;
mod compare;
mod density;
mod kafka;
mod languages;
mod native;
mod postgres;
mod produce;
mod report;
mod stats;
mod store;
mod topology;
mod visibility;
mod workloads;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use stats::{median, spread};
use weir_tests::guest_bytes;
use weir_types::{Batch, DEFAULT_KEY_GROUPS, KeyGroupRange};
use weir_wasm::{HostConfig, MemoryState, OperatorInstance, OperatorModule, WasmHost};

const BATCH_SIZES: [usize; 3] = [1, 64, 1024];

/// The user of event `i` is `u<this>`.
pub(crate) fn user_number(i: u64) -> u64 {
    (i * 7919) % 10_000
}

/// Event `i` of the benchmark input: ~100 bytes of JSON keyed by its user
/// (10,000 users).
pub(crate) fn event(i: u64) -> (String, String) {
    let user = format!("u{}", user_number(i));
    let value = format!(
        r#"{{"user":"{user}","amount":{},"ts":{},"region":"eu-west-1","note":"lorem-ipsum-dolor"}}"#,
        (i * 13) % 101,
        1_700_000_000_000u64 + i / 100
    );
    (user, value)
}

fn batches(events: u64, size: usize) -> Vec<Batch> {
    let mut out = Vec::new();
    let mut batch = Batch::with_capacity(size, size * 110);
    for i in 0..events {
        let (key, value) = event(i);
        batch.push(
            Some(key.as_bytes()),
            value.as_bytes(),
            1_700_000_000_000 + i as i64,
        );
        if batch.len() == size {
            out.push(std::mem::replace(
                &mut batch,
                Batch::with_capacity(size, size * 110),
            ));
        }
    }
    if !batch.is_empty() {
        out.push(batch);
    }
    out
}

/// The shortest measured round: a round repeats its work until it lasts
/// this long, so fast work is not timed over a few milliseconds.
const MIN_ROUND: Duration = Duration::from_millis(500);

/// Median time of one `round`, over `rounds` measured rounds after one
/// warm-up; each measured round runs `round` as many times as fill
/// [`MIN_ROUND`]. Returns that time, the rounds' spread in percent, and
/// the events one `round` emitted (every run must emit as many).
fn measure(rounds: usize, mut round: impl FnMut() -> Result<u64>) -> Result<(Duration, f64, u64)> {
    let start = Instant::now();
    let out = round()?;
    let passes = (MIN_ROUND.as_secs_f64() / start.elapsed().as_secs_f64().max(1e-9)).ceil();
    let passes = (passes as u32).max(1);
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..passes {
            let n = round()?;
            if n != out {
                bail!("a round emitted {n} events, the warm-up {out}");
            }
        }
        times.push(start.elapsed() / passes);
    }
    let s = spread(&times);
    Ok((median(&times), s, out))
}

fn instance(module: &OperatorModule, config: &str) -> Result<OperatorInstance> {
    Ok(OperatorInstance::new(
        module,
        "bench",
        config,
        Box::new(MemoryState::new()),
        KeyGroupRange::all(DEFAULT_KEY_GROUPS),
    )?)
}

struct Row {
    workload: &'static str,
    batch: usize,
    events: u64,
    out: u64,
    wasm: Duration,
    wasm_spread: f64,
    native: Duration,
    native_spread: f64,
}

impl Row {
    fn per_sec(&self, d: Duration) -> f64 {
        self.events as f64 / d.as_secs_f64()
    }
    fn ns(&self, d: Duration) -> f64 {
        d.as_nanos() as f64 / self.events as f64
    }
    fn ratio(&self) -> f64 {
        self.native.as_secs_f64() / self.wasm.as_secs_f64()
    }
}

fn host(events: u64, rounds: usize, only: Option<&str>, sizes: &[usize]) -> Result<()> {
    let host = WasmHost::new(HostConfig::default())?;
    let load = |name: &str| -> Result<OperatorModule> {
        host.load(&guest_bytes(name))
            .with_context(|| format!("loading {name}"))
    };
    let identity = load("identity")?;
    let map = load("map")?;
    let count = load("word-count")?;
    let mut rows = Vec::new();
    let wanted = |w: &str| only.is_none_or(|o| o == w);
    for &size in sizes {
        let mut input = batches(events, size);
        if wanted("identity") {
            let mut op = instance(&identity, "")?;
            rows.push(compare(
                "identity",
                size,
                events,
                rounds,
                &mut input,
                &mut op,
                |b| Ok(native::identity(b)),
            )?);
        }
        if wanted("map") {
            let mut op = instance(&map, r#"{"uppercase":"user"}"#)?;
            rows.push(compare(
                "map",
                size,
                events,
                rounds,
                &mut input,
                &mut op,
                |b| native::map(b, "user"),
            )?);
        }
        if wanted("keyed-count") {
            // State persists over rounds in both, as in a running job.
            let mut op = instance(&count, "")?;
            let mut counts = native::KeyedCount::default();
            rows.push(compare(
                "keyed-count",
                size,
                events,
                rounds,
                &mut input,
                &mut op,
                |b| counts.process(b),
            )?);
        }
    }

    // Same output, checked once on a sample: Wasm and native agree.
    let mut sample = batches(2000, 1000);
    let mut op = instance(&map, r#"{"uppercase":"user"}"#)?;
    let wasm_out = op.process(&mut sample[0], i64::MIN, 0)?.events;
    if wasm_out != native::map(&sample[0], "user")? {
        bail!("map: Wasm and native outputs differ");
    }
    let mut op = instance(&count, "")?;
    let mut counts = native::KeyedCount::default();
    for b in sample.iter_mut() {
        if op.process(b, i64::MIN, 0)?.events != counts.process(b)? {
            bail!("keyed-count: Wasm and native outputs differ");
        }
    }

    println!(
        "Wasm host vs native Rust, one core, {events} events of ~100-byte JSON per round, median of {rounds} rounds (a round repeats the pass to last 0.5 s at least)"
    );
    println!(
        "{:<12} {:>6} {:>14} {:>14} {:>9} {:>10} {:>10} {:>8}",
        "workload",
        "batch",
        "wasm ev/s",
        "native ev/s",
        "ratio",
        "wasm ns/ev",
        "nat ns/ev",
        "spread"
    );
    for r in &rows {
        println!(
            "{:<12} {:>6} {:>14.0} {:>14.0} {:>8.1}% {:>10.0} {:>10.0} {:>3.0}%/{:<3.0}%",
            r.workload,
            r.batch,
            r.per_sec(r.wasm),
            r.per_sec(r.native),
            r.ratio() * 100.0,
            r.ns(r.wasm),
            r.ns(r.native),
            r.wasm_spread,
            r.native_spread,
        );
    }
    println!();
    for r in &rows {
        if r.workload == "identity" {
            println!(
                "crossing cost (identity, batch {}): {:.0} ns/event over native",
                r.batch,
                r.ns(r.wasm) - r.ns(r.native)
            );
        }
    }

    // Instantiation: fresh Store + instantiate from InstancePre + init.
    let mut times = Vec::new();
    for _ in 0..200 {
        let start = Instant::now();
        let op = instance(&identity, "")?;
        times.push(start.elapsed());
        drop(op);
    }
    let inst = median(&times);
    println!(
        "instantiate + init (identity guest): {:.1} µs median of 200",
        inst.as_secs_f64() * 1e6
    );
    println!();
    for r in &rows {
        crate::report::result(format!(
            "RESULT workload={} batch={} events={} out={} wasm_events_per_sec={:.0} native_events_per_sec={:.0} ratio={:.3}",
            r.workload,
            r.batch,
            r.events,
            r.out,
            r.per_sec(r.wasm),
            r.per_sec(r.native),
            r.ratio()
        ));
    }
    crate::report::result(format!(
        "RESULT workload=instantiate micros={:.1}",
        inst.as_secs_f64() * 1e6
    ));
    Ok(())
}

/// Runs `input` through the Wasm instance and through `native`, each for
/// `rounds` measured rounds, and checks they emit as many events.
fn compare(
    workload: &'static str,
    batch: usize,
    events: u64,
    rounds: usize,
    input: &mut [Batch],
    op: &mut OperatorInstance,
    mut native: impl FnMut(&Batch) -> Result<Batch>,
) -> Result<Row> {
    let (wasm, wasm_spread, out) = measure(rounds, || {
        let mut n = 0;
        for b in input.iter_mut() {
            n += op.process(b, i64::MIN, 0)?.events.len() as u64;
        }
        Ok(n)
    })?;
    let (nat, native_spread, nout) = measure(rounds, || {
        let mut n = 0;
        for b in input.iter() {
            n += native(b)?.len() as u64;
        }
        Ok(n)
    })?;
    check(workload, out, nout)?;
    Ok(Row {
        workload,
        batch,
        events,
        out,
        wasm,
        wasm_spread,
        native: nat,
        native_spread,
    })
}

fn check(workload: &str, wasm: u64, native: u64) -> Result<()> {
    if wasm != native {
        bail!("{workload}: Wasm emitted {wasm} events, native {native}");
    }
    Ok(())
}

/// The workloads `weir-bench` runs (see the crate's doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    /// The Wasm host alone against native closures.
    Host,
    /// Whole topologies through the engine.
    Topology,
    /// W1–W3 of docs/benchmarks.md.
    Fixed,
    /// W1 and W2 natively, in-process and through `weir serve`.
    Compare,
    /// p50/p99/p999 from source to sink at a steady rate.
    Latency,
    /// W4: W2 with checkpoints against without.
    Checkpointed,
    /// The checkpoint of N dirty keys and the time to restore it.
    Recovery,
    /// redb alone with rows shaped like keyed state: bulk writes and reads.
    StateStore,
    /// The second half of `recovery`, run by it in a new process.
    #[value(hide = true)]
    Restore,
    /// `word-count` in every guest language.
    Languages,
    /// W2 upserting its totals into PostgreSQL.
    Postgres,
    /// W1 and W2 Kafka → Kafka against streams, and latency through Kafka.
    Kafka,
    /// W2 through 1, 2 and 3 `weir serve --cluster` processes, and the
    /// failover time when one is killed
    Cluster,
    /// Appends to an embedded stream: plain against idempotent.
    Produce,
    /// Many small topologies on one `weir serve`: RSS, threads, idle CPU,
    /// and a healthy topology's time next to hostile ones.
    Density,
    /// How soon exactly-once output is readable through `weir serve` at
    /// low load, with and without checkpoints when input goes quiet.
    Visibility,
}

/// Measures Weir's Wasm operators against native Rust doing the same
/// work, in the same run.
#[derive(Debug, Parser)]
#[command(name = "weir-bench")]
struct Args {
    /// What to measure.
    #[arg(value_enum, default_value = "host")]
    workload: Workload,
    /// Events per round (default: 5,000,000 for fixed and checkpointed,
    /// 1,000,000 for compare, 200,000 otherwise).
    #[arg(long)]
    events: Option<u64>,
    /// Measured rounds after the warm-up.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
    /// One workload of the set (host: identity|map|keyed-count; fixed:
    /// stateless|keyed|window; compare: stateless|keyed).
    #[arg(long)]
    only: Option<String>,
    /// `latency`: events per second.
    #[arg(long, default_value_t = 50_000)]
    rate: u64,
    /// `latency`: seconds to run.
    #[arg(long, default_value_t = 4)]
    seconds: u64,
    /// `recovery`: distinct keys.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// `cluster`: standby copies of each partition in the failover run
    /// (0 to 2: it runs three processes).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=2))]
    standbys: u32,
    /// `host`: one batch size instead of 1, 64 and 1024.
    #[arg(long)]
    batch: Option<usize>,
    /// `fixed`: run `compare` instead.
    #[arg(long)]
    compare: bool,
    /// `fixed`: every operator's parallelism (1, as the workloads are
    /// defined; 2 spreads their operators over both cores).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    parallelism: u64,
    /// `compare`: the topologies' `checkpoint.idle_ms` (0: checkpoints on
    /// the interval only); the server's default when not given.
    #[arg(long)]
    idle_ms: Option<u64>,
    /// `compare`: the topologies' `checkpoint.interval_ms` (the server's
    /// default when not given); `checkpointed`: the interval (1,000).
    #[arg(long)]
    interval_ms: Option<u64>,
    /// `compare`: concurrent producer connections (each sends every n-th
    /// body of the round).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=16))]
    producers: u64,
    /// `density`: topologies to start.
    #[arg(long, default_value_t = 1_000)]
    topologies: usize,
    /// `restore`: the directory `recovery` checkpointed into.
    #[arg(long, hide = true)]
    dir: Option<std::path::PathBuf>,
    /// Also write the RESULT lines to this file as a JSON array.
    #[arg(long)]
    json: Option<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if cfg!(debug_assertions) {
        eprintln!("warning: a debug build; run with --release for real figures");
    }
    let workload = match args.workload {
        Workload::Fixed if args.compare => Workload::Compare,
        w => w,
    };
    // The fixed workloads are defined over 5M events; the others default
    // to sizes that finish in seconds.
    let events = args.events.unwrap_or(match workload {
        Workload::Fixed | Workload::Checkpointed => 5_000_000,
        Workload::Compare => 1_000_000,
        _ => 200_000,
    });
    let rounds = args.rounds as usize;
    let only = args.only.as_deref();
    match workload {
        Workload::Host => {
            let sizes = args.batch.map_or(BATCH_SIZES.to_vec(), |b| vec![b]);
            host(events, rounds, only, &sizes)?;
        }
        Workload::Topology => topology::throughput(events, rounds)?,
        Workload::Fixed => {
            workloads::run(events, rounds, only, args.parallelism as usize)?;
        }
        Workload::Compare => {
            compare::run(
                events,
                rounds,
                only,
                args.interval_ms,
                args.idle_ms,
                args.producers as usize,
            )?;
        }
        Workload::Latency => topology::latency(args.rate, args.seconds)?,
        Workload::Checkpointed => {
            checkpoints::checkpointed(
                events,
                rounds,
                Duration::from_millis(args.interval_ms.unwrap_or(1000)),
            )?;
        }
        Workload::Recovery => checkpoints::recovery(args.keys)?,
        Workload::StateStore => store::run(args.keys, rounds)?,
        Workload::Restore => {
            checkpoints::restore(args.keys, &args.dir.context("restore needs --dir")?)?
        }
        Workload::Languages => languages::run(events, rounds)?,
        Workload::Postgres => postgres::run(events, rounds)?,
        Workload::Kafka => kafka::run(events, rounds, args.rate, args.seconds)?,
        Workload::Cluster => cluster::run(
            events,
            args.keys.min(10_000_000),
            args.standbys,
            args.only.as_deref() == Some("failover"),
        )?,
        Workload::Produce => produce::run(events, rounds)?,
        Workload::Density => density::run(args.topologies)?,
        Workload::Visibility => visibility::run(args.seconds)?,
    }
    report::write_json(args.json.as_deref())
}
