//! A store whose every call gives up after a deadline: what the API's routes talk to.
//!
//! A database that stops answering (a network cut, a hung server) would otherwise hold each
//! request until TCP gives up, minutes later. With the deadline the request is answered 503 in
//! bounded time. Since a statement that was sent may still commit, the error is
//! [`Error::Interrupted`]: the client is told the change may or may not have been applied.
//!
//! After a call ran out of time the database is presumed unreachable for [`COOL_DOWN`]: calls
//! then fail at once with [`Error::Backend`] (nothing was sent, so nothing is in doubt), and
//! after it one call at a time tries again while the others keep failing at once, until one
//! gets an answer in time.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jobsched_core::ports::{
    Claim, ControlStore, DeadLetterStore, DispatchStore, Exchanged, Finished, JobRepo, Outcome,
    RescueReport, Store, Token, Update, WorkerStore,
};
use jobsched_core::{
    CancelOutcome, DeadLetter, Error, Job, JobFilter, JobId, JobPage, JobStats, NewJob, PendingJob,
    PolicySettings, Result, StartedJob,
};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The store calls of an API request get at most this long each.
pub const STORE_DEADLINE: Duration = Duration::from_secs(5);

/// How long the database is presumed unreachable after a call ran out of time.
pub const COOL_DOWN: Duration = Duration::from_secs(1);

/// `inner`, with every call bounded by `limit` (see the module docs).
pub struct DeadlineStore {
    inner: Arc<dyn Store>,
    limit: Duration,
    /// Until when calls fail at once, set when a call ran out of time; `None` while the
    /// database answers.
    unreachable_until: Mutex<Option<Instant>>,
    /// Whether a call is trying the presumed-unreachable database (one at a time).
    probing: AtomicBool,
}

/// Clears [`DeadlineStore::probing`] when the probing call ends, however it ends (a request
/// dropped mid-call included).
struct Probe<'a>(&'a AtomicBool);

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl DeadlineStore {
    /// Wrap `inner`; each call fails with [`Error::Interrupted`] after `limit`.
    pub fn new(inner: Arc<dyn Store>, limit: Duration) -> DeadlineStore {
        DeadlineStore {
            inner,
            limit,
            unreachable_until: Mutex::new(None),
            probing: AtomicBool::new(false),
        }
    }

    fn unreachable_until(&self) -> Option<Instant> {
        *self
            .unreachable_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_unreachable_until(&self, until: Option<Instant>) {
        *self
            .unreachable_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = until;
    }

    async fn bounded<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        let _probe = match self.unreachable_until() {
            None => None,
            Some(until) => {
                if Instant::now() < until || self.probing.swap(true, Ordering::SeqCst) {
                    return Err(Error::backend(
                        "database",
                        format!(
                            "it did not answer within {} s a moment ago; this request was not \
                             sent",
                            self.limit.as_secs_f64()
                        ),
                    ));
                }
                Some(Probe(&self.probing))
            }
        };
        match tokio::time::timeout(self.limit, call).await {
            Ok(result) => {
                self.set_unreachable_until(None);
                result
            }
            Err(_) => {
                self.set_unreachable_until(Instant::now().checked_add(COOL_DOWN));
                Err(Error::Interrupted {
                    component: "database",
                    source: format!(
                        "no answer within {} s (is the database reachable?)",
                        self.limit.as_secs_f64()
                    )
                    .into(),
                })
            }
        }
    }
}

impl std::fmt::Debug for DeadlineStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadlineStore")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl JobRepo for DeadlineStore {
    async fn insert(&self, job: &NewJob, now: DateTime<Utc>) -> Result<Job> {
        self.bounded(self.inner.insert(job, now)).await
    }
    async fn insert_many(&self, jobs: &[NewJob], now: DateTime<Utc>) -> Result<Vec<JobId>> {
        self.bounded(self.inner.insert_many(jobs, now)).await
    }
    async fn get(&self, id: JobId) -> Result<Option<Job>> {
        self.bounded(self.inner.get(id)).await
    }
    async fn list(&self, filter: &JobFilter) -> Result<JobPage> {
        self.bounded(self.inner.list(filter)).await
    }
    async fn stats(&self) -> Result<JobStats> {
        self.bounded(self.inner.stats()).await
    }
    async fn cancel(&self, id: JobId, now: DateTime<Utc>) -> Result<CancelOutcome> {
        self.bounded(self.inner.cancel(id, now)).await
    }
}

#[async_trait]
impl DispatchStore for DeadlineStore {
    async fn pending_after(&self, after_seq: i64, limit: u32) -> Result<Vec<PendingJob>> {
        self.bounded(self.inner.pending_after(after_seq, limit))
            .await
    }
    async fn mark_scheduled(
        &self,
        jobs: &[Token],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<StartedJob>> {
        self.bounded(self.inner.mark_scheduled(jobs, now, lease_until))
            .await
    }
    async fn rescue_expired(&self, now: DateTime<Utc>) -> Result<RescueReport> {
        self.bounded(self.inner.rescue_expired(now)).await
    }
}

#[async_trait]
impl WorkerStore for DeadlineStore {
    async fn claim(
        &self,
        claim: &Claim,
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<StartedJob>> {
        self.bounded(self.inner.claim(claim, owner, now)).await
    }
    async fn exchange(
        &self,
        outcomes: &[Outcome],
        owner: &str,
        now: DateTime<Utc>,
        claim: &Claim,
    ) -> Result<Exchanged> {
        self.bounded(self.inner.exchange(outcomes, owner, now, claim))
            .await
    }
    async fn fetch(&self, tokens: &[Token]) -> Result<Vec<StartedJob>> {
        self.bounded(self.inner.fetch(tokens)).await
    }
    async fn record_starts(
        &self,
        starts: &[(Token, DateTime<Utc>)],
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Token>> {
        self.bounded(self.inner.record_starts(starts, owner, lease_until))
            .await
    }
    async fn renew(
        &self,
        tokens: &[Token],
        owner: &str,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Token>> {
        self.bounded(self.inner.renew(tokens, owner, lease_until))
            .await
    }
    async fn finish(
        &self,
        runs: &[Finished],
        owner: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Token>> {
        self.bounded(self.inner.finish(runs, owner, now)).await
    }
}

#[async_trait]
impl DeadLetterStore for DeadlineStore {
    async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>> {
        self.bounded(self.inner.dead_letters(limit)).await
    }
    async fn dead_letter_count(&self) -> Result<i64> {
        self.bounded(self.inner.dead_letter_count()).await
    }
    async fn retry_dead_letter(&self, id: JobId, now: DateTime<Utc>) -> Result<Update> {
        self.bounded(self.inner.retry_dead_letter(id, now)).await
    }
    async fn purge_dead_letters(&self) -> Result<u64> {
        self.bounded(self.inner.purge_dead_letters()).await
    }
}

#[async_trait]
impl ControlStore for DeadlineStore {
    async fn load_policy(&self) -> Result<Option<PolicySettings>> {
        self.bounded(self.inner.load_policy()).await
    }
    async fn save_policy(&self, settings: &PolicySettings) -> Result<()> {
        self.bounded(self.inner.save_policy(settings)).await
    }
    async fn try_lead(
        &self,
        role: &str,
        holder: &str,
        now: DateTime<Utc>,
        ttl: Duration,
    ) -> Result<bool> {
        self.bounded(self.inner.try_lead(role, holder, now, ttl))
            .await
    }
    async fn resign(&self, role: &str, holder: &str) -> Result<()> {
        self.bounded(self.inner.resign(role, holder)).await
    }
    async fn ping(&self) -> Result<()> {
        self.bounded(self.inner.ping()).await
    }
}
