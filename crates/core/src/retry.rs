//! Exponential retry backoff with jitter.

use rand::Rng;
use std::time::Duration;

/// Backoff settings: delay = min(cap, base · 2^(retry-1)), then "equal jitter" (half fixed,
/// half random) so retries of a burst of failures spread out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry (before jitter).
    pub base: Duration,
    /// Upper bound of any delay.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The deterministic upper bound for the `retry`-th retry (1-based).
    pub fn ceiling(&self, retry: u32) -> Duration {
        let exp = retry.saturating_sub(1).min(32);
        self.base
            .checked_mul(1u32 << exp.min(31))
            .unwrap_or(self.cap)
            .min(self.cap)
    }

    /// The delay before the `retry`-th retry, jittered into `[ceiling/2, ceiling]`.
    pub fn delay(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let ceil = self.ceiling(retry);
        let half = ceil / 2;
        let spread = (ceil - half).as_nanos() as u64;
        let extra = if spread == 0 {
            0
        } else {
            rng.random_range(0..=spread)
        };
        half + Duration::from_nanos(extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_exponentially_and_caps() {
        let b = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        assert_eq!(b.ceiling(1), Duration::from_millis(100));
        assert_eq!(b.ceiling(2), Duration::from_millis(200));
        assert_eq!(b.ceiling(4), Duration::from_millis(800));
        assert_eq!(b.ceiling(5), Duration::from_secs(1));
        assert_eq!(b.ceiling(1000), Duration::from_secs(1));
        let mut rng = rand::rng();
        for retry in 1..10 {
            let d = b.delay(retry, &mut rng);
            assert!(d >= b.ceiling(retry) / 2 && d <= b.ceiling(retry), "{d:?}");
        }
    }
}
