//! Sinks outside Weir end to end: `weir serve` (with `--postgres-url`) runs
//! word count into a PostgreSQL upsert table and an append table, and a
//! fraud detector whose alerts go to a webhook (a receiver in this test,
//! failing its first requests) and to a stream. The server is killed with
//! SIGKILL 5 times at random moments and made to abort once at each fault
//! point (`WEIR_FAULT`: after the Weir commit, before the PostgreSQL
//! commit), more input arriving after each restart; then PostgreSQL is
//! restarted while the last input comes in. In the end the upsert
//! table equals the oracle, the append table holds every count exactly
//! once, and the webhook got every alert at least once and, deduplicated
//! by idempotency key, exactly the alerts of the (exactly-once) stream.

mod server;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use server::{Server, eventually};
use weir_fixtures::guest_bytes;
use weir_fixtures::postgres::PgServer;
use weir_fixtures::webhook::{Script, Webhook};

const CHUNKS: usize = 8;
const LINES_PER_CHUNK: usize = 1_500;
const TXNS_PER_CHUNK: usize = 600;
const KILLS: usize = 5;
const FAULTS: [&str; 2] = ["after-commit-before-publish", "before-postgres-commit"];

fn topology(hook: &str) -> String {
    format!(
        r#"
name: outside
checkpoint: {{ interval_ms: 200 }}
sources:
  - {{ name: lines, stream: lines }}
  - {{ name: txns, stream: txns, watermark: {{ max_out_of_orderness_ms: 0 }} }}
operators:
  - {{ name: split, module: split-words, input: lines }}
  - {{ name: count, module: word-count, input: split, key_by: key, parallelism: 2 }}
  - {{ name: fraud, module: fraud-detector, input: txns, key_by: key,
      config: {{ max_count: 2, min_amount: 50, window_ms: 1000 }} }}
sinks:
  - name: totals
    input: count
    postgres:
      table: totals
      key_columns: [word]
      columns: {{ word: key, count: {{ from: $.count, type: bigint }} }}
      create_table: true
  - name: history
    input: count
    postgres:
      table: history
      mode: append
      columns: {{ word: key, count: {{ from: $.count, type: bigint }}, at: timestamp }}
      create_table: true
  - {{ name: hook, input: fraud.alerts, http: {{ url: "{hook}", headers: {{ X-Weir-Test: "1" }} }} }}
  - {{ name: alerts, input: fraud.alerts, stream: alerts }}
"#
    )
}

/// Chunk `chunk` of the input: lines of 1-6 words from 300, and card
/// transactions in time order.
fn chunk(rng: &mut StdRng, chunk: usize) -> (String, String) {
    let mut lines = String::new();
    for i in 0..LINES_PER_CHUNK {
        let n = rng.random_range(1..=6);
        let words: Vec<String> = (0..n)
            .map(|_| format!("w{}", rng.random_range(0..300)))
            .collect();
        let t = 1_700_000_000_000i64 + (chunk * LINES_PER_CHUNK + i) as i64;
        lines.push_str(&format!(
            "{{\"value\":\"{}\",\"timestamp\":{t}}}\n",
            words.join(" ")
        ));
    }
    let mut txns = String::new();
    for i in 0..TXNS_PER_CHUNK {
        let t = 1_700_000_000_000i64 + ((chunk * TXNS_PER_CHUNK + i) as i64) * 3;
        txns.push_str(&format!(
            "{{\"key\":\"card{}\",\"value\":{{\"amount\":{}}},\"timestamp\":{t}}}\n",
            rng.random_range(0..30),
            rng.random_range(0..100),
        ));
    }
    (lines, txns)
}

/// Appends JSON lines to `stream` of the server at `url`.
fn produce(url: &str, stream: &str, text: &str) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut answer = agent
        .post(&format!("{url}/v1/streams/{stream}/events"))
        .content_type("application/x-ndjson")
        .send(text)
        .map_err(|e| e.to_string())?;
    match answer.status().as_u16() {
        200 | 201 => Ok(()),
        status => Err(format!(
            "produce {stream}: {status} {}",
            answer.body_mut().read_to_string().unwrap_or_default()
        )),
    }
}

/// Runs `weir serve` with `WEIR_FAULT=fault`, calls `feed` with its URL
/// once it is up (unless it aborted before), and waits for the abort.
fn run_to_fault(data: &Path, pg: &PgServer, fault: &str, feed: impl FnOnce(&str)) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(["--postgres-url", &pg.url()])
        .env("WEIR_FAULT", fault)
        .env("WEIR_LOG", "warn")
        .env_remove("WEIR_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let _ = BufReader::new(child.stdout.take().unwrap()).read_line(&mut line);
    if let Some(url) = line.trim().strip_prefix("weir serve: listening on ") {
        feed(url);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("WEIR_FAULT={fault} never aborted the server");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.signal(), Some(6), "WEIR_FAULT={fault}: {status}");
}

fn start(data: &std::path::Path, pg: &PgServer, fault: Option<&str>) -> Server {
    let url = pg.url();
    let env: Vec<(&str, &str)> = fault.map(|f| ("WEIR_FAULT", f)).into_iter().collect();
    Server::start(data, &["--postgres-url", &url], &env)
}

#[test]
fn killed_servers_keep_tables_exactly_once_and_alerts_dedupable() {
    let started = Instant::now();
    let mut pg = PgServer::start_new();
    let hook = Webhook::start(Script {
        fail_first: Some((2, 503)),
        ..Script::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut rng = StdRng::seed_from_u64(21);

    let mut server = start(&data, &pg, None);
    let http = server.client();
    for module in ["split-words", "word-count", "fraud-detector"] {
        let a = http.push(module, &guest_bytes(module));
        assert!(a.status == 201 || a.status == 200, "{module}: {}", a.text);
    }
    let a = http.put_topology("outside", &topology(&hook.url("/alerts")));
    assert_eq!(a.status, 201, "{}", a.text);
    let a = http.post_json("/v1/topologies/outside/start", &json!({}));
    assert!(a.status < 300, "{}", a.text);

    let mut fed = 0;
    let mut feed = |url: &str, rng: &mut StdRng| {
        let (lines, txns) = chunk(rng, fed);
        fed += 1;
        (produce(url, "lines", &lines), produce(url, "txns", &txns))
    };
    for _ in 0..KILLS {
        let (lines, txns) = feed(&server.url, &mut rng);
        assert!(lines.is_ok() && txns.is_ok(), "{lines:?} {txns:?}");
        std::thread::sleep(Duration::from_millis(rng.random_range(200..900)));
        drop(server); // SIGKILL
        server = start(&data, &pg, None);
    }
    for fault in FAULTS {
        drop(server);
        run_to_fault(&data, &pg, fault, |url| {
            // The server may abort before or while this is produced (a
            // recovery publishes too): what the streams hold decides.
            let _ = feed(url, &mut rng);
        });
        server = start(&data, &pg, None);
    }
    // PostgreSQL restarts while the rest comes in: the sinks retry.
    for n in KILLS + FAULTS.len()..CHUNKS {
        let (lines, txns) = feed(&server.url, &mut rng);
        assert!(lines.is_ok() && txns.is_ok(), "{lines:?} {txns:?}");
        if n == KILLS + FAULTS.len() {
            pg.stop();
            std::thread::sleep(Duration::from_millis(700));
            pg.start();
        }
    }

    // The upsert table reaches the oracle: word counts of what the `lines`
    // stream holds.
    let all_lines: String = server
        .client()
        .events("lines")
        .iter()
        .map(|e| format!("{}\n", json!({ "value": e["value"] })))
        .collect();
    let oracle = weir_fixtures::word_counts(&all_lines);
    let table = |sql: &str| -> BTreeMap<String, u64> {
        pg.query(sql)
            .into_iter()
            .map(|r| (r[0].clone(), r[1].parse().unwrap()))
            .collect()
    };
    // Each sink publishes on its own: wait for both to reach the end (a
    // lost row keeps one of them short, and this times out).
    eventually("the totals and history tables to reach the oracle", || {
        (table("SELECT word, count FROM totals") == oracle
            && table("SELECT word, max(count) FROM history GROUP BY word") == oracle)
            .then_some(())
    });
    let totals = table("SELECT word, count FROM totals");
    assert_eq!(totals, oracle);

    // The append table: every count of every word exactly once.
    let duplicated = pg
        .query("SELECT word, count FROM history GROUP BY word, count HAVING count(*) > 1 LIMIT 5");
    assert!(
        duplicated.is_empty(),
        "counts appended twice: {duplicated:?}"
    );
    assert_eq!(
        table("SELECT word, max(count) FROM history GROUP BY word"),
        oracle
    );
    let rows: u64 = pg.query("SELECT count(*) FROM history")[0][0]
        .parse()
        .unwrap();
    assert_eq!(
        rows,
        oracle.values().sum::<u64>(),
        "a count is missing from history"
    );

    // Alerts: the stream's (exactly-once) alerts, each at least once at the
    // webhook, exactly once by idempotency key.
    let accepted_keys = || -> BTreeSet<String> {
        hook.received()
            .into_iter()
            .filter(|r| r.status == 200)
            .map(|r| {
                r.headers
                    .get("idempotency-key")
                    .unwrap_or_else(|| panic!("no idempotency key: {r:?}"))
                    .clone()
            })
            .collect()
    };
    eventually("every alert at the webhook", || {
        let stream = server.client().events("alerts");
        (!stream.is_empty() && accepted_keys().len() >= stream.len()).then_some(())
    });
    // All input is in: a few more checkpoints change nothing.
    std::thread::sleep(Duration::from_secs(1));
    let expected = server.client().events("alerts");
    let received = hook.received();
    assert!(received.iter().take(2).all(|r| r.status == 503));
    let mut by_key: BTreeMap<String, String> = BTreeMap::new();
    for r in received.iter().filter(|r| r.status == 200) {
        assert_eq!(r.headers["x-weir-test"], "1");
        let key = r.headers["idempotency-key"].clone();
        if let Some(before) = by_key.insert(key.clone(), r.body.clone()) {
            assert_eq!(before, r.body, "key {key} named two different alerts");
        }
    }
    let value_of = |e: &Value| {
        (
            e["key"].to_string(),
            e["value"].to_string(),
            e["timestamp"].to_string(),
        )
    };
    let mut deduped: Vec<_> = by_key
        .values()
        .map(|b| value_of(&serde_json::from_str::<Value>(b).unwrap()))
        .collect();
    let mut wanted: Vec<_> = expected.iter().map(value_of).collect();
    deduped.sort();
    wanted.sort();
    assert_eq!(
        deduped.len(),
        wanted.len(),
        "alerts lost or doubled after dedup"
    );
    assert!(
        deduped == wanted,
        "the webhook's alerts differ from the stream's"
    );
    eprintln!(
        "sinks e2e: {} words, {} history rows, {} alerts ({} POSTs) in {:?}",
        oracle.len(),
        rows,
        wanted.len(),
        received.len(),
        started.elapsed()
    );
}

#[test]
fn bad_sink_settings_are_refused_with_their_fields() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &[], &[]);
    let http = server.client();
    let doc = "name: bad\nsources: [{ name: s, stream: s }]\nsinks:\n  - { name: pg, input: s, postgres: { table: 'a b', columns: { n: '$.n' } } }\n  - { name: hook, input: s, http: { url: 'https://x/y', batch: 0 } }\n";
    let a = http.put_topology("bad", doc);
    assert_eq!(a.status, 422, "{}", a.text);
    let problems: Vec<String> = a.body["error"]["details"]["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no problems in {}", a.text))
        .iter()
        .map(|p| {
            format!(
                "{}: {}",
                p["path"].as_str().unwrap(),
                p["message"].as_str().unwrap()
            )
        })
        .collect();
    let message = problems.join("\n");
    for field in [
        "sinks[0].postgres.url: no PostgreSQL URL",
        "sinks[0].postgres.table",
        "sinks[0].postgres.key_columns: upsert needs",
        "sinks[1].http.url: https is not supported",
        "sinks[1].http.batch",
    ] {
        assert!(message.contains(field), "{field} not in {message}");
    }
}
