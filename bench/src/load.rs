//! A closed-loop load generator: `concurrency` workers each repeat one job (a request, or a
//! sequence of requests) back to back until the time is up, over keep-alive connections on
//! loopback. Each job's latency is recorded; a job that fails is counted, not timed.

use crate::stats::Samples;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a load run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Latencies of the jobs that succeeded.
    pub latencies: Vec<Duration>,
    /// Jobs that failed (an unexpected status or a transport error).
    pub failed: u64,
    /// How long the run lasted.
    pub elapsed: Duration,
}

impl LoadResult {
    /// Successful jobs per second.
    pub fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The latencies, sorted.
    pub fn samples(&self) -> Samples {
        Samples::new(self.latencies.clone())
    }

    /// Adds another run of the same load (interleaved rounds).
    pub fn absorb(&mut self, other: LoadResult) {
        self.latencies.extend(other.latencies);
        self.failed += other.failed;
        self.elapsed += other.elapsed;
    }
}

/// When a load run stops.
#[derive(Clone)]
pub enum Until {
    /// After this long.
    Elapsed(Duration),
    /// Once the flag is set.
    Flag(Arc<AtomicBool>),
}

impl Until {
    fn done(&self, start: Instant) -> bool {
        match self {
            Until::Elapsed(duration) => start.elapsed() >= *duration,
            Until::Flag(flag) => flag.load(Ordering::Relaxed),
        }
    }
}

/// Runs `job(worker, iteration)` from `concurrency` workers until `until`; `job` answers
/// whether it succeeded.
pub async fn run<F, Fut>(concurrency: usize, until: Until, job: F) -> LoadResult
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers = (0..concurrency).map(|worker| {
        let job = job.clone();
        let failed = failed.clone();
        let until = until.clone();
        async move {
            let mut latencies = Vec::new();
            let mut iteration = 0;
            while !until.done(start) {
                let began = Instant::now();
                if job(worker, iteration).await {
                    latencies.push(began.elapsed());
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                iteration += 1;
            }
            latencies
        }
    });
    let latencies = futures::future::join_all(workers).await.concat();
    LoadResult {
        latencies,
        failed: failed.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
    }
}

/// An HTTP client for load: keep-alive, no proxy, a generous timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("the HTTP client builds")
}
