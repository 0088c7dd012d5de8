//! Savepoints on disk (`<data>/savepoints/<topology>/<name>.redb`) and the
//! checkpoint history of each topology's last run.
//!
//! A savepoint name is reserved in memory while it is being written, so
//! two writers of the same name cannot both pass the "does it exist"
//! check; the reservation ends with the write, whatever its outcome.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;
use weir_engine::CheckpointInfo;

use super::TopologiesError;
use super::records::{check_name, io_err};

/// A stored savepoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SavepointInfo {
    pub topology: String,
    pub name: String,
    pub bytes: u64,
    pub created_at: i64,
}

/// The savepoints of one data directory.
#[derive(Debug)]
pub(super) struct Savepoints {
    dir: PathBuf,
    /// `(topology, savepoint)` names being written now.
    writing: Mutex<HashSet<(String, String)>>,
}

/// A savepoint name reserved for a write; released when dropped.
pub(super) struct Reserved<'a> {
    owner: &'a Savepoints,
    key: (String, String),
    pub path: PathBuf,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.owner
            .writing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
        // A refused or failed savepoint leaves no empty folder behind (a
        // folder holding savepoints is not empty, and stays).
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

impl Savepoints {
    pub fn new(data_dir: &Path) -> Savepoints {
        Savepoints {
            dir: data_dir.join("savepoints"),
            writing: Mutex::new(HashSet::new()),
        }
    }

    /// Where savepoint `name` of `topology` is.
    pub fn path(&self, topology: &str, name: &str) -> Result<PathBuf, TopologiesError> {
        check_name("savepoint", name)?;
        Ok(self.dir.join(topology).join(format!("{name}.redb")))
    }

    /// Reserves the new savepoint `name` of `topology`: refused when it
    /// exists or is being written.
    pub fn reserve(&self, topology: &str, name: &str) -> Result<Reserved<'_>, TopologiesError> {
        let path = self.path(topology, name)?;
        let key = (topology.to_string(), name.to_string());
        let exists = || TopologiesError::SavepointExists {
            topology: topology.to_string(),
            name: name.to_string(),
        };
        {
            let mut writing = self.writing.lock().unwrap_or_else(|p| p.into_inner());
            if writing.contains(&key) {
                return Err(exists());
            }
            writing.insert(key.clone());
        }
        let reserved = Reserved {
            owner: self,
            key,
            path,
        };
        if reserved.path.exists() {
            return Err(exists());
        }
        if let Some(dir) = reserved.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(io_err(format!("cannot create {}", dir.display())))?;
        }
        Ok(reserved)
    }

    pub fn info(&self, topology: &str, name: &str, path: &Path) -> SavepointInfo {
        let meta = std::fs::metadata(path).ok();
        SavepointInfo {
            topology: topology.to_string(),
            name: name.to_string(),
            bytes: meta.as_ref().map(|m| m.len()).unwrap_or(0),
            created_at: meta
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
        }
    }

    /// The savepoints of `topology`, by name (one being written is not
    /// listed).
    pub fn list(&self, topology: &str) -> Vec<SavepointInfo> {
        let Ok(entries) = std::fs::read_dir(self.dir.join(topology)) else {
            return Vec::new();
        };
        let writing = self
            .writing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut out: Vec<SavepointInfo> = entries
            .filter_map(|e| {
                let e = e.ok()?;
                let file = e.file_name().into_string().ok()?;
                let sp = file.strip_suffix(".redb")?.to_string();
                if writing.contains(&(topology.to_string(), sp.clone())) {
                    return None;
                }
                Some(self.info(topology, &sp, &e.path()))
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Removes every savepoint of `topology`.
    pub fn remove_all(&self, topology: &str) -> Result<(), TopologiesError> {
        let dir = self.dir.join(topology);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(io_err(format!("cannot remove {}", dir.display())))?;
        }
        Ok(())
    }
}

/// Checkpoints of each topology's last finished run (this process).
#[derive(Debug, Default)]
pub(super) struct History {
    runs: Mutex<HashMap<String, Vec<CheckpointInfo>>>,
    /// `(source, events read)` of each topology's last run that stopped.
    sources: Mutex<HashMap<String, Vec<(String, u64)>>>,
}

impl History {
    pub fn remember(&self, name: &str, checkpoints: Vec<CheckpointInfo>) {
        if !checkpoints.is_empty() {
            self.runs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.to_string(), checkpoints);
        }
    }

    pub fn of(&self, name: &str) -> Vec<CheckpointInfo> {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    pub fn forget(&self, name: &str) {
        self.runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }

    /// What the sources of `name`'s run read, once it stopped.
    pub fn remember_sources(&self, name: &str, sources: Vec<(String, u64)>) {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), sources);
    }

    pub fn sources_of(&self, name: &str) -> Vec<(String, u64)> {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
            .unwrap_or_default()
    }
}
