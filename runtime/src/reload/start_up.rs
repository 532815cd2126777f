//! Start-up: the first generation built from the brokers dir and the book of versions.

use super::files::{precheck, Files};
use super::{Problem, Refused, Reloader, Source};
use crate::registry::{Generation, LoadedBroker};
use anyhow::{bail, Context};
use futures::StreamExt as _;
use std::collections::HashMap;
use std::path::PathBuf;

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
    /// Builds the first generation from the brokers dir: each broker serves its current
    /// version, a version not yet decided is checked as a reload would, and a broker that
    /// cannot serve is quarantined while the others serve.
    ///
    /// # Errors
    /// When the brokers dir cannot be read or the state store fails; with `strict`, also when
    /// any broker is quarantined or any version refused.
    pub async fn start_up(&self, strict: bool) -> anyhow::Result<()> {
        self.seal_kept();
        let current: HashMap<String, (String, i64)> = self
            .store
            .current_versions()
            .await?
            .into_iter()
            .map(|c| (c.broker, (c.version, c.since)))
            .collect();
        // Load a few brokers at a time (compiles take turns, one per core): each load holds
        // its component's bytes, so a dir of a thousand brokers is never in memory at once.
        let loads = std::thread::available_parallelism().map_or(2, |n| n.get() * 2);
        let mut found: Vec<Found> = futures::stream::iter(self.scan()?)
            .map(|(name, wasm)| {
                let current = current.get(&name).cloned();
                self.find(name, wasm, current)
            })
            .buffer_unordered(loads)
            .collect()
            .await;
        found.sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
        let mut generation = Generation::default();
        for one in found {
            self.place(&mut generation, one).await?;
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

    /// Every `NAME.wasm` of the brokers dir, by name.
    fn scan(&self) -> anyhow::Result<Vec<(String, PathBuf)>> {
        let entries = std::fs::read_dir(&self.brokers_dir)
            .with_context(|| format!("cannot read brokers dir {}", self.brokers_dir.display()))?;
        let mut stems: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
            .filter_map(|p| Some((p.file_stem()?.to_string_lossy().to_string(), p)))
            .collect();
        stems.sort();
        Ok(stems)
    }

    /// Places what start-up found of one broker in `generation` (in arrival order, so a
    /// conflict refuses the later one): its candidate accepted if its ids are free, else its
    /// current version; what cannot serve is listed and logged.
    async fn place(&self, generation: &mut Generation, mut one: Found) -> anyhow::Result<()> {
        let conflict = |error: anyhow::Error, version: String, tenant: Option<String>| Problem {
            error: format!("{error:#}"),
            version: Some(version),
            tenant,
        };
        if let Some((broker, files, forced)) = one.candidate.take() {
            match generation.insert(broker) {
                Ok(()) => {
                    self.accept_files(&one.name, &files, Source::Dir, forced)
                        .await?;
                    one.current = None;
                    one.problem = None;
                }
                Err(error) => {
                    one.problem = Some(conflict(error, files.version, files.tenant));
                }
            }
        }
        if let Some(broker) = one.current.take() {
            let version = broker.version.clone();
            if let Err(error) = generation.insert(broker) {
                one.problem = Some(conflict(error, version, None));
            }
        }
        if let Some(problem) = &one.problem {
            match generation.get(&one.name) {
                Some(serving) => {
                    tracing::error!(broker = %one.name, serving = %serving.version, "a newer version was refused: {}", problem.error)
                }
                None => {
                    tracing::error!(broker = %one.name, "quarantined, not served: {}", problem.error)
                }
            }
        }
        self.set_problem(&one.name, one.problem);
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
        let files = match self.read_files(&wasm, &manifest) {
            Ok(files) => files,
            Err(error) => {
                found.problem = problem(format!("{error:#}"), None);
                return found;
            }
        };
        self.settle_found(&mut found, current.map(|c| c.0), files)
            .await;
        found
    }

    /// Loads what `found`'s broker serves now (its current version) and checks the version in
    /// the brokers dir if it differs.
    async fn settle_found(&self, found: &mut Found, current: Option<String>, files: Files) {
        let name = found.name.clone();
        let problem = |error: String, files: Option<&Files>| {
            Some(Problem {
                error,
                version: files.map(|f| f.version.clone()),
                tenant: files.and_then(|f| f.tenant.clone()),
            })
        };
        if current.as_ref() == Some(&files.version) {
            match self.load(&name, &files).await {
                Ok(broker) => {
                    let _ = self.keep(&name, &files);
                    found.current = Some(broker);
                }
                Err(error) => found.problem = problem(format!("{error:#}"), Some(&files)),
            }
            return;
        }
        if let Some(version) = &current {
            match self.load_kept(&name, version).await {
                Ok(broker) => found.current = Some(broker),
                Err(error) => {
                    let error = format!("current version {version} cannot serve: {error:#}");
                    found.problem = problem(error, None);
                }
            }
        }
        let forced = self.marker(&name).exists();
        let serving = found.current.as_ref();
        match self
            .evaluate(&name, &files, serving, Source::Dir, (forced, forced))
            .await
        {
            Ok(broker) => found.candidate = Some((broker, files, forced)),
            Err(error) => {
                let error = match error.downcast_ref::<Refused>() {
                    Some(refusal) => refusal.0.clone(),
                    None => format!("{error:#}"),
                };
                found.problem = problem(error, Some(&files));
            }
        }
    }
}
