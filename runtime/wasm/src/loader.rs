//! [`WasmHost`]: the engine, the linker, the epoch ticker; and loading bytes
//! into an [`OperatorModule`] after checking they are an operator.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasSelf, InstancePre, Linker};
use wasmtime::{Config, Engine, Store};
use weir_types::{DEFAULT_KEY_GROUPS, KeyGroupRange};

use crate::ModuleError;
use crate::bindings::{v0_1, v0_2};
use crate::cache::PrecompileCache;
use crate::child::{CompileSandbox, compile_in_child};
use crate::host::HostState;
use crate::instance::ticks;
use crate::limits::{DEFAULT_MAX_MODULE_BYTES, EPOCH_TICK, SandboxLimits};
use crate::secret::HostSecret;
use crate::secret::RandomSeed;
use crate::shape::{ShapeLimits, check_shape};
use crate::state::MemoryState;

/// Settings of a [`WasmHost`].
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub limits: SandboxLimits,
    pub max_module_bytes: usize,
    /// What a module's code may hold, checked before it is compiled.
    pub shape: ShapeLimits,
    /// Where precompiled artifacts are kept; `None` compiles every load.
    pub cache_dir: Option<PathBuf>,
    /// Compile in a child process under these limits; `None` compiles in
    /// this process (local runs, tests).
    pub compile: Option<CompileSandbox>,
    /// Key of the cache's MACs and of guests' random seeds (a server's is
    /// kept in its data directory).
    pub secret: HostSecret,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            limits: SandboxLimits::default(),
            max_module_bytes: DEFAULT_MAX_MODULE_BYTES,
            shape: ShapeLimits::default(),
            cache_dir: None,
            compile: None,
            secret: HostSecret::fixed(),
        }
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] so that a call past its
/// deadline traps; stops when dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("weir-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .ok();
        EpochTicker { stop, thread }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The Wasm host of a process: one per process, shared by every operator.
pub struct WasmHost {
    engine: Engine,
    linker: Linker<HostState>,
    config: HostConfig,
    cache: Option<PrecompileCache>,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for WasmHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmHost")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What a loaded module is, for listings and inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleInfo {
    /// `sha256:<hex>` of the module's bytes.
    pub digest: String,
    pub size: usize,
    pub world: String,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

/// A module's instance-pre, by the contract version it was built for.
#[derive(Clone)]
pub(crate) enum ContractPre {
    V0_1(v0_1::OperatorPre<HostState>),
    V0_2(v0_2::OperatorPre<HostState>),
}

/// The handlers this host serves, newest first, for messages.
const HANDLERS_SERVED: &str = "`weir:operator/handler@0.2.0` or `weir:operator/handler@0.1.0`";

/// A validated, compiled operator component, ready to instantiate cheaply.
#[derive(Clone)]
pub struct OperatorModule {
    pub(crate) pre: ContractPre,
    pub(crate) engine: Engine,
    pub(crate) limits: SandboxLimits,
    /// Keys the random seeds of its instances.
    pub(crate) secret: HostSecret,
    info: Arc<ModuleInfo>,
    /// What the module is called where it was loaded from (the registry's
    /// `name@version`), for dead letters; `None` when the caller gave none.
    label: Option<Arc<str>>,
}

impl std::fmt::Debug for OperatorModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorModule")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl OperatorModule {
    pub fn info(&self) -> &ModuleInfo {
        &self.info
    }

    /// The module called `label` (e.g. `name@version` in a registry).
    pub fn labelled(mut self, label: &str) -> OperatorModule {
        self.label = Some(Arc::from(label));
        self
    }

    /// The label given with [`OperatorModule::labelled`].
    pub fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }

    /// The module with other sandbox limits for its instances (an
    /// operator's own limits, within the server's).
    pub fn with_limits(mut self, limits: SandboxLimits) -> OperatorModule {
        self.limits = limits;
        self
    }

    /// The sandbox limits its instances get.
    pub fn limits(&self) -> &SandboxLimits {
        &self.limits
    }

    /// The `weir:operator` version the component was built for.
    pub fn contract_version(&self) -> &'static str {
        match self.pre {
            ContractPre::V0_1(_) => "0.1.0",
            ContractPre::V0_2(_) => "0.2.0",
        }
    }
}

/// Imports an operator may have: the contract's own, and WASI (served with
/// nothing granted, since toolchains import it).
fn import_allowed(name: &str) -> bool {
    [
        "weir:operator/state@",
        "weir:operator/timers@",
        "weir:operator/context@",
        "weir:operator/types@",
        "wasi:",
    ]
    .iter()
    .any(|prefix| name.starts_with(prefix))
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in hash {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The engine settings of every host, and of the compiler child: an
/// artifact loads only into an engine configured alike.
pub(crate) fn engine_config() -> Config {
    let mut wasm = Config::new();
    wasm.epoch_interruption(true)
        .wasm_component_model(true)
        .wasm_memory64(false)
        .wasm_multi_memory(false)
        .cranelift_opt_level(wasmtime::OptLevel::Speed);
    // `WEIR_PERF_MAP=1` writes /tmp/perf-<pid>.map so that `perf report`
    // names the guests' compiled functions instead of `[JIT]` addresses.
    if std::env::var_os("WEIR_PERF_MAP").is_some_and(|v| v == "1") {
        wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    wasm
}

impl WasmHost {
    pub fn new(config: HostConfig) -> Result<Self, ModuleError> {
        let engine =
            Engine::new(&engine_config()).map_err(|e| ModuleError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        // Every version's imports, each under its own versioned names.
        v0_1::Operator::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| ModuleError::Engine(e.to_string()))?;
        v0_2::Operator::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| ModuleError::Engine(e.to_string()))?;
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| ModuleError::Engine(e.to_string()))?;
        let cache = match &config.cache_dir {
            Some(dir) => Some(PrecompileCache::new(dir, &engine, config.secret.clone())?),
            None => None,
        };
        let ticker = EpochTicker::start(engine.clone());
        Ok(WasmHost {
            engine,
            linker,
            config,
            cache,
            _ticker: ticker,
        })
    }

    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// Checks the bytes' framing before any parsing: size, magic, layer.
    fn check_framing(&self, bytes: &[u8]) -> Result<(), ModuleError> {
        let limit = self.config.max_module_bytes;
        if bytes.len() > limit {
            return Err(ModuleError::TooLarge {
                size: bytes.len(),
                limit,
            });
        }
        if bytes.is_empty() {
            return Err(ModuleError::Empty);
        }
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            let prefix: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
            return Err(ModuleError::NotWasm {
                prefix: prefix.join(" "),
            });
        }
        match bytes[4..8] {
            [0x01, 0x00, 0x00, 0x00] => Err(ModuleError::CoreModule),
            [_, _, 0x01, 0x00] => Ok(()),
            _ => Err(ModuleError::UnknownLayer {
                found: bytes[4..8]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            }),
        }
    }

    /// The compiled component, from the cache when it holds one; the flag
    /// says it was compiled now (to be cached once every check passed).
    fn compile(&self, bytes: &[u8], digest: &str) -> Result<(Component, bool), ModuleError> {
        if let Some(component) = self
            .cache
            .as_ref()
            .and_then(|cache| cache.get(&self.engine, digest))
        {
            return Ok((component, false));
        }
        let Some(sandbox) = &self.config.compile else {
            let component = Component::new(&self.engine, bytes)
                .map_err(|e| ModuleError::Invalid(format!("{e:#}")))?;
            return Ok((component, true));
        };
        let artifact = compile_in_child(sandbox, bytes)?;
        // SAFETY: the artifact is what `Engine::precompile_component` wrote
        // in the child this host ran (its own program, with the engine
        // settings of `engine_config`), read back whole from its stdout;
        // wasmtime checks its header against this engine before use. Users
        // never supply artifacts.
        #[allow(unsafe_code)]
        let component =
            unsafe { Component::deserialize(&self.engine, &artifact) }.map_err(|e| {
                ModuleError::CompileProcess {
                    reason: format!("its artifact does not load: {e:#}"),
                }
            })?;
        Ok((component, true))
    }

    /// Forgets the compiled artifact of `digest` (its module was deleted).
    pub fn forget(&self, digest: &str) {
        if let Some(cache) = &self.cache {
            cache.remove(digest);
        }
    }

    /// Instantiates the component once in a throwaway store (under the
    /// init budget and the memory cap, with nothing granted) and checks
    /// each handler function of contract version `wit` against the
    /// contract's types: a component whose exports have the right names and
    /// the wrong types is refused here, naming the function, rather than
    /// when a topology starts.
    fn check_exports(
        &self,
        pre: &InstancePre<HostState>,
        wit: &'static str,
    ) -> Result<(), ModuleError> {
        let limits = self.config.limits;
        let mut store = Store::new(
            &self.engine,
            HostState::new(
                Arc::from("load-check"),
                RandomSeed::of(
                    &self.config.secret,
                    "",
                    "load-check",
                    KeyGroupRange::all(DEFAULT_KEY_GROUPS),
                ),
                limits,
                Box::new(MemoryState::new()),
                KeyGroupRange::all(DEFAULT_KEY_GROUPS),
            ),
        );
        store.limiter(|s| s);
        store.set_epoch_deadline(ticks(limits.init_budget));
        let instance = pre
            .instantiate(&mut store)
            .map_err(|e| ModuleError::Instantiate {
                reason: format!("{e:#}"),
            })?;
        let handler_name = format!("weir:operator/handler@{wit}");
        let handler = instance.get_export_index(&mut store, None, &handler_name);
        let mismatch = |function: &'static str, reason: String| ModuleError::ExportMismatch {
            wit,
            function,
            reason,
        };
        let index = |store: &mut Store<HostState>, function: &'static str| {
            instance
                .get_export_index(&mut *store, handler.as_ref(), function)
                .ok_or_else(|| mismatch(function, "it is missing".into()))
        };
        let init = index(&mut store, "init")?;
        let process = index(&mut store, "process")?;
        let on_timer = index(&mut store, "on-timer")?;
        macro_rules! check {
            ($v:ident) => {{
                use $v::weir::operator::types::{
                    CallOutput, OperatorSpec, ProcessInput, TimerInput,
                };
                instance
                    .get_typed_func::<(&str,), (Result<OperatorSpec, String>,)>(&mut store, &init)
                    .map_err(|e| mismatch("init", format!("{e:#}")))?;
                instance
                    .get_typed_func::<(ProcessInput,), (Result<CallOutput, String>,)>(
                        &mut store, &process,
                    )
                    .map_err(|e| mismatch("process", format!("{e:#}")))?;
                instance
                    .get_typed_func::<(TimerInput,), (Result<CallOutput, String>,)>(
                        &mut store, &on_timer,
                    )
                    .map_err(|e| mismatch("on-timer", format!("{e:#}")))?;
            }};
        }
        if wit == "0.1.0" {
            check!(v0_1);
        } else {
            check!(v0_2);
        }
        Ok(())
    }

    /// Validates `bytes` as a Weir operator component and compiles it (or
    /// takes it from the precompile cache).
    pub fn load(&self, bytes: &[u8]) -> Result<OperatorModule, ModuleError> {
        self.check_framing(bytes)?;
        check_shape(bytes, &self.config.shape)?;
        let digest = digest_of(bytes);
        let _span =
            tracing::info_span!("load_module", module.digest = %digest, module.size = bytes.len())
                .entered();
        let (component, fresh) = self.compile(bytes, &digest)?;
        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        if let Some(bad) = imports.iter().find(|name| !import_allowed(name)) {
            return Err(ModuleError::ForbiddenImport {
                import: bad.clone(),
            });
        }
        // The newest handler version the component exports decides which
        // contract it is served; older ones are adapted (`instance.rs`).
        let wit = crate::WIT_VERSIONS.iter().copied().find(|v| {
            let handler = format!("weir:operator/handler@{v}");
            ty.exports(&self.engine).any(|(n, item)| {
                n == handler && matches!(item.ty, ComponentItem::ComponentInstance(_))
            })
        });
        let Some(wit) = wit else {
            return Err(ModuleError::MissingExport {
                wit: HANDLERS_SERVED,
                found: if exports.is_empty() {
                    "nothing".into()
                } else {
                    exports.join(", ")
                },
            });
        };
        let instance_pre =
            self.linker
                .instantiate_pre(&component)
                .map_err(|e| ModuleError::ImportMismatch {
                    wit,
                    reason: format!("{e:#}"),
                })?;
        self.check_exports(&instance_pre, wit)?;
        let missing = |e: wasmtime::Error| ModuleError::MissingExport {
            wit: HANDLERS_SERVED,
            found: format!("{} ({e:#})", exports.join(", ")),
        };
        let pre = if wit == "0.1.0" {
            ContractPre::V0_1(v0_1::OperatorPre::new(instance_pre).map_err(missing)?)
        } else {
            ContractPre::V0_2(v0_2::OperatorPre::new(instance_pre).map_err(missing)?)
        };
        // Only a module that passed every check is cached.
        if let Some(cache) = self.cache.as_ref().filter(|_| fresh) {
            let artifact = component.serialize().map_err(|e| {
                ModuleError::Cache(format!("cannot serialize the compiled module: {e:#}"))
            })?;
            cache.put(&digest, &artifact)?;
        }
        Ok(OperatorModule {
            pre,
            engine: self.engine.clone(),
            limits: self.config.limits,
            secret: self.config.secret.clone(),
            info: Arc::new(ModuleInfo {
                digest,
                size: bytes.len(),
                world: format!("weir:operator/operator@{wit}"),
                imports,
                exports,
            }),
            label: None,
        })
    }
}
