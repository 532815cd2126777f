//! Instances kept warm between calls of one broker version, when its manifest opts in with
//! `limits.calls_per_instance` above 1 (the default, 1, is a fresh instance per call).
//!
//! After a call the guest answered (a value or a refusal), its store and instance wait here for
//! the next call of the same version. A call that trapped, ran out of fuel or time, hit the
//! memory cap or was dropped half-way is never kept, nor an instance that has served its
//! `calls_per_instance` calls. What one call leaves in the instance's memory, later calls of
//! the same broker version see; never another broker's or tenant's.
//!
//! An idle instance holds a pooling-allocator slot and its memory, so idle instances are
//! bounded apart from the live ones (the engine's pool has room for both): at most
//! [`MAX_IDLE_INSTANCES`] and [`MAX_IDLE_MEMORY_MIB`] of linear memory across the runtime, at
//! most [`MAX_IDLE_PER_VERSION`] per broker version, each for at most [`IDLE_TTL`]. Past a
//! bound the instance is dropped and a later call makes a fresh one: warm instances make calls
//! cheaper, never possible or impossible.

use super::bindings::Broker;
use super::host::HostState;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::Store;

/// Idle instances across the runtime.
pub const MAX_IDLE_INSTANCES: u32 = 100;
/// Linear memory of all idle instances together, in MiB.
pub const MAX_IDLE_MEMORY_MIB: u32 = 2048;
/// Idle instances of one broker version.
pub const MAX_IDLE_PER_VERSION: usize = 8;
/// How long an instance stays idle before it is dropped.
pub const IDLE_TTL: Duration = Duration::from_secs(60);

/// The runtime's room for idle instances, and every pool that may hold some (for the sweep).
#[derive(Clone)]
pub struct IdleSlots {
    count: Arc<Semaphore>,
    memory_mib: Arc<Semaphore>,
    pools: Arc<Mutex<Vec<Weak<WarmPool>>>>,
}

/// One broker version's idle instances.
pub struct WarmPool {
    idle: Mutex<Vec<Warm>>,
    slots: IdleSlots,
}

/// An idle instance: its store, its instance, how many calls it served, and its idle slots.
struct Warm {
    store: Store<HostState>,
    broker: Broker,
    calls: u32,
    parked: Instant,
    _count: OwnedSemaphorePermit,
    _memory: OwnedSemaphorePermit,
}

/// An instance taken from a pool for one call.
pub struct Reused {
    /// Its store, to be readied for the call.
    pub store: Store<HostState>,
    /// Its instance.
    pub broker: Broker,
    /// Calls it served before this one.
    pub calls: u32,
}

impl Default for IdleSlots {
    fn default() -> Self {
        IdleSlots {
            count: Arc::new(Semaphore::new(MAX_IDLE_INSTANCES as usize)),
            memory_mib: Arc::new(Semaphore::new(MAX_IDLE_MEMORY_MIB as usize)),
            pools: Arc::default(),
        }
    }
}

impl IdleSlots {
    /// A new pool for one broker version.
    pub fn pool(&self) -> Arc<WarmPool> {
        let pool = Arc::new(WarmPool {
            idle: Mutex::default(),
            slots: self.clone(),
        });
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.retain(|p| p.strong_count() > 0);
        pools.push(Arc::downgrade(&pool));
        pool
    }

    /// Drops every instance idle longer than [`IDLE_TTL`].
    pub fn sweep(&self) {
        let pools: Vec<Arc<WarmPool>> = {
            let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
            pools.retain(|p| p.strong_count() > 0);
            pools.iter().filter_map(Weak::upgrade).collect()
        };
        for pool in pools {
            pool.expire();
        }
    }

    /// Idle instances across the runtime.
    pub fn idle(&self) -> usize {
        MAX_IDLE_INSTANCES as usize - self.count.available_permits()
    }

    /// Sweeps every second on the current tokio runtime, until every clone of this is dropped
    /// (no sweep outside a runtime: expired instances then go when their pool is next used).
    pub fn start_sweeping(&self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pools = Arc::downgrade(&self.pools);
        let (count, memory_mib) = (
            Arc::downgrade(&self.count),
            Arc::downgrade(&self.memory_mib),
        );
        handle.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let (Some(pools), Some(count), Some(memory_mib)) =
                    (pools.upgrade(), count.upgrade(), memory_mib.upgrade())
                else {
                    return;
                };
                IdleSlots {
                    count,
                    memory_mib,
                    pools,
                }
                .sweep();
            }
        });
    }
}

impl WarmPool {
    /// The most recently parked instance, if any (it is the likeliest to have its pages in the
    /// CPU's caches). The caller must hold a live slot before taking it: from now on the
    /// instance counts as live, no longer as idle.
    pub fn take(&self) -> Option<Reused> {
        self.expire();
        let warm = self.lock().pop()?;
        Some(Reused {
            store: warm.store,
            broker: warm.broker,
            calls: warm.calls,
        })
    }

    /// Keeps an instance that has served `calls` calls for the next call, when the bounds allow;
    /// else drops it.
    pub fn park(&self, store: Store<HostState>, broker: Broker, calls: u32) {
        let mib = store.data().limits.memory_now.div_ceil(1024 * 1024).max(1);
        let Ok(mib) = u32::try_from(mib) else {
            return;
        };
        let mut idle = self.lock();
        if idle.len() >= MAX_IDLE_PER_VERSION {
            return;
        }
        let Ok(count) = self.slots.count.clone().try_acquire_owned() else {
            return;
        };
        let Ok(memory) = self.slots.memory_mib.clone().try_acquire_many_owned(mib) else {
            return;
        };
        idle.push(Warm {
            store,
            broker,
            calls,
            parked: Instant::now(),
            _count: count,
            _memory: memory,
        });
    }

    /// Drops the instances idle longer than [`IDLE_TTL`] (outside the lock: dropping a store
    /// resets its memory).
    fn expire(&self) {
        let expired: Vec<Warm> = {
            let mut idle = self.lock();
            let now = Instant::now();
            let (old, kept) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|w| now.duration_since(w.parked) > IDLE_TTL);
            *idle = kept;
            old
        };
        drop(expired);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Warm>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}
