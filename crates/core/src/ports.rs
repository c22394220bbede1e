//! Ports: the small traits that adapters (stores, transports) implement.
//!
//! Every state-changing store method is a conditional update on (id, expected status, attempt):
//! callers whose view is stale simply do not appear in the returned "applied" set (or get
//! [`Update::Stale`]), so a late or duplicate worker never overwrites a newer outcome.

use crate::error::Result;
use crate::job::{
    Backlog, CancelOutcome, DeadLetter, Job, JobFilter, JobId, JobPage, JobStats, NewJob,
    PendingJob, StartedJob,
};
use crate::job_type::JobTypeInfo;
use crate::notes::{LogLine, Progress, TryLog};
use crate::policy::{PolicyKind, PolicySettings};
use crate::schedule::Schedule;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::time::Duration;

/// Source of "now"; tests substitute a manual clock.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The real clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Result of a single conditional update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Update {
    /// The row was in the expected state and was changed.
    Applied,
    /// The row was not in the expected state/attempt (lost the race, or gone).
    Stale,
}

/// A run's fencing token: a job id plus the attempt it was claimed as. Every outcome and lease
/// renewal is conditional on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Token {
    /// Job id.
    pub id: JobId,
    /// Attempt number set by the dispatch.
    pub attempt: i32,
}

impl Token {
    /// `"<uuid>:<attempt>"`, the transport encoding.
    pub fn encode(&self) -> String {
        format!("{}:{}", self.id, self.attempt)
    }
    /// Parse [`Token::encode`] output.
    pub fn decode(s: &str) -> Option<Token> {
        let (id, attempt) = s.rsplit_once(':')?;
        Some(Token {
            id: id.parse().ok()?,
            attempt: attempt.parse().ok()?,
        })
    }
}

/// Submitting, reading and cancelling jobs (the API's side).
#[async_trait]
pub trait JobRepo: Send + Sync {
    /// Insert one job as PENDING.
    async fn insert(&self, job: &NewJob, now: DateTime<Utc>) -> Result<Job>;
    /// Insert many jobs in one transaction (all or nothing); returns ids in input order.
    async fn insert_many(&self, jobs: &[NewJob], now: DateTime<Utc>) -> Result<Vec<JobId>>;
    /// One job.
    async fn get(&self, id: JobId) -> Result<Option<Job>>;
    /// A page of jobs, newest first.
    async fn list(&self, filter: &JobFilter) -> Result<JobPage>;
    /// Counts per state and mean execution time, in one query.
    async fn stats(&self) -> Result<JobStats>;
    /// Jobs waiting and running per named queue (queues that hold none are left out), from
    /// kept counts where the store keeps them.
    async fn queue_counts(&self) -> Result<Vec<(String, crate::queue::QueueCounts)>>;
    /// The PENDING jobs that may run now and their summed estimated durations, per named
    /// queue (queues with none are left out; reads every such row's estimate: for a gauge
    /// sampled now and then, not for a request path).
    async fn backlog(&self) -> Result<Vec<(String, Backlog)>>;
    /// PENDING/SCHEDULED/RUNNING → CANCELLED (see [`CancelOutcome`]).
    async fn cancel(&self, id: JobId, now: DateTime<Utc>) -> Result<CancelOutcome>;
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

/// Where a retention scan stopped: the last job it looked at, in submission order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneCursor {
    /// That job's submission time.
    pub created_at: DateTime<Utc>,
    /// Its submission sequence number (ties on `created_at`).
    pub seq: i64,
}

/// What one [`DispatchStore::prune`] statement did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pruned {
    /// Jobs deleted.
    pub deleted: u64,
    /// Where to go on from; `None` when the scan reached the end (start over next time).
    pub next: Option<PruneCursor>,
}

/// The engine leader's side.
#[async_trait]
pub trait DispatchStore: Send + Sync {
    /// PENDING jobs with `seq > after_seq`, ascending by seq, due or not, at most `limit`.
    async fn pending_after(&self, after_seq: i64, limit: u32) -> Result<Vec<PendingJob>>;
    /// PENDING → SCHEDULED for each `(id, current attempt)`; bumps the attempt and sets a
    /// dispatch lease. `scheduled_at` is `now` (the decision time), but never before the job's
    /// `created_at` or `run_at`. Returns the jobs applied, as a worker would read them (with the
    /// new attempt), in request order.
    async fn mark_scheduled(
        &self,
        jobs: &[Token],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<StartedJob>>;
    /// Take back expired leases (see [`RescueReport`]).
    async fn rescue_expired(&self, now: DateTime<Utc>) -> Result<RescueReport>;
    /// Move up to `limit` delayed jobs whose `run_at <= now` into the queue, earliest first.
    /// A delayed job (submitted with a future `run_at`) is PENDING but in no claim order until
    /// then, so claims never step over a backlog of future jobs.
    async fn promote_due(&self, now: DateTime<Utc>, limit: u32) -> Result<Promotion>;
    /// Retention: look at up to `limit` jobs submitted before `max(completed_before,
    /// failed_before)`, oldest first after `after`, and delete those that are COMPLETED since
    /// before `completed_before`, or FAILED / CANCELLED since before `failed_before` and not
    /// in the dead-letter queue. Open jobs and dead letters are stepped over. The counts, the
    /// listing keys and the job's idempotency key go with it.
    async fn prune(
        &self,
        completed_before: DateTime<Utc>,
        failed_before: DateTime<Utc>,
        after: Option<PruneCursor>,
        limit: u32,
    ) -> Result<Pruned>;
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

/// The worker's side.
#[async_trait]
pub trait WorkerStore: Send + Sync {
    /// PENDING → RUNNING for up to `claim.limit` jobs due at `now` (`run_at <= now`), in
    /// `claim.order`: bumps the attempt, sets `scheduled_at` and `started_at` to `now`, the
    /// lease (`owner`, `claim.lease_until`) and `slices + 1`. Rows another claimer holds are
    /// skipped (it gets them). Returns the jobs as the worker runs them, in the policy's order.
    async fn claim(
        &self,
        claim: &Claim,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<StartedJob>>;
    /// Record `outcomes` (as [`WorkerStore::finish`]) and claim successors (as
    /// [`WorkerStore::claim`]): a worker's one round trip per batch. A store that can do both
    /// in one statement overrides this; the outcomes are written first either way.
    async fn exchange(
        &self,
        outcomes: &[Outcome],
        owner: &str,
        now: DateTime<Utc>,
        claim: &Claim,
    ) -> Result<Exchanged> {
        let runs: Vec<Finished> = outcomes.iter().cloned().map(Finished::from).collect();
        let applied = if runs.is_empty() {
            Vec::new()
        } else {
            self.finish(&runs, owner, now).await?
        };
        let claimed = if claim.limit == 0 {
            Vec::new()
        } else {
            self.claim(claim, owner, now).await?
        };
        Ok(Exchanged { applied, claimed })
    }
    /// Read, without changing them, the SCHEDULED jobs behind `tokens` (same attempt): what a
    /// worker needs to run each. Tokens whose job moved on (cancelled, rescued) are left out.
    async fn fetch(&self, tokens: &[Token]) -> Result<Vec<StartedJob>>;
    /// SCHEDULED → RUNNING for runs that already began at the given times (status SCHEDULED
    /// and the same attempt); sets lease owner and expiry, `started_at`, and `slices + 1`. A
    /// row already RUNNING under `owner` with that attempt counts as applied (a retry after a
    /// lost reply) and only its lease changes. Returns the tokens applied.
    async fn record_starts(
        &self,
        starts: &[(Token, DateTime<Utc>)],
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Token>>;
    /// The RUNNING jobs `owner` holds whose lease expires at one of `leases`, as tokens. A worker
    /// asks after an exchange failed: a claim can commit although its reply was lost, and such
    /// a job is held under the worker's lease, unknown to it and so never renewed, with the
    /// expiry that claim set. (An equality lookup on the lease index, not a scan.)
    async fn held(&self, owner: &str, leases: &[DateTime<Utc>]) -> Result<Vec<Token>>;
    /// Extend the leases of RUNNING jobs this owner holds; returns the tokens still held.
    async fn renew(
        &self,
        tokens: &[Token],
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Token>>;
    /// Record outcomes, each conditional on the same attempt and either RUNNING under
    /// `owner`'s lease or, when [`Finished::started_at`] is set, still SCHEDULED; returns the
    /// tokens applied.
    async fn finish(
        &self,
        runs: &[Finished],
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Token>>;
}

/// The dead-letter queue (FAILED jobs not purged).
#[async_trait]
pub trait DeadLetterStore: Send + Sync {
    /// Entries, most recent failure first.
    async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>>;
    /// Number of entries.
    async fn dead_letter_count(&self) -> Result<i64>;
    /// FAILED → PENDING with fresh retries; removes the entry.
    async fn retry_dead_letter(&self, id: JobId, now: DateTime<Utc>) -> Result<Update>;
    /// Remove every entry (the jobs stay FAILED); returns how many.
    async fn purge_dead_letters(&self) -> Result<u64>;
}

/// Durable settings and leader election.
#[async_trait]
pub trait ControlStore: Send + Sync {
    /// The durable copy of the policy settings.
    async fn load_policy(&self) -> Result<Option<PolicySettings>>;
    /// Save the durable copy.
    async fn save_policy(&self, settings: &PolicySettings) -> Result<()>;
    /// The durable settings of every named queue but `default` (whose settings are
    /// [`ControlStore::load_policy`]'s), by name.
    async fn load_queues(&self) -> Result<Vec<(String, PolicySettings)>>;
    /// Save the durable settings of queue `name` (`default`: as [`ControlStore::save_policy`]).
    async fn save_queue(&self, name: &str, settings: &PolicySettings) -> Result<()>;
    /// Create queue `name` with `settings` unless it exists; `true` when it was created.
    async fn create_queue(&self, name: &str, settings: &PolicySettings) -> Result<bool>;
    /// Acquire or renew the lease on `role` for `holder` until `now + ttl`. True when held.
    async fn try_lead(
        &self,
        role: &str,
        holder: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<bool>;
    /// Give up `role` if `holder` holds it.
    async fn resign(&self, role: &str, holder: &str) -> Result<()>;
    /// Cheap connectivity check (one round trip).
    async fn ping(&self) -> Result<()> {
        self.load_policy().await.map(|_| ())
    }
}

/// Periodic jobs (see [`crate::schedule`]).
#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Create; `false` (nothing written) when the name is taken.
    async fn create_schedule(&self, schedule: &Schedule) -> Result<bool>;
    /// Create or replace what a user sets (the fire history and creation time stay); `true`
    /// when it replaced one.
    async fn put_schedule(&self, schedule: &Schedule) -> Result<bool>;
    /// One schedule.
    async fn get_schedule(&self, name: &str) -> Result<Option<Schedule>>;
    /// All schedules, by name.
    async fn list_schedules(&self) -> Result<Vec<Schedule>>;
    /// Delete; `false` when there was none.
    async fn delete_schedule(&self, name: &str) -> Result<bool>;
    /// Schedules not paused whose `next_fire_at <= now`, earliest first, at most `limit`.
    async fn due_schedules(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Schedule>>;
    /// Record a handled fire: if `next_fire_at` is still `expected` (else another leader or
    /// a user change came first: `false`), set it to `next`, `last_fire_at` to `fire` and,
    /// when a job was enqueued, `last_job_id`.
    async fn advance_schedule(
        &self,
        name: &str,
        expected: DateTime<Utc>,
        fire: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
        job: Option<JobId>,
    ) -> Result<bool>;
}

/// What runs report while they work (see [`crate::notes`]).
#[async_trait]
pub trait NotesStore: Send + Sync {
    /// Keep try `attempt`'s latest progress (when given) and append `lines` to its log,
    /// dropping its oldest lines beyond the bounds, only while `token` still holds the job
    /// (RUNNING with that attempt): `false`, and nothing written, once it moved on.
    async fn save_notes(
        &self,
        token: Token,
        attempt: u32,
        progress: Option<&Progress>,
        lines: &[LogLine],
    ) -> Result<bool>;
    /// The job's latest progress report (of its latest try that reported any).
    async fn progress(&self, id: JobId) -> Result<Option<Progress>>;
    /// The job's kept logs, one per try that logged, oldest try first; only try `attempt`'s
    /// when given.
    async fn logs(&self, id: JobId, attempt: Option<u32>) -> Result<Vec<TryLog>>;
}

/// The catalog of job types workers registered (see [`crate::job_type`]).
#[async_trait]
pub trait TypeStore: Send + Sync {
    /// Create or replace these types' entries.
    async fn register_types(&self, types: &[JobTypeInfo]) -> Result<()>;
    /// Every registered type, by name.
    async fn job_types(&self) -> Result<Vec<JobTypeInfo>>;
    /// PENDING jobs (delayed ones included) per job type; types with none are left out.
    async fn pending_by_type(&self) -> Result<Vec<(String, i64)>>;
}

/// Everything a store provides.
pub trait Store:
    JobRepo
    + DispatchStore
    + WorkerStore
    + DeadLetterStore
    + ControlStore
    + ScheduleStore
    + NotesStore
    + TypeStore
{
}
impl<
    T: JobRepo
        + DispatchStore
        + WorkerStore
        + DeadLetterStore
        + ControlStore
        + ScheduleStore
        + NotesStore
        + TypeStore,
> Store for T
{
}

/// One live worker's slots as reported to the transport.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSlots {
    /// Worker id.
    pub worker: String,
    /// Slots waiting for work.
    pub idle: u32,
    /// All slots.
    pub total: u32,
    /// The job types it serves (empty until it reported them).
    #[serde(default)]
    pub job_types: Vec<String>,
}

/// Events broadcast between processes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// New PENDING jobs exist (submission, retry, requeue): idle workers should claim.
    JobsAvailable,
    /// The policy settings changed.
    PolicyChanged,
    /// This PENDING job was just committed (one submission), with its queue data: idle
    /// workers should claim.
    Submitted(PendingJob),
    /// This job was cancelled while RUNNING: the worker running it stops the body (without
    /// the event, it finds out at its next lease renewal).
    Cancelled(JobId),
}

/// A subscription to [`Event`]s.
#[async_trait]
pub trait Subscription: Send {
    /// The next event; `None` when the subscription ended (reconnect by subscribing again).
    async fn recv(&mut self) -> Option<Event>;
}

/// The shared runtime keys and events: wake-ups between processes, the policy key, the worker
/// registry. Nothing about a job lives here.
#[async_trait]
pub trait Transport: Send + Sync {
    /// Record `worker`'s slots (absolute values) with a liveness deadline of `ttl`.
    async fn report_slots(&self, worker: &str, idle: u32, total: u32, ttl: Duration) -> Result<()>;
    /// Live workers (expired ones are omitted).
    async fn workers(&self) -> Result<Vec<WorkerSlots>>;
    /// Record the job types `worker` serves (kept until the worker is reaped).
    async fn report_types(&self, worker: &str, job_types: &[String]) -> Result<()>;
    /// Workers whose liveness deadline passed; their entries are removed. Returns their ids.
    async fn reap_dead_workers(&self) -> Result<Vec<String>>;
    /// Current policy settings, if the key exists.
    async fn policy(&self) -> Result<Option<PolicySettings>>;
    /// Write the policy settings and publish [`Event::PolicyChanged`].
    async fn set_policy(&self, settings: &PolicySettings) -> Result<()>;
    /// The cached settings of every named queue but `default` (whose are
    /// [`Transport::policy`]'s).
    async fn queues(&self) -> Result<Vec<(String, PolicySettings)>>;
    /// Write the cached settings of queue `name` (`default`: as [`Transport::set_policy`])
    /// and publish [`Event::PolicyChanged`].
    async fn set_queue(&self, name: &str, settings: &PolicySettings) -> Result<()>;
    /// Write the cached settings of queue `name` only if it has none (a rebuild, or a queue
    /// just created, never overwrites a newer write); publish [`Event::PolicyChanged`] when
    /// written. Returns whether it wrote.
    async fn add_queue(&self, name: &str, settings: &PolicySettings) -> Result<bool>;
    /// Publish an event to every subscriber (all processes).
    async fn publish(&self, event: Event) -> Result<()>;
    /// Subscribe to events. Returns once the subscription is live: every event published
    /// after it returns reaches the subscription (a test needs no retry loop).
    async fn subscribe(&self) -> Result<Box<dyn Subscription>>;
    /// Cheap connectivity check.
    async fn ping(&self) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips() {
        let t = Token {
            id: uuid::Uuid::now_v7(),
            attempt: 7,
        };
        assert_eq!(Token::decode(&t.encode()), Some(t));
        assert_eq!(Token::decode("nope"), None);
        assert_eq!(Token::decode("x:1"), None);
    }
}
