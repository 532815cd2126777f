//! `brokerbox serve --watch`: notices new or changed `NAME.wasm` / `NAME.toml` files in the
//! brokers dir and reloads those brokers. It polls the directory (file size and modification
//! time), which works on every file system, and waits until a change has settled (two looks
//! alike) so a file still being written is never loaded.

use crate::reload::Reloader;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// How often the brokers dir is looked at.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Size and modification time of a broker's two files.
type Stamp = (Option<(u64, SystemTime)>, Option<(u64, SystemTime)>);

fn stamp(path: &Path) -> Option<(u64, SystemTime)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
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
            Some((name, (stamp(&wasm), stamp(&wasm.with_extension("toml")))))
        })
        .collect()
}

/// Watches `dir` until `stop` is cancelled, reloading brokers whose files changed.
pub async fn watch(dir: std::path::PathBuf, reloader: Arc<Reloader>, stop: CancellationToken) {
    // Start from nothing: the first looks reconcile every broker with what serves (a reload of
    // an unchanged broker is a no-op), so a change made before the watcher started counts too.
    let mut served: BTreeMap<String, Stamp> = BTreeMap::new();
    let mut pending: BTreeMap<String, Stamp> = BTreeMap::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(POLL_INTERVAL) => {}
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
            if let Err(error) = reloader.reload(name, false).await {
                tracing::warn!(broker = %name, "watch: {error:#}");
            }
        }
    }
}
