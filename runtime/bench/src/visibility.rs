//! `visibility`: how soon a produced event's exactly-once output can be
//! read through `weir serve`, at low load.
//!
//! One `weir serve`; topology `keyed-sum` from a stream into an
//! exactly-once stream. A thread produces one event at a time (a new key
//! each, so each output line names its event) at a steady rate, while a
//! follower reads the output stream as server-sent events. An event's
//! visibility is the time from the start of its produce call to its
//! output line arriving at the follower: the API, the engine, and the
//! wait for the checkpoint that publishes it. Measured twice in the same
//! run: with the default checkpoint settings (a checkpoint as soon as
//! input goes quiet) and with checkpoints on the 1 s interval only
//! (`idle_ms: 0`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::compare::{Client, Server};

/// Produce calls per second in each measured run.
const RATES: [u64; 2] = [10, 50];
/// How long the bench waits for one event's output before it gives up.
const STALL: Duration = Duration::from_secs(30);

/// One run's figures.
struct Figures {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Runs both checkpoint settings at each rate for `seconds` each.
pub fn run(seconds: u64) -> Result<()> {
    let server = Server::start_with(&[])?;
    let client = Client::new(&server.url);
    client.push_guests(&["keyed-sum"])?;
    println!(
        "visibility: one event per produce call, new key each, keyed-sum into an exactly-once \
         stream; from the start of the produce call to the output line read by a follower"
    );
    println!(
        "{:<28} {:>8} {:>8} {:>10} {:>10} {:>10}",
        "checkpoints", "calls/s", "events", "p50 ms", "p99 ms", "max ms"
    );
    let settings = [
        ("on idle (default)", "{ interval_ms: 1000 }"),
        (
            "interval only (idle_ms: 0)",
            "{ interval_ms: 1000, idle_ms: 0 }",
        ),
    ];
    for (round, rate) in RATES.iter().enumerate() {
        for (i, (label, checkpoint)) in settings.iter().enumerate() {
            let name = format!("vis-{round}-{i}");
            let n = rate * seconds;
            let f = measure(&client, &name, checkpoint, *rate, n)?;
            println!(
                "{label:<28} {rate:>8} {n:>8} {:>10.1} {:>10.1} {:>10.1}",
                f.p50_ms, f.p99_ms, f.max_ms
            );
            println!(
                "RESULT workload=visibility checkpoints={} calls_per_sec={rate} events={n} \
                 p50_ms={:.1} p99_ms={:.1} max_ms={:.1}",
                if i == 0 { "on_idle" } else { "interval" },
                f.p50_ms,
                f.p99_ms,
                f.max_ms
            );
        }
    }
    Ok(())
}

/// One topology: `n` events at `rate` produce calls a second.
fn measure(client: &Client, name: &str, checkpoint: &str, rate: u64, n: u64) -> Result<Figures> {
    let input = format!("{name}-in");
    let output = format!("{name}-out");
    let doc = format!(
        "name: {name}\ncheckpoint: {checkpoint}\nsources: [{{ name: in, stream: {input} }}]\n\
         operators:\n  - {{ name: agg, module: keyed-sum, input: in, key_by: {{ field: user }} }}\n\
         sinks: [{{ name: out, stream: {output}, input: agg }}]\n"
    );
    client.apply_and_start(name, &doc)?;
    let (seen_tx, seen) = mpsc::channel::<(String, Instant)>();
    let url = format!("{}/v1/streams/{output}/events?offset=0", client.base());
    // The follower ends when the server closes the follow (at the end,
    // the topology is deleted and the server dropped).
    std::thread::spawn(move || -> Result<()> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let res = agent
            .get(&url)
            .header("Accept", "text/event-stream")
            .call()
            .context("following the output stream")?;
        for line in BufReader::new(res.into_body().into_reader()).lines() {
            let line = line?;
            let Some(data) = line.strip_prefix("data:") else {
                continue;
            };
            let at = Instant::now();
            let event: serde_json::Value = serde_json::from_str(data.trim())?;
            let key = event
                .pointer("/value/key")
                .or_else(|| event.get("key"))
                .and_then(|k| k.as_str())
                .map(str::to_string);
            if let Some(key) = key
                && seen_tx.send((key, at)).is_err()
            {
                break;
            }
        }
        Ok(())
    });
    let every = Duration::from_secs_f64(1.0 / rate as f64);
    let mut sent: HashMap<String, Instant> = HashMap::new();
    let mut latencies = Vec::with_capacity(n as usize);
    let start = Instant::now();
    for i in 0..n {
        let due = start + every * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let key = format!("v{i}");
        let line = format!("{{\"value\":{{\"user\":\"{key}\",\"amount\":1}}}}\n");
        sent.insert(key, Instant::now());
        client.produce(&input, line.as_bytes())?;
        while let Ok((key, at)) = seen.try_recv() {
            if let Some(t) = sent.remove(&key) {
                latencies.push(at - t);
            }
        }
    }
    while !sent.is_empty() {
        let (key, at) = seen
            .recv_timeout(STALL)
            .with_context(|| format!("{name}: {} events never came out", sent.len()))?;
        if let Some(t) = sent.remove(&key) {
            latencies.push(at - t);
        }
    }
    client.stop_and_delete(name)?;
    if latencies.len() as u64 != n {
        bail!("{name}: {} outputs for {n} events", latencies.len());
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at = |p: f64| ms(latencies[((latencies.len() - 1) as f64 * p).round() as usize]);
    Ok(Figures {
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: ms(latencies[latencies.len() - 1]),
    })
}
