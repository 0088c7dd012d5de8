//! `weir run`: one operator module over a JSON-lines file, locally, with
//! in-memory state.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use weir_engine::{ErrorPolicy, RunOptions, run_operator};
use weir_types::{DEFAULT_KEY_GROUPS, KeyGroupRange, wire};
use weir_wasm::{HostConfig, MemoryState, OperatorInstance, WasmHost};

#[derive(Args)]
pub struct RunArgs {
    /// The operator component (.wasm).
    #[arg(long)]
    module: PathBuf,
    /// Events as JSON lines; `-` reads stdin.
    #[arg(long, default_value = "-")]
    input: PathBuf,
    /// Where emitted events go, as JSON lines; `-` is stdout.
    #[arg(long, default_value = "-")]
    output: PathBuf,
    /// A config entry `key=value`; the value is read as JSON when it parses
    /// (`50`, `true`, `"x"`), as text otherwise. Repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    config: Vec<String>,
    /// The whole config as a JSON object (entries of --config are added).
    #[arg(long, value_name = "JSON")]
    config_json: Option<String>,
    /// Where compiled modules are cached (by digest and engine), so a module
    /// is compiled once; `none` disables the cache.
    #[arg(long, default_value = "weir-data/cache")]
    cache_dir: PathBuf,
    /// Operator name (in logs and errors).
    #[arg(long, default_value = "operator")]
    name: String,
    /// Events per call into the operator.
    #[arg(long, default_value_t = 1024)]
    batch_size: usize,
    /// What to do with an event the operator fails on.
    #[arg(long, value_enum, default_value_t = OnError::Fail)]
    on_error: OnError,
    /// How late (ms) an event may arrive behind the highest timestamp seen
    /// before event-time timers pass it by.
    #[arg(long, default_value_t = 0)]
    max_out_of_orderness_ms: i64,
}

#[derive(Clone, Copy, ValueEnum)]
enum OnError {
    /// Stop at the first failed event, exit code 1.
    Fail,
    /// Report failed events on stderr and go on; exit code 3 if any failed.
    Skip,
}

fn build_config(args: &RunArgs) -> Result<String> {
    let mut config = match &args.config_json {
        Some(text) => match serde_json::from_str::<serde_json::Value>(text)
            .context("--config-json is not JSON")?
        {
            serde_json::Value::Object(map) => map,
            _ => bail!("--config-json must be a JSON object"),
        },
        None => serde_json::Map::new(),
    };
    for entry in &args.config {
        let Some((key, value)) = entry.split_once('=') else {
            bail!("--config {entry:?} is not KEY=VALUE");
        };
        let value = serde_json::from_str(value)
            .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
        config.insert(key.to_string(), value);
    }
    Ok(serde_json::Value::Object(config).to_string())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let config = build_config(&args)?;
    let bytes = std::fs::read(&args.module)
        .with_context(|| format!("cannot read module {}", args.module.display()))?;
    let host = WasmHost::new(HostConfig {
        cache_dir: (args.cache_dir.as_os_str() != "none").then(|| args.cache_dir.clone()),
        ..HostConfig::default()
    })?;
    let module = host
        .load(&bytes)
        .with_context(|| format!("cannot load {}", args.module.display()))?;
    let mut instance = OperatorInstance::new(
        &module,
        &args.name,
        &config,
        Box::new(MemoryState::new()),
        KeyGroupRange::all(DEFAULT_KEY_GROUPS),
    )?;

    let reader: Box<dyn BufRead> = if args.input.as_os_str() == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        Box::new(BufReader::new(File::open(&args.input).with_context(
            || format!("cannot open input {}", args.input.display()),
        )?))
    };
    let writer: Box<dyn Write> = if args.output.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            File::create(&args.output)
                .with_context(|| format!("cannot create output {}", args.output.display()))?,
        )
    };
    let mut out = BufWriter::new(writer);

    // Events are parsed lazily; a bad line stops the run after the events
    // before it were processed.
    let mut bad_line: Option<anyhow::Error> = None;
    let input_name = args.input.display().to_string();
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
                    wire::parse_event(&line, now_ms())
                        .map(Some)
                        .with_context(|| format!("{input_name}:{}", i + 1))
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
