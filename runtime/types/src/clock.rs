//! The wall clock as every crate reads it: milliseconds since the Unix
//! epoch, the unit of event timestamps and processing time.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time now, ms since the Unix epoch (0 if the clock is set
/// before the epoch).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_after_2020_and_does_not_go_back() {
        let a = now_ms();
        let b = now_ms();
        assert!(a > 1_577_836_800_000, "{a} is before 2020");
        assert!(b >= a);
    }
}
