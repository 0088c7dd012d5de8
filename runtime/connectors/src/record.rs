//! The on-disk record of one event:
//!
//! ```text
//! u32 payload length | u32 CRC-32 of payload | payload
//! payload = i64 timestamp | i32 key length (-1: none) | key
//!         | u32 value length | value
//!         | u16 header count | (u16 name length | name | u32 length | value)*
//! ```
//!
//! All integers little-endian.

use weir_types::EventRef;

pub(crate) const FRAME_BYTES: usize = 8;

/// Appends the record of `event` to `out`.
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
}
