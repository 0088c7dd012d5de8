//! `cargo xtask <command>`: the one build entry point for guests, tests and
//! the demo.

#![allow(clippy::print_stdout)]
//!
//! - `guests`: builds every guest from source into `target/guests`: the
//!   Rust ones (examples and test fixtures) for wasm32-wasip2, adding the
//!   target if missing, and the Python ones with componentize-py (installed
//!   into `target/py-venv` from PyPI on first use).
//! - `test`: `guests`, then every workspace test (nextest when installed).
//! - `demo`: the Rust guests, then a running Weir doing its job: starts
//!   `weir serve` (data in `target/demo/weir-data`), uploads `split-words`
//!   and `word-count`, applies and starts the word-count topology
//!   (`guest-examples/topologies/word-count.yaml`), produces the sample
//!   text, prints the top counts and the URLs to look at, and keeps serving
//!   until Ctrl-C (when stdin is not a terminal it stops at once).

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use weir_tests::{guest_dir, repo_root};

const GUEST_TARGET: &str = "wasm32-wasip2";
const GUEST_WORKSPACES: &[&str] = &["guest-examples/rust", "tests/fixtures"];
/// componentize-py, pinned: it turns Python guests into components.
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

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

/// Every guest: Rust and Python.
fn build_guests() -> Result<()> {
    build_rust_guests()?;
    build_python_guests()
}

fn build_rust_guests() -> Result<()> {
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

/// The newest modification time of the files under `dirs`.
fn newest(dirs: &[std::path::PathBuf]) -> Option<std::time::SystemTime> {
    let mut newest = None;
    let mut stack: Vec<std::path::PathBuf> = dirs.to_vec();
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()));
            }
        } else if let Ok(modified) = meta.modified() {
            newest = newest.max(Some(modified));
        }
    }
    newest
}

/// Builds the Python guests (`guest-examples/python/*`) with
/// componentize-py from a virtualenv in `target/py-venv`, into the guest
/// directory as `python_<name>.wasm`. Skips guests whose component is newer
/// than their sources, the SDK and the WIT.
fn build_python_guests() -> Result<()> {
    let root = repo_root();
    let venv = root.join("target/py-venv");
    let tool = venv.join("bin/componentize-py");
    if !tool.exists() {
        eprintln!(
            "xtask: installing {COMPONENTIZE_PY} into {}",
            venv.display()
        );
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
        run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", COMPONENTIZE_PY]))?;
    }
    let out_dir = guest_dir();
    std::fs::create_dir_all(&out_dir)?;
    let sdk = root.join("sdk/python");
    let wit = root.join("wit");
    let mut guests: Vec<_> = std::fs::read_dir(root.join("guest-examples/python"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("app.py").exists())
        .collect();
    guests.sort();
    for guest in guests {
        let name = guest
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .replace('-', "_");
        let out = out_dir.join(format!("python_{name}.wasm"));
        let built = std::fs::metadata(&out).and_then(|m| m.modified()).ok();
        let sources = newest(&[guest.clone(), sdk.clone(), wit.clone()]);
        if built.is_some() && sources.is_some() && built > sources {
            continue;
        }
        eprintln!("xtask: building Python guest {}", guest.display());
        run(Command::new(&tool)
            .arg("-d")
            .arg(&wit)
            .args(["-w", "operator", "componentize", "app", "-p"])
            .arg(&guest)
            .arg("-p")
            .arg(&sdk)
            .arg("-o")
            .arg(&out))?;
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

/// Runs the `weir` CLI against `server`, returning its stdout.
fn weir_cli(weir: &std::path::Path, server: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(weir)
        .args(args)
        .env("WEIR_SERVER", server)
        .env_remove("WEIR_TOKEN")
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", weir.display()))?;
    if !out.status.success() {
        bail!("weir {} failed with {}", args.join(" "), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts `weir serve` on `listen`; returns the child and its URL, or
/// `None` when it could not bind.
fn start_server(
    weir: &std::path::Path,
    data: &std::path::Path,
    listen: &str,
) -> Result<Option<(std::process::Child, String)>> {
    use std::io::BufRead;
    let mut child = Command::new(weir)
        .args(["serve", "--listen", listen, "--data-dir"])
        .arg(data)
        .env_remove("WEIR_TOKEN")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot start weir serve")?;
    let mut line = String::new();
    let stdout = child.stdout.take().context("weir serve has no stdout")?;
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    match line.trim().strip_prefix("weir serve: listening on ") {
        Some(url) => Ok(Some((child, url.to_string()))),
        None => {
            let _ = child.wait();
            Ok(None)
        }
    }
}

fn demo() -> Result<()> {
    use std::io::IsTerminal;
    // The demo runs Rust operators only: no Python toolchain needed.
    build_rust_guests()?;
    let root = repo_root();
    run(cargo()
        .current_dir(&root)
        .args(["build", "--quiet", "--release", "-p", "weir"]))?;
    let weir = root.join("target/release/weir");
    let topology = root.join("guest-examples/topologies/word-count.yaml");
    let input = root.join("guest-examples/data/lines.jsonl");
    let data = tempdir()?.join("weir-data");
    if data.exists() {
        std::fs::remove_dir_all(&data)
            .with_context(|| format!("cannot clear {}", data.display()))?;
    }
    // The documented port, or any free one when it is taken.
    let (mut server, url) = match start_server(&weir, &data, "127.0.0.1:7070")? {
        Some(s) => s,
        None => start_server(&weir, &data, "127.0.0.1:0")?
            .context("weir serve could not start (see its error above)")?,
    };
    let result = (|| -> Result<()> {
        let guests = guest_dir();
        let cli = |args: &[&str]| weir_cli(&weir, &url, args);
        eprint!(
            "{}",
            cli(&[
                "module",
                "push",
                &guests.join("split_words.wasm").display().to_string(),
                "--name",
                "split-words"
            ])?
        );
        eprint!(
            "{}",
            cli(&[
                "module",
                "push",
                &guests.join("word_count.wasm").display().to_string(),
                "--name",
                "word-count"
            ])?
        );
        eprint!(
            "{}",
            cli(&[
                "topology",
                "apply",
                &topology.display().to_string(),
                "--start"
            ])?
        );
        eprint!(
            "{}",
            cli(&["produce", "lines", &input.display().to_string()])?
        );
        // Output is published when its checkpoint commits (every second):
        // wait until every count the operator emitted is in the stream.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let events: Vec<serde_json::Value> = loop {
            let status: serde_json::Value =
                serde_json::from_str(&cli(&["topology", "status", "word-count", "--json"])?)?;
            let emitted: u64 = status["operators"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|o| o["name"] == "count")
                .filter_map(|o| o["events_out"].as_u64())
                .sum();
            let events: Vec<serde_json::Value> = cli(&["consume", "counts"])?
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect();
            if emitted > 0 && events.len() as u64 == emitted {
                break events;
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "the counts did not arrive within a minute ({} of {emitted})",
                    events.len()
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        };
        let mut last = std::collections::BTreeMap::new();
        for event in &events {
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
            "\nWeir is running at {url}: topology word-count (split-words -> word-count, parallelism 2)\n\
             read stream `lines` ({}) and wrote {} counts, {} distinct words, to stream `counts`. Top words:",
            input.display(),
            events.len(),
            top.len()
        );
        for (word, count) in top.iter().take(10) {
            println!("  {count:>5}  {word}");
        }
        let the = cli(&["state", "get", "word-count", "count", "count", "the"])?;
        println!("state of `the` in operator count: {}", the.trim());
        println!("\nLook at:");
        println!(
            "  {url}/v1/topologies/word-count          status, per-operator metrics, last checkpoint"
        );
        println!(
            "  {url}/v1/streams/counts/events?limit=20  the counts (Accept: text/event-stream follows them)"
        );
        println!("  {url}/v1/topologies/word-count/operators/count/state/count?key=weir");
        println!("  {url}/metrics                            Prometheus metrics");
        println!("  {url}/v1/openapi.json                    the API");
        println!("or: WEIR_SERVER={url} target/release/weir consume counts --follow");
        println!("    WEIR_SERVER={url} target/release/weir produce lines < more-lines.jsonl");
        Ok(())
    })();
    if result.is_ok() && std::io::stdin().is_terminal() {
        println!(
            "\nweir serve keeps running (data in {}); Ctrl-C stops it.",
            data.display()
        );
        // Ctrl-C reaches the server too (same process group): it stops cleanly.
        let _ = server.wait();
    } else {
        let _ = Command::new("kill")
            .args(["-TERM", &server.id().to_string()])
            .status();
        let _ = server.wait();
    }
    result
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
