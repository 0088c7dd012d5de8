//! The single-operator runner against real guests: timers through
//! watermarks (fraud-detector against an oracle), and the error policy
//! isolating a poison event inside a batch.

use std::collections::HashMap;

use weir_engine::{ErrorPolicy, RunError, RunOptions, SIDE_OUTPUT_HEADER, run_operator};
use weir_fixtures::guest_bytes;
use weir_types::{Batch, DEFAULT_KEY_GROUPS, Event, KeyGroupRange, wire};
use weir_wasm::{HostConfig, MemoryState, OperatorInstance, WasmHost};

fn instance(host: &WasmHost, guest: &str, config: &str) -> OperatorInstance {
    let module = host.load(&guest_bytes(guest)).unwrap();
    OperatorInstance::new(
        &module,
        guest,
        config,
        Box::new(MemoryState::new()),
        KeyGroupRange::all(DEFAULT_KEY_GROUPS),
    )
    .unwrap()
}

fn collect(out: &mut Vec<String>) -> impl FnMut(&Batch) -> Result<(), String> + '_ {
    |batch| {
        out.extend(batch.iter().map(|e| wire::format_event(&e)));
        Ok(())
    }
}

/// Collects the events of side output `output` (marked by the runner's
/// header, which is left out), and counts the main output's.
fn collect_side<'a>(
    out: &'a mut Vec<String>,
    main: &'a mut usize,
    output: &'a str,
) -> impl FnMut(&Batch) -> Result<(), String> + 'a {
    move |batch| {
        for e in batch.iter() {
            let on = e
                .headers
                .iter()
                .find(|(_, n, _)| n == SIDE_OUTPUT_HEADER)
                .map(|(_, _, v)| v.as_slice());
            match on {
                None => *main += 1,
                Some(name) if name == output.as_bytes() => {
                    let mut plain = Batch::default();
                    plain.push(e.key, e.value, e.timestamp);
                    out.extend(plain.iter().map(|p| wire::format_event(&p)));
                }
                Some(other) => return Err(format!("unexpected output {other:?}")),
            }
        }
        Ok(())
    }
}

/// Deterministic card transactions, timestamps jittered by up to `jitter`
/// ms out of order.
fn transactions(n: usize, jitter: i64) -> Vec<Event> {
    let mut seed: u64 = 0x5eed;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed >> 33
    };
    (0..n)
        .map(|i| {
            let card = format!("card-{}", next() % 12);
            let amount = (next() % 1000) as f64 / 4.0;
            let ts = 1_000_000 + i as i64 * 10 - (next() % (jitter as u64 + 1)) as i64;
            Event {
                key: Some(card.into_bytes()),
                value: format!(r#"{{"amount":{amount},"merchant":"m{}"}}"#, next() % 7)
                    .into_bytes(),
                timestamp: ts,
                headers: vec![],
            }
        })
        .collect()
}

/// The fraud-detector's semantics in plain Rust: alerts in arrival order.
fn fraud_oracle(events: &[Event], max_count: u64, min_amount: f64, window: i64) -> Vec<String> {
    let mut large: HashMap<Vec<u8>, Vec<i64>> = HashMap::new();
    let mut out = Vec::new();
    for e in events {
        let v: serde_json::Value = serde_json::from_slice(&e.value).unwrap();
        if v["amount"].as_f64().unwrap() <= min_amount {
            continue;
        }
        let key = e.key.clone().unwrap();
        let times = large.entry(key.clone()).or_default();
        times.push(e.timestamp);
        let t = e.timestamp;
        let count = times.iter().filter(|&&x| x > t - window && x <= t).count() as u64;
        if count > max_count {
            let card = String::from_utf8(key).unwrap();
            out.push(format!(
                r#"{{"key":"{card}","value":{{"card":"{card}","count":{count},"at":{t}}},"timestamp":{t}}}"#
            ));
        }
    }
    out
}

#[test]
fn fraud_detector_matches_its_oracle_with_out_of_order_events() {
    let host = WasmHost::new(HostConfig::default()).unwrap();
    let events = transactions(3000, 40);
    let config = r#"{"max_count":3,"min_amount":150,"window_ms":400}"#;
    let expected = fraud_oracle(&events, 3, 150.0, 400);
    assert!(
        expected.len() > 50,
        "the data should raise alerts: {}",
        expected.len()
    );
    for batch_size in [1, 7, 1024] {
        let mut op = instance(&host, "fraud-detector", config);
        let mut out = Vec::new();
        let mut main = 0;
        let report = run_operator(
            &mut op,
            events.clone(),
            collect_side(&mut out, &mut main, "alerts"),
            RunOptions {
                batch_size,
                on_error: ErrorPolicy::Fail,
                max_out_of_orderness_ms: 40,
            },
        )
        .unwrap();
        assert_eq!(out, expected, "batch size {batch_size}");
        assert_eq!(
            main,
            events.len(),
            "every transaction goes on, on the main output"
        );
        assert!(report.timers_fired > 0);
        // Every timer fired by the end of input, so eviction emptied the maps.
        for card in 0..12 {
            let key = format!("card-{card}");
            assert!(
                op.state_mut()
                    .map("large", key.as_bytes())
                    .unwrap()
                    .is_empty()
            );
        }
    }
}

fn poison_input(n: usize, poison_at: usize, bad_at: usize) -> Vec<Event> {
    (0..n)
        .map(|i| Event {
            key: Some(format!("k{}", i % 5).into_bytes()),
            value: match i {
                _ if i == poison_at => br#""poison""#.to_vec(),
                _ if i == bad_at => br#""bad""#.to_vec(),
                _ => i.to_string().into_bytes(),
            },
            timestamp: i as i64,
            headers: vec![],
        })
        .collect()
}

#[test]
fn skip_isolates_a_poison_event_inside_a_batch() {
    let host = WasmHost::new(HostConfig::default()).unwrap();
    let mut op = instance(&host, "poison-trap", "");
    let mut out = Vec::new();
    let report = run_operator(
        &mut op,
        poison_input(1000, 300, 700),
        collect(&mut out),
        RunOptions {
            batch_size: 64,
            on_error: ErrorPolicy::Skip,
            max_out_of_orderness_ms: 0,
        },
    )
    .unwrap();
    assert_eq!(out.len(), 998);
    assert_eq!(report.skipped.len(), 2);
    assert_eq!(report.skipped[0].index, Some(300));
    assert!(
        report.skipped[0].message.contains("trapped"),
        "{}",
        report.skipped[0].message
    );
    assert_eq!(report.skipped[1].index, Some(700));
    assert_eq!(report.skipped[1].message, "bad event");
    assert_eq!(
        report.restarts, 2,
        "the batch trapped, then the poison event alone"
    );
    // Every event but the poison one was counted exactly once: the trapped
    // batch left no state behind and its retry counted each event once.
    let seen: u64 = (0..5)
        .map(|k| {
            let v = op
                .state_mut()
                .value("seen", format!("k{k}").as_bytes())
                .unwrap()
                .unwrap();
            String::from_utf8(v).unwrap().parse::<u64>().unwrap()
        })
        .sum();
    assert_eq!(
        seen,
        999 - 1,
        "poison event not counted; the bad event's write rolled back"
    );
}

#[test]
fn fail_stops_at_the_first_failure() {
    let host = WasmHost::new(HostConfig::default()).unwrap();
    let mut op = instance(&host, "poison-trap", "");
    let mut out = Vec::new();
    let err = run_operator(
        &mut op,
        poison_input(200, 150, 100),
        collect(&mut out),
        RunOptions {
            batch_size: 64,
            ..RunOptions::default()
        },
    )
    .unwrap_err();
    assert!(
        matches!(&err, RunError::EventFailed { index: 100, message } if message == "bad event"),
        "{err}"
    );
    let mut op = instance(&host, "poison-trap", "");
    let err = run_operator(
        &mut op,
        poison_input(200, 150, 999),
        |_: &Batch| Ok(()),
        RunOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, RunError::EventFailed { index: 150, message } if message.contains("trapped") && message.contains("poison event")),
        "{err}"
    );
}

#[test]
fn window_sum_fires_updates_late_events_and_drops_later_ones() {
    let host = WasmHost::new(HostConfig::default()).unwrap();
    let mut op = instance(&host, "window-sum", r#"{"allowed_lateness_ms":1000}"#);
    let e = |t: i64, amount: i64| Event {
        key: Some(b"k".to_vec()),
        value: format!(r#"{{"amount":{amount}}}"#).into_bytes(),
        timestamp: t,
        headers: vec![],
    };
    let mut out = Vec::new();
    run_operator(
        &mut op,
        vec![
            e(100, 1),
            e(900, 2),
            e(1500, 4),  // watermark 1499: [0, 1000) fires with 3
            e(200, 8),   // late but within lateness: [0, 1000) again, 11
            e(2600, 16), // watermark 2599: [1000, 2000) fires; [0, 1000) cleaned up
            e(300, 32),  // past the lateness: dropped
        ],
        collect(&mut out),
        RunOptions {
            batch_size: 1,
            ..RunOptions::default()
        },
    )
    .unwrap();
    let window = |start: i64, sum: &str, count: u64| {
        format!(
            r#"{{"key":"k","value":{{"key":"k","start":{start},"end":{},"sum":{sum},"count":{count}}},"timestamp":{}}}"#,
            start + 1000,
            start + 999
        )
    };
    assert_eq!(
        out,
        vec![
            window(0, "3.0", 2),
            window(0, "11.0", 3),
            window(1000, "4.0", 1),
            window(2000, "16.0", 1),
        ]
    );
}
