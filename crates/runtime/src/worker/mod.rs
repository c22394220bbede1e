//! The worker pool: execution slots that claim their own work from the store.
//!
//! One control task owns the slot count and talks to the store in *exchanges*: one statement
//! that records the outcomes of the runs that ended since the last exchange and claims up to as
//! many due PENDING jobs as there are free slots, in the active policy's order, each moved
//! straight to RUNNING under this worker's lease. At most one exchange is in flight; outcomes
//! and freed slots that arrive meanwhile go into the next one, so batches grow with the load
//! and a freed slot waits for one round trip, not for a dispatcher. Because a worker claims
//! only for slots that are free, the policy's order holds globally (up to the jobs already
//! running), and a policy switch applies to every job not yet claimed.
//!
//! When a claim comes back short the queue is dry: the worker claims again only when there is
//! news (a submission or a requeue announced through the transport, a policy change, a retry of
//! its own coming due) or at the poll interval, the safety net. A body runs as a task (or on a
//! blocking thread for a blocking handler); a renewer task extends the leases of running jobs.
//!
//! A failed exchange may still have committed (a connection lost after the commit, before the
//! reply): its claimed jobs are then RUNNING under this worker's lease, unknown to it. So the
//! next exchange after a failure first asks the store which jobs the worker holds with the
//! lease expiry that failed claim gave them, and hands back, in that same exchange, the ones it
//! does not know, without counting a retry (their bodies never ran).
//!
//! This module is the control loop (the slot count, the plan of what to claim, the one
//! exchange in flight); `recorder` makes exchanges and takes in their answers, `slots` runs
//! the bodies and turns their results into outcomes, `renewer` renews leases and writes
//! running jobs' notes.

mod recorder;
mod renewer;
mod slots;

use recorder::*;
use renewer::*;
use slots::*;

use crate::Runtime;
use crate::events::EventPump;
use crate::notes::{self, RunNotes};
use crate::served::{Plan, Served};
use chrono::{DateTime, Utc};
use futures::FutureExt;
use jobsched_core::policy::{PolicyKind, PolicySettings};
use jobsched_core::ports::{Claim, Event, Exchanged, Outcome, Token};
use jobsched_core::retry::AfterFailure;
use jobsched_core::{JobId, StartedJob};
use jobsched_jobs::{JobContext, JobHandler, RunOutput, Stop};
use jobsched_metrics::metrics;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// A job body this worker has begun and whose outcome is not recorded yet.
#[derive(Clone)]
struct Run {
    /// Set to ask the body to stop (shutdown, or the lease was lost).
    stop: Stop,
    /// Its progress and log lines not yet written.
    notes: Arc<RunNotes>,
}

/// Jobs this worker is running, by token.
type RunningSet = Arc<Mutex<HashMap<Token, Run>>>;

fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::seconds(30))
}

/// `now + d`, saturating at `now` instead of panicking on overflow.
fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now.checked_add_signed(chrono_dur(d)).unwrap_or(now)
}

/// What an exchange sent: its outcomes, what it claimed for (the queue and the slots) and the
/// lease expiry it gave the claimed jobs.
type Sent = (Vec<Outcome>, Option<Plan>, DateTime<Utc>);

/// An exchange on its way; it resolves to what it sent and the store's answer.
type Pending = std::pin::Pin<
    Box<dyn std::future::Future<Output = (Sent, jobsched_core::Result<Exchanged>)> + Send>,
>;

/// Longest the control loop waits on the transport (Redis) for a policy read, a heartbeat or
/// an announcement. Redis only carries wake-ups, the policy cache and the slot registry: while
/// it is slow or down, the slots go on claiming from the store (at the poll interval) instead
/// of waiting for it.
const TRANSPORT_WAIT: Duration = Duration::from_millis(250);

/// `call`, given up after [`TRANSPORT_WAIT`].
pub(crate) async fn within<T>(
    call: impl std::future::Future<Output = jobsched_core::Result<T>>,
) -> jobsched_core::Result<T> {
    tokio::time::timeout(TRANSPORT_WAIT, call)
        .await
        .unwrap_or_else(|_| {
            Err(jobsched_core::Error::backend(
                "transport",
                format!("no answer within {TRANSPORT_WAIT:?}"),
            ))
        })
}

/// The control loop's state: the slots, the outcomes not yet written, the exchange in flight
/// and what decides when the next one goes.
struct Pool {
    rt: Runtime,
    me: String,
    total: u32,
    /// Slots with no job.
    idle: u32,
    running: RunningSet,
    /// Where a slot sends its outcome when its body returns.
    done_tx: mpsc::UnboundedSender<Outcome>,
    served: Served,
    /// The job types served here (made once: every report and every claim shares it).
    served_types: Arc<[String]>,
    /// Whether the store has taken this worker's job types into its catalog.
    registered: bool,
    /// Outcomes not written yet.
    outcomes: Vec<Outcome>,
    /// The exchange in flight (at most one).
    exchange: Option<Pending>,
    /// News of work since the last claim: every served queue is claimed from again (a queue
    /// whose claim came back short is left alone until then).
    want: bool,
    /// Retries this worker wrote, by when they are due (it claims them itself then).
    due: BinaryHeap<std::cmp::Reverse<Instant>>,
    /// No exchange before this instant (set after the store failed one).
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Lease expiries of failed exchanges that claimed: jobs with them may be held here
    /// unknown.
    lost: Vec<DateTime<Utc>>,
}

impl Pool {
    /// Start an exchange if none is in flight, the store is not being backed off from, and
    /// there is something to write or a slot to fill.
    fn exchange_if_due(&mut self) {
        if self.exchange.is_some() || self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        self.retry_at = None;
        let plan = self.served.next(self.idle);
        if plan.is_none() && self.outcomes.is_empty() {
            return;
        }
        let now = self.rt.clock.now();
        self.lost.retain(|lease| *lease > now);
        let check = (!self.lost.is_empty())
            .then(|| (known_runs(&self.running, &self.outcomes), self.lost.clone()));
        let n = self.outcomes.len().min(self.rt.config.batch_size);
        let batch: Vec<Outcome> = self.outcomes.drain(..n).collect();
        self.idle -= plan.as_ref().map_or(0, |p| p.ask);
        self.exchange = Some(start_exchange(
            &self.rt,
            batch,
            plan,
            check,
            &self.served_types,
        ));
    }

    /// Slots' bodies returned with `outcomes` (one wake-up).
    fn slots_done(&mut self, outcomes: impl IntoIterator<Item = Outcome>) {
        let before = self.outcomes.len();
        self.outcomes.extend(outcomes);
        self.idle += (self.outcomes.len() - before) as u32;
        self.served.slot_freed();
    }

    /// Take in an exchange's answer and start the jobs it claimed; after a failure, note the
    /// failed claim's lease (its jobs may be held here unknown) and back off from the store.
    fn settled(&mut self, ((sent, plan, lease), result): (Sent, jobsched_core::Result<Exchanged>)) {
        let asked = plan.as_ref().map_or(0, |p| p.ask);
        let claimed = settle(
            &self.rt,
            &self.running,
            sent,
            asked,
            result,
            &mut self.idle,
            &mut self.outcomes,
            &mut self.want,
            &mut self.due,
        );
        match claimed {
            Some(claimed) => {
                if let Some(plan) = &plan {
                    self.served.claimed(plan, claimed.len());
                }
                // This exchange began with the check for unknown claims (there is only one
                // exchange in flight), so whatever an earlier failure left is handed back.
                self.lost.clear();
                self.backoff = Duration::from_millis(50);
                for job in claimed {
                    let settings = self.served.settings(&job.queue);
                    spawn_job(&self.rt, job, &settings, &self.running, &self.done_tx);
                }
            }
            None => {
                if asked > 0 {
                    self.lost.push(lease);
                }
                self.retry_at = Some(Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
            }
        }
    }

    /// An event from the transport.
    async fn event(&mut self, e: Result<Event, broadcast::error::RecvError>) {
        if matches!(
            e,
            Ok(Event::PolicyChanged) | Err(broadcast::error::RecvError::Lagged(_))
        ) {
            self.served.refresh(&self.rt).await;
        }
        // A job of ours cancelled while running: stop its body. Its outcome write will miss
        // (the row is CANCELLED), which frees the slot as usual.
        if let Ok(Event::Cancelled(id)) = &e {
            stop_cancelled(&self.running, *id);
        }
        // News of work (or of an order that may pick other work): claim again.
        self.want |= matches!(
            e,
            Ok(Event::Submitted(_) | Event::JobsAvailable | Event::PolicyChanged)
                | Err(broadcast::error::RecvError::Lagged(_))
        );
    }

    /// One of this worker's retries came due.
    async fn retry_due(&mut self) {
        let now = Instant::now();
        while self
            .due
            .peek()
            .is_some_and(|std::cmp::Reverse(at)| *at <= now)
        {
            self.due.pop();
        }
        self.want = true;
        if self.idle == 0 {
            // No slot here for the retry that came due: tell the others.
            let _ = within(self.rt.transport.publish(Event::JobsAvailable)).await;
        }
    }

    /// Report this worker's slots and types; register its types if the store has not yet.
    async fn heartbeat(&mut self) {
        let rt = &self.rt;
        if let Err(e) =
            within(
                rt.transport
                    .report_slots(&self.me, self.idle, self.total, rt.config.worker_ttl),
            )
            .await
        {
            tracing::warn!(error = %e, "heartbeat to transport failed");
        }
        if let Err(e) = within(rt.transport.report_types(&self.me, &self.served_types)).await {
            tracing::warn!(error = %e, "reporting the served job types failed");
        }
        if !self.registered {
            self.registered = register_types(rt).await;
        }
    }
}

/// Run the worker until `shutdown`, then drain gracefully.
pub async fn run(
    rt: Runtime,
    events: EventPump,
    shutdown: CancellationToken,
) -> Result<(), crate::RuntimeError> {
    let me = rt.config.worker_id.clone();
    let total = rt.config.concurrency;
    let running: RunningSet = Arc::default();
    // A slot is free as soon as its job body returns; its outcome goes into the next exchange.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Outcome>();
    let renew_stop = CancellationToken::new();
    let renewer = tokio::spawn(renewer(rt.clone(), running.clone(), renew_stop.clone()));
    let note_writer = tokio::spawn(note_writer(rt.clone(), running.clone(), renew_stop.clone()));
    let mut ev = events.subscribe();
    let mut served = Served::new(rt.config.queues.as_deref());
    served.refresh(&rt).await;
    // The job types served here: in the catalog (durably, with their schemas: the API checks
    // submissions against them) and reported with this worker's liveness.
    let served_types: Arc<[String]> = rt.registry.names().iter().map(|n| n.to_string()).collect();
    let registered = register_types(&rt).await;
    let mut heartbeat = tokio::time::interval(rt.config.worker_ttl / 3);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut poll = tokio::time::interval(rt.config.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(worker = %me, slots = total, "worker started");
    metrics().worker_slots_total.set(i64::from(total));
    metrics().worker_slots_busy.set(0);
    let mut pool = Pool {
        rt: rt.clone(),
        me: me.clone(),
        total,
        idle: total,
        running: running.clone(),
        done_tx,
        served,
        served_types,
        registered,
        outcomes: Vec::new(),
        exchange: None,
        want: true,
        due: BinaryHeap::new(),
        retry_at: None,
        backoff: Duration::from_millis(50),
        lost: Vec::new(),
    };

    // ---- normal operation ----
    while !shutdown.is_cancelled() {
        metrics()
            .worker_slots_busy
            .set(i64::from(pool.total - pool.idle));
        if pool.want {
            pool.served.wake();
            pool.want = false;
        }
        pool.exchange_if_due();
        let next_due = pool.due.peek().map(|std::cmp::Reverse(at)| *at);
        let retry_at = pool.retry_at;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = async { pool.exchange.as_mut().expect("branch enabled only with an exchange").await },
                if pool.exchange.is_some() => {
                pool.exchange = None;
                pool.settled(r);
            }
            Some(outcome) = done_rx.recv() => {
                let more = std::iter::from_fn(|| done_rx.try_recv().ok());
                pool.slots_done(std::iter::once(outcome).chain(more));
            }
            e = ev.recv() => pool.event(e).await,
            _ = async { tokio::time::sleep_until(next_due.expect("branch enabled only when due").into()).await },
                if next_due.is_some() => pool.retry_due().await,
            _ = async { tokio::time::sleep_until(retry_at.expect("branch enabled only when backing off").into()).await },
                if retry_at.is_some() => {}
            _ = heartbeat.tick() => pool.heartbeat().await,
            _ = poll.tick() => {
                pool.want = true;
                // The settings are re-read now and then: an event may have been lost.
                pool.served.refresh(&rt).await;
            }
        }
    }

    // ---- graceful shutdown ----
    tracing::info!(worker = %me, "shutting down: no new work; waiting for in-flight jobs");
    let _ = rt
        .transport
        .report_slots(&me, 0, total, rt.config.worker_ttl)
        .await;
    // An exchange on its way may have claimed jobs: they run (or are handed back) like the rest.
    if let Some(pending) = pool.exchange.take() {
        pool.settled(pending.await);
    }
    drain(pool, done_rx).await;
    renew_stop.cancel();
    let _ = renewer.await;
    let _ = note_writer.await;
    let _ = rt
        .transport
        .report_slots(&me, 0, 0, Duration::from_millis(1))
        .await;
    tracing::info!(worker = %me, "worker stopped");
    Ok(())
}

/// The shutdown's drain: hand back what a failed claim may have left under this worker's lease,
/// write outcomes as bodies end, ask preemptible bodies to stop at the grace period's end and
/// hand back (without a retry) whatever still runs a second later.
async fn drain(mut pool: Pool, mut done_rx: mpsc::UnboundedReceiver<Outcome>) {
    let rt = pool.rt.clone();
    let me = pool.me.clone();
    let running = pool.running.clone();
    if !pool.lost.is_empty() {
        // If the store is still out of reach, the rescuer takes those jobs when their leases
        // expire.
        let known = known_runs(&running, &pool.outcomes);
        match tokio::time::timeout(rt.config.shutdown_grace, rt.store.held(&me, &pool.lost)).await {
            Ok(Ok(held)) => pool.outcomes.extend(unknown_claims(held, &known)),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not check for claims whose reply was lost")
            }
            Err(_) => tracing::warn!("the check for claims whose reply was lost timed out"),
        }
    }
    let deadline = Instant::now() + rt.config.shutdown_grace;
    let busy = |running: &RunningSet| running.lock().map(|r| r.len()).unwrap_or(0);
    let mut asked_to_stop = false;
    let mut handed_back = false;
    let soft = |at: Instant| at + Duration::from_secs(1);
    loop {
        // Write what ended so far (no claims), then wait for the rest.
        drain_done(&mut done_rx, &mut pool.outcomes);
        if !pool.outcomes.is_empty() {
            let batch = std::mem::take(&mut pool.outcomes);
            let applied = write_outcomes(&rt, &batch, &me).await;
            recorded(
                &rt,
                &batch,
                &applied,
                &running,
                &mut pool.due,
                &mut pool.want,
                pool.idle,
            );
        }
        if busy(&running) == 0 {
            break;
        }
        let now = Instant::now();
        if now >= deadline && !asked_to_stop {
            // Ask preemptible jobs to stop; they come back as Requeue outcomes on their own.
            asked_to_stop = true;
            if let Ok(r) = running.lock() {
                for run in r.values() {
                    run.stop.set();
                }
            }
        }
        if now >= soft(deadline) {
            if handed_back {
                break;
            }
            // Hand back whatever still runs, without burning a retry.
            handed_back = true;
            let left: Vec<Token> = running
                .lock()
                .map(|r| r.keys().copied().collect())
                .unwrap_or_default();
            tracing::warn!(
                count = left.len(),
                "handing back jobs that did not finish within the grace period"
            );
            pool.outcomes
                .extend(left.into_iter().map(|token| Outcome::Requeue {
                    token,
                    checkpoint: None,
                }));
            continue;
        }
        let wake = if asked_to_stop {
            soft(deadline)
        } else {
            deadline
        };
        tokio::select! {
            Some(o) = done_rx.recv() => pool.outcomes.push(o),
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}

/// Ask the body of `id` to stop, if it runs here.
fn stop_cancelled(running: &RunningSet, id: JobId) {
    if let Ok(r) = running.lock() {
        for (token, run) in r.iter().filter(|(t, _)| t.id == id) {
            tracing::info!(job_id = %id, attempt = token.attempt, "job cancelled while running; stopping it");
            run.stop.set();
        }
    }
}

/// Register the job types served here in the store's catalog; `false` (try again at the next
/// heartbeat) when the store did not take them.
async fn register_types(rt: &Runtime) -> bool {
    let now = rt.clock.now();
    let infos: Vec<jobsched_core::job_type::JobTypeInfo> = rt
        .registry
        .names()
        .into_iter()
        .filter_map(|n| rt.registry.get(n))
        .filter_map(|h| {
            // A handler whose methods panic is left out of the catalog (its jobs still fail
            // cleanly when a body runs), not allowed to take the worker down.
            std::panic::catch_unwind(AssertUnwindSafe(|| jobsched_core::job_type::JobTypeInfo {
                name: h.name().to_string(),
                schema: h.schema().unwrap_or(serde_json::Value::Bool(true)),
                preemptible: h.preemptible(),
                default_timeout_seconds: h.default_timeout().as_secs_f64(),
                registered_by: rt.config.worker_id.clone(),
                updated_at: now,
            }))
            .map_err(|_| {
                tracing::error!(
                    job_type = h.name(),
                    "the job type's handler panicked; not registered"
                )
            })
            .ok()
        })
        .collect();
    match within(rt.store.register_types(&infos)).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "could not register the job types served here; will retry");
            false
        }
    }
}
