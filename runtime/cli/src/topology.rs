//! `weir run --topology`: a whole topology over JSON-lines files.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use weir_connectors::{StreamConfig, StreamStore};
use weir_engine::{
    Bindings, DeadLetter, DeadLetterFn, ExecOptions, SinkFn, SourceIter, StateProvider,
    run_topology,
};
use weir_state::{KeyedState, StateBudget, StateDb};
use weir_topology::{ErrorPolicyDoc, LatePolicyDoc, Severity, parse_topology, validate_topology};
use weir_types::{Batch, Event, KeyGroupRange, wire};
use weir_wasm::OperatorState;
use weir_wasm::WasmHost;

use crate::run::{RunArgs, now_ms};

/// `NAME=VALUE` pairs of --input/--output.
fn pairs(flag: &str, entries: &[String]) -> Result<HashMap<String, String>> {
    entries
        .iter()
        .map(|e| match e.split_once('=') {
            Some((name, path)) => Ok((name.to_string(), path.to_string())),
            None => bail!("--{flag} {e:?}: with --topology, give NAME=FILE"),
        })
        .collect()
}

/// Where a module reference points: a path ending in `.wasm` (relative
/// to the topology), or `<name>.wasm` in one of the module directories.
fn module_path(reference: &str, base: &Path, dirs: &[PathBuf]) -> Result<PathBuf> {
    if reference.ends_with(".wasm") {
        return Ok(base.join(reference));
    }
    let name = reference.split('@').next().unwrap_or(reference);
    for dir in dirs {
        for candidate in [
            format!("{name}.wasm"),
            format!("{}.wasm", name.replace('-', "_")),
        ] {
            let path = dir.join(candidate);
            if path.exists() {
                return Ok(path);
            }
        }
    }
    bail!(
        "module {reference:?} not found: give a path to a .wasm file, or a --module-dir holding {name}.wasm (searched: {})",
        if dirs.is_empty() {
            "no --module-dir given".to_string()
        } else {
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    )
}

fn file_source(path: PathBuf) -> Result<SourceIter> {
    let name = path.display().to_string();
    let reader =
        BufReader::new(File::open(&path).with_context(|| format!("cannot open input {name}"))?);
    Ok(Box::new(reader.lines().enumerate().filter_map(
        move |(i, line)| match line {
            Err(e) => Some(Err(format!("cannot read {name}: {e}"))),
            Ok(l) if l.trim().is_empty() => None,
            Ok(l) => {
                Some(wire::parse_event(&l, now_ms()).map_err(|e| format!("{name}:{}: {e}", i + 1)))
            }
        },
    )))
}

fn file_sink(path: &str) -> Result<SinkFn> {
    let writer: Box<dyn Write + Send> = if path == "-" {
        Box::new(std::io::stdout())
    } else {
        Box::new(File::create(path).with_context(|| format!("cannot create output {path}"))?)
    };
    let mut out = BufWriter::new(writer);
    Ok(Box::new(move |batch: &Batch| {
        for e in batch.iter() {
            writeln!(out, "{}", wire::format_event(&e)).map_err(|e| e.to_string())?;
        }
        out.flush().map_err(|e| e.to_string())
    }))
}

/// A dead letter as an event carrying the failure in headers
/// (`weir.operator`, `weir.error`, `weir.failed_at`).
fn dead_letter_batch(letter: &DeadLetter) -> Batch {
    let mut event: Event = letter.event.clone();
    event
        .headers
        .push(("weir.operator".into(), letter.operator.clone().into_bytes()));
    event
        .headers
        .push(("weir.error".into(), letter.error.clone().into_bytes()));
    event.headers.push((
        "weir.failed_at".into(),
        letter.failed_at.to_string().into_bytes(),
    ));
    let mut batch = Batch::default();
    batch.push_event(&event);
    batch
}

/// Dead letters to a JSON-lines file.
fn dead_letter_file(path: &Path) -> Result<DeadLetterFn> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let out = Arc::new(Mutex::new(BufWriter::new(file)));
    Ok(Box::new(move |letter: &DeadLetter| {
        let batch = dead_letter_batch(letter);
        let line = batch
            .iter()
            .next()
            .map(|e| wire::format_event(&e))
            .unwrap_or_default();
        let mut out = out
            .lock()
            .map_err(|_| "dead-letter file lock poisoned".to_string())?;
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| e.to_string())
    }))
}

/// Operator state in the data directory's redb database.
struct DurableState(StateDb);

impl StateProvider for DurableState {
    fn open(
        &self,
        topology: &str,
        operator: &str,
        owned: KeyGroupRange,
    ) -> std::result::Result<Box<dyn OperatorState>, String> {
        KeyedState::open(&self.0, topology, operator, owned, StateBudget::default())
            .map(|s| Box::new(s) as Box<dyn OperatorState>)
            .map_err(|e| e.to_string())
    }
}

/// The data directory's streams, opened on first use.
fn open_store<'a>(slot: &'a mut Option<StreamStore>, dir: &Path) -> Result<&'a StreamStore> {
    if slot.is_none() {
        *slot = Some(
            StreamStore::open(dir, StreamConfig::default())
                .with_context(|| format!("data directory {}", dir.display()))?,
        );
    }
    Ok(slot.as_ref().expect("opened above"))
}

pub fn run(args: &RunArgs, host: &WasmHost, path: &Path) -> Result<ExitCode> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read topology {}", path.display()))?;
    let doc = parse_topology(&text).with_context(|| format!("{}", path.display()))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let inputs = pairs("input", &args.input)?;
    let outputs = pairs("output", &args.output)?;
    for name in inputs.keys() {
        if !doc.sources.iter().any(|s| &s.name == name) {
            bail!("--input {name}=…: the topology has no source {name:?}");
        }
    }
    for name in outputs.keys() {
        if !doc.sinks.iter().any(|s| &s.name == name) {
            bail!("--output {name}=…: the topology has no sink {name:?}");
        }
    }

    // Check the document's shape before loading anything.
    let problems = validate_topology(&doc, &());
    for p in problems.iter().filter(|p| p.severity == Severity::Warning) {
        eprintln!("{p}");
    }
    let errors: Vec<_> = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .collect();
    if !errors.is_empty() {
        for p in &errors {
            eprintln!("{p}");
        }
        eprintln!(
            "{}: {} error(s); nothing was run",
            path.display(),
            errors.len()
        );
        return Ok(ExitCode::from(2));
    }

    let mut modules = HashMap::new();
    for op in &doc.operators {
        if modules.contains_key(&op.module) {
            continue;
        }
        let file = module_path(&op.module, &base, &args.module_dir)
            .with_context(|| format!("operator `{}`", op.name))?;
        let bytes =
            std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let module = host
            .load(&bytes)
            .with_context(|| format!("operator `{}`: cannot load {}", op.name, file.display()))?;
        modules.insert(op.module.clone(), module);
    }

    let mut bindings = Bindings::default();
    let mut streams: Option<StreamStore> = None;
    for source in &doc.sources {
        let events: SourceIter = match (inputs.get(&source.name), &source.file, &source.stream) {
            (Some(f), _, _) => file_source(PathBuf::from(f))?,
            (None, Some(f), _) => file_source(base.join(f))?,
            (None, None, Some(name)) => {
                // A bounded read: what the stream holds when the run starts.
                let stream = open_store(&mut streams, &args.data_dir)?.stream(name)?;
                Box::new(stream.read_to_end(0, args.batch_size))
            }
            (None, None, None) => bail!("source `{}` has no stream or file", source.name),
        };
        bindings.sources.insert(source.name.clone(), events);
    }
    for sink in &doc.sinks {
        let write: SinkFn = match (outputs.get(&sink.name), &sink.file, &sink.stream) {
            (Some(f), _, _) => file_sink(f)?,
            (None, Some(f), _) => file_sink(&base.join(f).display().to_string())?,
            (None, None, Some(name)) => {
                let stream = open_store(&mut streams, &args.data_dir)?.stream(name)?;
                Box::new(move |batch: &Batch| {
                    stream.append(batch).map(|_| ()).map_err(|e| e.to_string())
                })
            }
            (None, None, None) => bail!("sink `{}` has no stream or file", sink.name),
        };
        bindings.sinks.insert(sink.name.clone(), write);
    }
    let letters = doc.operators.iter().any(|o| {
        o.on_error == Some(ErrorPolicyDoc::DeadLetter)
            || o.on_late == Some(LatePolicyDoc::DeadLetter)
    });
    bindings.dead_letter = match &args.dead_letter {
        Some(file) => Some(dead_letter_file(file)?),
        None if !letters => None,
        None => Some({
            let name = doc
                .dead_letter_stream
                .clone()
                .unwrap_or_else(|| format!("{}-dead-letter", doc.name));
            let stream = open_store(&mut streams, &args.data_dir)?.stream(&name)?;
            Box::new(move |letter: &DeadLetter| {
                stream
                    .append(&dead_letter_batch(letter))
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
        }),
    };
    if args.keep_state {
        let db = StateDb::open(&args.data_dir)?;
        bindings.state = Some(Box::new(DurableState(db)));
    }
    let report = run_topology(
        &doc,
        &modules,
        bindings,
        ExecOptions {
            batch_size: args.batch_size,
            ..ExecOptions::default()
        },
    )?;
    for (name, instance, m) in &report.operators {
        tracing::info!(
            operator = %name,
            instance,
            events_in = m.events_in,
            events_out = m.events_out,
            errors = m.errors,
            dead_lettered = m.dead_lettered,
            late = m.late,
            "operator finished"
        );
    }
    Ok(ExitCode::SUCCESS)
}
