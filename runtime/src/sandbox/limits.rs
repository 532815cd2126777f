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
/// Bytes of a call's log lines and stdout/stderr that reach the host's logs; the rest is
/// dropped.
pub const LOGGED_OUTPUT_BYTES: usize = 64 * 1024;
/// Bytes a call may write to stdout/stderr at all; writing more ends the call (a trap). Only
/// the first [`LOGGED_OUTPUT_BYTES`] are held in memory.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// Most random bytes one `get-random-bytes` (or its insecure twin) may ask for: the host fills
/// them synchronously, so the size a guest picks must not stretch a call past its deadline.
pub const MAX_RANDOM_BYTES: u64 = 1024 * 1024;
/// Most bytes a guest may hand the host in one host call or one result (wasmtime's hostcall
/// fuel, counted in host-side bytes): far above the caps on what results may hold, so a legal
/// answer always fits, while a result blown up to the guest's whole memory (millions of empty
/// list entries, each a host allocation) is refused before the host builds it.
pub const MAX_HOSTCALL_BYTES: usize = 4 * 1024 * 1024;
/// The same for the catalog, read once at load: schemas of many plans add up.
pub const MAX_CATALOG_HOSTCALL_BYTES: usize = 32 * 1024 * 1024;

/// Default number of calls of one broker that may run at once; more wait for a slot (up to
/// their deadline). See [`super::slots`] for how brokers share the runtime's instance slots.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 32;

/// Most calls one instance may serve (`calls_per_instance`): a warm instance is still made
/// afresh now and then, so what a guest leaks stays bounded.
pub const MAX_CALLS_PER_INSTANCE: u32 = 100_000;

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
    /// Calls of this broker running at once.
    pub max_concurrency: u32,
    /// Calls one instance may serve before it is thrown away: 1 (the default) is a fresh
    /// instance per call; more lets calls reuse a warm instance (see [`super::warm`]).
    pub calls_per_instance: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_timeout_ms: DEFAULT_CALL_TIMEOUT_MS,
            fuel: DEFAULT_FUEL,
            memory_mib: DEFAULT_MEMORY_MIB,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            calls_per_instance: 1,
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
        if self.max_concurrency == 0 || self.max_concurrency > super::slots::MAX_BROKER_SHARE {
            return Err(format!(
                "limits.max_concurrency must be between 1 and {} (a broker's share of the \
                 runtime's {} live instances)",
                super::slots::MAX_BROKER_SHARE,
                super::MAX_LIVE_INSTANCES
            ));
        }
        if self.calls_per_instance == 0 || self.calls_per_instance > MAX_CALLS_PER_INSTANCE {
            return Err(format!(
                "limits.calls_per_instance must be between 1 and {MAX_CALLS_PER_INSTANCE}"
            ));
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

/// Most elements a guest table may have (function references of a big guest are well below).
pub const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Most core instances or tables one guest component may create (a componentize-py
/// component has 14 core instances).
pub const MAX_INSTANCE_PARTS: usize = 20;
/// Most linear memories one guest component may create.
pub const MAX_MEMORIES_PER_COMPONENT: u32 = 1;

/// The resource limiter of one guest call: caps linear memory and tables, and remembers when
/// it refused memory so the host can say "memory limit" rather than "the guest crashed".
pub struct GuestLimiter {
    memory_bytes: usize,
    /// The size the guest's linear memory has grown to.
    pub memory_now: usize,
    /// Set when the guest asked for more memory than its cap.
    pub memory_refused: bool,
}

impl GuestLimiter {
    /// A limiter allowing `memory_bytes` of linear memory.
    pub fn new(memory_bytes: usize) -> Self {
        GuestLimiter {
            memory_bytes,
            memory_now: 0,
            memory_refused: false,
        }
    }
}

impl wasmtime::ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes || maximum.is_some_and(|max| desired > max) {
            self.memory_refused = true;
            // An error (not `Ok(false)`) ends the call at once instead of letting the guest
            // abort in its allocator.
            wasmtime::bail!("memory limit: the guest asked for {desired} bytes");
        }
        self.memory_now = self.memory_now.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS || maximum.is_some_and(|max| desired > max) {
            wasmtime::bail!("table limit: the guest asked for {desired} elements");
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCE_PARTS
    }

    fn tables(&self) -> usize {
        MAX_INSTANCE_PARTS
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES_PER_COMPONENT as usize
    }
}
