//! The Wasm host against real guests built from source (`cargo xtask
//! guests`): every example's exact output, and every hostile guest's clear
//! error with the host still serving.

use std::time::Duration;

use weir_fixtures::guest_bytes;
use weir_types::{Batch, DEFAULT_KEY_GROUPS, Event, KeyGroupRange, wire};
use weir_wasm::{
    HostConfig, InstanceError, MemoryState, ModuleError, OperatorInstance, OperatorModule,
    SandboxLimits, WasmHost,
};

fn host_with(limits: SandboxLimits) -> WasmHost {
    WasmHost::new(HostConfig {
        limits,
        ..HostConfig::default()
    })
    .unwrap()
}

fn host() -> WasmHost {
    host_with(SandboxLimits::default())
}

fn load(host: &WasmHost, guest: &str) -> OperatorModule {
    host.load(&guest_bytes(guest))
        .unwrap_or_else(|e| panic!("{guest}: {e}"))
}

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

/// A batch from `(key, value JSON)` pairs, timestamps 1, 2, 3, …
fn batch(events: &[(Option<&str>, &str)]) -> Batch {
    events
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Event {
            key: key.map(|k| k.as_bytes().to_vec()),
            value: value.as_bytes().to_vec(),
            timestamp: i as i64 + 1,
            headers: vec![],
        })
        .collect()
}

fn lines(batch: &Batch) -> Vec<String> {
    batch.iter().map(|e| wire::format_event(&e)).collect()
}

#[test]
fn split_words_splits_lowercases_and_trims() {
    let host = host();
    let mut op = instance(&load(&host, "split-words"), "");
    let mut input = batch(&[
        (None, r#""Hello, World!  hello\tTHE end.""#),
        (Some("k"), r#""  ...  ""#),
        (None, r#""Ünïcode—dash ’quote’""#),
    ]);
    let out = op.process(&mut input, i64::MIN, 0).unwrap();
    assert!(out.failures.is_empty());
    assert_eq!(
        lines(&out.events),
        vec![
            r#"{"key":"hello","value":"hello","timestamp":1}"#,
            r#"{"key":"world","value":"world","timestamp":1}"#,
            r#"{"key":"hello","value":"hello","timestamp":1}"#,
            r#"{"key":"the","value":"the","timestamp":1}"#,
            r#"{"key":"end","value":"end","timestamp":1}"#,
            r#"{"key":"ünïcode—dash","value":"ünïcode—dash","timestamp":3}"#,
            r#"{"key":"’quote’","value":"’quote’","timestamp":3}"#,
        ]
    );
    // The input batch is given back unchanged.
    assert_eq!(input.len(), 3);
    // A value that is not a JSON string fails that event alone.
    let out = op
        .process(&mut batch(&[(None, "42"), (None, r#""ok""#)]), i64::MIN, 0)
        .unwrap();
    assert_eq!(out.failures.len(), 1);
    assert_eq!(out.failures[0].index, 0);
    assert_eq!(
        lines(&out.events),
        vec![r#"{"key":"ok","value":"ok","timestamp":2}"#]
    );
}

#[test]
fn word_count_keeps_counts_across_calls() {
    let host = host();
    let mut op = instance(&load(&host, "word-count"), "");
    assert_eq!(op.value_states(), ["count"]);
    let out = op
        .process(
            &mut batch(&[
                (Some("a"), r#""a""#),
                (Some("b"), r#""b""#),
                (Some("a"), r#""a""#),
            ]),
            i64::MIN,
            0,
        )
        .unwrap();
    assert_eq!(
        lines(&out.events),
        vec![
            r#"{"key":"a","value":{"word":"a","count":1},"timestamp":1}"#,
            r#"{"key":"b","value":{"word":"b","count":1},"timestamp":2}"#,
            r#"{"key":"a","value":{"word":"a","count":2},"timestamp":3}"#,
        ]
    );
    let out = op
        .process(&mut batch(&[(Some("a"), r#""a""#)]), i64::MIN, 0)
        .unwrap();
    assert_eq!(
        lines(&out.events),
        vec![r#"{"key":"a","value":{"word":"a","count":3},"timestamp":1}"#]
    );
    assert_eq!(
        op.state_mut().value("count", b"a").unwrap(),
        Some(b"3".to_vec())
    );
    assert_eq!(
        op.state_mut().value("count", b"b").unwrap(),
        Some(b"1".to_vec())
    );
    // An unkeyed event is an error for that event only.
    let out = op
        .process(
            &mut batch(&[(None, r#""x""#), (Some("b"), r#""b""#)]),
            i64::MIN,
            0,
        )
        .unwrap();
    assert_eq!(out.failures.len(), 1);
    assert!(
        out.failures[0].message.contains("keyed"),
        "{}",
        out.failures[0].message
    );
    assert_eq!(out.events.len(), 1);
}

#[test]
fn filter_compares_as_configured() {
    let host = host();
    let module = load(&host, "filter");
    let events = [
        (None, r#"{"amount":60,"user":"a"}"#),
        (None, r#"{"amount":50}"#),
        (None, r#"{"amount":"70"}"#),
        (None, r#"{"user":"b"}"#),
        (None, r#"[1,2]"#),
        (None, r#"{"amount":50.0}"#),
    ];
    let run = |config: &str| -> Vec<usize> {
        let mut op = instance(&module, config);
        let out = op.process(&mut batch(&events), i64::MIN, 0).unwrap();
        assert!(out.failures.is_empty());
        // Timestamps are 1-based positions in `events`.
        out.events
            .timestamps
            .iter()
            .map(|t| *t as usize - 1)
            .collect()
    };
    assert_eq!(run(r#"{"field":"amount","op":"gt","value":50}"#), vec![0]);
    assert_eq!(
        run(r#"{"field":"amount","op":"lt","value":60}"#),
        vec![1, 5]
    );
    assert_eq!(
        run(r#"{"field":"amount","op":"eq","value":50}"#),
        vec![1, 5]
    );
    assert_eq!(
        run(r#"{"field":"amount","op":"ne","value":50}"#),
        vec![0, 2]
    );
    assert_eq!(run(r#"{"field":"user","op":"gt","value":"a"}"#), vec![3]);
    // Not JSON: that event fails.
    let mut op = instance(&module, r#"{"field":"amount","op":"gt","value":1}"#);
    let out = op
        .process(&mut batch(&[(None, "{oops")]), i64::MIN, 0)
        .unwrap();
    assert_eq!(out.failures.len(), 1);
    // A config it cannot read is refused at init with the reason.
    let err = OperatorInstance::new(
        &module,
        "bad-filter",
        r#"{"field":"amount","op":"between"}"#,
        Box::new(MemoryState::new()),
        KeyGroupRange::all(DEFAULT_KEY_GROUPS),
    )
    .unwrap_err();
    assert!(
        matches!(&err, InstanceError::Init { operator, message } if operator == "bad-filter" && message.contains("between")),
        "{err}"
    );
}

#[test]
fn map_uppercases_one_field_and_keeps_the_rest() {
    let host = host();
    let mut op = instance(&load(&host, "map"), r#"{"uppercase":"user"}"#);
    let mut input = batch(&[
        (Some("k"), r#"{"z":1.50,"user":"ann é","a":[1,{"b":null}]}"#),
        (None, r#"{"user":7}"#),
        (None, r#"{"name":"x"}"#),
        (None, r#""not an object""#),
    ]);
    let out = op.process(&mut input, i64::MIN, 0).unwrap();
    assert_eq!(
        lines(&out.events),
        vec![
            r#"{"key":"k","value":{"z":1.50,"user":"ANN É","a":[1,{"b":null}]},"timestamp":1}"#,
            r#"{"value":{"user":7},"timestamp":2}"#,
            r#"{"value":{"name":"x"},"timestamp":3}"#,
        ]
    );
    assert_eq!(out.failures.len(), 1);
    assert_eq!(out.failures[0].index, 3);
}

#[test]
fn headers_travel_with_events() {
    let host = host();
    let mut op = instance(&load(&host, "identity"), "");
    let event = |h: &[(&str, &str)], v: &str| Event {
        key: None,
        value: v.as_bytes().to_vec(),
        timestamp: 9,
        headers: h
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect(),
    };
    let events = [
        event(&[("a", "1")], "1"),
        event(&[], "2"),
        event(&[("b", "2"), ("c", "")], "3"),
    ];
    let mut input: Batch = events.iter().cloned().collect();
    let out = op.process(&mut input, i64::MIN, 0).unwrap();
    assert_eq!(out.events, input);
}

#[test]
fn endless_loop_is_stopped_and_the_host_goes_on() {
    let host = host_with(SandboxLimits {
        call_budget: Duration::from_millis(200),
        ..SandboxLimits::default()
    });
    let mut op = instance(&load(&host, "endless-loop"), "");
    let mut other = instance(&load(&host, "word-count"), "");
    let err = op
        .process(&mut batch(&[(None, "1"), (None, r#""loop""#)]), i64::MIN, 0)
        .unwrap_err();
    assert!(matches!(err, InstanceError::Budget { .. }), "{err}");
    assert!(err.to_string().contains("call budget"), "{err}");
    // Other instances are unaffected; this one is re-created on next use.
    assert_eq!(
        other
            .process(&mut batch(&[(Some("w"), r#""w""#)]), i64::MIN, 0)
            .unwrap()
            .events
            .len(),
        1
    );
    let out = op.process(&mut batch(&[(None, "2")]), i64::MIN, 0).unwrap();
    assert_eq!(out.events.len(), 1);
    assert_eq!(op.restarts(), 1);
}

#[test]
fn memory_grower_is_trapped_at_its_cap() {
    let limit = 32 << 20;
    let host = host_with(SandboxLimits {
        memory_bytes: limit,
        ..SandboxLimits::default()
    });
    let mut op = instance(&load(&host, "memory-grower"), "");
    let err = op
        .process(&mut batch(&[(None, r#""grow""#)]), i64::MIN, 0)
        .unwrap_err();
    match &err {
        InstanceError::MemoryLimit {
            requested,
            limit: l,
            ..
        } => {
            assert_eq!(*l, limit);
            assert!(*requested > limit);
        }
        other => panic!("expected a memory limit error, got {other}"),
    }
    assert!(err.to_string().contains("limit"), "{err}");
    let out = op.process(&mut batch(&[(None, "1")]), i64::MIN, 0).unwrap();
    assert_eq!(out.events.len(), 1);
}

#[test]
fn a_trap_changes_no_state_and_an_event_error_rolls_back_its_own() {
    let host = host();
    let mut op = instance(&load(&host, "poison-trap"), "");
    op.process(&mut batch(&[(Some("k"), "1")]), i64::MIN, 0)
        .unwrap();
    assert_eq!(
        op.state_mut().value("seen", b"k").unwrap(),
        Some(b"1".to_vec())
    );
    // The whole call traps: `seen` stays as it was.
    let err = op
        .process(
            &mut batch(&[(Some("k"), "2"), (Some("k"), r#""poison""#)]),
            i64::MIN,
            0,
        )
        .unwrap_err();
    assert!(
        matches!(&err, InstanceError::Trap { operator, .. } if operator == "op"),
        "{err}"
    );
    assert_eq!(
        op.state_mut().value("seen", b"k").unwrap(),
        Some(b"1".to_vec())
    );
    // A returned error drops that event's write only.
    let out = op
        .process(
            &mut batch(&[(Some("k"), r#""bad""#), (Some("k"), "3")]),
            i64::MIN,
            0,
        )
        .unwrap();
    assert_eq!(out.failures.len(), 1);
    assert_eq!(out.failures[0].message, "bad event");
    assert_eq!(out.events.len(), 1);
    assert_eq!(
        op.state_mut().value("seen", b"k").unwrap(),
        Some(b"2".to_vec())
    );
}

#[test]
fn oversized_state_is_refused() {
    let host = host();
    let mut op = instance(&load(&host, "big-state"), "");
    let err = op
        .process(&mut batch(&[(Some("k"), r#""value""#)]), i64::MIN, 0)
        .unwrap_err();
    assert!(
        matches!(&err, InstanceError::InvalidOutput { reason, .. } if reason.contains("over the limit of 1048576 bytes")),
        "{err}"
    );
    assert_eq!(op.state_mut().value("blob", b"k").unwrap(), None);
    // Through map state the host call itself refuses, and the SDK turns it
    // into an error of that event.
    let out = op
        .process(
            &mut batch(&[(Some("k"), r#""map""#), (Some("k"), "1")]),
            i64::MIN,
            0,
        )
        .unwrap();
    assert_eq!(out.failures.len(), 1);
    assert!(
        out.failures[0].message.contains("1048576"),
        "{}",
        out.failures[0].message
    );
    assert_eq!(out.events.len(), 1);
    // Below the limit it is stored.
    let mut small = instance(&load(&host, "big-state"), r#"{"size":1000}"#);
    small
        .process(&mut batch(&[(Some("k"), r#""value""#)]), i64::MIN, 0)
        .unwrap();
    assert_eq!(
        small
            .state_mut()
            .value("blob", b"k")
            .unwrap()
            .map(|v| v.len()),
        Some(1002)
    );
}

#[test]
fn a_call_handing_the_host_too_many_bytes_fails() {
    // 40 map writes of 100 kB each: 4 MB held by the host until the call
    // ends (with 1,000 writes of 1 MB the host grew by a gigabyte).
    let host = host_with(SandboxLimits {
        max_call_host_bytes: 1 << 20,
        ..SandboxLimits::default()
    });
    let module = load(&host, "big-state");
    let mut op = instance(&module, r#"{"size":100000}"#);
    let events: Vec<(Option<&str>, &str)> = vec![(Some("k"), r#""map""#); 40];
    let err = op.process(&mut batch(&events), i64::MIN, 0).unwrap_err();
    assert!(
        matches!(
            &err,
            InstanceError::HostBytes {
                limit: 1_048_576,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("1048576 bytes"), "{err}");
    assert!(op.state_mut().map("blobs", b"k").unwrap().is_empty());
    // Under the cap the same instance goes on and stores its writes.
    let out = op.process(&mut batch(&events[..5]), i64::MIN, 0).unwrap();
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    assert_eq!(op.state_mut().map("blobs", b"k").unwrap().len(), 1);
}

#[test]
fn malformed_output_is_rejected() {
    let host = host();
    let mut op = instance(&load(&host, "bad-output"), "");
    let err = op
        .process(&mut batch(&[(Some("k"), "1")]), i64::MIN, 0)
        .unwrap_err();
    assert!(
        matches!(&err, InstanceError::InvalidOutput { reason, .. } if reason.contains("value lengths")),
        "{err}"
    );
    let err = op
        .process(&mut batch(&[(Some("k"), "2")]), i64::MIN, 0)
        .unwrap_err();
    assert!(
        matches!(&err, InstanceError::InvalidOutput { reason, .. } if reason.contains("cell 9999")),
        "{err}"
    );
    // An event sent to a side output it never declared, and output
    // indexes that do not match the events.
    let err = op
        .process(&mut batch(&[(Some("k"), "3")]), i64::MIN, 0)
        .unwrap_err();
    assert!(
        matches!(&err, InstanceError::InvalidOutput { reason, .. } if reason.contains("output 2") && reason.contains("declared 1 side outputs")),
        "{err}"
    );
    let err = op
        .process(&mut batch(&[(Some("k"), "4")]), i64::MIN, 0)
        .unwrap_err();
    assert!(
        matches!(&err, InstanceError::InvalidOutput { reason, .. } if reason.contains("2 output indexes for 1 emitted events")),
        "{err}"
    );
}

#[test]
fn side_outputs_come_back_apart_from_the_main_output() {
    let host = host();
    let module = load(&host, "fraud-detector");
    assert_eq!(module.contract_version(), "0.2.0");
    assert_eq!(module.info().world, "weir:operator/operator@0.2.0");
    let mut op = instance(
        &module,
        r#"{"max_count":1,"min_amount":10,"window_ms":100}"#,
    );
    assert_eq!(op.outputs(), ["alerts".to_string()]);
    let mut input = batch(&[
        (Some("c"), r#"{"amount":50}"#),
        (Some("c"), r#"{"amount":5}"#),
        (Some("c"), r#"{"amount":60}"#),
    ]);
    let out = op.process(&mut input, i64::MIN, 0).unwrap();
    // Every transaction on the main output, the alert (two large ones
    // within the window) on the side output alone.
    assert_eq!(lines(&out.events).len(), 3);
    assert_eq!(out.side.len(), 1);
    assert_eq!(
        lines(&out.side[0]),
        vec![r#"{"key":"c","value":{"card":"c","count":2,"at":3},"timestamp":3}"#]
    );
}

#[test]
fn a_0_1_0_component_is_adapted_with_no_side_outputs() {
    let host = host();
    // Go's SDK speaks 0.1.0.
    let module = load(&host, "go-filter");
    assert_eq!(module.contract_version(), "0.1.0");
    assert_eq!(module.info().world, "weir:operator/operator@0.1.0");
    let mut op = instance(&module, r#"{"field":"n","op":"gt","value":1}"#);
    assert!(op.outputs().is_empty() && op.ttls().is_empty());
    let out = op
        .process_from(
            1,
            &mut batch(&[(None, r#"{"n":1}"#), (None, r#"{"n":2}"#)]),
            i64::MIN,
            0,
        )
        .unwrap();
    assert_eq!(
        lines(&out.events),
        vec![r#"{"value":{"n":2},"timestamp":2}"#]
    );
    assert!(out.side.is_empty());
}

#[test]
fn the_input_index_reaches_the_operator() {
    let host = host();
    let mut op = instance(&load(&host, "enrich"), "");
    // Input 1 is profiles, anything else transactions: each lands in its
    // own map state.
    op.process_from(
        1,
        &mut batch(&[(Some("u"), r#"{"tier":"gold"}"#)]),
        i64::MIN,
        0,
    )
    .unwrap();
    op.process_from(0, &mut batch(&[(Some("u"), r#"{"id":7}"#)]), i64::MIN, 0)
        .unwrap();
    let profiles = op.state_mut().map("profiles", b"u").unwrap();
    let pending = op.state_mut().map("pending", b"u").unwrap();
    assert_eq!(profiles.len(), 1, "{profiles:?}");
    assert!(
        String::from_utf8_lossy(profiles.values().next().unwrap()).contains("gold"),
        "{profiles:?}"
    );
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert!(String::from_utf8_lossy(pending.keys().next().unwrap()).contains("id"));
}

#[test]
fn keys_of_other_instances_are_refused() {
    let host = host();
    let module = load(&host, "word-count");
    let owned = KeyGroupRange::for_instance(0, 2, DEFAULT_KEY_GROUPS);
    let mut op =
        OperatorInstance::new(&module, "half", "", Box::new(MemoryState::new()), owned).unwrap();
    let foreign = (0..100)
        .map(|i| format!("w{i}"))
        .find(|k| !owned.owns(k.as_bytes()))
        .unwrap();
    let err = op
        .process(
            &mut batch(&[(Some(foreign.as_str()), r#""x""#)]),
            i64::MIN,
            0,
        )
        .unwrap_err();
    assert!(matches!(err, InstanceError::State { .. }), "{err}");
}

#[test]
fn loading_rejects_what_is_not_an_operator() {
    let host = host();
    let check = |bytes: &[u8], expect: fn(&ModuleError) -> bool| {
        let err = host.load(bytes).unwrap_err();
        assert!(expect(&err), "unexpected error: {err}");
        err.to_string()
    };
    check(b"", |e| matches!(e, ModuleError::Empty));
    let msg = check(b"hello, not wasm", |e| {
        matches!(e, ModuleError::NotWasm { .. })
    });
    assert!(msg.contains("68 65 6c 6c"), "{msg}");
    let core = b"\0asm\x01\0\0\0";
    let msg = check(core, |e| matches!(e, ModuleError::CoreModule));
    assert!(msg.contains("component"), "{msg}");
    let empty_component = b"\0asm\x0d\0\x01\0";
    let msg = check(empty_component, |e| {
        matches!(e, ModuleError::MissingExport { .. })
    });
    assert!(msg.contains("weir:operator/handler@0.1.0"), "{msg}");
    let real = guest_bytes("word-count");
    check(&real[..real.len() / 2], |e| {
        matches!(e, ModuleError::Invalid(_))
    });
    let msg = check(
        &guest_bytes("forbidden-import"),
        |e| matches!(e, ModuleError::ForbiddenImport { import } if import == "weir-test:evil/net@0.1.0"),
    );
    assert!(msg.contains("weir-test:evil/net"), "{msg}");
    let small = WasmHost::new(HostConfig {
        max_module_bytes: 1000,
        ..HostConfig::default()
    })
    .unwrap();
    let err = small.load(&real).unwrap_err();
    assert!(
        matches!(err, ModuleError::TooLarge { limit: 1000, .. }),
        "{err}"
    );
    // After all that the host still loads and runs a real operator.
    let mut op = instance(&load(&host, "word-count"), "");
    op.process(&mut batch(&[(Some("a"), r#""a""#)]), i64::MIN, 0)
        .unwrap();
}

/// A component exporting `weir:operator/handler@0.1.0` with the right
/// function names and the wrong types: `init` takes a `u32` and returns
/// one, `process` and `on-timer` take nothing.
const WRONG_EXPORT_TYPES: &str = r#"
(component
  (core module $m
    (func (export "init") (param i32) (result i32) i32.const 0)
    (func (export "nothing")))
  (core instance $i (instantiate $m))
  (func $init (param "config" u32) (result u32) (canon lift (core func $i "init")))
  (func $nothing (canon lift (core func $i "nothing")))
  (instance $handler
    (export "init" (func $init))
    (export "process" (func $nothing))
    (export "on-timer" (func $nothing)))
  (export "weir:operator/handler@0.1.0" (instance $handler)))
"#;

#[test]
fn loading_rejects_exports_of_the_wrong_types() {
    let host = host();
    let bytes = wat::parse_str(WRONG_EXPORT_TYPES).unwrap();
    let err = host.load(&bytes).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, ModuleError::ExportMismatch { .. }),
        "unexpected error: {msg}"
    );
    assert!(msg.contains("`init`"), "{msg}");
    assert!(msg.contains("weir:operator/handler@0.1.0"), "{msg}");
    assert!(msg.contains("expected `string` found `u32`"), "{msg}");
}

/// A handler-shaped component whose core module runs `body` as its start
/// function when instantiated.
fn starting_with(body: &str) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(component
          (core module $m
            (func $start {body})
            (start $start)
            (func (export "nothing")))
          (core instance $i (instantiate $m))
          (func $nothing (canon lift (core func $i "nothing")))
          (instance $handler
            (export "init" (func $nothing))
            (export "process" (func $nothing))
            (export "on-timer" (func $nothing)))
          (export "weir:operator/handler@0.1.0" (instance $handler)))"#
    ))
    .unwrap()
}

#[test]
fn loading_stops_start_up_code_that_traps_or_never_ends() {
    let host = host_with(SandboxLimits {
        init_budget: std::time::Duration::from_millis(200),
        ..SandboxLimits::default()
    });
    for (body, says) in [("unreachable", "unreachable"), ("(loop br 0)", "interrupt")] {
        let err = host.load(&starting_with(body)).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, ModuleError::Instantiate { .. }),
            "unexpected error: {msg}"
        );
        assert!(msg.contains(says), "{msg}");
    }
    // The host goes on loading real operators.
    load(&host, "word-count");
}

/// The inode of the cache's one artifact and its bytes. The cache writes
/// through a temporary file and a rename, so a write shows as a new inode;
/// a hit leaves the file alone.
fn cached_artifact(dir: &std::path::Path) -> (std::path::PathBuf, u64, Vec<u8>) {
    use std::os::unix::fs::MetadataExt;
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|f| f.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let path = files[0].clone();
    let inode = std::fs::metadata(&path).unwrap().ino();
    let bytes = std::fs::read(&path).unwrap();
    (path, inode, bytes)
}

/// Whether `artifact` starts with a 32-byte MAC that is not the plain
/// SHA-256 of the rest (which anyone could compute for a planted file).
fn keyed_mac_leads(artifact: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    artifact.len() > 32 && Sha256::digest(&artifact[32..]).as_slice() != &artifact[..32]
}

#[test]
fn precompile_cache_is_hit_and_a_corrupted_artifact_is_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let config = HostConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..HostConfig::default()
    };
    let bytes = guest_bytes("word-count");
    let first = WasmHost::new(config.clone()).unwrap().load(&bytes).unwrap();
    let (path, written, artifact) = cached_artifact(dir.path());
    assert!(
        path.to_string_lossy()
            .contains(&first.info().digest["sha256:".len()..])
    );
    assert!(keyed_mac_leads(&artifact));

    // A new host (a restarted server) loads from the cache: the file is
    // neither rewritten nor changed.
    let host = WasmHost::new(config).unwrap();
    let hit = host.load(&bytes).unwrap();
    let (_, inode, now) = cached_artifact(dir.path());
    assert_eq!(inode, written, "a hit must not write the artifact again");
    assert_eq!(now, artifact);
    let mut op = instance(&hit, "");
    op.process(&mut batch(&[(Some("a"), r#""a""#)]), i64::MIN, 0)
        .unwrap();

    // Flip a byte in place: the MAC catches it, the module is
    // recompiled and the artifact written afresh.
    let mut damaged = artifact.clone();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0xff;
    std::fs::write(&path, &damaged).unwrap();
    let again = host.load(&bytes).unwrap();
    assert_eq!(again.info().digest, first.info().digest);
    let (_, rewritten, repaired) = cached_artifact(dir.path());
    assert_ne!(rewritten, written, "the damaged artifact must be replaced");
    assert_ne!(repaired, damaged);
    assert!(keyed_mac_leads(&repaired));
    let mut op = instance(&again, "");
    op.process(&mut batch(&[(Some("a"), r#""a""#)]), i64::MIN, 0)
        .unwrap();
}

#[test]
fn only_modules_that_pass_every_check_are_cached() {
    let dir = tempfile::tempdir().unwrap();
    let host = WasmHost::new(HostConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..HostConfig::default()
    })
    .unwrap();
    // These compile, then fail a later check (imports, exports).
    host.load(&guest_bytes("forbidden-import")).unwrap_err();
    host.load(&wat::parse_str(WRONG_EXPORT_TYPES).unwrap())
        .unwrap_err();
    host.load(b"\0asm\x0d\0\x01\0").unwrap_err();
    let cached = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(cached, 0, "a refused module left a compiled artifact");
    host.load(&guest_bytes("word-count")).unwrap();
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

/// A component with one function of `locals` locals and a body of about
/// `body_bytes` bytes: cheap to send, costly to compile.
fn compile_bomb(locals: usize, body_bytes: usize) -> Vec<u8> {
    let mut wat = String::from("(component (core module (func");
    wat.push_str(&format!(" (local {})", "i64 ".repeat(locals)));
    for i in 0..body_bytes / 6 {
        let (a, b) = (i % locals, (i * 7 + 3) % locals);
        wat.push_str(&format!(" local.get {a} local.set {b}"));
    }
    wat.push_str(")))");
    wat::parse_str(&wat).unwrap()
}

#[test]
fn a_compile_bomb_is_refused_before_compiling() {
    // 2,000 locals in a 1 MB function took 48 s and 0.9 GB to compile
    // before it was refused; the shape check refuses it from a parse.
    let dir = tempfile::tempdir().unwrap();
    let host = WasmHost::new(HostConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..HostConfig::default()
    })
    .unwrap();
    let bomb = compile_bomb(2_000, 1 << 20);
    assert!(bomb.len() > 1_000_000, "{}", bomb.len());
    let err = host.load(&bomb).unwrap_err();
    assert!(
        matches!(&err, ModuleError::TooComplex { what } if what.contains("locals")),
        "{err}"
    );
    // Few locals but a 2 MB body: refused by its size.
    let err = host.load(&compile_bomb(4, 2 << 20)).unwrap_err();
    assert!(
        matches!(&err, ModuleError::TooComplex { what } if what.contains("body")),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn map_and_list_state_and_timers_go_through_the_host() {
    let host = host();
    let mut op = instance(&load(&host, "state-kinds"), "");
    let values = |b: &Batch| -> Vec<String> {
        b.iter()
            .map(|e| String::from_utf8(e.value.to_vec()).unwrap())
            .collect()
    };
    // Writes are visible to later events of the same call.
    let out = op
        .process(
            &mut batch(&[
                (Some("k"), r#"{"list":"append","item":1}"#),
                (Some("k"), r#"{"list":"append","item":"two"}"#),
                (Some("k"), r#"{"map":"put","k":"b","v":2}"#),
                (Some("k"), r#"{"map":"put","k":"a","v":1}"#),
                (Some("j"), r#"{"map":"put","k":"z","v":9}"#),
                (Some("k"), r#"{"map":"remove","k":"b"}"#),
            ]),
            i64::MIN,
            0,
        )
        .unwrap();
    assert_eq!(
        values(&out.events),
        vec![
            "[1]",
            r#"[1,"two"]"#,
            r#"[["b",2]]"#,
            r#"[["a",1],["b",2]]"#,
            r#"[["z",9]]"#,
            r#"[["a",1]]"#,
        ]
    );
    // A call that traps leaves map and list state as they were.
    let err = op
        .process(
            &mut batch(&[
                (Some("k"), r#"{"list":"clear"}"#),
                (Some("k"), r#"{"map":"clear"}"#),
                (Some("k"), r#"{"trap":true}"#),
            ]),
            i64::MIN,
            0,
        )
        .unwrap_err();
    assert!(err.to_string().contains("trap requested"), "{err}");
    let out = op
        .process(
            &mut batch(&[
                (Some("k"), r#"{"list":"replace","items":[3,4]}"#),
                (Some("k"), r#"{"map":"put","k":"c","v":3}"#),
            ]),
            i64::MIN,
            0,
        )
        .unwrap();
    assert_eq!(values(&out.events), vec!["[3,4]", r#"[["a",1],["c",3]]"#]);
    // Timers: registered, one deleted, the other fires through on-timer.
    op.process(
        &mut batch(&[
            (Some("k"), r#"{"timer":"set","at":100}"#),
            (Some("k"), r#"{"timer":"set","at":200}"#),
            (Some("k"), r#"{"timer":"delete","at":100}"#),
        ]),
        i64::MIN,
        0,
    )
    .unwrap();
    let due = op
        .state_mut()
        .take_due_timers(weir_wasm::TimeDomain::EventTime, 1000)
        .unwrap();
    assert_eq!(due, vec![(200, b"k".to_vec())]);
    let fired: Vec<weir_wasm::FiredTimer> = due
        .into_iter()
        .map(|(time, key)| weir_wasm::FiredTimer {
            domain: weir_wasm::TimeDomain::EventTime,
            time,
            key,
        })
        .collect();
    let out = op.on_timer(&fired, 1000, 0).unwrap();
    assert_eq!(
        lines(&out.events),
        vec![r#"{"key":"k","value":{"fired":200},"timestamp":200}"#]
    );
}

#[test]
fn the_guest_clock_is_the_call_processing_time() {
    let host = host();
    let mut op = instance(&load(&host, "state-kinds"), "");
    let mut input = batch(&[(Some("k"), r#"{"clock":true}"#)]);
    let out = op.process(&mut input, i64::MIN, 1_800_000_000_123).unwrap();
    assert_eq!(
        lines(&out.events),
        vec![r#"{"key":"k","value":1800000000123,"timestamp":1}"#]
    );
}

/// One keyed event `value` at time `ts`.
fn at(key: &str, value: &str, ts: i64) -> Batch {
    [Event {
        key: Some(key.as_bytes().to_vec()),
        value: value.as_bytes().to_vec(),
        timestamp: ts,
        headers: vec![],
    }]
    .into_iter()
    .collect()
}

/// What the `ttl-state` guest saw, from its one output event.
fn seen(out: &weir_wasm::CallOutcome) -> String {
    let line = lines(&out.events).remove(0);
    let start = line.find(r#""value":"#).unwrap() + 8;
    let end = line.rfind(r#","timestamp""#).unwrap();
    line[start..end].to_string()
}

#[test]
fn processing_time_ttl_hides_expired_entries_at_once_and_removes_them() {
    let host = host();
    let module = load(&host, "ttl-state");
    let mut op = instance(&module, r#"{"domain":"processing","ttl_ms":100}"#);
    assert_eq!(op.ttls().len(), 3);
    let out = op
        .process(&mut at("k", r#""a""#, 1), i64::MIN, 1000)
        .unwrap();
    assert_eq!(seen(&out), r#"{"last":null,"seen":0,"log":0}"#);
    // 100 ms later: still there, all three kinds.
    let out = op
        .process(&mut at("k", r#""b""#, 2), i64::MIN, 1100)
        .unwrap();
    assert_eq!(seen(&out), r#"{"last":"a","seen":1,"log":1}"#);
    // 101 ms after `b` was written: gone, though still in the store
    // until this read removes it.
    let out = op
        .process(&mut at("k", r#""c""#, 3), i64::MIN, 1201)
        .unwrap();
    assert_eq!(seen(&out), r#"{"last":null,"seen":0,"log":0}"#);
    // The expired map entries and list items were removed; `c` is stored
    // (stamped, which the operator never sees).
    let map = op.state_mut().map("seen", b"k").unwrap();
    assert_eq!(map.len(), 1, "{map:?}");
    let list = op.state_mut().list("log", b"k").unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert!(list[0].ends_with(br#""c""#) && list[0].len() > 3);
}

#[test]
fn event_time_ttl_expires_by_the_watermark_not_the_clock() {
    let host = host();
    let module = load(&host, "ttl-state");
    let mut op = instance(&module, r#"{"domain":"event","ttl_ms":50}"#);
    // Written at event time 1000 (no watermark yet).
    op.process(&mut at("k", r#""a""#, 1000), i64::MIN, 0)
        .unwrap();
    // Hours of processing time later, watermark 1050: still live.
    let out = op
        .process(&mut at("k", r#""peek""#, 1060), 1050, 10_000_000)
        .unwrap();
    assert_eq!(seen(&out), r#"{"last":"a","seen":1,"log":1}"#);
    // Watermark 1051: expired.
    let out = op
        .process(&mut at("k", r#""peek""#, 1070), 1051, 0)
        .unwrap();
    assert_eq!(seen(&out), r#"{"last":null,"seen":0,"log":0}"#);
    assert_eq!(op.state_mut().value("last", b"k").unwrap(), None);
}

#[test]
fn refresh_on_read_keeps_an_entry_that_is_read_alive() {
    let host = host();
    let module = load(&host, "ttl-state");
    for (refresh, expected) in [
        (false, r#"{"last":null,"seen":0,"log":0}"#),
        (true, r#"{"last":"a","seen":1,"log":1}"#),
    ] {
        let config =
            format!(r#"{{"domain":"processing","ttl_ms":100,"refresh_on_read":{refresh}}}"#);
        let mut op = instance(&module, &config);
        op.process(&mut at("k", r#""a""#, 1), i64::MIN, 1000)
            .unwrap();
        let out = op
            .process(&mut at("k", r#""peek""#, 2), i64::MIN, 1080)
            .unwrap();
        assert_eq!(seen(&out), r#"{"last":"a","seen":1,"log":1}"#);
        // 150 ms after the write, 70 after the read.
        let out = op
            .process(&mut at("k", r#""peek""#, 3), i64::MIN, 1150)
            .unwrap();
        assert_eq!(seen(&out), expected, "refresh_on_read: {refresh}");
    }
}

/// The function names of every core module's `name` section in the
/// component `bytes`.
fn function_names(bytes: &[u8]) -> Vec<String> {
    use wasmparser::{KnownCustom, Name, Parser, Payload};
    let mut names = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(Payload::CustomSection(section)) = payload else {
            continue;
        };
        let KnownCustom::Name(reader) = section.as_known() else {
            continue;
        };
        for name in reader.flatten() {
            if let Name::Function(map) = name {
                names.extend(map.into_iter().flatten().map(|n| n.name.to_string()));
            }
        }
    }
    names
}

/// The Rust example guests keep their `name` section (`strip =
/// "debuginfo"`), so a trap's backtrace in a dead letter names functions:
/// the handler's export and the SDK's (LTO inlines an example's own small
/// methods into them).
#[test]
fn rust_example_guests_keep_their_function_names() {
    for guest in ["enrich", "fraud-detector"] {
        let names = function_names(&guest_bytes(guest));
        let demangled: Vec<String> = names
            .iter()
            .map(|n| format!("{:#}", rustc_demangle::demangle(n)))
            .collect();
        for function in [
            "weir:operator/handler@0.2.0#process",
            "weir_sdk::context::Context::register_timer",
        ] {
            assert!(
                demangled.iter().any(|n| n == function),
                "{guest}: no {function} among {demangled:?}"
            );
        }
    }
}
