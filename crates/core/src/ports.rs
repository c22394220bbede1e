//! Ports: the small traits that adapters (stores, transports) implement.
//!
//! Every state-changing store method is a conditional update on (id, expected status, attempt):
//! callers whose view is stale simply do not appear in the returned "applied" set (or get
//! [`Update::Stale`]), so a late or duplicate worker never overwrites a newer outcome.

pub use crate::dispatch::{
    Claim, Exchanged, Finished, FloorMark, Lease, Outcome, Promotion, PruneCursor, PruneScan,
    Pruned, RescueReport, Update,
};
use crate::error::Result;
pub use crate::event::{Event, WorkerSlots};
pub use crate::job::Token;
use crate::job::{
    Backlog, CancelOutcome, DeadLetter, Job, JobFilter, JobId, JobPage, JobStats, NewJob,
    PendingJob, StartedJob,
};
use crate::job_type::JobTypeInfo;
use crate::notes::{LogLine, Progress, TryLog};
use crate::policy::PolicySettings;
use crate::schedule::{Fired, Schedule};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
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

/// A clock that stands still until it is moved (tests: leases, delays and schedules without
/// waiting).
#[derive(Debug)]
pub struct ManualClock(std::sync::Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock reading `at`.
    pub fn at(at: DateTime<Utc>) -> ManualClock {
        ManualClock(std::sync::Mutex::new(at))
    }

    /// Move the clock forward by `by` (saturating at the end of time).
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let step = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
        *now = now.checked_add_signed(step).unwrap_or(*now);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
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
    /// The PENDING jobs that are not delayed (retries waiting out their backoff included) and
    /// their summed estimated durations, per named
    /// queue (queues with none are left out). From kept sums where the store keeps them;
    /// otherwise it reads every such row's estimate, which suits a gauge sampled now and then,
    /// not a request path.
    async fn backlog(&self) -> Result<Vec<(String, Backlog)>>;
    /// PENDING/SCHEDULED/RUNNING → CANCELLED (see [`CancelOutcome`]).
    async fn cancel(&self, id: JobId, now: DateTime<Utc>) -> Result<CancelOutcome>;
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
    /// Retention: look at the jobs of `scan` and delete those that are COMPLETED since before
    /// `scan.completed_before`, or FAILED / CANCELLED since before `scan.failed_before` and not
    /// in the dead-letter queue. Open jobs and dead letters are stepped over. The counts, the
    /// listing keys and the job's idempotency key go with it.
    async fn prune(&self, scan: &PruneScan) -> Result<Pruned>;
    /// Bring the kept counts per status back in line with the rows, without locking them: the
    /// difference as of one snapshot is added to the counts (a process of an earlier version
    /// that changed statuses uncounted during an upgrade, say). Returns how many jobs' worth
    /// of difference there was. A store that counts the rows on every read has none. A store
    /// that lists leases apart from the rows also lists every job in flight again, as of `now`,
    /// so that leases such a process handed out are rescued too.
    async fn recount(&self, _now: DateTime<Utc>) -> Result<u64> {
        Ok(0)
    }
    /// Take a [`FloorMark`] now, for a later [`DispatchStore::raise_floors`]. `None`: this store
    /// keeps no floors.
    async fn floor_mark(&self) -> Result<Option<FloorMark>> {
        Ok(None)
    }
    /// If every transaction open at `mark` has ended, raise each queue's floor: the queue
    /// position below which no claimable entry of the queue exists or can appear, so that
    /// claims in sequence order (FCFS, Round Robin) start there instead of walking the entries
    /// claimed since the table was last vacuumed. Only positions at or above the current
    /// floor are looked at, unless `full` (which also finds entries written below it by
    /// hand). Returns whether the floors were written (false: a transaction of the mark is
    /// still open; raise again with the same mark later).
    async fn raise_floors(&self, _mark: &FloorMark, _full: bool) -> Result<bool> {
        Ok(false)
    }
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
    /// expiry that claim set. (A lookup of the leases with these expiries, not a scan.)
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

/// The durable copy of the settings (its [`Settings`]) and leader election.
#[async_trait]
pub trait ControlStore: Settings {
    /// Acquire or renew `lease` (its role for its holder) until `now + lease.ttl`. True when
    /// held.
    async fn try_lead(&self, lease: &Lease<'_>, now: DateTime<Utc>) -> Result<bool>;
    /// Give up `lease`'s role if its holder holds it.
    async fn resign(&self, lease: &Lease<'_>) -> Result<()>;
    /// Cheap connectivity check (one round trip).
    async fn ping(&self) -> Result<()> {
        self.policy().await.map(|_| ())
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
    /// Record a handled fire of schedule `name`: if its `next_fire_at` is still
    /// `fired.expected` (else another leader or a user change came first: `false`), set it to
    /// `fired.next`, `last_fire_at` to `fired.fire` and, when a job was enqueued,
    /// `last_job_id`.
    async fn advance_schedule(&self, name: &str, fired: &Fired) -> Result<bool>;
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

/// Everything a store provides (each store says so with an empty `impl Store`).
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

/// A subscription to [`Event`]s.
#[async_trait]
pub trait Subscription: Send {
    /// The next event; `None` when the subscription ended (reconnect by subscribing again).
    async fn recv(&mut self) -> Option<Event>;
}

/// Who is alive and what it can do: each worker's slots and job types, with a liveness
/// deadline.
#[async_trait]
pub trait WorkerRegistry: Send + Sync {
    /// Record `worker`'s slots (absolute values) with a liveness deadline of `ttl`.
    async fn report_slots(&self, worker: &str, idle: u32, total: u32, ttl: Duration) -> Result<()>;
    /// Live workers (expired ones are omitted).
    async fn workers(&self) -> Result<Vec<WorkerSlots>>;
    /// Record the job types `worker` serves (kept until the worker is reaped).
    async fn report_types(&self, worker: &str, job_types: &[String]) -> Result<()>;
    /// Workers whose liveness deadline passed; their entries are removed. Returns their ids.
    async fn reap_dead_workers(&self) -> Result<Vec<String>>;
}

/// One copy of every queue's policy settings: the store holds the durable one, the transport
/// the one workers read, which also announces each write ([`Event::PolicyChanged`]).
/// [`crate::queue`] keeps the two in step, the durable copy written first.
#[async_trait]
pub trait Settings: Send + Sync {
    /// The `default` queue's settings, if this copy has them.
    async fn policy(&self) -> Result<Option<PolicySettings>>;
    /// Write the `default` queue's settings.
    async fn set_policy(&self, settings: &PolicySettings) -> Result<()>;
    /// The settings of every named queue but `default` (whose are [`Settings::policy`]'s),
    /// by name.
    async fn queues(&self) -> Result<Vec<(String, PolicySettings)>>;
    /// Write the settings of queue `name` (`default`: as [`Settings::set_policy`]).
    async fn set_queue(&self, name: &str, settings: &PolicySettings) -> Result<()>;
    /// Write the settings of queue `name` only if this copy has none (a queue just created,
    /// or a rebuild of the transport's copy, never overwrites a newer write); whether it
    /// wrote (the transport announces only a write).
    async fn add_queue(&self, name: &str, settings: &PolicySettings) -> Result<bool>;
}

/// Wake-ups between processes.
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Publish an event to every subscriber (all processes).
    async fn publish(&self, event: Event) -> Result<()>;
    /// Subscribe to events. Returns once the subscription is live: every event published
    /// after it returns reaches the subscription (a test needs no retry loop).
    async fn subscribe(&self) -> Result<Box<dyn Subscription>>;
}

/// The shared runtime keys and events: the worker registry, the copy of the settings workers
/// read (its [`Settings`]) and the event bus. Nothing about a job lives here; everything here can be rebuilt from the store.
#[async_trait]
pub trait Transport: WorkerRegistry + Settings + EventBus {
    /// Cheap connectivity check.
    async fn ping(&self) -> Result<()>;
}
