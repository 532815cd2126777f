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
    /// One lock per component being loaded: brokers loading the same component at once wait
    /// for the first load instead of each compiling or deserialising (and keeping) a copy.
    loading: Mutex<HashMap<String, std::sync::Arc<Mutex<()>>>>,
    disk: Option<DiskCache>,
    /// Components compiled from source by this cache.
    compiled: std::sync::atomic::AtomicUsize,
    /// Components loaded from a trusted artifact by this cache.
    loaded: std::sync::atomic::AtomicUsize,
    /// Compiled functions, for engines compiling incrementally (see [`FunctionStore`]).
    functions: Option<std::sync::Arc<FunctionStore>>,
}

/// Where artifacts live, and the key that authenticates them.
struct DiskCache {
    dir: PathBuf,
    key: [u8; 32],
}

/// Compiled functions under `DIR/functions`, named by the SHA-256 of cranelift's cache key.
/// A compile's new functions are held in memory and written together, as one pack file, when
/// the compile ends ([`FunctionStore::flush`]): thousands of small files would cost a Python
/// component's first compile a third more. Each entry carries the MAC of this runtime's
/// artifact key, so a function the runtime did not write is never used.
pub struct FunctionStore {
    dir: PathBuf,
    key: [u8; 32],
    /// Functions compiled since the last flush.
    pending: Mutex<HashMap<[u8; 32], Vec<u8>>>,
    /// Where each stored function is: pack file, offset and length of its value (read lazily
    /// from the pack files on first use).
    index: Mutex<Option<PackIndex>>,
}

/// Where each stored function is: its pack file, and the offset and length of its value.
type PackIndex = HashMap<[u8; 32], (std::sync::Arc<std::fs::File>, u64, usize)>;

impl std::fmt::Debug for FunctionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionStore")
            .field("dir", &self.dir)
            .finish()
    }
}

/// Bytes of a pack entry's header: the key's SHA-256 and the value's length.
const PACK_HEADER: usize = 32 + 8;

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
            pending: Mutex::default(),
            index: Mutex::default(),
        }))
    }

    fn id(key: &[u8]) -> [u8; 32] {
        Sha256::digest(key).into()
    }

    fn mac(&self, id: &[u8; 32], value: &[u8]) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(self.key);
        hash.update(id);
        hash.update(value);
        hash.update(self.key);
        hash.finalize().into()
    }

    /// Writes the functions compiled since the last flush as one pack file: entries of
    /// `SHA-256(key) | length (u64 LE) | value | MAC`.
    ///
    /// # Errors
    /// When the pack cannot be written (the functions are then simply not kept).
    pub fn flush(&self) -> anyhow::Result<()> {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if pending.is_empty() {
            return Ok(());
        }
        let mut pack = Vec::new();
        let mut entries = Vec::with_capacity(pending.len());
        for (id, value) in &pending {
            pack.extend_from_slice(id);
            pack.extend_from_slice(&(value.len() as u64).to_le_bytes());
            entries.push((*id, pack.len() as u64, value.len()));
            pack.extend_from_slice(value);
            pack.extend_from_slice(&self.mac(id, value));
        }
        let name = uuid::Uuid::new_v4().simple().to_string();
        let path = self.dir.join(format!("{name}.pack"));
        let tmp = self.dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, &pack)?;
        std::fs::rename(&tmp, &path)?;
        let file = std::sync::Arc::new(std::fs::File::open(&path)?);
        let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(index) = index.as_mut() {
            for (id, offset, len) in entries {
                index.insert(id, (file.clone(), offset, len));
            }
        }
        Ok(())
    }

    /// The index of every pack file in the directory, read header by header (values are not
    /// read); an entry that does not fit its file ends the scan of that file.
    fn load_index(&self) -> PackIndex {
        use std::os::unix::fs::FileExt;
        let mut index = HashMap::new();
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return index;
        };
        for path in dir.filter_map(Result::ok).map(|e| e.path()) {
            if path.extension().is_none_or(|e| e != "pack") {
                continue;
            }
            let Ok(file) = std::fs::File::open(&path) else {
                continue;
            };
            let Ok(size) = file.metadata().map(|m| m.len()) else {
                continue;
            };
            let file = std::sync::Arc::new(file);
            let mut at = 0u64;
            let mut header = [0u8; PACK_HEADER];
            while at + PACK_HEADER as u64 <= size && file.read_exact_at(&mut header, at).is_ok() {
                let id: [u8; 32] = header[..32].try_into().expect("32 bytes");
                let len = u64::from_le_bytes(header[32..].try_into().expect("8 bytes"));
                let start = at + PACK_HEADER as u64;
                let end = start.saturating_add(len).saturating_add(32);
                let Ok(value_len) = usize::try_from(len) else {
                    break;
                };
                if end > size {
                    break;
                }
                index.insert(id, (file.clone(), start, value_len));
                at = end;
            }
        }
        index
    }
}

impl wasmtime::CacheStore for FunctionStore {
    fn get(&self, key: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
        let id = Self::id(key);
        if let Some(value) = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Some(std::borrow::Cow::Owned(value.clone()));
        }
        let (file, offset, len) = {
            let mut index = self.index.lock().unwrap_or_else(|e| e.into_inner());
            let index = index.get_or_insert_with(|| self.load_index());
            index.get(&id)?.clone()
        };
        use std::os::unix::fs::FileExt;
        let mut entry = vec![0; len + 32];
        file.read_exact_at(&mut entry, offset).ok()?;
        let mac = entry.split_off(len);
        (mac == self.mac(&id, &entry)).then_some(std::borrow::Cow::Owned(entry))
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let id = Self::id(key);
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, value);
        true
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
            functions: Some(FunctionStore::open(&dir)?),
            disk: Some(DiskCache { dir, key }),
            ..ComponentCache::default()
        })
    }

    /// The compiled-function store beside the artifacts, for the engine's incremental
    /// compilation (none for a cache kept in memory only). The cache writes the functions out
    /// after each compile.
    pub fn function_store(&self) -> Option<std::sync::Arc<FunctionStore>> {
        self.functions.clone()
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
        let held = |id: &str| {
            let memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
            memory.get(id).cloned()
        };
        if let Some(found) = held(&id) {
            return Ok(found);
        }
        let turn = {
            let mut loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
            loading.entry(id.clone()).or_default().clone()
        };
        let result = {
            let _turn = turn.lock().unwrap_or_else(|e| e.into_inner());
            match held(&id) {
                Some(found) => Ok(found),
                None => self.load_or_compile(engine, wasm, &id),
            }
        };
        let mut loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        if std::sync::Arc::strong_count(&turn) <= 2 {
            loading.remove(&id);
        }
        result
    }

    /// Loads the artifact `id` or compiles `wasm`, and holds the result in memory.
    fn load_or_compile(&self, engine: &Engine, wasm: &[u8], id: &str) -> anyhow::Result<Component> {
        let id = id.to_string();
        use std::sync::atomic::Ordering::Relaxed;
        // Runtimes sharing the artifact dir take turns per component (a file lock), so the
        // first compiles and the others load its artifact.
        let _turn = self.disk.as_ref().and_then(|disk| disk.turn(&id));
        let component = match self.disk.as_ref().and_then(|disk| disk.load(engine, &id)) {
            Some(component) => {
                self.loaded.fetch_add(1, Relaxed);
                component
            }
            None => {
                let compiled = Component::new(engine, wasm);
                if let Some(functions) = &self.functions {
                    if let Err(error) = functions.flush() {
                        tracing::warn!("cannot write the compiled functions: {error:#}");
                    }
                }
                let component = compiled?;
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

    /// An exclusive lock on `id` among the processes sharing the directory, held until the
    /// file is dropped; `None` (no turn taken) when the lock file cannot be used.
    fn turn(&self, id: &str) -> Option<std::fs::File> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(format!("{id}.lock")))
            .ok()?;
        file.lock().ok()?;
        Some(file)
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

    #[test]
    fn brokers_loading_one_component_at_once_share_one_load() {
        let engine = crate::sandbox::new_engine().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cache = ComponentCache::on_disk(dir.path()).unwrap();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| cache.get_or_compile(&engine, EMPTY_COMPONENT).unwrap());
            }
        });
        assert_eq!(cache.counts(), (1, 0), "compiled once, not once per broker");
        assert!(
            cache.loading.lock().unwrap().is_empty(),
            "no lock left behind"
        );
    }

    #[test]
    fn runtimes_sharing_an_artifact_dir_compile_a_component_once() {
        let engine = crate::sandbox::new_engine().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let caches: Vec<_> = (0..3)
            .map(|_| ComponentCache::on_disk(dir.path()).unwrap())
            .collect();
        std::thread::scope(|scope| {
            for cache in &caches {
                scope.spawn(|| cache.get_or_compile(&engine, EMPTY_COMPONENT).unwrap());
            }
        });
        let compiled: usize = caches.iter().map(|c| c.counts().0).sum();
        let loaded: usize = caches.iter().map(|c| c.counts().1).sum();
        assert_eq!(
            (compiled, loaded),
            (1, 2),
            "the first compiles, the others load"
        );
    }

    #[test]
    fn compiled_functions_are_kept_in_packs_and_refused_when_tampered_with() {
        use wasmtime::CacheStore;
        let dir = tempfile::tempdir().unwrap();
        let store = FunctionStore::open(dir.path()).unwrap();
        assert!(store.insert(b"function a", b"code of a".to_vec()));
        assert!(store.insert(b"function b", vec![7; 5000]));
        // Held in memory before the flush; written as one pack by it.
        assert_eq!(store.get(b"function a").as_deref(), Some(&b"code of a"[..]));
        store.flush().unwrap();
        let packs: Vec<_> = std::fs::read_dir(dir.path().join("functions"))
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        assert_eq!(packs.len(), 1, "{packs:?}");
        assert!(packs[0].extension().is_some_and(|e| e == "pack"));

        // A restarted runtime finds them in the pack.
        let reopened = FunctionStore::open(dir.path()).unwrap();
        assert_eq!(
            reopened.get(b"function a").as_deref(),
            Some(&b"code of a"[..])
        );
        assert_eq!(reopened.get(b"function b").map(|v| v.len()), Some(5000));
        assert!(reopened.get(b"function c").is_none());

        // A changed byte fails the MAC: the function is compiled again, never loaded.
        let mut bytes = std::fs::read(&packs[0]).unwrap();
        let at = bytes.windows(9).position(|w| w == b"code of a").unwrap();
        bytes[at] ^= 0xff;
        std::fs::write(&packs[0], bytes).unwrap();
        let wary = FunctionStore::open(dir.path()).unwrap();
        assert!(wary.get(b"function a").is_none());
        assert_eq!(wary.get(b"function b").map(|v| v.len()), Some(5000));
    }
}
