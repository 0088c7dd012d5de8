//! The records of a cluster's control topic: their keys and values. Pure:
//! parsing and encoding only, so hostile records are tested without a
//! broker.
//!
//! Keys (names are safe names, so they hold no `/`):
//! - `module/<name>/<version>/<hex digest>/<chunk>`: raw bytes of one
//!   chunk of an upload;
//! - `module/<name>/<version>/<hex digest>`: the [`Manifest`] that makes
//!   the version exist once its chunks match its digest;
//! - `topology/<name>`: a [`TopologyEntry`] (the document and its pins);
//! - `desired/<name>`: a [`DesiredEntry`] (start or stop);
//! - `member/<node>`: a [`Member`] heartbeat.
//!
//! A record without a value (a tombstone) deletes what its key names.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weir_topology::TopologyDoc;
use weir_types::is_safe_name;

use crate::topologies::DesiredState;

/// Most chunks one module upload may have (with the smallest chunk size
/// allowed, 1 KiB, that is 64 MiB).
pub const MAX_CHUNKS: u32 = 65_536;

/// What a key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Chunk {
        name: String,
        version: u32,
        hex: String,
        index: u32,
    },
    Manifest {
        name: String,
        version: u32,
        hex: String,
    },
    Topology(String),
    Desired(String),
    Member(String),
}

impl Key {
    /// Parses a record's key; the error says what is wrong with it.
    pub fn parse(key: &[u8]) -> Result<Key, String> {
        let text = std::str::from_utf8(key).map_err(|_| "the key is not UTF-8".to_string())?;
        let parts: Vec<&str> = text.splitn(6, '/').collect();
        let name = |n: &str| -> Result<String, String> {
            if is_safe_name(n) {
                Ok(n.to_string())
            } else {
                Err(format!("{n:?} in key {text:?} is not a valid name"))
            }
        };
        let number = |n: &str| -> Result<u32, String> {
            n.parse::<u32>()
                .map_err(|_| format!("{n:?} in key {text:?} is not a number"))
        };
        let hex = |h: &str| -> Result<String, String> {
            if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(h.to_ascii_lowercase())
            } else {
                Err(format!("{h:?} in key {text:?} is not a SHA-256 digest"))
            }
        };
        match parts.as_slice() {
            ["module", n, v, h, i] => {
                let index = number(i)?;
                if index >= MAX_CHUNKS {
                    return Err(format!(
                        "chunk {index} of key {text:?} is past {MAX_CHUNKS}"
                    ));
                }
                Ok(Key::Chunk {
                    name: name(n)?,
                    version: number(v)?,
                    hex: hex(h)?,
                    index,
                })
            }
            ["module", n, v, h] => Ok(Key::Manifest {
                name: name(n)?,
                version: number(v)?,
                hex: hex(h)?,
            }),
            ["topology", n] => Ok(Key::Topology(name(n)?)),
            ["desired", n] => Ok(Key::Desired(name(n)?)),
            ["member", n] => Ok(Key::Member(name(n)?)),
            _ => Err(format!(
                "unknown key {:?}: a control record is module/…, topology/…, desired/… or member/…",
                text.chars().take(200).collect::<String>()
            )),
        }
    }

    /// The key as written.
    pub fn text(&self) -> String {
        match self {
            Key::Chunk {
                name,
                version,
                hex,
                index,
            } => format!("module/{name}/{version}/{hex}/{index}"),
            Key::Manifest { name, version, hex } => format!("module/{name}/{version}/{hex}"),
            Key::Topology(n) => format!("topology/{n}"),
            Key::Desired(n) => format!("desired/{n}"),
            Key::Member(n) => format!("member/{n}"),
        }
    }
}

/// The record that makes a module version exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// `sha256:<hex>` of the whole module.
    pub digest: String,
    pub size: usize,
    pub chunks: u32,
    /// Upload time on the node that took it, ms since the Unix epoch.
    pub created_at: i64,
}

/// A topology as the control topic holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyEntry {
    pub doc: TopologyDoc,
    /// Module reference → `name@version`, resolved by the node that took
    /// the write, so every node pins the same versions.
    pub modules: BTreeMap<String, String>,
}

/// Whether a topology should run on the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredEntry {
    pub desired: DesiredState,
}

/// A node's heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node: String,
    /// Where its API listens.
    pub address: String,
    /// Its Weir version.
    pub version: String,
    /// The control offset it had applied when it sent this.
    pub applied_offset: i64,
    pub started_at: i64,
    /// When it sent this, ms since the Unix epoch (its clock).
    pub at: i64,
    /// How often it sends one, ms.
    pub every_ms: u64,
    /// The topologies it runs.
    pub running: Vec<String>,
    /// Per running topology, the partitions it reads here (topic →
    /// partitions).
    #[serde(default)]
    pub partitions: BTreeMap<String, BTreeMap<String, std::collections::BTreeSet<i32>>>,
    /// Per running topology, per topic, per partition it reads here: the
    /// records its source has yet to read (the partition's end when last
    /// looked up, less the source's position).
    #[serde(default)]
    pub lag: BTreeMap<String, BTreeMap<String, BTreeMap<i32, u64>>>,
    /// Per running topology, the partitions it keeps a standby copy of
    /// and how many changelog records each was behind at its last look.
    #[serde(default)]
    pub standbys: BTreeMap<String, BTreeMap<i32, u64>>,
}

/// `value` as JSON of `T`, or what is wrong with it.
pub fn decode<T: for<'a> Deserialize<'a>>(what: &str, value: &[u8]) -> Result<T, String> {
    serde_json::from_slice(value).map_err(|e| format!("the {what} record is not valid: {e}"))
}

/// `value` as JSON.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("control records serialize")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_hostile_ones_say_what_is_wrong() {
        let hex = "ab".repeat(32);
        for key in [
            Key::Chunk {
                name: "ops".into(),
                version: 3,
                hex: hex.clone(),
                index: 7,
            },
            Key::Manifest {
                name: "ops".into(),
                version: 3,
                hex: hex.clone(),
            },
            Key::Topology("wc".into()),
            Key::Desired("wc".into()),
            Key::Member("n1".into()),
        ] {
            assert_eq!(Key::parse(key.text().as_bytes()), Ok(key));
        }
        let bad: [(&[u8], &str); 8] = [
            (b"\xff\xfe", "not UTF-8"),
            (b"topology/.hidden", "not a valid name"),
            (b"topology/../etc", "unknown key"),
            (b"module/ops/x/ab", "not a number"),
            (b"module/ops/1/abc", "not a SHA-256"),
            (b"whatever", "unknown key"),
            (b"topology/a/b", "unknown key"),
            (b"module/ops/1/abababababababababababababababababababababababababababababababab/99999999", "past"),
        ];
        for (key, says) in bad {
            let err = Key::parse(key).unwrap_err();
            assert!(err.contains(says), "{key:?}: {err}");
        }
    }

    #[test]
    fn values_with_unknown_fields_or_wrong_types_are_refused() {
        assert!(
            decode::<Manifest>(
                "module",
                br#"{"digest":"x","size":1,"chunks":1,"created_at":0}"#
            )
            .is_ok()
        );
        assert!(
            decode::<Manifest>(
                "module",
                br#"{"digest":"x","size":-1,"chunks":1,"created_at":0}"#
            )
            .is_err()
        );
        assert!(decode::<DesiredEntry>("desired", br#"{"desired":"running","x":1}"#).is_err());
        let err = decode::<DesiredEntry>("desired", b"\x00\x01").unwrap_err();
        assert!(err.contains("desired record is not valid"), "{err}");
    }
}
