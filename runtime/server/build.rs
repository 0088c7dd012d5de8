//! Embeds the built web console into the server.
//!
//! `cargo xtask console` builds `runtime/console` with Vite into
//! `target/console` (or `$WEIR_CONSOLE_DIR`). This script writes
//! `$OUT_DIR/console_assets.rs`: a table of `(path, bytes)` pairs, one
//! `include_bytes!` per file of that directory. Without a built console
//! the table is empty and `/` serves a page that says how to build it, so
//! the server builds (in release too) on a machine without Node.

#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};

/// Most files embedded: a Vite build has a handful; a directory with more
/// is not a console build.
const MAX_FILES: usize = 256;

fn main() {
    println!("cargo::rerun-if-env-changed=WEIR_CONSOLE_DIR");
    println!("cargo::rerun-if-env-changed=CARGO_TARGET_DIR");
    let dir = console_dir();
    // Cargo reruns a script whose watched path is missing on every build
    // (rebuilding the server each time): the default directory is made
    // empty instead, and a console build then fills it.
    if std::env::var_os("WEIR_CONSOLE_DIR").is_none() {
        let _ = std::fs::create_dir_all(&dir);
    }
    println!("cargo::rerun-if-changed={}", dir.display());
    let mut files = files_under(&dir);
    files.sort();
    let mut table = String::from("&[\n");
    if files.iter().any(|(rel, _)| rel == "index.html") {
        for (rel, abs) in &files {
            table.push_str(&format!("    ({rel:?}, include_bytes!({abs:?})),\n"));
        }
    }
    table.push_str("]\n");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("console_assets.rs"), table).expect("OUT_DIR is writable");
}

/// `$WEIR_CONSOLE_DIR`, else `console` in the target directory.
fn console_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("WEIR_CONSOLE_DIR") {
        return PathBuf::from(dir);
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(t),
        None => {
            let manifest =
                PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
            manifest.join("../../target")
        }
    };
    target.join("console")
}

/// Every file under `dir` as (path relative to `dir` with `/`, absolute
/// path), walked without recursion; source maps are left out.
fn files_under(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_some_and(|x| x == "map") || out.len() >= MAX_FILES {
                continue;
            }
            let Ok(rel) = path.strip_prefix(dir) else {
                continue;
            };
            let rel: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let abs = std::fs::canonicalize(&path).unwrap_or(path.clone());
            out.push((rel.join("/"), abs.display().to_string()));
        }
    }
    out
}
