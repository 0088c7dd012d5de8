//! Checkpoint cost and recovery time.
//!
//! - `checkpointed` (W4): the keyed workload W2 with its state in redb and
//!   a checkpoint every second, against W2 with state in memory and no
//!   checkpoints, alternating in the same run; plus the native baseline.
//! - `recovery`: keyed-sum over `--keys` distinct keys (1M by default):
//!   the duration and size of the checkpoint that holds them all (every
//!   key dirty), then, in a new process, the time to have every key back
//!   in memory (`KeyedState::preload`, the state alone) and the time a new
//!   run takes to restore it and to read every key back by processing one
//!   more event per key.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use weir_engine::{
    Bindings, CheckpointConfig, CheckpointInfo, ExecOptions, Job, Modules, Position, Sink, Source,
    StateConfig, fn_sink, iter_source,
};
use weir_state::{KeyedState, StateBudget, StateDb};
use weir_tests::guest_bytes;
use weir_topology::parse_topology;
use weir_types::{Batch, DEFAULT_KEY_GROUPS, Event, KeyGroupRange};
use weir_wasm::{HostConfig, WasmHost};

use crate::stats::median;
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
    /// without them, percent: the median over rounds of each round's pair.
    pub overhead_pct: f64,
    /// Throughput lost against W2 in memory, percent.
    pub overhead_vs_memory_pct: f64,
    pub checkpoints: usize,
    pub mean_duration_ms: f64,
    pub mean_commit_ms: f64,
    pub mean_bytes: f64,
    pub peak_rss_mib: f64,
}

pub(crate) fn modules() -> Result<Modules> {
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

pub(crate) fn checkpointed_state(
    dir: &std::path::Path,
    interval: Option<Duration>,
) -> Result<StateConfig> {
    Ok(StateConfig {
        db: StateDb::open(dir)?,
        budget: StateBudget::default(),
        checkpoints: Some(CheckpointConfig {
            interval,
            retain: 3,
            ..CheckpointConfig::default()
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

/// W4: W2 with checkpoints every second vs without, `rounds` of each.
pub fn checkpointed(n: u64, rounds: usize, interval: Duration) -> Result<CheckpointFigures> {
    let modules = modules()?;
    println!(
        "W4: keyed (W2) over {n} events: state in memory, state in redb without checkpoints, state in redb with a checkpoint every {} ms; warm-up + median of {rounds} rounds, alternating (order rotated each round)",
        interval.as_millis()
    );
    let mut plain = Vec::new();
    let mut durable = Vec::new();
    let mut with = Vec::new();
    let mut infos = Vec::new();
    // Checkpointed over durable throughput, per round: the rounds' shared
    // noise cancels in each pair.
    let mut ratios = Vec::new();
    for round in 0..=rounds {
        // The order rotates each round, so that no variant always runs
        // right after the same other one (page cache, allocator, clocks).
        let mut times = [Duration::ZERO; 3];
        for k in 0..3 {
            let variant = (round + k) % 3;
            let dir = tempfile::tempdir()?;
            let state = match variant {
                0 => None,
                1 => Some(durable_state(dir.path())?),
                _ => Some(checkpointed_state(dir.path(), Some(interval))?),
            };
            let (t, out, checkpoints) = run(&modules, n, generate, state)?;
            if out != n {
                bail!("keyed (variant {variant}) emitted {out} of {n}");
            }
            times[variant] = t;
            if round > 0 && variant == 2 {
                infos.extend(checkpoints.into_iter().filter(|c| !c.final_));
            }
        }
        if round > 0 {
            println!(
                "  round {round}: in memory {:.0}, redb {:.0}, redb + checkpoints {:.0} ev/s",
                n as f64 / times[0].as_secs_f64(),
                n as f64 / times[1].as_secs_f64(),
                n as f64 / times[2].as_secs_f64()
            );
            ratios.push(times[1].as_secs_f64() / times[2].as_secs_f64());
            plain.push(n as f64 / times[0].as_secs_f64());
            durable.push(n as f64 / times[1].as_secs_f64());
            with.push(n as f64 / times[2].as_secs_f64());
        }
    }
    let (keyed, on_redb, checked) = (median(&plain), median(&durable), median(&with));
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
        overhead_pct: (1.0 - median(&ratios)) * 100.0,
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
    crate::report::result(format!(
        "RESULT workload=checkpointed events={n} events_per_sec={:.0} durable_events_per_sec={:.0} keyed_events_per_sec={:.0} overhead_pct={:.1} overhead_vs_memory_pct={:.1} checkpoints={} mean_checkpoint_ms={:.1} mean_checkpoint_bytes={:.0}",
        figures.checkpointed_events_per_sec,
        figures.durable_events_per_sec,
        figures.keyed_events_per_sec,
        figures.overhead_pct,
        figures.overhead_vs_memory_pct,
        figures.checkpoints,
        figures.mean_duration_ms,
        figures.mean_bytes
    ));
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

/// The recovery input: events `next..end` of [`keyed_event`], with a
/// seek that jumps (as a log with offsets does) instead of generating
/// and dropping the events before the restored position.
struct Generated {
    next: u64,
    end: u64,
    keys: u64,
}

impl Source for Generated {
    fn seek(&mut self, position: &Position) -> Result<(), String> {
        let position = position.count()?;
        if position > self.end {
            return Err(format!(
                "the input has {} events, the checkpoint read {position}",
                self.end
            ));
        }
        self.next = position;
        Ok(())
    }

    fn pull(&mut self) -> Result<weir_engine::Pull, String> {
        if self.next == self.end {
            return Ok(weir_engine::Pull::End);
        }
        self.next += 1;
        Ok(weir_engine::Pull::Event(keyed_event(
            self.next - 1,
            self.keys,
        )))
    }
}

/// Runs W2 over `events` recovery events with `state`: the run's time,
/// the time to its first output, and its checkpoints.
fn run_recovery(
    keys: u64,
    events: u64,
    state: StateConfig,
) -> Result<(Duration, Duration, Vec<CheckpointInfo>)> {
    let modules = modules()?;
    let doc = parse_topology(W2)?;
    let first = std::sync::Arc::new(std::sync::OnceLock::new());
    let f = first.clone();
    let sink = fn_sink(move |_b: &Batch| {
        f.get_or_init(Instant::now);
        Ok(())
    });
    let bindings = Bindings {
        sources: HashMap::from([(
            "in".to_string(),
            Box::new(Generated {
                next: 0,
                end: events,
                keys,
            }) as Box<dyn Source>,
        )]),
        sinks: HashMap::from([("out".to_string(), sink as Box<dyn Sink>)]),
        ..Bindings::default()
    };
    let start = Instant::now();
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
}

/// `recovery`: a checkpoint of `keys` dirty keys, then a restore of it in
/// a new process, as after a restart (in this one, the first run's freed
/// memory would be handed back to the allocator on the restore's time).
pub fn recovery(keys: u64) -> Result<()> {
    let dir = tempfile::tempdir()?;
    // One event per key, then the final checkpoint holds every key dirty
    // (a budget large enough that none is asked for earlier).
    let fill_state = StateConfig {
        budget: StateBudget { bytes: 4 << 30 },
        ..checkpointed_state(dir.path(), None)?
    };
    let (fill, _, checkpoints) = run_recovery(keys, keys, fill_state)?;
    let Some(last) = checkpoints.last() else {
        bail!("no checkpoint was taken");
    };
    let db_size = std::fs::metadata(dir.path().join("state.redb"))?.len();
    println!(
        "recovery: {keys} keys written in {:.2} s; the checkpoint holding them all took {:.0} ms ({:.0} ms commit), {} rows, {} bytes; state.redb {} MiB; peak RSS {:.0} MiB",
        fill.as_secs_f64(),
        last.duration_ms,
        last.commit_ms,
        last.rows,
        last.bytes,
        db_size >> 20,
        peak_rss_mib()
    );
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["restore", "--keys", &keys.to_string(), "--dir"])
        .arg(dir.path())
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("the restore process failed with {}", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> Result<f64> {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
            .with_context(|| format!("the restore process printed no {name}: {text}"))
    };
    let (loaded_s, open_ms, scan_ms, first_ms, all_s, rss) = (
        field("keys_loaded_s")?,
        field("open_ms")?,
        field("scan_ms")?,
        field("first_output_ms")?,
        field("all_keys_s")?,
        field("peak_rss_mib")?,
    );
    println!(
        "restore (new process): every key back in memory in {loaded_s:.2} s (state alone: {open_ms:.0} ms to open, {scan_ms:.0} ms of range scan, the rest building the working set); in the job, first output {first_ms:.0} ms after start, every key read back and updated in {all_s:.2} s ({:.0} keys/s); peak RSS {rss:.0} MiB",
        keys as f64 / all_s
    );
    crate::report::result(format!(
        "RESULT workload=recovery keys={keys} checkpoint_ms={:.0} checkpoint_bytes={} restore_keys_loaded_s={loaded_s:.2} restore_open_ms={open_ms:.0} restore_scan_ms={scan_ms:.0} restore_first_output_ms={first_ms:.0} restore_all_keys_s={all_s:.2} restore_peak_rss_mib={rss:.0}",
        last.duration_ms, last.bytes,
    ));
    Ok(())
}

/// The restore half of `recovery`, in its own process: restores the
/// checkpoint in `dir` (source position = `keys`) and reads every key back
/// with one more event per key; prints its figures on one line.
pub fn restore(keys: u64, dir: &std::path::Path) -> Result<()> {
    // A budget that holds every key, as the fill's: the figure is the
    // time to have all of them in memory again.
    let budget = StateBudget { bytes: 4 << 30 };
    // The state backend alone: every key of the operator back in memory,
    // as the job's instance does when it opens (then dropped: one handle
    // on the database at a time).
    let (loaded, opened, read) = {
        let started = Instant::now();
        let db = StateDb::open(dir)?;
        let mut state = KeyedState::open(
            &db,
            "w2",
            "agg",
            KeyGroupRange::all(DEFAULT_KEY_GROUPS),
            budget,
        )?;
        let opened = started.elapsed();
        let loaded = state.preload()?;
        if !loaded.complete || loaded.rows < keys {
            bail!("the preload read {loaded:?}, not every one of {keys} keys");
        }
        (started.elapsed(), opened, loaded.read)
    };
    let state = StateConfig {
        budget,
        ..checkpointed_state(dir, None)?
    };
    let (took, to_first, _) = run_recovery(keys, 2 * keys, state)?;
    println!(
        "keys_loaded_s={:.3} open_ms={:.0} scan_ms={:.0} first_output_ms={:.1} all_keys_s={:.3} peak_rss_mib={:.0}",
        loaded.as_secs_f64(),
        opened.as_secs_f64() * 1e3,
        read.as_secs_f64() * 1e3,
        to_first.as_secs_f64() * 1e3,
        took.as_secs_f64(),
        peak_rss_mib()
    );
    Ok(())
}
