//! CPU fairness between guest calls: a call that keeps computing past a short budget becomes a
//! *long* call, and long calls take turns on a few lanes (half the cores), one epoch tick at a
//! time. Short calls (what OSB handlers normally are) never wait for a lane, so a broker that
//! burns its whole fuel budget on every call slows its own calls, not its neighbours'.

use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::UpdateDeadline;

/// Epoch ticks a call may compute before it counts as long (with the 2 ms tick: ~10 ms of
/// guest CPU, far above what a handler that only talks to the host needs).
pub const SHORT_CALL_TICKS: u32 = 5;

/// The lanes long calls share.
#[derive(Clone)]
pub struct Lanes {
    permits: Arc<Semaphore>,
    count: usize,
}

impl Lanes {
    /// `count` lanes (at least one).
    pub fn new(count: usize) -> Self {
        let count = count.max(1);
        Lanes {
            permits: Arc::new(Semaphore::new(count)),
            count,
        }
    }

    /// Half the machine's cores (at least one): the other half stays free for short calls and
    /// for serving HTTP.
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Lanes::new(cores / 2)
    }

    /// How many lanes there are.
    pub fn count(&self) -> usize {
        self.count
    }
}

/// One call's standing: how many ticks it has computed, and the lane it holds while it runs
/// as a long call.
#[derive(Default)]
pub struct CallTurns {
    ticks: u32,
    /// Shared with the future that waits for a lane, which puts the permit here.
    held: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
}

impl CallTurns {
    /// What to do at an epoch deadline: a short call yields to the executor and goes on; a
    /// long call gives its lane back, waits its turn for one, and runs one more tick.
    pub fn at_deadline(&mut self, lanes: &Lanes) -> UpdateDeadline {
        self.ticks = self.ticks.saturating_add(1);
        // Let the next long call in line run (a no-op for a short call).
        self.held.lock().unwrap_or_else(|e| e.into_inner()).take();
        if self.ticks <= SHORT_CALL_TICKS {
            return UpdateDeadline::Yield(1);
        }
        let permits = lanes.permits.clone();
        let held = self.held.clone();
        UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                if let Ok(permit) = permits.acquire_owned().await {
                    *held.lock().unwrap_or_else(|e| e.into_inner()) = Some(permit);
                }
            }),
        )
    }

    /// Whether the call has become long.
    pub fn is_long(&self) -> bool {
        self.ticks > SHORT_CALL_TICKS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn long_calls_take_turns_on_the_lanes() {
        let lanes = Lanes::new(1);
        let mut first = CallTurns::default();
        let mut second = CallTurns::default();
        for _ in 0..SHORT_CALL_TICKS {
            assert!(matches!(
                first.at_deadline(&lanes),
                UpdateDeadline::Yield(1)
            ));
            assert!(matches!(
                second.at_deadline(&lanes),
                UpdateDeadline::Yield(1)
            ));
        }
        assert!(!first.is_long());
        // Both become long: the first gets the lane, the second waits for it.
        let UpdateDeadline::YieldCustom(1, wait_first) = first.at_deadline(&lanes) else {
            panic!("a long call waits for a lane");
        };
        wait_first.await;
        assert!(first.is_long());
        let UpdateDeadline::YieldCustom(1, mut wait_second) = second.at_deadline(&lanes) else {
            panic!("a long call waits for a lane");
        };
        let pending = futures_poll_once(&mut wait_second).await;
        assert!(pending, "the lane is held by the first call");
        // The first call's next deadline hands the lane over.
        let UpdateDeadline::YieldCustom(1, _wait_again) = first.at_deadline(&lanes) else {
            panic!("still long");
        };
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
