//! What becomes of a failed run ([`AfterFailure::decide`], the one rule the worker and the
//! lease rescuer both follow) and the exponential retry backoff with jitter.

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

/// What becomes of a job whose run failed: the one decision for a body's error (the worker)
/// and for a lease that expired under a run (the leader's rescuer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Back to PENDING for its `retry`-th retry (1-based), counted against its budget.
    Retry {
        /// Which retry this is.
        retry: u32,
    },
    /// FAILED in the dead-letter queue: the error was retryable but the budget is spent.
    DeadLetter,
    /// FAILED for good: the error says a retry cannot help.
    Fail,
}

impl AfterFailure {
    /// Decide for a job that has failed `retry_count` times before (of `max_retries`
    /// allowed) and whose latest failure is `retryable` or not.
    pub fn decide(retry_count: i32, max_retries: i32, retryable: bool) -> AfterFailure {
        if !retryable {
            AfterFailure::Fail
        } else if retry_count < max_retries {
            AfterFailure::Retry {
                retry: u32::try_from(retry_count.saturating_add(1)).unwrap_or(1),
            }
        } else {
            AfterFailure::DeadLetter
        }
    }
}

/// The error a run gets when its worker stopped renewing its lease (always retryable).
pub fn lease_expired(owner: Option<&str>, attempt: i32) -> String {
    format!(
        "lease expired: worker {} stopped renewing (attempt {attempt})",
        owner.unwrap_or("?")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_retries_while_the_budget_lasts_and_only_when_retryable() {
        assert_eq!(
            AfterFailure::decide(0, 3, true),
            AfterFailure::Retry { retry: 1 }
        );
        assert_eq!(
            AfterFailure::decide(2, 3, true),
            AfterFailure::Retry { retry: 3 }
        );
        assert_eq!(AfterFailure::decide(3, 3, true), AfterFailure::DeadLetter);
        assert_eq!(AfterFailure::decide(0, 0, true), AfterFailure::DeadLetter);
        assert_eq!(AfterFailure::decide(0, 3, false), AfterFailure::Fail);
        assert_eq!(
            lease_expired(Some("w1"), 2),
            "lease expired: worker w1 stopped renewing (attempt 2)"
        );
        assert_eq!(
            lease_expired(None, 1),
            "lease expired: worker ? stopped renewing (attempt 1)"
        );
    }

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
