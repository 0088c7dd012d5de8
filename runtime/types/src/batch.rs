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
