//! The background task that keeps every stored secret under the primary data key: once at
//! start (clear text from before encryption is sealed), then whenever more than one data key
//! exists (after a rotation, made here or on another replica). It reloads the keys every
//! [`INTERVAL`], so a rotation on one replica reaches the others within it.

use super::StateStore;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the keys are reloaded (and a pending reseal resumed).
pub const INTERVAL: Duration = Duration::from_secs(5);

/// Runs until `stop` is cancelled.
pub async fn run(store: Arc<dyn StateStore>, stop: CancellationToken) {
    let mut first = true;
    loop {
        let keys = match store.reload_keys().await {
            Ok(keys) => keys,
            Err(error) => {
                tracing::warn!("reloading the data keys failed: {error}");
                0
            }
        };
        if first || keys > 1 {
            // A pass is cancelled between transactions at most: each page commits whole.
            let pass = tokio::select! {
                pass = store.reseal() => pass,
                () = stop.cancelled() => return,
            };
            match pass {
                Ok(report) => {
                    first = false;
                    if report.resealed > 0 || !report.retired.is_empty() {
                        tracing::info!(
                            resealed = report.resealed,
                            retired = ?report.retired,
                            remaining = report.remaining,
                            "stored secrets resealed under the primary key"
                        );
                    }
                }
                Err(error) => tracing::warn!("resealing stored secrets failed: {error}"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(INTERVAL) => {}
            () = stop.cancelled() => return,
        }
    }
}
