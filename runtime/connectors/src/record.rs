//! The on-disk record of one event:
//!
//! ```text
//! u32 payload length | u32 CRC-32 of payload | payload
//! payload = i64 timestamp | i32 key length (-1: none) | key
//!         | u32 value length | value
//!         | u16 header count | (u16 name length | name | u32 length | value)*
//! ```
//!
//! All integers little-endian. [`check`] refuses, before anything is
//! written, an event whose fields do not fit these widths or whose record
//! would be over [`MAX_RECORD_BYTES`]: a record that is written can always
//! be read back.

use weir_types::EventRef;

pub(crate) const FRAME_BYTES: usize = 8;
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
    let mut bytes = 8 + 4 + event.key.map_or(0, <[u8]>::len) + 4 + event.value.len() + 2;
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

/// Appends the record of `event` to `out`; `event` passed [`check`].
pub(crate) fn encode(event: &EventRef<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_BYTES]);
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
    let payload_len = (out.len() - start - FRAME_BYTES) as u32;
    let crc = crc32fast::hash(&out[start + FRAME_BYTES..]);
    out[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
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

/// The record at the start of `buf`, and its total size.
pub(crate) fn decode(buf: &[u8]) -> Result<(Decoded<'_>, usize), Bad> {
    if buf.len() < FRAME_BYTES {
        return Err(Bad::Truncated);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let crc = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let Some(payload) = buf.get(FRAME_BYTES..FRAME_BYTES + len) else {
        return Err(Bad::Truncated);
    };
    if crc32fast::hash(payload) != crc {
        return Err(Bad::Corrupt);
    }
    let mut c = Cursor {
        buf: payload,
        at: 0,
    };
    fn parse<'a>(c: &mut Cursor<'a>) -> Option<Decoded<'a>> {
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
    match parse(&mut c) {
        Some(d) if c.at == payload.len() => Ok((d, FRAME_BYTES + len)),
        _ => Err(Bad::Corrupt),
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
        let (first, n) = decode(&buf).unwrap();
        assert_eq!(first.key, Some(&b"k"[..]));
        assert_eq!(first.value, b"{\"a\":1}");
        assert_eq!(first.timestamp, 42);
        let (second, m) = decode(&buf[n..]).unwrap();
        assert_eq!(second.key, None);
        assert_eq!(second.headers, vec![("h".to_string(), vec![1, 2])]);
        assert_eq!(n + m, buf.len());
        assert_eq!(decode(&buf[..n - 1]).unwrap_err(), Bad::Truncated);
        let mut bad = buf.clone();
        bad[12] ^= 1;
        assert_eq!(decode(&bad).unwrap_err(), Bad::Corrupt);
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
        let (back, _) = decode(&buf).unwrap();
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
                let (back, size) = decode(&buf).unwrap();
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
                let _ = decode(&junk);
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
                prop_assert!(decode(&buf).is_err());
            }
        }
    }
}
