//! Figures of the API, measured over real HTTP against an in-process
//! server on an ephemeral port (no timing assertions anywhere):
//!
//! - upload-to-running: three modules pushed (as new module names, with
//!   the precompile cache warm), a 3-operator topology applied and started,
//!   until `start` answers `running`; median and worst of the rounds;
//! - produce: batches of 1000 events as JSON lines, each acknowledged once
//!   on disk; events/s and p50/p99 latency of one produce call.
//!
//! `cargo run --release -p weir-server --example api_bench [ROUNDS] [BATCHES]`
//! (guests built by `cargo xtask guests`).

use std::time::{Duration, Instant};

use serde_json::Value;
use weir_server::ServerConfig;

struct Http {
    base: String,
    agent: ureq::Agent,
}

impl Http {
    fn send(&self, method: &str, path: &str, body: &[u8], content_type: &str) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let res = match method {
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
        let mut res = res.expect("request");
        let status = res.status().as_u16();
        let text = res.body_mut().read_to_string().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rounds = args.first().copied().unwrap_or(10);
    let batches = args.get(1).copied().unwrap_or(200);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().expect("address"),
        data_dir: dir.path().to_path_buf(),
        ..ServerConfig::default()
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(weir_server::serve(
            config,
            move |addr| {
                let _ = tx.send(addr);
            },
            async move {
                let _ = stop_rx.await;
            },
        ))
    });
    let addr = rx.recv().expect("server address");
    let http = Http {
        base: format!("http://{addr}"),
        agent: ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into(),
    };
    let modules = [
        ("split-words", weir_tests::guest_bytes("split-words")),
        ("identity", weir_tests::guest_bytes("identity")),
        ("word-count", weir_tests::guest_bytes("word-count")),
    ];
    // Warm the precompile cache: the first upload of each compiles.
    for (name, bytes) in &modules {
        let (status, _) = http.send(
            "POST",
            &format!("/v1/modules/{name}"),
            bytes,
            "application/wasm",
        );
        assert_eq!(status, 201);
    }

    let mut times = Vec::new();
    let mut apply_start = Vec::new();
    for round in 0..rounds {
        let started = Instant::now();
        for (name, bytes) in &modules {
            let (status, v) = http.send(
                "POST",
                &format!("/v1/modules/{name}-{round}"),
                bytes,
                "application/wasm",
            );
            assert_eq!(status, 201, "{v}");
        }
        let topology = format!(
            "name: t{round}\nsources: [{{ name: in, stream: bench-in-{round} }}]\noperators:\n  \
             - {{ name: split, module: split-words-{round}, input: in }}\n  \
             - {{ name: same, module: identity-{round}, input: split }}\n  \
             - {{ name: count, module: word-count-{round}, input: same, key_by: key }}\n\
             sinks: [{{ name: out, stream: bench-out-{round}, input: count }}]\n"
        );
        let applied = Instant::now();
        let (status, v) = http.send(
            "PUT",
            &format!("/v1/topologies/t{round}"),
            topology.as_bytes(),
            "application/yaml",
        );
        assert_eq!(status, 201, "{v}");
        let (status, v) = http.send(
            "POST",
            &format!("/v1/topologies/t{round}/start"),
            b"",
            "application/json",
        );
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["state"], "running");
        times.push(started.elapsed());
        apply_start.push(applied.elapsed());
        let (status, _) = http.send(
            "POST",
            &format!("/v1/topologies/t{round}/stop"),
            b"",
            "application/json",
        );
        assert_eq!(status, 200);
    }
    times.sort();
    apply_start.sort();

    let mut batch = String::new();
    for i in 0..1000 {
        batch.push_str(&format!(
            "{{\"key\": \"user-{}\", \"value\": {{\"amount\": {i}, \"note\": \"a produce benchmark event\"}}, \"timestamp\": {}}}\n",
            i % 100,
            1_700_000_000_000i64 + i
        ));
    }
    let mut latencies = Vec::with_capacity(batches);
    let started = Instant::now();
    for _ in 0..batches {
        let t = Instant::now();
        let (status, v) = http.send(
            "POST",
            "/v1/streams/bench-produce/events",
            batch.as_bytes(),
            "application/x-ndjson",
        );
        assert_eq!(status, 200, "{v}");
        latencies.push(t.elapsed());
    }
    let total = started.elapsed();
    latencies.sort();
    let events = batches * 1000;

    let mut out = String::new();
    out.push_str("weir API figures (in-process server, real HTTP, loopback)\n");
    out.push_str(&format!(
        "upload-to-running, 3 operators, warm cache ({rounds} rounds): median {}, worst {}\n",
        ms(percentile(&times, 0.5)),
        ms(*times.last().expect("rounds"))
    ));
    out.push_str(&format!(
        "  of which apply + start: median {}, worst {}\n",
        ms(percentile(&apply_start, 0.5)),
        ms(*apply_start.last().expect("rounds"))
    ));
    out.push_str(&format!(
        "produce, {batches} batches of 1000 events: {:.0} events/s; call latency p50 {}, p99 {}, max {}\n",
        events as f64 / total.as_secs_f64(),
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().expect("batches"))
    ));
    eprint!("{out}");
    let _ = stop_tx.send(());
    let _ = server.join();
}
