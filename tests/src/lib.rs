//! weir-tests: `xtask` (`cargo xtask guests | test | demo | bench`), which
//! builds the guests, runs the tests and the demo. The guest locator is
//! `weir-fixtures`, re-exported here for the tools that still reach it
//! through this crate; crates' tests depend on `weir-fixtures` directly,
//! so they do not compile xtask's code generators.

pub use weir_fixtures::{guest_bytes, guest_dir, guest_path, repo_root};
