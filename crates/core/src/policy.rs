//! The four scheduling policies: their names ([`PolicyKind`]) and settings
//! ([`PolicySettings`]). The order each one means is carried out by the store's claim (`ORDER
//! BY` over the queued rows: FCFS and Round Robin by queue-entry sequence, SJF by estimate,
//! Priority by priority, ties by sequence), so no process holds a queue in memory. Every policy
//! breaks ties by [`QueuedJob::seq`], the order in which jobs entered the queue (a monotonic
//! sequence from the store, never wall-clock time).

use crate::error::{Error, Result};
use crate::job::JobId;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// What a policy needs to know about a waiting job.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QueuedJob {
    /// Job id.
    pub id: JobId,
    /// Queue-entry sequence (tie-breaker; FCFS / Round Robin order).
    pub seq: i64,
    /// 1 (highest) – 10.
    pub priority: i16,
    /// Seconds (> 0).
    pub estimated_duration: f64,
    /// Fencing token of the dispatch this entry will become.
    pub attempt: i32,
}

/// The policy names accepted everywhere (REST, CRD, Redis key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(as = PolicyName, description = "A scheduling policy name.")
)]
pub enum PolicyKind {
    /// First come, first served.
    Fcfs,
    /// Shortest (estimated) job first.
    Sjf,
    /// Lowest priority number first.
    Priority,
    /// Time-sliced rotation.
    RoundRobin,
}

impl PolicyKind {
    /// Every policy.
    pub const ALL: [PolicyKind; 4] = [
        PolicyKind::Fcfs,
        PolicyKind::Sjf,
        PolicyKind::Priority,
        PolicyKind::RoundRobin,
    ];

    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Fcfs => "fcfs",
            PolicyKind::Sjf => "sjf",
            PolicyKind::Priority => "priority",
            PolicyKind::RoundRobin => "round_robin",
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PolicyKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        PolicyKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| Error::UnknownPolicy {
                name: s.to_string(),
            })
    }
}

/// The runtime-switchable scheduling settings (what `{prefix}:policy` holds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicySettings {
    /// Active policy.
    pub policy: PolicyKind,
    /// Round Robin time quantum, seconds ([`MIN_QUANTUM_SECONDS`] to [`MAX_QUANTUM_SECONDS`]).
    pub quantum_seconds: f64,
    /// When true the engine dispatches nothing; running jobs finish.
    #[serde(default)]
    pub paused: bool,
    /// Who owns these settings: `None` when set through the REST API, or the managing
    /// `SchedulerConfig` as `namespace/name` while a Kubernetes controller owns them (the REST
    /// API then refuses to change the policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
    /// Most jobs of this queue running at once across the cluster (`None` = no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_limit: Option<u32>,
    /// This queue's share of a worker's slots while other queues also have work, relative to
    /// their weights ([`MIN_WEIGHT`] to [`MAX_WEIGHT`]).
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

/// A queue's weight when none is set.
pub const DEFAULT_WEIGHT: u32 = 1;
/// Smallest queue weight.
pub const MIN_WEIGHT: u32 = 1;
/// Largest queue weight.
pub const MAX_WEIGHT: u32 = 1000;
/// Largest cluster-wide concurrency limit of a queue.
pub const MAX_CONCURRENCY_LIMIT: u32 = 1_000_000;

/// Default Round Robin quantum (seconds), as in the original system.
pub const DEFAULT_QUANTUM_SECONDS: f64 = 5.0;
/// Smallest Round Robin quantum accepted (seconds): shorter slices would spend the workers
/// on bookkeeping.
pub const MIN_QUANTUM_SECONDS: f64 = 0.01;
/// Largest Round Robin quantum accepted (seconds): one day.
pub const MAX_QUANTUM_SECONDS: f64 = 86_400.0;

impl Default for PolicySettings {
    fn default() -> Self {
        PolicySettings {
            policy: PolicyKind::Fcfs,
            quantum_seconds: DEFAULT_QUANTUM_SECONDS,
            paused: false,
            managed_by: None,
            concurrency_limit: None,
            weight: DEFAULT_WEIGHT,
        }
    }
}

impl PolicySettings {
    /// The quantum as a `Duration`, clamped to the accepted range (a value stored before the
    /// bounds existed, or NaN, never panics or livelocks a worker).
    pub fn quantum(&self) -> Duration {
        let secs = if self.quantum_seconds.is_nan() {
            DEFAULT_QUANTUM_SECONDS
        } else {
            self.quantum_seconds
                .clamp(MIN_QUANTUM_SECONDS, MAX_QUANTUM_SECONDS)
        };
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::from_secs(5))
    }

    /// Whether `other` orders and runs jobs as these settings do (policy, quantum, paused):
    /// the one comparison behind "the policy changed" (a `PolicyChanged` event, the switch
    /// metric). Ownership, weight and limit are left out.
    pub fn same_effect(&self, other: &PolicySettings) -> bool {
        self.policy == other.policy
            && self.quantum_seconds == other.quantum_seconds
            && self.paused == other.paused
    }

    /// Check the values; the error names the bad field.
    pub fn validate(&self) -> Result<()> {
        if !(self.quantum_seconds.is_finite()
            && (MIN_QUANTUM_SECONDS..=MAX_QUANTUM_SECONDS).contains(&self.quantum_seconds))
        {
            return Err(Error::invalid(
                "quantum_seconds",
                format!(
                    "must be a number of seconds from {MIN_QUANTUM_SECONDS} to \
                     {MAX_QUANTUM_SECONDS}, got {:?}",
                    self.quantum_seconds
                ),
            ));
        }
        if !(MIN_WEIGHT..=MAX_WEIGHT).contains(&self.weight) {
            return Err(Error::invalid(
                "weight",
                format!(
                    "must be a whole number from {MIN_WEIGHT} to {MAX_WEIGHT}, got {}",
                    self.weight
                ),
            ));
        }
        if let Some(limit) = self.concurrency_limit
            && !(1..=MAX_CONCURRENCY_LIMIT).contains(&limit)
        {
            return Err(Error::invalid(
                "concurrency_limit",
                format!(
                    "must be a whole number from 1 to {MAX_CONCURRENCY_LIMIT} (or null for no \
                     limit; to stop a queue, set `paused`), got {limit}"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantum_outside_its_range_is_refused_and_never_panics() {
        for bad in [
            1e300,
            1e19,
            1e-300,
            0.0,
            -1.0,
            f64::NAN,
            f64::INFINITY,
            86_400.5,
            0.009,
        ] {
            let s = PolicySettings {
                quantum_seconds: bad,
                ..PolicySettings::default()
            };
            let err = s.validate().expect_err("out of range must be refused");
            assert!(err.to_string().contains("quantum_seconds"), "{err}");
            assert!(err.to_string().contains("86400"), "{err}");
            // A stored value from before the bounds still yields a usable quantum.
            let q = s.quantum();
            assert!(q >= Duration::from_millis(10) && q <= Duration::from_secs(86_400));
        }
        for good in [0.01, 5.0, 86_400.0] {
            let s = PolicySettings {
                quantum_seconds: good,
                ..PolicySettings::default()
            };
            assert!(s.validate().is_ok(), "{good}");
        }
    }
}
