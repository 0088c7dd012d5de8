//! What is stored of each topology, `<data>/topologies/<name>/topology.json`
//! ([`TopologyRecord`]), its validation against the server, and the module
//! versions records pin ([`Pins`]).
//!
//! A record is written whole through a temporary file and a rename, so a
//! reader sees the old or the new one. The pins are the in-memory index of
//! which topology pins which module version: pinning (at apply) and
//! deleting a module version take the same lock, so a version is never
//! deleted while a record that pins it is being written.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use weir_connectors::OutsideSettings;
use weir_topology::{
    ModuleCheck, Problem, TopologyDoc, TopologyLimits, ValidateOptions, validate_topology_with,
};
use weir_types::is_safe_name;

use super::TopologiesError;
use crate::fsutil;
use crate::registry::{ModuleRegistry, ModuleVersion, RegistryError};

/// Whether a topology should be running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    Running,
    Stopped,
}

/// What is stored of a topology.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopologyRecord {
    pub doc: TopologyDoc,
    /// Each module reference of the document and the `name@version` it
    /// was pinned to when the topology was applied.
    pub modules: BTreeMap<String, String>,
    pub desired: DesiredState,
    /// Last change, ms since the Unix epoch.
    pub updated_at: i64,
    /// Why it last failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

pub(super) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TopologiesError {
    let what = what.into();
    move |e| TopologiesError::Io {
        what,
        reason: e.to_string(),
    }
}

pub(super) fn check_name(what: &'static str, name: &str) -> Result<(), TopologiesError> {
    if is_safe_name(name) {
        Ok(())
    } else {
        Err(TopologiesError::BadName {
            what,
            name: name.to_string(),
        })
    }
}

/// Reads a document from JSON or YAML text.
pub fn parse(text: &str) -> Result<TopologyDoc, TopologiesError> {
    weir_topology::parse_topology(text).map_err(|e| match e {
        weir_topology::TopologyError::Parse { format, message } => {
            TopologiesError::Parse { format, message }
        }
        other => TopologiesError::Parse {
            format: "document",
            message: other.to_string(),
        },
    })
}

/// Checks a document's module references against the registry.
struct RegistryCheck<'a>(&'a ModuleRegistry);

impl ModuleCheck for RegistryCheck<'_> {
    fn check(&self, module: &str) -> Result<(), String> {
        match self.0.resolve(module) {
            Ok(_) => Ok(()),
            // A near name is most likely a typo of an uploaded module.
            Err(RegistryError::NoSuchModule(name)) => {
                let names = self.0.names().unwrap_or_default();
                let near = weir_topology::suggest_name(&name, names.iter().map(String::as_str));
                if near.starts_with("did you mean") {
                    Err(format!("no module named `{name}`: {near}"))
                } else {
                    Err(RegistryError::NoSuchModule(name).to_string())
                }
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Every problem of `doc` on this server (the first hundred, then a
/// count): the document's own, its size against the server's `limits`, its
/// module references against the registry, and bindings the server cannot
/// make (files). `kafka_brokers`: the server has default Kafka brokers.
pub fn validate(
    registry: &ModuleRegistry,
    doc: &TopologyDoc,
    limits: TopologyLimits,
    outside: &OutsideSettings,
    kafka_brokers: bool,
) -> Vec<Problem> {
    let options = ValidateOptions {
        limits: Some(limits),
        streams_only: true,
        postgres_url_required: outside.postgres_url.is_none(),
        kafka_brokers,
    };
    validate_topology_with(doc, &RegistryCheck(registry), options)
}

/// What a cluster's node refuses in `doc`: embedded streams as sources or
/// sinks (their events live on one node's disk, while the topology runs
/// on every node).
pub fn cluster_problems(doc: &TopologyDoc) -> Vec<Problem> {
    let why = "an embedded stream lives on one node's disk, while a cluster runs its topologies \
               on every node: in cluster mode (`--cluster`) read and write Kafka topics";
    let mut problems = Vec::new();
    for (i, source) in doc.sources.iter().enumerate() {
        if source.stream.is_some() {
            problems.push(Problem {
                path: format!("sources[{i}].stream"),
                message: format!("source `{}` reads a stream: {why}", source.name),
                severity: weir_topology::Severity::Error,
            });
        }
    }
    for (i, sink) in doc.sinks.iter().enumerate() {
        if sink.stream.is_some() {
            problems.push(Problem {
                path: format!("sinks[{i}].stream"),
                message: format!("sink `{}` writes a stream: {why}", sink.name),
                severity: weir_topology::Severity::Error,
            });
        }
    }
    problems
}

/// The records of one data directory, `<data>/topologies/`.
#[derive(Debug)]
pub(super) struct Records {
    pub dir: PathBuf,
}

impl Records {
    pub fn open(data_dir: &Path) -> Result<Records, TopologiesError> {
        let dir = data_dir.join("topologies");
        std::fs::create_dir_all(&dir)
            .map_err(io_err(format!("cannot create {}", dir.display())))?;
        Ok(Records { dir })
    }

    /// The directory of topology `name` (record and state).
    pub fn dir_of(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("topology.json")
    }

    pub fn exists(&self, name: &str) -> bool {
        self.path(name).is_file()
    }

    pub fn read(&self, name: &str) -> Result<TopologyRecord, TopologiesError> {
        check_name("topology", name)?;
        let path = self.path(name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TopologiesError::NotFound(name.to_string()));
            }
            Err(e) => return Err(io_err(format!("cannot read {}", path.display()))(e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| TopologiesError::Io {
            what: format!("cannot read {}", path.display()),
            reason: e.to_string(),
        })
    }

    pub fn write(&self, record: &TopologyRecord) -> Result<(), TopologiesError> {
        let path = self.path(&record.doc.name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(io_err(format!("cannot create {}", dir.display())))?;
        }
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| TopologiesError::Io {
            what: "cannot encode the topology".into(),
            reason: e.to_string(),
        })?;
        fsutil::write_atomically(&path, &bytes)
            .map_err(io_err(format!("cannot write {}", path.display())))
    }

    /// Removes the record (first: without it the topology no longer
    /// exists), then the rest of its directory.
    pub fn remove(&self, name: &str) -> Result<(), TopologiesError> {
        let dir = self.dir_of(name);
        std::fs::remove_file(self.path(name))
            .map_err(io_err(format!("cannot remove {}", dir.display())))?;
        std::fs::remove_dir_all(&dir).map_err(io_err(format!("cannot remove {}", dir.display())))
    }

    /// Names of every topology, sorted.
    pub fn names(&self) -> Result<Vec<String>, TopologiesError> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .map_err(io_err(format!("cannot list {}", self.dir.display())))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| is_safe_name(n) && self.exists(n))
            .collect();
        names.sort();
        Ok(names)
    }
}

/// Which topologies pin which module version (`name@version` → topology
/// names).
#[derive(Debug, Default)]
pub(super) struct Pins {
    by_version: Mutex<HashMap<String, BTreeSet<String>>>,
}

impl Pins {
    /// The pins of every stored record.
    pub fn load(records: &Records) -> Pins {
        let pins = Pins::default();
        {
            let mut map = pins.lock();
            for name in records.names().unwrap_or_default() {
                if let Ok(record) = records.read(&name) {
                    for version in record.modules.values() {
                        map.entry(version.clone()).or_default().insert(name.clone());
                    }
                }
            }
        }
        pins
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, BTreeSet<String>>> {
        self.by_version.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves the module references of `doc` (or takes the versions
    /// `pinned` gives, each checked to exist) and pins them to
    /// `topology` (replacing its pins), then runs `write`; when `write`
    /// fails, the old pins come back. A concurrent module deletion waits.
    pub fn pin_and_write<T>(
        &self,
        registry: &ModuleRegistry,
        topology: &str,
        doc: &TopologyDoc,
        pinned: Option<&BTreeMap<String, String>>,
        write: impl FnOnce(BTreeMap<String, String>) -> Result<T, TopologiesError>,
    ) -> Result<T, TopologiesError> {
        let mut map = self.lock();
        let mut modules = BTreeMap::new();
        for op in &doc.operators {
            let reference = match pinned {
                Some(pins) => pins.get(&op.module).ok_or_else(|| {
                    RegistryError::BadReference(format!(
                        "{} (the record pins no version for it)",
                        op.module
                    ))
                })?,
                None => &op.module,
            };
            let version = registry.resolve(reference)?;
            modules.insert(op.module.clone(), version.reference());
        }
        let old: Vec<String> = map
            .iter()
            .filter(|(_, users)| users.contains(topology))
            .map(|(v, _)| v.clone())
            .collect();
        Self::unpin_in(&mut map, topology);
        for version in modules.values() {
            map.entry(version.clone())
                .or_default()
                .insert(topology.to_string());
        }
        // The record is written under the lock (one small file), so that
        // a deletion sees either the old pins or the new ones on disk.
        let result = write(modules);
        if result.is_err() {
            Self::unpin_in(&mut map, topology);
            for version in old {
                map.entry(version).or_default().insert(topology.to_string());
            }
        }
        result
    }

    fn unpin_in(map: &mut HashMap<String, BTreeSet<String>>, topology: &str) {
        map.retain(|_, users| {
            users.remove(topology);
            !users.is_empty()
        });
    }

    /// A topology that pins `reference` (`name@version`), if any.
    pub fn user_of(&self, reference: &str) -> Option<String> {
        self.lock()
            .get(reference)
            .and_then(|users| users.iter().next().cloned())
    }

    /// Drops every pin of `topology` (it was deleted).
    pub fn unpin(&self, topology: &str) {
        Self::unpin_in(&mut self.lock(), topology);
    }

    /// Deletes module version `name`@`version` unless a topology pins it,
    /// atomically against [`Pins::pin_and_write`].
    pub fn delete_module(
        &self,
        registry: &ModuleRegistry,
        name: &str,
        version: u32,
    ) -> Result<ModuleVersion, RegistryError> {
        let map = self.lock();
        registry.delete(name, version, |v| {
            map.get(&v.reference())
                .and_then(|users| users.iter().next().cloned())
        })
    }
}
