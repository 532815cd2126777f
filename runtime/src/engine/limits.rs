//! Per-call resource limits of a guest, with the defaults used when a manifest says nothing.

use serde::Deserialize;
use std::time::Duration;

/// Default wall-clock budget of one guest call: generous for a broker talking to nothing but
/// the host, well below the 60 s after which platforms give up on a request.
pub const DEFAULT_CALL_TIMEOUT_MS: u64 = 10_000;
/// Default CPU budget of one guest call, in wasmtime fuel units (about one per wasm
/// instruction): a few seconds of pure computation, far beyond what a handler needs.
pub const DEFAULT_FUEL: u64 = 2_000_000_000;
/// Default cap on a guest's linear memory: Rust guests use a few MiB; leaves room for caches.
pub const DEFAULT_MEMORY_MIB: u64 = 64;
/// Highest memory cap a manifest may ask for; the pooling allocator reserves this per slot.
pub const MAX_MEMORY_MIB: u64 = 256;
/// Cap on what one call may write to stdout/stderr; the rest of a line is dropped.
pub const DEFAULT_OUTPUT_BYTES: usize = 64 * 1024;

/// Limits of one broker's guest calls, as the manifest's `[limits]` table.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock budget of one call, in milliseconds.
    pub call_timeout_ms: u64,
    /// CPU budget of one call, in fuel units.
    pub fuel: u64,
    /// Linear memory cap, in MiB.
    pub memory_mib: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_timeout_ms: DEFAULT_CALL_TIMEOUT_MS,
            fuel: DEFAULT_FUEL,
            memory_mib: DEFAULT_MEMORY_MIB,
        }
    }
}

impl Limits {
    /// The wall-clock budget as a `Duration`.
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }

    /// The memory cap in bytes.
    pub fn memory_bytes(&self) -> usize {
        usize::try_from(self.memory_mib * 1024 * 1024).unwrap_or(usize::MAX)
    }

    /// Checks that every limit is within what the host allows.
    ///
    /// # Errors
    /// A message naming the first limit out of range.
    pub fn validate(&self) -> Result<(), String> {
        if self.call_timeout_ms == 0 || self.call_timeout_ms > 600_000 {
            return Err("limits.call_timeout_ms must be between 1 and 600000".into());
        }
        if self.fuel == 0 {
            return Err("limits.fuel must be positive".into());
        }
        if self.memory_mib == 0 || self.memory_mib > MAX_MEMORY_MIB {
            return Err(format!(
                "limits.memory_mib must be between 1 and {MAX_MEMORY_MIB}"
            ));
        }
        Ok(())
    }
}

/// The largest linear memory any guest may have, in bytes (the pooling allocator's slot size).
pub fn memory_cap_bytes() -> usize {
    usize::try_from(MAX_MEMORY_MIB * 1024 * 1024).unwrap_or(usize::MAX)
}
