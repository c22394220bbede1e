//! Layers: behaviour put around every call of a [`Store`] or a [`Transport`] (a deadline, a
//! fault for a test) without repeating their methods for each.
//!
//! A [`Layer`] says what happens around one call, given the call's name; [`Layered`] is a
//! [`Store`] and [`LayeredTransport`] a [`Transport`] that route every method of an inner one
//! through a layer.

use crate::job_type::JobTypeInfo;
use crate::notes::{LogLine, Progress, TryLog};
use crate::ports::{
    Claim, ControlStore, DeadLetterStore, DispatchStore, Event, EventBus, Exchanged, Finished,
    FloorMark, JobRepo, Lease, NotesStore, Outcome, Promotion, PruneScan, Pruned, RescueReport,
    ScheduleStore, Settings, Store, Subscription, Token, Transport, TypeStore, Update,
    WorkerRegistry, WorkerSlots, WorkerStore,
};
use crate::schedule::{Fired, Schedule};
use crate::{
    Backlog, CancelOutcome, DeadLetter, Job, JobFilter, JobId, JobPage, JobStats, NewJob,
    PendingJob, PolicySettings, Result, StartedJob,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// What happens around each call of a [`Layered`] store or a [`LayeredTransport`].
pub trait Layer: Send + Sync {
    /// Run `call`, the method named `op` (e.g. `"exchange"`), and return its result or
    /// one of the layer's own.
    fn around<T: Send>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T>> + Send,
    ) -> impl Future<Output = Result<T>> + Send;
}

/// `inner` with every call run through `layer`.
pub struct Layered<L> {
    inner: Arc<dyn Store>,
    layer: L,
}

impl<L: Layer> Layered<L> {
    /// Route every call of `inner` through `layer`.
    pub fn new(inner: Arc<dyn Store>, layer: L) -> Layered<L> {
        Layered { inner, layer }
    }

    /// The layer.
    pub fn layer(&self) -> &L {
        &self.layer
    }
}

impl<L: std::fmt::Debug> std::fmt::Debug for Layered<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layered")
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

/// `inner` with every call run through `layer` (a subscription's events are not: only the
/// call that subscribes).
pub struct LayeredTransport<L> {
    inner: Arc<dyn Transport>,
    layer: L,
}

impl<L: Layer> LayeredTransport<L> {
    /// Route every call of `inner` through `layer`.
    pub fn new(inner: Arc<dyn Transport>, layer: L) -> LayeredTransport<L> {
        LayeredTransport { inner, layer }
    }
}

impl<L: std::fmt::Debug> std::fmt::Debug for LayeredTransport<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayeredTransport")
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

/// The impl of one port for a layered type (or for each of `[A, B]`): each
/// `fn name(args) -> T;` becomes `layer.around("name", inner.name(args))`.
macro_rules! through {
    ($port:ident for [$($layered:ident),+] $methods:tt) => {
        $( through!($port for $layered $methods); )+
    };
    ($port:ident for $layered:ident { $( fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty; )* }) => {
        #[async_trait]
        impl<L: Layer> $port for $layered<L> {
            $(
                async fn $name(&self $(, $arg: $ty)*) -> Result<$ret> {
                    self.layer
                        .around(stringify!($name), self.inner.$name($($arg),*))
                        .await
                }
            )*
        }
    };
}

through!(JobRepo for Layered {
    fn insert(&self, job: &NewJob, now: DateTime<Utc>) -> Job;
    fn insert_many(&self, jobs: &[NewJob], now: DateTime<Utc>) -> Vec<JobId>;
    fn get(&self, id: JobId) -> Option<Job>;
    fn list(&self, filter: &JobFilter) -> JobPage;
    fn stats(&self) -> JobStats;
    fn queue_counts(&self) -> Vec<(String, crate::queue::QueueCounts)>;
    fn backlog(&self) -> Vec<(String, Backlog)>;
    fn cancel(&self, id: JobId, now: DateTime<Utc>) -> CancelOutcome;
});

through!(DispatchStore for Layered {
    fn pending_after(&self, after_seq: i64, limit: u32) -> Vec<PendingJob>;
    fn mark_scheduled(
        &self,
        jobs: &[Token],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>
    ) -> Vec<StartedJob>;
    fn rescue_expired(&self, now: DateTime<Utc>) -> RescueReport;
    fn promote_due(&self, now: DateTime<Utc>, limit: u32) -> Promotion;
    fn prune(&self, scan: &PruneScan) -> Pruned;
    fn recount(&self, now: DateTime<Utc>) -> u64;
    fn floor_mark(&self) -> Option<FloorMark>;
    fn raise_floors(&self, mark: &FloorMark, full: bool) -> bool;
});

through!(WorkerStore for Layered {
    fn claim(&self, claim: &Claim, owner: &str, now: DateTime<Utc>) -> Vec<StartedJob>;
    fn exchange(
        &self,
        outcomes: &[Outcome],
        owner: &str,
        now: DateTime<Utc>,
        claim: &Claim
    ) -> Exchanged;
    fn fetch(&self, tokens: &[Token]) -> Vec<StartedJob>;
    fn record_starts(
        &self,
        starts: &[(Token, DateTime<Utc>)],
        owner: &str,
        lease_until: DateTime<Utc>
    ) -> Vec<Token>;
    fn held(&self, owner: &str, leases: &[DateTime<Utc>]) -> Vec<Token>;
    fn renew(&self, tokens: &[Token], owner: &str, lease_until: DateTime<Utc>) -> Vec<Token>;
    fn finish(&self, runs: &[Finished], owner: &str, now: DateTime<Utc>) -> Vec<Token>;
});

through!(DeadLetterStore for Layered {
    fn dead_letters(&self, limit: u32) -> Vec<DeadLetter>;
    fn dead_letter_count(&self) -> i64;
    fn retry_dead_letter(&self, id: JobId, now: DateTime<Utc>) -> Update;
    fn purge_dead_letters(&self) -> u64;
});

through!(ScheduleStore for Layered {
    fn create_schedule(&self, schedule: &Schedule) -> bool;
    fn put_schedule(&self, schedule: &Schedule) -> bool;
    fn get_schedule(&self, name: &str) -> Option<Schedule>;
    fn list_schedules(&self) -> Vec<Schedule>;
    fn delete_schedule(&self, name: &str) -> bool;
    fn due_schedules(&self, now: DateTime<Utc>, limit: u32) -> Vec<Schedule>;
    fn advance_schedule(&self, name: &str, fired: &Fired) -> bool;
});

through!(NotesStore for Layered {
    fn save_notes(
        &self,
        token: Token,
        attempt: u32,
        progress: Option<&Progress>,
        lines: &[LogLine]
    ) -> bool;
    fn progress(&self, id: JobId) -> Option<Progress>;
    fn logs(&self, id: JobId, attempt: Option<u32>) -> Vec<TryLog>;
});

through!(TypeStore for Layered {
    fn register_types(&self, types: &[JobTypeInfo]) -> ();
    fn job_types(&self) -> Vec<JobTypeInfo>;
    fn pending_by_type(&self) -> Vec<(String, i64)>;
});

through!(ControlStore for Layered {
    fn try_lead(&self, lease: &Lease<'_>, now: DateTime<Utc>) -> bool;
    fn resign(&self, lease: &Lease<'_>) -> ();
    fn ping(&self) -> ();
});

impl<L: Layer> Store for Layered<L> {}

through!(WorkerRegistry for LayeredTransport {
    fn report_slots(&self, worker: &str, idle: u32, total: u32, ttl: Duration) -> ();
    fn workers(&self) -> Vec<WorkerSlots>;
    fn report_types(&self, worker: &str, job_types: &[String]) -> ();
    fn reap_dead_workers(&self) -> Vec<String>;
});

through!(Settings for [Layered, LayeredTransport] {
    fn policy(&self) -> Option<PolicySettings>;
    fn set_policy(&self, settings: &PolicySettings) -> ();
    fn queues(&self) -> Vec<(String, PolicySettings)>;
    fn set_queue(&self, name: &str, settings: &PolicySettings) -> ();
    fn add_queue(&self, name: &str, settings: &PolicySettings) -> bool;
});

through!(EventBus for LayeredTransport {
    fn publish(&self, event: Event) -> ();
    fn subscribe(&self) -> Box<dyn Subscription>;
});

through!(Transport for LayeredTransport {
    fn ping(&self) -> ();
});
