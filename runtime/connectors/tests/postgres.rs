//! The PostgreSQL sink against a real server (`weir_fixtures::postgres`):
//! exactly-once publishing through the progress table, duplicate keys
//! folded, refused rows dead-lettered with the database's message, a
//! database restart mid-run, a database that stays away.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir_connectors::{Backoff, PgSink, PgSinkConfig};
use weir_fixtures::postgres::PgServer;
use weir_io::{CheckpointRef, DeadLetter, DeadLetterFn, Sink};
use weir_topology::PostgresSinkDoc;
use weir_types::{Batch, Event};

fn at(lineage: &str, id: u64) -> CheckpointRef {
    CheckpointRef {
        lineage: lineage.into(),
        id,
    }
}

/// Events keyed `key` with value `{"n": n}`.
fn batch(events: &[(&str, &str)]) -> Batch {
    events
        .iter()
        .map(|(key, n)| Event {
            key: Some(key.as_bytes().to_vec()),
            value: format!("{{\"n\": {n}}}").into_bytes(),
            timestamp: 7,
            ..Event::default()
        })
        .collect()
}

fn sink(pg: &PgServer, name: &str, settings: &str) -> (PgSink, Arc<Mutex<Vec<DeadLetter>>>) {
    let doc: PostgresSinkDoc = serde_json::from_str(settings).unwrap();
    let mut config = PgSinkConfig::from_doc("test", name, &doc, Some(&pg.url())).unwrap();
    config.backoff = Backoff {
        retries: 40,
        first: Duration::from_millis(50),
        max: Duration::from_millis(200),
    };
    let letters = Arc::new(Mutex::new(Vec::new()));
    let out = letters.clone();
    let write: DeadLetterFn = Box::new(move |l: &DeadLetter| {
        out.lock().unwrap().push(l.clone());
        Ok(())
    });
    (PgSink::new(config, Some(write)).unwrap(), letters)
}

const UPSERT: &str = r#"{"table": "totals", "key_columns": ["k"], "create_table": true,
    "columns": {"k": "key", "n": {"from": "$.n", "type": "bigint"}, "at": "timestamp"}}"#;
const APPEND: &str = r#"{"table": "log", "mode": "append", "create_table": true,
    "columns": {"k": "key", "n": {"from": "$.n", "type": "bigint"}}}"#;

#[test]
fn checkpoints_are_written_once_and_a_replay_reverts_nothing() {
    let pg = PgServer::start_new();
    let (mut totals, _) = sink(&pg, "totals", UPSERT);
    let (mut log, _) = sink(&pg, "log", APPEND);
    // Duplicate keys in one checkpoint: one statement cannot touch a row
    // twice, so the sink folds them (the last one wins).
    let first = batch(&[("a", "1"), ("b", "1"), ("a", "2")]);
    let second = batch(&[("a", "3")]);
    for s in [&mut totals, &mut log] {
        s.publish(&at("L", 1), &first).unwrap();
        s.publish(&at("L", 2), &second).unwrap();
        // A crash after PostgreSQL's commit: recovery replays checkpoint 2,
        // and an old checkpoint comes again; neither changes a row.
        s.recover(&at("L", 2), 0, &second).unwrap();
        s.publish(&at("L", 1), &first).unwrap();
        s.publish(&at("L", 3), &Batch::default()).unwrap();
    }
    assert_eq!(
        pg.query("SELECT k, n, at FROM totals ORDER BY k"),
        [["a", "3", "7"], ["b", "1", "7"]]
    );
    assert_eq!(
        pg.query("SELECT k, n FROM log ORDER BY n, k"),
        [["a", "1"], ["b", "1"], ["a", "2"], ["a", "3"]]
    );
    assert_eq!(
        pg.query("SELECT sink_id, lineage, checkpoint_id FROM weir_sink_progress ORDER BY 1"),
        [["test/log", "L", "2"], ["test/totals", "L", "2"]]
    );
    // A new lineage (a start without a checkpoint) writes its checkpoint 1.
    log.publish(&at("M", 1), &batch(&[("c", "1")])).unwrap();
    assert_eq!(pg.query("SELECT count(*) FROM log"), [["5"]]);
}

#[test]
fn refused_rows_are_dead_lettered_with_the_database_message() {
    let pg = PgServer::start_new();
    pg.execute("CREATE TABLE checked (k text PRIMARY KEY, n bigint NOT NULL CHECK (n >= 0))");
    let (mut s, letters) = sink(
        &pg,
        "checked",
        r#"{"table": "checked", "key_columns": ["k"], "columns": {"k": "key", "n": "$.n"}}"#,
    );
    let mut events = batch(&[
        ("ok", "1"),
        ("word", "\"abc\""),
        ("neg", "-5"),
        ("null", "null"),
    ]);
    events.push_event(&Event {
        key: Some(b"nofield".to_vec()),
        value: b"{\"m\": 1}".to_vec(),
        ..Event::default()
    });
    events.extend_from(&batch(&[("ok2", "2")]));
    s.publish(&at("L", 1), &events).unwrap();
    assert_eq!(
        pg.query("SELECT k, n FROM checked ORDER BY k"),
        [["ok", "1"], ["ok2", "2"]]
    );
    let letters = letters.lock().unwrap();
    let reasons: Vec<(String, String)> = letters
        .iter()
        .map(|l| {
            (
                String::from_utf8(l.event.key.clone().unwrap()).unwrap(),
                l.error.clone(),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:#?}");
    let reason_of = |k: &str| &reasons.iter().find(|(key, _)| key == k).unwrap().1;
    assert!(
        reason_of("word").contains("invalid input syntax for type bigint: \"abc\"")
            && reason_of("word").contains("SQLSTATE 22P02"),
        "{reasons:#?}"
    );
    assert!(
        reason_of("neg").contains("violates check constraint"),
        "{reasons:#?}"
    );
    assert!(
        reason_of("null").contains("null value in column \"n\""),
        "{reasons:#?}"
    );
    assert!(
        reason_of("nofield").contains("no field `$.n`"),
        "{reasons:#?}"
    );
    assert!(letters.iter().all(|l| l.operator == "checked"));
}

#[test]
fn a_database_restart_mid_run_loses_and_doubles_no_row() {
    let mut pg = PgServer::start_new();
    let (mut log, _) = sink(&pg, "log", APPEND);
    let (mut totals, _) = sink(&pg, "totals", UPSERT);
    log.publish(&at("L", 1), &batch(&[("warm", "0")])).unwrap();
    totals
        .publish(&at("L", 1), &batch(&[("warm", "0")]))
        .unwrap();
    const CHECKPOINTS: u64 = 60;
    let writer = std::thread::spawn(move || {
        for id in 2..=CHECKPOINTS {
            let rows: Vec<(String, String)> = (0..50)
                .map(|i| (format!("k{i}"), (id * 100 + i).to_string()))
                .collect();
            let refs: Vec<(&str, &str)> =
                rows.iter().map(|(k, n)| (k.as_str(), n.as_str())).collect();
            let b = batch(&refs);
            log.publish(&at("L", id), &b).unwrap();
            totals.publish(&at("L", id), &b).unwrap();
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    std::thread::sleep(Duration::from_millis(150));
    pg.stop();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !writer.is_finished(),
        "the writer finished before the restart: make it longer"
    );
    pg.start();
    writer.join().expect("the sink gave up during the restart");
    assert_eq!(
        pg.query("SELECT count(*), count(DISTINCT n) FROM log WHERE k <> 'warm'"),
        [[
            ((CHECKPOINTS - 1) * 50).to_string(),
            ((CHECKPOINTS - 1) * 50).to_string()
        ]]
    );
    assert_eq!(
        pg.query("SELECT min(n), max(n) FROM totals WHERE k <> 'warm'"),
        [[
            (CHECKPOINTS * 100).to_string(),
            (CHECKPOINTS * 100 + 49).to_string()
        ]]
    );
}

#[test]
fn a_database_that_stays_away_fails_the_sink_after_its_retries() {
    let mut pg = PgServer::start_new();
    let doc: PostgresSinkDoc = serde_json::from_str(APPEND).unwrap();
    let mut config = PgSinkConfig::from_doc("test", "log", &doc, Some(&pg.url())).unwrap();
    config.backoff = Backoff {
        retries: 2,
        first: Duration::from_millis(10),
        max: Duration::from_millis(10),
    };
    let mut s = PgSink::new(config, None).unwrap();
    s.publish(&at("L", 1), &batch(&[("a", "1")])).unwrap();
    pg.stop();
    let err = s.publish(&at("L", 2), &batch(&[("b", "1")])).unwrap_err();
    assert!(err.contains("stayed unreachable after 2 retries"), "{err}");
    pg.start();
    // The restart from the checkpoint writes it.
    s.recover(&at("L", 2), 0, &batch(&[("b", "1")])).unwrap();
    assert_eq!(pg.query("SELECT k FROM log ORDER BY k"), [["a"], ["b"]]);
}

#[test]
fn a_missing_table_fails_with_how_to_fix_it() {
    let pg = PgServer::start_new();
    let (mut s, _) = sink(
        &pg,
        "nowhere",
        r#"{"table": "nowhere", "mode": "append", "columns": {"k": "key"}}"#,
    );
    let err = s.publish(&at("L", 1), &batch(&[("a", "1")])).unwrap_err();
    assert!(err.contains("relation \"nowhere\" does not exist"), "{err}");
    assert!(err.contains("create_table: true"), "{err}");
}
