//! `weir run`: one operator module, or a whole topology, over JSON-lines
//! files, locally, with in-memory state. No server involved.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use weir_engine::{ErrorPolicy, RunOptions, run_operator};
use weir_types::{DEFAULT_KEY_GROUPS, KeyGroupRange, now_ms, wire};
use weir_wasm::{HostConfig, MemoryState, OperatorInstance, WasmHost};

#[derive(Args)]
pub struct RunArgs {
    /// One operator component (.wasm) to run.
    #[arg(
        long,
        conflicts_with = "topology",
        required_unless_present = "topology"
    )]
    pub(crate) module: Option<PathBuf>,
    /// A topology document (YAML or JSON) to run. Its `module:` entries may
    /// be paths to .wasm files (relative to the document) or names looked
    /// up in --module-dir.
    #[arg(long)]
    pub(crate) topology: Option<PathBuf>,
    /// With --module: the events file (JSON lines; `-` is stdin, the
    /// default). With --topology: `SOURCE=FILE` for a source, repeatable.
    #[arg(long)]
    pub(crate) input: Vec<String>,
    /// With --module: where emitted events go (`-` is stdout, the default).
    /// With --topology: `SINK=FILE` (or `SINK=-`) for a sink, repeatable.
    #[arg(long)]
    pub(crate) output: Vec<String>,
    /// Where a topology's modules named without a path are found, as
    /// `<name>.wasm` (dashes may be underscores). Repeatable.
    #[arg(long, value_name = "DIR")]
    pub(crate) module_dir: Vec<PathBuf>,
    /// Where embedded streams live: a topology's `stream:` sources and
    /// sinks that no --input/--output binds read and append there.
    #[arg(long, default_value = "weir-data", value_name = "DIR")]
    pub(crate) data_dir: PathBuf,
    /// With --topology: keep operator state in the data directory
    /// (`topologies/<name>/state.redb`), written at the end of the run, so
    /// the next run of the topology continues from it. Without it (and
    /// without checkpoints), state lives in memory.
    #[arg(long)]
    pub(crate) keep_state: bool,
    /// With --topology: take a checkpoint every this many ms (overrides the
    /// document's `checkpoint.interval_ms`). With checkpoints, state lives
    /// in the data directory, file and stream outputs are exactly-once, and
    /// a run after a crash (or a stop) resumes from the last checkpoint.
    #[arg(long, value_name = "MS")]
    pub(crate) checkpoint_interval_ms: Option<u64>,
    /// With --topology and checkpoints: forget the topology's state and
    /// checkpoints in the data directory and start from the beginning.
    #[arg(long)]
    pub(crate) fresh: bool,
    /// With --topology: start from this savepoint file (written by a
    /// stop-with-savepoint), replacing the topology's state; the topology
    /// may have other module versions and parallelisms than when it was
    /// taken, but the same operator and state names.
    #[arg(long, value_name = "FILE")]
    pub(crate) from_savepoint: Option<PathBuf>,
    /// With --topology and a checkpoint or savepoint to start from: read
    /// every source from its beginning while keeping operator state (a
    /// restore otherwise resumes each source at the position it had, so a
    /// new file no longer than the old one gives nothing).
    #[arg(long)]
    pub(crate) reset_sources: bool,
    /// With --topology and checkpoints: when the input is over, export the
    /// final checkpoint as a savepoint to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) savepoint_to: Option<PathBuf>,
    /// With --topology: Kafka brokers (`host:port,…`) for `kafka:` sources
    /// and sinks whose document names none. Kafka sources read what their
    /// partitions hold when the run starts, then the input ends.
    #[arg(long, env = "WEIR_KAFKA_BROKERS", value_name = "HOST:PORT,…")]
    pub(crate) kafka_brokers: Option<String>,
    /// With --topology: a file for dead letters (JSON lines) instead of the
    /// topology's dead-letter stream (`dead_letter_stream`, default
    /// `<name>-dead-letter`, in --data-dir).
    #[arg(long, value_name = "FILE")]
    pub(crate) dead_letter: Option<PathBuf>,
    /// A config entry `key=value`; the value is read as JSON when it parses
    /// (`50`, `true`, `"x"`), as text otherwise. Repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub(crate) config: Vec<String>,
    /// The whole config as a JSON object (entries of --config are added).
    #[arg(long, value_name = "JSON")]
    pub(crate) config_json: Option<String>,
    /// Where compiled modules are cached (by digest and engine), so a module
    /// is compiled once; `none` disables the cache.
    #[arg(long, default_value = "weir-data/cache")]
    pub(crate) cache_dir: PathBuf,
    /// With --topology: worker threads running its tasks [default: the
    /// number of cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) workers: Option<u16>,
    /// With --module: the operator's name in logs and errors (default: the
    /// module file's name, `word_count` for word_count.wasm).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Events per call into the operator.
    #[arg(long, default_value_t = 1024)]
    pub(crate) batch_size: usize,
    /// With --module: key each event by this top-level field of its JSON
    /// value (as `key_by: {field: F}` does in a topology), so a stateful
    /// operator can be tried on events that carry no key.
    #[arg(long, value_name = "FIELD", conflicts_with = "topology")]
    pub(crate) key_by: Option<String>,
    /// What to do with an event the operator fails on.
    #[arg(long, value_enum, default_value_t = OnError::Fail)]
    pub(crate) on_error: OnError,
    /// How late (ms) an event may arrive behind the highest timestamp seen
    /// before event-time timers pass it by.
    #[arg(long, default_value_t = 0)]
    pub(crate) max_out_of_orderness_ms: i64,
    /// With --topology: the PostgreSQL URL of `postgres:` sinks that give
    /// none (`postgres://user:password@host:port/database`).
    #[arg(long, env = "WEIR_POSTGRES_URL", value_name = "URL")]
    pub(crate) postgres_url: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum OnError {
    /// Stop at the first failed event, exit code 1.
    Fail,
    /// Report failed events on stderr and go on; exit code 3 if any failed.
    Skip,
}

fn build_config(args: &RunArgs) -> Result<String> {
    config_of(args.config_json.as_deref(), &args.config)
}

/// An operator's config: `json` (an object) with the `key=value` entries
/// added (a value that parses as JSON is JSON, else text).
pub fn config_of(json: Option<&str>, entries: &[String]) -> Result<String> {
    let mut config = match json {
        Some(text) => match serde_json::from_str::<serde_json::Value>(text)
            .context("--config-json is not JSON")?
        {
            serde_json::Value::Object(map) => map,
            _ => bail!("--config-json must be a JSON object"),
        },
        None => serde_json::Map::new(),
    };
    for entry in entries {
        let Some((key, value)) = entry.split_once('=') else {
            bail!("--config {entry:?} is not KEY=VALUE");
        };
        let value = serde_json::from_str(value)
            .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
        config.insert(key.to_string(), value);
    }
    Ok(serde_json::Value::Object(config).to_string())
}

fn host(args: &RunArgs) -> Result<WasmHost> {
    cached_host(&args.cache_dir)
}

/// A host whose compiled modules are cached in `cache_dir` (`none`: not
/// cached).
pub fn cached_host(cache_dir: &Path) -> Result<WasmHost> {
    Ok(WasmHost::new(HostConfig {
        cache_dir: (cache_dir.as_os_str() != "none").then(|| cache_dir.to_path_buf()),
        ..HostConfig::default()
    })?)
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    match (&args.module, &args.topology) {
        (Some(module), _) => run_module(&args, module.clone()),
        (None, Some(topology)) => {
            if let Some(workers) = args.workers {
                weir_engine::WorkerPool::configure_shared(weir_engine::PoolConfig {
                    workers: usize::from(workers),
                    ..weir_engine::PoolConfig::default()
                })?;
            }
            crate::topology::run(&args, &host(&args)?, topology)
        }
        (None, None) => bail!("give --module FILE or --topology FILE"),
    }
}

fn run_module(args: &RunArgs, module_path: PathBuf) -> Result<ExitCode> {
    if args.input.len() > 1 || args.output.len() > 1 {
        bail!(
            "with --module, give at most one --input and one --output (paths, or - for stdin/stdout)"
        );
    }
    let input = PathBuf::from(args.input.first().map_or("-", String::as_str));
    let output = PathBuf::from(args.output.first().map_or("-", String::as_str));
    let config = build_config(args)?;
    let bytes = std::fs::read(&module_path)
        .with_context(|| format!("cannot read module {}", module_path.display()))?;
    let host = host(args)?;
    let module = host
        .load(&bytes)
        .with_context(|| format!("cannot load {}", module_path.display()))?;
    let name = match &args.name {
        Some(name) => name.clone(),
        None => module_path
            .file_stem()
            .map_or("operator".into(), |s| s.to_string_lossy().into_owned()),
    };
    let mut instance = OperatorInstance::new(
        &module,
        &name,
        &config,
        Box::new(MemoryState::new()),
        KeyGroupRange::all(DEFAULT_KEY_GROUPS),
    )?;

    let reader: Box<dyn BufRead> = if input.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        Box::new(BufReader::new(File::open(&input).with_context(|| {
            format!("cannot open input {}", input.display())
        })?))
    };
    let writer: Box<dyn Write> = if output.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            File::create(&output)
                .with_context(|| format!("cannot create output {}", output.display()))?,
        )
    };
    let mut out = BufWriter::new(writer);

    // Events are parsed lazily; a bad line stops the run after the events
    // before it were processed.
    let mut bad_line: Option<anyhow::Error> = None;
    let input_name = input.display().to_string();
    let events = reader
        .lines()
        .enumerate()
        .map_while(|(i, line)| {
            let parsed = line
                .with_context(|| format!("cannot read {input_name}"))
                .and_then(|line| {
                    if line.trim().is_empty() {
                        return Ok(None);
                    }
                    let mut event = wire::parse_event(&line, now_ms())
                        .with_context(|| format!("{input_name}:{}", i + 1))?;
                    if let Some(field) = &args.key_by {
                        event.key =
                            Some(wire::field_key(&event.value, field).with_context(|| {
                                format!(
                                    "{input_name}:{}: --key-by {field}: the value is not a JSON \
                                     object with a field `{field}`",
                                    i + 1
                                )
                            })?);
                    }
                    Ok(Some(event))
                });
            match parsed {
                Ok(event) => Some(event),
                Err(e) => {
                    bad_line = Some(e);
                    None
                }
            }
        })
        .flatten();

    let options = RunOptions {
        batch_size: args.batch_size,
        on_error: match args.on_error {
            OnError::Fail => ErrorPolicy::Fail,
            OnError::Skip => ErrorPolicy::Skip,
        },
        max_out_of_orderness_ms: args.max_out_of_orderness_ms,
    };
    let report = run_operator(
        &mut instance,
        events,
        |batch| {
            for event in batch.iter() {
                writeln!(out, "{}", wire::format_event(&event)).map_err(|e| e.to_string())?;
            }
            Ok(())
        },
        options,
    );
    out.flush().context("cannot write output")?;
    let report = report?;
    if let Some(e) = bad_line {
        return Err(e);
    }
    for skipped in &report.skipped {
        match skipped.index {
            Some(i) => eprintln!("skipped event {i}: {}", skipped.message),
            None => eprintln!("skipped timer: {}", skipped.message),
        }
    }
    tracing::info!(
        events_in = report.events_in,
        events_out = report.events_out,
        timers = report.timers_fired,
        skipped = report.skipped.len(),
        restarts = report.restarts,
        "run finished"
    );
    Ok(if report.skipped.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}
