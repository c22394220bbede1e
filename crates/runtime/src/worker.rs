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

/// Take in an exchange's answer: free the slots it did not fill, note whether the queue ran dry,
/// forget the recorded runs. Returns the claimed jobs to start; on an error (nothing was
/// written) the outcomes go back to the front of `outcomes`, the slots are freed and `None`
/// tells the caller to back off.
#[allow(clippy::too_many_arguments)]
fn settle(
    rt: &Runtime,
    running: &RunningSet,
    sent: Vec<Outcome>,
    asked: u32,
    result: jobsched_core::Result<Exchanged>,
    idle: &mut u32,
    outcomes: &mut Vec<Outcome>,
    want: &mut bool,
    due: &mut BinaryHeap<std::cmp::Reverse<Instant>>,
) -> Option<Vec<StartedJob>> {
    match result {
        Ok(done) => {
            let claimed = done.claimed.len() as u32;
            *idle += asked.saturating_sub(claimed);
            recorded(rt, &sent, &done.applied, running, due, want, *idle);
            Some(done.claimed)
        }
        Err(e) => {
            // An outcome is only lost if the lease expires first, and then the rescuer retries
            // the job: at-least-once execution.
            tracing::warn!(error = %e, "exchange with the store failed; keeping its outcomes for the next try");
            *idle += asked;
            let mut kept = sent;
            kept.append(outcomes);
            *outcomes = kept;
            None
        }
    }
}

fn drain_done(rx: &mut mpsc::UnboundedReceiver<Outcome>, into: &mut Vec<Outcome>) {
    while let Ok(o) = rx.try_recv() {
        into.push(o);
    }
}

/// The runs this worker knows of: the ones running and the ones whose outcome is not written.
fn known_runs(running: &RunningSet, outcomes: &[Outcome]) -> HashSet<Token> {
    let mut known: HashSet<Token> = running
        .lock()
        .map(|r| r.keys().copied().collect())
        .unwrap_or_default();
    known.extend(outcomes.iter().map(Outcome::token));
    known
}

/// Hand-backs (no retry counted) for the jobs held under this worker's lease that it does not
/// know of: claimed by an exchange whose reply was lost, so their bodies never ran.
fn unknown_claims(held: Vec<Token>, known: &HashSet<Token>) -> Vec<Outcome> {
    let orphans: Vec<Outcome> = held
        .into_iter()
        .filter(|t| !known.contains(t))
        .map(|token| Outcome::Requeue {
            token,
            checkpoint: None,
        })
        .collect();
    if !orphans.is_empty() {
        tracing::warn!(
            count = orphans.len(),
            "handing back jobs claimed by an exchange whose reply was lost; they never ran"
        );
        metrics().claims_handed_back.inc_by(orphans.len() as u64);
    }
    orphans
}

/// Start an exchange: write `outcomes` and claim what `plan` asks for. With `check` (after
/// a failed exchange: the runs this worker knows and the lease expiries of the failed claims),
/// first hand back the jobs held under this worker's lease with those expiries that it does
/// not know.
fn start_exchange(
    rt: &Runtime,
    mut outcomes: Vec<Outcome>,
    plan: Option<Plan>,
    check: Option<(HashSet<Token>, Vec<DateTime<Utc>>)>,
    served_types: &Arc<[String]>,
) -> Pending {
    let rt = rt.clone();
    let served_types = served_types.clone();
    Box::pin(async move {
        let now = rt.clock.now();
        let lease_until = after(now, rt.config.lease_ttl);
        if let Some((known, leases)) = check {
            match rt.store.held(&rt.config.worker_id, &leases).await {
                Ok(held) => outcomes.extend(unknown_claims(held, &known)),
                Err(e) => return ((outcomes, plan, lease_until), Err(e)),
            }
        }
        let claim_spec = match &plan {
            Some(p) => Claim {
                limit: p.ask,
                order: p.settings.policy,
                lease_until,
                queue: p.queue.clone(),
                concurrency_limit: p.settings.concurrency_limit,
                // Only the types this worker runs: another type's jobs wait for their workers.
                // Only the types this worker runs: another type's jobs wait for their workers.
                job_types: Some(served_types),
            },
            None => Claim::none(now),
        };
        let result = rt
            .store
            .exchange(&outcomes, &rt.config.worker_id, now, &claim_spec)
            .await;
        if let Ok(done) = &result
            && !done.claimed.is_empty()
        {
            metrics().dispatched.inc_by(done.claimed.len() as u64);
        }
        ((outcomes, plan, lease_until), result)
    })
}

/// After outcomes were written: forget their runs (stop renewing), note retries this worker
/// will claim when due, and tell other workers of requeued jobs this one has no slot for.
fn recorded(
    rt: &Runtime,
    sent: &[Outcome],
    applied: &[Token],
    running: &RunningSet,
    due: &mut BinaryHeap<std::cmp::Reverse<Instant>>,
    want: &mut bool,
    idle: u32,
) {
    if sent.is_empty() {
        return;
    }
    if applied.len() < sent.len() {
        tracing::info!(
            stale = sent.len() - applied.len(),
            "some outcomes were stale (lease lost) and were not recorded"
        );
    }
    if let Ok(mut r) = running.lock() {
        for o in sent {
            r.remove(&o.token());
        }
    }
    let now = rt.clock.now();
    let mut requeued = false;
    for o in sent {
        if !applied.contains(&o.token()) {
            continue;
        }
        match o {
            Outcome::Requeue { .. } => requeued = true,
            Outcome::Retry { run_at, .. } => match (*run_at - now).to_std() {
                Ok(wait) if !wait.is_zero() => due.push(std::cmp::Reverse(Instant::now() + wait)),
                _ => requeued = true,
            },
            Outcome::Failed { .. } | Outcome::Completed { .. } => {}
        }
    }
    if requeued {
        *want = true;
        if idle == 0 {
            let transport = rt.transport.clone();
            tokio::spawn(async move {
                let _ = transport.publish(Event::JobsAvailable).await;
            });
        }
    }
}

/// Write outcomes (no claims), retrying while the store is unavailable; returns the applied.
async fn write_outcomes(rt: &Runtime, batch: &[Outcome], me: &str) -> Vec<Token> {
    let mut delay = Duration::from_millis(50);
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let now = rt.clock.now();
        match rt.store.exchange(batch, me, now, &Claim::none(now)).await {
            Ok(done) => return done.applied,
            Err(e) if Instant::now() < give_up => {
                tracing::warn!(error = %e, "recording outcomes failed; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                // The leases expire and the rescuer retries these jobs.
                tracing::error!(error = %e, count = batch.len(), "giving up recording outcomes; the rescuer retries these jobs when their leases expire");
                return Vec::new();
            }
        }
    }
}

fn spawn_job(
    rt: &Runtime,
    job: StartedJob,
    settings: &PolicySettings,
    running: &RunningSet,
    done_tx: &mpsc::UnboundedSender<Outcome>,
) {
    let token = job.token();
    let stop = Stop::new();
    let notes = Arc::new(RunNotes::new(token, try_of(&job), rt.clock.clone()));
    if let Ok(mut r) = running.lock() {
        r.insert(
            token,
            Run {
                stop: stop.clone(),
                notes: notes.clone(),
            },
        );
    }
    let rt = rt.clone();
    let tx = done_tx.clone();
    // Round Robin: a preemptible body stops at the end of this slice.
    let slice = (settings.policy == PolicyKind::RoundRobin).then(|| settings.quantum());
    // First run only: `slices` counts the runs before this one.
    if job.slices == 0 && job.retry_count == 0 {
        let waited = (rt.clock.now() - job.created_at)
            .to_std()
            .unwrap_or_default();
        metrics()
            .wait_seconds
            .with_label_values(&[settings.policy.as_str()])
            .observe(waited.as_secs_f64());
    }
    let span = tracing::info_span!("job", job_id = %job.id, job_type = %job.job_type, attempt = job.attempt);
    let attempt = Attempt::of(&job);
    let Some(handler) = rt.registry.get(&job.job_type) else {
        // No handler here: the run fails at once, as a body would, with no thread or task.
        let outcome = Outcome::Failed {
            token: attempt.token,
            error: format!(
                "unknown job type `{}`; this worker knows {:?}; run a worker built with it",
                job.job_type,
                rt.registry.names()
            ),
            retry_count: job.retry_count,
        };
        let _ = tx.send(outcome);
        return;
    };
    // The run's timeout: the job's own, else its type's default. When it expires the stop
    // flag is set; the body stops and the run fails as timed out.
    let timeout = Timeout {
        after: job
            .timeout_seconds
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .or(Some(handler.default_timeout())),
        fired: Arc::new(AtomicBool::new(false)),
    };
    if !handler.blocking() {
        // A body that does not block runs as a task here: no thread hand-off at all.
        tokio::spawn(
            async move {
                // A panic anywhere around the body (not only inside it) still frees the slot
                // and records a failed attempt.
                let signals = Run {
                    stop,
                    notes: notes.clone(),
                };
                let run = AssertUnwindSafe(execute_async(
                    &rt, handler, job, &attempt, slice, signals, &timeout,
                ))
                .catch_unwind()
                .await;
                let outcome = run.unwrap_or_else(|panic| {
                    let message = format!("job run panicked: {}", panic_message(panic.as_ref()));
                    failure(&rt, &attempt, message, true)
                });
                last_notes(&rt, &notes).await;
                let _ = tx.send(outcome);
            }
            .instrument(span),
        );
        return;
    }
    let watchdog = timeout.after.map(|limit| {
        let (stop, timed_out) = (stop.clone(), timeout.fired.clone());
        tokio::spawn(async move {
            tokio::time::sleep(limit).await;
            timed_out.store(true, Ordering::SeqCst);
            stop.set();
        })
    });
    let handle = tokio::runtime::Handle::current();
    // The whole run, outcome included, happens on one blocking thread: no async task per job,
    // so a job costs one thread hand-off each way.
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        // A panic anywhere around the body (not only inside it) still frees the slot and
        // records a failed attempt.
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let signals = Run {
                stop,
                notes: notes.clone(),
            };
            execute(&rt, &*handler, job, &attempt, slice, signals, &timeout)
        }));
        let outcome = run.unwrap_or_else(|panic| {
            let message = format!("job run panicked: {}", panic_message(panic.as_ref()));
            failure(&rt, &attempt, message, true)
        });
        if let Some(w) = watchdog {
            w.abort();
        }
        // Most runs report nothing: no trip into the runtime for them.
        if notes.dirty() {
            handle.block_on(last_notes(&rt, &notes));
        }
        let _ = tx.send(outcome);
    });
}

/// What deciding a failed run needs to know about its job.
struct Attempt {
    token: Token,
    job_type: String,
    retry_count: i32,
    max_retries: i32,
    backoff: Option<jobsched_core::RetryBackoff>,
}

impl Attempt {
    fn of(job: &StartedJob) -> Attempt {
        Attempt {
            token: job.token(),
            job_type: job.job_type.clone(),
            retry_count: job.retry_count,
            max_retries: job.max_retries,
            backoff: job.retry_backoff,
        }
    }
}

/// A run's time limit and whether it expired (then the stop flag was set too).
struct Timeout {
    after: Option<Duration>,
    fired: Arc<AtomicBool>,
}

/// The text of a panic payload.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// A failed run's outcome: a retry after backoff while the budget lasts and the error is
/// retryable, else FAILED.
fn failure(rt: &Runtime, job: &Attempt, error: String, retryable: bool) -> Outcome {
    let m = metrics();
    let token = job.token;
    match AfterFailure::decide(job.retry_count, job.max_retries, retryable) {
        AfterFailure::Retry { retry } => {
            let backoff = job.backoff.map_or(rt.config.backoff, |b| b.backoff());
            let delay = backoff.delay(retry, &mut rand::rng());
            tracing::info!(%error, retry, ?delay, "job failed; will retry");
            m.retries.with_label_values(&[job.job_type.as_str()]).inc();
            let run_at = after(rt.clock.now(), delay);
            Outcome::Retry {
                token,
                error,
                run_at,
            }
        }
        verdict => {
            tracing::warn!(%error, retryable, "job failed for good");
            let outcome = if verdict == AfterFailure::DeadLetter {
                "dead_lettered"
            } else {
                "failed"
            };
            m.jobs_finished
                .with_label_values(&[job.job_type.as_str(), outcome])
                .inc();
            Outcome::Failed {
                token,
                error,
                retry_count: job.retry_count,
            }
        }
    }
}

/// The context a run of `job` gets. `slice`: the Round Robin quantum, if that policy is
/// active (a preemptible body stops at its end).
fn context(
    rt: &Runtime,
    handler: &dyn JobHandler,
    job: &StartedJob,
    slice: Option<Duration>,
    run: Run,
) -> JobContext {
    let stop = run.stop;
    JobContext {
        job_id: job.id,
        attempt: try_of(job),
        notes: run.notes,
        data_dir: rt.data_dir.clone(),
        checkpoint: job.checkpoint.clone(),
        deadline: slice
            .filter(|_| handler.preemptible())
            .and_then(|q| Instant::now().checked_add(q)),
        stop,
    }
}

/// Run one job body on the calling blocking thread and turn its result into an outcome.
fn execute(
    rt: &Runtime,
    handler: &dyn JobHandler,
    job: StartedJob,
    attempt: &Attempt,
    slice: Option<Duration>,
    run: Run,
    timeout: &Timeout,
) -> Outcome {
    let ctx = context(rt, handler, &job, slice, run);
    let began = Instant::now();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| handler.run(&job.payload, &ctx)));
    conclude(rt, &job.job_type, attempt, result, began, timeout)
}

/// Run one job body as a future (a handler that does not block) and turn its result into an
/// outcome. The timeout is a timer raced against the body in this same task.
async fn execute_async(
    rt: &Runtime,
    handler: Arc<dyn JobHandler>,
    job: StartedJob,
    attempt: &Attempt,
    slice: Option<Duration>,
    run: Run,
    timeout: &Timeout,
) -> Outcome {
    let stop = run.stop.clone();
    let ctx = context(rt, &*handler, &job, slice, run);
    let began = Instant::now();
    let body = AssertUnwindSafe(handler.run_async(&job.payload, &ctx)).catch_unwind();
    tokio::pin!(body);
    let result = match timeout.after {
        Some(limit) => tokio::select! {
            r = &mut body => r,
            () = tokio::time::sleep(limit) => {
                timeout.fired.store(true, Ordering::SeqCst);
                stop.set();
                body.await
            }
        },
        None => body.await,
    };
    conclude(rt, &job.job_type, attempt, result, began, timeout)
}

/// Turn a body's result (or its panic) into the run's outcome.
fn conclude(
    rt: &Runtime,
    job_type: &str,
    attempt: &Attempt,
    result: std::thread::Result<Result<RunOutput, jobsched_jobs::JobError>>,
    began: Instant,
    timeout: &Timeout,
) -> Outcome {
    let token = attempt.token;
    let m = metrics();
    m.run_seconds
        .with_label_values(&[job_type])
        .observe(began.elapsed().as_secs_f64());
    let finished = matches!(result, Ok(Ok(RunOutput::Done(_))));
    // A run that finished as the timeout fired keeps its result.
    if timeout.fired.load(Ordering::SeqCst) && !finished {
        let limit = timeout.after.unwrap_or_default().as_secs_f64();
        m.job_timeouts.with_label_values(&[job_type]).inc();
        return failure(
            rt,
            attempt,
            format!("timed out after {limit} s (the job's timeout_seconds, or its type's default)"),
            true,
        );
    }
    let (error, retryable) = match result {
        Ok(Ok(RunOutput::Done(result))) => {
            tracing::debug!("job completed");
            m.jobs_finished
                .with_label_values(&[job_type, "completed"])
                .inc();
            return Outcome::Completed { token, result };
        }
        Ok(Ok(RunOutput::Preempted { checkpoint })) => {
            tracing::debug!("job preempted at the end of its slice");
            m.rr_preemptions.inc();
            return Outcome::Requeue {
                token,
                checkpoint: Some(checkpoint),
            };
        }
        // Stopped on request (shutdown, or its start was refused): handed back without
        // burning a retry, like a preemptible job's checkpoint.
        Ok(Err(jobsched_jobs::JobError::Stopped)) => {
            tracing::debug!("job stopped on request; handing it back");
            return Outcome::Requeue {
                token,
                checkpoint: None,
            };
        }
        Ok(Err(e)) => (e.to_string(), e.is_retryable()),
        Err(panic) => (
            format!("job body panicked: {}", panic_message(panic.as_ref())),
            true,
        ),
    };
    failure(rt, attempt, error, retryable)
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

/// The try a run of `job` is: 1, then one more per retry spent.
fn try_of(job: &StartedJob) -> u32 {
    u32::try_from(job.retry_count)
        .unwrap_or(0)
        .saturating_add(1)
}

/// Write a run's last progress and lines before its outcome (bounded: a store that does not
/// answer costs the outcome at most [`notes::FINAL_FLUSH_TIMEOUT`]).
async fn last_notes(rt: &Runtime, notes: &RunNotes) {
    if notes.dirty()
        && tokio::time::timeout(notes::FINAL_FLUSH_TIMEOUT, notes.flush(rt.store.as_ref()))
            .await
            .is_err()
    {
        tracing::warn!("the run's last progress and log lines were not written in time; dropped");
    }
}

/// Write running jobs' new progress and log lines, every [`notes::FLUSH_EVERY`].
async fn note_writer(rt: Runtime, running: RunningSet, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(notes::FLUSH_EVERY) => {}
        }
        let dirty: Vec<Arc<RunNotes>> = running
            .lock()
            .map(|r| {
                r.values()
                    .filter(|run| run.notes.dirty())
                    .map(|run| run.notes.clone())
                    .collect()
            })
            .unwrap_or_default();
        for n in dirty {
            n.flush(rt.store.as_ref()).await;
        }
    }
}

/// Renew the leases of running jobs every third of the lease TTL.
async fn renewer(rt: Runtime, running: RunningSet, stop: CancellationToken) {
    let me = rt.config.worker_id.clone();
    let every = rt.config.lease_ttl / 3;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let tokens: Vec<Token> = running
            .lock()
            .map(|r| r.keys().copied().collect())
            .unwrap_or_default();
        if tokens.is_empty() {
            continue;
        }
        let until = after(rt.clock.now(), rt.config.lease_ttl);
        match rt.store.renew(&tokens, &me, until).await {
            Ok(held) if held.len() < tokens.len() => {
                // A job whose outcome was recorded meanwhile has left the running set; only
                // the ones still running really lost their lease (the rescuer took them).
                // The others are asked to stop: another worker may run them now.
                let lost = running
                    .lock()
                    .map(|r| {
                        let mut lost = 0;
                        for t in tokens.iter().filter(|t| !held.contains(t)) {
                            if let Some(run) = r.get(t) {
                                run.stop.set();
                                lost += 1;
                            }
                        }
                        lost
                    })
                    .unwrap_or(0);
                if lost > 0 {
                    tracing::warn!(
                        lost,
                        "lost the lease of some running jobs; their outcomes will be ignored"
                    );
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
        }
    }
}
