//! [`Batch`]: events column by column, laid out exactly as the
//! `event-batch` record of `wit/types.wit` so it crosses into Wasm as a
//! handful of buffers.

/// Events column by column. Event `i` has `timestamps[i]`, a key of
/// `key_lens[i]` bytes from `keys` (none when negative), a value of
/// `value_lens[i]` bytes from `values`; keys and values are packed in event
/// order. Headers are sparse: `(event index, name, value)` in event order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub timestamps: Vec<i64>,
    pub key_lens: Vec<i32>,
    pub keys: Vec<u8>,
    pub value_lens: Vec<u32>,
    pub values: Vec<u8>,
    pub headers: Vec<(u32, String, Vec<u8>)>,
}

/// One owned event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    /// Event time, milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// One event of a [`Batch`], borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef<'a> {
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub timestamp: i64,
    pub headers: &'a [(u32, String, Vec<u8>)],
}

impl EventRef<'_> {
    /// An owned copy.
    pub fn to_event(&self) -> Event {
        Event {
            key: self.key.map(<[u8]>::to_vec),
            value: self.value.to_vec(),
            timestamp: self.timestamp,
            headers: self
                .headers
                .iter()
                .map(|(_, n, v)| (n.clone(), v.clone()))
                .collect(),
        }
    }
}

/// Why a batch's columns do not describe a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    #[error(
        "batch columns differ in length: {events} timestamps, {keys} key lengths, {values} value lengths"
    )]
    Columns {
        events: usize,
        keys: usize,
        values: usize,
    },
    #[error("batch {what} lengths add up to {expected} bytes but {actual} are present")]
    Bytes {
        what: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("batch header {index} names event {event}, out of order or past the {events} events")]
    Header {
        index: usize,
        event: u32,
        events: usize,
    },
}

impl Batch {
    /// An empty batch with room for `events` events of `bytes` value bytes.
    pub fn with_capacity(events: usize, bytes: usize) -> Self {
        Batch {
            timestamps: Vec::with_capacity(events),
            key_lens: Vec::with_capacity(events),
            keys: Vec::new(),
            value_lens: Vec::with_capacity(events),
            values: Vec::with_capacity(bytes),
            headers: Vec::new(),
        }
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.timestamps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.timestamps.is_empty()
    }

    /// Appends one event.
    pub fn push(&mut self, key: Option<&[u8]>, value: &[u8], timestamp: i64) {
        match key {
            Some(k) => {
                self.key_lens.push(k.len() as i32);
                self.keys.extend_from_slice(k);
            }
            None => self.key_lens.push(-1),
        }
        self.value_lens.push(value.len() as u32);
        self.values.extend_from_slice(value);
        self.timestamps.push(timestamp);
    }

    /// Appends one owned event, headers included.
    pub fn push_event(&mut self, event: &Event) {
        let index = self.len() as u32;
        self.headers.extend(
            event
                .headers
                .iter()
                .map(|(n, v)| (index, n.clone(), v.clone())),
        );
        self.push(event.key.as_deref(), &event.value, event.timestamp);
    }

    /// Appends one borrowed event, headers included.
    pub fn push_ref(&mut self, event: &EventRef<'_>) {
        let index = self.len() as u32;
        self.headers.extend(
            event
                .headers
                .iter()
                .map(|(_, n, v)| (index, n.clone(), v.clone())),
        );
        self.push(event.key, event.value, event.timestamp);
    }

    /// Checks that the columns describe a batch, as [`Batch::iter`] assumes.
    /// Batches that come out of Wasm are checked before use.
    pub fn validate(&self) -> Result<(), BatchError> {
        let events = self.timestamps.len();
        if self.key_lens.len() != events || self.value_lens.len() != events {
            return Err(BatchError::Columns {
                events,
                keys: self.key_lens.len(),
                values: self.value_lens.len(),
            });
        }
        let key_bytes: usize = self.key_lens.iter().map(|&l| l.max(0) as usize).sum();
        if key_bytes != self.keys.len() {
            return Err(BatchError::Bytes {
                what: "key",
                expected: key_bytes,
                actual: self.keys.len(),
            });
        }
        let value_bytes: usize = self.value_lens.iter().map(|&l| l as usize).sum();
        if value_bytes != self.values.len() {
            return Err(BatchError::Bytes {
                what: "value",
                expected: value_bytes,
                actual: self.values.len(),
            });
        }
        let mut last = 0;
        for (index, (event, _, _)) in self.headers.iter().enumerate() {
            if *event < last || *event as usize >= events {
                return Err(BatchError::Header {
                    index,
                    event: *event,
                    events,
                });
            }
            last = *event;
        }
        Ok(())
    }

    /// The events in order. The batch must be valid ([`Batch::validate`]);
    /// batches built with `push` always are.
    pub fn iter(&self) -> impl Iterator<Item = EventRef<'_>> {
        let mut key_at = 0usize;
        let mut value_at = 0usize;
        let mut header_at = 0usize;
        (0..self.len()).map(move |i| {
            let key = match self.key_lens[i] {
                l if l < 0 => None,
                l => {
                    let k = &self.keys[key_at..key_at + l as usize];
                    key_at += l as usize;
                    Some(k)
                }
            };
            let l = self.value_lens[i] as usize;
            let value = &self.values[value_at..value_at + l];
            value_at += l;
            let first = header_at;
            while header_at < self.headers.len() && self.headers[header_at].0 as usize == i {
                header_at += 1;
            }
            EventRef {
                key,
                value,
                timestamp: self.timestamps[i],
                headers: &self.headers[first..header_at],
            }
        })
    }

    /// Appends every event of `other`, headers included.
    pub fn extend_from(&mut self, other: &Batch) {
        let base = self.len() as u32;
        self.timestamps.extend_from_slice(&other.timestamps);
        self.key_lens.extend_from_slice(&other.key_lens);
        self.keys.extend_from_slice(&other.keys);
        self.value_lens.extend_from_slice(&other.value_lens);
        self.values.extend_from_slice(&other.values);
        self.headers.extend(
            other
                .headers
                .iter()
                .map(|(i, n, v)| (base + i, n.clone(), v.clone())),
        );
    }

    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.timestamps.clear();
        self.key_lens.clear();
        self.keys.clear();
        self.value_lens.clear();
        self.values.clear();
        self.headers.clear();
    }
}

/// Reads a little-endian integer of `N` bytes at `*at`, moving past it.
fn take<const N: usize>(bytes: &[u8], at: &mut usize) -> Option<[u8; N]> {
    let end = at.checked_add(N)?;
    let out = bytes.get(*at..end)?.try_into().ok()?;
    *at = end;
    Some(out)
}

fn take_slice<'a>(bytes: &'a [u8], at: &mut usize, len: usize) -> Option<&'a [u8]> {
    let end = at.checked_add(len)?;
    let out = bytes.get(*at..end)?;
    *at = end;
    Some(out)
}

impl Batch {
    /// Appends the batch to `out` in a compact binary form (column counts
    /// and the columns, little-endian), read back by [`Batch::decode`].
    /// Used to keep pending sink output inside a checkpoint.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.keys.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.values.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.headers.len() as u32).to_le_bytes());
        for t in &self.timestamps {
            out.extend_from_slice(&t.to_le_bytes());
        }
        for l in &self.key_lens {
            out.extend_from_slice(&l.to_le_bytes());
        }
        for l in &self.value_lens {
            out.extend_from_slice(&l.to_le_bytes());
        }
        out.extend_from_slice(&self.keys);
        out.extend_from_slice(&self.values);
        for (event, name, value) in &self.headers {
            out.extend_from_slice(&event.to_le_bytes());
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(value);
        }
    }

    /// Reads a batch written by [`Batch::encode`]; `None` when the bytes are
    /// not one (truncated, inconsistent or followed by extra bytes).
    pub fn decode(bytes: &[u8]) -> Option<Batch> {
        let at = &mut 0usize;
        let u32_at = |at: &mut usize| take::<4>(bytes, at).map(u32::from_le_bytes);
        let events = u32_at(at)? as usize;
        let key_bytes = u32_at(at)? as usize;
        let value_bytes = u32_at(at)? as usize;
        let headers = u32_at(at)? as usize;
        // Every event needs 16 bytes: refuse counts the input cannot hold.
        if events > bytes.len() / 16 + 1 || headers > bytes.len() / 12 + 1 {
            return None;
        }
        let mut batch = Batch::with_capacity(events, value_bytes);
        for _ in 0..events {
            batch
                .timestamps
                .push(i64::from_le_bytes(take::<8>(bytes, at)?));
        }
        for _ in 0..events {
            batch
                .key_lens
                .push(i32::from_le_bytes(take::<4>(bytes, at)?));
        }
        for _ in 0..events {
            batch.value_lens.push(u32_at(at)?);
        }
        batch.keys = take_slice(bytes, at, key_bytes)?.to_vec();
        batch.values = take_slice(bytes, at, value_bytes)?.to_vec();
        for _ in 0..headers {
            let event = u32_at(at)?;
            let len = u32_at(at)? as usize;
            let name = String::from_utf8(take_slice(bytes, at, len)?.to_vec()).ok()?;
            let len = u32_at(at)? as usize;
            let value = take_slice(bytes, at, len)?.to_vec();
            batch.headers.push((event, name, value));
        }
        (*at == bytes.len() && batch.validate().is_ok()).then_some(batch)
    }
}

impl FromIterator<Event> for Batch {
    fn from_iter<I: IntoIterator<Item = Event>>(events: I) -> Self {
        let mut batch = Batch::default();
        for event in events {
            batch.push_event(&event);
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: Option<&str>, value: &str, ts: i64, headers: &[(&str, &str)]) -> Event {
        Event {
            key: key.map(|k| k.as_bytes().to_vec()),
            value: value.as_bytes().to_vec(),
            timestamp: ts,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn round_trips_events() {
        let events = vec![
            event(Some("a"), "1", 10, &[]),
            event(None, "\"two\"", 20, &[("h", "x"), ("g", "y")]),
            event(Some(""), "", 30, &[]),
            event(Some("dd"), "{}", 40, &[("z", "")]),
        ];
        let batch: Batch = events.iter().cloned().collect();
        batch.validate().unwrap();
        let back: Vec<Event> = batch.iter().map(|e| e.to_event()).collect();
        assert_eq!(back, events);
    }

    #[test]
    fn encodes_and_decodes() {
        let batch: Batch = vec![
            event(Some("a"), "1", -10, &[("h", "x")]),
            event(None, "\"two\"", 20, &[]),
            event(Some("dd"), "{}", 40, &[("z", ""), ("y", "v")]),
        ]
        .into_iter()
        .collect();
        let mut bytes = Vec::new();
        batch.encode(&mut bytes);
        assert_eq!(Batch::decode(&bytes), Some(batch.clone()));
        for cut in 0..bytes.len() {
            assert_eq!(Batch::decode(&bytes[..cut]), None, "cut at {cut}");
        }
        let mut twice = batch.clone();
        twice.extend_from(&batch);
        let events: Vec<Event> = twice.iter().map(|e| e.to_event()).collect();
        assert_eq!(events.len(), 6);
        assert_eq!(events[3], batch.iter().next().unwrap().to_event());
        assert_eq!(twice.validate(), Ok(()));
        let mut empty = Vec::new();
        Batch::default().encode(&mut empty);
        assert_eq!(Batch::decode(&empty), Some(Batch::default()));
    }

    #[test]
    fn validate_rejects_inconsistent_columns() {
        let mut batch: Batch = vec![event(Some("a"), "1", 1, &[])].into_iter().collect();
        batch.values.push(b'x');
        assert!(matches!(
            batch.validate(),
            Err(BatchError::Bytes { what: "value", .. })
        ));
        let mut batch: Batch = vec![event(Some("a"), "1", 1, &[])].into_iter().collect();
        batch.timestamps.push(2);
        assert!(matches!(batch.validate(), Err(BatchError::Columns { .. })));
        let mut batch: Batch = vec![event(Some("a"), "1", 1, &[])].into_iter().collect();
        batch.headers.push((5, "h".into(), vec![]));
        assert!(matches!(batch.validate(), Err(BatchError::Header { .. })));
    }
}
