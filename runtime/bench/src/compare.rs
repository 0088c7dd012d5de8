//! `compare`: the fixed workloads W1 (stateless) and W2 (keyed) three
//! ways in one run: native Rust, the engine in-process, and a real
//! `weir serve` process driven over its HTTP API (produce → topology →
//! consume), so that the cost of the API path is visible.
//!
//! Through the API a round is: apply and start a topology reading stream
//! `<w>-in-<round>` and writing the exactly-once stream `<w>-out-<round>`
//! (the server's checkpoint defaults, or `--idle-ms`); then one thread
//! produces the N events as JSON lines in batches of 5,000 while the main
//! thread pages through the output stream (10,000 events per read) until
//! it has every expected event. The round's time runs from the first
//! produce call to the last event read, so it holds the HTTP parsing on
//! both ends, the disk writes of both streams, the engine, and the wait
//! for the checkpoint that publishes the last output (up to one interval).
//!
//! Without `--only`, it also measures the control plane on the same server:
//! upload-to-running of a three-operator topology and the latency of one
//! produce call.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use weir_tests::guest_bytes;

use crate::stats::{median, spread};
use crate::workloads::{self, generate, peak_rss_mib, status_mib};

/// Events per produce call.
const PRODUCE_BATCH: u64 = 5_000;
/// Events per read of the output stream (the server's cap).
const READ_LIMIT: usize = 10_000;
/// A round that makes no progress for this long is an error.
const STALL: Duration = Duration::from_secs(60);

/// One workload's figures, three ways.
#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub workload: &'static str,
    pub events: u64,
    pub out: u64,
    /// End to end through `weir serve`: first produce to last event read.
    pub api_events_per_sec: f64,
    pub api_spread_pct: f64,
    /// How fast the producer got its events accepted (on disk) meanwhile.
    pub api_produce_events_per_sec: f64,
    pub in_process_events_per_sec: f64,
    pub native_events_per_sec: f64,
    pub api_vs_native: f64,
    pub api_vs_in_process: f64,
    /// Peak resident set of the `weir serve` process, in MiB.
    pub server_peak_rss_mib: f64,
    /// Peak resident set of this bench process (client and in-process runs).
    pub bench_peak_rss_mib: f64,
}

/// The `weir` binary next to this one (`target/release/weir`).
fn weir_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating weir-bench")?;
    let dir = exe.parent().context("weir-bench has no parent directory")?;
    let weir = dir.join("weir");
    if !weir.is_file() {
        bail!(
            "{} does not exist: `compare` drives the real server; build it first with \
             `cargo build --release -p weir`",
            weir.display()
        );
    }
    Ok(weir)
}

/// A `weir serve` child on an ephemeral loopback port over a temporary
/// data directory; killed when dropped.
pub(crate) struct Server {
    child: Child,
    pub(crate) url: String,
    _data: tempfile::TempDir,
}

impl Server {
    fn start() -> Result<Server> {
        Server::start_with(&[])
    }

    /// A server with `extra` flags.
    pub(crate) fn start_with(extra: &[&str]) -> Result<Server> {
        let data = tempfile::tempdir()?;
        let mut child = Command::new(weir_binary()?)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .args(extra)
            .env_remove("WEIR_TOKEN")
            // `WEIR_BENCH_SERVER_LOG=info` to see what the servers do.
            .env(
                "WEIR_LOG",
                std::env::var("WEIR_BENCH_SERVER_LOG").unwrap_or("warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting weir serve")?;
        let stdout = child.stdout.take().context("weir serve stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let url = line
            .trim()
            .strip_prefix("weir serve: listening on ")
            .with_context(|| format!("weir serve printed {line:?} instead of its address"))?
            .to_string();
        Ok(Server {
            child,
            url,
            _data: data,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the server as an operator would (SIGTERM: its topologies
    /// stop after a last checkpoint, a cluster node leaves its groups)
    /// and waits for it to exit.
    pub(crate) fn terminate(mut self) -> Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status()?;
        if !sent.success() {
            bail!("kill -TERM {pid} failed: {sent}");
        }
        Ok(self.child.wait()?)
    }

    /// CPU seconds (user + system) the server has used so far.
    pub(crate) fn cpu_seconds(&self) -> Result<f64> {
        workloads::cpu_seconds(self.child.id())
    }

    /// `VmHWM` (peak) or `VmRSS` (now) of the server, in MiB.
    pub(crate) fn rss_mib(&self, field: &str) -> f64 {
        status_mib(&format!("/proc/{}/status", self.child.id()), field)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking client that turns every non-2xx answer into an error
/// naming the request and the server's message.
#[derive(Clone)]
pub(crate) struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    pub(crate) fn new(base: &str) -> Client {
        Client {
            base: base.to_string(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }

    /// The server's base URL.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    pub(crate) fn send(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        content_type: &str,
    ) -> Result<String> {
        let url = format!("{}{path}", self.base);
        let res = match method {
            "GET" => self.agent.get(&url).call(),
            "PUT" => self
                .agent
                .put(&url)
                .header("Content-Type", content_type)
                .send(body),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self
                .agent
                .post(&url)
                .header("Content-Type", content_type)
                .send(body),
        };
        let mut res = res.with_context(|| format!("{method} {path}"))?;
        let status = res.status().as_u16();
        let text = res
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .with_context(|| format!("{method} {path}: reading the answer"))?;
        if !(200..300).contains(&status) {
            bail!("{method} {path}: {status} {text}");
        }
        Ok(text)
    }
}

impl Client {
    /// Uploads the built guests `modules` under their own names.
    pub(crate) fn push_guests(&self, modules: &[&str]) -> Result<()> {
        for module in modules {
            self.send(
                "POST",
                &format!("/v1/modules/{module}"),
                &guest_bytes(module),
                "application/wasm",
            )?;
        }
        Ok(())
    }

    /// Applies topology `name` from `doc` (YAML) and starts it.
    pub(crate) fn apply_and_start(&self, name: &str, doc: &str) -> Result<()> {
        self.send(
            "PUT",
            &format!("/v1/topologies/{name}"),
            doc.as_bytes(),
            "application/yaml",
        )?;
        self.send(
            "POST",
            &format!("/v1/topologies/{name}/start"),
            b"",
            "application/json",
        )?;
        Ok(())
    }

    /// Stops topology `name` and deletes it.
    pub(crate) fn stop_and_delete(&self, name: &str) -> Result<()> {
        self.send(
            "POST",
            &format!("/v1/topologies/{name}/stop"),
            b"",
            "application/json",
        )?;
        self.send("DELETE", &format!("/v1/topologies/{name}"), b"", "")?;
        Ok(())
    }

    /// Appends JSON lines to `stream`.
    pub(crate) fn produce(&self, stream: &str, lines: &[u8]) -> Result<()> {
        self.send(
            "POST",
            &format!("/v1/streams/{stream}/events"),
            lines,
            "application/x-ndjson",
        )?;
        Ok(())
    }
}

/// A read of a stream: only what the bench needs.
#[derive(Deserialize)]
struct Read<'a> {
    next_offset: u64,
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

/// The produce bodies of one round: events `0..n` as JSON lines.
fn bodies(n: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let end = (i + PRODUCE_BATCH).min(n);
        let mut body = Vec::with_capacity(((end - i) * 150) as usize);
        for j in i..end {
            let e = generate(j);
            body.extend_from_slice(br#"{"value":"#);
            body.extend_from_slice(&e.value);
            body.extend_from_slice(format!(",\"timestamp\":{}}}\n", e.timestamp).as_bytes());
        }
        out.push(body);
        i = end;
    }
    out
}

/// One round through the API; returns (end-to-end, produce) times and
/// the events read.
fn api_round(
    client: &Client,
    workload: &str,
    doc: &str,
    round: usize,
    n: u64,
    expected: u64,
    producers: usize,
) -> Result<(Duration, Duration, u64)> {
    let name = format!("{workload}-{round}");
    let input = format!("{name}-in");
    let output = format!("{name}-out");
    let doc = doc
        .replace("@NAME@", &name)
        .replace("@IN@", &input)
        .replace("@OUT@", &output);
    client.apply_and_start(&name, &doc)?;
    // Generated before the clock starts: the client's own JSON writing is
    // not the server's cost.
    let bodies = Arc::new(bodies(n));
    let started = Instant::now();
    // `producers` connections, each sending every `producers`-th body.
    let senders: Vec<_> = (0..producers)
        .map(|first| {
            let client = client.clone();
            let bodies = Arc::clone(&bodies);
            let path = format!("/v1/streams/{input}/events");
            std::thread::spawn(move || -> Result<Duration> {
                for body in bodies.iter().skip(first).step_by(producers) {
                    client.send("POST", &path, body, "application/x-ndjson")?;
                }
                Ok(started.elapsed())
            })
        })
        .collect();
    let mut offset = 0;
    let mut read = 0u64;
    let mut progress = Instant::now();
    while read < expected {
        let path = format!("/v1/streams/{output}/events?offset={offset}&limit={READ_LIMIT}");
        let text = client.send("GET", &path, b"", "")?;
        let page: Read<'_> = serde_json::from_str(&text)
            .with_context(|| format!("GET {path}: not a stream read"))?;
        if page.events.is_empty() {
            if progress.elapsed() > STALL {
                bail!(
                    "{name}: no output for {} s after {read} of {expected} events",
                    STALL.as_secs()
                );
            }
            if senders.iter().all(|s| s.is_finished()) {
                std::thread::sleep(Duration::from_millis(5));
            } else {
                std::thread::sleep(Duration::from_millis(20));
            }
            continue;
        }
        read += page.events.len() as u64;
        offset = page.next_offset;
        progress = Instant::now();
    }
    let total = started.elapsed();
    let mut produced = Duration::ZERO;
    for sender in senders {
        let done = sender
            .join()
            .map_err(|_| anyhow::anyhow!("a producer thread panicked"))??;
        produced = produced.max(done);
    }
    client.stop_and_delete(&name)?;
    if read != expected {
        bail!("{name}: read {read} events, expected {expected}");
    }
    Ok((total, produced, read))
}

/// Runs W1 and W2 (`only` picks one) with `n` events: native and
/// in-process as `fixed` does, then through a fresh `weir serve`.
pub fn run(
    n: u64,
    rounds: usize,
    only: Option<&str>,
    interval_ms: Option<u64>,
    idle_ms: Option<u64>,
    producers: usize,
) -> Result<Vec<Figures>> {
    let wanted = |w: &str| only.is_none_or(|o| o == w);
    let server = Server::start()?;
    let client = Client::new(&server.url);
    client.push_guests(&["filter", "map", "keyed-sum"])?;
    let docs = [
        (
            "stateless",
            "name: @NAME@\n@CHECKPOINT@sources: [{ name: in, stream: @IN@ }]\noperators:\n  - { name: f, module: filter, input: in, config: { field: amount, op: gt, value: 50 } }\n  - { name: m, module: map, input: f, config: { uppercase: user } }\nsinks: [{ name: out, stream: @OUT@, input: m }]\n",
        ),
        (
            "keyed",
            "name: @NAME@\n@CHECKPOINT@sources: [{ name: in, stream: @IN@ }]\noperators:\n  - { name: agg, module: keyed-sum, input: in, key_by: { field: user } }\nsinks: [{ name: out, stream: @OUT@, input: agg }]\n",
        ),
    ];
    let mut all = Vec::new();
    // The server's checkpoint defaults, or what is given.
    let mut fields = Vec::new();
    if let Some(ms) = interval_ms {
        fields.push(format!("interval_ms: {ms}"));
    }
    if let Some(ms) = idle_ms {
        fields.push(format!("idle_ms: {ms}"));
    }
    let checkpoint = if fields.is_empty() {
        String::new()
    } else {
        format!("checkpoint: {{ {} }}\n", fields.join(", "))
    };
    for (workload, doc) in docs {
        if !wanted(workload) {
            continue;
        }
        let doc = &doc.replace("@CHECKPOINT@", &checkpoint);
        // Native and in-process, as `fixed` measures them, in this run.
        let base = workloads::run(n, rounds, Some(workload), 1)?
            .pop()
            .context("fixed workload gave no figures")?;
        let expected = base.out;
        println!(
            "{workload} through weir serve ({}), {producers} producer connection(s):",
            server.url
        );
        let mut round = 0;
        api_round(&client, workload, doc, round, n, expected, producers)?;
        let mut totals = Vec::new();
        let mut produces = Vec::new();
        for _ in 0..rounds {
            round += 1;
            let (total, produced, _) =
                api_round(&client, workload, doc, round, n, expected, producers)?;
            println!(
                "  round {round}: {:.0} ev/s end to end, produce done after {:.2} s of {:.2} s; server RSS {:.0} MiB",
                n as f64 / total.as_secs_f64(),
                produced.as_secs_f64(),
                total.as_secs_f64(),
                server.rss_mib("VmRSS:")
            );
            totals.push(total);
            produces.push(produced);
        }
        let spread = spread(&totals);
        let api = n as f64 / median(&totals).as_secs_f64();
        all.push(Figures {
            workload,
            events: n,
            out: expected,
            api_events_per_sec: api,
            api_spread_pct: spread,
            api_produce_events_per_sec: n as f64 / median(&produces).as_secs_f64(),
            in_process_events_per_sec: base.weir_events_per_sec,
            native_events_per_sec: base.native_events_per_sec,
            api_vs_native: api / base.native_events_per_sec,
            api_vs_in_process: api / base.weir_events_per_sec,
            server_peak_rss_mib: server.rss_mib("VmHWM:"),
            bench_peak_rss_mib: peak_rss_mib(),
        });
    }
    println!();
    println!(
        "{:<10} {:>9} {:>9} {:>16} {:>14} {:>14} {:>12} {:>9} {:>9} {:>10}",
        "workload",
        "events",
        "out",
        "API ev/s",
        "produce ev/s",
        "in-proc ev/s",
        "native ev/s",
        "/native",
        "/in-proc",
        "server MiB"
    );
    for f in &all {
        println!(
            "{:<10} {:>9} {:>9} {:>9.0} ±{:>4.1}% {:>14.0} {:>14.0} {:>12.0} {:>8.1}% {:>8.1}% {:>10.0}",
            f.workload,
            f.events,
            f.out,
            f.api_events_per_sec,
            f.api_spread_pct,
            f.api_produce_events_per_sec,
            f.in_process_events_per_sec,
            f.native_events_per_sec,
            f.api_vs_native * 100.0,
            f.api_vs_in_process * 100.0,
            f.server_peak_rss_mib
        );
    }
    for f in &all {
        crate::report::result(format!(
            "RESULT workload={}-api events={} out={} events_per_sec={:.0} spread_pct={:.1} produce_events_per_sec={:.0} in_process_events_per_sec={:.0} native_events_per_sec={:.0} ratio={:.3} ratio_in_process={:.3} server_peak_rss_mib={:.0}",
            f.workload,
            f.events,
            f.out,
            f.api_events_per_sec,
            f.api_spread_pct,
            f.api_produce_events_per_sec,
            f.in_process_events_per_sec,
            f.native_events_per_sec,
            f.api_vs_native,
            f.api_vs_in_process,
            f.server_peak_rss_mib
        ));
    }
    if only.is_none() {
        control_plane(&client, rounds.max(5))?;
    }
    Ok(all)
}

/// The `p` quantile of sorted `xs`.
fn quantile(xs: &[Duration], p: f64) -> Duration {
    xs[(((xs.len() - 1) as f64) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The control plane's own figures on the same server: upload-to-running
/// (three modules pushed under new names with the compile cache warm, a
/// three-operator topology applied and started, until `start` answers),
/// and the latency of one produce call of 1,000 events (200 calls, each
/// answered once the events are on disk).
fn control_plane(client: &Client, rounds: usize) -> Result<()> {
    let modules = ["filter", "map", "keyed-sum"].map(|m| (m, guest_bytes(m)));
    let mut deploys = Vec::new();
    for round in 0..rounds {
        let started = Instant::now();
        for (module, bytes) in &modules {
            client.send(
                "POST",
                &format!("/v1/modules/{module}-r{round}"),
                bytes,
                "application/wasm",
            )?;
        }
        let doc = format!(
            "name: deploy-{round}\nsources: [{{ name: in, stream: deploy-{round}-in }}]\noperators:\n  \
             - {{ name: f, module: filter-r{round}, input: in, config: {{ field: amount, op: gt, value: 50 }} }}\n  \
             - {{ name: m, module: map-r{round}, input: f, config: {{ uppercase: user }} }}\n  \
             - {{ name: agg, module: keyed-sum-r{round}, input: m, key_by: {{ field: user }} }}\n\
             sinks: [{{ name: out, stream: deploy-{round}-out, input: agg }}]\n"
        );
        let name = format!("/v1/topologies/deploy-{round}");
        client.send("PUT", &name, doc.as_bytes(), "application/yaml")?;
        client.send("POST", &format!("{name}/start"), b"", "application/json")?;
        deploys.push(started.elapsed());
        client.send("POST", &format!("{name}/stop"), b"", "application/json")?;
        client.send("DELETE", &name, b"", "")?;
    }
    deploys.sort();
    let body = bodies(1000).pop().context("no produce body")?;
    let mut calls = Vec::with_capacity(200);
    let started = Instant::now();
    for _ in 0..200 {
        let t = Instant::now();
        client.send(
            "POST",
            "/v1/streams/produce-latency/events",
            &body,
            "application/x-ndjson",
        )?;
        calls.push(t.elapsed());
    }
    let produce_rate = 200_000.0 / started.elapsed().as_secs_f64();
    calls.sort();
    println!(
        "control plane: upload-to-running (3 modules, warm compile cache) median {:.1} ms, worst {:.1} ms over {rounds}; produce call of 1000 events p50 {:.1} ms, p99 {:.1} ms ({produce_rate:.0} events/s, one client)",
        ms(quantile(&deploys, 0.5)),
        ms(quantile(&deploys, 1.0)),
        ms(quantile(&calls, 0.5)),
        ms(quantile(&calls, 0.99)),
    );
    crate::report::result(format!(
        "RESULT workload=api-deploy rounds={rounds} median_ms={:.1} worst_ms={:.1}",
        ms(quantile(&deploys, 0.5)),
        ms(quantile(&deploys, 1.0))
    ));
    crate::report::result(format!(
        "RESULT workload=api-produce calls=200 batch=1000 events_per_sec={produce_rate:.0} p50_ms={:.2} p99_ms={:.2}",
        ms(quantile(&calls, 0.5)),
        ms(quantile(&calls, 0.99))
    ));
    Ok(())
}
