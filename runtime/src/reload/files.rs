//! A broker's files: read once (what is hashed is what is loaded and kept), checked before
//! they are read, kept durably as versions under `DATA_DIR/versions`.

use super::Reloader;
use crate::manifest::Manifest;
use crate::registry::{valid_broker_name, version_of, LoadedBroker};
use anyhow::Context;
use std::path::{Path, PathBuf};

/// A broker's files as read once: what is hashed is what is loaded and kept.
pub(super) struct Files {
    pub(super) wasm: Vec<u8>,
    pub(super) manifest: Vec<u8>,
    pub(super) version: String,
    pub(super) tenant: Option<String>,
    pub(super) label: String,
}

impl Files {
    fn from_bytes(
        manifest_bytes: Vec<u8>,
        wasm_bytes: Vec<u8>,
        wasm: &Path,
    ) -> anyhow::Result<Files> {
        let tenant = std::str::from_utf8(&manifest_bytes)
            .ok()
            .and_then(|text| Manifest::parse(text).ok())
            .and_then(|m| m.tenant);
        Ok(Files {
            version: version_of(&wasm_bytes, &manifest_bytes),
            wasm: wasm_bytes,
            manifest: manifest_bytes,
            tenant,
            label: wasm.display().to_string(),
        })
    }
}

/// How a kept file is named in its seal: `NAME/FILE` (a sealed file moved elsewhere does not
/// open).
fn label(path: &Path) -> String {
    let file = path.file_name().map(|f| f.to_string_lossy().to_string());
    let dir = (path.parent().and_then(Path::file_name)).map(|d| d.to_string_lossy().to_string());
    format!("{}/{}", dir.unwrap_or_default(), file.unwrap_or_default())
}

impl Reloader {
    /// The manifest at `path` as its author wrote it: a kept manifest is sealed (its `[env]`
    /// and credentials are secrets), one of the brokers dir is not.
    ///
    /// # Errors
    /// When it cannot be read or does not open.
    pub fn manifest_bytes(&self, path: &Path) -> anyhow::Result<Vec<u8>> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read manifest {}", path.display()))?;
        Ok(self.loader.store.open_file(&label(path), bytes)?)
    }

    /// Reads `wasm` and `manifest` (opening a sealed manifest).
    pub(super) fn read_files(&self, wasm: &Path, manifest: &Path) -> anyhow::Result<Files> {
        Files::from_bytes(
            self.manifest_bytes(manifest)?,
            std::fs::read(wasm).with_context(|| format!("cannot read {}", wasm.display()))?,
            wasm,
        )
    }

    /// Where kept version `version` of `name` lives: its component and its manifest.
    pub fn kept(&self, name: &str, version: &str) -> (PathBuf, PathBuf) {
        let dir = self.versions_dir.join(name);
        (
            dir.join(format!("{version}.wasm")),
            dir.join(format!("{version}.toml")),
        )
    }

    /// Keeps `files` as a version of `name` (written whole, then renamed, then synced; the
    /// manifest sealed).
    pub(super) fn keep(&self, name: &str, files: &Files) -> anyhow::Result<()> {
        let (wasm, manifest) = self.kept(name, &files.version);
        if wasm.exists() && manifest.exists() {
            return Ok(());
        }
        let dir = self.versions_dir.join(name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        // Sealed: a manifest's `[env]` and credentials are secrets.
        let sealed = (self.loader.store).seal_file(&label(&manifest), &files.manifest);
        write_durably(&manifest, &sealed)?;
        write_durably(&wasm, &files.wasm)?;
        sync_dir(&dir);
        Ok(())
    }

    /// Seals the kept manifests still in clear text (kept before encryption existed).
    pub(super) fn seal_kept(&self) {
        let Ok(brokers) = std::fs::read_dir(&self.versions_dir) else {
            return;
        };
        for dir in brokers.flatten().filter(|d| d.file_name() != ".uploads") {
            let Ok(files) = std::fs::read_dir(dir.path()) else {
                continue;
            };
            let manifests = (files.flatten().map(|f| f.path()))
                .filter(|path| path.extension().is_some_and(|e| e == "toml"));
            for manifest in manifests {
                let Ok(bytes) = std::fs::read(&manifest) else {
                    continue;
                };
                if crate::store::seal::key_of(&bytes).is_some() {
                    continue;
                }
                let sealed = (self.loader.store).seal_file(&label(&manifest), &bytes);
                if let Err(error) = write_durably(&manifest, &sealed) {
                    tracing::warn!("cannot seal the kept manifest: {error:#}");
                }
            }
            sync_dir(&dir.path());
        }
    }

    /// The marker file an operator creates to force the version in the brokers dir.
    pub(super) fn marker(&self, name: &str) -> PathBuf {
        self.brokers_dir.join(format!("{name}.force"))
    }

    /// Loads `files` as broker `name`.
    pub(super) async fn load(&self, name: &str, files: &Files) -> anyhow::Result<LoadedBroker> {
        self.loader
            .load_bytes(name, &files.label, files.wasm.clone(), &files.manifest)
            .await
    }

    /// Loads kept version `version` of `name`.
    pub(super) async fn load_kept(
        &self,
        name: &str,
        version: &str,
    ) -> anyhow::Result<LoadedBroker> {
        let (wasm, manifest) = self.kept(name, version);
        let files = self
            .read_files(&wasm, &manifest)
            .with_context(|| format!("it is not in {}", self.versions_dir.display()))?;
        self.load(name, &files).await
    }
}

/// What makes a file of the brokers dir unusable before it is read: a bad name, no manifest.
pub(super) fn precheck(name: &str, wasm: &Path, manifest: &Path) -> Result<(), String> {
    if !valid_broker_name(name) {
        return Err(format!(
            "{}: a broker name uses only a-z, 0-9, '-' and '_' (at most 64); rename the file",
            wasm.display()
        ));
    }
    if !manifest.exists() {
        return Err(format!(
            "missing manifest {} beside the component",
            manifest.display()
        ));
    }
    Ok(())
}

/// Writes `bytes` to `path` whole: to a temporary file, synced, then renamed over it.
fn write_durably(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Syncs directory `dir`, so the renames in it survive a crash (best effort).
fn sync_dir(dir: &Path) {
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
}
