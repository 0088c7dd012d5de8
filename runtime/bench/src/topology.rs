//! `topology`: whole topologies through the engine (sources, chains,
//! channels, partitioning) against native closures doing the same work,
//! and end-to-end latency at a steady rate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use weir_engine::{
    Bindings, ExecOptions, Modules, Sink, SinkFn, Source, SourceIter, iter_source, run_topology,
};
use weir_tests::guest_bytes;
use weir_topology::parse_topology;
use weir_types::{Batch, Event};
use weir_wasm::{HostConfig, WasmHost};

use crate::native;
use crate::stats::median;

fn modules(names: &[&str]) -> Result<Modules> {
    let host = WasmHost::new(HostConfig::default())?;
    names
        .iter()
        .map(|n| Ok((n.to_string(), host.load(&guest_bytes(n))?)))
        .collect()
}

/// Runs `doc` with `source` bound to its source `in` and a counting sink
/// bound to `out`: wall time and events out.
pub(crate) fn run_counted(
    doc: &str,
    modules: &Modules,
    source: Box<dyn Source>,
    options: ExecOptions,
) -> Result<(Duration, u64)> {
    let doc = parse_topology(doc)?;
    let count = Arc::new(Mutex::new(0u64));
    let c = count.clone();
    let sink: SinkFn = Box::new(move |b: &Batch| {
        *c.lock().map_err(|_| "lock")? += b.len() as u64;
        Ok(())
    });
    let start = Instant::now();
    run_topology(
        &doc,
        modules,
        Bindings {
            sources: HashMap::from([("in".to_string(), source)]),
            sinks: HashMap::from([("out".to_string(), Box::new(sink) as Box<dyn Sink>)]),
            ..Bindings::default()
        },
        options,
    )?;
    let took = start.elapsed();
    let n = *count.lock().map_err(|_| anyhow::anyhow!("lock"))?;
    Ok((took, n))
}

/// Lines of 10 words over 10,000 distinct words.
fn lines(n_words: u64) -> Vec<Event> {
    (0..n_words / 10)
        .map(|l| {
            let words: Vec<String> = (0..10)
                .map(|w| format!("w{}", ((l * 10 + w) * 7919) % 10_000))
                .collect();
            Event {
                key: None,
                value: serde_json::to_vec(&words.join(" ")).unwrap_or_default(),
                timestamp: l as i64,
                headers: vec![],
            }
        })
        .collect()
}

fn events(n: u64) -> Vec<Event> {
    (0..n)
        .map(|i| {
            let (key, value) = crate::event(i);
            Event {
                key: Some(key.into_bytes()),
                value: value.into_bytes(),
                timestamp: 1_700_000_000_000 + i as i64,
                headers: vec![],
            }
        })
        .collect()
}

fn to_batches(events: &[Event], size: usize) -> Vec<Batch> {
    events
        .chunks(size)
        .map(|c| c.iter().cloned().collect())
        .collect()
}

fn print_row(name: &str, label: &str, n: u64, out: u64, wasm: Duration, native: Duration) {
    let w = n as f64 / wasm.as_secs_f64();
    let nat = n as f64 / native.as_secs_f64();
    println!(
        "{label:<22} {:>12.0} {:>12.0} {:>8.1}%",
        w,
        nat,
        w / nat * 100.0
    );
    crate::report::result(format!(
        "RESULT workload={name} events={n} out={out} wasm_events_per_sec={w:.0} native_events_per_sec={nat:.0} ratio={:.3}",
        w / nat
    ));
}

pub fn throughput(n: u64, rounds: usize) -> Result<()> {
    let modules = modules(&["filter", "map", "split-words", "word-count", "identity"])?;
    println!(
        "Topologies through the engine vs native Rust, median of {rounds} rounds (one source thread, chained operators)"
    );
    println!(
        "{:<22} {:>12} {:>12} {:>9}",
        "workload", "weir ev/s", "native ev/s", "ratio"
    );

    // Stateless: filter amount > 50, uppercase user.
    let stateless = "name: s\nsources: [{ name: in, stream: in }]\noperators:\n  - { name: f, module: filter, input: in, config: { field: amount, op: gt, value: 50 } }\n  - { name: m, module: map, input: f, config: { uppercase: user } }\nsinks: [{ name: out, stream: out, input: m }]\n";
    let input = events(n);
    let mut wasm = Vec::new();
    let mut out = 0;
    for _ in 0..rounds {
        let (t, o) = run_counted(
            stateless,
            &modules,
            iter_source(input.clone().into_iter().map(Ok)),
            ExecOptions::default(),
        )?;
        wasm.push(t);
        out = o;
    }
    let batches = to_batches(&input, 1024);
    let mut nat = Vec::new();
    let mut nout = 0;
    for _ in 0..rounds {
        let start = Instant::now();
        nout = 0;
        for b in &batches {
            let kept = native::filter_gt(b, "amount", 50.0)?;
            nout += native::map(&kept, "user")?.len() as u64;
        }
        nat.push(start.elapsed());
    }
    if out != nout {
        bail!("stateless: weir emitted {out} events, native {nout}");
    }
    print_row(
        "stateless",
        "stateless filter→map",
        n,
        out,
        median(&wasm),
        median(&nat),
    );

    // Keyed: split-words → word-count over 10,000 words.
    let keyed = "name: k\nsources: [{ name: in, stream: in }]\noperators:\n  - { name: split, module: split-words, input: in }\n  - { name: count, module: word-count, input: split, key_by: key }\nsinks: [{ name: out, stream: out, input: count }]\n";
    let input = lines(n);
    let mut wasm = Vec::new();
    for _ in 0..rounds {
        let (t, o) = run_counted(
            keyed,
            &modules,
            iter_source(input.clone().into_iter().map(Ok)),
            ExecOptions::default(),
        )?;
        wasm.push(t);
        out = o;
    }
    let batches = to_batches(&input, 1024);
    let mut nat = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        let mut counts = native::KeyedCount::default();
        nout = 0;
        for b in &batches {
            let words = native::split_words(b)?;
            nout += counts.process(&words)?.len() as u64;
        }
        nat.push(start.elapsed());
    }
    if out != nout {
        bail!("keyed: weir emitted {out} events, native {nout}");
    }
    print_row(
        "keyed",
        "keyed split→count",
        out,
        out,
        median(&wasm),
        median(&nat),
    );
    Ok(())
}

/// End-to-end latency at a steady `rate` for `seconds`: from the moment a
/// source hands an event out to the moment the sink receives it, through
/// filter → map → identity.
pub fn latency(rate: u64, seconds: u64) -> Result<()> {
    let modules = modules(&["filter", "map", "identity"])?;
    let doc = "name: l\nsources: [{ name: in, stream: in }]\noperators:\n  - { name: f, module: filter, input: in, config: { field: amount, op: gt, value: -1 } }\n  - { name: m, module: map, input: f, config: { uppercase: user } }\n  - { name: i, module: identity, input: m, key_by: key }\nsinks: [{ name: out, stream: out, input: i }]\n";
    let n = rate * seconds;
    let origin = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let source: SourceIter = Box::new((0..n).map(move |i| {
        let due = interval * i as u32;
        let now = origin.elapsed();
        if due > now {
            std::thread::sleep(due - now);
        }
        let (key, value) = crate::event(i);
        let sent = origin.elapsed().as_nanos() as u64;
        Ok(Event {
            key: Some(key.into_bytes()),
            value: value.into_bytes(),
            timestamp: i as i64,
            headers: vec![("sent".into(), sent.to_le_bytes().to_vec())],
        })
    }));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(n as usize)));
    let l = latencies.clone();
    let sink: SinkFn = Box::new(move |b: &Batch| {
        let now = origin.elapsed().as_nanos() as u64;
        let mut l = l.lock().map_err(|_| "lock")?;
        for (_, name, value) in &b.headers {
            if name == "sent" && value.len() == 8 {
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(value);
                l.push(now.saturating_sub(u64::from_le_bytes(bytes)));
            }
        }
        Ok(())
    });
    run_topology(
        &parse_topology(doc)?,
        &modules,
        Bindings {
            sources: HashMap::from([("in".to_string(), Box::new(source) as Box<dyn Source>)]),
            sinks: HashMap::from([("out".to_string(), Box::new(sink) as Box<dyn Sink>)]),
            dead_letter: None,
            ..Bindings::default()
        },
        ExecOptions {
            linger: Duration::from_millis(1),
            ..ExecOptions::default()
        },
    )?;
    let mut l = latencies
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))?
        .clone();
    if l.len() as u64 != n {
        bail!(
            "latency: {} of {n} events arrived with their send time",
            l.len()
        );
    }
    l.sort_unstable();
    let pct = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)] as f64 / 1e6;
    println!(
        "latency at {rate} events/s for {seconds} s through filter → map → identity: p50 {:.2} ms, p99 {:.2} ms, p999 {:.2} ms",
        pct(0.5),
        pct(0.99),
        pct(0.999)
    );
    crate::report::result(format!(
        "RESULT workload=latency rate={rate} events={n} p50_ms={:.3} p99_ms={:.3} p999_ms={:.3}",
        pct(0.5),
        pct(0.99),
        pct(0.999)
    ));
    Ok(())
}
