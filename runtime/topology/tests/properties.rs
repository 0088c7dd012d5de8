//! Property tests of topology documents: any text parses or is refused
//! without a panic; a document written as JSON or YAML reads back equal;
//! validating any document (cycles, unknown names, duplicates) neither
//! panics nor answers more than the problem cap.

use proptest::prelude::*;
use serde_json::{Value, json};
use weir_topology::{MAX_PROBLEMS, parse_topology, validate_topology};

/// Names from a small alphabet, so that generated inputs often name other
/// nodes (cycles, duplicates) and sometimes nothing.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-e]",
        1 => "[a-z][a-z0-9_.-]{0,10}",
    ]
}

fn inputs() -> impl Strategy<Value = Value> {
    prop_oneof![
        name().prop_map(Value::from),
        prop::collection::vec(name(), 0..4).prop_map(Value::from),
    ]
}

fn config() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(Value::from),
        ".{0,8}".prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 16, 4, |inner| {
        prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    })
}

fn operator() -> impl Strategy<Value = Value> {
    (
        name(),
        inputs(),
        prop::option::of(1u16..600),
        prop::option::of(config()),
        prop::option::of(prop_oneof![
            Just(json!("key")),
            "[a-z]{0,4}".prop_map(|f| json!({ "field": f }))
        ]),
        prop::option::of(prop_oneof![Just("fail"), Just("skip"), Just("dead-letter")]),
    )
        .prop_map(|(name, input, parallelism, config, key_by, on_error)| {
            let mut op = json!({ "name": name, "module": "m", "input": input });
            if let Some(p) = parallelism {
                op["parallelism"] = json!(p);
            }
            if let Some(c) = config {
                op["config"] = c;
            }
            if let Some(k) = key_by {
                op["key_by"] = k;
            }
            if let Some(e) = on_error {
                op["on_error"] = json!(e);
            }
            op
        })
}

fn document() -> impl Strategy<Value = Value> {
    (
        name(),
        prop::collection::vec((name(), name()), 0..3),
        prop::collection::vec(operator(), 0..8),
        prop::collection::vec((name(), name(), inputs()), 0..3),
        prop::option::of(0u16..40_000),
        prop::option::of(0u64..100),
    )
        .prop_map(|(name, sources, operators, sinks, key_groups, interval)| {
            let mut doc = json!({
                "name": name,
                "sources": sources.into_iter().map(|(n, s)| json!({ "name": n, "stream": s })).collect::<Vec<_>>(),
                "operators": operators,
                "sinks": sinks.into_iter().map(|(n, s, i)| json!({ "name": n, "stream": s, "input": i })).collect::<Vec<_>>(),
            });
            if let Some(g) = key_groups {
                doc["key_groups"] = json!(g);
            }
            if let Some(ms) = interval {
                doc["checkpoint"] = json!({ "interval_ms": ms });
            }
            doc
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_document_reads_back_from_json_and_yaml(doc in document()) {
        let parsed = parse_topology(&doc.to_string()).unwrap();
        let json = serde_json::to_string(&parsed).unwrap();
        prop_assert_eq!(&parse_topology(&json).unwrap(), &parsed);
        let yaml = serde_yaml_ng::to_string(&parsed).unwrap();
        prop_assert_eq!(&parse_topology(&yaml).unwrap(), &parsed);
    }

    #[test]
    fn validating_any_document_never_panics(doc in document()) {
        let parsed = parse_topology(&doc.to_string()).unwrap();
        let problems = validate_topology(&parsed, &());
        prop_assert!(problems.len() <= MAX_PROBLEMS + 1);
    }

    #[test]
    fn parsing_any_text_never_panics(text in ".{0,300}") {
        let _ = parse_topology(&text);
    }

    #[test]
    fn parsing_bracket_soup_never_panics(text in "[\\[\\]{}:, \\n\\-a\"'#|>]{0,300}") {
        let _ = parse_topology(&text);
        let _ = parse_topology(&format!("{{{text}"));
    }
}
