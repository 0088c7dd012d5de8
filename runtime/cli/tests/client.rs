//! The README quickstart through the `weir` CLI: `serve`, `module push`,
//! `topology apply`, `produce`, `consume`, `state get`, and the exit codes
//! scripts rely on.

mod server;

use std::path::Path;
use std::process::Output;

use serde_json::Value;
use server::{Server, counts_of, eventually, expected_counts, lines_jsonl, repo};
use weir_fixtures::guest_path;

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The EVENTS IN cell of `topology`'s row in `weir topology ls`.
fn events_in(ls: &str, topology: &str) -> String {
    let row = ls.lines().find(|l| l.starts_with(&format!("{topology} ")));
    let cells: Vec<&str> = row.unwrap_or_default().split_whitespace().collect();
    cells.last().unwrap_or(&"").to_string()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// Pushes the `poison-trap` fixture (a trap on "poison", an event error on
/// "bad") as module `poison-trap`.
fn push_poison_trap(srv: &Server) {
    let poison = guest_path("poison-trap").display().to_string();
    ok(srv.cli(&["module", "push", &poison, "--name", "poison-trap"], None));
}

/// Produces `events` (JSON lines) into `stream`, then applies the topology
/// `doc` with `--start`, through files in `dir`: what `apply` said.
fn produce_then_start(srv: &Server, dir: &Path, stream: &str, events: &str, doc: &str) -> Output {
    let file = dir.join(format!("{stream}.jsonl"));
    std::fs::write(&file, events).unwrap();
    ok(srv.cli(&["produce", stream, file.to_str().unwrap()], None));
    let doc_file = dir.join(format!("{stream}.yaml"));
    std::fs::write(&doc_file, doc).unwrap();
    srv.cli(
        &["topology", "apply", doc_file.to_str().unwrap(), "--start"],
        None,
    )
}

#[test]
fn quickstart_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], &[]);
    let split = guest_path("split-words").display().to_string();
    let count = guest_path("word-count").display().to_string();

    let pushed = ok(srv.cli(&["module", "push", &split, "--name", "split-words"], None));
    assert!(pushed.contains("split-words@1 stored"), "{pushed}");
    // The name defaults to the file stem: word_count.wasm -> word-count.
    let pushed = ok(srv.cli(&["module", "push", &count, "--json"], None));
    let v: Value = serde_json::from_str(&pushed).unwrap();
    assert_eq!(v["reference"], "word-count@1");
    let again = ok(srv.cli(&["module", "push", &count], None));
    assert!(again.contains("already stored"), "{again}");
    let ls = ok(srv.cli(&["module", "ls"], None));
    assert!(ls.starts_with("NAME"), "{ls}");
    assert!(
        ls.contains("split-words") && ls.contains("word-count"),
        "{ls}"
    );
    let inspect = ok(srv.cli(&["module", "inspect", "word-count"], None));
    assert!(inspect.contains("weir:operator/handler"), "{inspect}");

    let topology = repo().join("guest-examples/topologies/word-count.yaml");
    let topology = topology.display().to_string();
    let valid = ok(srv.cli(&["topology", "validate", &topology], None));
    assert!(valid.contains("valid"), "{valid}");
    let applied = ok(srv.cli(&["topology", "apply", &topology, "--start"], None));
    assert!(applied.contains("created"), "{applied}");
    assert!(applied.contains("running"), "{applied}");
    let ls = ok(srv.cli(&["topology", "ls"], None));
    assert!(ls.contains("word-count") && ls.contains("running"), "{ls}");

    let lines = repo().join("guest-examples/data/lines.jsonl");
    let produced = ok(srv.cli(&["produce", "lines"], Some(&lines)));
    let sent = lines_jsonl()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    assert!(
        produced.contains(&format!("produced {sent} events")),
        "{produced}"
    );

    let expected = expected_counts(&lines_jsonl());
    let events = eventually("the counts through the CLI", || {
        let out = ok(srv.cli(&["consume", "counts"], None));
        let events: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (counts_of(&events) == expected).then_some((events, out))
    });
    let (events, consumed) = events;
    // Lines come out as the operator wrote them: `word` before `count`,
    // not in the alphabetical order a re-serialised JSON map would give.
    for line in consumed.lines() {
        assert!(line.starts_with("{\"key\":"), "{line}");
        assert!(line.contains("\"value\":{\"word\":"), "{line}");
    }
    // --from/--limit page; --json adds offsets.
    let page = ok(srv.cli(
        &["consume", "counts", "--from", "2", "--limit", "3", "--json"],
        None,
    ));
    let page: Vec<Value> = page
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(page.len(), 3);
    assert_eq!(page[0]["offset"], 2);
    assert_eq!(page[0]["value"], events[2]["value"]);
    // --follow with --limit ends after that many.
    let followed = ok(srv.cli(&["consume", "counts", "--follow", "--limit", "5"], None));
    assert_eq!(followed.lines().count(), 5, "{followed}");

    let ls = ok(srv.cli(&["topology", "ls"], None));
    assert_eq!(events_in(&ls, "word-count"), sent.to_string(), "{ls}");
    let the = ok(srv.cli(
        &["state", "get", "word-count", "count", "count", "the"],
        None,
    ));
    assert_eq!(the.trim(), expected["the"].to_string());
    let status = ok(srv.cli(&["topology", "status", "word-count"], None));
    assert!(
        status.contains("OPERATOR") && status.contains("count"),
        "{status}"
    );

    // Exit codes.
    let bad = srv.cli(&["module", "push", topology.as_str(), "--name", "x"], None);
    assert_eq!(code(&bad), 2, "{}", String::from_utf8_lossy(&bad.stderr));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not_wasm"));
    assert_eq!(code(&srv.cli(&["topology", "status", "nope"], None)), 3);
    assert_eq!(
        code(&srv.cli(&["topology", "start", "word-count"], None)),
        4
    );
    assert_eq!(code(&srv.cli(&["module", "rm", "word-count@1"], None)), 4);
    // A single server is no cluster's node: `weir cluster` says how to make one.
    let single = srv.cli(&["cluster"], None);
    assert_eq!(code(&single), 4);
    assert!(String::from_utf8_lossy(&single.stderr).contains("--cluster NAME"));
    assert_eq!(
        code(&srv.cli(&["consume", "counts", "--from", "100000"], None)),
        2
    );
    let unreachable = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["module", "ls", "--server", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(code(&unreachable), 6);

    let stopped = ok(srv.cli(
        &["topology", "stop", "word-count", "--savepoint", "sp1"],
        None,
    ));
    assert!(stopped.contains("savepoint sp1 written"), "{stopped}");
    // A stopped topology's savepoint comes from its last checkpoint.
    ok(srv.cli(&["savepoint", "word-count", "sp2"], None));
    assert_eq!(code(&srv.cli(&["savepoint", "word-count", "sp2"], None)), 4);
    for args in [&["savepoint", "ls", "word-count"][..], &["savepoint", "ls"]] {
        let listed = ok(srv.cli(args, None));
        assert!(listed.starts_with("TOPOLOGY"), "{listed}");
        assert!(listed.contains("sp1") && listed.contains("sp2"), "{listed}");
    }
    // EVENTS IN counts what the sources read, each event once, and keeps
    // it once the topology stopped.
    let ls = ok(srv.cli(&["topology", "ls"], None));
    assert_eq!(events_in(&ls, "word-count"), sent.to_string(), "{ls}");
    let streams = ok(srv.cli(&["stream", "ls"], None));
    let lines_row = streams.lines().find(|l| l.starts_with("lines "));
    let lines_row: Vec<&str> = lines_row.unwrap_or_default().split_whitespace().collect();
    assert_eq!(
        lines_row.get(3),
        Some(&sent.to_string().as_str()),
        "{streams}"
    );
    assert!(streams.contains("counts"), "{streams}");

    // validate counts errors and warnings apart (a source nothing reads
    // is a warning).
    let doc = dir.path().join("warned.yaml");
    let warned = std::fs::read_to_string(&topology).unwrap().replace(
        "sources:\n",
        "sources:\n  - { name: spare, stream: spare }\n",
    );
    std::fs::write(&doc, &warned).unwrap();
    let doc = doc.display().to_string();
    let valid = ok(srv.cli(&["topology", "validate", &doc], None));
    assert!(valid.contains("valid (1 warning(s))"), "{valid}");
    std::fs::write(&doc, warned.replace("input: split", "input: nowhere")).unwrap();
    let invalid = srv.cli(&["topology", "validate", &doc], None);
    assert_eq!(code(&invalid), 2);
    let err = String::from_utf8_lossy(&invalid.stderr);
    // (`split`, read by nothing now, is a second warning.)
    assert!(err.contains("1 error(s), 2 warning(s)"), "{err}");
    ok(srv.cli(&["topology", "rm", "word-count"], None));
    ok(srv.cli(&["module", "rm", "word-count@1"], None));
    srv.stop();
}

#[test]
fn client_flags_belong_to_client_commands() {
    let help = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    for command in ["serve", "run"] {
        let text = help(&[command, "--help"]);
        assert!(text.contains("Usage"), "{text}");
        assert!(
            !text.contains("--server") && !text.contains("--json"),
            "{command}: {text}"
        );
    }
    // serve keeps its own token (what clients must send).
    assert!(help(&["serve", "--help"]).contains("--token"));
    for command in ["module", "topology", "savepoint", "stream", "state"] {
        let text = help(&[command, "--help"]);
        assert!(
            text.contains("--server") && text.contains("--token") && text.contains("--json"),
            "{command}: {text}"
        );
    }
    assert!(help(&["module", "ls", "--help"]).contains("--server"));
}

#[test]
fn a_token_is_needed_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(dir.path(), &[], &[("WEIR_TOKEN", "t0k")]);
    ok(srv.cli(&["module", "ls"], None));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["module", "ls", "--server", &srv.url])
        .env_remove("WEIR_TOKEN")
        .output()
        .unwrap();
    assert_eq!(code(&out), 5);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["module", "ls", "--server", &srv.url, "--token", "wrong"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 5);
    srv.stop();
}

#[test]
fn serve_reads_a_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("weir.toml");
    std::fs::write(&config, "token = \"from-file\"\nmax_body_bytes = 1000\n").unwrap();
    let data = dir.path().join("data");
    let srv = Server::start(&data, &["--config", config.to_str().unwrap()], &[]);
    let mut http = srv.client();
    assert_eq!(http.get("/v1/streams").status, 401);
    http.token = Some("from-file".into());
    assert_eq!(http.get("/v1/streams").status, 200);
    let big = format!("{{\"value\": \"{}\"}}", "x".repeat(2000));
    let a = http.produce("s", &big);
    assert_eq!(
        (a.status, a.code()),
        (413, "payload_too_large"),
        "{}",
        a.text
    );
    srv.stop();

    std::fs::write(&config, "tokn = 1\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tokn"));
}

#[test]
fn produce_checks_a_file_before_sending_and_names_its_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("data"), &[], &[]);
    let good = |i: usize| format!("{{\"key\":\"k{i}\",\"value\":{i}}}\n");
    // A file whose line 1201 is bad: nothing of it is stored.
    let mut text: String = (1..=1300).map(good).collect();
    let at = text.match_indices('\n').nth(1199).unwrap().0 + 1;
    text.insert_str(at, "not an event\n");
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, &text).unwrap();
    let out = srv.cli(&["produce", "s", file.to_str().unwrap()], None);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(code(&out), 2, "{err}");
    assert!(
        err.contains("events.jsonl:1201:") && err.contains("nothing was sent"),
        "{err}"
    );
    let read = srv.client().get("/v1/streams/s/events");
    assert!(
        read.status == 404 || !read.text.contains("\"offset\""),
        "a refused file stored events: {}",
        read.text
    );

    // On stdin (read once), batches before the bad line are stored and the
    // message says which lines those were, by their line in the input.
    let text: String = (1..=5).map(good).chain(["{\"key\":7\n".into()]).collect();
    let stdin = dir.path().join("stdin.jsonl");
    std::fs::write(&stdin, &text).unwrap();
    let out = srv.cli(&["produce", "t", "--batch", "2"], Some(&stdin));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(code(&out), 2, "{err}");
    assert!(
        err.contains("stdin:6:") && err.contains("lines 1–5 were stored"),
        "{err}"
    );
    let stored = ok(srv.cli(&["consume", "t"], None));
    assert_eq!(stored.lines().count(), 5, "{stored}");
    let one = dir.path().join("one.jsonl");
    std::fs::write(&one, good(1)).unwrap();
    let said = ok(srv.cli(&["produce", "u", one.to_str().unwrap()], None));
    assert!(said.contains("produced 1 event to u"), "{said}");
    srv.stop();
}

#[test]
fn a_local_run_is_refused_on_a_live_servers_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let srv = Server::start(&data, &[], &[]);
    let topology = repo().join("guest-examples/topologies/word-count.yaml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "run",
            "--topology",
            topology.to_str().unwrap(),
            "--module-dir",
        ])
        .arg(weir_fixtures::guest_dir())
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(code(&out), 1, "{err}");
    assert!(err.contains("in use by another weir process"), "{err}");
    // Nothing was appended to the server's streams.
    let read = srv.client().get("/v1/streams/counts/events");
    assert!(
        read.status == 404 || !read.text.contains("\"offset\""),
        "{}",
        read.text
    );
    srv.stop();
}

#[test]
fn start_reports_a_topology_that_fails_on_its_first_events() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("data"), &[], &[]);
    push_poison_trap(&srv);
    let out = produce_then_start(
        &srv,
        dir.path(),
        "in",
        "{\"key\":\"k\",\"value\":\"poison\"}\n",
        "name: t\nsources: [{ name: in, stream: in }]\noperators:\n  - { name: p, module: poison-trap, input: in, key_by: key }\nsinks: [{ name: out, stream: out, input: p }]\n",
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        err.contains("failed right after it started") && err.contains("poison event"),
        "{err}"
    );
    // The failure names the event: its source, offset and key.
    assert!(err.contains(r#"source `in` offset 0, key "k""#), "{err}");

    // A healthy start prints its status, guest counters included; what
    // the guest logged (on an event it refuses) is kept for the API.
    ok(produce_then_start(
        &srv,
        dir.path(),
        "in2",
        "{\"key\":\"k\",\"value\":1}\n{\"key\":\"k\",\"value\":\"bad\"}\n{\"key\":\"k\",\"value\":2}\n",
        "name: t2\nsources: [{ name: in, stream: in2 }]\noperators:\n  - { name: p, module: poison-trap, input: in, key_by: key, on_error: skip }\nsinks: [{ name: out, stream: out2, input: p }]\n",
    ));
    let status = eventually("the guest's counter in the status table", || {
        let status = ok(srv.cli(&["topology", "status", "t2"], None));
        status.contains("forwarded=2").then_some(status)
    });
    assert!(status.contains("COUNTERS"), "{status}");
    let snapshot = srv.client().get("/v1/topologies/t2/metrics");
    let logs = &snapshot.body["instances"][0]["logs"];
    assert_eq!(logs[0]["level"], "info", "{}", snapshot.text);
    assert_eq!(
        logs[0]["message"], "refusing a bad event",
        "{}",
        snapshot.text
    );
    assert!(logs[0]["at"].as_i64().unwrap() > 0, "{}", snapshot.text);
    // The guest's counter reaches /metrics too, as the README says.
    let metrics = srv.client().get("/metrics").text;
    let forwarded = metrics
        .lines()
        .find(|l| {
            l.starts_with("weir_operator_guest_total{")
                && l.contains("topology=\"t2\"")
                && l.contains("counter=\"forwarded\"")
        })
        .unwrap_or_else(|| panic!("no guest counter in /metrics: {metrics}"));
    assert!(forwarded.ends_with(" 2"), "{forwarded}");
    srv.stop();
}

/// `weir produce` retries a call that found no server, and its batches
/// are idempotent: a second run with the same producer and sequences
/// stores nothing again.
#[test]
fn produce_retries_until_the_server_is_up_and_a_resend_stores_nothing_twice() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let file = dir.path().join("events.jsonl");
    let text: String = (0..30).map(|i| format!("{{\"value\":{i}}}\n")).collect();
    std::fs::write(&file, text).unwrap();
    let produce = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
        cmd.args(["produce", "s", file.to_str().unwrap(), "--batch", "10"])
            .args(["--producer", "p1", "--json"])
            .env("WEIR_SERVER", &url)
            .env_remove("WEIR_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };
    // No server yet: the first call fails and is retried.
    let early = produce().spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(600));
    let mut serve = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env_remove("WEIR_TOKEN")
        .env("WEIR_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(serve.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert!(ready.contains("listening"), "{ready}");
    let first = ok(early.wait_with_output().unwrap());
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(
        (first["count"].as_u64(), first["next_offset"].as_u64()),
        (Some(30), Some(30))
    );
    // The same producer and sequences again: answered, nothing stored.
    let again = ok(produce().output().unwrap());
    let again: Value = serde_json::from_str(&again).unwrap();
    assert_eq!(again["first_offset"], 0, "{again}");
    let consumed = ok(Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["consume", "s"])
        .env("WEIR_SERVER", &url)
        .env_remove("WEIR_TOKEN")
        .output()
        .unwrap());
    assert_eq!(consumed.lines().count(), 30, "{consumed}");
    let _ = serve.kill();
    let _ = serve.wait();
}

/// `weir dead-letter ls` lists a topology's dead letters (a trap, with
/// the guest function in its backtrace under --json, and a guest error);
/// `weir dead-letter replay` feeds a range back and exits 1 naming what
/// failed again, which are dead letters anew; bad ranges, limits and
/// names exit with their codes.
#[test]
fn dead_letters_are_listed_and_replayed_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::start(&dir.path().join("data"), &[], &[]);
    push_poison_trap(&srv);
    ok(produce_then_start(
        &srv,
        dir.path(),
        "in",
        "{\"key\":\"k\",\"value\":\"poison\"}\n{\"key\":\"b\",\"value\":\"bad\"}\n{\"key\":\"k\",\"value\":1}\n",
        "name: t\nsources: [{ name: in, stream: in }]\noperators:\n  - { name: p, module: poison-trap, input: in, key_by: key, on_error: dead-letter }\nsinks: [{ name: out, stream: out, input: p }]\n",
    ));
    let rows = |ls: &str| ls.lines().skip(1).map(str::to_string).collect::<Vec<_>>();
    let ls = eventually("two dead letters in the table", || {
        let ls = ok(srv.cli(&["dead-letter", "ls", "t"], None));
        (rows(&ls).len() == 2).then_some(ls)
    });
    assert!(ls.starts_with("OFFSET"), "{ls}");
    let listed = rows(&ls);
    assert!(
        listed[0].contains("trap") && listed[0].contains("p#0") && listed[0].contains(" k "),
        "{ls}"
    );
    assert!(
        listed[1].contains("guest-error") && listed[1].contains("bad event"),
        "{ls}"
    );
    let json = ok(srv.cli(&["dead-letter", "ls", "t", "--json"], None));
    let v: Value = serde_json::from_str(&json).unwrap();
    let frames = v["dead_letters"][0]["backtrace"].to_string();
    assert!(frames.contains("PoisonTrap"), "{json}");
    // One page of one: the rest is announced.
    let page = ok(srv.cli(
        &["dead-letter", "ls", "t", "--offset", "0", "--limit", "1"],
        None,
    ));
    assert_eq!(rows(&page).len(), 2, "{page}");
    assert!(page.contains("more from --offset 1 (up to 2)"), "{page}");

    // Replayed with no fix, both fail again: exit 1, and two new letters.
    let out = srv.cli(
        &["dead-letter", "replay", "t", "--from", "0", "--to", "2"],
        None,
    );
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(code(&out), 1, "{said}{err}");
    assert!(
        said.contains("0 passed, 2 failed again, 0 skipped"),
        "{said}"
    );
    assert!(
        said.contains("failed again") && said.contains("p: "),
        "{said}"
    );
    assert!(
        err.contains("2 replayed dead letter(s) of t failed again"),
        "{err}"
    );
    eventually("the letters that failed again", || {
        let ls = ok(srv.cli(&["dead-letter", "ls", "t", "--offset", "2"], None));
        (rows(&ls).len() == 2).then_some(ls)
    });

    for (args, exit) in [
        (
            &["dead-letter", "replay", "t", "--from", "1", "--to", "1"][..],
            2,
        ),
        (&["dead-letter", "ls", "t", "--limit", "0"][..], 2),
        (&["dead-letter", "ls", "nope"][..], 3),
        (
            &["dead-letter", "replay", "nope", "--from", "0", "--to", "1"][..],
            3,
        ),
    ] {
        let out = srv.cli(args, None);
        assert_eq!(
            code(&out),
            exit,
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    srv.stop();
}
