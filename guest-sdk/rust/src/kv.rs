//! The broker's private key-value store (manifest `[grants] kv = true`), kept by the runtime in
//! its state store: shared by every call and replica, and kept across restarts.

use crate::bindings::brokerbox::broker::kv as host;
pub use host::KvError;
use serde::{de::DeserializeOwned, Serialize};

/// The value of `key`, if it is set.
///
/// # Errors
/// [`KvError::Denied`] without the grant; [`KvError::Unavailable`] if the host's store failed.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
    host::get(key)
}

/// Sets `key` to `value`.
///
/// # Errors
/// [`KvError::TooLarge`] for a key over 256 bytes, a value over 64 KiB, or a full quota.
pub fn set(key: &str, value: &[u8]) -> Result<(), KvError> {
    host::set(key, value)
}

/// Removes `key`.
///
/// # Errors
/// As [`get`].
pub fn delete(key: &str) -> Result<(), KvError> {
    host::delete(key)
}

/// The keys starting with `prefix`, in ascending order (at most 1,000).
///
/// # Errors
/// As [`get`].
pub fn list_keys(prefix: &str) -> Result<Vec<String>, KvError> {
    host::list_keys(prefix)
}

/// The value of `key` as JSON of type `T`.
///
/// # Errors
/// As [`get`]; a value that is not JSON of `T` is [`KvError::Unavailable`].
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, KvError> {
    get(key)?
        .map(|bytes| {
            serde_json::from_slice(&bytes).map_err(|e| KvError::Unavailable(e.to_string()))
        })
        .transpose()
}

/// Sets `key` to `value` as JSON.
///
/// # Errors
/// As [`set`].
pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), KvError> {
    let bytes = serde_json::to_vec(value).map_err(|e| KvError::Unavailable(e.to_string()))?;
    set(key, &bytes)
}

impl From<KvError> for crate::BrokerError {
    fn from(error: KvError) -> Self {
        let detail = match error {
            KvError::Denied(d) => format!("kv denied: {d}"),
            KvError::TooLarge(d) => format!("kv too large: {d}"),
            KvError::Unavailable(d) => format!("kv unavailable: {d}"),
        };
        crate::BrokerError::Internal(detail)
    }
}
