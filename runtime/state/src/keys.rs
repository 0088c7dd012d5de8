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
