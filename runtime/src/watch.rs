//! `brokerbox serve --watch`: notices new or changed `NAME.wasm` / `NAME.toml` files (and
//! `NAME.force` markers) in the brokers dir and reloads those brokers.
//!
//! Two ways of noticing, so no change is missed and none is loaded half-written:
//! - **File events** (inotify): when a broker file is closed after writing or renamed into the
//!   dir, the broker is reloaded after a short quiet time ([`DEBOUNCE`], so a component and its
//!   manifest written together load as one version). This is the fast path: a new version
//!   serves milliseconds after it is written.
//! - **Polling** (file size and modification time every [`POLL_INTERVAL`]), which works on every
//!   file system; a change is reloaded once it looks the same twice in a row.
//!
//! A reload of an unchanged broker is a no-op, so both noticing the same change costs nothing.

use crate::reload::Reloader;
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often the brokers dir is looked at.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Quiet time after a file event before the broker is reloaded.
pub const DEBOUNCE: Duration = Duration::from_millis(5);
/// Longest a burst of file events is gathered before reloading.
const MAX_GATHER: Duration = Duration::from_millis(100);

/// Size and modification time of a broker's two files and of its `NAME.force` marker.
type Stamp = [Option<(u64, SystemTime)>; 3];

fn stamp(path: &Path) -> Option<(u64, SystemTime)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// The stamps of broker `name` in `dir`.
fn stamp_of(dir: &Path, name: &str) -> Stamp {
    ["wasm", "toml", "force"].map(|ext| stamp(&dir.join(format!("{name}.{ext}"))))
}

/// The stamps of every broker of `dir`.
fn look(dir: &Path) -> BTreeMap<String, Stamp> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
        .filter_map(|wasm| {
            let name = wasm.file_stem()?.to_str()?.to_string();
            let stamp = stamp_of(dir, &name);
            Some((name, stamp))
        })
        .collect()
}

/// The broker a finished write or rename in the brokers dir concerns, if any.
fn finished_broker_file(event: &notify::Event) -> Vec<String> {
    let finished = matches!(
        event.kind,
        EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
    );
    if !finished {
        return Vec::new();
    }
    event
        .paths
        .iter()
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "wasm" || e == "toml" || e == "force")
        })
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_string()))
        .collect()
}

/// Starts an inotify watch of `dir` sending the names of brokers whose files were written;
/// `None` (polling only) when the platform refuses.
fn events(dir: &Path) -> Option<(notify::RecommendedWatcher, mpsc::UnboundedReceiver<String>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let handler = move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            for name in finished_broker_file(&event) {
                let _ = tx.send(name);
            }
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(watcher) => watcher,
        Err(error) => {
            tracing::warn!("watch: no file events ({error}); polling only");
            return None;
        }
    };
    if let Err(error) = watcher.watch(dir, RecursiveMode::NonRecursive) {
        tracing::warn!(
            "watch: cannot watch {} ({error}); polling only",
            dir.display()
        );
        return None;
    }
    Some((watcher, rx))
}

/// Watches `dir` until `stop` is cancelled, reloading brokers whose files changed.
pub async fn watch(dir: std::path::PathBuf, reloader: Arc<Reloader>, stop: CancellationToken) {
    let (_watcher, mut events) = match events(&dir) {
        Some((watcher, rx)) => (Some(watcher), Some(rx)),
        None => (None, None),
    };
    // Start from nothing: the first looks reconcile every broker with what serves (a reload of
    // an unchanged broker is a no-op), so a change made before the watcher started counts too.
    let mut served: BTreeMap<String, Stamp> = BTreeMap::new();
    let mut pending: BTreeMap<String, Stamp> = BTreeMap::new();
    loop {
        let mut written = BTreeSet::new();
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(POLL_INTERVAL) => {}
            Some(name) = async { events.as_mut()?.recv().await } => {
                written.insert(name);
                // Gather what else is written with it (a component and its manifest).
                let gathering = tokio::time::Instant::now();
                while gathering.elapsed() < MAX_GATHER {
                    let Ok(Some(name)) = tokio::time::timeout(
                    DEBOUNCE,
                    async { events.as_mut()?.recv().await },
                    ).await else {
                        break;
                    };
                    written.insert(name);
                }
            }
        }
        for name in written {
            if !dir.join(format!("{name}.wasm")).exists() {
                continue;
            }
            pending.remove(&name);
            served.insert(name.clone(), stamp_of(&dir, &name));
            spawn_reload(&reloader, name);
        }
        let now = look(&dir);
        for (name, stamp) in &now {
            if served.get(name) == Some(stamp) {
                pending.remove(name);
                continue;
            }
            // Changed: reload once it looks the same twice in a row.
            if pending.get(name) != Some(stamp) {
                pending.insert(name.clone(), *stamp);
                continue;
            }
            pending.remove(name);
            served.insert(name.clone(), *stamp);
            spawn_reload(&reloader, name.clone());
        }
    }
}

/// Reloads broker `name` in a task of its own: a broker that is slow to load (a big compile,
/// a catalog that stalls until its load deadline) never delays another broker's reload.
/// Reloads of one broker still run one at a time (the reloader's per-broker lock), each
/// reading the files as they are when it runs, so the last one serves the latest files.
fn spawn_reload(reloader: &Arc<Reloader>, name: String) {
    let reloader = reloader.clone();
    tokio::spawn(async move {
        // The reloader logs and lists a refusal itself.
        if let Err(error) = reloader.reload(&name, false).await {
            tracing::debug!(broker = %name, "watch: {error:#}");
        }
    });
}
