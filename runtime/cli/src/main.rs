//! `weir`: the command-line entry point.
//!
//! - `weir run` (`run.rs`, `topology.rs`): one operator module or a whole
//!   topology over JSON-lines files, locally, with no server;
//! - `weir serve` (`serve.rs`): the REST API server (weir-server);
//! - `weir new` (`new.rs`): a new operator project in any guest language;
//! - `weir module | topology | savepoint | stream | produce | consume |
//!   state` (`client/`): a client of that API, each with its own
//!   `--server`, `--token` and `--json`.

mod client;
mod datadir;
mod harness;
mod new;
mod run;
mod serve;
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
    Run(Box<run::RunArgs>),
    /// Serve the REST API: modules, topologies, streams (see /v1/openapi.json).
    #[command(after_help = "Examples:\n  \
        weir serve                                   # 127.0.0.1:7070, data in ./weir-data\n  \
        weir serve --listen 127.0.0.1:0 --data-dir /var/lib/weir\n  \
        WEIR_TOKEN=secret weir serve --listen 0.0.0.0:7070\n  \
        weir serve --config weir.toml                # listen, data_dir, token, insecure_bind, max_*_bytes\n\n\
        Prints `weir serve: listening on http://ADDR` on stdout once ready. SIGINT/SIGTERM stop it \
        cleanly: topologies drain and resume at the next start.")]
    Serve(Box<serve::ServeArgs>),
    /// Upload, list, inspect and delete operator modules.
    #[command(after_help = CLIENT_HELP_MODULE)]
    Module {
        #[command(subcommand)]
        command: client::modules::ModuleCommand,
        #[command(flatten)]
        client: client::ClientOpts,
    },
    /// Apply, validate, list, inspect, start, stop and delete topologies.
    #[command(after_help = CLIENT_HELP_TOPOLOGY)]
    Topology {
        #[command(subcommand)]
        command: client::topologies::TopologyCommand,
        #[command(flatten)]
        client: client::ClientOpts,
    },
    /// Write a named savepoint of a topology (running: a checkpoint now;
    /// stopped: its last one), or list savepoints (`weir savepoint ls`).
    #[command(after_help = CLIENT_HELP_SAVEPOINT, args_conflicts_with_subcommands = true)]
    Savepoint {
        #[command(subcommand)]
        list: Option<client::listing::SavepointCommand>,
        /// The topology.
        topology: Option<String>,
        /// Savepoint name [default: sp-<time>].
        name: Option<String>,
        #[command(flatten)]
        client: client::ClientOpts,
    },
    /// A cluster node's view: members, who holds each input partition and
    /// its lag, control records it could not apply.
    #[command(after_help = CLIENT_HELP)]
    Cluster {
        #[command(flatten)]
        client: client::ClientOpts,
    },
    /// List streams (`weir stream ls`).
    #[command(after_help = CLIENT_HELP)]
    Stream {
        #[command(subcommand)]
        command: client::listing::StreamCommand,
        #[command(flatten)]
        client: client::ClientOpts,
    },
    /// Append events (JSON lines) to a stream from a file or stdin.
    #[command(after_help = CLIENT_HELP_PRODUCE)]
    Produce {
        #[command(flatten)]
        args: client::streams::ProduceArgs,
        #[command(flatten)]
        client: client::ClientOpts,
    },
    /// Print a stream's events as JSON lines; --follow keeps reading.
    #[command(after_help = CLIENT_HELP_CONSUME)]
    Consume {
        #[command(flatten)]
        args: client::streams::ConsumeArgs,
        #[command(flatten)]
        client: client::ClientOpts,
    },
    /// Read an operator's keyed state (of a running topology, or from the
    /// last checkpoint of a stopped one).
    #[command(after_help = CLIENT_HELP_STATE)]
    State {
        #[command(subcommand)]
        command: client::state::StateCommand,
        #[command(flatten)]
        client: client::ClientOpts,
    },
    /// List a topology's dead letters with their context, or replay a
    /// range of them after a fix.
    #[command(after_help = CLIENT_HELP_DEAD_LETTER, alias = "dead-letters")]
    DeadLetter {
        #[command(subcommand)]
        command: client::letters::LetterCommand,
        #[command(flatten)]
        client: client::ClientOpts,
    },
    // ---- weir new (issue 23) ----
    /// Write a new operator project (sources, build.sh, sample events, README).
    #[command(after_help = "Examples:\n  \
        weir new my-op --lang go && sh my-op/build.sh\n  \
        weir run --module my-op/my-op.wasm --input my-op/events.jsonl | diff - my-op/expected.jsonl\n  \
        weir new enrich --lang python --dir ops/enrich --weir ~/src/weir\n\n\
        Languages: rust, c, js, python, go. The SDK is taken by path from a Weir checkout \
        (--weir, WEIR_CHECKOUT; default: the one this weir was built from).")]
    New(new::NewArgs),
    /// Test one operator: run it over input events with state in memory and
    /// compare what it emits with the expected events.
    #[command(after_help = "Examples:\n  \
        weir test --module my-op.wasm --input events.jsonl --expect expected.jsonl\n  \
        weir test --module filter.wasm --input in.jsonl --expect out.jsonl --config field=amount --sort\n  \
        weir test --topology join.yaml --module-dir ops --input tx=tx.jsonl --input profiles=p.jsonl --expect out=out.jsonl\n\n\
        With --topology, each --input names a source and each --expect a sink; it runs as `weir run --topology` \
        does, in a throwaway data directory. The files are JSON lines of events; only the fields the expected file uses are compared \
        (leave out `timestamp` to ignore it). Input events without a timestamp get 0. \
        Exit 0: as expected; 1: a difference (printed) or the operator failed; 2: the test could not run.")]
    Test(harness::TestArgs),
    /// `weir serve` runs itself with this to compile an upload in a child
    /// process: the component on stdin, the artifact on stdout.
    #[command(name = "compile-module", hide = true)]
    CompileModule {
        /// Data (heap) the process may use, bytes.
        #[arg(long)]
        memory_bytes: u64,
    },
}

const CLIENT_HELP: &str = "The server is --server URL (WEIR_SERVER, default http://127.0.0.1:7070), with \
    --token (WEIR_TOKEN) when it needs one; --json prints the server's JSON.\n\n\
    Exit codes: 0 ok, 1 other failure, 2 invalid request (bad file, name, document or event), \
    3 not found, 4 conflict (running, in use, exists), 5 unauthorized, 6 server unreachable, 7 server error.";
const CLIENT_HELP_SAVEPOINT: &str = "Examples:\n  \
    weir savepoint word-count before-upgrade\n  weir savepoint ls word-count\n  weir savepoint ls\n\n\
    The server is --server URL (WEIR_SERVER), --token (WEIR_TOKEN); --json for scripts. \
    Exit codes: 0 ok, 1 other, 2 invalid, 3 not found, 4 conflict, 5 unauthorized, 6 unreachable, 7 server error.";
const CLIENT_HELP_MODULE: &str = "Examples:\n  \
    weir module push target/guests/wasm32-wasip2/release/word_count.wasm --name word-count\n  \
    weir module ls\n  weir module inspect word-count\n  weir module rm word-count@1\n\n\
    The server is --server URL (WEIR_SERVER), --token (WEIR_TOKEN); --json for scripts. \
    Exit codes: 0 ok, 1 other, 2 invalid, 3 not found, 4 conflict, 5 unauthorized, 6 unreachable, 7 server error.";
const CLIENT_HELP_TOPOLOGY: &str = "Examples:\n  \
    weir topology apply guest-examples/topologies/word-count.yaml --start\n  \
    weir topology status word-count\n  weir topology stop word-count --savepoint before-upgrade\n  \
    weir topology start word-count --savepoint before-upgrade\n\n\
    The server is --server URL (WEIR_SERVER), --token (WEIR_TOKEN); --json for scripts. \
    Exit codes: 0 ok, 1 other, 2 invalid, 3 not found, 4 conflict, 5 unauthorized, 6 unreachable, 7 server error.";
const CLIENT_HELP_PRODUCE: &str = "Examples:\n  \
    weir produce lines guest-examples/data/lines.jsonl\n  \
    echo '{\"key\": \"k\", \"value\": {\"n\": 1}}' | weir produce events\n\n\
    Each request is acknowledged once its events are on disk. Exit codes: 0 ok, 1 other, \
    2 invalid event, 5 unauthorized, 6 unreachable, 7 server error.";
const CLIENT_HELP_CONSUME: &str = "Examples:\n  \
    weir consume counts\n  weir consume counts --from 100 --limit 10\n  weir consume counts --follow\n\n\
    Events print in the wire format `weir produce` reads (with their offset under --json). \
    Exit codes: 0 ok, 1 other, 2 offset out of range, 5 unauthorized, 6 unreachable, 7 server error.";
const CLIENT_HELP_STATE: &str = "Examples:\n  \
    weir state get word-count count count the\n  weir state get t op s AAEC --b64\n\n\
    Exit codes: 0 ok, 1 other, 2 invalid, 3 no such topology, operator or state, a stateless \
    operator, or no value for the key (the message says which), 4 stopped before its first \
    checkpoint, 5 unauthorized, 6 unreachable, 7 server error.";

const CLIENT_HELP_DEAD_LETTER: &str = "Examples:\n  \
    weir dead-letter ls word-count\n  weir dead-letter ls word-count --offset 100 --limit 10\n  \
    weir dead-letter replay word-count --from 0 --to 10\n\n\
    A topology writes dead letters when an operator has `on_error: dead-letter` (or `on_late: dead-letter`). \
    Replay feeds letters FROM..TO (TO excluded) back into the running topology, after an upgrade. \
    Exit codes: 0 ok, 1 some replayed letters failed again (listed), 2 invalid range or limit, \
    3 no such topology, 4 topology not running (replay), 5 unauthorized, 6 unreachable, 7 server error.";

/// `default` applies when `WEIR_LOG` is not set.
fn init_tracing(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// A client command's outcome as an exit code, its failure on stderr.
fn finish(outcome: client::Outcome) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message());
            failure.exit_code()
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A server says what it does (requests, topologies); commands only warn.
    // What operators log at info (`weir::guest`) is shown by both.
    let default_filter = match cli.command {
        Command::Serve(_) => {
            "warn,weir_server=info,weir_engine=info,tower_http=info,weir::guest=info"
        }
        _ => "warn,weir::guest=info",
    };
    init_tracing(cli.log_format, default_filter);
    let client = client::Client::new;
    let outcome = match cli.command {
        Command::Run(args) => run::run(*args),
        Command::Serve(args) => serve::run(*args),
        Command::Module { command, client: c } => {
            Ok(finish(client::modules::run(&client(&c), command)))
        }
        Command::Topology { command, client: c } => {
            Ok(finish(client::topologies::run(&client(&c), command)))
        }
        Command::Savepoint {
            list,
            topology,
            name,
            client: c,
        } => Ok(finish(match (list, topology) {
            (Some(list), _) => client::listing::savepoints(&client(&c), list),
            (None, Some(topology)) => client::topologies::savepoint(&client(&c), &topology, name),
            (None, None) => Err(client::Failure::Invalid(
                "give a topology (`weir savepoint TOPOLOGY [NAME]`), or list savepoints with \
                 `weir savepoint ls [TOPOLOGY]`"
                    .into(),
            )),
        })),
        Command::Cluster { client: c } => Ok(finish(client::cluster::status(&client(&c)))),
        Command::Stream { command, client: c } => {
            Ok(finish(client::listing::streams(&client(&c), command)))
        }
        Command::Produce { args, client: c } => {
            Ok(finish(client::streams::produce(&client(&c), args)))
        }
        Command::Consume { args, client: c } => {
            Ok(finish(client::streams::consume(&client(&c), args)))
        }
        Command::State { command, client: c } => {
            Ok(finish(client::state::run(&client(&c), command)))
        }
        Command::DeadLetter { command, client: c } => {
            Ok(finish(client::letters::run(&client(&c), command)))
        }
        Command::New(args) => new::run(args),
        Command::Test(args) => Ok(harness::run(&args)),
        Command::CompileModule { memory_bytes } => Ok(serve::compile_child(memory_bytes)),
    };
    let result = outcome;
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
