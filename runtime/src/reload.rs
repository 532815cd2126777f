//! Hot reload: a changed `NAME.wasm` or `NAME.toml` is compiled and validated off the request
//! path, then published as a new generation in one swap. Requests and operations already
//! running finish on the version they started with; new ones use the new version. A broken
//! version is refused (logged, and kept in [`Reloader::failures`]) and the old one keeps
//! serving. A version that removes a plan still used by instances, or gives a service or plan
//! another id, is refused unless forced.
//!
//! Reloads of different brokers never wait for each other: each broker has its own lock,
//! held while its new version compiles and answers its catalog (under a short load-time
//! deadline), and only the final swap, which takes no time, is serialized.

use crate::registry::{BrokerSet, LoadedBroker, Loader};
use crate::store::StateStore;
use anyhow::bail;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// The files are those of the version already serving.
    Unchanged,
    /// A new broker now serves, at this version.
    Added(String),
    /// The broker now serves this version.
    Updated(String),
}

/// Reloads brokers from the brokers dir, one at a time per broker.
pub struct Reloader {
    runtime_id: String,
    loader: Loader,
    brokers: Arc<BrokerSet>,
    brokers_dir: PathBuf,
    store: Arc<dyn StateStore>,
    /// One lock per broker name: a broker's reloads and removals one at a time.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Held only for the swap of a new generation (no guest call or compile under it).
    swap: Mutex<()>,
    failures: Mutex<BTreeMap<String, String>>,
}

impl Reloader {
    /// A reloader publishing into `brokers`.
    pub fn new(
        loader: Loader,
        brokers: Arc<BrokerSet>,
        brokers_dir: PathBuf,
        runtime_id: String,
    ) -> Self {
        let store = loader.store.clone();
        Reloader {
            runtime_id,
            loader,
            brokers,
            brokers_dir,
            store,
            locks: Mutex::default(),
            swap: Mutex::default(),
            failures: Mutex::default(),
        }
    }

    /// The lock of broker `name`.
    fn lock_of(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        // Forget locks nobody holds or waits for, so the map stays as small as the brokers.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        locks.entry(name.to_string()).or_default().clone()
    }

    /// Publishes what `change` makes of the current generation, atomically with respect to
    /// other brokers' swaps.
    fn swap(
        &self,
        change: impl FnOnce(&crate::registry::Registry) -> anyhow::Result<crate::registry::Registry>,
    ) -> anyhow::Result<()> {
        let _swap = self.swap.lock().unwrap_or_else(|e| e.into_inner());
        let next = change(&self.brokers.current())?;
        self.brokers.publish(next);
        Ok(())
    }

    /// The last refused reload of each broker that has not been fixed since.
    pub fn failures(&self) -> BTreeMap<String, String> {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Loads broker `name` from the brokers dir and publishes it if it is new or changed.
    ///
    /// # Errors
    /// When the new version does not load or fails a check; the old version keeps serving.
    pub async fn reload(&self, name: &str, force: bool) -> anyhow::Result<Reloaded> {
        let wasm = self.brokers_dir.join(format!("{name}.wasm"));
        let manifest = wasm.with_extension("toml");
        self.reload_files(name, &wasm, &manifest, force).await
    }

    /// Loads broker `name` from `wasm` and `manifest` (anywhere) and publishes it if it is new
    /// or changed.
    ///
    /// # Errors
    /// As [`Reloader::reload`].
    pub async fn reload_files(
        &self,
        name: &str,
        wasm: &std::path::Path,
        manifest: &std::path::Path,
        force: bool,
    ) -> anyhow::Result<Reloaded> {
        let lock = self.lock_of(name);
        let _one_at_a_time = lock.lock().await;
        let result = self.reload_locked(name, wasm, manifest, force).await;
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match &result {
            Ok(_) => {
                failures.remove(name);
            }
            Err(error) => {
                tracing::error!(
                    broker = name,
                    "reload refused, the old version keeps serving: {error:#}"
                );
                failures.insert(name.to_string(), format!("{error:#}"));
            }
        }
        result
    }

    /// Stops serving broker `name` and removes its files from the brokers dir (its kept
    /// versions and its state stay).
    ///
    /// # Errors
    /// When the files cannot be removed.
    pub async fn remove(&self, name: &str) -> anyhow::Result<()> {
        let lock = self.lock_of(name);
        let _one_at_a_time = lock.lock().await;
        for ext in ["wasm", "toml"] {
            let path = self.brokers_dir.join(format!("{name}.{ext}"));
            if path.exists() {
                std::fs::remove_file(&path)?;
            }
        }
        self.swap(|current| Ok(current.without(name)))?;
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        tracing::info!(broker = name, "removed broker");
        Ok(())
    }

    async fn reload_locked(
        &self,
        name: &str,
        wasm: &std::path::Path,
        manifest: &std::path::Path,
        force: bool,
    ) -> anyhow::Result<Reloaded> {
        let current = self.brokers.current();
        let old = current.get(name);
        if let Some(old) = &old {
            let manifest_bytes = std::fs::read(manifest).unwrap_or_default();
            let bytes = std::fs::read(wasm).unwrap_or_default();
            if crate::registry::version_of(&bytes, &manifest_bytes) == old.version {
                return Ok(Reloaded::Unchanged);
            }
        }
        let new = self.loader.load_files(name, wasm, manifest).await?;
        if let (Some(old), false) = (&old, force) {
            self.check_compatible(old, &new).await?;
        }
        let version = new.version.clone();
        // Checked against the generation current now (others may have swapped meanwhile), and
        // again at the swap itself.
        self.brokers.current().with_checked(&new)?;
        self.store.register_broker(name, &self.runtime_id).await?;
        self.swap(|current| current.with(new))?;
        tracing::info!(broker = name, %version, "reloaded broker");
        Ok(if old.is_some() {
            Reloaded::Updated(version)
        } else {
            Reloaded::Added(version)
        })
    }

    /// Refuses a new version that drops a plan instances still use or changes an id.
    async fn check_compatible(&self, old: &LoadedBroker, new: &LoadedBroker) -> anyhow::Result<()> {
        let new_ids: HashSet<&str> = new.catalog.ids().collect();
        for plan in self.store.plans_in_use(&old.name).await? {
            if !new_ids.contains(plan.as_str()) {
                bail!("the new version removes plan {plan}, which instances still use (force to replace anyway)");
            }
        }
        for (name, old_id) in old.catalog.names() {
            if let Some(new_id) = new
                .catalog
                .names()
                .find(|(n, _)| *n == name)
                .map(|(_, id)| id)
            {
                if new_id != old_id {
                    bail!("the new version changes the id of {name} from {old_id} to {new_id} (force to replace anyway)");
                }
            }
        }
        Ok(())
    }
}
