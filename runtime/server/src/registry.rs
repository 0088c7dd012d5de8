//! The module registry: uploaded operator components on disk, versioned by
//! name.
//!
//! Layout: `<data>/modules/<name>/<version>.wasm` holds the bytes and
//! `<version>.json` what they are ([`ModuleVersion`]); `next` holds the
//! version the next upload of that name gets, so a deleted version number
//! is never reused. Bytes are validated and compiled by the [`WasmHost`]
//! before anything is written, and written through a temporary file and a
//! rename, so a listed version is always a loadable one.
//!
//! Compiling is the one costly thing an upload makes the server do, and
//! wasmtime cannot interrupt a compile once started: its size is bounded by
//! the body limit and the module's shape, its memory and time by the Wasm
//! host's compile sandbox (a child process), and here the number of uploads
//! compiling at once (half the cores, at least one) and waiting for a turn
//! ([`CompileGate`]). Deleting a version drops its compiled module from
//! memory and its artifact from the cache, unless another version has the
//! same bytes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use weir_types::is_safe_name;
use weir_wasm::{ModuleError, OperatorModule, WasmHost};

use weir_types::now_ms;

/// One stored version of a module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleVersion {
    pub name: String,
    pub version: u32,
    /// `sha256:<hex>` of the bytes.
    pub digest: String,
    pub size: usize,
    pub world: String,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// Upload time, ms since the Unix epoch.
    pub created_at: i64,
    /// The language it was written in, where its producers sections say
    /// (absent from versions stored before it was recorded).
    #[serde(default)]
    pub language: Option<String>,
}

impl ModuleVersion {
    /// `name@version`: how topologies pin it.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// A registry operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    #[error(
        "module name {0:?} is not valid: use 1-128 of A-Z a-z 0-9 _ . - (not starting with . or -)"
    )]
    BadName(String),
    #[error("the upload is not a valid operator module: {0}")]
    Invalid(#[source] ModuleError),
    #[error("no module named `{0}`: upload it with `weir module push FILE --name {0}`")]
    NoSuchModule(String),
    #[error("module `{name}` has no version {version} (it has: {have})")]
    NoSuchVersion {
        name: String,
        version: u32,
        have: String,
    },
    #[error(
        "module reference {0:?} is not valid: use `name`, `name@version` or `sha256:<hex digest>`"
    )]
    BadReference(String),
    #[error("no uploaded module has digest {0}")]
    NoSuchDigest(String),
    #[error(
        "module `{module}` is used by topology `{topology}`: delete that topology, or apply it with another module version, first"
    )]
    InUse { module: String, topology: String },
    #[error(
        "the server is busy compiling other uploads ({compiling} compiling, {waiting} waiting): retry the upload in a few seconds"
    )]
    Busy { compiling: usize, waiting: usize },
    #[error(
        "version {module} was taken meanwhile by other bytes ({digest}) through another node: upload again"
    )]
    VersionTaken { module: String, digest: String },
    #[error("module registry: {what}: {reason}")]
    Io { what: String, reason: String },
}

/// How many uploads may compile at once, and how many may wait for a turn
/// (and for how long) before an upload is refused as [`RegistryError::Busy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileLimits {
    pub concurrent: usize,
    pub waiting: usize,
    pub wait: Duration,
}

impl Default for CompileLimits {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        CompileLimits {
            concurrent: (cores / 2).max(1),
            waiting: 8,
            wait: Duration::from_secs(30),
        }
    }
}

/// Admission to compiling: at most `limits.concurrent` at once, at most
/// `limits.waiting` in line for `limits.wait` each.
struct CompileGate {
    limits: CompileLimits,
    /// (compiling, waiting)
    counts: Mutex<(usize, usize)>,
    freed: Condvar,
}

/// A turn to compile; the next upload in line gets it when dropped.
struct CompileTurn<'a>(&'a CompileGate);

impl Drop for CompileTurn<'_> {
    fn drop(&mut self) {
        self.0.counts().0 -= 1;
        self.0.freed.notify_one();
    }
}

impl CompileGate {
    fn new(limits: CompileLimits) -> Self {
        CompileGate {
            limits,
            counts: Mutex::new((0, 0)),
            freed: Condvar::new(),
        }
    }

    fn counts(&self) -> MutexGuard<'_, (usize, usize)> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enter(&self) -> Result<CompileTurn<'_>, RegistryError> {
        let mut counts = self.counts();
        if counts.0 >= self.limits.concurrent {
            if counts.1 >= self.limits.waiting {
                return Err(RegistryError::Busy {
                    compiling: counts.0,
                    waiting: counts.1,
                });
            }
            counts.1 += 1;
            let deadline = Instant::now() + self.limits.wait;
            while counts.0 >= self.limits.concurrent {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    counts.1 -= 1;
                    return Err(RegistryError::Busy {
                        compiling: counts.0,
                        waiting: counts.1,
                    });
                }
                counts = self
                    .freed
                    .wait_timeout(counts, left)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            counts.1 -= 1;
        }
        counts.0 += 1;
        Ok(CompileTurn(self))
    }
}

impl RegistryError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RegistryError {
        let what = what.into();
        move |e| RegistryError::Io {
            what,
            reason: e.to_string(),
        }
    }
}

/// `sha256:<hex>` of `bytes` (the same digest the Wasm host reports).
pub fn digest_of(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256:");
    for b in hash {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The modules of one data directory.
pub struct ModuleRegistry {
    dir: PathBuf,
    host: Arc<WasmHost>,
    /// Serializes uploads and deletes (version numbering, in-use checks).
    write: Mutex<()>,
    /// Compiled modules by digest, so a topology starts without compiling.
    loaded: Mutex<HashMap<String, OperatorModule>>,
    compiles: CompileGate,
}

impl std::fmt::Debug for ModuleRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleRegistry")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// What an upload would do ([`ModuleRegistry::prepare`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// The same bytes are this version already.
    Existing(ModuleVersion),
    /// They would be stored as this version.
    Next(u32),
}

/// What an upload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// A new version was stored.
    Created(ModuleVersion),
    /// The same bytes were already stored under this name.
    Existing(ModuleVersion),
}

impl ModuleRegistry {
    /// The registry under `<data_dir>/modules`, with the default
    /// [`CompileLimits`].
    pub fn open(data_dir: &Path, host: Arc<WasmHost>) -> Result<Self, RegistryError> {
        Self::open_with(data_dir, host, CompileLimits::default())
    }

    /// The registry under `<data_dir>/modules`.
    pub fn open_with(
        data_dir: &Path,
        host: Arc<WasmHost>,
        compile: CompileLimits,
    ) -> Result<Self, RegistryError> {
        let dir = data_dir.join("modules");
        std::fs::create_dir_all(&dir).map_err(RegistryError::io(format!(
            "cannot create {}",
            dir.display()
        )))?;
        Ok(ModuleRegistry {
            dir,
            host,
            write: Mutex::new(()),
            loaded: Mutex::new(HashMap::new()),
            compiles: CompileGate::new(compile),
        })
    }

    pub fn host(&self) -> &WasmHost {
        &self.host
    }

    fn check_name(name: &str) -> Result<(), RegistryError> {
        if is_safe_name(name) {
            Ok(())
        } else {
            Err(RegistryError::BadName(name.to_string()))
        }
    }

    /// Validates `bytes` as an operator component and stores it as the
    /// next version of `name`, unless the same bytes already are a version
    /// of it.
    pub fn push(&self, name: &str, bytes: &[u8]) -> Result<Pushed, RegistryError> {
        self.push_placed(name, bytes, None)
    }

    /// What an upload of `bytes` as `name` would do, after validating and
    /// compiling them (the compiled module is kept, so storing them later
    /// does not compile again): the version that has these bytes already,
    /// or the number the next version would get. A cluster node calls
    /// this before writing an upload to the control topic.
    pub fn prepare(&self, name: &str, bytes: &[u8]) -> Result<Prepared, RegistryError> {
        Self::check_name(name)?;
        if let Some(existing) = self.with_digest(name, &digest_of(bytes)) {
            return Ok(Prepared::Existing(existing));
        }
        self.compile(name, bytes)?;
        let dir = self.dir.join(name);
        Ok(Prepared::Next(self.next_version(&dir)?))
    }

    /// The version of `name` holding bytes of digest `digest`.
    fn with_digest(&self, name: &str, digest: &str) -> Option<ModuleVersion> {
        self.versions(name)
            .unwrap_or_default()
            .into_iter()
            .find(|v| v.digest == digest)
    }

    /// Validates and compiles `bytes` in a compile turn, or takes the
    /// module compiled already.
    fn compile(&self, name: &str, bytes: &[u8]) -> Result<OperatorModule, RegistryError> {
        let digest = digest_of(bytes);
        if let Some(m) = self
            .loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&digest)
        {
            return Ok(m.clone());
        }
        // Validate and compile outside the write lock: it is the slow part.
        let turn = self.compiles.enter()?;
        let started = Instant::now();
        let module = self.host.load(bytes).map_err(RegistryError::Invalid)?;
        drop(turn);
        tracing::debug!(
            module.name = name,
            compile_ms = started.elapsed().as_millis() as u64,
            "module compiled"
        );
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest, module.clone());
        Ok(module)
    }

    /// [`ModuleRegistry::push`], or, with `placed`, as exactly that version
    /// (number, upload time) as a cluster's control topic says: the same
    /// bytes as that version already are [`Pushed::Existing`], other bytes
    /// under a number that is taken are [`RegistryError::VersionTaken`].
    pub fn push_placed(
        &self,
        name: &str,
        bytes: &[u8],
        placed: Option<(u32, i64)>,
    ) -> Result<Pushed, RegistryError> {
        Self::check_name(name)?;
        let digest = digest_of(bytes);
        if placed.is_none()
            && let Some(existing) = self.with_digest(name, &digest)
        {
            return Ok(Pushed::Existing(existing));
        }
        let module = self.compile(name, bytes)?;
        let info = module.info().clone();
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.dir.join(name);
        let version = match placed {
            None => {
                // Another upload of the same bytes may have won the race.
                if let Some(existing) = self.with_digest(name, &digest) {
                    return Ok(Pushed::Existing(existing));
                }
                self.next_version(&dir)?
            }
            Some((version, _)) => {
                if let Some(taken) = self
                    .versions(name)?
                    .into_iter()
                    .find(|v| v.version == version)
                {
                    if taken.digest == digest {
                        return Ok(Pushed::Existing(taken));
                    }
                    return Err(RegistryError::VersionTaken {
                        module: taken.reference(),
                        digest: taken.digest,
                    });
                }
                version
            }
        };
        std::fs::create_dir_all(&dir).map_err(RegistryError::io(format!(
            "cannot create {}",
            dir.display()
        )))?;
        let meta = ModuleVersion {
            name: name.to_string(),
            version,
            digest: info.digest.clone(),
            size: info.size,
            world: info.world.clone(),
            imports: info.imports.clone(),
            exports: info.exports.clone(),
            created_at: placed.map_or_else(now_ms, |(_, at)| at),
            language: weir_wasm::source_language(bytes).map(String::from),
        };
        write_atomically(&dir.join(format!("{version}.wasm")), bytes)?;
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| RegistryError::Io {
            what: "cannot encode module metadata".into(),
            reason: e.to_string(),
        })?;
        // The metadata is written last: it is what makes the version exist.
        write_atomically(&dir.join(format!("{version}.json")), &json)?;
        let next = self.next_version(&dir)?.max(version + 1);
        write_atomically(&dir.join("next"), next.to_string().as_bytes())?;
        tracing::info!(module.name = name, module.version = version, module.digest = %meta.digest, "module stored");
        Ok(Pushed::Created(meta))
    }

    fn next_version(&self, dir: &Path) -> Result<u32, RegistryError> {
        let from_file = std::fs::read_to_string(dir.join("next"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(1);
        let from_files = self
            .versions(dir.file_name().and_then(|n| n.to_str()).unwrap_or_default())?
            .last()
            .map(|v| v.version + 1)
            .unwrap_or(1);
        Ok(from_file.max(from_files))
    }

    /// Names of every module with at least one version, sorted.
    pub fn names(&self) -> Result<Vec<String>, RegistryError> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .map_err(RegistryError::io(format!(
                "cannot list {}",
                self.dir.display()
            )))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| is_safe_name(n))
            .collect();
        names.sort();
        names.retain(|n| self.versions(n).is_ok_and(|v| !v.is_empty()));
        Ok(names)
    }

    /// Every version of `name`, oldest first (empty when there is none).
    pub fn versions(&self, name: &str) -> Result<Vec<ModuleVersion>, RegistryError> {
        Self::check_name(name)?;
        let dir = self.dir.join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let file = entry.file_name();
            let Some(stem) = file.to_str().and_then(|f| f.strip_suffix(".json")) else {
                continue;
            };
            if stem.parse::<u32>().is_err() {
                continue;
            }
            let text = std::fs::read(entry.path()).map_err(RegistryError::io(format!(
                "cannot read {}",
                entry.path().display()
            )))?;
            let meta: ModuleVersion =
                serde_json::from_slice(&text).map_err(|e| RegistryError::Io {
                    what: format!("cannot read {}", entry.path().display()),
                    reason: e.to_string(),
                })?;
            out.push(meta);
        }
        out.sort_by_key(|v| v.version);
        Ok(out)
    }

    /// Every version of `name`; an error when there is none.
    pub fn module(&self, name: &str) -> Result<Vec<ModuleVersion>, RegistryError> {
        let versions = self.versions(name)?;
        if versions.is_empty() {
            return Err(RegistryError::NoSuchModule(name.to_string()));
        }
        Ok(versions)
    }

    /// Version `version` of `name`.
    pub fn version(&self, name: &str, version: u32) -> Result<ModuleVersion, RegistryError> {
        let versions = self.module(name)?;
        let have = versions
            .iter()
            .map(|v| v.version.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        versions
            .into_iter()
            .find(|v| v.version == version)
            .ok_or(RegistryError::NoSuchVersion {
                name: name.to_string(),
                version,
                have,
            })
    }

    /// The version a topology's module reference names: `name` (the
    /// latest), `name@version`, or `sha256:<hex>`.
    pub fn resolve(&self, reference: &str) -> Result<ModuleVersion, RegistryError> {
        if let Some(hex) = reference.strip_prefix("sha256:") {
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(RegistryError::BadReference(reference.to_string()));
            }
            let wanted = reference.to_ascii_lowercase();
            for name in self.names()? {
                if let Some(v) = self
                    .versions(&name)?
                    .into_iter()
                    .rev()
                    .find(|v| v.digest == wanted)
                {
                    return Ok(v);
                }
            }
            return Err(RegistryError::NoSuchDigest(reference.to_string()));
        }
        match reference.split_once('@') {
            Some((name, version)) => {
                let version = version
                    .parse::<u32>()
                    .map_err(|_| RegistryError::BadReference(reference.to_string()))?;
                self.version(name, version)
            }
            None => Ok(self
                .module(reference)?
                .pop()
                .expect("module() returns at least one version")),
        }
    }

    /// The compiled module of a stored version (compiled once, or taken
    /// from the precompile cache).
    pub fn load(&self, version: &ModuleVersion) -> Result<OperatorModule, RegistryError> {
        if let Some(m) = self
            .loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&version.digest)
        {
            return Ok(m.clone());
        }
        let path = self
            .dir
            .join(&version.name)
            .join(format!("{}.wasm", version.version));
        let bytes = std::fs::read(&path)
            .map_err(RegistryError::io(format!("cannot read {}", path.display())))?;
        let module = self.host.load(&bytes).map_err(RegistryError::Invalid)?;
        self.loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(version.digest.clone(), module.clone());
        Ok(module)
    }

    /// Deletes version `version` of `name`, unless `user_of` names a
    /// topology that uses it.
    pub fn delete(
        &self,
        name: &str,
        version: u32,
        user_of: impl Fn(&ModuleVersion) -> Option<String>,
    ) -> Result<ModuleVersion, RegistryError> {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let meta = self.version(name, version)?;
        if let Some(topology) = user_of(&meta) {
            return Err(RegistryError::InUse {
                module: meta.reference(),
                topology,
            });
        }
        let dir = self.dir.join(name);
        // Metadata first: without it the version no longer exists.
        for file in [format!("{version}.json"), format!("{version}.wasm")] {
            let path = dir.join(file);
            std::fs::remove_file(&path).map_err(RegistryError::io(format!(
                "cannot remove {}",
                path.display()
            )))?;
        }
        let shared = self.names()?.into_iter().any(|other| {
            self.versions(&other)
                .is_ok_and(|vs| vs.iter().any(|v| v.digest == meta.digest))
        });
        if !shared {
            self.loaded
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&meta.digest);
            self.host.forget(&meta.digest);
        }
        tracing::info!(
            module.name = name,
            module.version = version,
            "module version deleted"
        );
        Ok(meta)
    }
}

/// Writes `bytes` to `path` through a temporary file, synced, then renamed.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
    crate::fsutil::write_atomically(path, bytes).map_err(RegistryError::io(format!(
        "cannot write {}",
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_wasm::HostConfig;

    fn registry(dir: &Path) -> ModuleRegistry {
        let host = Arc::new(WasmHost::new(HostConfig::default()).unwrap());
        ModuleRegistry::open(dir, host).unwrap()
    }

    #[test]
    fn uploads_wait_for_a_compile_turn_and_are_refused_when_the_line_is_full() {
        let dir = tempfile::tempdir().unwrap();
        let host = Arc::new(WasmHost::new(HostConfig::default()).unwrap());
        let limits = CompileLimits {
            concurrent: 1,
            waiting: 1,
            wait: Duration::from_millis(300),
        };
        let reg = ModuleRegistry::open_with(dir.path(), host, limits).unwrap();
        let split = weir_fixtures::guest_bytes("split-words");
        // Another upload holds the one turn: this one waits, then is refused.
        let turn = reg.compiles.enter().unwrap();
        let err = reg.push("ops", &split).unwrap_err();
        assert!(
            matches!(
                err,
                RegistryError::Busy {
                    compiling: 1,
                    waiting: 0
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("retry"), "{err}");
        // With one upload already waiting, the next is refused at once.
        std::thread::scope(|s| {
            let waiting = s.spawn(|| reg.push("waits", &split));
            while reg.compiles.counts().1 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            let started = Instant::now();
            let err = reg.push("ops", &split).unwrap_err();
            assert!(
                matches!(
                    err,
                    RegistryError::Busy {
                        compiling: 1,
                        waiting: 1
                    }
                ),
                "{err}"
            );
            assert!(started.elapsed() < limits.wait);
            // Freeing the turn lets the waiting upload compile.
            drop(turn);
            assert!(matches!(waiting.join().unwrap(), Ok(Pushed::Created(_))));
        });
        assert!(matches!(reg.push("ops", &split), Ok(Pushed::Created(_))));
    }

    #[test]
    fn versions_count_up_and_identical_bytes_return_the_existing_one() {
        let dir = tempfile::tempdir().unwrap();
        let reg = registry(dir.path());
        let split = weir_fixtures::guest_bytes("split-words");
        let count = weir_fixtures::guest_bytes("word-count");
        let Pushed::Created(v1) = reg.push("ops", &split).unwrap() else {
            panic!("first push creates")
        };
        assert_eq!(v1.version, 1);
        assert_eq!(v1.digest, digest_of(&split));
        assert_eq!(
            reg.push("ops", &split).unwrap(),
            Pushed::Existing(v1.clone())
        );
        let Pushed::Created(v2) = reg.push("ops", &count).unwrap() else {
            panic!("new bytes create")
        };
        assert_eq!(v2.version, 2);
        assert_eq!(reg.resolve("ops").unwrap(), v2);
        assert_eq!(reg.resolve("ops@1").unwrap(), v1);
        assert_eq!(reg.resolve(&v1.digest).unwrap(), v1);
        assert_eq!(reg.names().unwrap(), vec!["ops".to_string()]);

        // In use: refused; unused: gone, and its number is not reused.
        let err = reg
            .delete("ops", 2, |_| Some("wc".to_string()))
            .unwrap_err();
        assert!(matches!(err, RegistryError::InUse { .. }), "{err}");
        reg.delete("ops", 2, |_| None).unwrap();
        assert!(matches!(
            reg.resolve("ops@2"),
            Err(RegistryError::NoSuchVersion { .. })
        ));
        let Pushed::Created(v3) = reg.push("ops", &count).unwrap() else {
            panic!("re-push creates")
        };
        assert_eq!(v3.version, 3);
        // A fresh registry over the same directory sees the same.
        let again = registry(dir.path());
        assert_eq!(again.versions("ops").unwrap(), vec![v1, v3]);
    }

    #[test]
    fn a_deleted_version_leaves_memory_and_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let host = Arc::new(
            WasmHost::new(HostConfig {
                cache_dir: Some(dir.path().join("cache")),
                ..Default::default()
            })
            .unwrap(),
        );
        let reg = ModuleRegistry::open(dir.path(), host).unwrap();
        let bytes = weir_fixtures::guest_bytes("split-words");
        let Pushed::Created(a) = reg.push("a", &bytes).unwrap() else {
            panic!("first push creates")
        };
        reg.push("b", &bytes).unwrap();
        let cached = || std::fs::read_dir(dir.path().join("cache")).unwrap().count();
        assert_eq!(cached(), 1);
        // Another name still has the bytes: the compiled module stays.
        reg.delete("a", 1, |_| None).unwrap();
        assert_eq!(cached(), 1);
        assert!(reg.loaded.lock().unwrap().contains_key(&a.digest));
        reg.delete("b", 1, |_| None).unwrap();
        assert_eq!(cached(), 0);
        assert!(reg.loaded.lock().unwrap().is_empty());
    }

    #[test]
    fn placed_versions_keep_their_number_and_refuse_other_bytes_under_it() {
        let dir = tempfile::tempdir().unwrap();
        let reg = registry(dir.path());
        let split = weir_fixtures::guest_bytes("split-words");
        let count = weir_fixtures::guest_bytes("word-count");
        // Prepared: the number the next version gets, nothing stored.
        assert_eq!(reg.prepare("ops", &split).unwrap(), Prepared::Next(1));
        assert!(reg.versions("ops").unwrap().is_empty());
        // Placed at 3 (1 and 2 were deleted elsewhere): kept as 3, with
        // the upload time it was given, and the next local one is 4.
        let Pushed::Created(v3) = reg.push_placed("ops", &split, Some((3, 42))).unwrap() else {
            panic!("a placed push creates")
        };
        assert_eq!((v3.version, v3.created_at), (3, 42));
        assert_eq!(
            reg.prepare("ops", &split).unwrap(),
            Prepared::Existing(v3.clone())
        );
        assert_eq!(reg.prepare("ops", &count).unwrap(), Prepared::Next(4));
        // The same record applied again: the existing version.
        assert_eq!(
            reg.push_placed("ops", &split, Some((3, 42))).unwrap(),
            Pushed::Existing(v3.clone())
        );
        // Other bytes under a taken number: refused, nothing changed.
        let err = reg.push_placed("ops", &count, Some((3, 43))).unwrap_err();
        assert!(matches!(err, RegistryError::VersionTaken { .. }), "{err}");
        assert_eq!(reg.versions("ops").unwrap(), vec![v3]);
    }

    #[test]
    fn bad_uploads_store_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let reg = registry(dir.path());
        assert!(matches!(
            reg.push("x", b"not wasm at all"),
            Err(RegistryError::Invalid(ModuleError::NotWasm { .. }))
        ));
        assert!(matches!(
            reg.push("../x", &weir_fixtures::guest_bytes("word-count")),
            Err(RegistryError::BadName(_))
        ));
        assert!(reg.names().unwrap().is_empty());
    }
}
