//! The compiled-component cache: content-addressed by the component's SHA-256 and the
//! engine's compatibility hash. A component registered by many brokers is compiled and held in
//! memory once; compiled artifacts are written under the data dir so a restart does not
//! recompile. An artifact is loaded only if it carries this runtime's own MAC (a secret key in
//! the data dir), so the runtime never runs native code it did not produce itself.
//!
//! Beside whole artifacts, the same directory keeps compiled *functions* ([`FunctionStore`],
//! wasmtime's incremental compilation cache): a new version of a Python or JavaScript broker
//! changes the app's code, not the interpreter's thousands of functions, so it compiles only
//! what changed.

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

/// Compiled functions, one file each under `DIR/functions`, named by the SHA-256 of
/// cranelift's cache key and carrying the MAC of this runtime's artifact key: a function file
/// the runtime did not write is never used.
pub struct FunctionStore {
    dir: PathBuf,
    key: [u8; 32],
}

impl std::fmt::Debug for FunctionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionStore")
            .field("dir", &self.dir)
            .finish()
    }
}

impl FunctionStore {
    /// The function store of the artifact directory `dir` (created if missing).
    ///
    /// # Errors
    /// When the directory or the key cannot be created.
    pub fn open(dir: &Path) -> anyhow::Result<std::sync::Arc<Self>> {
        let functions = dir.join("functions");
        std::fs::create_dir_all(&functions)
            .with_context(|| format!("cannot create {}", functions.display()))?;
        let key = artifact_key(&dir.join("key"))?;
        Ok(std::sync::Arc::new(FunctionStore {
            dir: functions,
            key,
        }))
    }

    fn path(&self, key: &[u8]) -> PathBuf {
        let name: String = Sha256::digest(key)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.dir.join(name)
    }

    fn mac(&self, key: &[u8], value: &[u8]) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(self.key);
        hash.update((key.len() as u64).to_le_bytes());
        hash.update(key);
        hash.update(value);
        hash.update(self.key);
        hash.finalize().into()
    }
}

impl wasmtime::CacheStore for FunctionStore {
    fn get(&self, key: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
        let mut bytes = std::fs::read(self.path(key)).ok()?;
        let split = bytes.len().checked_sub(32)?;
        let mac = bytes.split_off(split);
        (mac == self.mac(key, &bytes)).then_some(std::borrow::Cow::Owned(bytes))
    }

    fn insert(&self, key: &[u8], mut value: Vec<u8>) -> bool {
        let mac = self.mac(key, &value);
        value.extend_from_slice(&mac);
        let path = self.path(key);
        let tmp = path.with_extension(format!("{}.tmp", uuid::Uuid::new_v4().simple()));
        let written = std::fs::write(&tmp, &value).and_then(|()| std::fs::rename(&tmp, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.is_ok()
    }
}

impl ComponentCache {
    /// A cache kept in memory only.
    pub fn in_memory() -> Self {
        ComponentCache::default()
    }

    /// A cache that also keeps artifacts in `dir` (by default `DATA_DIR/artifacts`).
    ///
    /// # Errors
    /// When the directory or the key cannot be created.
    pub fn on_disk(dir: &Path) -> anyhow::Result<Self> {
        let dir = dir.to_path_buf();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let key = artifact_key(&dir.join("key"))?;
        Ok(ComponentCache {
            disk: Some(DiskCache { dir, key }),
            ..ComponentCache::default()
        })
    }

    /// The compiled-function store beside the artifacts, for the engine's incremental
    /// compilation (none for a cache kept in memory only).
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn function_store(&self) -> anyhow::Result<Option<std::sync::Arc<FunctionStore>>> {
        self.disk
            .as_ref()
            .map(|disk| FunctionStore::open(&disk.dir))
            .transpose()
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

/// The runtime's secret artifact key, created on first use. Runtimes sharing the directory
/// may start together: the key is written under a name of its own and linked into place, so
/// exactly one key wins and every runtime reads that one.
fn artifact_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    let read = |path: &Path| -> Option<[u8; 32]> {
        <[u8; 32]>::try_from(std::fs::read(path).ok()?.as_slice()).ok()
    };
    if let Some(key) = read(path) {
        return Ok(key);
    }
    let mut key = [0u8; 32];
    for chunk in key.chunks_mut(16) {
        chunk.copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    let tmp = path.with_extension(format!("{}.tmp", uuid::Uuid::new_v4().simple()));
    std::fs::write(&tmp, key).with_context(|| format!("cannot write {}", tmp.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read(path).with_context(|| format!("{} is not a 32-byte key", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("cannot write {}", path.display())),
    }
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
            // A name of its own: runtimes sharing the directory may write the same artifact.
            let unique = uuid::Uuid::new_v4().simple().to_string();
            let tmp = path.with_extension(format!("{unique}.tmp"));
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
        let artifact = std::fs::read_dir(dir.path())
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
