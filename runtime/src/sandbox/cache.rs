//! The compiled-component cache: content-addressed by the component's SHA-256 and the
//! engine's compatibility hash. A component registered by many brokers is compiled and held in
//! memory once; compiled artifacts are written under the data dir so a restart does not
//! recompile. An artifact is loaded only if it carries this runtime's own MAC (a secret key in
//! the data dir), so the runtime never runs native code it did not produce itself.

use anyhow::Context;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use wasmtime::component::Component;
use wasmtime::Engine;

/// Compiled components by content.
#[derive(Default)]
pub struct ComponentCache {
    memory: Mutex<HashMap<String, Component>>,
    disk: Option<DiskCache>,
    /// Components compiled from source by this cache.
    compiled: std::sync::atomic::AtomicUsize,
    /// Components loaded from a trusted artifact by this cache.
    loaded: std::sync::atomic::AtomicUsize,
}

/// Where artifacts live, and the key that authenticates them.
struct DiskCache {
    dir: PathBuf,
    key: [u8; 32],
}

impl ComponentCache {
    /// A cache kept in memory only.
    pub fn in_memory() -> Self {
        ComponentCache::default()
    }

    /// A cache that also keeps artifacts in `data_dir/artifacts`.
    ///
    /// # Errors
    /// When the directory or the key cannot be created.
    pub fn on_disk(data_dir: &Path) -> anyhow::Result<Self> {
        let dir = data_dir.join("artifacts");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let key = artifact_key(&dir.join("key"))?;
        Ok(ComponentCache {
            disk: Some(DiskCache { dir, key }),
            ..ComponentCache::default()
        })
    }

    /// How many distinct components are held in memory.
    pub fn len(&self) -> usize {
        self.memory.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// How many components were compiled from source, and how many loaded from artifacts.
    pub fn counts(&self) -> (usize, usize) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.compiled.load(Relaxed), self.loaded.load(Relaxed))
    }

    /// Whether no component is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The compiled form of `wasm`: from memory, from a trusted artifact, or compiled now.
    ///
    /// # Errors
    /// When `wasm` is not a valid component.
    pub fn get_or_compile(&self, engine: &Engine, wasm: &[u8]) -> anyhow::Result<Component> {
        let id = cache_id(engine, wasm);
        if let Some(found) = self
            .memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Ok(found.clone());
        }
        use std::sync::atomic::Ordering::Relaxed;
        let component = match self.disk.as_ref().and_then(|disk| disk.load(engine, &id)) {
            Some(component) => {
                self.loaded.fetch_add(1, Relaxed);
                component
            }
            None => {
                let component = Component::new(engine, wasm)?;
                self.compiled.fetch_add(1, Relaxed);
                if let Some(disk) = &self.disk {
                    if let Err(error) = disk.store(&id, &component) {
                        tracing::warn!("cannot write the compiled artifact: {error:#}");
                    }
                }
                component
            }
        };
        self.memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, component.clone());
        Ok(component)
    }
}

/// `SHA-256(wasm)-COMPAT`, where COMPAT hashes the engine settings artifacts depend on.
fn cache_id(engine: &Engine, wasm: &[u8]) -> String {
    let digest: String = Sha256::digest(wasm)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut compat = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut compat);
    format!("{digest}-{:016x}", compat.finish())
}

/// The runtime's secret artifact key, created on first use.
fn artifact_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    if let Ok(bytes) = std::fs::read(path) {
        if let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) {
            return Ok(key);
        }
    }
    let mut key = [0u8; 32];
    for chunk in key.chunks_mut(16) {
        chunk.copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    std::fs::write(path, key).with_context(|| format!("cannot write {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(key)
}

impl DiskCache {
    fn mac(&self, artifact: &[u8]) -> Vec<u8> {
        let mut hash = Sha256::new();
        hash.update(self.key);
        hash.update(artifact);
        hash.update(self.key);
        hash.finalize().to_vec()
    }

    fn paths(&self, id: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{id}.cwasm")),
            self.dir.join(format!("{id}.mac")),
        )
    }

    /// The artifact `id`, if present and authenticated by this runtime's key.
    #[allow(unsafe_code)]
    fn load(&self, engine: &Engine, id: &str) -> Option<Component> {
        let (artifact, mac) = self.paths(id);
        let bytes = std::fs::read(&artifact).ok()?;
        if std::fs::read(&mac).ok()? != self.mac(&bytes) {
            tracing::warn!(artifact = %artifact.display(), "ignoring an artifact this runtime did not write");
            return None;
        }
        // SAFETY: the bytes are an artifact this runtime serialised itself (checked with the
        // MAC of its secret key above), for an engine with the same compatibility hash (part
        // of `id`), which is what `Component::deserialize` requires.
        unsafe { Component::deserialize(engine, &bytes) }.ok()
    }

    /// Writes the artifact of `component` and its MAC (each via a rename, so never half).
    fn store(&self, id: &str, component: &Component) -> anyhow::Result<()> {
        let bytes = component.serialize()?;
        let (artifact, mac) = self.paths(id);
        let write = |path: &Path, data: &[u8]| -> anyhow::Result<()> {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, data)?;
            std::fs::rename(&tmp, path)?;
            Ok(())
        };
        write(&artifact, &bytes)?;
        write(&mac, &self.mac(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid component.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn a_component_is_compiled_once_and_reloaded_from_its_artifact() {
        let engine = crate::sandbox::new_engine().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cache = ComponentCache::on_disk(dir.path()).unwrap();
        cache.get_or_compile(&engine, EMPTY_COMPONENT).unwrap();
        cache.get_or_compile(&engine, EMPTY_COMPONENT).unwrap();
        assert_eq!(
            (cache.len(), cache.counts()),
            (1, (1, 0)),
            "held and compiled once"
        );

        // A restart finds the artifact instead of compiling.
        let restarted = ComponentCache::on_disk(dir.path()).unwrap();
        restarted.get_or_compile(&engine, EMPTY_COMPONENT).unwrap();
        assert_eq!(restarted.counts(), (0, 1));

        // An artifact it did not write (here: tampered with) is never loaded.
        let artifact = std::fs::read_dir(dir.path().join("artifacts"))
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .unwrap();
        let mut bytes = std::fs::read(&artifact).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&artifact, bytes).unwrap();
        let wary = ComponentCache::on_disk(dir.path()).unwrap();
        wary.get_or_compile(&engine, EMPTY_COMPONENT).unwrap();
        assert_eq!(
            wary.counts(),
            (1, 0),
            "recompiled rather than trusting the file"
        );
        assert!(wary.get_or_compile(&engine, b"not wasm").is_err());
    }
}
