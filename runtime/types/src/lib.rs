//! weir-types: the vocabulary every Weir crate shares.
//!
//! - [`Batch`]: events column by column, the shape in which they cross into
//!   Wasm operators (see `wit/types.wit`) and move between tasks, so a batch
//!   is never rebuilt between operators;
//! - [`Event`]: one owned event, for edges (input files, HTTP) and tests;
//! - [`KeyGroup`], [`KeyGroupRange`], [`key_group_of`]: how keys map to the
//!   fixed set of key groups that state is partitioned by;
//! - [`wire`]: the JSON-lines wire format of events.
//!
//! No I/O happens here.

mod batch;
mod keys;
pub mod wire;

pub use batch::{Batch, BatchError, Event, EventRef};
pub use keys::{DEFAULT_KEY_GROUPS, KeyGroup, KeyGroupRange, key_group_of, key_hash};
