//! What a guest's `Store` holds: its WASI context (granting nothing unless the manifest says),
//! its memory limits, and the host side of the `log` import.

use super::bindings::brokerbox::broker::config;
use super::bindings::brokerbox::broker::log::{self, Level};
use super::limits::GuestLimiter;
use std::path::PathBuf;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Capabilities granted to one broker, resolved to host paths and values.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Directory preopened for the guest at the same path, when `files` is granted.
    pub files_dir: Option<PathBuf>,
    /// Environment variables the guest sees (the manifest's `[env]`), also answered by the
    /// `config` import.
    pub env: std::sync::Arc<[(String, String)]>,
    /// The `kv` capability, when granted.
    pub kv: Option<super::kv::KvGrant>,
    /// Hosts the guest may call over `wasi:http` (empty: none).
    pub http: super::http::HttpAllowlist,
    /// The quota of the files directory, shared by the broker's calls.
    pub files_quota: Option<std::sync::Arc<super::files_quota::FilesQuota>>,
}

/// Per-call state of a guest.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// Memory, table and instance caps checked by wasmtime.
    pub limits: GuestLimiter,
    /// Where the guest's log lines go.
    pub log: GuestLog,
    /// The guest's captured stdout and stderr.
    pub output: super::output::GuestOutput,
    /// The `kv` import's state.
    pub kv: super::kv::KvAccess,
    http: wasmtime_wasi_http::WasiHttpCtx,
    http_hooks: super::http::HttpHooks,
    /// How long the call has computed, and its lane when it runs long.
    pub turns: super::lanes::CallTurns,
    /// The quota of the granted files directory.
    pub files_quota: Option<std::sync::Arc<super::files_quota::FilesQuota>>,
    /// What the `config` import answers: the manifest's `[env]` and the files directory.
    config: std::sync::Arc<[(String, String)]>,
    files_dir: Option<String>,
}

/// Identifies a guest's log lines.
pub struct GuestLog {
    /// The broker's name.
    pub broker: String,
    /// The OSB request identity of the call, if any.
    pub request_identity: Option<String>,
    /// Bytes the guest may still log in this call.
    pub budget: usize,
}

impl HostState {
    /// A fresh state for one call of `broker`'s guest.
    ///
    /// # Errors
    /// When the granted files directory cannot be opened.
    pub fn new(grants: &Grants, memory_bytes: usize, log: GuestLog) -> anyhow::Result<Self> {
        use super::limits::{LOGGED_OUTPUT_BYTES, MAX_OUTPUT_BYTES, MAX_RANDOM_BYTES};
        let output = super::output::GuestOutput::new(LOGGED_OUTPUT_BYTES, MAX_OUTPUT_BYTES);
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(output.clone()).stderr(output.clone());
        // The host fills random bytes synchronously: cap what one call may ask for.
        wasi.max_random_size(MAX_RANDOM_BYTES);
        for (key, value) in grants.env.iter() {
            wasi.env(key, value);
        }
        let mut files_dir = None;
        if let Some(dir) = &grants.files_dir {
            // File operations run on the calling thread rather than tokio's blocking pool: a
            // WASI file call moves at most 4 KiB on a local disk, far cheaper than the two
            // thread hops of `spawn_blocking` (see docs/BENCHMARKS.md).
            wasi.allow_blocking_current_thread(true);
            let path = dir.to_string_lossy();
            wasi.env("BROKERBOX_FILES_DIR", &path);
            wasi.preopened_dir(dir, &*path, FsPerms::ReadWrite)?;
            files_dir = Some(path.into_owned());
        }
        let limits = GuestLimiter::new(memory_bytes);
        let kv = super::kv::KvAccess::new(&log.broker, grants.kv.clone());
        Ok(HostState {
            kv,
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            http_hooks: grants.http.for_call(),
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits,
            log,
            output,
            turns: super::lanes::CallTurns::default(),
            files_quota: grants.files_quota.clone(),
            config: grants.env.clone(),
            files_dir,
        })
    }
}

impl HostState {
    /// Whether the guest holds more than `most` host resources (open files, streams,
    /// pollables...), what an idle instance would keep open; counts no further than that.
    pub fn holds_more_than(&mut self, most: usize) -> bool {
        self.table.iter_mut().nth(most).is_some()
    }

    /// Readies a kept state for another call of the same broker: the call's log identity and
    /// budget, its output, its kv and http budgets start afresh; the WASI context (granted
    /// directory, environment) and what the guest holds in its resource table stay.
    pub fn next_call(&mut self, grants: &Grants, log: GuestLog) {
        self.output.reset();
        self.kv = super::kv::KvAccess::new(&log.broker, grants.kv.clone());
        self.http_hooks = grants.http.for_call();
        self.limits.memory_refused = false;
        self.log = log;
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime_wasi_http::WasiHttpView for HostState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

impl super::bindings::types::Host for HostState {}

impl log::Host for HostState {
    async fn write(&mut self, level: Level, message: String) {
        self.log.write(level, &message);
    }
}

impl config::Host for HostState {
    async fn get(&mut self, key: String) -> Option<String> {
        let found = self.config.iter().find(|(name, _)| *name == key);
        found.map(|(_, value)| value.clone())
    }

    async fn files_dir(&mut self) -> Option<String> {
        self.files_dir.clone()
    }
}

impl GuestLog {
    /// Logs `message` at `level`, truncated to the remaining budget.
    pub fn write(&mut self, level: Level, message: &str) {
        if self.budget == 0 {
            return;
        }
        let mut end = message.len().min(self.budget);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        self.budget -= end;
        let message = &message[..end];
        let broker = self.broker.as_str();
        let request = self.request_identity.as_deref().unwrap_or("-");
        match level {
            Level::Trace => tracing::trace!(broker, request, guest = message),
            Level::Debug => tracing::debug!(broker, request, guest = message),
            Level::Info => tracing::info!(broker, request, guest = message),
            Level::Warn => tracing::warn!(broker, request, guest = message),
            Level::Error => tracing::error!(broker, request, guest = message),
        }
    }
}
