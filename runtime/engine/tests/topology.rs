//! The topology executor against real guests and plain-Rust oracles.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use weir_engine::{
    Bindings, DeadLetter, DeadLetterFn, EngineError, ExecOptions, FailureKind, Modules, Pull, Sink,
    SinkFn, Source, SourceIter, run_topology,
};
use weir_fixtures::guest_bytes;
use weir_topology::parse_topology;
use weir_types::{Batch, Event, wire};
use weir_wasm::{HostConfig, WasmHost};

fn modules(names: &[&str]) -> Modules {
    let host = WasmHost::new(HostConfig::default()).unwrap();
    names
        .iter()
        .map(|n| (n.to_string(), host.load(&guest_bytes(n)).unwrap()))
        .collect()
}

fn source(events: Vec<Event>) -> SourceIter {
    Box::new(events.into_iter().map(Ok))
}

/// Bindings of the source `in` and the sink `out`, nothing else.
fn bind(source: impl Source + 'static, sink: SinkFn) -> Bindings {
    Bindings {
        sources: HashMap::from([("in".to_string(), Box::new(source) as Box<dyn Source>)]),
        sinks: HashMap::from([("out".to_string(), Box::new(sink) as Box<dyn Sink>)]),
        ..Bindings::default()
    }
}

/// A sink collecting wire lines, and the lines.
fn collector() -> (SinkFn, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let out = lines.clone();
    let sink: SinkFn = Box::new(move |b: &Batch| {
        out.lock()
            .unwrap()
            .extend(b.iter().map(|e| wire::format_event(&e)));
        Ok(())
    });
    (sink, lines)
}

/// A dead-letter output collecting the letters, and the letters.
fn letter_collector() -> (DeadLetterFn, Arc<Mutex<Vec<DeadLetter>>>) {
    let letters: Arc<Mutex<Vec<DeadLetter>>> = Arc::default();
    let dead = letters.clone();
    let out: DeadLetterFn = Box::new(move |l: &DeadLetter| {
        dead.lock().unwrap().push(l.clone());
        Ok(())
    });
    (out, letters)
}

fn text_lines(lines: usize, words_per_line: usize) -> (Vec<Event>, BTreeMap<String, u64>) {
    let mut seed: u64 = 42;
    let mut oracle = BTreeMap::new();
    let events = (0..lines)
        .map(|i| {
            let words: Vec<String> = (0..words_per_line)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let w = format!("w{}", (seed >> 33) % 10_000);
                    *oracle.entry(w.clone()).or_default() += 1;
                    w
                })
                .collect();
            Event {
                key: None,
                value: serde_json::to_vec(&words.join(" ")).unwrap(),
                timestamp: i as i64,
                headers: vec![],
            }
        })
        .collect();
    (events, oracle)
}

fn word_count_topology(parallelism: u16) -> String {
    format!(
        r#"
name: word-count
sources: [{{ name: lines, stream: lines }}]
operators:
  - {{ name: split, module: split-words, input: lines }}
  - {{ name: count, module: word-count, input: split, key_by: key, parallelism: {parallelism} }}
sinks: [{{ name: out, stream: counts, input: count }}]
"#
    )
}

/// The highest count per word seen in the output.
fn final_counts(lines: &[String]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let word = v["value"]["word"].as_str().unwrap().to_string();
        let n = v["value"]["count"].as_u64().unwrap();
        let c = counts.entry(word).or_insert(0);
        *c = n.max(*c);
    }
    counts
}

#[test]
fn word_count_over_a_million_words_matches_the_oracle_at_parallelism_1_and_2() {
    let modules = modules(&["split-words", "word-count"]);
    let (events, oracle) = text_lines(100_000, 10);
    let total: u64 = oracle.values().sum();
    assert_eq!(total, 1_000_000);
    for parallelism in [1, 2] {
        let doc = parse_topology(&word_count_topology(parallelism)).unwrap();
        let (sink, lines) = collector();
        let report = run_topology(
            &doc,
            &modules,
            Bindings {
                sources: HashMap::from([(
                    "lines".to_string(),
                    Box::new(source(events.clone())) as Box<dyn Source>,
                )]),
                sinks: HashMap::from([("out".to_string(), Box::new(sink) as Box<dyn Sink>)]),
                dead_letter: None,
                ..Bindings::default()
            },
            ExecOptions::default(),
        )
        .unwrap();
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len() as u64, total, "parallelism {parallelism}");
        assert_eq!(final_counts(&lines), oracle, "parallelism {parallelism}");
        let count_instances: Vec<_> = report
            .operators
            .iter()
            .filter(|(n, _, _)| n == "count")
            .collect();
        assert_eq!(count_instances.len(), parallelism as usize);
        let counted: u64 = count_instances.iter().map(|(_, _, m)| m.events_in).sum();
        assert_eq!(counted, total);
        if parallelism == 2 {
            // Both instances got a share of the keys.
            assert!(
                count_instances
                    .iter()
                    .all(|(_, _, m)| m.events_in > total / 4)
            );
        }
        assert_eq!(report.sources, vec![("lines".to_string(), 100_000)]);
    }
}

#[test]
fn keyed_by_a_field_and_chained_through_a_filter() {
    let modules = modules(&["filter", "word-count"]);
    let doc = parse_topology(
        r#"
name: per-user
sources: [{ name: in, stream: in }]
operators:
  - { name: big, module: filter, input: in, config: { field: amount, op: gt, value: 10 } }
  - { name: count, module: word-count, input: big, key_by: { field: user }, parallelism: 3 }
sinks: [{ name: out, stream: out, input: count }]
"#,
    )
    .unwrap();
    let events: Vec<Event> = (0..3000)
        .map(|i| Event {
            key: None,
            value: format!(r#"{{"user":"u{}","amount":{}}}"#, i % 7, i % 20).into_bytes(),
            timestamp: i,
            headers: vec![],
        })
        .collect();
    let mut oracle: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..3000 {
        if i % 20 > 10 {
            *oracle.entry(format!("u{}", i % 7)).or_default() += 1;
        }
    }
    let (sink, lines) = collector();
    run_topology(
        &doc,
        &modules,
        bind(source(events), sink),
        ExecOptions {
            batch_size: 100,
            channel_capacity: 2,
            ..ExecOptions::default()
        },
    )
    .unwrap();
    assert_eq!(final_counts(&lines.lock().unwrap()), oracle);
}

/// `n` events keyed `k0`..`k99`, the one at `at` the poison-trap's poison.
fn poisoned(n: i64, at: i64) -> Vec<Event> {
    (0..n)
        .map(|i| Event {
            key: Some(format!("k{}", i % 100).into_bytes()),
            value: if i == at {
                br#""poison""#.to_vec()
            } else {
                i.to_string().into_bytes()
            },
            timestamp: i,
            headers: vec![],
        })
        .collect()
}

#[test]
fn one_poison_event_in_100k_is_dead_lettered_and_the_rest_processed() {
    let modules = modules(&["identity", "poison-trap"]);
    let doc = parse_topology(
        r#"
name: poison
sources: [{ name: in, stream: in }]
operators:
  - { name: pass, module: identity, input: in }
  - { name: risky, module: poison-trap, input: pass, key_by: key, parallelism: 2, on_error: dead-letter }
sinks: [{ name: out, stream: out, input: risky }]
"#,
    )
    .unwrap();
    let events = poisoned(100_000, 54_321);
    let (sink, lines) = collector();
    let (dead, letters) = letter_collector();
    let report = run_topology(
        &doc,
        &modules,
        Bindings {
            sources: HashMap::from([(
                "in".to_string(),
                Box::new(source(events)) as Box<dyn Source>,
            )]),
            sinks: HashMap::from([("out".to_string(), Box::new(sink) as Box<dyn Sink>)]),
            dead_letter: Some(dead),
            ..Bindings::default()
        },
        ExecOptions::default(),
    )
    .unwrap();
    assert_eq!(lines.lock().unwrap().len(), 99_999);
    let letters = letters.lock().unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].operator, "risky");
    assert_eq!(letters[0].event.value, br#""poison""#);
    assert_eq!(letters[0].event.timestamp, 54_321);
    assert!(
        letters[0].error.contains("poison event"),
        "{}",
        letters[0].error
    );
    // Its context: a trap with the guest's frames, the module as the
    // document names it (no registry here) and its digest, the instance
    // that owns the key; no source offset (it came from `pass`).
    let c = &letters[0].context;
    assert_eq!(c.kind, FailureKind::Trap);
    assert!(
        c.backtrace.iter().any(|f| f.contains("PoisonTrap")),
        "{:?}",
        c.backtrace
    );
    assert_eq!(c.topology.as_deref(), Some("poison"));
    assert_eq!(c.module.as_deref(), Some("poison-trap"));
    assert!(
        c.digest
            .as_deref()
            .is_some_and(|d| d.starts_with("sha256:"))
    );
    assert!(matches!(c.instance, Some(0 | 1)), "{c:?}");
    assert_eq!((c.source.as_deref(), c.offset), (None, None));
    let dead_lettered: u64 = report
        .operators
        .iter()
        .filter(|(n, _, _)| n == "risky")
        .map(|(_, _, m)| m.dead_lettered)
        .sum();
    assert_eq!(dead_lettered, 1);
}

#[test]
fn an_event_that_stops_the_run_is_named_by_source_offset_and_key() {
    let modules = modules(&["identity", "poison-trap"]);
    // Read straight from the source through a keyed route (each instance
    // gets a part of every batch), and after an operator (no offset).
    for (risky_input, named) in [
        ("in", r#"source `in` offset 637, key "k37""#),
        ("pass", r#"(key "k37"; on_error: fail)"#),
    ] {
        let doc = parse_topology(&format!(
            r#"
name: poison
sources: [{{ name: in, stream: in }}]
operators:
  - {{ name: pass, module: identity, input: in }}
  - {{ name: risky, module: poison-trap, input: {risky_input}, key_by: key, parallelism: 2 }}
sinks: [{{ name: out, stream: out, input: risky }}]
"#
        ))
        .unwrap();
        let (sink, _) = collector();
        let options = ExecOptions {
            batch_size: 100,
            ..ExecOptions::default()
        };
        let bindings = bind(source(poisoned(1_000, 637)), sink);
        let err = run_topology(&doc, &modules, bindings, options).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, EngineError::EventFailed { .. }), "{message}");
        assert!(message.contains(named), "{message}");
        assert!(message.contains("poison event"), "{message}");
    }
}

#[test]
fn a_slow_sink_bounds_what_the_source_reads() {
    let modules = modules(&["identity"]);
    let doc = parse_topology(
        r#"
name: slow
sources: [{ name: in, stream: in }]
operators:
  - { name: a, module: identity, input: in }
  - { name: b, module: identity, input: a, key_by: key }
sinks: [{ name: out, stream: out, input: b }]
"#,
    )
    .unwrap();
    // An endless source that counts what it hands out.
    let read = Arc::new(AtomicU64::new(0));
    let counter = read.clone();
    let endless: SourceIter = Box::new((0..).map(move |i: i64| {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(Event {
            key: Some(b"k".to_vec()),
            value: b"1".to_vec(),
            timestamp: i,
            headers: vec![],
        })
    }));
    // The sink takes one batch, then waits until the source has stopped
    // advancing (everything in between is full), records how far it got,
    // and stops the topology.
    let seen = read.clone();
    let high_water = Arc::new(AtomicU64::new(0));
    let mark = high_water.clone();
    let sink: SinkFn = Box::new(move |_b: &Batch| {
        let mut last = u64::MAX;
        loop {
            std::thread::sleep(std::time::Duration::from_millis(20));
            let now = seen.load(Ordering::SeqCst);
            if now == last {
                break;
            }
            last = now;
        }
        mark.store(last, Ordering::SeqCst);
        Err("stop".into())
    });
    let options = ExecOptions {
        batch_size: 100,
        channel_capacity: 4,
        ..ExecOptions::default()
    };
    let err = run_topology(&doc, &modules, bind(endless, sink), options).unwrap_err();
    assert!(
        matches!(&err, EngineError::Sink { message, .. } if message == "stop"),
        "{err}"
    );
    // Two channels (into b, into the sink) of 4 batches each, plus one
    // batch held by each of the four tasks, plus the one being read.
    let bound = (2 * 4 + 4 + 1) * 100;
    let got = high_water.load(Ordering::SeqCst);
    assert!(
        got > 0 && got <= bound,
        "source read {got} events, bound {bound}"
    );
}

#[test]
fn bad_topologies_and_bindings_are_refused_before_running() {
    let modules = modules(&["identity"]);
    let doc = parse_topology(
        r#"
name: bad
sources: [{ name: in, stream: in }]
operators:
  - { name: a, module: nope, input: in }
  - { name: b, module: identity, input: [a, c] }
  - { name: c, module: identity, input: b }
sinks: [{ name: out, stream: out, input: c }]
"#,
    )
    .unwrap();
    let err =
        run_topology(&doc, &modules, Bindings::default(), ExecOptions::default()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, EngineError::Invalid(_)));
    assert!(
        text.contains("operators[0].module: unknown module \"nope\""),
        "{text}"
    );
    assert!(text.contains("cycle: b → c → b"), "{text}");
    let doc = parse_topology(
        "name: t\nsources: [{ name: in, stream: in }]\noperators: [{ name: a, module: identity, input: in }]\nsinks: [{ name: out, stream: out, input: a }]\n",
    )
    .unwrap();
    let err =
        run_topology(&doc, &modules, Bindings::default(), ExecOptions::default()).unwrap_err();
    assert!(
        matches!(&err, EngineError::Unbound { what: "source", name } if name == "in"),
        "{err}"
    );
}

/// Events keyed `u0..u9` with amounts, timestamps jittered up to `jitter`
/// ms out of order.
fn amounts(n: i64, jitter: i64) -> Vec<Event> {
    let mut seed: u64 = 7;
    (0..n)
        .map(|i| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = seed >> 33;
            Event {
                key: Some(format!("u{}", r % 10).into_bytes()),
                value: format!(r#"{{"amount":{},"card":"c{}"}}"#, r % 100, r % 3).into_bytes(),
                timestamp: 1_000_000 + i * 7 - (r as i64 % (jitter + 1)),
                headers: vec![],
            }
        })
        .collect()
}

fn run_sorted(doc_text: &str, modules: &Modules, events: Vec<Event>) -> Vec<String> {
    let doc = parse_topology(doc_text).unwrap();
    let (sink, lines) = collector();
    run_topology(
        &doc,
        modules,
        bind(source(events), sink),
        ExecOptions {
            batch_size: 256,
            channel_capacity: 4,
            ..ExecOptions::default()
        },
    )
    .unwrap();
    let mut lines = lines.lock().unwrap().clone();
    lines.sort();
    lines
}

#[test]
fn window_sum_matches_its_oracle_with_out_of_order_events() {
    let modules = modules(&["window-sum"]);
    let events = amounts(20_000, 300);
    // Oracle: tumbling 1 s windows per key; nothing is late, since the
    // watermark allows 300 ms of disorder.
    let mut windows: BTreeMap<(String, i64), (f64, u64)> = BTreeMap::new();
    for e in &events {
        let v: serde_json::Value = serde_json::from_slice(&e.value).unwrap();
        let start = e.timestamp - e.timestamp.rem_euclid(1000);
        let w = windows
            .entry((String::from_utf8(e.key.clone().unwrap()).unwrap(), start))
            .or_default();
        w.0 += v["amount"].as_f64().unwrap();
        w.1 += 1;
    }
    let mut expected: Vec<String> = windows
        .iter()
        .map(|((key, start), (sum, count))| {
            format!(
                r#"{{"key":"{key}","value":{{"key":"{key}","start":{start},"end":{},"sum":{},"count":{count}}},"timestamp":{}}}"#,
                start + 1000,
                serde_json::to_string(sum).unwrap(),
                start + 999
            )
        })
        .collect();
    expected.sort();
    for parallelism in [1, 2] {
        let got = run_sorted(
            &format!(
                "name: w\nsources: [{{ name: in, stream: in, watermark: {{ max_out_of_orderness_ms: 300 }} }}]\noperators:\n  - {{ name: sum, module: window-sum, input: in, key_by: key, parallelism: {parallelism} }}\nsinks: [{{ name: out, stream: out, input: sum }}]\n"
            ),
            &modules,
            events.clone(),
        );
        assert_eq!(got, expected, "parallelism {parallelism}");
    }
}

#[test]
fn fraud_detector_in_a_topology_matches_at_parallelism_1_and_3() {
    let modules = modules(&["fraud-detector"]);
    let events = amounts(6000, 40);
    let topology = |p: u16| {
        format!(
            "name: f\nsources: [{{ name: in, stream: in, watermark: {{ max_out_of_orderness_ms: 40 }} }}]\noperators:\n  - {{ name: fraud, module: fraud-detector, input: in, key_by: {{ field: card }}, parallelism: {p}, config: {{ max_count: 5, min_amount: 60, window_ms: 300 }} }}\nsinks: [{{ name: out, stream: out, input: fraud.alerts }}]\n"
        )
    };
    let one = run_sorted(&topology(1), &modules, events.clone());
    assert!(
        one.len() > 100,
        "the data should raise alerts: {}",
        one.len()
    );
    let three = run_sorted(&topology(3), &modules, events);
    assert_eq!(one, three);
}

/// Two splits of one source, read in turn (an idle pull between turns):
/// its event time is the least of the splits' highest timestamps, as a
/// Kafka topic's partitions say it.
struct TwoSplits {
    /// `None`: an idle pull.
    queue: std::collections::VecDeque<Option<(usize, Event)>>,
    highest: [i64; 2],
}

impl Source for TwoSplits {
    fn pull(&mut self) -> Result<Pull, String> {
        match self.queue.pop_front() {
            None => Ok(Pull::End),
            Some(None) => Ok(Pull::Idle),
            Some(Some((split, event))) => {
                self.highest[split] = self.highest[split].max(event.timestamp);
                Ok(Pull::Event(event))
            }
        }
    }

    fn event_time(&self) -> Option<i64> {
        self.highest.iter().copied().min()
    }
}

#[test]
fn a_split_that_lags_holds_the_watermark_back_instead_of_turning_late() {
    let modules = modules(&["identity"]);
    let at = |split: usize, ts: i64| {
        Some((
            split,
            Event {
                key: Some(format!("s{split}").into_bytes()),
                value: ts.to_string().into_bytes(),
                timestamp: ts,
                headers: vec![],
            },
        ))
    };
    // Split 0 is far ahead; split 1's events come later and older. Each
    // batch ends at an idle pull, so the watermark moves in between.
    let queue = [at(0, 100_000), None, at(1, 5_000), None, at(1, 6_000), None]
        .into_iter()
        .collect();
    let doc = parse_topology(
        "name: lag\nsources: [{ name: in, stream: in }]\noperators: [{ name: id, module: identity, input: in, on_late: drop }]\nsinks: [{ name: out, stream: out, input: id }]\n",
    )
    .unwrap();
    let (sink, lines) = collector();
    let splits = TwoSplits {
        queue,
        highest: [i64::MIN; 2],
    };
    let report = run_topology(
        &doc,
        &modules,
        bind(splits, sink),
        ExecOptions {
            batch_size: 10,
            ..ExecOptions::default()
        },
    )
    .unwrap();
    // Split 1's events are on time: the watermark waited for it.
    assert_eq!(report.operators[0].2.late, 0);
    assert_eq!(lines.lock().unwrap().len(), 3);
}

#[test]
fn late_events_are_counted_and_handled_by_policy() {
    let modules = modules(&["identity"]);
    // Timestamps 0..100 in order, then 5 again: behind the watermark.
    let mut events: Vec<Event> = (0..100)
        .map(|t| Event {
            key: Some(b"k".to_vec()),
            value: t.to_string().into_bytes(),
            timestamp: t,
            headers: vec![],
        })
        .collect();
    events.push(Event {
        key: Some(b"k".to_vec()),
        value: b"\"late\"".to_vec(),
        timestamp: 5,
        headers: vec![],
    });
    for (policy, delivered, lettered) in
        [("keep", 101, 0), ("drop", 100, 0), ("dead-letter", 100, 1)]
    {
        let doc = parse_topology(&format!(
            "name: late\nsources: [{{ name: in, stream: in }}]\noperators: [{{ name: id, module: identity, input: in, on_late: {policy} }}]\nsinks: [{{ name: out, stream: out, input: id }}]\n"
        ))
        .unwrap();
        let (sink, lines) = collector();
        let (dead, letters) = letter_collector();
        let report = run_topology(
            &doc,
            &modules,
            Bindings {
                sources: HashMap::from([(
                    "in".to_string(),
                    Box::new(source(events.clone())) as Box<dyn Source>,
                )]),
                sinks: HashMap::from([("out".to_string(), Box::new(sink) as Box<dyn Sink>)]),
                dead_letter: Some(dead),
                ..Bindings::default()
            },
            ExecOptions {
                batch_size: 10,
                ..ExecOptions::default()
            },
        )
        .unwrap();
        assert_eq!(lines.lock().unwrap().len(), delivered, "{policy}");
        let letters = letters.lock().unwrap();
        assert_eq!(letters.len(), lettered, "{policy}");
        if lettered == 1 {
            assert!(
                letters[0].error.contains("behind the watermark"),
                "{}",
                letters[0].error
            );
        }
        assert_eq!(report.operators[0].2.late, 1, "{policy}");
    }
}

#[test]
fn guest_counters_reach_the_metrics() {
    let modules = modules(&["window-sum"]);
    let doc = parse_topology(
        "name: c\nsources: [{ name: in, stream: in }]\noperators: [{ name: w, module: window-sum, input: in, key_by: key }]\nsinks: [{ name: out, stream: out, input: w }]\n",
    )
    .unwrap();
    // 5000 is far past the window [0, 1000) once the watermark reached
    // 4998: the event at 10 is dropped and counted by the guest.
    let events: Vec<Event> = [0, 5000, 10]
        .iter()
        .map(|&t| Event {
            key: Some(b"k".to_vec()),
            value: b"{\"amount\":1}".to_vec(),
            timestamp: t,
            headers: vec![],
        })
        .collect();
    let (sink, _lines) = collector();
    let report = run_topology(
        &doc,
        &modules,
        bind(source(events), sink),
        ExecOptions {
            batch_size: 1,
            ..ExecOptions::default()
        },
    )
    .unwrap();
    let metrics = &report.operators[0].2;
    assert_eq!(
        metrics.guest_counters.get("late_dropped"),
        Some(&1),
        "{metrics:?}"
    );
    assert_eq!(metrics.late, 1);
}

/// `(timestamp, value)` pairs as keyless events (the topology keys them by
/// their `user` field).
fn timed_events(timed: &[(i64, String)]) -> Vec<Event> {
    timed
        .iter()
        .map(|(t, v)| Event {
            key: None,
            value: v.clone().into_bytes(),
            timestamp: *t,
            headers: vec![],
        })
        .collect()
}

#[test]
fn an_event_time_join_of_two_inputs_matches_its_oracle_at_parallelism_1_and_3() {
    let modules = modules(&["enrich"]);
    let input = weir_fixtures::join::join_input(1500, 5, 25);
    let expected = weir_fixtures::join::enrich_oracle_lines(&input);
    for p in [1, 3] {
        let (sink, lines) = collector();
        let bindings = Bindings {
            sources: HashMap::from([
                (
                    "tx".to_string(),
                    Box::new(source(timed_events(&input.transactions))) as Box<dyn Source>,
                ),
                (
                    "profiles".to_string(),
                    Box::new(source(timed_events(&input.profiles))) as Box<dyn Source>,
                ),
            ]),
            sinks: HashMap::from([("out".to_string(), Box::new(sink) as Box<dyn Sink>)]),
            ..Bindings::default()
        };
        let options = ExecOptions {
            batch_size: 64,
            ..ExecOptions::default()
        };
        run_topology(
            &parse_topology(&weir_fixtures::join::enrich_topology(p, 25)).unwrap(),
            &modules,
            bindings,
            options,
        )
        .unwrap();
        let mut got = lines.lock().unwrap().clone();
        got.sort();
        assert_eq!(got.len(), expected.len(), "parallelism {p}");
        assert!(
            got == expected,
            "parallelism {p}: output differs from the oracle"
        );
    }
}

#[test]
fn a_0_1_0_component_and_a_0_2_0_component_run_in_one_topology() {
    let host = WasmHost::new(HostConfig::default()).unwrap();
    // Go's SDK speaks 0.1.0.
    let go_split = host.load(&guest_bytes("go-split-words")).unwrap();
    let rust_count = host.load(&guest_bytes("word-count")).unwrap();
    assert_eq!(go_split.contract_version(), "0.1.0");
    assert_eq!(rust_count.contract_version(), "0.2.0");
    let rust_split = host.load(&guest_bytes("split-words")).unwrap();
    let (events, _) = text_lines(200, 5);
    let doc = "name: mixed\nsources: [{ name: in, stream: in }]\noperators:\n  - { name: split, module: split, input: in }\n  - { name: count, module: count, input: split, key_by: key, parallelism: 2 }\nsinks: [{ name: out, stream: out, input: count }]\n";
    let run = |split: &weir_wasm::OperatorModule| {
        let modules: Modules = HashMap::from([
            ("split".to_string(), split.clone()),
            ("count".to_string(), rust_count.clone()),
        ]);
        run_sorted(doc, &modules, events.clone())
    };
    let mixed = run(&go_split);
    assert!(!mixed.is_empty());
    assert_eq!(
        mixed,
        run(&rust_split),
        "the adapted 0.1.0 component differs"
    );
}

#[test]
fn reading_a_side_output_that_was_not_declared_is_refused_with_its_path() {
    let host = WasmHost::new(HostConfig::default()).unwrap();
    let modules: Modules = HashMap::from([
        (
            "fraud-detector".to_string(),
            host.load(&guest_bytes("fraud-detector")).unwrap(),
        ),
        (
            "go-filter".to_string(),
            host.load(&guest_bytes("go-filter")).unwrap(),
        ),
    ]);
    let doc = "name: bad\nsources: [{ name: in, stream: in }]\noperators:\n  - { name: fraud, module: fraud-detector, input: in, key_by: key, config: { max_count: 1, min_amount: 1, window_ms: 10 } }\n  - { name: old, module: go-filter, input: in, config: { field: n, op: gt, value: 1 } }\nsinks:\n  - { name: out, stream: out, input: [fraud.alerts, fraud.nope] }\n  - { name: out2, stream: out2, input: old.alerts }\n";
    let (sink, _) = collector();
    let (sink2, _) = collector();
    let bindings = Bindings {
        sources: HashMap::from([(
            "in".to_string(),
            Box::new(source(Vec::new())) as Box<dyn Source>,
        )]),
        sinks: HashMap::from([
            ("out".to_string(), Box::new(sink) as Box<dyn Sink>),
            ("out2".to_string(), Box::new(sink2) as Box<dyn Sink>),
        ]),
        ..Bindings::default()
    };
    let err = run_topology(
        &parse_topology(doc).unwrap(),
        &modules,
        bindings,
        ExecOptions::default(),
    )
    .unwrap_err();
    let EngineError::Invalid(problems) = &err else {
        panic!("not a validation error: {err}");
    };
    let found: Vec<(&str, &str)> = problems
        .iter()
        .map(|p| (p.path.as_str(), p.message.as_str()))
        .collect();
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].0, "sinks[0].input[1]");
    assert!(
        found[0].1.contains("no side output \"nope\"") && found[0].1.contains("[\"alerts\"]"),
        "{found:?}"
    );
    assert_eq!(found[1].0, "sinks[1].input");
    assert!(found[1].1.contains("weir:operator@0.1.0"), "{found:?}");
}

/// An operator's own memory limit stops its instance at that size (not the
/// server's), its event dead-lettered as a memory cap, while the operator
/// beside it reading the same input goes on.
#[test]
fn an_operators_own_memory_limit_stops_it_alone() {
    let modules = modules(&["identity", "memory-grower"]);
    let doc = parse_topology(
        r#"
name: mem
sources: [{ name: in, stream: in }]
operators:
  - { name: tight, module: memory-grower, input: in, on_error: dead-letter, limits: { memory_mb: 8 } }
  - { name: other, module: identity, input: in }
sinks: [{ name: out, stream: out, input: other }, { name: grown, stream: grown, input: tight }]
"#,
    )
    .unwrap();
    let events = ["\"grow\"", "1"]
        .iter()
        .map(|v| Event {
            value: v.as_bytes().to_vec(),
            ..Event::default()
        })
        .collect();
    let (out, passed) = collector();
    let (grown, kept) = collector();
    let (dead, letters) = letter_collector();
    let mut bindings = bind(source(events), out);
    bindings.sinks.insert("grown".into(), Box::new(grown));
    bindings.dead_letter = Some(dead);
    run_topology(&doc, &modules, bindings, ExecOptions::default()).unwrap();
    assert_eq!(passed.lock().unwrap().len(), 2);
    assert_eq!(kept.lock().unwrap().len(), 1);
    let letters = letters.lock().unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].operator, "tight");
    assert_eq!(letters[0].context.kind, FailureKind::MemoryCap);
    assert!(
        letters[0]
            .error
            .contains(&format!("limit of {} bytes", 8 << 20)),
        "{}",
        letters[0].error
    );
}

#[test]
fn a_batch_whose_events_each_run_out_of_time_is_retried_a_slice_at_a_time() {
    // Eight events that each loop until the 60 ms call budget stops them,
    // then two that pass, in one batch: the batch fails as a whole, and
    // its events are retried one by one. Retried within one slice (as
    // before) the task would hold its worker for ~540 ms and be throttled
    // once; a slice per retry lets the pool's throttle slow it after each
    // long slice, so other tasks get their turns between them.
    // The host's epoch ticker, which ends calls at their budget, lives as
    // long as the host: it is kept for the run.
    let host = WasmHost::new(HostConfig::default()).unwrap();
    let modules: Modules = [(
        "endless-loop".to_string(),
        host.load(&guest_bytes("endless-loop")).unwrap(),
    )]
    .into_iter()
    .collect();
    let doc = parse_topology(
        "name: t\nsources: [{ name: in, stream: in }]\noperators:\n  - { name: spin, module: endless-loop, input: in, on_error: skip, limits: { call_budget_ms: 60 } }\nsinks: [{ name: out, stream: out, input: spin }]\n",
    )
    .unwrap();
    let event = |v: &str| Event {
        key: None,
        value: v.as_bytes().to_vec(),
        timestamp: 0,
        headers: vec![],
    };
    let mut events: Vec<Event> = (0..8).map(|_| event("\"loop\"")).collect();
    events.extend([event("\"a\""), event("\"b\"")]);
    let (sink, lines) = collector();
    let job = weir_engine::Job::start(
        &doc,
        &modules,
        bind(source(events), sink),
        ExecOptions::default(),
        None,
    )
    .unwrap();
    let start = std::time::Instant::now();
    while !job.is_finished() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the run did not end: {:?}",
            job.metrics()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let throttled = job.usage().throttled;
    let report = job.wait().unwrap();
    let values: Vec<String> = lines.lock().unwrap().clone();
    assert_eq!(
        values.len(),
        2,
        "the two passing events, in order: {values:?}"
    );
    assert!(
        values[0].contains("\"a\"") && values[1].contains("\"b\""),
        "{values:?}"
    );
    let spin = &report.operators[0].2;
    assert_eq!((spin.events_in, spin.errors), (10, 8), "{spin:?}");
    assert!(
        throttled >= 4,
        "the retries ran in {throttled} throttled slices: they held the worker in one"
    );
}
