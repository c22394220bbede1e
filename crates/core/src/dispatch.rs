//! The values the dispatch ports trade in: how a run ended ([`Outcome`]), what a worker asks
//! for ([`Claim`]) and gets ([`Exchanged`]), what a conditional write did ([`Update`]), and
//! what the leader's maintenance passes did.

use crate::job::{DeadLetter, JobId, StartedJob, Token};
use crate::policy::PolicyKind;
use chrono::{DateTime, Utc};
use serde_json::Value;

/// Result of a single conditional update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Update {
    /// The row was in the expected state and was changed.
    Applied,
    /// The row was not in the expected state/attempt (lost the race, or gone).
    Stale,
}

/// What the rescuer did in one pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RescueReport {
    /// RUNNING jobs whose lease expired, sent back to PENDING (retry counted).
    pub retried: Vec<JobId>,
    /// RUNNING jobs whose lease expired with retries exhausted → FAILED.
    pub dead_lettered: Vec<DeadLetter>,
    /// SCHEDULED jobs never started before their dispatch lease expired → PENDING (no retry
    /// counted).
    pub undispatched: Vec<JobId>,
}

/// What one pass of [`DispatchStore::promote_due`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Promotion {
    /// Delayed jobs whose `run_at` came, now in the queue (each with a fresh queue-entry `seq`).
    pub promoted: u64,
    /// The earliest `run_at` among the delayed jobs still waiting, if any.
    pub next_due: Option<DateTime<Utc>>,
}

/// A point in the store's history from which the queues' floors can be raised (see
/// [`crate::ports::DispatchStore::raise_floors`]): the highest queue position (`seq`) handed
/// out so far, and the transactions open at that moment, one of which may still write a queue
/// entry at or below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloorMark {
    /// The highest queue position handed out when the mark was taken.
    pub seq: i64,
    /// The store's names of the transactions open then.
    pub open: Vec<String>,
}

/// Where a retention scan stopped: the last job it looked at, in submission order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneCursor {
    /// That job's submission time.
    pub created_at: DateTime<Utc>,
    /// Its submission sequence number (ties on `created_at`).
    pub seq: i64,
}

/// One step of a retention scan: up to `limit` jobs submitted before `max(completed_before,
/// failed_before)`, oldest first after `after` (see [`DispatchStore::prune`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneScan {
    /// COMPLETED jobs that ended before this go.
    pub completed_before: DateTime<Utc>,
    /// FAILED and CANCELLED jobs (not dead letters) that ended before this go.
    pub failed_before: DateTime<Utc>,
    /// Where the previous step stopped (`None`: from the oldest job).
    pub after: Option<PruneCursor>,
    /// Most jobs to look at.
    pub limit: u32,
}

/// A leader lease: `holder` leads `role` for `ttl` after each renewal (see
/// [`ControlStore::try_lead`](crate::ports::ControlStore::try_lead)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease<'a> {
    /// What is led (the engine's maintenance, `engine`).
    pub role: &'a str,
    /// Who leads (a worker id).
    pub holder: &'a str,
    /// How long a renewal holds.
    pub ttl: std::time::Duration,
}

/// What one [`DispatchStore::prune`] statement did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pruned {
    /// Jobs deleted.
    pub deleted: u64,
    /// Where to go on from; `None` when the scan reached the end (start over next time).
    pub next: Option<PruneCursor>,
}

/// How a run ended, as recorded by the worker.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// RUNNING → COMPLETED with a result.
    Completed {
        /// Token of the run.
        token: Token,
        /// Job output.
        result: Value,
    },
    /// RUNNING → PENDING, `retry_count + 1`, not before `run_at`.
    Retry {
        /// Token of the run.
        token: Token,
        /// Error of this run.
        error: String,
        /// Backoff target.
        run_at: DateTime<Utc>,
    },
    /// RUNNING → FAILED (dead letter). `retry_count` is set to `retry_count`.
    Failed {
        /// Token of the run.
        token: Token,
        /// Final error.
        error: String,
        /// Failed runs including this one, capped at max_retries.
        retry_count: i32,
    },
    /// RUNNING → PENDING without counting a retry: a Round Robin slice ended (with its
    /// checkpoint) or the worker is shutting down.
    Requeue {
        /// Token of the run.
        token: Token,
        /// Progress to resume from (None keeps the stored checkpoint).
        checkpoint: Option<Value>,
    },
}

impl Outcome {
    /// The run's token.
    pub fn token(&self) -> Token {
        match self {
            Outcome::Completed { token, .. }
            | Outcome::Retry { token, .. }
            | Outcome::Failed { token, .. }
            | Outcome::Requeue { token, .. } => *token,
        }
    }
}

/// An outcome as a worker records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// How the run ended.
    pub outcome: Outcome,
    /// When the body began, if the worker has not recorded the run's SCHEDULED → RUNNING yet:
    /// the outcome's write then records the start as well (both steps, one UPDATE), so a short
    /// job costs one write fewer.
    pub started_at: Option<DateTime<Utc>>,
}

impl From<Outcome> for Finished {
    /// An outcome of a run whose start is already recorded.
    fn from(outcome: Outcome) -> Self {
        Finished {
            outcome,
            started_at: None,
        }
    }
}

/// What a worker asks for when it claims work: up to `limit` due PENDING jobs, taken in the
/// order of `order` (FCFS and Round Robin by queue-entry sequence, SJF by estimated duration,
/// Priority by priority; ties by sequence), each moved straight to RUNNING under the worker's
/// lease. Jobs are taken from one named queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// Most jobs to take (0 = none).
    pub limit: u32,
    /// The queue's active policy, whose order the jobs are taken in.
    pub order: PolicyKind,
    /// Lease expiry of each claimed job.
    pub lease_until: DateTime<Utc>,
    /// The queue the jobs are taken from.
    pub queue: String,
    /// The queue's cluster-wide limit on jobs SCHEDULED or RUNNING at once: the claim takes
    /// at most what is left under it, counting every worker's jobs (claims of a limited queue
    /// are serialized so that two workers never both take the last place).
    pub concurrency_limit: Option<u32>,
    /// Only jobs of these types (the ones the claiming worker serves, shared by all its
    /// claims); `None`: any type.
    pub job_types: Option<std::sync::Arc<[String]>>,
}

impl Claim {
    /// A claim of nothing (only outcomes are written).
    pub fn none(now: DateTime<Utc>) -> Claim {
        Claim {
            limit: 0,
            order: PolicyKind::Fcfs,
            lease_until: now,
            queue: crate::queue::DEFAULT_QUEUE.to_owned(),
            concurrency_limit: None,
            job_types: None,
        }
    }
}

/// What one [`WorkerStore::exchange`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exchanged {
    /// Outcomes applied (stale ones are left out).
    pub applied: Vec<Token>,
    /// Jobs claimed, now RUNNING under the worker's lease, in the policy's order.
    pub claimed: Vec<StartedJob>,
}
