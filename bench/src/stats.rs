//! Latency samples and the figures taken from them.

use std::time::Duration;

/// Latencies of one measured series.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    sorted: Vec<Duration>,
}

impl Samples {
    /// Samples from unsorted latencies.
    pub fn new(mut latencies: Vec<Duration>) -> Self {
        latencies.sort_unstable();
        Samples { sorted: latencies }
    }

    /// How many samples there are.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// The `q` quantile (0.0..=1.0), nearest rank; zero without samples.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q * self.sorted.len() as f64).ceil() as usize).clamp(1, self.sorted.len());
        self.sorted[rank - 1]
    }

    /// The median.
    pub fn p50(&self) -> Duration {
        self.quantile(0.5)
    }

    /// The 99th percentile.
    pub fn p99(&self) -> Duration {
        self.quantile(0.99)
    }
}

/// `d` in microseconds, for tables.
pub fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// `d` in milliseconds, for tables.
pub fn millis(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// `a / b`, or 0 when `b` is zero.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        a / b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let samples = Samples::new((1..=100).rev().map(Duration::from_micros).collect());
        assert_eq!(samples.p50(), Duration::from_micros(50));
        assert_eq!(samples.p99(), Duration::from_micros(99));
        assert_eq!(samples.quantile(1.0), Duration::from_micros(100));
        assert_eq!(Samples::default().p99(), Duration::ZERO);
    }
}
