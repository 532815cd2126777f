//! The hosted brokers: each `NAME.wasm` of the brokers dir with its manifest `NAME.toml`,
//! compiled, linked and with its catalog checked before it serves a request.

use crate::catalog::CheckedCatalog;
use crate::engine::{CallInfo, Grants, Guest};
use crate::manifest::Manifest;
use anyhow::{bail, Context};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

/// One broker, ready to serve.
pub struct LoadedBroker {
    /// Its name, from the file name; the URL prefix is `/brokers/NAME/v2`.
    pub name: String,
    /// Its manifest.
    pub manifest: Manifest,
    /// Its compiled component.
    pub guest: Guest,
    /// Its validated catalog.
    pub catalog: CheckedCatalog,
}

/// All brokers of a runtime, by name.
#[derive(Default)]
pub struct Registry {
    brokers: BTreeMap<String, Arc<LoadedBroker>>,
}

/// Whether `name` can name a broker (it becomes a URL path segment and a directory name).
pub fn valid_broker_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

impl Registry {
    /// Loads every broker of `brokers_dir`; their granted directories go under `data_dir`.
    ///
    /// # Errors
    /// When the directory cannot be read, a broker has a bad name, a missing or invalid
    /// manifest, a component that does not load, or an invalid catalog; the message names the
    /// file. Also when two brokers declare the same service or plan id.
    pub async fn load_dir(
        sandbox: &crate::engine::Sandbox,
        brokers_dir: &Path,
        data_dir: &Path,
        store: &Arc<dyn crate::store::StateStore>,
    ) -> anyhow::Result<Self> {
        let entries = std::fs::read_dir(brokers_dir)
            .with_context(|| format!("cannot read brokers dir {}", brokers_dir.display()))?;
        let mut wasm_files: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
            .collect();
        wasm_files.sort();
        let mut registry = Registry::default();
        for wasm in wasm_files {
            let broker = load_broker(sandbox, &wasm, data_dir, store).await?;
            registry.insert(broker)?;
        }
        Ok(registry)
    }

    /// Adds a loaded broker.
    ///
    /// # Errors
    /// When the name is taken or a service or plan id is used by another broker.
    pub fn insert(&mut self, broker: LoadedBroker) -> anyhow::Result<()> {
        if self.brokers.contains_key(&broker.name) {
            bail!("a broker named {} is loaded already", broker.name);
        }
        let mut owners: HashMap<&str, &str> = HashMap::new();
        for other in self.brokers.values() {
            for id in other.catalog.ids() {
                owners.insert(id, &other.name);
            }
        }
        for id in broker.catalog.ids() {
            if let Some(owner) = owners.get(id) {
                bail!(
                    "broker {}: service or plan id {id:?} is already used by broker {owner}",
                    broker.name
                );
            }
        }
        self.brokers.insert(broker.name.clone(), Arc::new(broker));
        Ok(())
    }

    /// The broker called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedBroker>> {
        self.brokers.get(name).cloned()
    }

    /// All brokers, by name.
    pub fn all(&self) -> impl Iterator<Item = &Arc<LoadedBroker>> {
        self.brokers.values()
    }
}

/// Loads one broker from `wasm` and the manifest beside it.
async fn load_broker(
    sandbox: &crate::engine::Sandbox,
    wasm: &Path,
    data_dir: &Path,
    store: &Arc<dyn crate::store::StateStore>,
) -> anyhow::Result<LoadedBroker> {
    let name = wasm
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| valid_broker_name(s))
        .with_context(|| {
            format!(
                "{}: a broker name uses only a-z, 0-9, '-' and '_' (at most 64)",
                wasm.display()
            )
        })?
        .to_string();
    let manifest_path = wasm.with_extension("toml");
    if !manifest_path.exists() {
        bail!(
            "broker {name}: missing manifest {}",
            manifest_path.display()
        );
    }
    let manifest = Manifest::load(&manifest_path)?;
    let mut grants = Grants {
        env: manifest
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        kv: manifest.grants.kv.then(|| crate::engine::kv::KvGrant {
            store: store.clone(),
            quota_bytes: manifest.grants.kv_quota_bytes,
        }),
        http: crate::engine::http::HttpAllowlist::new(&manifest.grants.outbound_http),
        ..Grants::default()
    };
    if manifest.grants.files {
        let dir = data_dir.join("brokers").join(&name).join("files");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        grants.files_dir = Some(dir.canonicalize()?);
    }
    let guest = Guest::load(sandbox, &name, wasm, manifest.limits.clone(), grants)?;
    let catalog = guest
        .catalog(&CallInfo::default())
        .await
        .map_err(|e| anyhow::anyhow!("broker {name}: catalog failed: {e}"))?;
    let catalog = CheckedCatalog::new(catalog)
        .map_err(|e| anyhow::anyhow!("broker {name}: invalid catalog: {e}"))?;
    tracing::info!(broker = %name, wasm = %wasm.display(), "loaded broker");
    Ok(LoadedBroker {
        name,
        manifest,
        guest,
        catalog,
    })
}
