//! CPU fairness between guest calls: a call that keeps computing past a short fuel budget
//! becomes a *long* call; long calls take turns on a few lanes (half the cores), one epoch tick
//! at a time, and yield to the executor every [`LONG_CALL_SLICE_FUEL`] while they run. Short
//! calls (what OSB handlers normally are) never wait for a lane, so a broker that burns its whole
//! fuel budget on every call slows its own calls, not its neighbours'.

use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::UpdateDeadline;

/// Fuel a call may burn before it counts as long: ~2–5 ms of guest CPU, far above what a
/// handler that only talks to the host needs. Counted in fuel, not in time, so a call waiting
/// for slow I/O does not become long. Calls run with this as their fuel yield interval, so the
/// count is up to date once a call has burnt this much.
pub const LONG_CALL_FUEL: u64 = 5_000_000;

/// Fuel a long call may burn between two yields to the executor (~100 µs of guest CPU), so a
/// long call holding a lane lets short calls queued on the same thread in between.
pub const LONG_CALL_SLICE_FUEL: u64 = 100_000;

/// The lanes long calls share.
#[derive(Clone)]
pub struct Lanes {
    permits: Arc<Semaphore>,
    /// How long calls waited for a lane.
    pub metrics: crate::telemetry::metrics::LaneMetrics,
}

impl Lanes {
    /// `count` lanes (at least one).
    pub fn new(count: usize) -> Self {
        Lanes {
            permits: Arc::new(Semaphore::new(count.max(1))),
            metrics: crate::telemetry::metrics::LaneMetrics::default(),
        }
    }

    /// Half the machine's cores (at least one): the other half stays free for short calls and
    /// for serving HTTP.
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Lanes::new(cores / 2)
    }
}

/// One call's standing: how much fuel it had, whether it runs long, and the lane it holds
/// while it does.
#[derive(Default)]
pub struct CallTurns {
    budget: u64,
    long: bool,
    just_became_long: bool,
    /// Shared with the future that waits for a lane, which puts the permit here.
    held: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
}

impl CallTurns {
    /// A call given `budget` fuel.
    pub fn new(budget: u64) -> Self {
        CallTurns {
            budget,
            ..CallTurns::default()
        }
    }

    /// What to do at an epoch deadline, with `remaining` fuel left: a short call yields to the
    /// executor and goes on; a long call gives its lane back, waits its turn for one, and runs
    /// one more tick.
    pub fn at_deadline(&mut self, lanes: &Lanes, remaining: u64) -> UpdateDeadline {
        // Let the next long call in line run (a no-op for a short call).
        self.held.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.just_became_long =
            !self.long && self.budget.saturating_sub(remaining) >= LONG_CALL_FUEL;
        self.long |= self.just_became_long;
        if !self.long {
            return UpdateDeadline::Yield(1);
        }
        let permits = lanes.permits.clone();
        let held = self.held.clone();
        let waits = lanes.metrics.waits.clone();
        UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                let started = std::time::Instant::now();
                if let Ok(permit) = permits.acquire_owned().await {
                    waits.observe(started.elapsed().as_secs_f64());
                    *held.lock().unwrap_or_else(|e| e.into_inner()) = Some(permit);
                }
            }),
        )
    }

    /// Whether the call has become long.
    pub fn is_long(&self) -> bool {
        self.long
    }

    /// Whether the call became long at the deadline just handled.
    pub fn just_became_long(&self) -> bool {
        self.just_became_long
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn long_calls_take_turns_on_the_lanes() {
        let lanes = Lanes::new(1);
        let budget = 10 * LONG_CALL_FUEL;
        let mut first = CallTurns::new(budget);
        let mut second = CallTurns::new(budget);
        // Below the threshold (however many ticks pass): short, a plain yield.
        for _ in 0..10 {
            let remaining = budget - LONG_CALL_FUEL + 1;
            assert!(matches!(
                first.at_deadline(&lanes, remaining),
                UpdateDeadline::Yield(1)
            ));
            assert!(matches!(
                second.at_deadline(&lanes, remaining),
                UpdateDeadline::Yield(1)
            ));
        }
        assert!(!first.is_long());
        // Both burn past it: the first gets the lane, the second waits for it.
        let remaining = budget - LONG_CALL_FUEL;
        let UpdateDeadline::YieldCustom(1, wait_first) = first.at_deadline(&lanes, remaining)
        else {
            panic!("a long call waits for a lane");
        };
        assert!(first.is_long() && first.just_became_long());
        wait_first.await;
        let UpdateDeadline::YieldCustom(1, mut wait_second) = second.at_deadline(&lanes, remaining)
        else {
            panic!("a long call waits for a lane");
        };
        let pending = futures_poll_once(&mut wait_second).await;
        assert!(pending, "the lane is held by the first call");
        // The first call's next deadline hands the lane over.
        let UpdateDeadline::YieldCustom(1, _wait_again) = first.at_deadline(&lanes, remaining - 1)
        else {
            panic!("still long");
        };
        assert!(!first.just_became_long());
        wait_second.await;
        assert!(second.held.lock().unwrap().is_some());
    }

    /// Polls `future` once; answers whether it is still pending.
    async fn futures_poll_once(
        future: &mut std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    ) -> bool {
        std::future::poll_fn(|cx| std::task::Poll::Ready(future.as_mut().poll(cx).is_pending()))
            .await
    }
}
