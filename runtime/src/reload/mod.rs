//! The one way a broker version comes to serve, whatever brought it (the brokers dir at
//! start-up, `--watch`, an admin upload or rollback): it is loaded and checked off the request
//! path, its decision is written in the state store's book of versions, and an accepted version
//! is published as a new generation in one swap. Requests and operations already running
//! finish on the version they started with.
//!
//! - **Accepted** versions are kept in `DATA_DIR/versions/NAME/VERSION.{wasm,toml}`; the last
//!   accepted one is the broker's current version, and any kept one can be rolled back to.
//! - **Refused** versions (they do not load, fail a check, drop a plan instances still use, or
//!   change an id) stay refused across restarts: a restart serves the current version, never a
//!   refused file that happens to be in the brokers dir. An operator forces one with
//!   `brokerbox admin accept NAME VERSION --force`, or by creating `NAME.force` beside it.
//! - A broker with no version that can serve is **quarantined**: listed with its error, not
//!   served, and the others serve on. Two brokers declaring one id: the later one is refused.
//!
//! Reloads of different brokers never wait for each other: each broker has its own lock,
//! held while its new version compiles and answers its catalog (under a short load-time
//! deadline), and only the final swap, which takes no time, is serialized.

mod book;
mod files;
mod start_up;

use crate::registry::{valid_broker_name, Brokers, LoadedBroker, Loader};
use crate::store::{Purged, StateStore, VersionState};
use anyhow::{bail, Context};
use files::{precheck, Files};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Versions of a broker kept on disk and in the book; older ones (never the current one) are
/// forgotten.
pub const MAX_KEPT_VERSIONS: usize = 16;

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "version", rename_all = "lowercase")]
pub enum Reloaded {
    /// The files are those of the version already serving.
    Unchanged,
    /// A new broker now serves, at this version.
    Added(String),
    /// The broker now serves this version.
    Updated(String),
}

/// Where a version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The brokers dir (at start-up or under `--watch`).
    Dir,
    /// An admin upload.
    Upload,
    /// An admin rollback (or accept) of a kept version.
    Rollback,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Dir => "dir",
            Source::Upload => "upload",
            Source::Rollback => "rollback",
        }
    }
}

/// Why a broker, or its newest version, does not serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// What went wrong.
    pub error: String,
    /// The version refused, when the files could be read.
    pub version: Option<String>,
    /// The tenant its manifest names, when it could be read (who may see the problem).
    pub tenant: Option<String>,
}

/// Loads, decides and publishes broker versions, one at a time per broker.
pub struct Reloader {
    runtime_id: String,
    loader: Loader,
    brokers: Arc<Brokers>,
    brokers_dir: PathBuf,
    versions_dir: PathBuf,
    store: Arc<dyn StateStore>,
    /// One lock per broker name: a broker's reloads and removals one at a time.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Held only for the swap of a new generation (no guest call or compile under it).
    swap: Mutex<()>,
    problems: Mutex<BTreeMap<String, Problem>>,
    /// Versions accepted and refused.
    pub metrics: crate::telemetry::metrics::ReloadMetrics,
    /// Drops a removed broker's metrics, once the runtime has registered them.
    pub forget: std::sync::OnceLock<crate::telemetry::metrics::Forget>,
}

/// A version refused (now or before); the message says how to force it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl Reloader {
    /// A reloader publishing into `brokers`.
    pub fn new(
        loader: Loader,
        brokers: Arc<Brokers>,
        brokers_dir: PathBuf,
        runtime_id: String,
    ) -> Self {
        let store = loader.store.clone();
        let versions_dir = loader.data_dir.join("versions");
        Reloader {
            runtime_id,
            loader,
            brokers,
            brokers_dir,
            versions_dir,
            store,
            locks: Mutex::default(),
            swap: Mutex::default(),
            problems: Mutex::default(),
            metrics: crate::telemetry::metrics::ReloadMetrics::default(),
            forget: std::sync::OnceLock::new(),
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
        change: impl FnOnce(&crate::registry::Generation) -> anyhow::Result<crate::registry::Generation>,
    ) -> anyhow::Result<()> {
        let _swap = self.swap.lock().unwrap_or_else(|e| e.into_inner());
        let next = change(&self.brokers.current())?;
        self.brokers.publish(next);
        Ok(())
    }

    fn set_problem(&self, name: &str, problem: Option<Problem>) {
        let mut problems = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        match problem {
            Some(problem) => problems.insert(name.to_string(), problem),
            None => problems.remove(name),
        };
    }

    /// Every broker that does not serve (quarantined) or whose newest version was refused,
    /// with why.
    pub fn problems(&self) -> BTreeMap<String, Problem> {
        self.problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Why broker `name` (or its newest version) does not serve, if it does not.
    pub fn problem(&self, name: &str) -> Option<Problem> {
        self.problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// The error of [`Reloader::problems`], by broker name.
    pub fn failures(&self) -> BTreeMap<String, String> {
        self.problems()
            .into_iter()
            .map(|(name, p)| (name, p.error))
            .collect()
    }

    /// Decides a version not yet accepted: refused before (and not `retry`) → refused again
    /// without loading; else loaded and checked against `serving` (unless `force`). A refusal
    /// is written in the book and comes back as [`Refused`].
    async fn evaluate(
        &self,
        name: &str,
        files: &Files,
        serving: Option<&LoadedBroker>,
        source: Source,
        (force, retry): (bool, bool),
    ) -> anyhow::Result<LoadedBroker> {
        if !retry {
            let earlier = self.store.versions(name).await?;
            if let Some(refused) = earlier
                .iter()
                .find(|v| v.version == files.version && v.state == VersionState::Refused)
            {
                return Err(Refused(format!(
                    "version {} was refused: {} (to serve it anyway: `brokerbox admin accept {name} {} --force`, or create {name}.force in the brokers dir)",
                    files.version,
                    refused.error.as_deref().unwrap_or("no reason kept"),
                    files.version,
                ))
                .into());
            }
        }
        let checked = async {
            let new = self.load(name, files).await?;
            if !force {
                self.check_compatible(serving, &new).await?;
            }
            anyhow::Ok(new)
        };
        match checked.await {
            Ok(new) => Ok(new),
            Err(error) => {
                let error = format!("{error:#}");
                // An upload refused is not kept (its uploader has it), and is written in the
                // book only for a broker that exists: junk uploads to ever new names grow
                // neither the disk nor the book.
                if source != Source::Upload {
                    self.keep(name, files)?;
                }
                if source != Source::Upload || self.current_version(name).await.is_some() {
                    self.decide(name, &files.version, source, Some(error.clone()))
                        .await?;
                }
                Err(Refused(format!(
                    "version {} refused: {error} (to serve it anyway: `brokerbox admin accept {name} {} --force`, or create {name}.force in the brokers dir)",
                    files.version, files.version
                ))
                .into())
            }
        }
    }

    /// Loads broker `name` from the brokers dir and publishes it if it is new or changed. A
    /// version refused before stays refused unless `force` (or a `NAME.force` marker).
    ///
    /// # Errors
    /// When the new version does not load or fails a check; the old version keeps serving.
    pub async fn reload(&self, name: &str, force: bool) -> anyhow::Result<Reloaded> {
        let wasm = self.brokers_dir.join(format!("{name}.wasm"));
        let manifest = wasm.with_extension("toml");
        let force = force || self.marker(name).exists();
        self.offer(name, &wasm, &manifest, Source::Dir, force).await
    }

    /// Offers the version of broker `name` made of `wasm` and `manifest` (anywhere): decided,
    /// and published when accepted. From the brokers dir, a version refused before is not
    /// tried again unless forced; an admin upload or rollback is always checked again.
    ///
    /// # Errors
    /// As [`Reloader::reload`].
    pub async fn offer(
        &self,
        name: &str,
        wasm: &Path,
        manifest: &Path,
        source: Source,
        force: bool,
    ) -> anyhow::Result<Reloaded> {
        let lock = self.lock_of(name);
        let _one_at_a_time = lock.lock().await;
        let checked = match source {
            Source::Dir => precheck(name, wasm, manifest).map_err(anyhow::Error::msg),
            _ => Ok(()),
        };
        let files = checked
            .and_then(|()| self.read_files(wasm, manifest))
            .map(|mut files| {
                if source == Source::Upload {
                    files.label = format!("the uploaded {name}.wasm");
                }
                files
            });
        let version = files.as_ref().ok().map(|f| f.version.clone());
        let tenant = files.as_ref().ok().and_then(|f| f.tenant.clone());
        let result = match files {
            Ok(files) => self.offer_locked(name, files, source, force).await,
            Err(error) => Err(error),
        };
        self.count(name, &result);
        match &result {
            Ok(_) => self.set_problem(name, None),
            Err(error) => {
                let error = match error.downcast_ref::<Refused>() {
                    Some(refused) => refused.0.clone(),
                    None => format!("{error:#}"),
                };
                tracing::error!(
                    broker = name,
                    "refused, the old version (if any) keeps serving: {error}"
                );
                // A refused upload of a broker that does not serve is the caller's answer, not
                // a quarantined broker to list (tenants could otherwise grow the list at will).
                if source != Source::Dir && self.brokers.current().get(name).is_none() {
                    return result;
                }
                self.set_problem(
                    name,
                    Some(Problem {
                        error,
                        version,
                        tenant,
                    }),
                );
            }
        }
        result
    }

    /// Counts a decision under the broker's name when it serves (or `""`: names that never
    /// served are not kept as series, whatever uploads come).
    fn count(&self, name: &str, result: &anyhow::Result<Reloaded>) {
        let result = match result {
            Ok(Reloaded::Unchanged) => return,
            Ok(_) => "accepted",
            Err(_) => "refused",
        };
        let serving = self.brokers.current().get(name);
        let labels = crate::telemetry::metrics::ReloadLabels {
            broker: serving.as_ref().map_or("", |b| &b.name).to_string(),
            tenant: (serving.as_ref())
                .and_then(|b| b.manifest.tenant.clone())
                .unwrap_or_default(),
            result,
        };
        self.metrics.reloads.get_or_create(&labels).inc();
    }

    async fn offer_locked(
        &self,
        name: &str,
        files: Files,
        source: Source,
        force: bool,
    ) -> anyhow::Result<Reloaded> {
        let old = self.brokers.current().get(name);
        if old.as_ref().is_some_and(|old| old.version == files.version) {
            return Ok(Reloaded::Unchanged);
        }
        let retry = force || source != Source::Dir;
        let new = self
            .evaluate(name, &files, old.as_deref(), source, (force, retry))
            .await?;
        let version = new.version.clone();
        // Checked against the generation current now (others may have swapped meanwhile), and
        // again at the swap itself. A conflict is about the other broker, not this version:
        // it is not written in the book.
        self.brokers.current().with_checked(&new)?;
        self.store.register_broker(name, &self.runtime_id).await?;
        self.accept_files(name, &files, source, force).await?;
        self.swap(|current| current.with(new))?;
        tracing::info!(broker = name, %version, source = source.as_str(), "serving new version");
        Ok(if old.is_some() {
            Reloaded::Updated(version)
        } else {
            Reloaded::Added(version)
        })
    }

    /// Stops serving broker `name` and forgets it: its files in the brokers dir, its kept
    /// versions and its book, its granted files, and its state (instances, bindings,
    /// operations, key-value store; the guest is not called). Returns what was purged.
    ///
    /// # Errors
    /// When the files cannot be removed or the state store fails.
    pub async fn remove(&self, name: &str) -> anyhow::Result<Purged> {
        let lock = self.lock_of(name);
        let _one_at_a_time = lock.lock().await;
        for ext in ["wasm", "toml", "force"] {
            let path = self.brokers_dir.join(format!("{name}.{ext}"));
            if path.exists() {
                std::fs::remove_file(&path)
                    .with_context(|| format!("cannot remove {}", path.display()))?;
            }
        }
        self.swap(|current| Ok(current.without(name)))?;
        self.set_problem(name, None);
        let purged = self.store.purge_broker(name).await?;
        if valid_broker_name(name) {
            for dir in [
                self.versions_dir.join(name),
                self.loader.data_dir.join("brokers").join(name),
            ] {
                if dir.exists() {
                    std::fs::remove_dir_all(&dir)
                        .with_context(|| format!("cannot remove {}", dir.display()))?;
                }
            }
        }
        self.loader
            .files_quotas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        if let Some(forget) = self.forget.get() {
            forget.forget(name);
        }
        tracing::info!(broker = name, ?purged, "removed broker");
        Ok(purged)
    }

    /// Refuses a new version that drops a plan instances still use (known from the state
    /// store, even when the version serving is not at hand) or changes an id of `old`.
    async fn check_compatible(
        &self,
        old: Option<&LoadedBroker>,
        new: &LoadedBroker,
    ) -> anyhow::Result<()> {
        let new_ids: HashSet<&str> = new.catalog.ids().collect();
        for plan in self.store.plans_in_use(&new.name).await? {
            if !new_ids.contains(plan.as_str()) {
                bail!("the new version removes plan {plan}, which instances still use");
            }
        }
        let Some(old) = old else {
            return Ok(());
        };
        for (name, old_id) in old.catalog.names() {
            if let Some(new_id) = new
                .catalog
                .names()
                .find(|(n, _)| *n == name)
                .map(|(_, id)| id)
            {
                if new_id != old_id {
                    bail!("the new version changes the id of {name} from {old_id} to {new_id}");
                }
            }
        }
        Ok(())
    }
}
