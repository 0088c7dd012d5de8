//! `density`: many small topologies on one `weir serve` process.
//!
//! 1. N copies of `split-words → word-count (parallelism 2)` are applied
//!    and started, each over its own input and output streams; 200 lines
//!    go into each and every output is checked against its exact counts.
//! 2. Left idle: the server's resident set (and its growth per topology),
//!    its threads, and its CPU over 10 s with no event flowing. The server
//!    unloads instances idle for 5 s (`WEIR_UNLOAD_IDLE_SECS` to change),
//!    so by then the idle topologies hold no linear memory.
//! 3. The hostile neighbour: a healthy topology's time for 20,000 lines
//!    alone, then again while two topologies run a guest that loops until
//!    its call budget stops it, batch after batch (`endless-loop`, errors
//!    skipped). The pool's throttle should keep the healthy time within
//!    about 2× of alone.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::compare::{Client, Server};
use crate::report::result;
use crate::workloads::cpu_seconds;

/// Lines produced into each topology.
const LINES_EACH: usize = 200;
/// Lines the healthy topology counts in the hostile-neighbour figure.
const HEALTHY_LINES: usize = 20_000;

/// The word counts a `counts` stream shows (the highest count per word).
fn counts(client: &Client, stream: &str) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    let mut offset = 0;
    loop {
        let text = client.send(
            "GET",
            &format!("/v1/streams/{stream}/events?offset={offset}&limit=10000"),
            b"",
            "",
        )?;
        let page: Value = serde_json::from_str(&text)?;
        let events = page["events"].as_array().context("no events array")?;
        if events.is_empty() {
            return Ok(out);
        }
        for e in events {
            let word = e["value"]["word"].as_str().unwrap_or_default().to_string();
            let n = e["value"]["count"].as_u64().unwrap_or(0);
            let best = out.entry(word).or_insert(0);
            *best = n.max(*best);
        }
        offset = page["next_offset"].as_u64().context("no next_offset")?;
    }
}

/// Waits until `stream` shows exactly `want`.
fn wait_for(client: &Client, stream: &str, want: &BTreeMap<String, u64>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if counts(client, stream)? == *want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{stream} never showed its counts");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `Threads:` of a process.
fn threads(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn topology(name: &str, input: &str, output: &str) -> String {
    format!(
        "name: {name}\nsources: [{{ name: lines, stream: {input} }}]\noperators:\n  - {{ name: split, module: split-words, input: lines }}\n  - {{ name: count, module: word-count, input: split, key_by: key, parallelism: 2 }}\nsinks: [{{ name: out, stream: {output}, input: count }}]\n"
    )
}

/// `n` lines of the sample text (repeated as needed).
fn lines(sample: &[&str], n: usize, offset: usize) -> String {
    let mut out = String::new();
    for k in 0..n {
        out.push_str(sample[(offset + k) % sample.len()]);
        out.push('\n');
    }
    out
}

/// Time for the healthy topology `name` to count `text`.
fn healthy_run(client: &Client, name: &str, text: &str) -> Result<Duration> {
    client.apply_and_start(
        name,
        &topology(name, &format!("{name}-in"), &format!("{name}-out")),
    )?;
    let want = weir_fixtures::word_counts(text);
    let started = Instant::now();
    client.produce(&format!("{name}-in"), text.as_bytes())?;
    wait_for(client, &format!("{name}-out"), &want)?;
    Ok(started.elapsed())
}

/// Seconds an idle instance lives on the bench's server: short, so the
/// idle figures are those of unloaded instances (`WEIR_UNLOAD_IDLE_SECS`
/// overrides it; 0 keeps every instance, as before idle unloading).
const UNLOAD_IDLE_SECS: &str = "5";

pub fn run(n: usize) -> Result<()> {
    let unload = std::env::var("WEIR_UNLOAD_IDLE_SECS").unwrap_or(UNLOAD_IDLE_SECS.into());
    println!("instances unloaded after {unload} s idle (--unload-idle-secs)");
    let server = Server::start_with(&["--unload-idle-secs", &unload])?;
    let pid = server.pid();
    let client = Client::new(&server.url);
    client.push_guests(&["split-words", "word-count", "endless-loop"])?;
    let sample = weir_fixtures::sample_lines();
    let sample: Vec<&str> = sample.lines().filter(|l| !l.trim().is_empty()).collect();
    let rss_empty = server.rss_mib("VmRSS:");
    let threads_empty = threads(pid);
    let started = Instant::now();
    let mut expected = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("d{i}");
        client.apply_and_start(
            &name,
            &topology(&name, &format!("{name}-in"), &format!("{name}-out")),
        )?;
        let text = lines(&sample, LINES_EACH, i);
        expected.push(weir_fixtures::word_counts(&text));
        client.produce(&format!("{name}-in"), text.as_bytes())?;
        if (i + 1) % 100 == 0 {
            println!(
                "  {} topologies started, RSS {:.0} MiB, {} threads",
                i + 1,
                server.rss_mib("VmRSS:"),
                threads(pid)
            );
        }
    }
    for (i, want) in expected.iter().enumerate() {
        wait_for(&client, &format!("d{i}-out"), want)?;
    }
    let setup = started.elapsed();
    println!(
        "{n} topologies running, every output exact, after {:.1} s",
        setup.as_secs_f64()
    );
    // Let the last checkpoints commit, then measure an idle interval.
    std::thread::sleep(Duration::from_secs(5));
    let before = cpu_seconds(pid)?;
    let idle = Duration::from_secs(10);
    std::thread::sleep(idle);
    let after = cpu_seconds(pid)?;
    let idle_cpu_pct = (after - before) / idle.as_secs_f64() * 100.0;
    let rss = server.rss_mib("VmRSS:");
    let status: Value = serde_json::from_str(&client.send("GET", "/v1/topologies/d0", b"", "")?)?;
    let usage = status.get("usage").cloned().unwrap_or(json!(null));
    result(format!(
        "RESULT workload=density topologies={n} unload_idle_secs={unload} setup_s={:.1} rss_mib={rss:.0} rss_empty_mib={rss_empty:.0} rss_per_topology_mib={:.3} threads={} threads_empty={threads_empty} idle_cpu_pct={idle_cpu_pct:.2} wasm_memory_bytes_one={} state_bytes_one={}",
        setup.as_secs_f64(),
        (rss - rss_empty) / n.max(1) as f64,
        threads(pid),
        usage["wasm_memory_bytes"],
        usage["state_bytes"],
    ));

    // The hostile neighbour.
    let text = lines(&sample, HEALTHY_LINES, 0);
    let alone = healthy_run(&client, "healthy-alone", &text)?;
    for h in 0..2 {
        let name = format!("hostile{h}");
        let doc = format!(
            "name: {name}\nsources: [{{ name: in, stream: {name}-in }}]\noperators:\n  - {{ name: spin, module: endless-loop, input: in, on_error: skip }}\nsinks: [{{ name: out, stream: {name}-out, input: spin }}]\n"
        );
        client.apply_and_start(&name, &doc)?;
        let looping: String = (0..50).map(|_| "{\"value\":\"loop\"}\n").collect();
        client.produce(&format!("{name}-in"), looping.as_bytes())?;
    }
    // Long enough for the hostile tasks to be throttled.
    std::thread::sleep(Duration::from_secs(10));
    let beside = healthy_run(&client, "healthy-beside", &text)?;
    let throttled = ["hostile0", "hostile1"]
        .iter()
        .map(|h| -> Result<u64> {
            let s: Value = serde_json::from_str(&client.send(
                "GET",
                &format!("/v1/topologies/{h}"),
                b"",
                "",
            )?)?;
            Ok(s["usage"]["throttled"].as_u64().unwrap_or(0))
        })
        .sum::<Result<u64>>()?;
    result(format!(
        "RESULT workload=hostile-neighbour lines={HEALTHY_LINES} alone_s={:.2} beside_two_hostile_s={:.2} ratio={:.2} hostile_throttled_slices={throttled}",
        alone.as_secs_f64(),
        beside.as_secs_f64(),
        beside.as_secs_f64() / alone.as_secs_f64().max(1e-9),
    ));
    Ok(())
}
