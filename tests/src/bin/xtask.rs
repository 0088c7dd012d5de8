//! `cargo xtask <command>`: the one build entry point for guests, tests and
//! the demo.

#![allow(clippy::print_stdout)]
//!
//! - `guests`: builds every Rust guest (examples and test fixtures) for
//!   wasm32-wasip2 into `target/guests`, adding the target if missing.
//! - `test`: `guests`, then every workspace test (nextest when installed).
//! - `demo`: `guests`, then runs the word-count topology
//!   (`guest-examples/topologies/word-count.yaml`) over a sample text with
//!   `weir run` and prints the top word counts.

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use weir_tests::{guest_dir, repo_root};

const GUEST_TARGET: &str = "wasm32-wasip2";
const GUEST_WORKSPACES: &[&str] = &["guest-examples/rust", "tests/fixtures"];

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn ensure_target() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("rustup not found: install the wasm32-wasip2 target by hand")?;
    if !String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == GUEST_TARGET)
    {
        eprintln!("xtask: adding the {GUEST_TARGET} target");
        run(Command::new("rustup").args(["target", "add", GUEST_TARGET]))?;
    }
    Ok(())
}

fn build_guests() -> Result<()> {
    ensure_target()?;
    let root = repo_root();
    let target_dir = root.join("target/guests");
    for ws in GUEST_WORKSPACES {
        eprintln!("xtask: building guests in {ws}");
        run(cargo()
            .current_dir(root.join(ws))
            .args(["build", "--release", "--locked", "--target", GUEST_TARGET])
            .arg("--target-dir")
            .arg(&target_dir))?;
    }
    Ok(())
}

fn has_nextest() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn test(extra: &[String]) -> Result<()> {
    build_guests()?;
    let root = repo_root();
    let mut cmd = cargo();
    cmd.current_dir(&root).env("WEIR_GUEST_DIR", guest_dir());
    if has_nextest() {
        cmd.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        cmd.args(["test", "--workspace", "--no-fail-fast"]);
    }
    run(cmd.args(extra))
}

fn demo() -> Result<()> {
    build_guests()?;
    let root = repo_root();
    run(cargo()
        .current_dir(&root)
        .args(["build", "--quiet", "--release", "-p", "weir"]))?;
    let weir = root.join("target/release/weir");
    let topology = root.join("guest-examples/topologies/word-count.yaml");
    let input = root.join("guest-examples/data/lines.jsonl");
    let counts = tempdir()?.join("counts.jsonl");
    run(Command::new(&weir)
        .arg("run")
        .arg("--topology")
        .arg(&topology)
        .arg("--module-dir")
        .arg(guest_dir())
        .arg("--input")
        .arg(format!("lines={}", input.display()))
        .arg("--output")
        .arg(format!("out={}", counts.display())))?;
    let text = std::fs::read_to_string(&counts)?;
    let mut last = std::collections::BTreeMap::new();
    for line in text.lines() {
        let event: serde_json::Value = serde_json::from_str(line)?;
        let word = event["value"]["word"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let count = event["value"]["count"].as_u64().unwrap_or(0);
        let best = last.entry(word).or_insert(0);
        *best = count.max(*best);
    }
    let mut top: Vec<_> = last.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    println!(
        "weir run --topology {}: split-words → word-count (parallelism 2) over {}",
        topology.display(),
        input.display()
    );
    println!(
        "{} words, {} distinct; top words:",
        text.lines().count(),
        top.len()
    );
    for (word, count) in top.iter().take(10) {
        println!("  {count:>5}  {word}");
    }
    println!("every count event: {}", counts.display());
    Ok(())
}

fn tempdir() -> Result<std::path::PathBuf> {
    let dir = repo_root().join("target/demo");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("guests") => build_guests(),
        Some("test") => test(&args[1..]),
        Some("demo") => demo(),
        _ => {
            eprintln!("usage: cargo xtask <guests | test [nextest/test args] | demo>");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
