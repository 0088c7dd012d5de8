//! The HTTP sink against a scripted receiver (`weir_fixtures::webhook`):
//! retries on 5xx, the same idempotency keys after a recovery, batches as
//! JSON arrays, refused events dead-lettered, headers from the document.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir_connectors::{Backoff, HttpSink, HttpSinkConfig, IDEMPOTENCY_HEADER};
use weir_fixtures::webhook::{Script, Webhook};
use weir_io::{CheckpointRef, DeadLetter, DeadLetterFn, Sink};
use weir_topology::HttpSinkDoc;
use weir_types::{Batch, Event};

fn alerts(range: std::ops::Range<u32>) -> Batch {
    range
        .map(|i| Event {
            key: Some(format!("card{i}").into_bytes()),
            value: format!("{{\"alert\": {i}}}").into_bytes(),
            timestamp: 1_000 + i64::from(i),
            ..Event::default()
        })
        .collect()
}

fn sink(hook: &Webhook, extra: &str) -> (HttpSink, Arc<Mutex<Vec<DeadLetter>>>) {
    let doc: HttpSinkDoc = serde_json::from_str(&format!(
        r#"{{"url": "{}", "headers": {{"Authorization": "Bearer s3cret"}}{extra}}}"#,
        hook.url("/alerts")
    ))
    .unwrap();
    let mut config = HttpSinkConfig::from_doc("hook", &doc);
    config.backoff = Backoff {
        retries: config.backoff.retries,
        first: Duration::from_millis(5),
        max: Duration::from_millis(20),
    };
    let letters = Arc::new(Mutex::new(Vec::new()));
    let out = letters.clone();
    let write: DeadLetterFn = Box::new(move |l: &DeadLetter| {
        out.lock().unwrap().push(l.clone());
        Ok(())
    });
    (HttpSink::new(config, Some(write)), letters)
}

fn at(id: u64) -> CheckpointRef {
    CheckpointRef {
        lineage: "L".into(),
        id,
    }
}

#[test]
fn failed_posts_are_retried_and_a_recovery_repeats_the_same_keys() {
    let hook = Webhook::start(Script {
        fail_first: Some((3, 503)),
        ..Script::default()
    });
    let (mut s, letters) = sink(&hook, "");
    s.publish(&at(1), &alerts(0..2)).unwrap();
    // Recovery from checkpoint 1 posts it again: same keys.
    s.recover(&at(1), 0, &alerts(0..2)).unwrap();
    let got = hook.received();
    assert_eq!(got.iter().filter(|r| r.status == 503).count(), 3);
    let accepted: Vec<_> = got.iter().filter(|r| r.status == 200).collect();
    let keys: Vec<&str> = accepted
        .iter()
        .map(|r| r.headers[&IDEMPOTENCY_HEADER.to_lowercase()].as_str())
        .collect();
    assert_eq!(keys, ["L-1-0", "L-1-1", "L-1-0", "L-1-1"]);
    let first: serde_json::Value = serde_json::from_str(&accepted[0].body).unwrap();
    assert_eq!(first["key"], "card0");
    assert_eq!(first["value"]["alert"], 0);
    assert_eq!(first["timestamp"], 1000);
    assert!(accepted.iter().all(|r| r.path == "/alerts"
        && r.headers["authorization"] == "Bearer s3cret"
        && r.headers["content-type"] == "application/json"));
    assert!(letters.lock().unwrap().is_empty());
}

#[test]
fn batches_post_arrays_and_refused_events_are_dead_lettered() {
    let hook = Webhook::start(Script {
        refuse_containing: Some("\"card4\"".into()),
        ..Script::default()
    });
    let (mut s, letters) = sink(&hook, r#", "batch": 3"#);
    s.publish(&at(7), &alerts(0..7)).unwrap();
    let got = hook.received();
    let sizes: Vec<(String, usize, u16)> = got
        .iter()
        .map(|r| {
            let events: Vec<serde_json::Value> = serde_json::from_str(&r.body).unwrap();
            (r.headers["idempotency-key"].clone(), events.len(), r.status)
        })
        .collect();
    assert_eq!(
        sizes,
        [
            ("L-7-0".into(), 3, 200),
            ("L-7-3".into(), 3, 400),
            ("L-7-6".into(), 1, 200)
        ]
    );
    let letters = letters.lock().unwrap();
    let keys: Vec<&[u8]> = letters
        .iter()
        .map(|l| l.event.key.as_deref().unwrap())
        .collect();
    assert_eq!(keys, [b"card3", b"card4", b"card5"]);
    assert!(
        letters[0].error.contains("HTTP 400: scripted"),
        "{}",
        letters[0].error
    );
}

#[test]
fn a_receiver_that_stays_down_fails_the_sink_after_its_retries() {
    let hook = Webhook::start(Script {
        fail_first: Some((usize::MAX, 500)),
        ..Script::default()
    });
    let (mut s, _) = sink(&hook, r#", "max_retries": 2"#);
    let err = s.publish(&at(1), &alerts(0..1)).unwrap_err();
    assert!(
        err.contains("failed after 2 retries (HTTP 500: scripted)"),
        "{err}"
    );
    assert_eq!(hook.received().len(), 3);
}
