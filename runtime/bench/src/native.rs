//! The benchmark's operators as plain Rust over batches: the baseline every
//! Wasm figure is divided by. The generic ones (`filter_gt`, `map`,
//! `W2Generic`, `W3Generic`, …) do the work the way the example guests did
//! before they were written for speed (a `serde_json::Value` or a list of
//! owned field names per event) and produce exactly their guest's output;
//! the typed ones (`w1_typed`, `W2Typed`, `W3Typed`) are the fastest plain
//! Rust a user would write for the fixed workloads: typed serde structs
//! with borrowed strings, one pass, one thread.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

use anyhow::Result;
use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use weir_types::Batch;

/// Every event, copied into a new batch (what `identity` returns).
pub fn identity(input: &Batch) -> Batch {
    let mut out = Batch::with_capacity(input.len(), input.values.len());
    for e in input.iter() {
        out.push_ref(&e);
    }
    out
}

/// The fields of a JSON object in order, values as raw text.
struct Fields<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(8);
                while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
                    fields.push(entry);
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// Uppercases string field `field` of each JSON object value (`map`).
pub fn map(input: &Batch, field: &str) -> Result<Batch> {
    let mut out = Batch::with_capacity(input.len(), input.values.len());
    let mut value = Vec::with_capacity(128);
    for e in input.iter() {
        let Fields(fields) = serde_json::from_slice(e.value)?;
        value.clear();
        value.push(b'{');
        for (i, (name, raw)) in fields.iter().enumerate() {
            if i > 0 {
                value.push(b',');
            }
            serde_json::to_writer(&mut value, name)?;
            value.push(b':');
            if name == field
                && let Ok(text) = serde_json::from_str::<String>(raw.get())
            {
                serde_json::to_writer(&mut value, &text.to_uppercase())?;
                continue;
            }
            value.extend_from_slice(raw.get().as_bytes());
        }
        value.push(b'}');
        out.push(e.key, &value, e.timestamp);
    }
    Ok(out)
}

/// A count per key in a hash map, emitting `{"word": key, "count": n}`
/// after each event (`word-count`).
#[derive(Default)]
pub struct KeyedCount {
    counts: HashMap<Vec<u8>, u64>,
}

#[derive(serde::Serialize)]
struct Count<'a> {
    word: &'a str,
    count: u64,
}

impl KeyedCount {
    pub fn process(&mut self, input: &Batch) -> Result<Batch> {
        let mut out = Batch::with_capacity(input.len(), input.len() * 32);
        let mut value = Vec::with_capacity(64);
        for e in input.iter() {
            let key = e.key.unwrap_or_default();
            let count = match self.counts.get_mut(key) {
                Some(c) => {
                    *c += 1;
                    *c
                }
                None => {
                    self.counts.insert(key.to_vec(), 1);
                    1
                }
            };
            value.clear();
            serde_json::to_writer(
                &mut value,
                &Count {
                    word: std::str::from_utf8(key)?,
                    count,
                },
            )?;
            out.push(e.key, &value, e.timestamp);
        }
        Ok(out)
    }
}

/// The events whose JSON object value has a number `field` above `limit`
/// (`filter` with `op: gt`).
pub fn filter_gt(input: &Batch, field: &str, limit: f64) -> Result<Batch> {
    let mut out = Batch::with_capacity(input.len(), input.values.len());
    for e in input.iter() {
        let value: serde_json::Value = serde_json::from_slice(e.value)?;
        if value
            .get(field)
            .and_then(serde_json::Value::as_f64)
            .is_some_and(|x| x > limit)
        {
            out.push_ref(&e);
        }
    }
    Ok(out)
}

/// One event per word of each JSON string value, keyed by the word
/// (`split-words`).
pub fn split_words(input: &Batch) -> Result<Batch> {
    let mut out = Batch::with_capacity(input.len() * 10, input.values.len());
    let mut value = Vec::with_capacity(32);
    for e in input.iter() {
        let text: String = serde_json::from_slice(e.value)?;
        for piece in text.split_whitespace() {
            let lower = piece.to_lowercase();
            let word = lower.trim_matches(|c: char| c.is_ascii_punctuation());
            if !word.is_empty() {
                value.clear();
                serde_json::to_writer(&mut value, word)?;
                out.push(Some(word.as_bytes()), &value, e.timestamp);
            }
        }
    }
    Ok(out)
}

/// The fixed workloads' event as a user would type it in plain Rust:
/// every field, strings borrowed from the input unless they hold escapes.
#[derive(Deserialize, serde::Serialize)]
struct Order<'a> {
    #[serde(borrow)]
    user: Cow<'a, str>,
    amount: i64,
    ts: i64,
    #[serde(borrow)]
    region: Cow<'a, str>,
    #[serde(borrow)]
    note: Cow<'a, str>,
}

/// The two fields W2 and W3 read; serde skips the others.
#[derive(Deserialize)]
struct UserAmount<'a> {
    #[serde(borrow)]
    user: Cow<'a, str>,
    amount: f64,
}

/// W1 the fastest way plain Rust does it: one typed parse per event,
/// `amount > 50` kept, `user` uppercased, the order serialised straight
/// into `out` (cleared first). Returns the events kept.
pub fn w1_typed(input: &Batch, out: &mut Batch) -> Result<u64> {
    out.clear();
    let mut value = Vec::with_capacity(128);
    for e in input.iter() {
        let mut order: Order = serde_json::from_slice(e.value)?;
        if order.amount > 50 {
            order.user = Cow::Owned(order.user.to_uppercase());
            value.clear();
            serde_json::to_writer(&mut value, &order)?;
            out.push(e.key, &value, e.timestamp);
        }
    }
    Ok(out.len() as u64)
}

/// W2's output record.
#[derive(serde::Serialize)]
struct Update<'a> {
    key: &'a str,
    count: u64,
    sum: f64,
}

/// W2 the fastest way plain Rust does it: a typed parse of the two fields
/// it reads, `(count, sum)` per user in a hash map updated in place, the
/// update serialised into a reused buffer.
#[derive(Default)]
pub struct W2Typed {
    state: HashMap<String, (u64, f64)>,
    value: Vec<u8>,
}

impl W2Typed {
    /// Handles a batch into `out` (cleared first); returns the events
    /// emitted.
    pub fn process(&mut self, input: &Batch, out: &mut Batch) -> Result<u64> {
        out.clear();
        for e in input.iter() {
            let UserAmount { user, amount } = serde_json::from_slice(e.value)?;
            let agg = match self.state.get_mut(user.as_ref()) {
                Some(agg) => agg,
                None => self.state.entry(user.to_string()).or_default(),
            };
            agg.0 += 1;
            agg.1 += amount;
            self.value.clear();
            serde_json::to_writer(
                &mut self.value,
                &Update {
                    key: &user,
                    count: agg.0,
                    sum: agg.1,
                },
            )?;
            out.push(Some(user.as_bytes()), &self.value, e.timestamp);
        }
        Ok(out.len() as u64)
    }
}

/// W2 the generic way the example guests work: a `serde_json::Value` per
/// event, a key allocated per event.
#[derive(Default)]
pub struct W2Generic {
    state: HashMap<Vec<u8>, (u64, f64)>,
}

impl W2Generic {
    pub fn process(&mut self, input: &Batch) -> Result<u64> {
        let mut out = Batch::with_capacity(input.len(), input.len() * 48);
        let mut value = Vec::with_capacity(64);
        for e in input.iter() {
            let v: serde_json::Value = serde_json::from_slice(e.value)?;
            let user = v["user"].as_str().unwrap_or_default();
            let amount = v["amount"].as_f64().unwrap_or_default();
            let agg = self.state.entry(user.as_bytes().to_vec()).or_default();
            agg.0 += 1;
            agg.1 += amount;
            value.clear();
            serde_json::to_writer(
                &mut value,
                &Update {
                    key: user,
                    count: agg.0,
                    sum: agg.1,
                },
            )?;
            out.push(Some(user.as_bytes()), &value, e.timestamp);
        }
        Ok(out.len() as u64)
    }
}

/// W3's output record.
#[derive(serde::Serialize)]
struct WindowOut<'a> {
    key: &'a str,
    start: i64,
    end: i64,
    sum: f64,
    count: u64,
}

/// W3's window size and the watermark's lag behind the largest event time.
pub const WINDOW_MS: i64 = 1000;
pub const WATERMARK_LAG_MS: i64 = 200;

/// W3 the fastest way plain Rust does it: open windows by start, each a
/// hash map of `(sum, count)` per user updated in place; after each batch
/// the windows the watermark has passed are emitted and dropped whole.
#[derive(Default)]
pub struct W3Typed {
    open: BTreeMap<i64, HashMap<String, (f64, u64)>>,
    max_ts: i64,
    value: Vec<u8>,
}

impl W3Typed {
    /// Adds a batch's events; returns the windows fired after it (their
    /// results pushed to `out`, cleared first).
    pub fn process(&mut self, input: &Batch, out: &mut Batch) -> Result<u64> {
        for e in input.iter() {
            let UserAmount { user, amount } = serde_json::from_slice(e.value)?;
            let start = e.timestamp - e.timestamp.rem_euclid(WINDOW_MS);
            let window = self.open.entry(start).or_default();
            let acc = match window.get_mut(user.as_ref()) {
                Some(acc) => acc,
                None => window.entry(user.to_string()).or_default(),
            };
            acc.0 += amount;
            acc.1 += 1;
            self.max_ts = self.max_ts.max(e.timestamp);
        }
        self.fire(self.max_ts - WATERMARK_LAG_MS, out)
    }

    /// Emits every window whose `end − 1` the watermark has reached.
    pub fn fire(&mut self, watermark: i64, out: &mut Batch) -> Result<u64> {
        out.clear();
        while let Some(entry) = self.open.first_entry() {
            let start = *entry.key();
            let end = start + WINDOW_MS;
            if end - 1 > watermark {
                break;
            }
            for (key, (sum, count)) in entry.remove() {
                self.value.clear();
                serde_json::to_writer(
                    &mut self.value,
                    &WindowOut {
                        key: &key,
                        start,
                        end,
                        sum,
                        count,
                    },
                )?;
                out.push(Some(key.as_bytes()), &self.value, end - 1);
            }
        }
        Ok(out.len() as u64)
    }
}

/// W3 the generic way: a `serde_json::Value` per event, open windows in a
/// hash map by `(user, start)` with the user allocated per event, and an
/// index of them by end.
#[derive(Default)]
pub struct W3Generic {
    open: HashMap<(String, i64), (f64, u64)>,
    by_end: BTreeMap<i64, Vec<String>>,
    max_ts: i64,
}

impl W3Generic {
    /// Adds a batch's events; returns the windows fired after it.
    pub fn process(&mut self, input: &Batch) -> Result<u64> {
        for e in input.iter() {
            let v: serde_json::Value = serde_json::from_slice(e.value)?;
            self.add(
                v["user"].as_str().unwrap_or_default(),
                e.timestamp,
                v["amount"].as_f64().unwrap_or_default(),
            );
        }
        self.fire(self.max_ts - WATERMARK_LAG_MS)
    }

    fn add(&mut self, key: &str, ts: i64, amount: f64) {
        let start = ts - ts.rem_euclid(WINDOW_MS);
        let entry = self
            .open
            .entry((key.to_string(), start))
            .or_insert_with(|| {
                self.by_end
                    .entry(start + WINDOW_MS)
                    .or_default()
                    .push(key.to_string());
                (0.0, 0)
            });
        entry.0 += amount;
        entry.1 += 1;
        self.max_ts = self.max_ts.max(ts);
    }

    /// Emits windows whose `end − 1` the watermark has reached.
    pub fn fire(&mut self, watermark: i64) -> Result<u64> {
        let mut out = Batch::default();
        let mut value = Vec::new();
        while let Some((&end, _)) = self.by_end.first_key_value() {
            if end - 1 > watermark {
                break;
            }
            let keys = self.by_end.remove(&end).unwrap_or_default();
            for key in keys {
                if let Some((sum, count)) = self.open.remove(&(key.clone(), end - WINDOW_MS)) {
                    value.clear();
                    serde_json::to_writer(
                        &mut value,
                        &WindowOut {
                            key: &key,
                            start: end - WINDOW_MS,
                            end,
                            sum,
                            count,
                        },
                    )?;
                    out.push(Some(key.as_bytes()), &value, end - 1);
                }
            }
        }
        Ok(out.len() as u64)
    }
}
