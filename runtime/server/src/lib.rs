//! weir-server: Weir's control plane and its REST API (`weir serve`).
//!
//! - [`ModuleRegistry`] (`registry.rs`): uploaded operator components on
//!   disk, validated by the Wasm host before anything is stored, versioned
//!   per name, content-addressed by SHA-256.
//! - [`Topologies`] (`topologies/`): topology documents and their desired
//!   state on disk; one owner per topology with an explicit lifecycle
//!   (stopped, starting, running, restarting, stopping, failed); start/stop
//!   through the engine's [`weir_engine::Job`] (checkpointed, exactly-once
//!   stream sinks), restarts after failures with backoff.
//! - [`cluster`]: a node of a cluster (`--cluster`): the control plane
//!   in a Kafka topic every node applies in order through the same
//!   registry and topology calls.
//! - [`disk`]: the data directory's free space (produce answers 507 while
//!   it is under `--min-free-bytes` or the disk is full).
//! - [`http`]: the axum router: handlers, the error type and its JSON, bearer
//!   auth, body limits, server-sent events, Prometheus metrics and the
//!   OpenAPI document. It holds no engine logic: every handler calls
//!   [`ControlPlane`].
//! - [`serve`]: binds, resumes topologies that were running, serves until
//!   the shutdown future resolves, then stops every topology cleanly.
//!
//! Not here: running operators (weir-engine), storing events (weir-connectors),
//! the command line (the `weir` binary).

pub mod cluster;
pub mod disk;
pub mod http;
pub mod registry;
pub mod topologies;

mod fsutil;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use weir_connectors::{OutsideSettings, StreamConfig, StreamStore};
use weir_engine::ExecOptions;
use weir_topology::{OperatorLimits, TopologyLimits};
use weir_wasm::{CompileSandbox, HostConfig, HostSecret, SandboxLimits, ShapeLimits, WasmHost};

pub use cluster::{Cluster, ClusterConfig, ClusterError};
pub use registry::{ModuleRegistry, ModuleVersion, Prepared, Pushed, RegistryError};
pub use topologies::{
    DesiredState, Phase, RestartPolicy, RunState, Topologies, TopologiesError, TopologyRecord,
    TopologySettings,
};

/// The host secret's file in the data directory (see
/// [`weir_wasm::HostSecret`]).
pub const SECRET_FILE: &str = "secret";
/// Largest module upload by default.
pub const DEFAULT_MAX_MODULE_BYTES: usize = 64 << 20;
/// Largest body of any other request by default.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 << 20;
/// Largest topology document by default.
pub const DEFAULT_MAX_DOCUMENT_BYTES: usize = 4 << 20;
/// Most events one read returns.
pub const MAX_READ_EVENTS: usize = 10_000;
/// Most bytes (as stored) one read returns by default; a read always
/// returns at least one event.
pub const DEFAULT_MAX_READ_BYTES: usize = 8 << 20;
/// Most followers (SSE) of one stream by default.
pub const DEFAULT_MAX_FOLLOWERS_PER_STREAM: usize = 64;
/// Most followers (SSE) in all by default.
pub const DEFAULT_MAX_FOLLOWERS: usize = 512;

/// How long an operator instance may be idle before it is dropped, by
/// default.
pub const DEFAULT_UNLOAD_IDLE: Duration = Duration::from_secs(60);

/// Settings of the server (the binary fills them from flags, env and file).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Bearer token every `/v1` call must carry; `None`: no auth.
    pub token: Option<String>,
    /// Allow binding a non-loopback address without a token.
    pub insecure_bind: bool,
    /// Serve `/metrics` without the token (it names topologies, operators
    /// and streams, so it is closed by default when a token is set).
    pub metrics_public: bool,
    pub max_module_bytes: usize,
    pub max_body_bytes: usize,
    /// Largest topology document (`PUT`, `validate`).
    pub max_document_bytes: usize,
    /// How big a topology may be (operators, instances). Its `operator`
    /// maximum is set from `operator_limits` when the server opens.
    pub topology_limits: TopologyLimits,
    /// The sandbox limits of every operator instance, and the most an
    /// operator's own `limits` may raise them to.
    pub operator_limits: SandboxLimits,
    /// Most bytes one read (or one step of a follow) returns.
    pub max_read_bytes: usize,
    pub max_followers_per_stream: usize,
    pub max_followers: usize,
    /// What an uploaded module's code may hold (checked before compiling).
    pub shape: ShapeLimits,
    /// Compile uploads in a child process with these memory and time
    /// limits (`weir serve` always does); `None` compiles in this process.
    pub compile: Option<CompileSandbox>,
    /// Restart strategy of topologies whose document sets none.
    pub restart: RestartPolicy,
    /// Produce is refused (507) while the data directory's disk has less
    /// free (0: only a full disk refuses).
    pub min_free_bytes: u64,
    /// Operator instances idle (no event, no timer) this long are dropped
    /// and instantiated again when input comes, their state kept: idle
    /// topologies then hold no linear memory. `None`: never.
    pub unload_idle: Option<Duration>,
    /// Sinks outside Weir: the PostgreSQL URL of `postgres:` sinks that
    /// give none (`--postgres-url`).
    pub outside: OutsideSettings,
    /// Kafka brokers (`host:port,…`) of `kafka:` sources and sinks whose
    /// document names none.
    pub kafka_brokers: Option<String>,
    /// Be a node of this cluster (`--cluster`); its control topic is on
    /// the cluster config's brokers.
    pub cluster: Option<ClusterConfig>,
}

/// What an operator's own `limits` may go up to: the server's sandbox
/// limits, in the document's units.
pub fn operator_maximum(limits: &SandboxLimits) -> OperatorLimits {
    OperatorLimits {
        memory_mb: (limits.memory_bytes >> 20) as u64,
        call_budget_ms: u64::try_from(limits.call_budget.as_millis()).unwrap_or(u64::MAX),
        max_state_value_bytes: limits.max_state_value_bytes as u64,
        max_output_bytes_per_call: limits.max_output_bytes_per_call as u64,
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            data_dir: PathBuf::from("weir-data"),
            token: None,
            insecure_bind: false,
            metrics_public: false,
            max_module_bytes: DEFAULT_MAX_MODULE_BYTES,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_document_bytes: DEFAULT_MAX_DOCUMENT_BYTES,
            topology_limits: TopologyLimits::default(),
            operator_limits: SandboxLimits::default(),
            max_read_bytes: DEFAULT_MAX_READ_BYTES,
            max_followers_per_stream: DEFAULT_MAX_FOLLOWERS_PER_STREAM,
            max_followers: DEFAULT_MAX_FOLLOWERS,
            shape: ShapeLimits::default(),
            compile: None,
            restart: RestartPolicy::default(),
            min_free_bytes: disk::DEFAULT_MIN_FREE_BYTES,
            unload_idle: Some(DEFAULT_UNLOAD_IDLE),
            outside: OutsideSettings::default(),
            kafka_brokers: None,
            cluster: None,
        }
    }
}

/// The server could not start or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    #[error(
        "refusing to listen on {0} without a token: set WEIR_TOKEN (or --token), listen on 127.0.0.1, or pass --insecure-bind"
    )]
    InsecureBind(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create the data directory {dir}: {source}")]
    DataDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot set up the Wasm host: {0}")]
    Host(#[from] weir_wasm::ModuleError),
    #[error("cannot open the streams in the data directory: {0}")]
    Streams(#[from] weir_connectors::StreamError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Topologies(#[from] TopologiesError),
    #[error("cannot join the cluster: {0}")]
    Cluster(#[from] ClusterError),
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// Everything the API acts on: the one Wasm host, the registry, the
/// topologies and the streams of a data directory.
#[derive(Debug)]
pub struct ControlPlane {
    pub config: ServerConfig,
    pub registry: Arc<ModuleRegistry>,
    pub topologies: Arc<Topologies>,
    pub streams: Arc<StreamStore>,
    /// The data directory's free space, checked before produce.
    pub disk: disk::DiskSpace,
    pub started_at: std::time::Instant,
    /// Set at shutdown: followers (SSE) end so connections can close.
    pub closing: AtomicBool,
    /// Followers (SSE) per stream now, against the caps.
    pub followers: Mutex<HashMap<String, usize>>,
    /// This node's side of its cluster, once joined (`--cluster`).
    pub cluster: OnceLock<Arc<Cluster>>,
}

impl ControlPlane {
    /// Opens (or creates) the data directory. Starts nothing.
    pub fn open(config: ServerConfig) -> Result<Arc<ControlPlane>, ServerError> {
        fsutil::create_private_dir(&config.data_dir).map_err(|e| ServerError::DataDir {
            dir: config.data_dir.clone(),
            source: e,
        })?;
        let secret = HostSecret::load_or_create(&config.data_dir.join(SECRET_FILE))?;
        let host = Arc::new(WasmHost::new(HostConfig {
            secret,
            max_module_bytes: config.max_module_bytes,
            shape: config.shape,
            cache_dir: Some(config.data_dir.join("cache")),
            compile: config.compile.clone(),
            limits: config.operator_limits,
        })?);
        let streams = Arc::new(StreamStore::open(
            &config.data_dir,
            StreamConfig::default(),
        )?);
        let registry = Arc::new(ModuleRegistry::open(&config.data_dir, host)?);
        let topologies = Topologies::open(
            &config.data_dir,
            registry.clone(),
            streams.clone(),
            TopologySettings {
                options: ExecOptions {
                    unload_idle: config.unload_idle,
                    ..ExecOptions::default()
                },
                limits: TopologyLimits {
                    operator: operator_maximum(&config.operator_limits),
                    ..config.topology_limits
                },
                restart: config.restart,
                outside: config.outside.clone(),
                kafka_brokers: config.kafka_brokers.clone(),
                cluster: config.cluster.is_some(),
            },
        )?;
        let disk = disk::DiskSpace::new(&config.data_dir, config.min_free_bytes);
        Ok(Arc::new(ControlPlane {
            disk,
            config,
            registry,
            topologies,
            streams,
            started_at: std::time::Instant::now(),
            closing: AtomicBool::new(false),
            followers: Mutex::new(HashMap::new()),
            cluster: OnceLock::new(),
        }))
    }
}

/// Serves the API on `config.listen` until `shutdown` resolves: resumes the
/// topologies that were running, then, at shutdown, stops accepting,
/// finishes requests in flight and stops every topology after a final
/// checkpoint (their desired state kept, so they resume at the next boot). Calls
/// `on_bound` with the address actually bound (port 0 picks one).
pub async fn serve(
    config: ServerConfig,
    on_bound: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    if config.token.is_none() && !config.listen.ip().is_loopback() && !config.insecure_bind {
        return Err(ServerError::InsecureBind(config.listen));
    }
    let listen = config.listen;
    let plane = tokio::task::spawn_blocking(move || ControlPlane::open(config))
        .await
        .map_err(|e| ServerError::Serve(std::io::Error::other(e)))??;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: listen,
            source,
        })?;
    let bound = listener.local_addr().map_err(ServerError::Serve)?;
    let resumed = match plane.config.cluster.clone() {
        // A cluster's node runs what the control topic says: joining
        // applies it, starting what should run.
        Some(cluster) => {
            let joiner = plane.clone();
            let joined = tokio::task::spawn_blocking(move || Cluster::join(&joiner, cluster))
                .await
                .map_err(|e| ServerError::Serve(std::io::Error::other(e)))??;
            joined.announce(&plane, format!("http://{bound}"));
            let _ = plane.cluster.set(joined);
            plane.topologies.running().len()
        }
        None => {
            let resumer = plane.clone();
            tokio::task::spawn_blocking(move || resumer.topologies.resume())
                .await
                .unwrap_or(0)
        }
    };
    tracing::info!(listen = %bound, data_dir = %plane.config.data_dir.display(), resumed, "weir serve ready");
    on_bound(bound);
    let app = http::router(plane.clone());
    let closing = plane.clone();
    let result = axum::serve(http::wire::JsonListener(listener), app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutdown requested: no longer accepting connections");
            closing.closing.store(true, Ordering::Relaxed);
        })
        .await
        .map_err(ServerError::Serve);
    if let Some(cluster) = plane.cluster.get() {
        let leaving = cluster.clone();
        let _ = tokio::task::spawn_blocking(move || leaving.leave()).await;
    }
    tracing::info!("shutting down: stopping topologies");
    let stopper = plane.clone();
    let _ = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || {
            stopper.topologies.shutdown();
            if let Some(cluster) = stopper.cluster.get() {
                cluster.leave_groups();
            }
        }),
    )
    .await;
    result
}
