//! The host side of the `kv` import: each broker's private key-value store, kept in the
//! runtime's state store, with size limits, a quota and a per-call budget of calls.

use super::bindings::brokerbox::broker::kv::{self, KvError};
use crate::store::KvStore;
use std::sync::Arc;

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Default quota: all of a broker's keys and values together, in bytes.
pub const DEFAULT_QUOTA_BYTES: u64 = 1024 * 1024;
/// Key-value calls one guest call may make (so a loop cannot hammer the state store).
pub const MAX_CALLS_PER_CALL: u32 = 1_000;
/// Most keys one `list-keys` returns.
pub const MAX_LISTED_KEYS: i64 = 1_000;

/// A broker's grant of the `kv` capability.
#[derive(Clone)]
pub struct KvGrant {
    /// Where the values live.
    pub store: Arc<dyn KvStore>,
    /// The broker's quota, in bytes.
    pub quota_bytes: u64,
}

impl std::fmt::Debug for KvGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvGrant")
            .field("quota_bytes", &self.quota_bytes)
            .finish()
    }
}

/// The per-call state of the `kv` import.
pub struct KvAccess {
    grant: Option<KvGrant>,
    broker: String,
    calls_left: u32,
}

impl KvAccess {
    /// Access for `broker` under `grant` (none when not granted).
    pub fn new(broker: &str, grant: Option<KvGrant>) -> Self {
        KvAccess {
            grant,
            broker: broker.to_string(),
            calls_left: MAX_CALLS_PER_CALL,
        }
    }

    /// The grant, counting one call against the budget.
    fn begin(&mut self, key: &str) -> Result<(&KvGrant, &str), KvError> {
        let Some(grant) = &self.grant else {
            return Err(KvError::Denied(
                "this broker was not granted `kv` in its manifest".into(),
            ));
        };
        if self.calls_left == 0 {
            return Err(KvError::Denied(format!(
                "more than {MAX_CALLS_PER_CALL} kv calls in one call"
            )));
        }
        self.calls_left -= 1;
        if key.len() > MAX_KEY_BYTES {
            return Err(KvError::TooLarge(format!(
                "keys are at most {MAX_KEY_BYTES} bytes"
            )));
        }
        Ok((grant, &self.broker))
    }
}

/// Logs a store failure under the broker's name (the line stands alone: at INFO no span
/// carries the broker) and gives the guest a plain error.
fn unavailable(broker: &str) -> impl FnOnce(crate::store::StoreError) -> KvError + '_ {
    move |error| {
        tracing::warn!(broker, "kv: {error}");
        KvError::Unavailable("the state store failed".into())
    }
}

/// The `kv` import is served by the per-call access object itself (not by the whole host
/// state), so this module depends on nothing else of the sandbox.
impl kv::Host for KvAccess {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, KvError> {
        let (grant, broker) = self.begin(&key)?;
        grant
            .store
            .kv_get(broker, &key)
            .await
            .map_err(unavailable(broker))
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), KvError> {
        let (grant, broker) = self.begin(&key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(KvError::TooLarge(format!(
                "values are at most {MAX_VALUE_BYTES} bytes"
            )));
        }
        let stored = grant
            .store
            .kv_set(broker, &key, &value, grant.quota_bytes)
            .await
            .map_err(unavailable(broker))?;
        if stored {
            Ok(())
        } else {
            Err(KvError::TooLarge(format!(
                "the broker's kv quota of {} bytes is full",
                grant.quota_bytes
            )))
        }
    }

    async fn delete(&mut self, key: String) -> Result<(), KvError> {
        let (grant, broker) = self.begin(&key)?;
        grant
            .store
            .kv_delete(broker, &key)
            .await
            .map_err(unavailable(broker))
    }

    async fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, KvError> {
        let (grant, broker) = self.begin(&prefix)?;
        grant
            .store
            .kv_keys(broker, &prefix, MAX_LISTED_KEYS)
            .await
            .map_err(unavailable(broker))
    }
}
