//! Fair shares of the runtime's live instances. The pooling allocator has room for
//! [`MAX_LIVE_INSTANCES`](super::MAX_LIVE_INSTANCES) guest instances at once, shared by every
//! broker. One broker must not be able to take them all:
//!
//! - a broker runs at most a quarter of the total at once, across all its loaded versions (a
//!   tenant cannot multiply its share by uploading new versions while old ones still run);
//!   its `limits.max_concurrency` (at most [`MAX_BROKER_SHARE`]) caps each version too;
//! - a fifth of the slots are kept out of the shared pool. A call takes a shared slot when one is
//!   free; when none is, it may take a reserved one, but a broker holds at most a
//!   [`RESERVE_SHARES`]th of them. So while brokers saturate the shared pool, every other
//!   broker still finds a reserved slot at once (until 25 brokers are saturating together).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Brokers that may hold reserved slots at the same time at least: a broker holds at most
/// `reserve / RESERVE_SHARES` of them (8 of the default 200).
pub const RESERVE_SHARES: u32 = 25;
/// The most calls one broker may run at once (its `max_concurrency` cap).
pub const MAX_BROKER_SHARE: u32 = super::MAX_LIVE_INSTANCES / 4;

/// The runtime's live instance slots: a shared pool and a reserve.
#[derive(Clone)]
pub struct LiveSlots {
    shared: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
    /// A broker's cap: a quarter of the total.
    share: u32,
    /// Reserved slots one broker may hold.
    reserve_share: u32,
    /// Each broker's share, by name, whichever of its versions makes the call.
    brokers: Arc<Mutex<HashMap<String, Share>>>,
}

/// What one broker (all its versions together) may hold.
#[derive(Clone)]
struct Share {
    calls: Arc<Semaphore>,
    reserved: Arc<Semaphore>,
}

/// One loaded broker version's claim on [`LiveSlots`]: its own concurrency cap and its
/// broker's share.
pub struct BrokerSlots {
    version: Arc<Semaphore>,
    share: Share,
}

/// The slots one call holds while its instance lives; released when dropped.
pub struct CallSlots {
    _permits: Vec<OwnedSemaphorePermit>,
}

impl LiveSlots {
    /// `total` live slots, a fifth of them held back in reserve.
    pub fn new(total: u32) -> Self {
        let reserve = total / 5;
        LiveSlots {
            shared: Arc::new(Semaphore::new((total - reserve) as usize)),
            reserve: Arc::new(Semaphore::new(reserve as usize)),
            share: (total / 4).max(1),
            reserve_share: (reserve / RESERVE_SHARES).max(1),
            brokers: Arc::default(),
        }
    }

    /// Slots for a version of broker `name` that runs at most `max_concurrency` calls at once
    /// (and the broker, all versions together, never more than a quarter of the total).
    pub fn broker(&self, name: &str, max_concurrency: u32) -> BrokerSlots {
        let mut brokers = self.brokers.lock().unwrap_or_else(|e| e.into_inner());
        let share = brokers.entry(name.to_string()).or_insert_with(|| Share {
            calls: Arc::new(Semaphore::new(self.share as usize)),
            reserved: Arc::new(Semaphore::new(self.reserve_share as usize)),
        });
        BrokerSlots {
            version: Arc::new(Semaphore::new(max_concurrency.min(self.share) as usize)),
            share: share.clone(),
        }
    }

    /// Free shared slots.
    #[cfg(test)]
    pub fn shared_available(&self) -> usize {
        self.shared.available_permits()
    }

    /// Waits for a slot of the version's own, one of its broker's share, and a live slot,
    /// preferring the shared pool. Cancel-safe: a dropped wait holds nothing.
    pub async fn acquire(&self, broker: &BrokerSlots) -> CallSlots {
        let mut permits = vec![
            acquire(&broker.version).await,
            acquire(&broker.share.calls).await,
        ];
        if let Ok(live) = self.shared.clone().try_acquire_owned() {
            permits.push(live);
            return CallSlots { _permits: permits };
        }
        // The shared pool is full: wait for a shared slot, or for this broker's turn at the
        // reserve and then a reserved slot, whichever comes first.
        let turn = tokio::select! {
            biased;
            live = acquire(&self.shared) => Err(live),
            turn = acquire(&broker.share.reserved) => Ok(turn),
        };
        match turn {
            Err(live) => permits.push(live),
            Ok(turn) => tokio::select! {
                biased;
                live = acquire(&self.shared) => permits.push(live),
                live = acquire(&self.reserve) => permits.extend([live, turn]),
            },
        }
        CallSlots { _permits: permits }
    }
}

async fn acquire(semaphore: &Arc<Semaphore>) -> OwnedSemaphorePermit {
    semaphore
        .clone()
        .acquire_owned()
        .await
        .expect("slot semaphores are never closed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    /// A slot if one is free now (outside tokio's cooperative budget, which would otherwise
    /// make the hundredth try in one poll wait).
    fn now(slots: &LiveSlots, broker: &BrokerSlots) -> Option<CallSlots> {
        tokio::task::unconstrained(slots.acquire(broker)).now_or_never()
    }

    #[tokio::test]
    async fn a_broker_filling_the_shared_pool_leaves_reserved_slots_to_the_others() {
        let slots = LiveSlots::new(1000); // 800 shared, 200 reserved, 8 a broker
        let greedy = slots.broker("greedy", 1000); // capped at 250
        let greedy_too = slots.broker("greedy-too", 1000);
        let mut held = Vec::new();
        // Each broker is held to a quarter of the total.
        for _ in 0..250 {
            held.push(now(&slots, &greedy).expect("a free slot"));
        }
        assert!(now(&slots, &greedy).is_none());
        // Greedy brokers together take the 80 shared slots and 8 reserved ones each.
        let greedy = [
            greedy_too,
            slots.broker("greedy-3", 1000),
            slots.broker("greedy-4", 1000),
        ];
        for broker in &greedy {
            while let Some(call) = now(&slots, broker) {
                held.push(call);
            }
        }
        assert_eq!(
            held.len(),
            250 * 3 + 50 + 8,
            "the last one: 50 shared, 8 reserved"
        );
        // Another broker still gets a slot at once, up to its own share of the reserve.
        let other = slots.broker("other", 32);
        let mut others = Vec::new();
        for _ in 0..8 {
            others.push(now(&slots, &other).expect("a reserved slot"));
        }
        assert!(now(&slots, &other).is_none());
        // Freed shared slots go to whoever waits next.
        held.truncate(0);
        assert_eq!(slots.shared_available(), 800);
        assert!(now(&slots, &other).is_some());
    }

    #[tokio::test]
    async fn a_broker_never_runs_more_calls_than_its_cap() {
        let slots = LiveSlots::new(1000);
        let broker = slots.broker("b", 2);
        let _a = slots.acquire(&broker).await;
        let _b = slots.acquire(&broker).await;
        assert!(now(&slots, &broker).is_none());
    }

    #[tokio::test]
    async fn new_versions_of_a_broker_do_not_multiply_its_share() {
        let slots = LiveSlots::new(100); // a broker holds at most 25
        let versions: Vec<BrokerSlots> = (0..4).map(|_| slots.broker("b", 25)).collect();
        let mut held = Vec::new();
        for version in &versions {
            while let Some(call) = now(&slots, version) {
                held.push(call);
            }
        }
        assert_eq!(held.len(), 25);
        assert!(now(&slots, &slots.broker("other", 25)).is_some());
    }
}
