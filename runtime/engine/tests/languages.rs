//! The same operators written in other languages (Python, C, JavaScript,
//! Go) give byte-identical output to the Rust ones, alone and mixed in one
//! topology; and guests built against a wrong WIT are refused at load,
//! naming what does not match.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use weir_engine::{Bindings, ExecOptions, Modules, Sink, SinkFn, Source, SourceIter, run_topology};
use weir_fixtures::{guest_bytes, repo_root};
use weir_topology::parse_topology;
use weir_types::{Batch, DEFAULT_KEY_GROUPS, Event, KeyGroupRange, wire};
use weir_wasm::{CallOutcome, HostConfig, MemoryState, OperatorInstance, OperatorModule, WasmHost};

fn host() -> WasmHost {
    // Compiled components are cached across tests (an 18 MB Python or
    // 12 MB JavaScript component takes seconds to compile).
    WasmHost::new(HostConfig {
        cache_dir: Some(repo_root().join("target/test-cache")),
        ..HostConfig::default()
    })
    .unwrap()
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

/// One operator of a chain: its module, its config (JSON) and whether
/// its input is keyed by the event key.
struct Stage<'a> {
    module: &'a str,
    config: &'a str,
    keyed: bool,
}

fn stage(module: &str) -> Stage<'_> {
    Stage {
        module,
        config: "{}",
        keyed: false,
    }
}

fn keyed(module: &str) -> Stage<'_> {
    Stage {
        module,
        config: "{}",
        keyed: true,
    }
}

/// Runs `guest-examples/data/lines.jsonl` through the chain of `stages`
/// and returns the sink's events as wire lines.
fn run_chain(stages: &[Stage]) -> Vec<String> {
    let host = host();
    let mut modules = Modules::new();
    let mut operators = String::new();
    let mut input = "in".to_string();
    for (i, st) in stages.iter().enumerate() {
        if !modules.contains_key(st.module) {
            let module = host.load(&guest_bytes(st.module)).unwrap();
            modules.insert(st.module.to_string(), module);
        }
        let key_by = if st.keyed { ", key_by: key" } else { "" };
        operators.push_str(&format!(
            "  - {{ name: s{i}, module: {}, input: {input}, config: {}{key_by} }}\n",
            st.module, st.config
        ));
        input = format!("s{i}");
    }
    let doc = parse_topology(&format!(
        "name: chain\nsources: [{{ name: in, stream: in }}]\noperators:\n{operators}sinks: [{{ name: out, stream: out, input: {input} }}]\n"
    ))
    .unwrap();
    let text =
        std::fs::read_to_string(repo_root().join("guest-examples/data/lines.jsonl")).unwrap();
    let events = wire::parse_lines(&text, 0).unwrap();
    let source: SourceIter = Box::new(events.into_iter().map(Ok));
    let (sink, lines) = collector();
    run_topology(
        &doc,
        &modules,
        Bindings {
            sources: HashMap::from([("in".to_string(), Box::new(source) as Box<dyn Source>)]),
            sinks: HashMap::from([("out".to_string(), Box::new(sink) as Box<dyn Sink>)]),
            ..Bindings::default()
        },
        ExecOptions::default(),
    )
    .unwrap();
    lines.lock().unwrap().clone()
}

/// `split-words → word-count` (keyed) with the given modules.
fn run(split: &str, count: &str) -> Vec<String> {
    run_chain(&[stage(split), keyed(count)])
}

/// A fresh instance `op` of `module` with in-memory state and every key group.
fn instance(module: &OperatorModule, config: &str) -> OperatorInstance {
    OperatorInstance::new(
        module,
        "op",
        config,
        Box::new(MemoryState::new()),
        KeyGroupRange::all(DEFAULT_KEY_GROUPS),
    )
    .unwrap()
}

/// What one batch through a fresh instance of `module` gave.
fn call_once(module: &OperatorModule, config: &str, batch: &Batch) -> CallOutcome {
    let mut op = instance(module, config);
    op.process(&mut batch.clone(), i64::MIN, 0).unwrap()
}

/// Runs one batch through a fresh instance of `module`: the events it
/// emitted (wire lines) and the indexes of the events that failed.
fn process_once(module: &OperatorModule, config: &str, batch: &Batch) -> (Vec<String>, Vec<usize>) {
    let out = call_once(module, config, batch);
    (
        out.events.iter().map(|e| wire::format_event(&e)).collect(),
        out.failures.iter().map(|f| f.index).collect(),
    )
}

/// The failure messages of one batch through a fresh instance of `module`.
fn failures_of(module: &OperatorModule, config: &str, batch: &Batch) -> Vec<String> {
    let out = call_once(module, config, batch);
    out.failures.into_iter().map(|f| f.message).collect()
}

#[test]
fn guest_errors_say_what_the_event_lacks_and_keep_python_exception_types() {
    let host = host();
    let event = |key: &[u8], value: &str| Event {
        key: Some(key.to_vec()),
        value: value.as_bytes().to_vec(),
        timestamp: 1,
        headers: vec![],
    };
    // Rust: a transaction without `amount` is valid JSON lacking a field.
    let fraud = host.load(&guest_bytes("fraud-detector")).unwrap();
    let config = r#"{"max_count": 3, "min_amount": 10, "window_ms": 1000}"#;
    let batch: Batch = [event(b"c1", r#"{"card":"c1"}"#)].into_iter().collect();
    let failures = failures_of(&fraud, config, &batch);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].contains("the event lacks field `amount`")
            && !failures[0].contains("invalid JSON"),
        "{failures:?}"
    );
    // Python: an exception that is not an EventError keeps its type.
    let python = host.load(&guest_bytes("python-word-count")).unwrap();
    let batch: Batch = [event(&[0xff, 0xfe], "1")].into_iter().collect();
    let failures = failures_of(&python, "{}", &batch);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].starts_with("UnicodeDecodeError: "),
        "{failures:?}"
    );
}

fn batch_of(values: &[&str]) -> Batch {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| Event {
            key: None,
            value: v.as_bytes().to_vec(),
            timestamp: i as i64,
            headers: vec![],
        })
        .collect()
}

#[test]
fn python_word_count_matches_rust_byte_for_byte_alone_and_mixed() {
    let rust = run("split-words", "word-count");
    assert_eq!(rust.len(), 88);
    assert_eq!(run("python-split-words", "python-word-count"), rust);
    assert_eq!(run("python-split-words", "word-count"), rust);
    assert_eq!(run("split-words", "python-word-count"), rust);
}

#[test]
fn c_and_js_word_count_match_rust_byte_for_byte_alone_and_mixed() {
    let rust = run("split-words", "word-count");
    assert_eq!(rust.len(), 88);
    assert_eq!(run("c-split-words", "c-word-count"), rust);
    assert_eq!(run("js-split-words", "js-word-count"), rust);
    assert_eq!(run("c-split-words", "js-word-count"), rust);
    assert_eq!(run("js-split-words", "c-word-count"), rust);
    assert_eq!(run("python-split-words", "c-word-count"), rust);
}

#[test]
fn go_word_count_matches_rust_byte_for_byte_alone_and_mixed() {
    let rust = run("split-words", "word-count");
    assert_eq!(rust.len(), 88);
    assert_eq!(run("go-split-words", "go-word-count"), rust);
    assert_eq!(run("go-split-words", "word-count"), rust);
    assert_eq!(run("split-words", "go-word-count"), rust);
}

#[test]
fn a_go_guest_reaches_every_host_call_through_its_hand_written_abi() {
    use weir_wasm::{FiredTimer, TimeDomain};
    let host = host();
    let module = host.load(&guest_bytes("go-host-calls")).unwrap();
    let mut op = instance(&module, "{}");
    let event = |key: Option<&str>, value: &str, timestamp: i64| Event {
        key: key.map(|k| k.as_bytes().to_vec()),
        value: value.as_bytes().to_vec(),
        timestamp,
        headers: vec![],
    };
    let mut with_header = event(Some("a"), r#""y""#, 2);
    with_header.headers = vec![("h".to_string(), b"v\0".to_vec())];
    let mut batch: Batch = [
        event(Some("a"), r#""x""#, 1),
        with_header.clone(),
        event(Some("a"), r#""fail""#, 3),
        event(Some("a"), r#""x""#, 4),
        event(Some("b"), r#""z""#, 5),
        event(None, r#""w""#, 6),
    ]
    .into_iter()
    .collect();
    let out = op.process(&mut batch, i64::MIN, 0).unwrap();
    let summary = |key: &str, n: u64, list: u64, entries: u64, timestamp| {
        event(
            Some(key),
            &format!(r#"{{"n":{n},"got":"{n}","list":{list},"entries":{entries},"name":"op"}}"#),
            timestamp,
        )
    };
    let events: Vec<Event> = out.events.iter().map(|e| e.to_event()).collect();
    assert_eq!(
        events,
        vec![
            event(Some("a"), r#""x""#, 1),
            summary("a", 1, 1, 1, 1),
            with_header,
            summary("a", 2, 2, 2, 2),
            // "fail" wrote n = 999 and emitted before failing: both dropped.
            event(Some("a"), r#""x""#, 4),
            summary("a", 3, 3, 2, 4),
            event(Some("b"), r#""z""#, 5),
            summary("b", 1, 1, 1, 5),
        ]
    );
    let failures: Vec<(usize, &str)> = out
        .failures
        .iter()
        .map(|f| (f.index, f.message.as_str()))
        .collect();
    assert_eq!(failures[0], (2, "failed on purpose"));
    assert_eq!(failures[1].0, 5);
    assert!(failures[1].1.contains("key_by"), "{}", failures[1].1);
    assert_eq!(op.take_counters(), vec![("events".to_string(), 4)]);

    let due = op
        .state_mut()
        .take_due_timers(TimeDomain::EventTime, 12)
        .unwrap();
    assert_eq!(due, vec![(11, b"a".to_vec()), (12, b"a".to_vec())]);
    let fired: Vec<FiredTimer> = due
        .into_iter()
        .map(|(time, key)| FiredTimer {
            domain: TimeDomain::EventTime,
            time,
            key,
        })
        .collect();
    let out = op.on_timer(&fired, 12, 0).unwrap();
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    let events: Vec<Event> = out.events.iter().map(|e| e.to_event()).collect();
    assert_eq!(
        events,
        vec![
            event(Some("a"), r#"{"timer":11,"entries":0,"list":2}"#, 11),
            event(Some("a"), r#"{"timer":12,"entries":0,"list":2}"#, 12),
        ]
    );
    // The timer at 12 deleted a's timer at 14; b's at 15 is left.
    let left = op
        .state_mut()
        .take_due_timers(TimeDomain::EventTime, i64::MAX)
        .unwrap();
    assert_eq!(left, vec![(15, b"b".to_vec())]);

    // A Go panic traps the call, and the trap says what the panic said.
    let mut batch: Batch = [event(Some("a"), r#""panic""#, 7)].into_iter().collect();
    let err = op.process(&mut batch, i64::MIN, 0).unwrap_err().to_string();
    assert!(err.contains("host-calls panicked on purpose"), "{err}");
}

#[test]
fn split_count_filter_count_chains_match_rust_in_every_mix_of_languages() {
    // Words counted, the counts above one kept, and those counted again
    // per word: split → count → filter → count.
    let filter = r#"{"field": "count", "op": "gt", "value": 1}"#;
    let chain = |split, count, filter_module, recount| {
        run_chain(&[
            stage(split),
            keyed(count),
            Stage {
                module: filter_module,
                config: filter,
                keyed: false,
            },
            keyed(recount),
        ])
    };
    let rust = chain("split-words", "word-count", "filter", "word-count");
    assert!(!rust.is_empty() && rust.len() < 88, "{}", rust.len());
    assert!(rust[0].contains(r#""count":1"#), "{}", rust[0]);
    assert_eq!(
        chain("split-words", "word-count", "js-filter", "c-word-count"),
        rust
    );
    assert_eq!(
        chain(
            "c-split-words",
            "js-word-count",
            "c-filter",
            "python-word-count"
        ),
        rust
    );
    assert_eq!(
        chain(
            "split-words",
            "python-word-count",
            "go-filter",
            "go-word-count"
        ),
        rust
    );
    // All five languages on one stream: Go → C → JavaScript → Python →
    // Rust (the counts above one, counted again, filtered again).
    let five = |modules: [&str; 5]| {
        let filter_stage = |module| Stage {
            module,
            config: filter,
            keyed: false,
        };
        run_chain(&[
            stage(modules[0]),
            keyed(modules[1]),
            filter_stage(modules[2]),
            keyed(modules[3]),
            filter_stage(modules[4]),
        ])
    };
    let rust = five([
        "split-words",
        "word-count",
        "filter",
        "word-count",
        "filter",
    ]);
    assert!(!rust.is_empty(), "{}", rust.len());
    assert_eq!(
        five([
            "go-split-words",
            "c-word-count",
            "js-filter",
            "python-word-count",
            "filter"
        ]),
        rust
    );
}

#[test]
fn c_js_and_go_split_words_treat_unicode_and_bad_input_as_rust_does() {
    let host = host();
    let batch = batch_of(&[
        // Final sigma (also before case-ignorable punctuation), İ's
        // two-code-point lowercase, Unicode spaces (NBSP, ideographic,
        // NEL), titlecase Ǆ, astral letters.
        r#""ΟΔΟΣ. ὈΔΥΣΣΕΎΣ Σ aΣ' İstanbul\u00a0ŞEHİR\u3000Ǆemal\u0085𐐀BC 𝒜""#,
        r#""--- ... 'quoted' \"x\" tab\there\nnew""#,
        r#""\ud83d\ude00 Smile \u00C9T\u00C9""#,
        // Not a string, not JSON, a lone surrogate, a BOM (not space).
        r#"{"a":1}"#,
        "not json",
        r#""lone \ud800 surrogate""#,
        "\"a\u{feff}b\"",
        r#""""#,
    ]);
    let rust = process_once(
        &host.load(&guest_bytes("split-words")).unwrap(),
        "{}",
        &batch,
    );
    assert!(rust.0.len() > 10, "{:?}", rust.0);
    assert_eq!(rust.1, vec![3, 4, 5]);
    for name in ["c-split-words", "js-split-words", "go-split-words"] {
        let module = host.load(&guest_bytes(name)).unwrap();
        assert_eq!(process_once(&module, "{}", &batch), rust, "{name}");
    }
}

#[test]
fn filters_in_every_language_match_rust_on_every_op() {
    let host = host();
    let rust = host.load(&guest_bytes("filter")).unwrap();
    let others: Vec<(&str, OperatorModule)> =
        ["python-filter", "c-filter", "js-filter", "go-filter"]
            .into_iter()
            .map(|name| (name, host.load(&guest_bytes(name)).unwrap()))
            .collect();
    let batch = batch_of(&[
        r#"{"amount":60,"user":"a"}"#,
        r#"{"amount":50}"#,
        r#"{"amount":50.0}"#,
        r#"{"amount":"70"}"#,
        r#"{"amount":true}"#,
        r#"{"user":"b"}"#,
        r#"[1,2]"#,
        r#""text""#,
        r#"{"amount":[1,{"x":null}]}"#,
        r#"{"amount":[50.0]}"#,
        r#"{"amount":-0}"#,
        r#"{"amount":18446744073709551615,"user":"\ud83d\ude00"}"#,
        r#"{"amount":{"b":1,"a":2},"user":"\uffff"}"#,
        r#"{"amount":1,"amount":99}"#,
    ]);
    for config in [
        r#"{"field":"amount","op":"gt","value":50}"#,
        r#"{"field":"amount","op":"lt","value":60}"#,
        r#"{"field":"amount","op":"eq","value":50}"#,
        r#"{"field":"amount","op":"ne","value":50}"#,
        r#"{"field":"amount","op":"eq","value":true}"#,
        r#"{"field":"amount","op":"eq","value":[1,{"x":null}]}"#,
        r#"{"field":"amount","op":"eq","value":[50]}"#,
        r#"{"field":"amount","op":"eq","value":0}"#,
        r#"{"field":"amount","op":"eq","value":{"a":2,"b":1}}"#,
        r#"{"field":"amount","op":"gt","value":1.8446744073709552e19}"#,
        r#"{"field":"user","op":"gt","value":"a"}"#,
        r#"{"field":"user","op":"gt","value":"\uffff"}"#,
    ] {
        let expected = process_once(&rust, config, &batch);
        assert!(expected.1.is_empty(), "config {config}");
        for (name, module) in &others {
            assert_eq!(
                process_once(module, config, &batch),
                expected,
                "{name}, config {config}"
            );
        }
    }
    // A config it cannot read is refused at init, with the reason.
    for (name, module) in &others {
        let err = OperatorInstance::new(
            module,
            "filter",
            r#"{"field":"amount","op":"between","value":1}"#,
            Box::new(MemoryState::new()),
            KeyGroupRange::all(DEFAULT_KEY_GROUPS),
        )
        .unwrap_err();
        assert!(err.to_string().contains("between"), "{name}: {err}");
    }
}

#[test]
fn c_and_js_guests_built_against_a_wrong_wit_are_refused_at_load() {
    let host = host();
    for lang in ["c", "js"] {
        // The same source against the right WIT loads and runs.
        // Built against wit/ (0.1.0): the SDKs still make 0.1.0 components.
        let module = host.load(&guest_bytes(&format!("{lang}-counter"))).unwrap();
        assert_eq!(module.contract_version(), "0.1.0", "{lang}");
        let (events, failures) = process_once(&module, "{}", &batch_of(&[r#"{"a":1}"#, "2"]));
        assert_eq!(events.len(), 2, "{lang}: {events:?}");
        assert!(failures.is_empty(), "{lang}: {failures:?}");

        let err = host
            .load(&guest_bytes(&format!("{lang}-wrong-version")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("does not export a handler this host serves")
                && err.contains("weir:operator/handler@0.9.0"),
            "{lang}: {err}"
        );

        let err = host
            .load(&guest_bytes(&format!("{lang}-wrong-signature")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("weir:operator/context@0.1.0")
                && err.contains("counter-add")
                && err.contains("expected `u64` found `u32`"),
            "{lang}: {err}"
        );
    }
}

/// `enrich` (two inputs keyed by `user`) at `parallelism` over `input`: the
/// sink's wire lines, sorted (instances interleave their output).
fn run_enrich(
    module: &OperatorModule,
    input: &weir_fixtures::join::JoinInput,
    parallelism: u16,
) -> Vec<String> {
    let doc = parse_topology(&weir_fixtures::join::enrich_topology(parallelism, 25)).unwrap();
    let events = |timed: &[(i64, String)]| -> SourceIter {
        let events: Vec<Event> = timed
            .iter()
            .map(|(t, v)| Event {
                key: None,
                value: v.clone().into_bytes(),
                timestamp: *t,
                headers: vec![],
            })
            .collect();
        Box::new(events.into_iter().map(Ok))
    };
    let (sink, lines) = collector();
    run_topology(
        &doc,
        &Modules::from([("enrich".to_string(), module.clone())]),
        Bindings {
            sources: HashMap::from([
                (
                    "tx".to_string(),
                    Box::new(events(&input.transactions)) as Box<dyn Source>,
                ),
                (
                    "profiles".to_string(),
                    Box::new(events(&input.profiles)) as Box<dyn Source>,
                ),
            ]),
            sinks: HashMap::from([("out".to_string(), Box::new(sink) as Box<dyn Sink>)]),
            ..Bindings::default()
        },
        ExecOptions {
            batch_size: 16,
            ..ExecOptions::default()
        },
    )
    .unwrap();
    let mut got = lines.lock().unwrap().clone();
    got.sort();
    got
}

#[test]
fn enrich_in_python_c_and_js_joins_two_inputs_as_rust_does_byte_for_byte_at_parallelism_1_and_3() {
    let host = host();
    let rust = host.load(&guest_bytes("enrich")).unwrap();
    let others = in_each_sdk_on_0_2(&host, "enrich");
    // Out-of-order transactions and profiles, with non-ASCII text, so the
    // join depends on both inputs being told apart and on the order of the
    // pending transactions.
    let mut input = weir_fixtures::join::join_input(300, 4, 25);
    for (i, (_, v)) in input.transactions.iter_mut().enumerate().step_by(7) {
        *v = v.replacen('}', &format!(",\"note\":\"caf\u{e9} {i} \u{1d49c}\"}}"), 1);
    }
    // A transaction seen twice is emitted twice.
    let twice = input.transactions[10].clone();
    input.transactions.insert(12, twice);
    let oracle = weir_fixtures::join::enrich_oracle_lines(&input);
    let enriched = oracle.iter().filter(|l| !l.contains("\"profile\":null"));
    assert!(enriched.count() > oracle.len() / 2, "{oracle:?}");
    for p in [1, 3] {
        let expected = run_enrich(&rust, &input, p);
        assert_eq!(expected, oracle, "Rust at parallelism {p}");
        for (lang, module) in &others {
            let got = run_enrich(module, &input, p);
            assert_eq!(got.len(), expected.len(), "{lang} at parallelism {p}");
            assert!(got == expected, "parallelism {p}: {lang} differs from Rust");
        }
    }
}

/// The example `example` in Python, C and JavaScript, each checked to be
/// a 0.2.0 component.
fn in_each_sdk_on_0_2(host: &WasmHost, example: &str) -> Vec<(&'static str, OperatorModule)> {
    ["python", "c", "js"]
        .into_iter()
        .map(|lang| {
            let module = host
                .load(&guest_bytes(&format!("{lang}-{example}")))
                .unwrap();
            assert_eq!(module.contract_version(), "0.2.0", "{lang}");
            (lang, module)
        })
        .collect()
}

#[test]
fn side_outputs_and_processing_time_ttl_of_python_c_and_js_reach_the_host() {
    for (lang, module) in in_each_sdk_on_0_2(&host(), "large-amounts") {
        side_outputs_and_ttl_reach_the_host(lang, &module);
    }
}

/// Why an instance of `module` with `config` fails to start.
fn init_error(module: &OperatorModule, config: &str) -> String {
    match OperatorInstance::new(
        module,
        "op",
        config,
        Box::new(MemoryState::new()),
        KeyGroupRange::all(DEFAULT_KEY_GROUPS),
    ) {
        Ok(_) => panic!("{config} was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_zero_ttl_and_0_1_0_side_outputs_fail_init_saying_why() {
    let host = host();
    for (lang, module) in in_each_sdk_on_0_2(&host, "large-amounts") {
        let err = init_error(&module, r#"{"ttl_ms": 0}"#);
        assert!(err.contains("TTL") && err.contains('0'), "{lang}: {err}");
    }
    // The C SDK built against 0.1.0 (-DWEIR_CONTRACT_0_1) makes a 0.1.0
    // component, which cannot carry a side output or a TTL: init says so
    // rather than dropping them.
    let module = host.load(&guest_bytes("c-large-amounts-0-1")).unwrap();
    assert_eq!(module.contract_version(), "0.1.0");
    let err = init_error(&module, "{}");
    assert!(
        err.contains("side outputs and state TTL need contract weir:operator@0.2.0"),
        "{err}"
    );
}

/// `large-amounts` (in `lang`) sends large amounts to side output
/// `alerts`, fails an event naming an undeclared output, and counts a
/// key's events in a value state that expires 100 ms after its last write.
fn side_outputs_and_ttl_reach_the_host(lang: &str, module: &OperatorModule) {
    let mut op = instance(module, r#"{"limit": 100, "ttl_ms": 100}"#);
    assert_eq!(op.outputs(), ["alerts".to_string()], "{lang}");
    assert_eq!(op.ttls().len(), 1, "{lang}");
    let keyed = |values: &[&str]| -> Batch {
        values
            .iter()
            .map(|v| Event {
                key: Some(b"k".to_vec()),
                value: v.as_bytes().to_vec(),
                timestamp: 7,
                headers: vec![],
            })
            .collect()
    };
    let lines = |b: &Batch| -> Vec<String> { b.iter().map(|e| wire::format_event(&e)).collect() };
    let line = |amount, seen| {
        format!(r#"{{"key":"k","value":{{"amount":{amount},"seen":{seen}}},"timestamp":7}}"#)
    };
    let mut batch = keyed(&[
        r#"{"amount":5}"#,
        r#"{"amount":500}"#,
        r#"{"amount":1,"to":"nowhere"}"#,
    ]);
    let out = op.process(&mut batch, i64::MIN, 1000).unwrap();
    assert_eq!(lines(&out.events), vec![line(5, 1), line(500, 2)], "{lang}");
    assert_eq!(out.side.len(), 1, "{lang}");
    assert_eq!(lines(&out.side[0]), vec![line(500, 2)], "{lang}");
    // The undeclared output fails that event alone, naming what exists
    // (quoted as each language quotes); its state write is dropped with it.
    assert_eq!(out.failures.len(), 1, "{lang}");
    assert_eq!(out.failures[0].index, 2, "{lang}");
    let message = &out.failures[0].message;
    let (named, declared) = match lang {
        "python" => ("'nowhere'", "['alerts']"),
        _ => ("\"nowhere\"", "[\"alerts\"]"),
    };
    assert!(
        message.contains(named) && message.contains(declared),
        "{lang}: {message}"
    );
    // 100 ms after the last write the count is still live; 101 ms after
    // the next one it has expired.
    let out = op
        .process(&mut keyed(&[r#"{"amount":2}"#]), i64::MIN, 1100)
        .unwrap();
    assert_eq!(lines(&out.events), vec![line(2, 3)], "{lang}");
    assert!(out.side.iter().all(|b| b.is_empty()), "{lang}");
    let out = op
        .process(&mut keyed(&[r#"{"amount":3}"#]), i64::MIN, 1201)
        .unwrap();
    assert_eq!(lines(&out.events), vec![line(3, 1)], "{lang}");
}
