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

use crate::manifest::Manifest;
use crate::registry::{valid_broker_name, version_of, Brokers, LoadedBroker, Loader};
use crate::store::{now_ms, Purged, StateStore, VersionRecord, VersionState};
use anyhow::{bail, Context};
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
}

/// A broker's files as read once: what is hashed is what is loaded and kept.
struct Files {
    wasm: Vec<u8>,
    manifest: Vec<u8>,
    version: String,
    tenant: Option<String>,
    label: String,
}

impl Files {
    fn read(wasm: &Path, manifest: &Path) -> anyhow::Result<Files> {
        let manifest_bytes = std::fs::read(manifest)
            .with_context(|| format!("cannot read manifest {}", manifest.display()))?;
        let wasm_bytes =
            std::fs::read(wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
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

/// What start-up makes of one `NAME.wasm` of the brokers dir.
struct Found {
    name: String,
    /// The current version, loaded (it serves unless a newer one is accepted).
    current: Option<LoadedBroker>,
    /// A version not yet decided that loaded and passed its checks, with its files.
    candidate: Option<(LoadedBroker, Files, bool)>,
    problem: Option<Problem>,
    /// Arrival order: since when the broker has served, then when its file was written.
    order: (i64, std::time::SystemTime),
}

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

    /// The error of [`Reloader::problems`], by broker name.
    pub fn failures(&self) -> BTreeMap<String, String> {
        self.problems()
            .into_iter()
            .map(|(name, p)| (name, p.error))
            .collect()
    }

    /// Where kept version `version` of `name` lives: its component and its manifest.
    pub fn kept(&self, name: &str, version: &str) -> (PathBuf, PathBuf) {
        let dir = self.versions_dir.join(name);
        (
            dir.join(format!("{version}.wasm")),
            dir.join(format!("{version}.toml")),
        )
    }

    /// Keeps `files` as a version of `name` (written whole, then renamed, then synced).
    fn keep(&self, name: &str, files: &Files) -> anyhow::Result<()> {
        let (wasm, manifest) = self.kept(name, &files.version);
        if wasm.exists() && manifest.exists() {
            return Ok(());
        }
        let dir = self.versions_dir.join(name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        write_durably(&manifest, &files.manifest)?;
        write_durably(&wasm, &files.wasm)?;
        sync_dir(&dir);
        Ok(())
    }

    /// Writes a decision in the book.
    async fn decide(
        &self,
        name: &str,
        version: &str,
        source: Source,
        error: Option<String>,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        let created_at = self
            .store
            .versions(name)
            .await?
            .iter()
            .find(|v| v.version == version)
            .map_or(now, |v| v.created_at);
        self.store
            .decide_version(&VersionRecord {
                broker: name.to_string(),
                version: version.to_string(),
                state: if error.is_some() {
                    VersionState::Refused
                } else {
                    VersionState::Accepted
                },
                source: source.as_str().to_string(),
                error,
                created_at,
                decided_at: now,
            })
            .await?;
        self.prune(name).await;
        Ok(())
    }

    /// Forgets the oldest versions of `name` past [`MAX_KEPT_VERSIONS`], never its current one.
    async fn prune(&self, name: &str) {
        let Ok(versions) = self.store.versions(name).await else {
            return;
        };
        let current = self.current_version(name).await;
        let excess = versions.len().saturating_sub(MAX_KEPT_VERSIONS);
        let mut oldest: Vec<_> = versions
            .iter()
            .filter(|v| Some(&v.version) != current.as_ref())
            .collect();
        oldest.sort_by_key(|v| v.decided_at);
        for old in oldest.into_iter().take(excess) {
            let (wasm, manifest) = self.kept(name, &old.version);
            let _ = std::fs::remove_file(wasm);
            let _ = std::fs::remove_file(manifest);
            let _ = self.store.forget_version(name, &old.version).await;
        }
    }

    /// The current version of `name` in the book.
    async fn current_version(&self, name: &str) -> Option<String> {
        let current = self.store.current_versions().await.ok()?;
        current
            .into_iter()
            .find(|c| c.broker == name)
            .map(|c| c.version)
    }

    /// Every version of `name` in the book, oldest first.
    ///
    /// # Errors
    /// When the state store fails.
    pub async fn versions(
        &self,
        name: &str,
    ) -> anyhow::Result<(Vec<VersionRecord>, Option<String>)> {
        Ok((
            self.store.versions(name).await?,
            self.current_version(name).await,
        ))
    }

    /// Builds the first generation from the brokers dir: each broker serves its current
    /// version, a version not yet decided is checked as a reload would, and a broker that
    /// cannot serve is quarantined while the others serve.
    ///
    /// # Errors
    /// When the brokers dir cannot be read or the state store fails; with `strict`, also when
    /// any broker is quarantined or any version refused.
    pub async fn start_up(&self, strict: bool) -> anyhow::Result<()> {
        let entries = std::fs::read_dir(&self.brokers_dir)
            .with_context(|| format!("cannot read brokers dir {}", self.brokers_dir.display()))?;
        let mut stems: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
            .filter_map(|p| Some((p.file_stem()?.to_string_lossy().to_string(), p)))
            .collect();
        stems.sort();
        let current: HashMap<String, (String, i64)> = self
            .store
            .current_versions()
            .await?
            .into_iter()
            .map(|c| (c.broker, (c.version, c.since)))
            .collect();
        // Load every broker at once: compiles take turns, one per core.
        let found = futures::future::join_all(stems.into_iter().map(|(name, wasm)| {
            let current = current.get(&name).cloned();
            self.find(name, wasm, current)
        }));
        let mut found = found.await;
        found.sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
        let mut generation = crate::registry::Generation::default();
        for mut one in found {
            if let Some((broker, files, forced)) = one.candidate.take() {
                match generation.insert(broker) {
                    Ok(()) => {
                        self.accept_files(&one.name, &files, Source::Dir, forced)
                            .await?;
                        one.current = None;
                        one.problem = None;
                    }
                    Err(conflict) => {
                        one.problem = Some(Problem {
                            error: format!("{conflict:#}"),
                            version: Some(files.version.clone()),
                            tenant: files.tenant.clone(),
                        });
                    }
                }
            }
            if let Some(broker) = one.current.take() {
                let version = broker.version.clone();
                if let Err(conflict) = generation.insert(broker) {
                    one.problem = Some(Problem {
                        error: format!("{conflict:#}"),
                        version: Some(version),
                        tenant: None,
                    });
                }
            }
            if let Some(problem) = &one.problem {
                let serving = generation.get(&one.name).map(|b| b.version.clone());
                match &serving {
                    Some(version) => {
                        tracing::error!(broker = %one.name, serving = %version, "a newer version was refused: {}", problem.error)
                    }
                    None => {
                        tracing::error!(broker = %one.name, "quarantined, not served: {}", problem.error)
                    }
                }
            }
            self.set_problem(&one.name, one.problem);
        }
        for broker in generation.all() {
            self.store
                .register_broker(&broker.name, &self.runtime_id)
                .await?;
        }
        self.brokers.publish(generation);
        let problems = self.problems();
        if strict && !problems.is_empty() {
            let list: Vec<String> = problems
                .iter()
                .map(|(name, p)| format!("{name}: {}", p.error))
                .collect();
            bail!(
                "--strict: {} broker(s) cannot serve as they are:\n  {}",
                list.len(),
                list.join("\n  ")
            );
        }
        Ok(())
    }

    /// What start-up makes of `wasm` (named `name`), given its current version in the book.
    async fn find(&self, name: String, wasm: PathBuf, current: Option<(String, i64)>) -> Found {
        let modified = std::fs::metadata(&wasm)
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        let mut found = Found {
            name: name.clone(),
            current: None,
            candidate: None,
            problem: None,
            order: (current.as_ref().map_or(i64::MAX, |c| c.1), modified),
        };
        let problem = |error: String, files: Option<&Files>| {
            Some(Problem {
                error,
                version: files.map(|f| f.version.clone()),
                tenant: files.and_then(|f| f.tenant.clone()),
            })
        };
        let manifest = wasm.with_extension("toml");
        if let Err(error) = precheck(&name, &wasm, &manifest) {
            found.problem = problem(error, None);
            return found;
        }
        let files = match Files::read(&wasm, &manifest) {
            Ok(files) => files,
            Err(error) => {
                found.problem = problem(format!("{error:#}"), None);
                return found;
            }
        };
        let forced = self.marker(&name).exists();
        if let Some((version, _)) = &current {
            if *version == files.version {
                match self.load(&name, &files).await {
                    Ok(broker) => {
                        let _ = self.keep(&name, &files);
                        found.current = Some(broker);
                    }
                    Err(error) => found.problem = problem(format!("{error:#}"), Some(&files)),
                }
                return found;
            }
            match self.load_kept(&name, version).await {
                Ok(broker) => found.current = Some(broker),
                Err(error) => {
                    found.problem = problem(
                        format!("current version {version} cannot serve: {error:#}"),
                        None,
                    );
                }
            }
        }
        let serving = found.current.as_ref();
        match self
            .evaluate(&name, &files, serving, Source::Dir, (forced, forced))
            .await
        {
            Ok(broker) => found.candidate = Some((broker, files, forced)),
            Err(error) => {
                if let Some(refusal) = error.downcast_ref::<Refused>() {
                    found.problem = problem(refusal.0.clone(), Some(&files));
                } else {
                    found.problem = problem(format!("{error:#}"), Some(&files));
                }
            }
        }
        found
    }

    /// Loads `files` as broker `name`.
    async fn load(&self, name: &str, files: &Files) -> anyhow::Result<LoadedBroker> {
        self.loader
            .load_bytes(name, &files.label, files.wasm.clone(), &files.manifest)
            .await
    }

    /// Loads kept version `version` of `name`.
    async fn load_kept(&self, name: &str, version: &str) -> anyhow::Result<LoadedBroker> {
        let (wasm, manifest) = self.kept(name, version);
        let files = Files::read(&wasm, &manifest)
            .with_context(|| format!("it is not in {}", self.versions_dir.display()))?;
        self.load(name, &files).await
    }

    /// The marker file an operator creates to force the version in the brokers dir.
    fn marker(&self, name: &str) -> PathBuf {
        self.brokers_dir.join(format!("{name}.force"))
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
                self.keep(name, files)?;
                self.decide(name, &files.version, source, Some(error.clone()))
                    .await?;
                Err(Refused(format!(
                    "version {} refused: {error} (to serve it anyway: `brokerbox admin accept {name} {} --force`, or create {name}.force in the brokers dir)",
                    files.version, files.version
                ))
                .into())
            }
        }
    }

    /// Records `files` of `name` as accepted and current, keeps them, and removes the force
    /// marker that forced them.
    async fn accept_files(
        &self,
        name: &str,
        files: &Files,
        source: Source,
        forced: bool,
    ) -> anyhow::Result<()> {
        self.keep(name, files)?;
        self.decide(name, &files.version, source, None).await?;
        if forced && source == Source::Dir {
            let _ = std::fs::remove_file(self.marker(name));
        }
        Ok(())
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
            .and_then(|()| Files::read(wasm, manifest))
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

/// A version refused (now or before); the message says how to force it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// What makes a file of the brokers dir unusable before it is read: a bad name, no manifest.
fn precheck(name: &str, wasm: &Path, manifest: &Path) -> Result<(), String> {
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
