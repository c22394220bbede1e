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
    // Made once: every report and every claim shares it.
    let served_types: Arc<[String]> = rt.registry.names().iter().map(|n| n.to_string()).collect();
    let mut registered = register_types(&rt).await;
    let mut idle = total;
    let heartbeat_every = rt.config.worker_ttl / 3;
    let mut heartbeat = tokio::time::interval(heartbeat_every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut poll = tokio::time::interval(rt.config.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(worker = %me, slots = total, "worker started");
    metrics().worker_slots_total.set(i64::from(total));
    metrics().worker_slots_busy.set(0);

    let mut outcomes: Vec<Outcome> = Vec::new();
    // The exchange in flight (at most one).
    let mut exchange: Option<Pending> = None;
    // News of work since the last claim: every served queue is claimed from again (a queue
    // whose claim came back short is left alone until then).
    let mut want = true;
    // Retries this worker wrote, by when they are due (it claims them itself then).
    let mut due: BinaryHeap<std::cmp::Reverse<Instant>> = BinaryHeap::new();
    // No exchange before this instant (set after the store failed one).
    let mut retry_at: Option<Instant> = None;
    let mut backoff = Duration::from_millis(50);
    // Lease expiries of failed exchanges that claimed: jobs with them may be held here unknown.
    let mut lost: Vec<DateTime<Utc>> = Vec::new();

    // ---- normal operation ----
    while !shutdown.is_cancelled() {
        metrics().worker_slots_busy.set(i64::from(total - idle));
        if want {
            served.wake();
            want = false;
        }
        if retry_at.is_none_or(|at| Instant::now() >= at) && exchange.is_none() {
            retry_at = None;
            let plan = served.next(idle);
            if plan.is_some() || !outcomes.is_empty() {
                let now = rt.clock.now();
                lost.retain(|lease| *lease > now);
                let check =
                    (!lost.is_empty()).then(|| (known_runs(&running, &outcomes), lost.clone()));
                let n = outcomes.len().min(rt.config.batch_size);
                let batch: Vec<Outcome> = outcomes.drain(..n).collect();
                idle -= plan.as_ref().map_or(0, |p| p.ask);
                exchange = Some(start_exchange(&rt, batch, plan, check, &served_types));
            }
        }
        let next_due = due.peek().map(|std::cmp::Reverse(at)| *at);
        let settled = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = async { exchange.as_mut().expect("branch enabled only with an exchange").await },
                if exchange.is_some() => {
                exchange = None;
                Some(r)
            }
            Some(outcome) = done_rx.recv() => {
                outcomes.push(outcome);
                idle += 1;
                served.slot_freed();
                while let Ok(o) = done_rx.try_recv() {
                    outcomes.push(o);
                    idle += 1;
                }
                None
            }
            e = ev.recv() => {
                if matches!(e, Ok(Event::PolicyChanged) | Err(broadcast::error::RecvError::Lagged(_))) {
                    served.refresh(&rt).await;
                }
                // A job of ours cancelled while running: stop its body. Its outcome write
                // will miss (the row is CANCELLED), which frees the slot as usual.
                if let Ok(Event::Cancelled(id)) = &e {
                    stop_cancelled(&running, *id);
                }
                // News of work (or of an order that may pick other work): claim again.
                want |= matches!(
                    e,
                    Ok(Event::Submitted(_) | Event::JobsAvailable | Event::PolicyChanged)
                        | Err(broadcast::error::RecvError::Lagged(_))
                );
                None
            }
            _ = async { tokio::time::sleep_until(next_due.expect("branch enabled only when due").into()).await },
                if next_due.is_some() => {
                let now = Instant::now();
                while due.peek().is_some_and(|std::cmp::Reverse(at)| *at <= now) {
                    due.pop();
                }
                want = true;
                if idle == 0 {
                    // No slot here for the retry that came due: tell the others.
                    let _ = within(rt.transport.publish(Event::JobsAvailable)).await;
                }
                None
            }
            _ = async { tokio::time::sleep_until(retry_at.expect("branch enabled only when backing off").into()).await },
                if retry_at.is_some() => None,
            _ = heartbeat.tick() => {
                if let Err(e) = within(rt.transport.report_slots(&me, idle, total, rt.config.worker_ttl)).await {
                    tracing::warn!(error = %e, "heartbeat to transport failed");
                }
                if let Err(e) = within(rt.transport.report_types(&me, &served_types)).await {
                    tracing::warn!(error = %e, "reporting the served job types failed");
                }
                if !registered {
                    registered = register_types(&rt).await;
                }
                None
            }
            _ = poll.tick() => {
                want = true;
                // The settings are re-read now and then: an event may have been lost.
                served.refresh(&rt).await;
                None
            }
        };
        let Some(((sent, plan, lease), result)) = settled else {
            continue;
        };
        let asked = plan.as_ref().map_or(0, |p| p.ask);
        match settle(
            &rt,
            &running,
            sent,
            asked,
            result,
            &mut idle,
            &mut outcomes,
            &mut want,
            &mut due,
        ) {
            Some(claimed) => {
                if let Some(plan) = &plan {
                    served.claimed(plan, claimed.len());
                }
                // This exchange began with the check for unknown claims (there is only one
                // exchange in flight), so whatever an earlier failure left is handed back.
                lost.clear();
                backoff = Duration::from_millis(50);
                for job in claimed {
                    let settings = served.settings(&job.queue);
                    spawn_job(&rt, job, &settings, &running, &done_tx);
                }
            }
            None => {
                if asked > 0 {
                    lost.push(lease);
                }
                retry_at = Some(Instant::now() + backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
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
    if let Some(pending) = exchange.take() {
        let ((sent, plan, lease), result) = pending.await;
        let asked = plan.as_ref().map_or(0, |p| p.ask);
        if result.is_ok() {
            lost.clear();
        } else if asked > 0 {
            lost.push(lease);
        }
        let claimed = settle(
            &rt,
            &running,
            sent,
            asked,
            result,
            &mut idle,
            &mut outcomes,
            &mut want,
            &mut due,
        );
        for job in claimed.unwrap_or_default() {
            let settings = served.settings(&job.queue);
            spawn_job(&rt, job, &settings, &running, &done_tx);
        }
    }
    if !lost.is_empty() {
        // Hand back what a failed claim may have left under this worker's lease; if the store
        // is still out of reach, the rescuer takes those jobs when their leases expire.
        let known = known_runs(&running, &outcomes);
        match tokio::time::timeout(rt.config.shutdown_grace, rt.store.held(&me, &lost)).await {
            Ok(Ok(held)) => outcomes.extend(unknown_claims(held, &known)),
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
        drain_done(&mut done_rx, &mut outcomes);
        if !outcomes.is_empty() {
            let batch = std::mem::take(&mut outcomes);
            let applied = write_outcomes(&rt, &batch, &me).await;
            recorded(&rt, &batch, &applied, &running, &mut due, &mut want, idle);
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
            outcomes.extend(left.into_iter().map(|token| Outcome::Requeue {
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
            Some(o) = done_rx.recv() => outcomes.push(o),
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }
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
