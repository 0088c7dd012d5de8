//! `weir run --topology`: a whole topology over JSON-lines files.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use weir_connectors::{
    FileSink, FileSource, OutsideSettings, SourceMode, StreamConfig, StreamStore, bind_kafka,
    bind_outside_sinks, bind_streams, has_outside_sinks, needs_streams, shared_dead_letters,
};
use weir_engine::{
    Bindings, CheckpointConfig, DeadLetter, DeadLetterFn, ExecOptions, Job, Sink, Source,
    StateConfig, TopologyReport,
};
use weir_state::{StateBudget, StateDb};
use weir_topology::{
    LatePolicyDoc, Severity, ValidateOptions, parse_topology, validate_topology_with,
};
use weir_types::{now_ms, wire};
use weir_wasm::WasmHost;

use crate::run::RunArgs;

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
    // A near name among the modules the directories hold is most likely
    // a typo.
    let held: Vec<String> = dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(|e| {
            let file = e.ok()?.file_name().into_string().ok()?;
            Some(file.strip_suffix(".wasm")?.replace('_', "-"))
        })
        .collect();
    let near = weir_topology::suggest_name(name, held.iter().map(String::as_str));
    if near.starts_with("did you mean") {
        bail!("module {reference:?} not found: {near}");
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

/// Dead letters to a JSON-lines file.
fn dead_letter_file(path: &Path) -> Result<DeadLetterFn> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let out = Arc::new(Mutex::new(BufWriter::new(file)));
    Ok(Box::new(move |letter: &DeadLetter| {
        let batch = letter.to_batch();
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
    let options = ValidateOptions {
        postgres_url_required: args.postgres_url.is_none(),
        kafka_brokers: args.kafka_brokers.is_some(),
        ..ValidateOptions::default()
    };
    let problems = validate_topology_with(&doc, &(), options);
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

    // Every module, each problem reported (not only the first).
    let mut modules = HashMap::new();
    let mut missing = 0;
    for op in &doc.operators {
        if modules.contains_key(&op.module) {
            continue;
        }
        let loaded = module_path(&op.module, &base, &args.module_dir).and_then(|file| {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            host.load(&bytes)
                .with_context(|| format!("cannot load {}", file.display()))
        });
        match loaded {
            Ok(module) => {
                modules.insert(op.module.clone(), module);
            }
            Err(e) => {
                missing += 1;
                eprintln!("error: operator `{}`: {e:#}", op.name);
            }
        }
    }
    if missing > 0 {
        eprintln!(
            "{}: {missing} module problem(s); nothing was run",
            path.display()
        );
        return Ok(ExitCode::from(2));
    }

    let interval = args
        .checkpoint_interval_ms
        .or(doc.checkpoint.map(|c| c.interval_ms));
    let checkpointed = interval.is_some() || args.from_savepoint.is_some();
    if (args.fresh || args.savepoint_to.is_some()) && !checkpointed {
        bail!("--fresh and --savepoint-to need checkpoints: give --checkpoint-interval-ms");
    }
    // The topology's state: in the data directory when kept or checkpointed.
    let state_dir = args.data_dir.join("topologies").join(&doc.name);
    let state = if checkpointed || args.keep_state {
        crate::datadir::hold(&args.data_dir)?;
        if args.fresh {
            let _ = std::fs::remove_file(state_dir.join("state.redb"));
        }
        let db = match &args.from_savepoint {
            Some(savepoint) => StateDb::open_from(&state_dir, savepoint)?,
            None => StateDb::open(&state_dir)?,
        };
        let defaults = CheckpointConfig::default();
        Some(StateConfig {
            db,
            budget: StateBudget::default(),
            checkpoints: checkpointed.then(|| CheckpointConfig {
                interval: interval.map(std::time::Duration::from_millis),
                reset_sources: args.reset_sources,
                on_idle: (doc.checkpoint).map_or(defaults.on_idle, |c| c.on_idle(defaults.on_idle)),
                ..defaults
            }),
        })
    } else {
        None
    };
    // A run that resumes keeps its file outputs (recovery cuts them back
    // to the checkpoint); a fresh one empties them.
    let resuming = match &state {
        Some(s) if checkpointed => s.db.latest_checkpoint()?.is_some_and(|c| !c.from_savepoint),
        _ => false,
    };

    // Files and overrides first; every other `stream:` falls to the
    // data directory's streams (a bounded read: what a stream holds when
    // the run starts).
    let mut bindings = Bindings::default();
    for source in &doc.sources {
        let file = match (inputs.get(&source.name), &source.file, &source.stream) {
            (Some(f), _, _) => PathBuf::from(f),
            (None, Some(f), _) => base.join(f),
            (None, None, Some(_)) => continue,
            (None, None, None) if source.kafka.is_some() => continue,
            (None, None, None) => bail!("source `{}` has no stream or file", source.name),
        };
        let events: Box<dyn Source> =
            Box::new(FileSource::open(&file, now_ms).map_err(anyhow::Error::msg)?);
        bindings.sources.insert(source.name.clone(), events);
    }
    for sink in &doc.sinks {
        let write: Box<dyn Sink> = match (outputs.get(&sink.name), &sink.file, &sink.stream) {
            (Some(f), _, _) if f == "-" => Box::new(FileSink::stdout()),
            (Some(f), _, _) => {
                Box::new(FileSink::open(Path::new(f), !resuming).map_err(anyhow::Error::msg)?)
            }
            (None, Some(f), _) => {
                Box::new(FileSink::open(&base.join(f), !resuming).map_err(anyhow::Error::msg)?)
            }
            (None, None, Some(_)) => continue,
            (None, None, None) if sink.kafka.is_some() => continue,
            (None, None, None) => bail!("sink `{}` has no stream or file", sink.name),
        };
        bindings.sinks.insert(sink.name.clone(), write);
    }
    if let Some(file) = &args.dead_letter {
        bindings.dead_letter = Some(dead_letter_file(file)?);
    }
    if needs_streams(&doc, &bindings) {
        crate::datadir::hold(&args.data_dir)?;
        let store = StreamStore::open(&args.data_dir, StreamConfig::default())
            .with_context(|| format!("data directory {}", args.data_dir.display()))?;
        bind_streams(&doc, &store, SourceMode::Bounded, &mut bindings)?;
    }
    bind_kafka(
        &doc,
        args.kafka_brokers.as_deref(),
        SourceMode::Bounded,
        &mut bindings,
    )?;
    // Sinks outside Weir (PostgreSQL, HTTP) share the run's dead letters.
    if has_outside_sinks(&doc) {
        let mut letters = bindings.dead_letter.take().map(shared_dead_letters);
        bindings.dead_letter = letters.as_mut().map(|l| l());
        let settings = OutsideSettings {
            postgres_url: args.postgres_url.clone(),
        };
        bind_outside_sinks(&doc, &settings, &mut bindings, &mut || {
            Ok(letters.as_mut().map(|l| l()))
        })?;
    }
    let job = Job::start(
        &doc,
        &modules,
        bindings,
        ExecOptions {
            batch_size: args.batch_size,
            ..ExecOptions::default()
        },
        state.clone(),
    )?;
    let report = job.wait()?;
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
    let refusing_late: BTreeMap<&str, &'static str> = doc
        .operators
        .iter()
        .filter_map(|o| match o.on_late {
            Some(LatePolicyDoc::Drop) => Some((o.name.as_str(), "dropped")),
            Some(LatePolicyDoc::DeadLetter) => Some((o.name.as_str(), "dead-lettered")),
            _ => None,
        })
        .collect();
    let restored = resuming || args.from_savepoint.is_some();
    for warning in run_warnings(&report, &refusing_late, restored) {
        eprintln!("warning: {warning}");
    }
    if let Some(last) = report.checkpoints.last() {
        tracing::info!(
            checkpoints = report.checkpoints.len(),
            last = last.id,
            "checkpoints taken"
        );
    }
    if let (Some(path), Some(s)) = (&args.savepoint_to, &state) {
        let size = s.db.export(path)?;
        eprintln!("savepoint written to {} ({size} bytes)", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Share of an operator's input that may arrive late before a run says so.
const LATE_WARNING_SHARE: f64 = 0.01;

/// What a finished run should say loudly: operators of `refusing_late`
/// (name → what their `on_late` does to a late event) that found more than
/// 1% of their input late, and sources that read nothing (with `restored`:
/// a restore resumed them at the end of their input).
fn run_warnings(
    report: &TopologyReport,
    refusing_late: &BTreeMap<&str, &str>,
    restored: bool,
) -> Vec<String> {
    let mut per_operator: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (name, _, m) in &report.operators {
        let e = per_operator.entry(name.as_str()).or_default();
        e.0 += m.events_in;
        e.1 += m.late;
    }
    let mut warnings = Vec::new();
    for (name, (events_in, late)) in per_operator {
        let Some(what) = refusing_late.get(name) else {
            continue;
        };
        if late > 0 && late as f64 > events_in as f64 * LATE_WARNING_SHARE {
            warnings.push(format!(
                "operator `{name}` {what} {late} of its {events_in} events as late (behind its \
                 watermark); check the sources' timestamps and `watermark: \
                 {{max_out_of_orderness_ms}}`, or set `on_late: keep`"
            ));
        }
    }
    for (name, read) in &report.sources {
        if *read == 0 {
            let why = if restored {
                "; it resumed where the checkpoint or savepoint left it: give \
                 --reset-sources to read the input from its beginning and keep the state"
            } else {
                ""
            };
            warnings.push(format!("source `{name}` had nothing to read{why}"));
        }
    }
    warnings
}
