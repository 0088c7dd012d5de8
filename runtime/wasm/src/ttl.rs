//! State time-to-live (contract 0.2.0): how an entry of a state declared
//! with a TTL is stored and when it has expired.
//!
//! An entry of such a state is stored as [`STAMP_TAG`], the 8-byte
//! big-endian time it was last refreshed (in its TTL's domain), then the
//! operator's bytes. The host stamps what the operator writes and strips
//! the stamp from what it reads, so the operator never sees it; an entry
//! whose time is up reads as absent at once, and the read records its
//! removal, which the state store applies with the call's other writes
//! (and so inside the next checkpoint's commit). Bytes without the tag (a
//! state that had no TTL before an upgrade) never expire until rewritten.
//!
//! Clocks: processing time is the call's processing time; event time is
//! the operator's watermark for expiry, and for a write the call's event
//! time (the greatest of its events' timestamps, or fired timers' times,
//! and the watermark).

use crate::instance::{StateKind, StateTtl, TtlRefresh};
use crate::state::TimeDomain;

/// The first byte of a stamped entry.
pub(crate) const STAMP_TAG: u8 = 0xC2;
const STAMP_BYTES: usize = 9;

/// The times of the call in progress, as TTLs read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TtlClock {
    pub(crate) processing: i64,
    pub(crate) watermark: i64,
    /// The call's event time, for stamping writes in event time.
    pub(crate) event: i64,
}

impl Default for TtlClock {
    fn default() -> Self {
        TtlClock {
            processing: 0,
            watermark: i64::MIN,
            event: i64::MIN,
        }
    }
}

/// What reading a possibly stamped entry found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry<'a> {
    Live(&'a [u8]),
    Expired,
}

/// The TTLs an operator declared, looked up by kind and name.
#[derive(Debug, Clone, Default)]
pub(crate) struct TtlTable(Vec<StateTtl>);

impl TtlTable {
    pub(crate) fn new(ttls: &[StateTtl]) -> Self {
        TtlTable(ttls.to_vec())
    }

    pub(crate) fn get(&self, kind: StateKind, name: &str) -> Option<&StateTtl> {
        self.0.iter().find(|t| t.kind == kind && t.name == name)
    }
}

impl StateTtl {
    /// The time a write now is stamped with.
    fn now_stamp(&self, clock: &TtlClock) -> i64 {
        match self.domain {
            TimeDomain::ProcessingTime => clock.processing,
            TimeDomain::EventTime => clock.event.max(clock.watermark),
        }
    }

    /// Whether a read restamps the entry.
    pub(crate) fn refresh_on_read(&self) -> bool {
        self.refresh == TtlRefresh::OnReadAndWrite
    }

    /// `payload` stamped as written now.
    pub(crate) fn stamp(&self, clock: &TtlClock, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(STAMP_BYTES + payload.len());
        out.push(STAMP_TAG);
        out.extend_from_slice(&self.now_stamp(clock).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// What stored `bytes` hold now: the operator's bytes, or expired.
    pub(crate) fn read<'a>(&self, clock: &TtlClock, bytes: &'a [u8]) -> Entry<'a> {
        if bytes.len() < STAMP_BYTES || bytes[0] != STAMP_TAG {
            return Entry::Live(bytes);
        }
        let mut at = [0u8; 8];
        at.copy_from_slice(&bytes[1..STAMP_BYTES]);
        let refreshed = i64::from_be_bytes(at);
        let now = match self.domain {
            TimeDomain::ProcessingTime => clock.processing,
            TimeDomain::EventTime => clock.watermark,
        };
        let ttl = i64::try_from(self.ttl_ms).unwrap_or(i64::MAX);
        if now > refreshed.saturating_add(ttl) {
            Entry::Expired
        } else {
            Entry::Live(&bytes[STAMP_BYTES..])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ttl(domain: TimeDomain, ms: u64) -> StateTtl {
        StateTtl {
            kind: StateKind::Value,
            name: "v".into(),
            ttl_ms: ms,
            domain,
            refresh: TtlRefresh::OnWrite,
        }
    }

    fn clock(processing: i64, watermark: i64, event: i64) -> TtlClock {
        TtlClock {
            processing,
            watermark,
            event,
        }
    }

    #[test]
    fn a_processing_time_entry_lives_its_ttl_and_not_a_millisecond_more() {
        let t = ttl(TimeDomain::ProcessingTime, 100);
        let stored = t.stamp(&clock(1000, i64::MIN, 5), b"x");
        assert_eq!(t.read(&clock(1100, 0, 0), &stored), Entry::Live(b"x"));
        assert_eq!(t.read(&clock(1101, 0, 0), &stored), Entry::Expired);
    }

    #[test]
    fn an_event_time_entry_is_stamped_with_the_calls_event_time_and_expires_by_the_watermark() {
        let t = ttl(TimeDomain::EventTime, 50);
        // Before any watermark, the call's events say what time it is.
        let stored = t.stamp(&clock(9_999_999, i64::MIN, 200), b"y");
        assert_eq!(t.read(&clock(0, 250, 0), &stored), Entry::Live(b"y"));
        assert_eq!(t.read(&clock(0, 251, 0), &stored), Entry::Expired);
        // The processing time plays no part.
        assert_eq!(t.read(&clock(i64::MAX, 0, 0), &stored), Entry::Live(b"y"));
    }

    #[test]
    fn bytes_without_a_stamp_never_expire() {
        let t = ttl(TimeDomain::ProcessingTime, 1);
        assert_eq!(t.read(&clock(i64::MAX, 0, 0), b"{}"), Entry::Live(b"{}"));
        assert_eq!(t.read(&clock(i64::MAX, 0, 0), b""), Entry::Live(b""));
    }
}
