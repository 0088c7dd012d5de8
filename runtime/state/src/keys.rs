//! Row keys. Every row of an operator's state starts with its scope
//! (topology, operator) and key group, so one key group is one contiguous
//! range of rows:
//!
//! ```text
//! state row = scope | key group (u16 BE) | kind (u8) | name (u16 len + bytes) | key (u32 len + bytes) [| map key]
//! timer row = scope | key group (u16 BE) | domain (u8) | time (i64, sign-flipped BE) | key
//! scope     = topology (u16 len + bytes) | operator (u16 len + bytes)
//! ```
//!
//! Lengths come first so that no name or key is a prefix of another's row.

/// What a state row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    Value = 0,
    MapEntry = 1,
    List = 2,
}

pub(crate) fn scope(topology: &str, operator: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + topology.len() + operator.len());
    out.extend_from_slice(&(topology.len() as u16).to_be_bytes());
    out.extend_from_slice(topology.as_bytes());
    out.extend_from_slice(&(operator.len() as u16).to_be_bytes());
    out.extend_from_slice(operator.as_bytes());
    out
}

/// The row of `kind`/`name`/`key` in key group `group`; a map entry's row
/// appends its map key to this.
pub(crate) fn state_row(scope: &[u8], group: u16, kind: Kind, name: &str, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(scope.len() + 9 + name.len() + key.len());
    out.extend_from_slice(scope);
    out.extend_from_slice(&group.to_be_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&(name.len() as u16).to_be_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// A state row of a scope read back: its kind, name, key and, for a map
/// entry, its map key (empty otherwise); `None` when it does not parse.
pub(crate) fn parse_state_row(scope_len: usize, row: &[u8]) -> Option<(Kind, &str, &[u8], &[u8])> {
    let rest = row.get(scope_len + 2..)?;
    let kind = match *rest.first()? {
        0 => Kind::Value,
        1 => Kind::MapEntry,
        2 => Kind::List,
        _ => return None,
    };
    let name_len = usize::from(u16::from_be_bytes(rest.get(1..3)?.try_into().ok()?));
    let name = std::str::from_utf8(rest.get(3..3 + name_len)?).ok()?;
    let rest = &rest[3 + name_len..];
    let key_len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    let key = rest.get(4..4usize.checked_add(key_len)?)?;
    let map_key = &rest[4 + key_len..];
    (kind == Kind::MapEntry || map_key.is_empty()).then_some((kind, name, key, map_key))
}

/// The rows of one key group of a scope: `[start, end)`.
pub(crate) fn group_range(scope: &[u8], group: u16) -> (Vec<u8>, Vec<u8>) {
    let mut start = scope.to_vec();
    start.extend_from_slice(&group.to_be_bytes());
    let mut end = scope.to_vec();
    end.extend_from_slice(&(u32::from(group) + 1).to_be_bytes()[2..]);
    if group == u16::MAX {
        end = scope.to_vec();
        end.push(0xff);
        end.push(0xff);
        end.push(0xff);
    }
    (start, end)
}

/// The exclusive end of the rows that start with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}

/// A timer's row: ordered by key group, domain, then time.
pub(crate) fn timer_row(scope: &[u8], group: u16, domain: u8, time: i64, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(scope.len() + 11 + key.len());
    out.extend_from_slice(scope);
    out.extend_from_slice(&group.to_be_bytes());
    out.push(domain);
    out.extend_from_slice(&((time as u64) ^ (1 << 63)).to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// Reads a timer row back: `(domain, time, key)`.
pub(crate) fn parse_timer_row(scope_len: usize, row: &[u8]) -> Option<(u8, i64, Vec<u8>)> {
    let rest = row.get(scope_len + 2..)?;
    let domain = *rest.first()?;
    let time = u64::from_be_bytes(rest.get(1..9)?.try_into().ok()?) ^ (1 << 63);
    Some((domain, time as i64, rest.get(9..)?.to_vec()))
}

/// Encodes a list as length-prefixed items.
pub(crate) fn encode_list(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.iter().map(|i| i.len() + 4).sum());
    for item in items {
        out.extend_from_slice(&(item.len() as u32).to_be_bytes());
        out.extend_from_slice(item);
    }
    out
}

pub(crate) fn decode_list(mut bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut items = Vec::new();
    while !bytes.is_empty() {
        let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        items.push(bytes.get(4..4 + len)?.to_vec());
        bytes = &bytes[4 + len..];
    }
    Some(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_rows_parse_back_and_garbage_does_not() {
        let s = scope("topo", "op");
        let row = state_row(&s, 9, Kind::Value, "count", b"k\x00y");
        assert_eq!(
            parse_state_row(s.len(), &row),
            Some((Kind::Value, "count", &b"k\x00y"[..], &b""[..]))
        );
        let mut entry = state_row(&s, 9, Kind::MapEntry, "m", b"");
        entry.extend_from_slice(b"mk");
        assert_eq!(
            parse_state_row(s.len(), &entry),
            Some((Kind::MapEntry, "m", &b""[..], &b"mk"[..]))
        );
        // A value row with trailing bytes, a cut row, an unknown kind and
        // a key length past the end are refused, not misread.
        let mut longer = row.clone();
        longer.push(0);
        assert_eq!(parse_state_row(s.len(), &longer), None);
        for cut in 0..row.len() {
            assert_eq!(parse_state_row(s.len(), &row[..cut]), None, "cut at {cut}");
        }
        let mut kind = row.clone();
        kind[s.len() + 2] = 7;
        assert_eq!(parse_state_row(s.len(), &kind), None);
        let mut huge = state_row(&s, 9, Kind::List, "l", b"k");
        let at = s.len() + 2 + 1 + 2 + 1;
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(parse_state_row(s.len(), &huge), None);
    }

    #[test]
    fn timer_rows_sort_by_time_across_the_sign() {
        let s = scope("t", "o");
        let a = timer_row(&s, 3, 0, -5, b"k");
        let b = timer_row(&s, 3, 0, 7, b"k");
        assert!(a < b);
        assert_eq!(parse_timer_row(s.len(), &a), Some((0, -5, b"k".to_vec())));
    }

    #[test]
    fn groups_and_prefixes_bound_their_rows() {
        let s = scope("t", "o");
        let (start, end) = group_range(&s, 5);
        let row = state_row(&s, 5, Kind::Value, "count", b"zzz");
        assert!(start <= row && row < end);
        assert!(state_row(&s, 6, Kind::Value, "a", b"") >= end);
        let p = state_row(&s, 5, Kind::MapEntry, "m", b"k");
        let mut entry = p.clone();
        entry.extend_from_slice(b"\xff\xff");
        assert!(entry < prefix_end(&p));
        assert_eq!(
            decode_list(&encode_list(&[b"a".to_vec(), vec![]])),
            Some(vec![b"a".to_vec(), vec![]])
        );
    }
}
