//! `weir test`: the local test harness of one operator or one topology.
//! It runs the module over an input file of events with state in memory
//! (as `weir run --module` does), or the topology over a file per source
//! (as `weir run --topology` does, in a throwaway data directory),
//! compares what comes out with an expected file (per sink), and prints a
//! readable difference. Exit 0: as expected; 1: it differs (or the
//! operator failed); 2: the test could not run (a file, the module).
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
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "topology",
        required_unless_present = "topology"
    )]
    module: Option<PathBuf>,
    /// A topology document under test (YAML or JSON; modules as for `weir
    /// run --topology`: paths to .wasm files or names in --module-dir).
    #[arg(long, value_name = "FILE")]
    topology: Option<PathBuf>,
    /// With --topology: where modules named without a path are found.
    /// Repeatable.
    #[arg(long, value_name = "DIR", requires = "topology")]
    module_dir: Vec<PathBuf>,
    /// The input events, JSON lines: with --module one FILE; with
    /// --topology SOURCE=FILE for each source.
    #[arg(long, value_name = "FILE", required = true)]
    input: Vec<String>,
    /// The events expected, JSON lines, in order (unless --sort): with
    /// --module one FILE; with --topology SINK=FILE for each sink checked.
    #[arg(long, value_name = "FILE", required = true)]
    expect: Vec<String>,
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
    /// How far the watermark trails the highest timestamp seen, ms (it
    /// advances after each call; event-time timers fire as it passes
    /// them, and all of them at the end of the input).
    #[arg(long, default_value_t = 0, value_name = "MS")]
    max_out_of_orderness_ms: i64,
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

/// The one file a flag names with --module.
fn one_file<'a>(flag: &str, values: &'a [String]) -> Result<&'a Path> {
    match values {
        [one] if !one.contains('=') || Path::new(one).exists() => Ok(Path::new(one)),
        _ => anyhow::bail!(
            "--{flag}: with --module give one file (NAME=FILE pairs are for --topology)"
        ),
    }
}

/// The expected events of `path`, as JSON.
fn expected_events(path: &Path) -> Result<Vec<Value>> {
    read_events(path)?
        .iter()
        .map(|(_, l)| serde_json::from_str(l))
        .collect::<Result<_, _>>()
        .with_context(|| format!("expected events in {}", path.display()))
}

/// `true` when what came out is what `args.expect` says; what it found
/// goes to `report`.
fn test(args: &TestArgs, report: &mut String) -> Result<bool> {
    match (&args.module, &args.topology) {
        (Some(module), _) => test_module(args, module, report),
        (None, Some(topology)) => test_topology(args, topology, report),
        (None, None) => anyhow::bail!("give --module or --topology"),
    }
}

/// Runs the topology as `weir run --topology` would, each sink checked
/// into a file of a throwaway directory, and compares each checked sink
/// with its expected file.
fn test_topology(args: &TestArgs, topology: &Path, report: &mut String) -> Result<bool> {
    use clap::{Args as _, FromArgMatches};
    let tmp = tempfile::tempdir().context("cannot make a temporary directory")?;
    let mut expected = Vec::new();
    for entry in &args.expect {
        let (sink, file) = entry
            .split_once('=')
            .with_context(|| format!("--expect {entry:?}: with --topology, give SINK=FILE"))?;
        let events = expected_events(Path::new(file))?;
        expected.push((
            sink.to_string(),
            tmp.path().join(format!("{sink}.jsonl")),
            events,
        ));
    }
    let mut argv: Vec<std::ffi::OsString> =
        vec!["run".into(), "--topology".into(), topology.into()];
    for input in &args.input {
        argv.extend(["--input".into(), input.into()]);
    }
    for (sink, out, _) in &expected {
        let mut pair = std::ffi::OsString::from(format!("{sink}="));
        pair.push(out);
        argv.extend(["--output".into(), pair]);
    }
    for dir in &args.module_dir {
        argv.extend(["--module-dir".into(), dir.into()]);
    }
    argv.extend([
        "--data-dir".into(),
        tmp.path().join("data").into(),
        "--cache-dir".into(),
        args.cache_dir.clone().into(),
        "--batch-size".into(),
        args.batch_size.max(1).to_string().into(),
        "--dead-letter".into(),
        tmp.path().join("dead-letters.jsonl").into(),
    ]);
    let matches = crate::run::RunArgs::augment_args(clap::Command::new("run"))
        .try_get_matches_from(argv)
        .context("the topology run's arguments")?;
    let run_args = crate::run::RunArgs::from_arg_matches(&matches)?;
    let host = crate::run::cached_host(&args.cache_dir)?;
    let ran = crate::topology::run(&run_args, &host, topology);
    match ran {
        Ok(code) if code == ExitCode::SUCCESS => {}
        Ok(_) => {
            writeln!(
                report,
                "FAIL {}: the topology failed (see above)",
                topology.display()
            )?;
            return Ok(false);
        }
        Err(e) => {
            writeln!(
                report,
                "FAIL {}: the topology failed: {e:#}",
                topology.display()
            )?;
            return Ok(false);
        }
    }
    let mut all = true;
    for (sink, out, want) in &expected {
        let got = if out.exists() {
            read_events(out)?
                .iter()
                .map(|(_, l)| serde_json::from_str(l))
                .collect::<Result<Vec<Value>, _>>()?
        } else {
            Vec::new()
        };
        let label = format!("{} sink `{sink}`", topology.display());
        all &= compare(args, &label, want, &got, report)?;
    }
    Ok(all)
}

fn test_module(args: &TestArgs, module_path: &Path, report: &mut String) -> Result<bool> {
    let config = crate::run::config_of(None, &args.config)?;
    let input = read_events(one_file("input", &args.input)?)?;
    let expected = expected_events(one_file("expect", &args.expect)?)?;
    let bytes = std::fs::read(module_path)
        .with_context(|| format!("cannot read module {}", module_path.display()))?;
    let host = crate::run::cached_host(&args.cache_dir)?;
    let module = host
        .load(&bytes)
        .with_context(|| format!("cannot load {}", module_path.display()))?;
    let name = module_path
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
        max_out_of_orderness_ms: args.max_out_of_orderness_ms,
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
            module_path.display()
        )?;
        return Ok(false);
    }
    compare(
        args,
        &module_path.display().to_string(),
        &expected,
        &got,
        report,
    )
}

/// Compares what came out of `label` with what was expected; `true` when
/// they agree. The finding goes to `report`.
fn compare(
    args: &TestArgs,
    label: &str,
    expected: &[Value],
    got: &[Value],
    report: &mut String,
) -> Result<bool> {
    let fields = compared_fields(expected);
    let got: Vec<Value> = got.iter().map(|e| project(e, &fields)).collect();
    let differences = if args.sort {
        unordered_differences(expected, &got)
    } else {
        ordered_differences(expected, &got)
    };
    if differences.is_empty() {
        writeln!(report, "ok {label}: {} events as expected", got.len())?;
        return Ok(true);
    }
    writeln!(
        report,
        "FAIL {label}: expected {} events, got {}; {} difference(s){}:",
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
