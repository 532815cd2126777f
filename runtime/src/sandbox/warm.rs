//! Instances kept warm between calls of one broker version, when its manifest opts in with
//! `limits.calls_per_instance` above 1 (the default, 1, is a fresh instance per call).
//!
//! After a call the guest answered (a value or a refusal), its store and instance wait here for
//! the next call of the same version. A call that trapped, ran out of fuel or time, hit the
//! memory cap or was dropped half-way is never kept, nor an instance that has served its
//! `calls_per_instance` calls or holds more than [`MAX_IDLE_RESOURCES`] host resources. What
//! one call leaves in the instance's memory, later calls of the same broker version see; never
//! another broker's or tenant's.
//!
//! An idle instance holds a pooling-allocator slot and its memory, so idle instances are
//! bounded apart from the live ones (the engine's pool has room for both): at most
//! [`MAX_IDLE_INSTANCES`] and [`MAX_IDLE_MEMORY_MIB`] of linear memory across the runtime, at
//! most [`MAX_IDLE_PER_VERSION`] per broker version, each for at most [`IDLE_TTL`]. When the
//! runtime's bounds are reached, the instance idle longest (of any broker) gives way, so busy
//! brokers keep theirs and one broker's idle instances cannot hold the room for good. Warm
//! instances make calls cheaper, never possible or impossible.

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
/// Most host resources (open files, streams) an instance may hold and still be kept: a guest
/// that leaks them would otherwise keep them open across calls and while idle (file
/// descriptors are the process's, shared by every broker).
pub const MAX_IDLE_RESOURCES: usize = 16;

/// A guest instance with its store: what a pool keeps.
pub struct Instance {
    /// Its store.
    pub store: Store<HostState>,
    /// Its instance.
    pub instance: wasmtime::component::Instance,
}

/// The runtime's room for idle instances, and every pool that may hold some.
pub struct IdleSlots<T = Instance> {
    count: Arc<Semaphore>,
    memory_mib: Arc<Semaphore>,
    memory_total: u32,
    pools: Arc<Mutex<Vec<Weak<WarmPool<T>>>>>,
}

impl<T> Clone for IdleSlots<T> {
    fn clone(&self) -> Self {
        IdleSlots {
            count: self.count.clone(),
            memory_mib: self.memory_mib.clone(),
            memory_total: self.memory_total,
            pools: self.pools.clone(),
        }
    }
}

/// One broker version's idle instances, the longest idle first.
pub struct WarmPool<T = Instance> {
    idle: Mutex<Vec<Warm<T>>>,
    slots: IdleSlots<T>,
}

/// An idle instance: how many calls it served, since when it waits, and its idle slots.
struct Warm<T> {
    instance: T,
    calls: u32,
    parked: Instant,
    _count: OwnedSemaphorePermit,
    _memory: OwnedSemaphorePermit,
}

impl<T: Send + 'static> Default for IdleSlots<T> {
    fn default() -> Self {
        IdleSlots::new(MAX_IDLE_INSTANCES, MAX_IDLE_MEMORY_MIB)
    }
}

impl<T: Send + 'static> IdleSlots<T> {
    /// Room for `count` idle instances with `memory_mib` of memory together.
    pub fn new(count: u32, memory_mib: u32) -> Self {
        IdleSlots {
            count: Arc::new(Semaphore::new(count as usize)),
            memory_mib: Arc::new(Semaphore::new(memory_mib as usize)),
            memory_total: memory_mib,
            pools: Arc::default(),
        }
    }

    /// A new pool for one broker version.
    pub fn pool(&self) -> Arc<WarmPool<T>> {
        let pool = Arc::new(WarmPool {
            idle: Mutex::default(),
            slots: self.clone(),
        });
        let mut pools = lock(&self.pools);
        pools.retain(|p| p.strong_count() > 0);
        pools.push(Arc::downgrade(&pool));
        pool
    }

    /// Every pool still in use.
    fn pools(&self) -> Vec<Arc<WarmPool<T>>> {
        let mut pools = lock(&self.pools);
        pools.retain(|p| p.strong_count() > 0);
        pools.iter().filter_map(Weak::upgrade).collect()
    }

    /// Drops every instance idle longer than [`IDLE_TTL`].
    pub fn sweep(&self) {
        for pool in self.pools() {
            pool.expire(IDLE_TTL);
        }
    }

    /// Idle instances across the runtime.
    pub fn idle(&self) -> usize {
        self.pools().iter().map(|pool| lock(&pool.idle).len()).sum()
    }

    /// The linear memory idle instances hold, in MiB (as counted against the bound).
    pub fn idle_memory_mib(&self) -> u32 {
        let free = u32::try_from(self.memory_mib.available_permits()).unwrap_or(u32::MAX);
        self.memory_total.saturating_sub(free)
    }

    /// Room for one more idle instance of `mib` MiB, made by dropping the instances idle
    /// longest when the runtime's bounds are reached; `None` when it cannot be made.
    fn room(&self, mib: u32) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        if mib > self.memory_total {
            return None;
        }
        loop {
            let count = self.count.clone().try_acquire_owned();
            let memory = self.memory_mib.clone().try_acquire_many_owned(mib);
            if let (Ok(count), Ok(memory)) = (count, memory) {
                return Some((count, memory));
            }
            if !self.drop_longest_idle() {
                return None;
            }
        }
    }

    /// Drops the instance idle longest, of any pool; whether there was one.
    fn drop_longest_idle(&self) -> bool {
        let oldest = self
            .pools()
            .into_iter()
            .filter_map(|pool| {
                let parked = lock(&pool.idle).first().map(|w| w.parked)?;
                Some((parked, pool))
            })
            .min_by_key(|(parked, _)| *parked);
        let Some((_, pool)) = oldest else {
            return false;
        };
        let dropped = {
            let mut idle = lock(&pool.idle);
            (!idle.is_empty()).then(|| idle.remove(0))
        };
        // Another call may have taken it meanwhile: then there is room anyway, or the next
        // turn of the caller's loop finds another.
        drop(dropped);
        true
    }

    /// Sweeps every second on the current tokio runtime, until every clone of this is dropped
    /// (no sweep outside a runtime: expired instances then go when their pool is next used).
    pub fn start_sweeping(&self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let slots = Arc::downgrade(&self.pools);
        let (count, memory_mib, memory_total) = (
            self.count.clone(),
            self.memory_mib.clone(),
            self.memory_total,
        );
        handle.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(pools) = slots.upgrade() else {
                    return;
                };
                let slots = IdleSlots {
                    count: count.clone(),
                    memory_mib: memory_mib.clone(),
                    memory_total,
                    pools,
                };
                slots.sweep();
            }
        });
    }
}

impl<T: Send + 'static> WarmPool<T> {
    /// The most recently parked instance and the calls it served, if any (the likeliest to
    /// have its pages in the CPU's caches). The caller must hold a live slot before taking
    /// it: from now on the instance counts as live, no longer as idle.
    pub fn take(&self) -> Option<(T, u32)> {
        self.expire(IDLE_TTL);
        let warm = lock(&self.idle).pop()?;
        Some((warm.instance, warm.calls))
    }

    /// Keeps `instance`, which has served `calls` calls and holds `memory_bytes` of linear
    /// memory, for a later call, when the bounds allow; else drops it.
    pub fn park(&self, instance: T, calls: u32, memory_bytes: usize) {
        let Ok(mib) = u32::try_from(memory_bytes.div_ceil(1024 * 1024).max(1)) else {
            return;
        };
        if lock(&self.idle).len() >= MAX_IDLE_PER_VERSION {
            return;
        }
        let Some((count, memory)) = self.slots.room(mib) else {
            return;
        };
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE_PER_VERSION {
            idle.push(Warm {
                instance,
                calls,
                parked: Instant::now(),
                _count: count,
                _memory: memory,
            });
        }
    }

    /// Drops the instances idle longer than `ttl` (outside the lock: dropping a store resets
    /// its memory).
    fn expire(&self, ttl: Duration) {
        let expired: Vec<Warm<T>> = {
            let mut idle = lock(&self.idle);
            let now = Instant::now();
            let fresh = idle.partition_point(|w| now.duration_since(w.parked) > ttl);
            idle.drain(..fresh).collect()
        };
        drop(expired);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    fn taken(pool: &WarmPool<&'static str>) -> Vec<&'static str> {
        std::iter::from_fn(|| pool.take().map(|(instance, _)| instance)).collect()
    }

    #[test]
    fn a_pool_gives_back_the_latest_instance_with_its_calls_and_keeps_at_most_its_cap() {
        let slots = IdleSlots::new(100, 1000);
        let pool = slots.pool();
        pool.park("a", 3, MIB);
        pool.park("b", 7, MIB);
        assert_eq!(pool.take(), Some(("b", 7)));
        assert_eq!(pool.take(), Some(("a", 3)));
        assert_eq!(pool.take(), None);
        for _ in 0..MAX_IDLE_PER_VERSION + 3 {
            pool.park("x", 1, MIB);
        }
        assert_eq!(slots.idle(), MAX_IDLE_PER_VERSION);
    }

    #[test]
    fn when_the_runtime_is_full_the_instance_idle_longest_gives_way() {
        // Room for 3 instances.
        let slots = IdleSlots::new(3, 1000);
        let (quiet, busy) = (slots.pool(), slots.pool());
        quiet.park("quiet-1", 1, MIB);
        quiet.park("quiet-2", 1, MIB);
        busy.park("busy-1", 1, MIB);
        busy.park("busy-2", 1, MIB);
        assert_eq!(slots.idle(), 3);
        assert_eq!(taken(&quiet), ["quiet-2"]);
        assert_eq!(taken(&busy), ["busy-2", "busy-1"]);

        // Room for 10 MiB: a 6 MiB instance makes way for another.
        let slots = IdleSlots::new(100, 10);
        let (a, b) = (slots.pool(), slots.pool());
        a.park("a", 1, 6 * MIB);
        b.park("b", 1, 6 * MIB - 1);
        assert_eq!(taken(&a), Vec::<&str>::new());
        assert_eq!(taken(&b), ["b"]);
        // Larger than all the room: kept nowhere, and nothing else is dropped for it.
        a.park("small", 1, MIB);
        b.park("huge", 1, 11 * MIB);
        assert_eq!(slots.idle_memory_mib(), 1);
        assert_eq!(taken(&a), ["small"]);
        assert_eq!(slots.idle_memory_mib(), 0);
        assert_eq!(taken(&b), Vec::<&str>::new());
    }

    #[test]
    fn idle_instances_expire_and_give_their_room_back() {
        let slots = IdleSlots::new(1, 1000);
        let pool = slots.pool();
        pool.park("old", 1, MIB);
        std::thread::sleep(Duration::from_millis(5));
        pool.expire(Duration::from_millis(1));
        assert_eq!(slots.idle(), 0);
        // Its slot is free again without anything to drop.
        let other = slots.pool();
        other.park("new", 1, MIB);
        assert_eq!(taken(&other), ["new"]);
        // A dropped pool's instances are gone with it.
        other.park("gone", 1, MIB);
        drop(other);
        pool.park("kept", 1, MIB);
        assert_eq!(taken(&pool), ["kept"]);
    }
}
