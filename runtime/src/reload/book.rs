//! The reloader's side of the book of versions: decisions written, old versions pruned.

use super::files::Files;
use super::{Reloader, Source, MAX_KEPT_VERSIONS};
use crate::store::{now_ms, VersionRecord, VersionState};

impl Reloader {
    /// Writes a decision in the book.
    pub(super) async fn decide(
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
    pub(super) async fn prune(&self, name: &str) {
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
    pub(super) async fn current_version(&self, name: &str) -> Option<String> {
        self.store.current_version(name).await.ok().flatten()
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

    /// Records `files` of `name` as accepted and current, keeps them, and removes the force
    /// marker that forced them.
    pub(super) async fn accept_files(
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
}
