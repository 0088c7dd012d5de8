//! `weir serve`: the API server. Settings come from flags, then `WEIR_*`
//! environment variables, then the config file (`--config weir.toml`),
//! then defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use serde::Deserialize;
use weir_server::ServerConfig;
use weir_topology::RestartDoc;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:7070].
    #[arg(long, env = "WEIR_LISTEN")]
    listen: Option<SocketAddr>,
    /// Where modules, topologies, state and streams live [default: weir-data].
    #[arg(long, env = "WEIR_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A TOML file with any of: listen, data_dir, token, insecure_bind,
    /// max_module_bytes, max_body_bytes, restart_attempts,
    /// restart_backoff_ms, restart_max_backoff_ms, min_free_bytes.
    #[arg(long, env = "WEIR_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen on a non-loopback address without a token.
    #[arg(long)]
    insecure_bind: bool,
    /// Largest module upload, bytes [default: 64 MiB].
    #[arg(long, env = "WEIR_MAX_MODULE_BYTES")]
    max_module_bytes: Option<usize>,
    /// Largest body of other requests, bytes [default: 16 MiB].
    #[arg(long, env = "WEIR_MAX_BODY_BYTES")]
    max_body_bytes: Option<usize>,
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
}

/// The config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    token: Option<String>,
    insecure_bind: Option<bool>,
    max_module_bytes: Option<usize>,
    max_body_bytes: Option<usize>,
    restart_attempts: Option<u32>,
    restart_backoff_ms: Option<u64>,
    restart_max_backoff_ms: Option<u64>,
    min_free_bytes: Option<u64>,
}

fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
}

/// Flags and env (clap merged them) over the file over defaults.
fn config(args: ServeArgs, token: Option<String>) -> Result<ServerConfig> {
    let file = match &args.config {
        Some(p) => read_file(p)?,
        None => FileConfig::default(),
    };
    let d = ServerConfig::default();
    Ok(ServerConfig {
        listen: args.listen.or(file.listen).unwrap_or(d.listen),
        data_dir: args.data_dir.or(file.data_dir).unwrap_or(d.data_dir),
        token: token.or(file.token).filter(|t| !t.is_empty()),
        insecure_bind: args.insecure_bind || file.insecure_bind.unwrap_or(false),
        max_module_bytes: args
            .max_module_bytes
            .or(file.max_module_bytes)
            .unwrap_or(d.max_module_bytes),
        max_body_bytes: args
            .max_body_bytes
            .or(file.max_body_bytes)
            .unwrap_or(d.max_body_bytes),
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
    })
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

pub fn run(args: ServeArgs, token: Option<String>) -> Result<ExitCode> {
    let config = config(args, token)?;
    let _lock = crate::datadir::lock(&config.data_dir)?;
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
        },
        shutdown_signal(),
    ))?;
    Ok(ExitCode::SUCCESS)
}
