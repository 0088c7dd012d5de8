//! `weir serve`: the API server. Settings come from flags, then `WEIR_*`
//! environment variables, then the config file (`--config weir.toml`),
//! then defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use serde::Deserialize;
use weir_engine::{PoolConfig, WorkerPool};
use weir_server::ServerConfig;
use weir_topology::{OperatorLimitsDoc, RestartDoc, TopologyLimits};
use weir_wasm::{
    CompileSandbox, DEFAULT_COMPILE_MEMORY_BYTES, DEFAULT_COMPILE_TIMEOUT, ModuleError,
    SandboxLimits, ShapeLimits,
};

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:7070].
    #[arg(long, env = "WEIR_LISTEN")]
    listen: Option<SocketAddr>,
    /// Where modules, topologies, state and streams live [default: weir-data].
    #[arg(long, env = "WEIR_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A TOML file with any of: listen, data_dir, token, token_file,
    /// insecure_bind, metrics_public,
    /// max_module_bytes, max_body_bytes, max_document_bytes, max_operators,
    /// max_instances, operator_memory_mb, operator_call_budget_ms,
    /// operator_max_state_value_bytes, operator_max_output_bytes_per_call,
    /// max_read_bytes, max_followers_per_stream, max_followers,
    /// max_function_body_bytes, max_function_locals, max_functions,
    /// max_code_bytes, compile_memory_bytes, compile_timeout_ms, restart_attempts, restart_backoff_ms,
    /// restart_max_backoff_ms, min_free_bytes, unload_idle_secs, kafka_brokers,
    /// postgres_url, workers, blocking_workers, cluster, node_id,
    /// cluster_chunk_bytes.
    #[arg(long, env = "WEIR_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The bearer token clients must send (also WEIR_TOKEN).
    #[arg(long, env = "WEIR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Listen on a non-loopback address without a token.
    #[arg(long)]
    insecure_bind: bool,
    /// Read the token from this file (its first line), so it shows in
    /// neither `ps` nor the environment; it wins over --token / WEIR_TOKEN.
    #[arg(long, env = "WEIR_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Serve /metrics without the token (it names topologies, operators and
    /// streams; closed by default when a token is set).
    #[arg(long)]
    metrics_public: bool,
    /// Largest module upload, bytes [default: 64 MiB].
    #[arg(long, env = "WEIR_MAX_MODULE_BYTES")]
    max_module_bytes: Option<usize>,
    /// Largest body of other requests, bytes [default: 16 MiB].
    #[arg(long, env = "WEIR_MAX_BODY_BYTES")]
    max_body_bytes: Option<usize>,
    /// Largest topology document, bytes [default: 4 MiB].
    #[arg(long, env = "WEIR_MAX_DOCUMENT_BYTES")]
    max_document_bytes: Option<usize>,
    /// Most operators in one topology (and most sources, and most sinks)
    /// [default: 256].
    #[arg(long, env = "WEIR_MAX_OPERATORS")]
    max_operators: Option<usize>,
    /// Most operator instances of one topology (the sum of its operators'
    /// parallelism; each is a thread) [default: 1024].
    #[arg(long, env = "WEIR_MAX_INSTANCES")]
    max_instances: Option<usize>,
    /// Linear memory of each operator instance, MiB, and the most an
    /// operator's own `limits.memory_mb` may give it [default: 256].
    #[arg(long, env = "WEIR_OPERATOR_MEMORY_MB")]
    operator_memory_mb: Option<u64>,
    /// Time one operator call may run, ms, and the most an operator's own
    /// `limits.call_budget_ms` may give it [default: 2000].
    #[arg(long, env = "WEIR_OPERATOR_CALL_BUDGET_MS")]
    operator_call_budget_ms: Option<u64>,
    /// Largest state value one write may store, bytes, and the most an
    /// operator's own `limits.max_state_value_bytes` may allow
    /// [default: 1 MiB].
    #[arg(long, env = "WEIR_OPERATOR_MAX_STATE_VALUE_BYTES")]
    operator_max_state_value_bytes: Option<u64>,
    /// Bytes of events one operator call may emit, and the most an
    /// operator's own `limits.max_output_bytes_per_call` may allow
    /// [default: 64 MiB].
    #[arg(long, env = "WEIR_OPERATOR_MAX_OUTPUT_BYTES_PER_CALL")]
    operator_max_output_bytes_per_call: Option<u64>,
    /// Most bytes one read of a stream returns (at least one event)
    /// [default: 8 MiB].
    #[arg(long, env = "WEIR_MAX_READ_BYTES")]
    max_read_bytes: Option<usize>,
    /// Most followers (SSE) of one stream [default: 64].
    #[arg(long, env = "WEIR_MAX_FOLLOWERS_PER_STREAM")]
    max_followers_per_stream: Option<usize>,
    /// Most followers (SSE) in all [default: 512].
    #[arg(long, env = "WEIR_MAX_FOLLOWERS")]
    max_followers: Option<usize>,
    /// Largest body of one function in an uploaded module, bytes (checked
    /// before compiling) [default: 1 MiB].
    #[arg(long, env = "WEIR_MAX_FUNCTION_BODY_BYTES")]
    max_function_body_bytes: Option<usize>,
    /// Most locals of one function in an uploaded module [default: 500].
    #[arg(long, env = "WEIR_MAX_FUNCTION_LOCALS")]
    max_function_locals: Option<u64>,
    /// Most functions in an uploaded module [default: 100000].
    #[arg(long, env = "WEIR_MAX_FUNCTIONS")]
    max_functions: Option<usize>,
    /// Most bytes of code in an uploaded module [default: 32 MiB].
    #[arg(long, env = "WEIR_MAX_CODE_BYTES")]
    max_code_bytes: Option<usize>,
    /// Memory (heap and mappings) the child process compiling one upload
    /// may use, bytes; over it the upload is refused [default: 2 GiB].
    #[arg(long, env = "WEIR_COMPILE_MEMORY_BYTES")]
    compile_memory_bytes: Option<u64>,
    /// Time compiling one upload may take, ms; then the compiler is killed
    /// and the upload refused [default: 120000].
    #[arg(long, env = "WEIR_COMPILE_TIMEOUT_MS")]
    compile_timeout_ms: Option<u64>,
    /// Restarts in a row of a failed topology before it is `failed`, for
    /// topologies whose document sets no `restart:` [default: 10].
    #[arg(long, env = "WEIR_RESTART_ATTEMPTS")]
    restart_attempts: Option<u32>,
    /// Wait before the first restart, ms; it doubles per attempt [default: 500].
    #[arg(long, env = "WEIR_RESTART_BACKOFF_MS")]
    restart_backoff_ms: Option<u64>,
    /// Longest wait between restarts, ms [default: 60000].
    #[arg(long, env = "WEIR_RESTART_MAX_BACKOFF_MS")]
    restart_max_backoff_ms: Option<u64>,
    /// Produce is refused (507) while the data directory's disk has fewer
    /// free bytes, so checkpoints keep room; 0: only a full disk refuses
    /// [default: 64 MiB].
    #[arg(long, env = "WEIR_MIN_FREE_BYTES")]
    min_free_bytes: Option<u64>,
    /// Seconds an operator instance may go without an event or timer
    /// before it is dropped (its memory freed, its state kept; the next
    /// event instantiates it again and runs `init`); 0: never [default: 60].
    #[arg(long, env = "WEIR_UNLOAD_IDLE_SECS")]
    unload_idle_secs: Option<u64>,
    /// The PostgreSQL URL of topologies' `postgres:` sinks that give none
    /// (`postgres://user:password@host:port/database`).
    #[arg(long, env = "WEIR_POSTGRES_URL", value_name = "URL")]
    postgres_url: Option<String>,
    /// Kafka brokers (`host:port,…`) for `kafka:` sources and sinks whose
    /// document names none.
    #[arg(long, env = "WEIR_KAFKA_BROKERS", value_name = "HOST:PORT,…")]
    kafka_brokers: Option<String>,
    /// Be a node of cluster NAME: modules, topologies and their desired
    /// state live in the Kafka topic `weir-cluster-NAME` on
    /// --kafka-brokers (created when missing), and every node applies
    /// them; any node's API takes writes.
    #[arg(long, env = "WEIR_CLUSTER", value_name = "NAME")]
    cluster: Option<String>,
    /// This node's id in its cluster [default: one made at the first
    /// start and kept in the data directory's `node-id`].
    #[arg(long, env = "WEIR_NODE_ID", value_name = "ID")]
    node_id: Option<String>,
    /// Module uploads are written to the control topic in records of at
    /// most this many bytes (keep it under the broker's
    /// `max.message.bytes`) [default: 524288].
    #[arg(long, env = "WEIR_CLUSTER_CHUNK_BYTES", value_name = "BYTES")]
    cluster_chunk_bytes: Option<usize>,
    /// Worker threads running every topology's sources, operators and
    /// sinks [default: the number of cores].
    #[arg(long, env = "WEIR_WORKERS", value_name = "N")]
    workers: Option<usize>,
    /// Worker threads for work that waits on I/O (checkpoint commits,
    /// sinks writing as they go, broker polls) [default: 2].
    #[arg(long, env = "WEIR_BLOCKING_WORKERS", value_name = "N")]
    blocking_workers: Option<usize>,
}

/// The config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    token: Option<String>,
    insecure_bind: Option<bool>,
    token_file: Option<PathBuf>,
    metrics_public: Option<bool>,
    max_module_bytes: Option<usize>,
    max_body_bytes: Option<usize>,
    max_document_bytes: Option<usize>,
    max_operators: Option<usize>,
    max_instances: Option<usize>,
    operator_memory_mb: Option<u64>,
    operator_call_budget_ms: Option<u64>,
    operator_max_state_value_bytes: Option<u64>,
    operator_max_output_bytes_per_call: Option<u64>,
    max_read_bytes: Option<usize>,
    max_followers_per_stream: Option<usize>,
    max_followers: Option<usize>,
    max_function_body_bytes: Option<usize>,
    max_function_locals: Option<u64>,
    max_functions: Option<usize>,
    max_code_bytes: Option<usize>,
    compile_memory_bytes: Option<u64>,
    compile_timeout_ms: Option<u64>,
    restart_attempts: Option<u32>,
    restart_backoff_ms: Option<u64>,
    restart_max_backoff_ms: Option<u64>,
    min_free_bytes: Option<u64>,
    unload_idle_secs: Option<u64>,
    postgres_url: Option<String>,
    kafka_brokers: Option<String>,
    workers: Option<usize>,
    blocking_workers: Option<usize>,
    cluster: Option<String>,
    node_id: Option<String>,
    cluster_chunk_bytes: Option<usize>,
}

fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
}

/// The token in `path`: its first line, without the line end.
fn read_token(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    anyhow::ensure!(
        !token.is_empty(),
        "the token file {} is empty: put the token on its first line",
        path.display()
    );
    Ok(token)
}

/// The server's operator limits: `base` with those the flags or the file
/// give, each at least 1.
fn operator_limits(base: SandboxLimits, given: OperatorLimitsDoc) -> Result<SandboxLimits> {
    let set = [
        given.memory_mb,
        given.call_budget_ms,
        given.max_state_value_bytes,
        given.max_output_bytes_per_call,
    ];
    if set.contains(&Some(0)) {
        anyhow::bail!(
            "--operator-memory-mb, --operator-call-budget-ms, --operator-max-state-value-bytes and --operator-max-output-bytes-per-call must be at least 1"
        );
    }
    Ok(weir_engine::sandbox_limits(&given, base))
}

/// Flags and env (clap merged them) over the file over defaults.
fn config(args: ServeArgs, token: Option<String>) -> Result<(ServerConfig, PoolConfig)> {
    let file = match &args.config {
        Some(p) => read_file(p)?,
        None => FileConfig::default(),
    };
    let d = ServerConfig::default();
    let token = match args.token_file.as_ref().or(file.token_file.as_ref()) {
        Some(path) => Some(read_token(path)?),
        None => token.or(file.token),
    };
    // A flag (or its env) over the file's key over the default.
    macro_rules! pick {
        ($field:ident, $default:expr) => {
            args.$field.or(file.$field).unwrap_or($default)
        };
    }
    let p = PoolConfig::default();
    let pool = PoolConfig {
        workers: pick!(workers, p.workers),
        blocking_workers: pick!(blocking_workers, p.blocking_workers),
    };
    if pool.workers == 0 || pool.blocking_workers == 0 {
        anyhow::bail!("--workers and --blocking-workers must be at least 1");
    }
    let kafka_brokers = args.kafka_brokers.or(file.kafka_brokers);
    let cluster = match args.cluster.or(file.cluster) {
        None => None,
        Some(name) => Some(weir_server::ClusterConfig {
            name,
            brokers: kafka_brokers.clone().context(
                "--cluster needs the brokers of its control topic: give --kafka-brokers HOST:PORT,… (WEIR_KAFKA_BROKERS)",
            )?,
            node_id: args.node_id.or(file.node_id),
            chunk_bytes: args
                .cluster_chunk_bytes
                .or(file.cluster_chunk_bytes)
                .unwrap_or(weir_server::cluster::DEFAULT_CHUNK_BYTES),
            heartbeat: weir_server::cluster::DEFAULT_HEARTBEAT,
        }),
    };
    let server = ServerConfig {
        listen: pick!(listen, d.listen),
        data_dir: pick!(data_dir, d.data_dir),
        token: token.filter(|t| !t.is_empty()),
        insecure_bind: args.insecure_bind || file.insecure_bind.unwrap_or(false),
        metrics_public: args.metrics_public || file.metrics_public.unwrap_or(false),
        max_module_bytes: pick!(max_module_bytes, d.max_module_bytes),
        max_body_bytes: pick!(max_body_bytes, d.max_body_bytes),
        max_document_bytes: pick!(max_document_bytes, d.max_document_bytes),
        topology_limits: TopologyLimits {
            max_operators: pick!(max_operators, d.topology_limits.max_operators),
            max_instances: pick!(max_instances, d.topology_limits.max_instances),
            ..d.topology_limits
        },
        operator_limits: operator_limits(
            d.operator_limits,
            OperatorLimitsDoc {
                memory_mb: args.operator_memory_mb.or(file.operator_memory_mb),
                call_budget_ms: args
                    .operator_call_budget_ms
                    .or(file.operator_call_budget_ms),
                max_state_value_bytes: args
                    .operator_max_state_value_bytes
                    .or(file.operator_max_state_value_bytes),
                max_output_bytes_per_call: args
                    .operator_max_output_bytes_per_call
                    .or(file.operator_max_output_bytes_per_call),
            },
        )?,
        max_read_bytes: pick!(max_read_bytes, d.max_read_bytes),
        max_followers_per_stream: pick!(max_followers_per_stream, d.max_followers_per_stream),
        max_followers: pick!(max_followers, d.max_followers),
        shape: ShapeLimits {
            max_function_body_bytes: pick!(
                max_function_body_bytes,
                d.shape.max_function_body_bytes
            ),
            max_function_locals: pick!(max_function_locals, d.shape.max_function_locals),
            max_functions: pick!(max_functions, d.shape.max_functions),
            max_code_bytes: pick!(max_code_bytes, d.shape.max_code_bytes),
        },
        compile: Some(CompileSandbox {
            program: std::env::current_exe()
                .context("cannot find this program to run its compiler")?,
            args: vec!["compile-module".into()],
            memory_bytes: pick!(compile_memory_bytes, DEFAULT_COMPILE_MEMORY_BYTES),
            timeout: args
                .compile_timeout_ms
                .or(file.compile_timeout_ms)
                .map_or(DEFAULT_COMPILE_TIMEOUT, Duration::from_millis),
        }),
        restart: d.restart.with(Some(&RestartDoc {
            max_attempts: args.restart_attempts.or(file.restart_attempts),
            initial_backoff_ms: args.restart_backoff_ms.or(file.restart_backoff_ms),
            max_backoff_ms: args.restart_max_backoff_ms.or(file.restart_max_backoff_ms),
            reset_after_ms: None,
        })),
        min_free_bytes: args
            .min_free_bytes
            .or(file.min_free_bytes)
            .unwrap_or(d.min_free_bytes),
        unload_idle: match args.unload_idle_secs.or(file.unload_idle_secs) {
            Some(0) => None,
            Some(secs) => Some(std::time::Duration::from_secs(secs)),
            None => d.unload_idle,
        },
        outside: weir_connectors::OutsideSettings {
            postgres_url: args.postgres_url.or(file.postgres_url),
        },
        kafka_brokers,
        cluster,
    };
    Ok((server, pool))
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

pub fn run(args: ServeArgs) -> Result<ExitCode> {
    let token = args.token.clone();
    let (config, pool) = config(args, token)?;
    let _lock = crate::datadir::lock(&config.data_dir)?;
    WorkerPool::configure_shared(pool)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("weir-http")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(weir_server::serve(
        config,
        |addr| {
            // One line on stdout, so scripts (and tests) learn the port.
            crate::client::out(&format!("weir serve: listening on http://{addr}\n"));
            if weir_server::http::console_built() {
                tracing::info!("web console at http://{addr}/");
            } else {
                tracing::info!(
                    "this weir has no web console: `cargo xtask console`, then build weir again"
                );
            }
        },
        shutdown_signal(),
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// `weir compile-module`: the compiler child of `weir serve` (see
/// `weir_wasm::CompileSandbox`).
pub fn compile_child(memory_bytes: u64) -> ExitCode {
    let outcome = weir_wasm::serve_compile_request(
        memory_bytes,
        &mut std::io::stdin().lock(),
        &mut std::io::stdout().lock(),
    );
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(ModuleError::Invalid(message)) => {
            eprintln!("{message}");
            ExitCode::from(weir_wasm::EXIT_INVALID as u8)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
