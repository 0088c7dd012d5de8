//! weir-types: the vocabulary every Weir crate shares.
//!
//! - [`Batch`]: events column by column, the shape in which they cross into
//!   Wasm operators (see `wit/types.wit`) and move between tasks, so a batch
//!   is never rebuilt between operators;
//! - [`Event`]: one owned event, for edges (input files, HTTP) and tests;
//! - [`KeyGroup`], [`KeyGroupRange`], [`key_group_of`]: how keys map to the
//!   fixed set of key groups that state is partitioned by;
//! - [`wire`]: the JSON-lines wire format of events;
//! - [`now_ms`]: the wall clock in the unit of timestamps.
//!
//! No I/O happens here (reading the clock aside).

mod batch;
mod clock;
mod keys;
pub mod wire;

/// Whether `name` is safe as a name of a topology, operator or stream,
/// and so as a file name in the data directory: 1-128 of
/// `A-Z a-z 0-9 _ . -`, not starting with `.` or `-` (no path traversal).
pub fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && !name.starts_with(['.', '-'])
}

pub use batch::{Batch, BatchError, Event, EventRef};
pub use clock::now_ms;
pub use keys::{DEFAULT_KEY_GROUPS, KeyGroup, KeyGroupRange, key_group_of, key_hash};
