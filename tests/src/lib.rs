//! weir-tests: end-to-end tests (in `tests/`, driving the real `weir`
//! binary), the locator of guest fixtures every crate's tests share, and
//! `xtask` (`cargo xtask guests | test | demo`).
//!
//! Guests (the examples in `guest-examples/rust` and the hostile fixtures
//! in `tests/fixtures`) are built from source by `cargo xtask guests` into
//! `target/guests`; nothing prebuilt is committed.

use std::path::PathBuf;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Where `cargo xtask guests` puts built guests: `$WEIR_GUEST_DIR`, or
/// `target/guests/wasm32-wasip2/release` under the repository.
pub fn guest_dir() -> PathBuf {
    match std::env::var_os("WEIR_GUEST_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => repo_root().join("target/guests/wasm32-wasip2/release"),
    }
}

/// Path of the built guest `name` (crate name, e.g. `word-count`).
/// Panics, naming the command that builds it, when it is missing.
pub fn guest_path(name: &str) -> PathBuf {
    let path = guest_dir().join(format!("{}.wasm", name.replace('-', "_")));
    assert!(
        path.exists(),
        "missing guest fixture {}: build the guests first with `cargo xtask guests`",
        path.display()
    );
    path
}

/// Bytes of the built guest `name`.
pub fn guest_bytes(name: &str) -> Vec<u8> {
    let path = guest_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}
