//! The on-disk records of a stream segment.
//!
//! Format 2 (written today): a segment file opens with the 8 bytes
//! [`SEGMENT_MAGIC`] (`WEIRLOG` and the version byte), then records:
//!
//! ```text
//! u32 payload length | u32 CRC-32 of payload | payload
//! payload = u8 kind | body
//! kind 0, an event:  i64 timestamp | i32 key length (-1: none) | key
//!                  | u32 value length | value
//!                  | u16 header count | (u16 name length | name | u32 length | value)*
//! kind 1, a batch mark, before the events of every append:
//!                    u32 events | i64 wall clock ms | u8 has producer
//!                  | (u8 id length | id | u64 sequence | u64 batch hash)?
//! ```
//!
//! A mark takes no offset. It makes an append all-or-nothing at recovery
//! (a mark whose events are not all there is a torn append, cut whole) and
//! carries the producer table of idempotent produce: each stored batch of
//! a producer, durable in the same write as its events.
//!
//! Format 1 (no magic, the payload is the event body without a kind byte,
//! no marks) is still read; a stream with a format-1 active segment starts
//! a format-2 one at its next append.
//!
//! All integers little-endian. [`check`] refuses, before anything is
//! written, an event whose fields do not fit these widths or whose record
//! would be over [`MAX_RECORD_BYTES`]: a record that is written can always
//! be read back.

use weir_types::EventRef;

pub(crate) const FRAME_BYTES: usize = 8;
/// First bytes of a format-2 segment file (format 1 has none: its files
/// open with a record length, which is never this large).
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"WEIRLOG\x02";
/// Longest producer id of idempotent produce, bytes.
pub const MAX_PRODUCER_ID_BYTES: usize = 128;

/// The format of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    V1,
    V2,
}

impl Format {
    /// Bytes before the first record.
    pub(crate) fn data_start(self) -> u64 {
        match self {
            Format::V1 => 0,
            Format::V2 => SEGMENT_MAGIC.len() as u64,
        }
    }

    /// The format of a file that opens with `head`.
    pub(crate) fn of(head: &[u8]) -> Format {
        if head.starts_with(&SEGMENT_MAGIC) {
            Format::V2
        } else {
            Format::V1
        }
    }
}

const KIND_EVENT: u8 = 0;
const KIND_MARK: u8 = 1;

/// The producer of an idempotent batch, as a mark stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerBatch {
    /// 1 to [`MAX_PRODUCER_ID_BYTES`] bytes.
    pub producer: String,
    pub sequence: u64,
    /// A hash of the batch as the client sent it: a retry with the same
    /// sequence and another hash is a different batch.
    pub hash: u64,
}

/// The hash an idempotent batch is recognised by: FNV-1a (64 bits) of the
/// batch as the client sent it (its bytes, before any default is filled
/// in), so a retry of the same request hashes the same.
pub fn batch_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The mark written before the events of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mark {
    pub count: u32,
    pub at_ms: i64,
    pub producer: Option<ProducerBatch>,
}
/// Largest record payload (a reader also treats a larger length as damage).
pub const MAX_RECORD_BYTES: usize = 64 << 20;
/// Most headers of one event (the count is stored in 16 bits).
pub const MAX_HEADERS: usize = u16::MAX as usize;
/// Longest header name, bytes (stored with a 16-bit length).
pub const MAX_HEADER_NAME_BYTES: usize = u16::MAX as usize;

/// Which bound of the record format an event is over.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordLimit {
    #[error("it has {count} headers; an event holds at most {MAX_HEADERS}")]
    Headers { count: usize },
    #[error(
        "header {index} has a name of {bytes} bytes; a header name is at most {MAX_HEADER_NAME_BYTES} bytes"
    )]
    HeaderName { index: usize, bytes: usize },
    #[error(
        "it takes {bytes} bytes stored; an event (key, value and headers) is at most {MAX_RECORD_BYTES} bytes"
    )]
    Record { bytes: usize },
}

/// Whether `event` fits the record format; checked before an append so a
/// stored record is always readable. The size test covers the key, value
/// and header value lengths too (each is under [`MAX_RECORD_BYTES`]).
pub fn check(event: &EventRef<'_>) -> Result<(), RecordLimit> {
    if event.headers.len() > MAX_HEADERS {
        return Err(RecordLimit::Headers {
            count: event.headers.len(),
        });
    }
    let mut bytes = 1 + 8 + 4 + event.key.map_or(0, <[u8]>::len) + 4 + event.value.len() + 2;
    for (index, (_, name, value)) in event.headers.iter().enumerate() {
        if name.len() > MAX_HEADER_NAME_BYTES {
            return Err(RecordLimit::HeaderName {
                index,
                bytes: name.len(),
            });
        }
        bytes = bytes.saturating_add(2 + name.len() + 4 + value.len());
    }
    if bytes > MAX_RECORD_BYTES {
        return Err(RecordLimit::Record { bytes });
    }
    Ok(())
}

/// Appends the format-2 record of `event` to `out`; `event` passed
/// [`check`].
pub(crate) fn encode(event: &EventRef<'_>, out: &mut Vec<u8>) {
    let start = begin(out);
    out.push(KIND_EVENT);
    event_body(event, out);
    seal(out, start);
}

/// Appends the format-1 record of `event`: how streams were written before
/// format 2 (the tests build old logs with it).
#[cfg(test)]
pub(crate) fn encode_v1(event: &EventRef<'_>, out: &mut Vec<u8>) {
    let start = begin(out);
    event_body(event, out);
    seal(out, start);
}

/// Appends the record of a batch mark to `out`.
pub(crate) fn encode_mark(mark: &Mark, out: &mut Vec<u8>) {
    let start = begin(out);
    out.push(KIND_MARK);
    out.extend_from_slice(&mark.count.to_le_bytes());
    out.extend_from_slice(&mark.at_ms.to_le_bytes());
    match &mark.producer {
        None => out.push(0),
        Some(p) => {
            out.push(1);
            // The id was checked against MAX_PRODUCER_ID_BYTES.
            out.push(p.producer.len() as u8);
            out.extend_from_slice(p.producer.as_bytes());
            out.extend_from_slice(&p.sequence.to_le_bytes());
            out.extend_from_slice(&p.hash.to_le_bytes());
        }
    }
    seal(out, start);
}

/// Reserves a frame; returns where the record starts.
fn begin(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_BYTES]);
    start
}

/// Fills in the frame of the record that starts at `start`.
fn seal(out: &mut [u8], start: usize) {
    let payload_len = (out.len() - start - FRAME_BYTES) as u32;
    let crc = crc32fast::hash(&out[start + FRAME_BYTES..]);
    out[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn event_body(event: &EventRef<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(&event.timestamp.to_le_bytes());
    match event.key {
        Some(k) => {
            out.extend_from_slice(&(k.len() as i32).to_le_bytes());
            out.extend_from_slice(k);
        }
        None => out.extend_from_slice(&(-1i32).to_le_bytes()),
    }
    out.extend_from_slice(&(event.value.len() as u32).to_le_bytes());
    out.extend_from_slice(event.value);
    out.extend_from_slice(&(event.headers.len() as u16).to_le_bytes());
    for (_, name, value) in event.headers {
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    }
}

/// A decoded record, borrowing from the buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Decoded<'a> {
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub headers: Vec<(String, Vec<u8>)>,
}

struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.buf.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// Why a record at some position cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bad {
    /// The buffer ends inside the record (a torn write, or just the end).
    Truncated,
    /// The checksum does not match, or the payload does not parse.
    Corrupt,
}

/// What a record holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Entry<'a> {
    Event(Decoded<'a>),
    Mark(Mark),
}

/// The payload of the record at the start of `buf`, and the record's
/// total size.
pub(crate) fn frame(buf: &[u8]) -> Result<(&[u8], usize), Bad> {
    if buf.len() < FRAME_BYTES {
        return Err(Bad::Truncated);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if len > MAX_RECORD_BYTES {
        return Err(Bad::Corrupt);
    }
    let Some(payload) = buf.get(FRAME_BYTES..FRAME_BYTES + len) else {
        return Err(Bad::Truncated);
    };
    if crc32fast::hash(payload) != crc {
        return Err(Bad::Corrupt);
    }
    Ok((payload, FRAME_BYTES + len))
}

/// The record at the start of `buf` in a segment of `format`, and its
/// total size.
pub(crate) fn decode(buf: &[u8], format: Format) -> Result<(Entry<'_>, usize), Bad> {
    let (payload, size) = frame(buf)?;
    parse(payload, format)
        .map(|entry| (entry, size))
        .ok_or(Bad::Corrupt)
}

/// What a checked payload holds.
pub(crate) fn parse(payload: &[u8], format: Format) -> Option<Entry<'_>> {
    let mut c = Cursor {
        buf: payload,
        at: 0,
    };
    let entry = match format {
        Format::V1 => Entry::Event(parse_event(&mut c)?),
        Format::V2 => match c.u8()? {
            KIND_EVENT => Entry::Event(parse_event(&mut c)?),
            KIND_MARK => Entry::Mark(parse_mark(&mut c)?),
            _ => return None,
        },
    };
    (c.at == payload.len()).then_some(entry)
}

fn parse_event<'a>(c: &mut Cursor<'a>) -> Option<Decoded<'a>> {
    let timestamp = c.i64()?;
    let key = match c.i32()? {
        l if l < 0 => None,
        l => Some(c.take(l as usize)?),
    };
    let value_len = c.u32()? as usize;
    let value = c.take(value_len)?;
    let count = c.u16()?;
    let mut headers = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let n = c.u16()? as usize;
        let name = String::from_utf8(c.take(n)?.to_vec()).ok()?;
        let l = c.u32()? as usize;
        headers.push((name, c.take(l)?.to_vec()));
    }
    Some(Decoded {
        timestamp,
        key,
        value,
        headers,
    })
}

fn parse_mark(c: &mut Cursor<'_>) -> Option<Mark> {
    let count = c.u32()?;
    let at_ms = c.i64()?;
    let producer = match c.u8()? {
        0 => None,
        1 => {
            let n = c.u8()? as usize;
            let producer = String::from_utf8(c.take(n)?.to_vec()).ok()?;
            Some(ProducerBatch {
                producer,
                sequence: c.u64()?,
                hash: c.u64()?,
            })
        }
        _ => return None,
    };
    Some(Mark {
        count,
        at_ms,
        producer,
    })
}

/// The event of a format-2 record at the start of `buf` (tests).
#[cfg(test)]
fn decode_event(buf: &[u8]) -> Result<(Decoded<'_>, usize), Bad> {
    match decode(buf, Format::V2)? {
        (Entry::Event(d), size) => Ok((d, size)),
        (Entry::Mark(_), _) => Err(Bad::Corrupt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_types::Batch;

    #[test]
    fn round_trips_and_detects_damage() {
        let mut batch = Batch::default();
        batch.push(Some(b"k"), b"{\"a\":1}", 42);
        batch.push(None, b"", -5);
        batch.headers.push((1, "h".into(), vec![1, 2]));
        let mut buf = Vec::new();
        for e in batch.iter() {
            encode(&e, &mut buf);
        }
        let (first, n) = decode_event(&buf).unwrap();
        assert_eq!(first.key, Some(&b"k"[..]));
        assert_eq!(first.value, b"{\"a\":1}");
        assert_eq!(first.timestamp, 42);
        let (second, m) = decode_event(&buf[n..]).unwrap();
        assert_eq!(second.key, None);
        assert_eq!(second.headers, vec![("h".to_string(), vec![1, 2])]);
        assert_eq!(n + m, buf.len());
        assert_eq!(decode_event(&buf[..n - 1]).unwrap_err(), Bad::Truncated);
        let mut bad = buf.clone();
        bad[12] ^= 1;
        assert_eq!(decode_event(&bad).unwrap_err(), Bad::Corrupt);
    }

    fn event_with(headers: &[(u32, String, Vec<u8>)], value: &[u8]) -> Result<(), RecordLimit> {
        check(&EventRef {
            key: Some(b"k"),
            value,
            timestamp: 1,
            headers,
        })
    }

    #[test]
    fn check_refuses_what_the_format_cannot_hold() {
        // A 65,536-byte header name used to be stored with its length
        // wrapped to 0, so the record could not be read back.
        let long_name = vec![(0, "h".repeat(MAX_HEADER_NAME_BYTES + 1), vec![])];
        assert_eq!(
            event_with(&long_name, b"v"),
            Err(RecordLimit::HeaderName {
                index: 0,
                bytes: 65_536
            })
        );
        let many = vec![(0, "h".to_string(), vec![]); MAX_HEADERS + 1];
        assert_eq!(
            event_with(&many, b"v"),
            Err(RecordLimit::Headers { count: 65_536 })
        );
        let huge = vec![0u8; MAX_RECORD_BYTES];
        assert!(matches!(
            event_with(&[], &huge),
            Err(RecordLimit::Record { .. })
        ));
        let msg = event_with(&long_name, b"v").unwrap_err().to_string();
        assert!(msg.contains("65535"), "{msg}");
        // At the bounds, the record encodes and decodes back.
        let at_bound = vec![(7, "h".repeat(MAX_HEADER_NAME_BYTES), vec![1])];
        let event = EventRef {
            key: None,
            value: b"v",
            timestamp: 3,
            headers: &at_bound,
        };
        assert_eq!(check(&event), Ok(()));
        let mut buf = Vec::new();
        encode(&event, &mut buf);
        let (back, _) = decode_event(&buf).unwrap();
        assert_eq!(back.headers[0].0.len(), MAX_HEADER_NAME_BYTES);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
            prop::collection::vec(any::<u8>(), 0..max)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn a_record_decodes_to_what_was_encoded(
                key in prop::option::of(bytes(32)),
                value in bytes(64),
                timestamp in any::<i64>(),
                headers in prop::collection::vec((".{0,12}", bytes(16)), 0..5),
            ) {
                let headers: Vec<(u32, String, Vec<u8>)> =
                    headers.into_iter().map(|(n, v)| (0, n, v)).collect();
                let event = EventRef { key: key.as_deref(), value: &value, timestamp, headers: &headers };
                prop_assert_eq!(check(&event), Ok(()));
                let mut buf = Vec::new();
                encode(&event, &mut buf);
                let (back, size) = decode_event(&buf).unwrap();
                prop_assert_eq!(size, buf.len());
                prop_assert_eq!(back.key, key.as_deref());
                prop_assert_eq!(back.value, &value[..]);
                prop_assert_eq!(back.timestamp, timestamp);
                let want: Vec<(String, Vec<u8>)> =
                    headers.into_iter().map(|(_, n, v)| (n, v)).collect();
                prop_assert_eq!(back.headers, want);
            }

            #[test]
            fn decoding_any_bytes_never_panics(junk in bytes(256)) {
                let _ = decode(&junk, Format::V2);
                let _ = decode(&junk, Format::V1);
            }

            #[test]
            fn a_damaged_record_is_never_read_as_another(
                value in bytes(64),
                at in any::<prop::sample::Index>(),
                flip in 1u8..,
            ) {
                let event = EventRef { key: None, value: &value, timestamp: 7, headers: &[] };
                let mut buf = Vec::new();
                encode(&event, &mut buf);
                let i = at.index(buf.len());
                buf[i] ^= flip;
                // A flipped bit in the frame or payload is caught (CRC-32
                // catches every error within 32 bits of the payload).
                prop_assert!(decode_event(&buf).is_err());
            }
        }
    }
}
