//! The wasmtime side: one shared `Engine`, compiled guests, and a fresh sandboxed `Store` per
//! call (or a warm one, where a manifest opts in) with fuel, a wall-clock deadline and a memory
//! cap.

pub mod bindings;
pub mod cache;
mod call;
pub mod egress;
pub mod files_quota;
mod guest;
mod host;
pub mod http;
pub mod kv;
pub mod lanes;
pub mod limits;
mod output;
pub mod slots;
pub mod warm;

pub use call::{cap_description, refusal_description, CallError, CallInfo, MAX_DESCRIPTION_BYTES};
pub use guest::{Guest, Request, Response};
pub use host::Grants;
pub use wasmtime::Engine;

use std::time::Duration;
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch ticker advances the engine's epoch. Each tick, a running guest yields to
/// tokio (so it never holds a worker thread for long) and its wall-clock deadline is checked.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);
/// Guest instances that may be alive at once across all brokers (pooling allocator slots).
pub const MAX_LIVE_INSTANCES: u32 = 1000;
/// Pooling allocator slots: the live instances and the idle ones kept warm.
const POOLED_INSTANCES: u32 = MAX_LIVE_INSTANCES + warm::MAX_IDLE_INSTANCES;
/// Wasm stack a guest may use; deep recursion past it traps instead of overflowing the host.
pub const MAX_WASM_STACK: usize = 1024 * 1024;

/// What every guest of a runtime shares: the engine and the cap on live instances.
#[derive(Clone)]
pub struct Sandbox {
    /// The wasmtime engine.
    pub engine: wasmtime::Engine,
    /// Slots for live instances, [`MAX_LIVE_INSTANCES`] in all, shared fairly (see [`slots`]):
    /// a call holds one while its instance lives, so the pooling allocator never runs out.
    pub live: slots::LiveSlots,
    /// Compiled components, shared by every broker using the same component.
    pub components: std::sync::Arc<cache::ComponentCache>,
    /// The lanes long-running calls take turns on (see [`lanes`]).
    pub lanes: lanes::Lanes,
    /// Compiles that may run at once (one per core): reloads of different brokers run side
    /// by side, so many uploads at once must not take every core and much memory each.
    pub compiles: std::sync::Arc<tokio::sync::Semaphore>,
    /// Every guest call's outcome, duration and fuel.
    pub calls: crate::telemetry::metrics::CallMetrics,
    /// Room for instances kept warm between calls (see [`warm`]).
    pub idle: warm::IdleSlots,
}

impl Sandbox {
    /// A sandbox with a new engine (see [`new_engine`]), the component cache `components`,
    /// and `max_instances` live instances (at most [`MAX_LIVE_INSTANCES`]).
    ///
    /// # Errors
    /// As [`new_engine`].
    pub fn new(components: cache::ComponentCache, max_instances: u32) -> anyhow::Result<Self> {
        let max_instances = max_instances.min(MAX_LIVE_INSTANCES);
        let engine = new_engine_caching(Allocation::production(), components.function_store())?;
        Ok(Sandbox::build(engine, components, max_instances))
    }

    /// A sandbox around an engine built elsewhere (benchmarks compare engine settings).
    pub fn with_engine(engine: wasmtime::Engine, components: cache::ComponentCache) -> Self {
        Sandbox::build(engine, components, MAX_LIVE_INSTANCES)
    }

    fn build(engine: wasmtime::Engine, components: cache::ComponentCache, live: u32) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Sandbox {
            engine,
            live: slots::LiveSlots::new(live),
            components: std::sync::Arc::new(components),
            lanes: lanes::Lanes::for_this_machine(),
            compiles: std::sync::Arc::new(tokio::sync::Semaphore::new(cores)),
            calls: crate::telemetry::metrics::CallMetrics::default(),
            idle: {
                let idle = warm::IdleSlots::default();
                idle.start_sweeping();
                idle
            },
        }
    }
}

/// How the engine allocates guest instances. Production uses [`Allocation::production`];
/// the others exist so the benchmark can show what each setting buys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// wasmtime's default: mmap and munmap memories and tables for every instance.
    OnDemand,
    /// The pooling allocator with copy-on-write memory images and wasmtime's defaults otherwise.
    Pooling,
    /// The pooling allocator, copy-on-write images, and memory kept resident between instances:
    /// up to `keep_resident` bytes per slot are reset in place instead of being given back to
    /// the kernel; with `pagemap_scan`, only the pages a call touched are reset (Linux ≥ 6.7,
    /// used when the kernel has it).
    PoolingResident {
        /// Bytes of linear memory (and table) per slot reset in place.
        keep_resident: usize,
        /// Whether to find the touched pages with the `PAGEMAP_SCAN` ioctl.
        pagemap_scan: bool,
    },
}

impl Allocation {
    /// What the runtime uses: the pooling allocator keeping up to 1 MiB per slot resident,
    /// found with `PAGEMAP_SCAN`. A fresh instance per call then costs little more than a
    /// function call (see docs/BENCHMARKS.md).
    pub const fn production() -> Self {
        Allocation::PoolingResident {
            keep_resident: 1024 * 1024,
            pagemap_scan: true,
        }
    }
}

/// Builds the engine every broker shares (see [`new_engine_with`] and
/// [`Allocation::production`]).
///
/// # Errors
/// As [`new_engine_with`].
pub fn new_engine() -> anyhow::Result<wasmtime::Engine> {
    new_engine_with(Allocation::production())
}

/// Builds an engine: component model, async calls, fuel, epochs, copy-on-write memory images,
/// and instance allocation as `allocation` says.
///
/// # Errors
/// When wasmtime rejects the configuration (e.g. the host cannot reserve address space).
pub fn new_engine_with(allocation: Allocation) -> anyhow::Result<wasmtime::Engine> {
    new_engine_caching(allocation, None)
}

/// [`new_engine_with`], compiling incrementally with `functions` when given: functions compiled
/// before (by any component) are taken from it instead of being compiled again.
///
/// # Errors
/// As [`new_engine_with`].
pub fn new_engine_caching(
    allocation: Allocation,
    functions: Option<std::sync::Arc<cache::FunctionStore>>,
) -> anyhow::Result<wasmtime::Engine> {
    let mut config = Config::new();
    if let Some(functions) = functions {
        config.enable_incremental_compilation(functions)?;
    }
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .memory_init_cow(true);
    let mut pool = PoolingAllocationConfig::default();
    let parts = limits::MAX_INSTANCE_PARTS as u32;
    pool.total_component_instances(POOLED_INSTANCES)
        // A Rust component holds a few core instances (main module plus shims) and one linear
        // memory; a Python one (componentize-py links CPython as shared libraries) about 14
        // core instances and a table each. Every live instance gets room for a full share, so
        // the slots the live-instance count promises are there whatever the components are.
        .total_core_instances(POOLED_INSTANCES * parts)
        .total_memories(POOLED_INSTANCES * limits::MAX_MEMORIES_PER_COMPONENT)
        .total_tables(POOLED_INSTANCES * parts)
        // One instance never takes more than its share of each pool (a component made of more
        // modules fails to load: its catalog call cannot instantiate it).
        .max_core_instances_per_component(parts)
        .max_memories_per_component(limits::MAX_MEMORIES_PER_COMPONENT)
        .max_tables_per_component(parts)
        .max_memory_size(limits::memory_cap_bytes());
    match allocation {
        Allocation::OnDemand => {}
        Allocation::Pooling => {
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        Allocation::PoolingResident {
            keep_resident,
            pagemap_scan,
        } => {
            pool.linear_memory_keep_resident(keep_resident)
                .table_keep_resident(keep_resident.min(64 * 1024))
                .pagemap_scan(if pagemap_scan {
                    wasmtime::Enabled::Auto
                } else {
                    wasmtime::Enabled::No
                });
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
    }
    Ok(wasmtime::Engine::new(&config)?)
}

/// Advances an engine's epoch every [`EPOCH_TICK`] from a dedicated OS thread, so deadlines
/// fire even when every executor thread is busy running guests (or the executor has one
/// thread). Stops when dropped.
pub struct EpochTicker {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl EpochTicker {
    /// Starts ticking `engine`.
    pub fn start(engine: wasmtime::Engine) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("brokerbox-epoch".into())
            .spawn(move || {
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("the epoch thread starts");
        EpochTicker { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
