//! The same operators written in other languages give byte-identical
//! output to the Rust ones, alone and mixed in one topology.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use weir_engine::{Bindings, ExecOptions, Modules, Sink, SinkFn, Source, SourceIter, run_topology};
use weir_tests::{guest_bytes, repo_root};
use weir_topology::parse_topology;
use weir_types::{Batch, wire};
use weir_wasm::{HostConfig, WasmHost};

fn run(split: &str, count: &str) -> Vec<String> {
    // Compiled components are cached across tests (an 18 MB Python
    // component takes a while to compile).
    let host = WasmHost::new(HostConfig {
        cache_dir: Some(repo_root().join("target/test-cache")),
        ..HostConfig::default()
    })
    .unwrap();
    let mut modules = Modules::new();
    for name in [split, count] {
        modules.insert(name.to_string(), host.load(&guest_bytes(name)).unwrap());
    }
    let doc = parse_topology(&format!(
        "name: wc\nsources: [{{ name: in, stream: in }}]\noperators:\n  - {{ name: split, module: {split}, input: in }}\n  - {{ name: count, module: {count}, input: split, key_by: key }}\nsinks: [{{ name: out, stream: out, input: count }}]\n"
    ))
    .unwrap();
    let text =
        std::fs::read_to_string(repo_root().join("guest-examples/data/lines.jsonl")).unwrap();
    let events = wire::parse_lines(&text, 0).unwrap();
    let source: SourceIter = Box::new(events.into_iter().map(Ok));
    let lines = Arc::new(Mutex::new(Vec::new()));
    let out = lines.clone();
    let sink: SinkFn = Box::new(move |b: &Batch| {
        out.lock()
            .unwrap()
            .extend(b.iter().map(|e| wire::format_event(&e)));
        Ok(())
    });
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

#[test]
fn python_word_count_matches_rust_byte_for_byte_alone_and_mixed() {
    let rust = run("split-words", "word-count");
    assert_eq!(rust.len(), 88);
    assert_eq!(run("python-split-words", "python-word-count"), rust);
    assert_eq!(run("python-split-words", "word-count"), rust);
    assert_eq!(run("split-words", "python-word-count"), rust);
}

#[test]
fn python_filter_matches_rust_on_every_op() {
    use weir_types::{DEFAULT_KEY_GROUPS, Event, KeyGroupRange};
    use weir_wasm::{MemoryState, OperatorInstance};
    let host = WasmHost::new(HostConfig {
        cache_dir: Some(repo_root().join("target/test-cache")),
        ..HostConfig::default()
    })
    .unwrap();
    let rust = host.load(&guest_bytes("filter")).unwrap();
    let python = host.load(&guest_bytes("python-filter")).unwrap();
    let values = [
        r#"{"amount":60,"user":"a"}"#,
        r#"{"amount":50}"#,
        r#"{"amount":50.0}"#,
        r#"{"amount":"70"}"#,
        r#"{"amount":true}"#,
        r#"{"user":"b"}"#,
        r#"[1,2]"#,
        r#""text""#,
        r#"{"amount":[1,{"x":null}]}"#,
    ];
    let batch: Batch = values
        .iter()
        .enumerate()
        .map(|(i, v)| Event {
            key: None,
            value: v.as_bytes().to_vec(),
            timestamp: i as i64,
            headers: vec![],
        })
        .collect();
    for config in [
        r#"{"field":"amount","op":"gt","value":50}"#,
        r#"{"field":"amount","op":"lt","value":60}"#,
        r#"{"field":"amount","op":"eq","value":50}"#,
        r#"{"field":"amount","op":"ne","value":50}"#,
        r#"{"field":"amount","op":"eq","value":true}"#,
        r#"{"field":"amount","op":"eq","value":[1,{"x":null}]}"#,
        r#"{"field":"user","op":"gt","value":"a"}"#,
    ] {
        let outputs: Vec<Vec<String>> = [&rust, &python]
            .iter()
            .map(|module| {
                let mut op = OperatorInstance::new(
                    module,
                    "filter",
                    config,
                    Box::new(MemoryState::new()),
                    KeyGroupRange::all(DEFAULT_KEY_GROUPS),
                )
                .unwrap();
                let out = op.process(&mut batch.clone(), i64::MIN, 0).unwrap();
                assert!(out.failures.is_empty());
                out.events.iter().map(|e| wire::format_event(&e)).collect()
            })
            .collect();
        assert_eq!(outputs[0], outputs[1], "config {config}");
    }
    // A config it cannot read is refused at init, with the reason.
    let err = OperatorInstance::new(
        &python,
        "filter",
        r#"{"field":"amount","op":"between","value":1}"#,
        Box::new(MemoryState::new()),
        KeyGroupRange::all(DEFAULT_KEY_GROUPS),
    )
    .unwrap_err();
    assert!(err.to_string().contains("between"), "{err}");
}
