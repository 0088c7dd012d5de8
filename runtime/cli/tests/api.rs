//! The REST API end to end: the real `weir serve` on an ephemeral port,
//! real guests, real HTTP.

mod server;

use serde_json::{Value, json};
use server::{Server, counts_of, eventually, expected_counts, lines_jsonl, word_count_yaml};
use weir_fixtures::guest_bytes;

/// Pushes both modules, applies and starts the word-count topology.
fn deploy(http: &server::Http) {
    let a = http.push("split-words", &guest_bytes("split-words"));
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.body["version"], 1);
    let a = http.push("word-count", &guest_bytes("word-count"));
    assert_eq!(a.status, 201, "{}", a.text);
    let a = http.put_topology("word-count", &word_count_yaml());
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.body["state"], "stopped");
    let a = http.post_json("/v1/topologies/word-count/start", &json!({}));
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["state"], "running");
}

/// Waits until the counts stream shows `expected`.
fn wait_for_counts(
    http: &server::Http,
    expected: &std::collections::BTreeMap<String, u64>,
) -> Vec<Value> {
    eventually("the counts", || {
        let events = http.events("counts");
        (counts_of(&events) == *expected).then_some(events)
    })
}

#[test]
fn quickstart_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], &[]);
    let http = srv.client();
    assert_eq!(http.get("/healthz").status, 200);
    deploy(&http);

    // Identical bytes give back the existing version.
    let again = http.push("word-count", &guest_bytes("word-count"));
    assert_eq!(again.status, 200);
    assert_eq!(again.body["version"], 1);
    let listed = http.get("/v1/modules");
    assert_eq!(listed.body["modules"].as_array().unwrap().len(), 2);
    let inspected = http.get("/v1/modules/word-count/versions/1");
    assert_eq!(inspected.status, 200);
    assert_eq!(inspected.body["language"], "Rust", "{}", inspected.text);
    assert!(
        inspected.body["exports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().starts_with("weir:operator/handler")),
        "{}",
        inspected.text
    );

    let text = lines_jsonl();
    let produced = http.produce("lines", &text);
    assert_eq!(produced.status, 200, "{}", produced.text);
    assert_eq!(produced.body["first_offset"], 0);
    assert_eq!(produced.body["count"], text.lines().count());
    let expected = expected_counts(&text);
    wait_for_counts(&http, &expected);

    // A count's state is what the stream says.
    let state = http.get("/v1/topologies/word-count/operators/count/state/count?key=the");
    assert_eq!(state.status, 200, "{}", state.text);
    assert_eq!(state.body["value"], json!(expected["the"]));
    let b64 = http.get("/v1/topologies/word-count/operators/count/state/count?key_b64=d2Vpcg==");
    assert_eq!(b64.body["value"], json!(expected["weir"]), "{}", b64.text);

    // Status shows per-operator metrics; /metrics has them too.
    let status = http.get("/v1/topologies/word-count");
    let words: u64 = expected.values().sum();
    let count_in: u64 = status.body["operators"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["name"] == "count")
        .map(|o| o["events_in"].as_u64().unwrap())
        .sum();
    assert_eq!(count_in, words, "{}", status.text);
    // The source says where it is in its stream: all read, no lag.
    let lines = text.lines().count();
    assert_eq!(
        status.body["endpoints"],
        json!([{ "name": "lines", "counters": {},
                 "splits": [{ "split": 0, "position": lines, "end": lines, "lag": 0 }] }]),
        "{}",
        status.text
    );
    let metrics = http.get("/metrics").text;
    assert!(
        metrics
            .contains("weir_operator_events_in_total{topology=\"word-count\",operator=\"count\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_stream_end_offset{stream=\"lines\"} 8"),
        "{metrics}"
    );
    for family in [
        "weir_operator_batch_seconds_bucket",
        "weir_operator_batch_seconds_sum",
        "weir_metrics_series_dropped_total 0",
        "weir_source_split_lag{topology=\"word-count\",endpoint=\"lines\",split=\"0\"} 0",
    ] {
        assert!(metrics.contains(family), "no {family} in {metrics}");
    }
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");

    // The JSON snapshot (what the web console polls): the same counts per
    // instance, the operators' chains, a latency histogram per instance.
    let snap = http.get("/v1/topologies/word-count/metrics");
    assert_eq!(snap.status, 200, "{}", snap.text);
    assert_eq!(snap.body["chains"], json!([["split"], ["count"]]));
    let instances = snap.body["instances"].as_array().unwrap();
    let count: Vec<&Value> = instances
        .iter()
        .filter(|i| i["operator"] == "count")
        .collect();
    assert_eq!(count.len(), 2, "{}", snap.text);
    let summed: u64 = count.iter().map(|i| i["events_in"].as_u64().unwrap()).sum();
    assert_eq!(summed, words, "{}", snap.text);
    let buckets = snap.body["latency_bounds_us"].as_array().unwrap().len() + 1;
    let batches: u64 = count
        .iter()
        .map(|i| i["latency_counts"].as_array().unwrap())
        .inspect(|c| assert_eq!(c.len(), buckets))
        .flatten()
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert!(batches > 0, "{}", snap.text);
    let later = http.get("/v1/topologies/word-count/metrics");
    assert!(later.body["taken_at"].as_i64() >= snap.body["taken_at"].as_i64());
    let listed = http.get("/v1/topologies");
    let lines = text.lines().count();
    assert_eq!(
        listed.body["topologies"][0]["events_from_sources"],
        json!(lines)
    );
    assert_eq!(
        listed.body["topologies"][0]["events_to_sinks"],
        json!(words)
    );
    assert_eq!(listed.body["topologies"][0]["errors"], json!(0));
    assert_eq!(
        http.get("/v1/topologies/nope/metrics").code(),
        "topology_not_found"
    );

    // Following the counts stream over SSE gives the same events.
    let sse = http.request(
        "GET",
        "/v1/streams/counts/events?offset=0&limit=3",
        None,
        &[("Accept", "text/event-stream")],
    );
    assert_eq!(sse.status, 200);
    let data: Vec<&str> = sse
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .collect();
    assert_eq!(data.len(), 3, "{}", sse.text);
    assert!(
        sse.text.contains("id: 0") || sse.text.contains("id:0"),
        "{}",
        sse.text
    );

    // Stop with a savepoint, then start from it.
    let stopped = http.post_json(
        "/v1/topologies/word-count/stop",
        &json!({ "savepoint": "sp1" }),
    );
    assert_eq!(stopped.status, 200, "{}", stopped.text);
    assert_eq!(stopped.body["state"], "stopped");
    assert_eq!(stopped.body["savepoint"]["name"], "sp1");
    let listed = http.get("/v1/topologies/word-count/savepoints");
    assert_eq!(listed.body["savepoints"][0]["name"], "sp1");
    let started = http.post_json(
        "/v1/topologies/word-count/start",
        &json!({ "savepoint": "sp1" }),
    );
    assert_eq!(started.status, 200, "{}", started.text);
    http.produce("lines", &text);
    let doubled = expected.iter().map(|(w, n)| (w.clone(), n * 2)).collect();
    wait_for_counts(&http, &doubled);
    srv.stop();
}

/// Every bad request gets its status and code, and the server still serves
/// the happy path afterwards.
#[test]
fn bad_requests_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--max-module-bytes", "4000000"], &[]);
    let http = srv.client();
    deploy(&http);
    let wasm = "application/wasm";
    let split = guest_bytes("split-words");
    let long = "a".repeat(300);
    let core_module: &[u8] = b"\0asm\x01\0\0\0";
    let oversized = vec![0u8; 4_100_000];
    let cycle = "name: cyc\nsources: [{ name: s, stream: s }]\noperators:\n  - { name: a, module: split-words, input: b }\n  - { name: b, module: split-words, input: a }\nsinks: [{ name: o, stream: o, input: a }]\n";
    let unknown_input = "name: ui\nsources: [{ name: s, stream: s }]\noperators:\n  - { name: a, module: split-words, input: nowhere }\nsinks: [{ name: o, stream: o, input: a }]\n";
    let unknown_module = "name: um\nsources: [{ name: s, stream: s }]\noperators:\n  - { name: a, module: no-such-module, input: s }\nsinks: [{ name: o, stream: o, input: a }]\n";
    let file_source = "name: fs\nsources: [{ name: s, file: /etc/passwd }]\noperators:\n  - { name: a, module: split-words, input: s }\nsinks: [{ name: o, stream: o, input: a }]\n";
    type Case<'a> = (
        &'a str,
        &'a str,
        String,
        Option<(Vec<u8>, &'a str)>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "not wasm",
            "POST",
            "/v1/modules/m".into(),
            Some((b"hello, not wasm".to_vec(), wasm)),
            422,
            "not_wasm",
        ),
        (
            "a core module",
            "POST",
            "/v1/modules/m".into(),
            Some((core_module.to_vec(), wasm)),
            422,
            "core_module",
        ),
        (
            "wrong world",
            "POST",
            "/v1/modules/m".into(),
            Some((guest_bytes("forbidden-import"), wasm)),
            422,
            "wrong_world",
        ),
        (
            "empty body",
            "POST",
            "/v1/modules/m".into(),
            Some((Vec::new(), wasm)),
            400,
            "empty_body",
        ),
        (
            "oversized module",
            "POST",
            "/v1/modules/m".into(),
            Some((oversized, wasm)),
            413,
            "payload_too_large",
        ),
        (
            "wrong content type",
            "POST",
            "/v1/modules/m".into(),
            Some((split.clone(), "text/plain")),
            415,
            "unsupported_media_type",
        ),
        (
            "module name ../x",
            "POST",
            "/v1/modules/..%2Fx".into(),
            Some((split.clone(), wasm)),
            400,
            "bad_name",
        ),
        (
            "module name 300 chars",
            "POST",
            format!("/v1/modules/{long}"),
            Some((split.clone(), wasm)),
            400,
            "bad_name",
        ),
        (
            "module name empty",
            "POST",
            "/v1/modules/".into(),
            Some((core_module.to_vec(), wasm)),
            404,
            "not_found",
        ),
        (
            "unknown module",
            "GET",
            "/v1/modules/nope".into(),
            None,
            404,
            "module_not_found",
        ),
        (
            "unknown module version",
            "GET",
            "/v1/modules/split-words/versions/9".into(),
            None,
            404,
            "version_not_found",
        ),
        (
            "version not a number",
            "GET",
            "/v1/modules/split-words/versions/one".into(),
            None,
            400,
            "bad_version",
        ),
        (
            "delete a module in use",
            "DELETE",
            "/v1/modules/split-words/versions/1".into(),
            None,
            409,
            "module_in_use",
        ),
        (
            "topology JSON that does not parse",
            "PUT",
            "/v1/topologies/t".into(),
            Some((b"{\"name\": \"t\", ".to_vec(), "application/json")),
            400,
            "invalid_document",
        ),
        (
            "topology YAML with a cycle",
            "PUT",
            "/v1/topologies/cyc".into(),
            Some((cycle.into(), "application/yaml")),
            422,
            "invalid_topology",
        ),
        (
            "unknown operator input",
            "PUT",
            "/v1/topologies/ui".into(),
            Some((unknown_input.into(), "application/yaml")),
            422,
            "invalid_topology",
        ),
        (
            "unknown module in a topology",
            "PUT",
            "/v1/topologies/um".into(),
            Some((unknown_module.into(), "application/yaml")),
            422,
            "invalid_topology",
        ),
        (
            "file source on the server",
            "PUT",
            "/v1/topologies/fs".into(),
            Some((file_source.into(), "application/yaml")),
            422,
            "invalid_topology",
        ),
        (
            "document name differs from the path",
            "PUT",
            "/v1/topologies/other".into(),
            Some((word_count_yaml().into_bytes(), "application/yaml")),
            400,
            "name_mismatch",
        ),
        (
            "replace a running topology",
            "PUT",
            "/v1/topologies/word-count".into(),
            Some((word_count_yaml().into_bytes(), "application/yaml")),
            409,
            "topology_running",
        ),
        (
            "start a running topology",
            "POST",
            "/v1/topologies/word-count/start".into(),
            None,
            409,
            "topology_running",
        ),
        (
            "delete a running topology",
            "DELETE",
            "/v1/topologies/word-count".into(),
            None,
            409,
            "topology_running",
        ),
        (
            "stop an unknown topology",
            "POST",
            "/v1/topologies/nope/stop".into(),
            None,
            404,
            "topology_not_found",
        ),
        (
            "start from an unknown savepoint",
            "POST",
            "/v1/topologies/word-count/start".into(),
            Some((b"{\"savepoint\": \"nope\"}".to_vec(), "application/json")),
            409,
            "topology_running",
        ),
        (
            "state of an unknown operator",
            "GET",
            "/v1/topologies/word-count/operators/nope/state/count?key=a".into(),
            None,
            404,
            "operator_not_found",
        ),
        (
            "state without a key",
            "GET",
            "/v1/topologies/word-count/operators/count/state/count".into(),
            None,
            400,
            "bad_key",
        ),
        (
            "state key_b64 not base64",
            "GET",
            "/v1/topologies/word-count/operators/count/state/count?key_b64=***".into(),
            None,
            400,
            "bad_key",
        ),
        (
            "state of a key with no value",
            "GET",
            "/v1/topologies/word-count/operators/count/state/count?key=zzz-never".into(),
            None,
            404,
            "key_not_found",
        ),
        (
            "malformed event JSON",
            "POST",
            "/v1/streams/lines/events".into(),
            Some((b"{\"value\": ".to_vec(), "application/x-ndjson")),
            400,
            "invalid_event",
        ),
        (
            "event without a value",
            "POST",
            "/v1/streams/lines/events".into(),
            Some((b"[{\"key\": \"k\"}]".to_vec(), "application/json")),
            400,
            "invalid_event",
        ),
        (
            "event value_b64 not base64",
            "POST",
            "/v1/streams/lines/events".into(),
            Some((b"{\"value_b64\": \"!!\"}".to_vec(), "application/x-ndjson")),
            400,
            "invalid_event",
        ),
        (
            "no events",
            "POST",
            "/v1/streams/lines/events".into(),
            Some((b"[]".to_vec(), "application/json")),
            400,
            "no_events",
        ),
        (
            "bad stream name",
            "POST",
            "/v1/streams/.hidden/events".into(),
            Some((b"{\"value\": 1}".to_vec(), "application/x-ndjson")),
            400,
            "bad_name",
        ),
        (
            "offset past the end",
            "GET",
            "/v1/streams/lines/events?offset=999999".into(),
            None,
            400,
            "offset_out_of_range",
        ),
        (
            "limit over the cap",
            "GET",
            "/v1/streams/lines/events?limit=100000".into(),
            None,
            400,
            "bad_limit",
        ),
        (
            "offset not a number",
            "GET",
            "/v1/streams/lines/events?offset=x".into(),
            None,
            400,
            "bad_request",
        ),
        (
            "unknown endpoint",
            "GET",
            "/v1/nothing".into(),
            None,
            404,
            "not_found",
        ),
        (
            "wrong method",
            "PATCH",
            "/v1/modules".into(),
            None,
            405,
            "method_not_allowed",
        ),
        (
            "savepoint body not JSON",
            "POST",
            "/v1/topologies/word-count/savepoints".into(),
            Some((b"sp".to_vec(), "application/json")),
            400,
            "invalid_json",
        ),
        (
            "savepoint name that exists",
            "POST",
            "/v1/topologies/word-count/savepoints".into(),
            Some((b"{\"name\": \"taken\"}".to_vec(), "application/json")),
            409,
            "savepoint_exists",
        ),
        (
            "savepoint name ../x",
            "POST",
            "/v1/topologies/word-count/savepoints".into(),
            Some((b"{\"name\": \"../x\"}".to_vec(), "application/json")),
            400,
            "bad_name",
        ),
    ];
    // A savepoint of the running topology, so that its name is taken.
    let a = http.post_json(
        "/v1/topologies/word-count/savepoints",
        &json!({ "name": "taken" }),
    );
    assert_eq!(a.status, 201, "{}", a.text);
    for (what, method, path, body, status, code) in &cases {
        let a = http.request(
            method,
            path,
            body.as_ref().map(|(b, ct)| (b.as_slice(), *ct)),
            &[],
        );
        assert_eq!(a.status, *status, "{what}: {}", a.text);
        assert_eq!(a.code(), *code, "{what}: {}", a.text);
        assert!(
            !a.body["error"]["message"].as_str().unwrap_or("").is_empty(),
            "{what}: no message: {}",
            a.text
        );
    }
    // The 422 of a topology lists every problem with its path.
    let a = http.put_topology("ui", unknown_input);
    let problems = a.body["error"]["details"]["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| p["path"] == "operators[0].input"),
        "{}",
        a.text
    );
    // Validate answers the same problems without storing anything.
    let v = http.request(
        "POST",
        "/v1/topologies/validate",
        Some((cycle.as_bytes(), "application/yaml")),
        &[],
    );
    assert_eq!(v.status, 200);
    assert_eq!(v.body["valid"], false);
    assert_eq!(http.get("/v1/topologies/cyc").status, 404);
    // Nothing bad was stored.
    assert_eq!(
        http.get("/v1/modules").body["modules"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        http.get("/v1/topologies").body["topologies"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // The happy path still works.
    let text = lines_jsonl();
    assert_eq!(http.produce("lines", &text).status, 200);
    wait_for_counts(&http, &expected_counts(&text));
    srv.stop();
}

/// Problem `path`'s message in a validation answer (`problems` of
/// validate, `error.details.problems` of apply).
fn problem_at(answer: &server::Answer, path: &str) -> String {
    let problems = match answer.body["problems"].as_array() {
        Some(p) => p,
        None => answer.body["error"]["details"]["problems"]
            .as_array()
            .unwrap_or_else(|| panic!("no problems in {}", answer.text)),
    };
    problems
        .iter()
        .find(|p| p["path"] == path)
        .and_then(|p| p["message"].as_str())
        .unwrap_or_else(|| panic!("no problem at {path}: {}", answer.text))
        .to_string()
}

#[test]
fn operators_are_checked_before_they_start_and_state_reads_say_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], &[]);
    let http = srv.client();
    deploy(&http);
    assert_eq!(
        http.push("threshold-filter", &guest_bytes("filter")).status,
        201
    );
    assert_eq!(
        http.push("keyed-sum", &guest_bytes("keyed-sum")).status,
        201
    );
    let validate = |doc: &str| {
        http.request(
            "POST",
            "/v1/topologies/validate",
            Some((doc.as_bytes(), "application/yaml")),
            &[],
        )
    };

    // A config the operator rejects: found by instantiating it, before
    // anything is stored or started.
    let typo = "name: th\nsources: [{ name: s, stream: pay }]\noperators:\n  - { name: big, module: threshold-filter, input: s, config: { feild: amount, op: gt, value: 50 } }\nsinks: [{ name: o, stream: big, input: big }]\n";
    let v = validate(typo);
    assert_eq!(v.status, 200, "{}", v.text);
    assert_eq!(v.body["valid"], false, "{}", v.text);
    let message = problem_at(&v, "operators[0].config");
    assert!(
        message.contains("operator `big` rejects its config") && message.contains("feild"),
        "{message}"
    );
    let a = http.put_topology("th", typo);
    assert_eq!(a.status, 422, "{}", a.text);
    assert!(problem_at(&a, "operators[0].config").contains("feild"));
    assert_eq!(http.get("/v1/topologies/th").status, 404);
    // The same config spelled right is fine.
    let fixed = typo.replace("feild", "field");
    let v = validate(&fixed);
    assert_eq!(v.body["valid"], true, "{}", v.text);

    // A stateful operator without key_by.
    let unkeyed = word_count_yaml().replace("key_by: key, ", "");
    assert_ne!(unkeyed, word_count_yaml());
    let v = validate(&unkeyed);
    let message = problem_at(&v, "operators[1].key_by");
    assert!(
        message.contains("keeps value state per key (count) but has no key_by"),
        "{message}"
    );

    // A typo of an uploaded module's name.
    let v = validate(&typo.replace("threshold-filter", "treshold-filter"));
    let message = problem_at(&v, "operators[0].module");
    assert!(
        message.contains(r#"did you mean "threshold-filter""#),
        "{message}"
    );

    // State reads tell a missing key, an unknown state name and a
    // stateless operator apart.
    let text = lines_jsonl();
    assert_eq!(http.produce("lines", &text).status, 200);
    let expected = expected_counts(&text);
    wait_for_counts(&http, &expected);
    let state = |op: &str, name: &str, key: &str| {
        http.get(&format!(
            "/v1/topologies/word-count/operators/{op}/state/{name}?key={key}"
        ))
    };
    let a = state("count", "count", "the");
    assert_eq!(a.body["value"], json!(expected["the"]), "{}", a.text);
    let a = state("count", "count", "zzz-never");
    assert_eq!((a.status, a.code()), (404, "key_not_found"), "{}", a.text);
    let a = state("count", "cnt", "the");
    assert_eq!((a.status, a.code()), (404, "state_not_found"), "{}", a.text);
    assert!(a.text.contains(r#"did you mean \"count\""#), "{}", a.text);
    let a = state("split", "count", "the");
    assert_eq!(
        (a.status, a.code()),
        (404, "stateless_operator"),
        "{}",
        a.text
    );
    let cli = srv.cli(&["state", "get", "word-count", "count", "cnt", "the"], None);
    assert_eq!(cli.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert!(stderr.contains("no state `cnt`"), "{stderr}");

    // A stopped topology's state is read from its last checkpoint.
    let a = http.post_json(
        "/v1/topologies/word-count/stop",
        &json!({ "savepoint": "counted" }),
    );
    assert_eq!(a.status, 200, "{}", a.text);
    let a = state("count", "count", "the");
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["value"], json!(expected["the"]), "{}", a.text);
    let a = state("count", "count", "zzz-never");
    assert_eq!(a.code(), "key_not_found", "{}", a.text);
    let cli = srv.cli(
        &["state", "get", "word-count", "count", "count", "the"],
        None,
    );
    assert_eq!(cli.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&cli.stdout).trim(),
        expected["the"].to_string()
    );

    // A savepoint whose value states the new module does not declare: a
    // 409 naming them, not a server error.
    let swapped = word_count_yaml().replace("module: word-count", "module: keyed-sum");
    let a = http.put_topology("word-count", &swapped);
    assert_eq!(a.status, 200, "{}", a.text);
    let a = http.post_json(
        "/v1/topologies/word-count/start",
        &json!({ "savepoint": "counted" }),
    );
    assert_eq!((a.status, a.code()), (409, "state_mismatch"), "{}", a.text);
    assert!(
        a.text.contains(r#"holds value state [\"count\"]"#),
        "{}",
        a.text
    );
    srv.stop();
}

#[test]
fn auth_and_binding_rules() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], &[("WEIR_TOKEN", "s3cret")]);
    let mut http = srv.client();
    assert_eq!(http.get("/v1/modules").status, 200);
    assert_eq!(http.get("/healthz").status, 200);
    http.token = None;
    let a = http.get("/v1/modules");
    assert_eq!((a.status, a.code()), (401, "unauthorized"), "{}", a.text);
    // A refused upload is read only up to 64 KiB before the 401 and the
    // close, so a bigger body may meet a reset while it is still being
    // written (the hostile suite covers that); this one fits.
    let module = guest_bytes("split-words");
    let a = http.push("m", &module[..32 << 10]);
    assert_eq!((a.status, a.code()), (401, "unauthorized"));
    http.token = Some("wrong".into());
    let a = http.get("/v1/streams");
    assert_eq!((a.status, a.code()), (401, "unauthorized"));
    // /healthz and /metrics stay open for probes and scrapers.
    assert_eq!(http.get("/healthz").status, 200);
    drop(srv);

    // Without a token, only loopback.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("WEIR_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--insecure-bind"), "{err}");
}

#[test]
fn a_running_topology_comes_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], &[]);
    let http = srv.client();
    deploy(&http);
    let text = lines_jsonl();
    http.produce("lines", &text);
    let expected = expected_counts(&text);
    wait_for_counts(&http, &expected);
    srv.stop();

    let srv = Server::start(dir.path(), &[], &[]);
    let http = srv.client();
    let status = http.get("/v1/topologies/word-count");
    assert_eq!(status.body["state"], "running", "{}", status.text);
    assert_eq!(
        http.get("/v1/modules").body["modules"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // It continues where it was: state kept, the old lines not read again.
    http.produce("lines", &text);
    let doubled = expected.iter().map(|(w, n)| (w.clone(), n * 2)).collect();
    let events = wait_for_counts(&http, &doubled);
    let words: u64 = expected.values().sum();
    assert_eq!(events.len() as u64, words * 2);
    let state = http.get("/v1/topologies/word-count/operators/count/state/count?key=the");
    assert_eq!(state.body["value"], json!(expected["the"] * 2));

    // A stopped topology stays stopped across a restart.
    let a = http.post_json("/v1/topologies/word-count/stop", &json!({}));
    assert_eq!(a.status, 200);
    srv.stop();
    let srv = Server::start(dir.path(), &[], &[]);
    let status = srv.client().get("/v1/topologies/word-count");
    assert_eq!(status.body["state"], "stopped", "{}", status.text);
    srv.stop();
}

/// Every documented operation answers (no 404/405 from the router), and
/// the document lists what the router serves (checked in weir-server's
/// unit test against the route table).
#[test]
fn the_openapi_document_matches_the_routes() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], &[]);
    let http = srv.client();
    deploy(&http);
    let text = lines_jsonl();
    http.produce("lines", &text);
    wait_for_counts(&http, &expected_counts(&text));
    let doc = http.get("/v1/openapi.json");
    assert_eq!(doc.status, 200);
    assert_eq!(doc.body["openapi"], "3.1.0");
    let paths = doc.body["paths"].as_object().unwrap();
    assert!(paths.len() >= 15);
    let mut checked = 0;
    // Deletes last, so the other calls see the resources.
    let mut ops: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(p, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(|m| (m.to_uppercase(), p.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    ops.sort_by_key(|(m, _)| m == "DELETE");
    for (method, path) in ops {
        let concrete = path
            .replace("/v1/modules/{name}", "/v1/modules/split-words")
            .replace("/v1/topologies/{name}", "/v1/topologies/word-count")
            .replace("/v1/streams/{name}", "/v1/streams/lines")
            .replace("{version}", "1")
            .replace("{operator}", "count")
            .replace("{state}", "count");
        let concrete = if concrete.contains("/state/") {
            format!("{concrete}?key=the")
        } else {
            concrete
        };
        let body: Option<(&[u8], &str)> = match (method.as_str(), path.as_str()) {
            ("POST", "/v1/modules/{name}") => None,
            ("PUT", _) | ("POST", "/v1/topologies/validate") => {
                Some((b"name: word-count\n", "application/yaml"))
            }
            ("POST", "/v1/streams/{name}/events") => {
                Some((b"{\"value\": \"one more line\"}", "application/x-ndjson"))
            }
            ("POST", "/v1/topologies/{name}/savepoints") => {
                Some((b"{\"name\": \"doc\"}", "application/json"))
            }
            _ => None,
        };
        let a = http.request(&method, &concrete, body, &[]);
        assert!(
            a.status != 404 && a.status != 405,
            "{method} {concrete} (documented as {path}) answered {}: {}",
            a.status,
            a.text
        );
        // Documented statuses include the one given.
        let documented = &paths[&path][method.to_lowercase()]["responses"];
        assert!(
            documented.get(a.status.to_string()).is_some(),
            "{method} {path} answered {} which is not documented: {}",
            a.status,
            a.text
        );
        checked += 1;
    }
    assert!(checked >= 20, "{checked}");
    srv.stop();
}

/// Dead letters of topology `t` from a query.
fn dead_letters(http: &server::Http, query: &str) -> server::Answer {
    http.get(&format!("/v1/topologies/t/dead-letters{query}"))
}

/// Traps and a late event are dead-lettered with their context (a trap
/// with the guest's backtrace by function name); after an upgrade to a new
/// module version, a replay sends what now passes to the output and
/// reports (and dead-letters again) what fails again; bad ranges, limits
/// and a stopped or absent topology are clear 4xx errors.
#[test]
fn dead_letters_carry_their_context_and_replay_after_an_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], &[]);
    let http = srv.client();
    // Version 1 traps on every event (until 2100).
    let a = http.push("m", &guest_bytes("trap-window"));
    assert_eq!(a.status, 201, "{}", a.text);
    let digest_v1 = a.body["digest"].as_str().unwrap().to_string();
    let doc = |config: &str| {
        format!(
            "name: t\nsources: [{{ name: in, stream: t-in }}]\noperators:\n  - {{ name: p, module: m, input: in, key_by: key, on_error: dead-letter, on_late: dead-letter{config} }}\nsinks: [{{ name: out, stream: t-out, input: p }}]\n"
        )
    };
    let a = http.put_topology("t", &doc(", config: { until_ms: 4102444800000 }"));
    assert_eq!(a.status, 201, "{}", a.text);
    // Before any letter: an empty page; an absent topology: 404.
    let a = dead_letters(&http, "");
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["dead_letters"], json!([]));
    let a = http.get("/v1/topologies/nope/dead-letters");
    assert_eq!(
        (a.status, a.code()),
        (404, "topology_not_found"),
        "{}",
        a.text
    );
    let a = http.post_json("/v1/topologies/t/start", &json!({}));
    assert_eq!(a.status, 200, "{}", a.text);
    http.produce(
        "t-in",
        "{\"key\":\"a\",\"value\":\"x\",\"timestamp\":1000}\n{\"key\":\"b\",\"value\":\"bad\",\"timestamp\":100000}\n",
    );
    let h = &http;
    let count = |n: usize| {
        move || {
            let a = dead_letters(h, "?offset=0&limit=10");
            let list = a.body["dead_letters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            (list.len() == n).then_some(list)
        }
    };
    eventually("two dead letters", count(2));
    // Behind the watermark the second event raised: late.
    http.produce(
        "t-in",
        "{\"key\":\"d\",\"value\":\"late\",\"timestamp\":1}\n",
    );
    let letters = eventually("three dead letters", count(3));
    let trap = &letters[0];
    assert_eq!(trap["kind"], "trap", "{trap}");
    assert_eq!(
        (&trap["topology"], &trap["operator"], &trap["instance"]),
        (&json!("t"), &json!("p"), &json!(0))
    );
    assert_eq!(
        (&trap["module"], &trap["digest"]),
        (&json!("m@1"), &json!(digest_v1))
    );
    assert_eq!(
        (&trap["source"], &trap["source_offset"]),
        (&json!("in"), &json!(0))
    );
    assert_eq!(
        (&trap["key"], &trap["event_time"], &trap["value"]),
        (&json!("a"), &json!(1000), &json!("x"))
    );
    assert!(
        trap["error"].as_str().unwrap().contains("trap window"),
        "{trap}"
    );
    let frames: Vec<&str> = trap["backtrace"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        frames.iter().any(|f| f.contains("TrapWindow")),
        "the backtrace names the guest's function: {frames:?}"
    );
    assert!(trap["headers"].as_object().unwrap().is_empty(), "{trap}");
    assert_eq!(letters[1]["source_offset"], 1);
    let late = &letters[2];
    assert_eq!(
        (&late["kind"], &late["key"], &late["backtrace"]),
        (&json!("late"), &json!("d"), &json!([]))
    );
    // Paging: one at a time.
    let a = dead_letters(&http, "?offset=1&limit=1");
    assert_eq!(a.body["dead_letters"][0]["offset"], 1, "{}", a.text);
    assert_eq!(a.body["next_offset"], 2, "{}", a.text);
    // Hostile reads and ranges.
    for (query, code) in [
        ("?limit=0", "bad_limit"),
        ("?limit=5000", "bad_limit"),
        ("?offset=99", "bad_range"),
    ] {
        let a = dead_letters(&http, query);
        assert_eq!((a.status, a.code()), (400, code), "{query}: {}", a.text);
    }
    assert_eq!(dead_letters(&http, "?limit=x").status, 400);
    let replay = |from: u64, to: u64| {
        http.post_json(
            "/v1/topologies/t/dead-letters/replay",
            &json!({ "from": from, "to": to }),
        )
    };
    for (from, to, says) in [
        (2, 2, "is empty"),
        (0, 5000, "over the 1000"),
        (1, 9, "outside its dead letters"),
    ] {
        let a = replay(from, to);
        assert_eq!(
            (a.status, a.code()),
            (400, "bad_range"),
            "{from}..{to}: {}",
            a.text
        );
        assert!(a.text.contains(says), "{from}..{to}: {}", a.text);
    }
    let a = http.post_json(
        "/v1/topologies/t/dead-letters/replay",
        &json!({ "from": 0 }),
    );
    assert_eq!((a.status, a.code()), (400, "invalid_json"), "{}", a.text);
    let a = http.post_json(
        "/v1/topologies/nope/dead-letters/replay",
        &json!({ "from": 0, "to": 1 }),
    );
    assert_eq!(
        (a.status, a.code()),
        (404, "topology_not_found"),
        "{}",
        a.text
    );

    // The upgrade, through a savepoint, to version 2 (poison-trap: it
    // forwards "x" and "late" but fails on "bad").
    let a = http.post_json("/v1/topologies/t/stop", &json!({ "savepoint": "before" }));
    assert_eq!(a.status, 200, "{}", a.text);
    let a = replay(0, 3);
    assert_eq!(
        (a.status, a.code()),
        (409, "topology_not_running"),
        "{}",
        a.text
    );
    let a = http.push("m", &guest_bytes("poison-trap"));
    assert_eq!(a.body["version"], 2, "{}", a.text);
    assert_eq!(http.put_topology("t", &doc("")).status, 200);
    let a = http.post_json("/v1/topologies/t/start", &json!({ "savepoint": "before" }));
    assert_eq!(a.status, 200, "{}", a.text);
    let a = replay(0, 3);
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.body["passed"], json!([0, 2]), "{}", a.text);
    let failed = &a.body["failed"];
    assert_eq!(failed.as_array().unwrap().len(), 1, "{}", a.text);
    assert_eq!(
        (&failed[0]["offset"], &failed[0]["operator"]),
        (&json!(1), &json!("p"))
    );
    assert!(
        failed[0]["error"].as_str().unwrap().contains("bad event"),
        "{}",
        a.text
    );
    // What passed reaches the output.
    let mut values = eventually("the replayed events' output", || {
        let values: Vec<Value> = http
            .events("t-out")
            .iter()
            .map(|e| e["value"].clone())
            .collect();
        (values.len() == 2).then_some(values)
    });
    values.sort_by_key(Value::to_string);
    assert_eq!(values, [json!("late"), json!("x")]);
    // What failed again is a new letter, of the new version.
    let a = dead_letters(&http, "?offset=3");
    let again = &a.body["dead_letters"][0];
    assert_eq!(
        (&again["kind"], &again["module"], &again["key"]),
        (&json!("guest-error"), &json!("m@2"), &json!("b")),
        "{}",
        a.text
    );
    // A topology that writes no dead letters has none to read or replay.
    let plain = "name: plain\nsources: [{ name: in, stream: t-in }]\noperators:\n  - { name: p, module: m, input: in, key_by: key }\nsinks: [{ name: out, stream: plain-out, input: p }]\n";
    assert_eq!(http.put_topology("plain", plain).status, 201);
    let a = http.get("/v1/topologies/plain/dead-letters");
    assert_eq!(
        (a.status, &a.body["stream"], &a.body["dead_letters"]),
        (200, &Value::Null, &json!([])),
        "{}",
        a.text
    );
    let a = http.post_json(
        "/v1/topologies/plain/dead-letters/replay",
        &json!({ "from": 0, "to": 1 }),
    );
    assert_eq!((a.status, a.code()), (400, "bad_range"), "{}", a.text);
    assert!(a.text.contains("writes no dead letters"), "{}", a.text);
    srv.stop();
}

/// An operator's own limits: over the server's maximum (set by a flag) is a
/// 422 naming the path; a tighter output limit fails the operator that has
/// it (its events dead-lettered as over-limit) while another operator in
/// the same topology goes on; the limits that apply show in the status and
/// change on an upgrade through a savepoint.
#[test]
fn operator_limits_are_bounded_enforced_per_operator_shown_and_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &["--operator-memory-mb", "128"], &[]);
    let http = srv.client();
    let a = http.push("identity", &guest_bytes("identity"));
    assert_eq!(a.status, 201, "{}", a.text);
    let doc = |narrow: &str| {
        format!(
            "name: lim\nsources: [{{ name: in, stream: lim-in }}]\noperators:\n  - {{ name: narrow, module: identity, input: in, on_error: dead-letter, limits: {{ {narrow} }} }}\n  - {{ name: wide, module: identity, input: in }}\nsinks:\n  - {{ name: n, stream: lim-narrow, input: narrow }}\n  - {{ name: w, stream: lim-wide, input: wide }}\n"
        )
    };
    let a = http.put_topology("lim", &doc("memory_mb: 129"));
    assert_eq!(
        (a.status, a.code()),
        (422, "invalid_topology"),
        "{}",
        a.text
    );
    let why = problem_at(&a, "operators[0].limits.memory_mb");
    assert!(
        why.contains("129 is over this server's maximum of 128")
            && why.contains("--operator-memory-mb"),
        "{why}"
    );
    let a = http.put_topology("lim", &doc("memory_mb: 64, max_output_bytes_per_call: 16"));
    assert_eq!(a.status, 201, "{}", a.text);
    let limits = &a.body["operator_limits"];
    assert_eq!(
        limits["narrow"],
        json!({ "memory_mb": 64, "call_budget_ms": 2000, "max_state_value_bytes": 1 << 20, "max_output_bytes_per_call": 16 }),
        "{}",
        a.text
    );
    assert_eq!(limits["wide"]["memory_mb"], 128, "{}", a.text);
    assert_eq!(
        limits["wide"]["max_output_bytes_per_call"],
        64 << 20,
        "{}",
        a.text
    );
    let a = http.post_json("/v1/topologies/lim/start", &json!({}));
    assert_eq!(a.status, 200, "{}", a.text);
    let long = "x".repeat(40);
    http.produce(
        "lim-in",
        &format!("{{\"key\":\"k\",\"value\":1}}\n{{\"key\":\"k\",\"value\":\"{long}\"}}\n"),
    );
    eventually("both events through the wide operator", || {
        (http.events("lim-wide").len() == 2).then_some(())
    });
    let letter = eventually("the narrow operator's dead letter", || {
        let a = http.get("/v1/topologies/lim/dead-letters");
        a.body["dead_letters"].as_array()?.first().cloned()
    });
    assert_eq!(
        (&letter["operator"], &letter["kind"]),
        (&json!("narrow"), &json!("over-limit")),
        "{letter}"
    );
    assert!(
        letter["error"]
            .as_str()
            .unwrap()
            .contains("limit of 16 bytes"),
        "{letter}"
    );
    let narrow: Vec<Value> = http
        .events("lim-narrow")
        .iter()
        .map(|e| e["value"].clone())
        .collect();
    assert_eq!(narrow, [json!(1)]);

    // Upgrade through a savepoint with a looser output limit: the long
    // event now passes.
    let a = http.post_json("/v1/topologies/lim/stop", &json!({ "savepoint": "sp" }));
    assert_eq!(a.status, 200, "{}", a.text);
    let a = http.put_topology("lim", &doc("max_output_bytes_per_call: 1000"));
    assert_eq!(a.status, 200, "{}", a.text);
    let a = http.post_json("/v1/topologies/lim/start", &json!({ "savepoint": "sp" }));
    assert_eq!(a.status, 200, "{}", a.text);
    let a = http.get("/v1/topologies/lim");
    assert_eq!(
        a.body["operator_limits"]["narrow"]["max_output_bytes_per_call"], 1000,
        "{}",
        a.text
    );
    assert_eq!(
        a.body["operator_limits"]["narrow"]["memory_mb"], 128,
        "{}",
        a.text
    );
    http.produce(
        "lim-in",
        &format!("{{\"key\":\"k\",\"value\":\"{long}\"}}\n"),
    );
    eventually("the long event through the narrow operator", || {
        (http.events("lim-narrow").len() == 2).then_some(())
    });
    srv.stop();
}
