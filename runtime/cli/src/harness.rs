//! `weir test`: the local test harness of one operator. It runs the
//! module over an input file of events with state in memory (as `weir
//! run --module` does), compares what it emits with an expected file, and
//! prints a readable difference. Exit 0: as expected; 1: it differs (or
//! the operator failed); 2: the test could not run (a file, the module).
//!
//! Both files are JSON lines of events (`{"key", "value", "timestamp",
//! "headers"}`). Only the fields the expected file uses somewhere are
//! compared, so an expectation may leave out timestamps (or keys).
//! Events without a timestamp in the input get 0, so runs repeat exactly.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::Value;
use weir_engine::{ErrorPolicy, RunOptions, run_operator};
use weir_types::{DEFAULT_KEY_GROUPS, KeyGroupRange, wire};
use weir_wasm::{MemoryState, OperatorInstance};

/// Differences printed at most; the rest are counted.
const MAX_DIFFERENCES_SHOWN: usize = 20;

/// Timestamp of input events that give none.
const DEFAULT_TIMESTAMP: i64 = 0;

#[derive(Args)]
pub struct TestArgs {
    /// The operator component (.wasm) under test.
    #[arg(long, value_name = "FILE")]
    module: PathBuf,
    /// Its input events, JSON lines.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// The events it must emit, JSON lines, in order (unless --sort).
    #[arg(long, value_name = "FILE")]
    expect: PathBuf,
    /// A config entry `key=value`; the value is read as JSON when it parses,
    /// as text otherwise. Repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    config: Vec<String>,
    /// Compare ignoring order (for operators whose output order is not
    /// part of their contract).
    #[arg(long)]
    sort: bool,
    /// Events per call, as a topology would batch them.
    #[arg(long, default_value_t = 1024)]
    batch_size: usize,
    /// Where compiled modules are cached, as for `weir run`; `none`
    /// disables the cache.
    #[arg(long, default_value = "weir-data/cache")]
    cache_dir: PathBuf,
}

/// Runs the test and prints its report; a failure to run it is exit code
/// 2.
pub fn run(args: &TestArgs) -> ExitCode {
    let mut report = String::new();
    let outcome = test(args, &mut report);
    let printed = std::io::stdout()
        .lock()
        .write_all(report.as_bytes())
        .is_ok();
    match outcome {
        Ok(true) if printed => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("weir test: cannot run the test: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Events of a JSON-lines file, as JSON (each must be an event line).
fn read_events(path: &Path) -> Result<Vec<(usize, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        wire::parse_event(line, DEFAULT_TIMESTAMP)
            .with_context(|| format!("{}:{}", path.display(), i + 1))?;
        out.push((i + 1, line.to_string()));
    }
    Ok(out)
}

/// `true` when the operator emitted what `args.expect` says; what it found
/// goes to `report`.
fn test(args: &TestArgs, report: &mut String) -> Result<bool> {
    let config = crate::run::config_of(None, &args.config)?;
    let input = read_events(&args.input)?;
    let expected_lines = read_events(&args.expect)?;
    let expected: Vec<Value> = expected_lines
        .iter()
        .map(|(_, l)| serde_json::from_str(l))
        .collect::<Result<_, _>>()
        .context("expected events")?;
    let bytes = std::fs::read(&args.module)
        .with_context(|| format!("cannot read module {}", args.module.display()))?;
    let host = crate::run::cached_host(&args.cache_dir)?;
    let module = host
        .load(&bytes)
        .with_context(|| format!("cannot load {}", args.module.display()))?;
    let name = args
        .module
        .file_stem()
        .map_or("operator".into(), |s| s.to_string_lossy().into_owned());
    let mut instance = OperatorInstance::new(
        &module,
        &name,
        &config,
        Box::new(MemoryState::new()),
        KeyGroupRange::all(DEFAULT_KEY_GROUPS),
    )?;
    let events = input.iter().filter_map(|(_, line)| {
        // Checked by read_events.
        wire::parse_event(line, DEFAULT_TIMESTAMP).ok()
    });
    let mut got = Vec::new();
    let options = RunOptions {
        batch_size: args.batch_size.max(1),
        on_error: ErrorPolicy::Fail,
        ..RunOptions::default()
    };
    let ran = run_operator(
        &mut instance,
        events,
        |batch| {
            for event in batch.iter() {
                let line = wire::format_event(&event);
                got.push(serde_json::from_str::<Value>(&line).map_err(|e| e.to_string())?);
            }
            Ok(())
        },
        options,
    );
    if let Err(e) = ran {
        writeln!(
            report,
            "FAIL {}: the operator failed: {e}",
            args.module.display()
        )?;
        return Ok(false);
    }
    let fields = compared_fields(&expected);
    let got: Vec<Value> = got.iter().map(|e| project(e, &fields)).collect();
    let differences = if args.sort {
        unordered_differences(&expected, &got)
    } else {
        ordered_differences(&expected, &got)
    };
    if differences.is_empty() {
        writeln!(
            report,
            "ok {}: {} events as expected",
            args.module.display(),
            got.len()
        )?;
        return Ok(true);
    }
    writeln!(
        report,
        "FAIL {}: expected {} events, got {}; {} difference(s){}:",
        args.module.display(),
        expected.len(),
        got.len(),
        differences.len(),
        if args.sort { " (ignoring order)" } else { "" }
    )?;
    for d in differences.iter().take(MAX_DIFFERENCES_SHOWN) {
        writeln!(report, "{d}")?;
    }
    if differences.len() > MAX_DIFFERENCES_SHOWN {
        let more = differences.len() - MAX_DIFFERENCES_SHOWN;
        writeln!(report, "… and {more} more")?;
    }
    Ok(false)
}

/// The fields the expected events use somewhere.
fn compared_fields(expected: &[Value]) -> BTreeSet<String> {
    expected
        .iter()
        .filter_map(Value::as_object)
        .flat_map(|o| o.keys().cloned())
        .collect()
}

/// `event` with only `fields`.
fn project(event: &Value, fields: &BTreeSet<String>) -> Value {
    match event.as_object() {
        Some(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| fields.contains(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        None => event.clone(),
    }
}

/// Position by position: what differs, what is missing, what is extra.
fn ordered_differences(expected: &[Value], got: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..expected.len().max(got.len()) {
        match (expected.get(i), got.get(i)) {
            (Some(e), Some(g)) if e == g => {}
            (Some(e), Some(g)) => out.push(format!(
                "  event {i}:\n    - expected {e}\n    + got      {g}"
            )),
            (Some(e), None) => out.push(format!("  event {i}:\n    - missing  {e}")),
            (None, Some(g)) => out.push(format!("  event {i}:\n    + extra    {g}")),
            (None, None) => {}
        }
    }
    out
}

/// As multisets: what is expected and missing, what came and was not
/// expected (each in sorted order).
fn unordered_differences(expected: &[Value], got: &[Value]) -> Vec<String> {
    let sorted = |list: &[Value]| {
        let mut texts: Vec<String> = list.iter().map(Value::to_string).collect();
        texts.sort_unstable();
        texts
    };
    let (want, have) = (sorted(expected), sorted(got));
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < want.len() || j < have.len() {
        match (want.get(i), have.get(j)) {
            (Some(w), Some(h)) if w == h => {
                i += 1;
                j += 1;
            }
            (Some(w), Some(h)) if w < h => {
                out.push(format!("    - missing  {w}"));
                i += 1;
            }
            (Some(w), None) => {
                out.push(format!("    - missing  {w}"));
                i += 1;
            }
            (_, Some(h)) => {
                out.push(format!("    + extra    {h}"));
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_fields_the_expectation_uses_are_compared() {
        let expected = [json!({"key": "a", "value": 1})];
        let fields = compared_fields(&expected);
        let got = project(&json!({"key": "a", "value": 1, "timestamp": 5}), &fields);
        assert!(ordered_differences(&expected, &[got]).is_empty());
    }

    #[test]
    fn differences_say_which_event_and_what_is_missing_or_extra() {
        let (a, b, c) = (
            json!({"value": 1}),
            json!({"value": 2}),
            json!({"value": 3}),
        );
        let d = ordered_differences(&[a.clone(), b.clone()], &[a.clone(), c.clone(), b.clone()]);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].contains("event 1") && d[0].contains("expected {\"value\":2}"));
        assert!(d[1].contains("extra    {\"value\":2}"), "{d:?}");
        // Ignoring order, only the multiset counts: one extra 3.
        let d = unordered_differences(&[b.clone(), a.clone()], &[a.clone(), c, b.clone()]);
        assert_eq!(d, ["    + extra    {\"value\":3}"]);
        let d = unordered_differences(&[a.clone(), a.clone()], &[a]);
        assert_eq!(d, ["    - missing  {\"value\":1}"]);
    }
}
