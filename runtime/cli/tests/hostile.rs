//! Hostile requests against the real `weir serve` over HTTP: one case per
//! kind of attack seen in review (issue 13), each checking the status and
//! error code it gets and what must hold afterwards: the server is up,
//! `/healthz` answers, nothing was created that should not be, and
//! acknowledged events read back (after a restart where it matters).

mod server;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use server::{Http, Server, eventually};
use weir_fixtures::guest_bytes;

/// A topology of `operators` operators in a chain (each reading the one
/// before), each with `parallelism`, as JSON.
fn chain(operators: usize, parallelism: u16) -> String {
    let ops: Vec<Value> = (0..operators)
        .map(|i| {
            let input = if i == 0 {
                "s".to_string()
            } else {
                format!("o{}", i - 1)
            };
            json!({ "name": format!("o{i}"), "module": "split-words", "input": input, "parallelism": parallelism })
        })
        .collect();
    json!({
        "name": "big",
        "sources": [{ "name": "s", "stream": "s" }],
        "operators": ops,
        "sinks": [{ "name": "out", "stream": "out", "input": format!("o{}", operators - 1) }],
    })
    .to_string()
}

fn validate(http: &Http, doc: &str) -> server::Answer {
    http.request(
        "POST",
        "/v1/topologies/validate",
        Some((doc.as_bytes(), "application/json")),
        &[],
    )
}

/// What must hold after every case: the server answers.
fn still_up(http: &Http) {
    // On a connection of its own: the server may close the one a refused
    // request came on (a 413 leaves its body unread), and a pooled client
    // would reuse it.
    let health = http.with_deadline(Duration::from_secs(30)).get("/healthz");
    assert_eq!(health.status, 200, "{}", health.text);
}

/// Sends raw bytes and reads the answer until the server closes or `wait`
/// passes.
fn raw(url: &str, request: &[u8], wait: Duration) -> String {
    let addr = url.trim_start_matches("http://");
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(wait)).unwrap();
    let _ = tcp.write_all(request);
    let mut answer = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match tcp.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

// Item 1: a 30,000-operator chain overflowed the stack and aborted the
// server; now the size limit answers before any graph walk.
#[test]
fn a_huge_topology_is_refused_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], &[]);
    let http = srv.client();
    let doc = chain(30_000, 1);
    let a = validate(&http, &doc);
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["valid"], false);
    // The size limits answer alone: nothing else of it is walked.
    let problems = a.body["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{}", a.text);
    assert!(
        a.text
            .contains("30000 operators is over this server's limit of 256")
            && a.text
                .contains("30000 instances, over this server's limit of 1024"),
        "{}",
        a.text
    );
    let a = http.request(
        "PUT",
        "/v1/topologies/big",
        Some((doc.as_bytes(), "application/json")),
        &[],
    );
    assert_eq!(a.status, 422, "{}", a.text);
    assert_eq!(a.code(), "invalid_topology");
    still_up(&http);
    // Under a raised limit the long chain is walked (iteratively) too.
    drop(srv);
    let srv = Server::start(
        dir.path(),
        &["--max-operators", "40000", "--max-instances", "40000"],
        &[],
    );
    let http = srv.client();
    let a = validate(&http, &doc);
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(
        a.text.contains("unknown module") || a.text.contains("no module"),
        "{}",
        &a.text[..a.text.len().min(2000)]
    );
    assert!(a.text.len() < 64 << 10, "{} bytes", a.text.len());
    still_up(&http);
}

// Item 1: 500 operators × parallelism 8 made 3,905 threads.
#[test]
fn too_many_instances_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], &[]);
    let http = srv.client();
    let a = validate(&http, &chain(200, 8));
    assert_eq!(a.body["valid"], false, "{}", a.text);
    assert!(
        a.text.contains("1600 instances") && a.text.contains("--max-instances"),
        "{}",
        a.text
    );
    still_up(&http);
}

// Item 2: 8,000 unknown inputs made a 442 MB answer (each message listed
// every name).
#[test]
fn unknown_inputs_get_a_short_answer() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], &[]);
    let http = srv.client();
    let mut doc: Value = serde_json::from_str(&chain(250, 1)).unwrap();
    for (i, op) in doc["operators"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        op["input"] = json!(format!("ghost-{i}"));
    }
    let a = validate(&http, &doc.to_string());
    assert_eq!(a.status, 200, "{}", a.text);
    let problems = a.body["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 101, "{}", a.text);
    let last = problems[100]["message"].as_str().unwrap();
    assert!(last.contains("problems in all"), "{last}");
    assert!(a.text.len() < 64 << 10, "{} bytes", a.text.len());
    still_up(&http);
}

// Item 8: 100,000 levels of YAML took 25-42 s on an async worker; now
// refused before parsing, on the blocking pool, and bounded in size.
#[test]
fn deep_or_big_documents_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--max-document-bytes", "300000"], &[]);
    let http = srv.client();
    let yaml = format!("name: deep\nsinks: {}", "[".repeat(100_000));
    let a = http.put_topology("deep", &yaml);
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(a.code(), "invalid_document");
    assert!(a.text.contains("64 levels"), "{}", a.text);
    let json_doc = format!("{{\"name\": \"deep\", \"x\": {}", "[".repeat(100_000));
    let a = validate(&http, &json_doc);
    assert_eq!(a.status, 400, "{}", a.text);
    // The client writes the whole body before it reads: the server must
    // read the refused upload rather than reset the connection under it
    // (seen as "Broken pipe" now and then), so try it several times.
    let big = format!("name: big\n# {}\n", "x".repeat(4_000_000));
    for _ in 0..5 {
        let a = http.put_topology("big", &big);
        assert_eq!(a.status, 413, "{}", a.text);
        assert_eq!(a.code(), "payload_too_large");
        assert!(a.text.contains("--max-document-bytes"), "{}", a.text);
    }
    still_up(&http);
}

// Item 3: each read of a new name created a stream and kept a file open,
// until the open-file limit was reached.
#[test]
fn reading_a_missing_stream_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], &[]);
    let http = srv.client();
    for i in 0..50 {
        let a = http.get(&format!("/v1/streams/ghost-{i}/events"));
        assert_eq!(a.status, 404, "{}", a.text);
        assert_eq!(a.code(), "stream_not_found");
    }
    let a = http.request(
        "GET",
        "/v1/streams/ghost/events",
        None,
        &[("Accept", "text/event-stream")],
    );
    assert_eq!(a.status, 404, "{}", a.text);
    assert_eq!(files_under(&dir.path().join("streams")), 0);
    assert_eq!(http.get("/v1/streams").body["streams"], json!([]));
    assert_eq!(http.get("/metrics").status, 200);
    // A produce creates the stream; then it reads.
    assert_eq!(http.produce("real", "{\"value\": 1}\n").status, 200);
    assert_eq!(http.get("/v1/streams/real/events").status, 200);
    assert_eq!(files_under(&dir.path().join("streams")), 1);
    still_up(&http);
}

// Item 4: a 65,536-byte header name was acknowledged, then unreadable, and
// recovery cut it and two later acknowledged events.
#[test]
fn an_event_the_log_cannot_hold_is_refused_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], &[]);
    let http = srv.client();
    assert_eq!(http.produce("s", "{\"value\": \"a\"}\n").status, 200);
    let bad = json!([
        { "value": "ok" },
        { "value": "x", "headers": { "h".repeat(65_536): "v" } },
    ]);
    let a = http.post_json("/v1/streams/s/events", &bad);
    assert_eq!(a.status, 422, "{}", &a.text[..a.text.len().min(500)]);
    assert_eq!(a.code(), "event_too_large");
    assert_eq!(a.body["error"]["details"]["index"], 1);
    assert!(a.text.contains("65535 bytes"), "{}", a.text);
    let b = http.produce("s", "{\"value\": \"b\"}\n");
    assert_eq!(b.body["first_offset"], 1, "{}", b.text);
    drop(http);
    srv.stop();
    let srv = Server::start(dir.path(), &[], &[]);
    let http = srv.client();
    let values: Vec<Value> = http
        .events("s")
        .iter()
        .map(|e| e["value"].clone())
        .collect();
    assert_eq!(values, vec![json!("a"), json!("b")]);
    assert_eq!(
        http.produce("s", "{\"value\": \"c\"}\n").body["first_offset"],
        2
    );
    still_up(&http);
}

// Item 9: with a token set, a refused request's 16 MiB body was still
// read (40 of them: 675 MB); now the 401 comes after at most 64 KiB.
#[test]
fn a_refused_request_is_answered_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], &[("WEIR_TOKEN", "sesame")]);
    let mut request = format!(
        "POST /v1/streams/s/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        16 << 20
    )
    .into_bytes();
    // Only 100 KiB of the announced 16 MiB: the answer must not wait for
    // the rest.
    request.extend(std::iter::repeat_n(b' ', 100 << 10));
    let answer = raw(&srv.url, &request, Duration::from_secs(20));
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer:?}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(answer.contains("\"code\":\"unauthorized\""), "{answer}");
    let http = srv.client();
    still_up(&http);
    assert_eq!(http.get("/v1/streams").status, 200);
}

// Item 9: /metrics names topologies, operators and streams.
#[test]
fn metrics_need_the_token_unless_made_public() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "from-a-file\n").unwrap();
    let token_arg = token.to_str().unwrap();
    let srv = Server::start(dir.path(), &["--token-file", token_arg], &[]);
    let mut http = srv.client();
    let a = http.get("/metrics");
    assert_eq!(a.status, 401, "{}", a.text);
    assert_eq!(a.code(), "unauthorized");
    assert_eq!(http.get("/v1/modules").status, 401);
    http.token = Some("from-a-file".into());
    assert_eq!(http.get("/metrics").status, 200);
    assert_eq!(http.get("/v1/modules").status, 200);
    http.token = Some("from-a-fil".into());
    assert_eq!(http.get("/v1/modules").status, 401);
    drop(srv);
    let srv = Server::start(
        dir.path(),
        &["--token-file", token_arg, "--metrics-public"],
        &[],
    );
    let http = srv.client();
    assert_eq!(http.get("/metrics").status, 200);
    assert_eq!(http.get("/v1/modules").status, 401);
    still_up(&http);
}

// Item 10: `limit=10` of 16 MiB events held 160 MiB per read.
#[test]
fn reads_are_capped_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--max-read-bytes", "10000"], &[]);
    let http = srv.client();
    let value = "v".repeat(4000);
    let lines: String = (0..10)
        .map(|_| format!("{{\"value\": \"{value}\"}}\n"))
        .collect();
    assert_eq!(http.produce("s", &lines).status, 200);
    let a = http.get("/v1/streams/s/events?offset=0&limit=10");
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["events"].as_array().unwrap().len(), 3);
    assert_eq!(a.body["next_offset"], 3);
    // Paging on reads all ten.
    assert_eq!(http.events("s").len(), 10);
    still_up(&http);
}

// Item 10: `Last-Event-ID: 18446744073709551615` wrapped and replayed from 0.
#[test]
fn last_event_id_is_a_checked_offset() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], &[]);
    let http = srv.client();
    assert_eq!(http.produce("s", "{\"value\": 1}\n").status, 200);
    for id in ["18446744073709551615", "-1", "zero"] {
        let a = http.request(
            "GET",
            "/v1/streams/s/events",
            None,
            &[("Accept", "text/event-stream"), ("Last-Event-ID", id)],
        );
        assert_eq!(a.status, 400, "{id}: {}", a.text);
        assert_eq!(a.code(), "bad_last_event_id");
    }
    still_up(&http);
}

// Item 10: followers were unlimited (3,000 made every call take 2.5 s).
#[test]
fn followers_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(
        dir.path(),
        &["--max-followers-per-stream", "1", "--max-followers", "2"],
        &[],
    );
    let http = srv.client();
    for s in ["a", "b", "c"] {
        assert_eq!(http.produce(s, "{\"value\": 1}\n").status, 200);
    }
    let follow = |stream: &str| {
        let addr = srv.url.trim_start_matches("http://");
        let mut tcp = TcpStream::connect(addr).unwrap();
        write!(
            tcp,
            "GET /v1/streams/{stream}/events?offset=0 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
        )
        .unwrap();
        let mut head = [0u8; 12];
        tcp.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 200", "{}", String::from_utf8_lossy(&head));
        tcp
    };
    let first = follow("a");
    let sse = [("Accept", "text/event-stream")];
    let a = http.request("GET", "/v1/streams/a/events?offset=0", None, &sse);
    assert_eq!(a.status, 503, "{}", a.text);
    assert_eq!(a.code(), "too_many_followers");
    assert!(a.text.contains("--max-followers-per-stream"), "{}", a.text);
    let _second = follow("b");
    let a = http.request("GET", "/v1/streams/c/events?offset=0", None, &sse);
    assert_eq!(a.status, 503, "{}", a.text);
    assert!(a.text.contains("--max-followers)"), "{}", a.text);
    // A follower that leaves frees its place.
    drop(first);
    eventually("a free follower place", || {
        let a = http.request("GET", "/v1/streams/a/events?offset=0&limit=1", None, &sse);
        (a.status == 200).then_some(())
    });
    still_up(&http);
}

// Item 11: an operator that rejects its config gave 500 engine_error.
#[test]
fn an_operator_rejecting_its_config_is_the_users_error() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], &[]);
    let http = srv.client();
    assert_eq!(http.push("filter", &guest_bytes("filter")).status, 201);
    let doc = "name: picky\nsources: [{ name: s, stream: s }]\noperators:\n  - { name: strict, module: filter, input: s, config: { field: a, op: nonsense, value: 1 } }\nsinks: [{ name: o, stream: o, input: strict }]\n";
    // Apply instantiates it with its config: a 422 naming the operator.
    let a = http.put_topology("picky", doc);
    assert_eq!(a.status, 422, "{}", a.text);
    assert_eq!(a.code(), "invalid_topology");
    let problem = &a.body["error"]["details"]["problems"][0];
    assert_eq!(problem["path"], "operators[0].config", "{}", a.text);
    assert!(
        problem["message"]
            .as_str()
            .unwrap()
            .contains("operator `strict` rejects its config"),
        "{}",
        a.text
    );
    still_up(&http);
}

// Item 11: a refused stop-with-savepoint left an empty savepoint folder.
#[test]
fn a_refused_savepoint_leaves_no_folder() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], &[]);
    let http = srv.client();
    assert_eq!(http.push("filter", &guest_bytes("filter")).status, 201);
    let doc = "name: idle\nsources: [{ name: s, stream: s }]\noperators:\n  - { name: f, module: filter, input: s, config: { field: a, op: gt, value: 1 } }\nsinks: [{ name: o, stream: o, input: f }]\n";
    assert_eq!(http.put_topology("idle", doc).status, 201);
    let a = http.post_json("/v1/topologies/idle/stop", &json!({ "savepoint": "sp1" }));
    assert_eq!(a.status, 409, "{}", a.text);
    assert_eq!(a.code(), "topology_not_running");
    let a = http.post_json("/v1/topologies/idle/savepoints", &json!({ "name": "sp2" }));
    assert_eq!(a.status, 409, "{}", a.text);
    assert!(!dir.path().join("savepoints/idle").exists());
    still_up(&http);
}

/// A component with one function of `locals` locals and a body of about
/// `body_bytes` bytes: small to send, minutes to compile.
fn compile_bomb(locals: usize, body_bytes: usize) -> Vec<u8> {
    let mut wat = String::from("(component (core module (func");
    wat.push_str(&format!(" (local {})", "i64 ".repeat(locals)));
    for i in 0..body_bytes / 6 {
        wat.push_str(&format!(
            " local.get {} local.set {}",
            i % locals,
            (i * 7 + 3) % locals
        ));
    }
    wat.push_str(")))");
    wat::parse_str(&wat).unwrap()
}

// Item 5: a 1 MB component with 2,000 locals took 48 s and 0.88 GB to
// compile, and rejected uploads left compiled files in the cache.
#[test]
fn a_compile_bomb_is_refused_before_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], &[]);
    let http = srv.client();
    let a = http.push("bomb", &compile_bomb(2_000, 1 << 20));
    assert_eq!(a.status, 422, "{}", a.text);
    assert_eq!(a.code(), "module_too_complex");
    assert!(a.text.contains("locals"), "{}", a.text);
    let a = http.push("wrong", &guest_bytes("forbidden-import"));
    assert_eq!(a.status, 422, "{}", a.text);
    assert_eq!(files_under(&dir.path().join("cache")), 0);
    assert_eq!(http.push("filter", &guest_bytes("filter")).status, 201);
    assert_eq!(files_under(&dir.path().join("cache")), 1);
    still_up(&http);
}

// Item 5: a module within every shape limit may still cost minutes and
// gigabytes to compile: the compile runs in a child process the server
// limits in memory and kills at its deadline, and a deleted version's
// compiled artifact leaves the cache.
#[test]
fn a_compile_over_its_memory_or_time_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let filter = guest_bytes("filter");
    let srv = Server::start(dir.path(), &["--compile-memory-bytes", "8388608"], &[]);
    let http = srv.client();
    let a = http.push("filter", &filter);
    assert_eq!(a.status, 422, "{}", a.text);
    assert_eq!(a.code(), "compile_limit");
    assert!(
        a.text.contains("8388608 bytes") && a.text.contains("--compile-memory-bytes"),
        "{}",
        a.text
    );
    still_up(&http);
    drop(srv);
    let srv = Server::start(dir.path(), &["--compile-timeout-ms", "1"], &[]);
    let http = srv.client();
    let a = http.push("filter", &filter);
    assert_eq!(a.status, 422, "{}", a.text);
    assert_eq!(a.code(), "compile_limit");
    assert!(a.text.contains("--compile-timeout-ms"), "{}", a.text);
    assert_eq!(files_under(&dir.path().join("cache")), 0);
    assert_eq!(http.get("/v1/modules").body["modules"], json!([]));
    still_up(&http);
    drop(srv);
    // Under the default limits it compiles (in the child) and is cached;
    // deleting the version removes the artifact.
    let srv = Server::start(dir.path(), &[], &[]);
    let http = srv.client();
    assert_eq!(http.push("filter", &filter).status, 201);
    assert_eq!(files_under(&dir.path().join("cache")), 1);
    let a = http.request("DELETE", "/v1/modules/filter/versions/1", None, &[]);
    assert_eq!(a.status, 204, "{}", a.text);
    assert_eq!(files_under(&dir.path().join("cache")), 0);
    still_up(&http);
}

// Item 11: a 70 KB URL got a 414 with an empty body (hyper answers it
// before the router); every answer has the JSON error shape.
#[test]
fn requests_hyper_refuses_get_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], &[]);
    let wait = Duration::from_secs(20);
    let long = format!(
        "GET /v1/streams/{}/events HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(70_000)
    );
    let huge_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(600_000)
    );
    let garbage = "GET /\u{1}\u{2} NOT-HTTP\r\n\r\n".to_string();
    for (request, status, code) in [
        (long, "414", "uri_too_long"),
        (huge_header, "431", "headers_too_large"),
        (garbage, "400", "bad_request"),
    ] {
        let answer = raw(&srv.url, request.as_bytes(), wait);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{answer:?}"
        );
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("content-type: application/json"), "{head}");
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"].as_str().unwrap().len() > 20);
    }
    still_up(&srv.client());
}

/// Asks `/healthz` on a connection of its own, giving up after `limit`.
fn healthz_within(url: &str, limit: Duration) -> bool {
    let addr = url.trim_start_matches("http://");
    let Ok(mut tcp) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = tcp.set_read_timeout(Some(limit));
    let _ = tcp.set_write_timeout(Some(limit));
    if tcp
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    tcp.read_exact(&mut head).is_ok() && &head == b"HTTP/1.1 200"
}

/// Peak resident memory of process `pid` (VmHWM), bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/<pid>/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib << 10
}

/// What `weir serve` may keep in its data directory (its layout), checked
/// after the hostile cases: paths relative to the data directory, each a
/// problem when it matches no rule.
fn outside_the_layout(data: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut dirs = vec![data.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path
                .strip_prefix(data)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let parts: Vec<&str> = rel.split('/').collect();
            let name = *parts.last().unwrap();
            if name.contains(".partial") || name.contains(".tmp") {
                problems.push(format!("{rel}: a temporary file left behind"));
                continue;
            }
            let fits = match parts.as_slice() {
                [".lock" | "secret"] => true,
                ["modules" | "streams" | "topologies" | "savepoints" | "cache"] => true,
                ["modules", _module] => true,
                ["modules", _, file] => {
                    *file == "next"
                        || file
                            .strip_suffix(".wasm")
                            .or_else(|| file.strip_suffix(".json"))
                            .is_some_and(|n| n.parse::<u32>().is_ok())
                }
                ["cache", file] => file.starts_with("sha256:") && file.ends_with(".cwasm"),
                // The stream log's and topologies' own files (formats of
                // their own crates): anything inside a named directory.
                ["streams" | "topologies" | "savepoints", _, ..] => true,
                ["state.redb"] => true,
                _ => false,
            };
            if !fits {
                problems.push(format!("{rel}: not part of the data directory's layout"));
            }
            if entry.file_type().unwrap().is_dir() {
                dirs.push(path);
            }
        }
    }
    problems
}

// The closing checks: one server takes a round of every kind of hostile
// request while acknowledged events are written between them and
// `/healthz` is probed; afterwards it is up, its peak RSS stayed under
// the bound, its data directory holds only its layout (private, with a
// private secret), and after a restart every acknowledged event reads
// back unchanged.
#[test]
fn after_every_hostile_case_the_server_is_whole() {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Peak resident memory the server may reach over the whole round: the
    /// cases that were fatal or grew it to 0.7-2.2 GB now stay small.
    const RSS_BOUND: u64 = 256 << 20;
    /// A `/healthz` probe answers within this (a liveness deadline: two
    /// misses in a row fail the test).
    const LIVENESS: Duration = Duration::from_secs(2);

    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let srv = Server::start(&data, &[], &[]);
    let http = srv.client();
    // A running topology over the acknowledged stream, so its records,
    // state and checkpoints are in the data directory too.
    assert_eq!(http.push("filter", &guest_bytes("filter")).status, 201);
    let doc = "name: pass\nsources: [{ name: s, stream: kept }]\noperators:\n  - { name: f, module: filter, input: s, config: { field: round, op: gt, value: -1 } }\nsinks: [{ name: o, stream: passed, input: f }]\n";
    assert_eq!(http.put_topology("pass", doc).status, 201);
    let a = http.post_json("/v1/topologies/pass/start", &json!({}));
    assert!(a.status < 300, "{}", a.text);
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (url, stop) = (srv.url.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut probes, mut missed) = (0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                probes += 1;
                if !healthz_within(&url, LIVENESS) && !healthz_within(&url, LIVENESS) {
                    missed.push(probes);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (probes, missed)
        })
    };
    // Acknowledged events, written between the cases.
    let mut acked = 0u64;
    let mut ack = |http: &Http, round: usize| {
        let lines: String = (0..3)
            .map(|i| {
                json!({ "key": format!("k{round}"), "value": { "round": round, "i": i },
                        "headers": { "h": format!("{round}-{i}") } })
                .to_string()
                    + "\n"
            })
            .collect();
        let a = http.produce("kept", &lines);
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(a.body["first_offset"], acked, "{}", a.text);
        acked += 3;
    };
    type Case = Box<dyn Fn(&Http)>;
    let cases: Vec<(&str, Case)> = vec![
        (
            "30,000-operator chain",
            Box::new(|http| {
                let a = validate(http, &chain(30_000, 1));
                assert_eq!(a.body["valid"], false, "{}", a.text);
            }),
        ),
        (
            "250 unknown inputs",
            Box::new(|http| {
                let mut doc: Value = serde_json::from_str(&chain(250, 1)).unwrap();
                for (i, op) in doc["operators"]
                    .as_array_mut()
                    .unwrap()
                    .iter_mut()
                    .enumerate()
                {
                    op["input"] = json!(format!("ghost-{i}"));
                }
                let a = validate(http, &doc.to_string());
                assert!(a.text.len() < 64 << 10, "{} bytes", a.text.len());
            }),
        ),
        (
            "100,000 levels of YAML",
            Box::new(|http| {
                let yaml = format!("name: deep\nsinks: {}", "[".repeat(100_000));
                assert_eq!(http.put_topology("deep", &yaml).status, 400);
            }),
        ),
        (
            "a document over the limit",
            Box::new(|http| {
                let big = format!("name: big\n# {}\n", "x".repeat(5_000_000));
                assert_eq!(http.put_topology("big", &big).status, 413);
            }),
        ),
        (
            "reads of missing streams",
            Box::new(|http| {
                for i in 0..50 {
                    assert_eq!(
                        http.get(&format!("/v1/streams/ghost-{i}/events")).status,
                        404
                    );
                }
            }),
        ),
        (
            "an event the log cannot hold",
            Box::new(|http| {
                let bad = json!([{ "value": "x", "headers": { "h".repeat(65_536): "v" } }]);
                assert_eq!(http.post_json("/v1/streams/kept/events", &bad).status, 422);
            }),
        ),
        (
            "a wrapping Last-Event-ID",
            Box::new(|http| {
                let a = http.request(
                    "GET",
                    "/v1/streams/kept/events",
                    None,
                    &[
                        ("Accept", "text/event-stream"),
                        ("Last-Event-ID", "18446744073709551615"),
                    ],
                );
                assert_eq!(a.status, 400, "{}", a.text);
            }),
        ),
        (
            "a compile bomb and a forbidden import",
            Box::new(|http| {
                assert_eq!(http.push("bomb", &compile_bomb(2_000, 1 << 20)).status, 422);
                assert_eq!(
                    http.push("wrong", &guest_bytes("forbidden-import")).status,
                    422
                );
            }),
        ),
        (
            "a body over the limit",
            Box::new(|http| {
                let body = vec![b' '; 17 << 20];
                let a = http.request(
                    "POST",
                    "/v1/streams/kept/events",
                    Some((&body, "application/json")),
                    &[],
                );
                assert_eq!(a.status, 413, "{}", a.text);
            }),
        ),
    ];
    for (round, (name, case)) in cases.iter().enumerate() {
        ack(&http, round);
        eprintln!("hostile round: {name}");
        case(&srv.client());
    }
    // The 70 KB URL, on a connection of its own.
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000));
    assert!(raw(&srv.url, long.as_bytes(), Duration::from_secs(20)).starts_with("HTTP/1.1 414"));
    ack(&http, cases.len());
    stop.store(true, Ordering::Relaxed);
    let (probes, missed) = prober.join().unwrap();
    assert!(
        missed.is_empty(),
        "/healthz missed its {LIVENESS:?} deadline twice in a row at probes {missed:?} of {probes}"
    );
    still_up(&http);
    let peak = peak_rss(srv.pid());
    eprintln!(
        "weir serve peak RSS over the hostile round: {} MiB",
        peak >> 20
    );
    assert!(
        peak < RSS_BOUND,
        "peak RSS {} MiB, over the bound of {} MiB",
        peak >> 20,
        RSS_BOUND >> 20
    );
    let before = http.events("kept");
    assert_eq!(before.len() as u64, acked);
    drop(http);
    srv.stop();
    let problems = outside_the_layout(&data);
    assert!(problems.is_empty(), "{problems:#?}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("secret")), 0o600);
    let srv = Server::start(&data, &[], &[]);
    let http = srv.client();
    let after = http.events("kept");
    assert_eq!(
        after, before,
        "acknowledged events changed across a restart"
    );
    for (n, event) in after.iter().enumerate() {
        let (round, i) = (n / 3, n % 3);
        assert_eq!(event["offset"], n as u64);
        assert_eq!(event["key"], format!("k{round}"));
        assert_eq!(event["value"], json!({ "round": round, "i": i }));
        assert_eq!(event["headers"]["h"], format!("{round}-{i}"));
    }
    still_up(&http);
}
