//! Checkpoint cost and recovery time.
//!
//! - `checkpointed` (W4): the keyed workload W2 with its state in redb and
//!   a checkpoint every second, against W2 with state in memory and no
//!   checkpoints, alternating in the same run; plus the native baseline.
//! - `recovery`: keyed-sum over `--keys` distinct keys (1M by default):
//!   the duration and size of the checkpoint that holds them all (every
//!   key dirty), then the time a new run takes to restore it and to read
//!   every key back by processing one more event per key.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde::Serialize;
use weir_engine::{
    Bindings, CheckpointConfig, CheckpointInfo, ExecOptions, Job, Modules, Sink, Source,
    StateConfig, fn_sink, iter_source,
};
use weir_state::{StateBudget, StateDb};
use weir_tests::guest_bytes;
use weir_topology::parse_topology;
use weir_types::{Batch, Event};
use weir_wasm::{HostConfig, WasmHost};

use crate::workloads::{generate, peak_rss_mib};

const W2: &str = "name: w2\nsources: [{ name: in, stream: in }]\noperators:\n  - { name: agg, module: keyed-sum, input: in, key_by: { field: user } }\nsinks: [{ name: out, stream: out, input: agg }]\n";

/// W4's figures.
#[derive(Debug, Clone, Serialize)]
pub struct CheckpointFigures {
    pub events: u64,
    /// State in memory, no checkpoints (W2).
    pub keyed_events_per_sec: f64,
    /// State in redb (`KeyedState`), no checkpoints.
    pub durable_events_per_sec: f64,
    /// State in redb, a checkpoint every second.
    pub checkpointed_events_per_sec: f64,
    /// Throughput lost to checkpoints against the same state backend
    /// without them, percent.
    pub overhead_pct: f64,
    /// Throughput lost against W2 in memory, percent.
    pub overhead_vs_memory_pct: f64,
    pub checkpoints: usize,
    pub mean_duration_ms: f64,
    pub mean_commit_ms: f64,
    pub mean_bytes: f64,
    pub peak_rss_mib: f64,
}

fn modules() -> Result<Modules> {
    let host = WasmHost::new(HostConfig::default())?;
    Ok(Modules::from([(
        "keyed-sum".to_string(),
        host.load(&guest_bytes("keyed-sum"))?,
    )]))
}

/// Runs W2 over `events(0..n)`; with `state`, durable and checkpointed.
fn run(
    modules: &Modules,
    n: u64,
    events: fn(u64) -> Event,
    state: Option<StateConfig>,
) -> Result<(Duration, u64, Vec<CheckpointInfo>)> {
    let doc = parse_topology(W2)?;
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let c = count.clone();
    let sink = fn_sink(move |b: &Batch| {
        c.fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    });
    let bindings = Bindings {
        sources: HashMap::from([(
            "in".to_string(),
            iter_source((0..n).map(move |i| Ok(events(i)))) as Box<dyn Source>,
        )]),
        sinks: HashMap::from([("out".to_string(), sink as Box<dyn Sink>)]),
        ..Bindings::default()
    };
    let start = Instant::now();
    let report = Job::start(&doc, modules, bindings, ExecOptions::default(), state)?.wait()?;
    Ok((
        start.elapsed(),
        count.load(std::sync::atomic::Ordering::Relaxed),
        report.checkpoints,
    ))
}

fn checkpointed_state(dir: &std::path::Path, interval: Option<Duration>) -> Result<StateConfig> {
    Ok(StateConfig {
        db: StateDb::open(dir)?,
        budget: StateBudget::default(),
        checkpoints: Some(CheckpointConfig {
            interval,
            retain: 3,
        }),
    })
}

/// State in redb, flushed at the end only.
fn durable_state(dir: &std::path::Path) -> Result<StateConfig> {
    Ok(StateConfig {
        db: StateDb::open(dir)?,
        budget: StateBudget::default(),
        checkpoints: None,
    })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// W4: W2 with checkpoints every second vs without, `rounds` of each.
pub fn checkpointed(n: u64, rounds: usize) -> Result<CheckpointFigures> {
    let modules = modules()?;
    println!(
        "W4: keyed (W2) over {n} events: state in memory, state in redb without checkpoints, state in redb with a checkpoint every 1 s; warm-up + median of {rounds} rounds, alternating"
    );
    let mut plain = Vec::new();
    let mut durable = Vec::new();
    let mut with = Vec::new();
    let mut infos = Vec::new();
    for round in 0..=rounds {
        let (t, out, _) = run(&modules, n, generate, None)?;
        if out != n {
            bail!("keyed emitted {out} of {n}");
        }
        let dir = tempfile::tempdir()?;
        let (td, outd, _) = run(&modules, n, generate, Some(durable_state(dir.path())?))?;
        if outd != n {
            bail!("durable keyed emitted {outd} of {n}");
        }
        let dir = tempfile::tempdir()?;
        let state = checkpointed_state(dir.path(), Some(Duration::from_secs(1)))?;
        let (tc, outc, checkpoints) = run(&modules, n, generate, Some(state))?;
        if outc != n {
            bail!("checkpointed keyed emitted {outc} of {n}");
        }
        if round > 0 {
            plain.push(n as f64 / t.as_secs_f64());
            durable.push(n as f64 / td.as_secs_f64());
            with.push(n as f64 / tc.as_secs_f64());
            infos.extend(checkpoints.into_iter().filter(|c| !c.final_));
        }
    }
    let (keyed, on_redb, checked) = (median(plain), median(durable), median(with));
    let mean = |f: fn(&CheckpointInfo) -> f64| {
        if infos.is_empty() {
            0.0
        } else {
            infos.iter().map(f).sum::<f64>() / infos.len() as f64
        }
    };
    let figures = CheckpointFigures {
        events: n,
        keyed_events_per_sec: keyed,
        durable_events_per_sec: on_redb,
        checkpointed_events_per_sec: checked,
        overhead_pct: (1.0 - checked / on_redb) * 100.0,
        overhead_vs_memory_pct: (1.0 - checked / keyed) * 100.0,
        checkpoints: infos.len(),
        mean_duration_ms: mean(|c| c.duration_ms),
        mean_commit_ms: mean(|c| c.commit_ms),
        mean_bytes: mean(|c| c.bytes as f64),
        peak_rss_mib: peak_rss_mib(),
    };
    println!(
        "in memory {:.0} ev/s, redb {:.0} ev/s, redb + checkpoints {:.0} ev/s: checkpoint overhead {:.1}% (vs in memory {:.1}%); {} checkpoints (measured rounds), mean {:.1} ms ({:.1} ms commit), mean {:.0} bytes; peak RSS {:.0} MiB",
        figures.keyed_events_per_sec,
        figures.durable_events_per_sec,
        figures.checkpointed_events_per_sec,
        figures.overhead_pct,
        figures.overhead_vs_memory_pct,
        figures.checkpoints,
        figures.mean_duration_ms,
        figures.mean_commit_ms,
        figures.mean_bytes,
        figures.peak_rss_mib
    );
    println!(
        "RESULT workload=checkpointed events={n} events_per_sec={:.0} durable_events_per_sec={:.0} keyed_events_per_sec={:.0} overhead_pct={:.1} overhead_vs_memory_pct={:.1} checkpoints={} mean_checkpoint_ms={:.1} mean_checkpoint_bytes={:.0}",
        figures.checkpointed_events_per_sec,
        figures.durable_events_per_sec,
        figures.keyed_events_per_sec,
        figures.overhead_pct,
        figures.overhead_vs_memory_pct,
        figures.checkpoints,
        figures.mean_duration_ms,
        figures.mean_bytes
    );
    Ok(figures)
}

/// Event `i` of the recovery workload: user `u<i % keys>`.
fn keyed_event(i: u64, keys: u64) -> Event {
    let user = i % keys;
    Event {
        key: None,
        value: format!(r#"{{"user":"u{user}","amount":{}}}"#, i % 101).into_bytes(),
        timestamp: i as i64,
        headers: vec![],
    }
}

/// `recovery`: a checkpoint of `keys` dirty keys, then a restore.
pub fn recovery(keys: u64) -> Result<()> {
    let modules = modules()?;
    let dir = tempfile::tempdir()?;
    let doc = parse_topology(W2)?;
    let run_to = |events: u64,
                  state: StateConfig|
     -> Result<(Duration, Duration, Vec<CheckpointInfo>)> {
        let first = std::sync::Arc::new(std::sync::OnceLock::new());
        let f = first.clone();
        let start = Instant::now();
        let sink = fn_sink(move |_b: &Batch| {
            f.get_or_init(Instant::now);
            Ok(())
        });
        let bindings = Bindings {
            sources: HashMap::from([(
                "in".to_string(),
                iter_source((0..events).map(move |i| Ok(keyed_event(i, keys)))) as Box<dyn Source>,
            )]),
            sinks: HashMap::from([("out".to_string(), sink as Box<dyn Sink>)]),
            ..Bindings::default()
        };
        let report = Job::start(
            &doc,
            &modules,
            bindings,
            ExecOptions::default(),
            Some(state),
        )?
        .wait()?;
        let took = start.elapsed();
        let to_first = first.get().map_or(took, |t| t.duration_since(start));
        Ok((took, to_first, report.checkpoints))
    };
    // One event per key, then the final checkpoint holds every key dirty
    // (a budget large enough that none is asked for earlier).
    let fill_state = StateConfig {
        budget: StateBudget { bytes: 4 << 30 },
        ..checkpointed_state(dir.path(), None)?
    };
    let (fill, _, checkpoints) = run_to(keys, fill_state)?;
    let Some(last) = checkpoints.last() else {
        bail!("no checkpoint was taken");
    };
    let db_size = std::fs::metadata(dir.path().join("state.redb"))?.len();
    println!(
        "recovery: {keys} keys written in {:.2} s; the checkpoint holding them all took {:.0} ms ({:.0} ms commit), {} rows, {} bytes; state.redb {} MiB",
        fill.as_secs_f64(),
        last.duration_ms,
        last.commit_ms,
        last.rows,
        last.bytes,
        db_size >> 20
    );
    // A new run restores it (source position = keys) and reads every key
    // back with one more event per key.
    let (took, to_first, _) = run_to(2 * keys, checkpointed_state(dir.path(), None)?)?;
    println!(
        "restore: first output {:.0} ms after start; every key read back and updated in {:.2} s ({:.0} keys/s)",
        to_first.as_secs_f64() * 1e3,
        took.as_secs_f64(),
        keys as f64 / took.as_secs_f64()
    );
    println!(
        "RESULT workload=recovery keys={keys} checkpoint_ms={:.0} checkpoint_bytes={} restore_first_output_ms={:.0} restore_all_keys_s={:.2} peak_rss_mib={:.0}",
        last.duration_ms,
        last.bytes,
        to_first.as_secs_f64() * 1e3,
        took.as_secs_f64(),
        peak_rss_mib()
    );
    Ok(())
}
