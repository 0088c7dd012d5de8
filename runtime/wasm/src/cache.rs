//! On-disk cache of precompiled components, keyed by the module's digest
//! and the engine's compatibility hash. Each artifact is stored behind an
//! HMAC-SHA256 of its digest and bytes under the host secret
//! ([`HostSecret`]), checked before loading: a torn, altered or foreign
//! file (one written without the secret) is recompiled, never loaded.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::Engine;
use wasmtime::component::Component;

use crate::ModuleError;
use crate::secret::HostSecret;

const CHECKSUM_BYTES: usize = 32;
/// What the MAC of an artifact covers first (the format's version).
const MAC_LABEL: &[u8] = b"weir precompiled artifact v1";

/// The precompile cache in one directory.
#[derive(Debug, Clone)]
pub(crate) struct PrecompileCache {
    dir: PathBuf,
    engine_tag: String,
    secret: HostSecret,
}

impl PrecompileCache {
    pub(crate) fn new(
        dir: &Path,
        engine: &Engine,
        secret: HostSecret,
    ) -> Result<Self, ModuleError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ModuleError::Cache(format!("cannot create {}: {e}", dir.display())))?;
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(PrecompileCache {
            dir: dir.to_path_buf(),
            engine_tag: format!("{:016x}", hasher.finish()),
            secret,
        })
    }

    fn mac(&self, digest: &str, artifact: &[u8]) -> [u8; CHECKSUM_BYTES] {
        self.secret.mac(&[MAC_LABEL, digest.as_bytes(), artifact])
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine_tag))
    }

    /// The cached component of `digest`, if a sound artifact is there.
    pub(crate) fn get(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.path(digest);
        let bytes = std::fs::read(&path).ok()?;
        if bytes.len() < CHECKSUM_BYTES
            || self.mac(digest, &bytes[CHECKSUM_BYTES..]) != bytes[..CHECKSUM_BYTES]
        {
            tracing::warn!(path = %path.display(), "precompiled artifact fails its MAC; recompiling");
            return None;
        }
        // SAFETY: the artifact was produced by `Engine::precompile_component`
        // of an engine with the same compatibility hash (it is in the file
        // name) and written by this cache: its MAC under the host secret,
        // which only this host holds, matches, so it is the bytes wasmtime
        // produced for this digest. Users can never supply artifacts.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(engine, &bytes[CHECKSUM_BYTES..]) };
        match component {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "precompiled artifact unusable; recompiling");
                None
            }
        }
    }

    /// Removes the artifact of `digest`, if there is one.
    pub(crate) fn remove(&self, digest: &str) {
        let path = self.path(digest);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a precompiled artifact")
            }
        }
    }

    /// Stores `artifact` for `digest` (atomically: a reader sees the whole
    /// file or none).
    pub(crate) fn put(&self, digest: &str, artifact: &[u8]) -> Result<(), ModuleError> {
        // A temporary name of its own per write: two threads storing the
        // same digest at once (parallel loads of one module) would
        // otherwise share it, and the second rename would find it gone.
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let path = self.path(digest);
        let tmp = path.with_extension(format!(
            "tmp{}-{}",
            std::process::id(),
            WRITES.fetch_add(1, Ordering::Relaxed)
        ));
        let mut bytes = Vec::with_capacity(CHECKSUM_BYTES + artifact.len());
        bytes.extend_from_slice(&self.mac(digest, artifact));
        bytes.extend_from_slice(artifact);
        std::fs::write(&tmp, &bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| ModuleError::Cache(format!("cannot write {}: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_stores_of_one_digest_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let cache =
            PrecompileCache::new(dir.path(), &Engine::default(), HostSecret::fixed()).unwrap();
        let artifact = vec![7u8; 256 << 10];
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        cache.put("sha256:same", &artifact).unwrap();
                    }
                });
            }
        });
        let stored = std::fs::read(cache.path("sha256:same")).unwrap();
        assert_eq!(&stored[CHECKSUM_BYTES..], artifact.as_slice());
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "temporary files left behind");
    }

    #[test]
    fn an_artifact_is_loaded_only_under_the_secret_that_wrote_it() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let component = Component::new(&engine, wat::parse_str("(component)").unwrap()).unwrap();
        let artifact = component.serialize().unwrap();
        let cache = PrecompileCache::new(dir.path(), &engine, HostSecret::fixed()).unwrap();
        cache.put("sha256:a", &artifact).unwrap();
        assert!(cache.get(&engine, "sha256:a").is_some());
        // Another secret (a file planted by someone else): not loaded.
        let other = tempfile::tempdir().unwrap();
        let secret = HostSecret::load_or_create(&other.path().join("secret")).unwrap();
        let foreign = PrecompileCache::new(dir.path(), &engine, secret).unwrap();
        assert!(foreign.get(&engine, "sha256:a").is_none());
        // The same bytes under another digest's name: not loaded.
        std::fs::copy(cache.path("sha256:a"), cache.path("sha256:b")).unwrap();
        assert!(cache.get(&engine, "sha256:b").is_none());
        // One flipped byte: not loaded.
        let mut bytes = std::fs::read(cache.path("sha256:a")).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(cache.path("sha256:a"), &bytes).unwrap();
        assert!(cache.get(&engine, "sha256:a").is_none());
    }
}
