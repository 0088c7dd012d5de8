//! `weir`: the command-line entry point. Today: `weir run`, which runs one
//! operator module or a whole topology over JSON-lines files locally, with
//! no server.

mod run;
mod topology;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Stream processing with WebAssembly operators"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run one operator module, or a topology, over files of events (JSON
    /// lines) and write the events they emit, as JSON lines.
    #[command(after_help = "Examples:\n  \
        weir run --module target/guests/wasm32-wasip2/release/split_words.wasm --input guest-examples/data/lines.jsonl\n  \
        weir run --module filter.wasm --input events.jsonl --config field=amount --config op=gt --config value=50\n  \
        weir run --topology guest-examples/topologies/word-count.yaml --module-dir target/guests/wasm32-wasip2/release \\\n      \
        --input lines=guest-examples/data/lines.jsonl --output out=-\n\n\
        Event lines: {\"key\": \"k\"?, \"value\": <any JSON>, \"timestamp\": <ms>?, \"headers\": {..}?}")]
    Run(run::RunArgs),
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let result = match cli.command {
        Command::Run(args) => run::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
