//! The host secret: 32 random bytes a server keeps in its data directory
//! (`secret`, mode 0600). It keys two things, with HMAC-SHA256:
//!
//! - the MAC stored with each precompiled artifact, so only artifacts this
//!   host wrote are ever loaded (a plain checksum anyone can recompute);
//! - the seed of each operator instance's WASI random source, from the
//!   topology, the operator and the key groups the instance owns, so a
//!   guest's numbers cannot be predicted from outside, yet the same secret
//!   gives the same numbers and replays stay deterministic.
//!
//! Local runs (`weir run`) and tests use [`HostSecret::fixed`].

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use weir_types::KeyGroupRange;

use crate::ModuleError;

/// Length of the secret, bytes.
const SECRET_BYTES: usize = 32;

/// The key of the host's MACs and random seeds.
#[derive(Clone, PartialEq, Eq)]
pub struct HostSecret([u8; SECRET_BYTES]);

impl std::fmt::Debug for HostSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostSecret(..)")
    }
}

impl Default for HostSecret {
    fn default() -> Self {
        Self::fixed()
    }
}

impl HostSecret {
    /// A key known to everyone (all zeros): for local runs and tests, where
    /// nothing is cached and nobody else sees the numbers.
    pub fn fixed() -> Self {
        HostSecret([0; SECRET_BYTES])
    }

    /// The secret in `path`, created (0600, from the system's random
    /// source) if there is none.
    pub fn load_or_create(path: &Path) -> Result<Self, ModuleError> {
        let fail = |what: &str, e: std::io::Error| {
            ModuleError::Secret(format!("cannot {what} {}: {e}", path.display()))
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                return <[u8; SECRET_BYTES]>::try_from(bytes.as_slice())
                    .map(HostSecret)
                    .map_err(|_| {
                        ModuleError::Secret(format!(
                            "{} holds {} bytes, not {SECRET_BYTES}: it is damaged; delete it and a new one is made (cached compiled modules are then recompiled, and guests draw other random numbers)",
                            path.display(),
                            bytes.len()
                        ))
                    });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail("read", e)),
        }
        let mut key = [0u8; SECRET_BYTES];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut key))
            .map_err(|e| fail("draw random bytes for", e))?;
        // Written whole under another name, then renamed: a crash leaves
        // no secret, never a short one.
        let partial = path.with_extension("partial");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)
            .map_err(|e| fail("create", e))?;
        file.write_all(&key)
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::rename(&partial, path))
            .map_err(|e| fail("write", e))?;
        Ok(HostSecret(key))
    }

    /// HMAC-SHA256 of `parts` under this key; each part is prefixed with
    /// its length, so no two lists of parts give the same message.
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        for part in parts {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(&mac.finalize().into_bytes());
        out
    }
}

/// The seeds of an instance's WASI random sources: keyed hashes (under
/// the host secret) of the topology, the operator and the key groups the
/// instance owns. Unpredictable without the secret; the same secret and
/// instance give the same numbers each time it starts, so runs replay
/// alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RandomSeed {
    pub(crate) secure: [u8; 32],
    pub(crate) insecure: [u8; 32],
}

impl RandomSeed {
    pub(crate) fn of(
        secret: &HostSecret,
        topology: &str,
        operator: &str,
        owned: KeyGroupRange,
    ) -> Self {
        let groups = [owned.start.to_le_bytes(), owned.end.to_le_bytes()].concat();
        let seed =
            |label: &[u8]| secret.mac(&[label, topology.as_bytes(), operator.as_bytes(), &groups]);
        RandomSeed {
            secure: seed(b"weir random v1"),
            insecure: seed(b"weir insecure random v1"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_secret_is_created_private_and_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let made = HostSecret::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_ne!(made, HostSecret::fixed());
        assert_eq!(HostSecret::load_or_create(&path).unwrap(), made);
        assert_ne!(made.mac(&[b"a", b"bc"]), made.mac(&[b"ab", b"c"]));
        assert_ne!(made.mac(&[b"x"]), HostSecret::fixed().mac(&[b"x"]));
        std::fs::write(&path, b"short").unwrap();
        let err = HostSecret::load_or_create(&path).unwrap_err().to_string();
        assert!(err.contains("5 bytes, not 32"), "{err}");
    }

    #[test]
    fn random_seeds_are_keyed_and_the_same_for_the_same_instance() {
        let secret =
            HostSecret::load_or_create(&tempfile::tempdir().unwrap().path().join("secret"))
                .unwrap();
        let half = KeyGroupRange {
            start: 0,
            end: 64,
            groups: 128,
        };
        let other_half = KeyGroupRange {
            start: 64,
            end: 128,
            ..half
        };
        let seed = RandomSeed::of(&secret, "t", "op", half);
        assert_eq!(seed, RandomSeed::of(&secret, "t", "op", half));
        assert_ne!(seed.secure, seed.insecure);
        for other in [
            RandomSeed::of(&HostSecret::fixed(), "t", "op", half),
            RandomSeed::of(&secret, "t2", "op", half),
            RandomSeed::of(&secret, "t", "op2", half),
            RandomSeed::of(&secret, "t", "op", other_half),
            RandomSeed::of(&secret, "", "top", half),
        ] {
            assert_ne!(seed, other);
        }
    }
}
