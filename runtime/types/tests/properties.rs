//! Property tests of the parsers a user or a file can feed: the batch wire
//! format (pending sink output in checkpoints) and the JSON event format of
//! the API. Each: no input panics, and decoding an encoding gives back what
//! was encoded.

use proptest::prelude::*;
use serde_json::value::RawValue;
use weir_types::{Batch, Event, wire};

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn event() -> impl Strategy<Value = Event> {
    (
        prop::option::of(bytes(24)),
        bytes(48),
        any::<i64>(),
        prop::collection::btree_map("[a-zA-Z0-9_.-]{1,12}", bytes(16), 0..4),
    )
        .prop_map(|(key, value, timestamp, headers)| Event {
            key,
            value,
            timestamp,
            headers: headers.into_iter().collect(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_batch_decodes_to_what_was_encoded(events in prop::collection::vec(event(), 0..12)) {
        let batch: Batch = events.into_iter().collect();
        let mut buf = Vec::new();
        batch.encode(&mut buf);
        let back = Batch::decode(&buf).expect("an encoded batch decodes");
        prop_assert_eq!(back.iter().map(|e| e.to_event()).collect::<Vec<_>>(),
                        batch.iter().map(|e| e.to_event()).collect::<Vec<_>>());
    }

    #[test]
    fn decoding_any_bytes_never_panics(junk in bytes(512)) {
        let _ = Batch::decode(&junk);
    }

    #[test]
    fn a_damaged_encoding_is_refused_or_still_a_valid_batch(
        events in prop::collection::vec(event(), 1..6),
        at in any::<prop::sample::Index>(),
        flip in 1u8..,
    ) {
        let batch: Batch = events.into_iter().collect();
        let mut buf = Vec::new();
        batch.encode(&mut buf);
        let i = at.index(buf.len());
        buf[i] ^= flip;
        if let Some(b) = Batch::decode(&buf) {
            prop_assert!(b.validate().is_ok());
        }
    }

    #[test]
    fn an_event_parses_back_from_its_json(e in event()) {
        // A value that is JSON is carried as JSON, compacted: keep to
        // values that are either not JSON or already compact.
        if let Ok(raw) = serde_json::from_slice::<&RawValue>(&e.value) {
            prop_assume!(raw.get().as_bytes() == wire::compact_json(raw.get()).as_slice()
                && raw.get().as_bytes() == e.value.as_slice());
        }
        let batch: Batch = std::iter::once(e.clone()).collect();
        let text = wire::format_event(&batch.iter().next().unwrap());
        let mut back = wire::parse_event(&text, 0).unwrap();
        back.headers.sort();
        let mut want = e;
        want.headers.sort();
        prop_assert_eq!(back, want);
    }

    #[test]
    fn parsing_any_text_as_events_never_panics(text in ".{0,200}") {
        let _ = wire::parse_event(&text, 0);
        let _ = wire::parse_lines(&text, 0);
    }

    #[test]
    fn parsing_event_shaped_json_never_panics(
        key in prop::option::of(".{0,8}"),
        value in ".{0,16}",
        b64 in "[A-Za-z0-9+/=]{0,12}",
        ts in any::<i64>(),
    ) {
        let doc = serde_json::json!({
            "key": key, "value_b64": b64, "timestamp": ts,
            "headers": { "h": value }, "headers_b64": { "g": b64 },
        });
        let _ = wire::parse_event(&doc.to_string(), 0);
    }
}
