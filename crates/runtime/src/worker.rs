//! The worker pool: execution slots fed by the transport.
//!
//! One control task owns the slot count, so taking work and reporting demand never race: it
//! takes up to `idle slots + prefetch − buffered` tokens (the transport records the remaining
//! demand atomically) and starts each job's body on a blocking thread as soon as a slot is free.
//! A token normally comes with its job's data as the engine marked it SCHEDULED; data younger
//! than [`REVALIDATE_AFTER`] is used as it came. Older or missing data (a token handed back by a
//! reaped worker, a flushed Redis) is read from the store instead: only jobs still SCHEDULED
//! with the token's attempt, so cancelled or stale tokens are dropped. With `prefetch` > 0 the
//! worker holds up to that many dispatched jobs ahead of a free slot, so a slot that frees
//! starts its next job without a round trip through the engine (the policy's in-flight window
//! grows by as much). A buffered job whose data is older than [`REVALIDATE_AFTER`] is read again
//! before it starts, so one cancelled or taken back while it waited does not run.
//!
//! A body does not wait for its SCHEDULED → RUNNING write: a recorder task writes starts and
//! outcomes behind the bodies, in batches. It holds a start back for [`START_WRITE_DELAY`]; if
//! the run's outcome arrives first, one conditional UPDATE records both (SCHEDULED → RUNNING →
//! outcome), so a short job costs two writes in all instead of three. A start the store refuses
//! (the job was cancelled, or its dispatch lease expired and the rescuer took it back) asks the
//! body to stop, and its outcome is not recorded. A slot is free the moment its body returns.
//! A renewer task extends the leases of running jobs whose start is recorded.

use crate::Runtime;
use crate::events::EventPump;
use chrono::{DateTime, Utc};
use futures::FutureExt;
use jobsched_core::policy::{PolicyKind, PolicySettings};
use jobsched_core::ports::{Event, Finished, Outcome, Token};
use jobsched_core::{JobId, StartedJob};
use jobsched_jobs::{JobContext, JobHandler, RunOutput};
use jobsched_metrics::metrics;
use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// A job body this worker has begun and whose outcome is not recorded yet.
struct Run {
    /// Set to ask the body to stop (shutdown, or the store refused its start).
    stop: Arc<AtomicBool>,
    /// Its SCHEDULED → RUNNING is written, so it holds a lease to renew.
    start_recorded: bool,
}

/// Jobs this worker is running, by token.
type RunningSet = Arc<Mutex<HashMap<Token, Run>>>;

/// What the recorder writes: a body began, or a run ended.
enum Record {
    Start(Token, DateTime<Utc>),
    Done(Outcome),
}

/// Job data older than this (since the engine marked the job, or since the worker read it) is
/// read again before the body starts. It bounds how long after a cancel a body may still begin.
pub const REVALIDATE_AFTER: Duration = Duration::from_millis(50);

/// Starts not written yet, in arrival order: token, the body's start, when it reached the
/// recorder.
type Unwritten = Vec<(Token, DateTime<Utc>, Instant)>;

/// How long the recorder holds a start back, hoping to write it together with the outcome.
/// The job shows SCHEDULED that much longer; its `started_at` is the body's real start.
pub const START_WRITE_DELAY: Duration = Duration::from_millis(2);

fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::seconds(30))
}

/// `now + d`, saturating at `now` instead of panicking on overflow.
fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now.checked_add_signed(chrono_dur(d)).unwrap_or(now)
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
    let (outcome_tx, outcome_rx) = mpsc::unbounded_channel::<Record>();
    // A slot is free as soon as its job body returns; the outcome is written behind it.
    let (freed_tx, mut freed_rx) = mpsc::unbounded_channel::<u32>();
    // Signalled whenever the finisher has recorded outcomes (shutdown waits on it).
    let recorded = Arc::new(Notify::new());
    let finisher = tokio::spawn(recorder(
        rt.clone(),
        outcome_rx,
        recorded.clone(),
        running.clone(),
    ));
    let renew_stop = CancellationToken::new();
    let renewer = tokio::spawn(renewer(rt.clone(), running.clone(), renew_stop.clone()));
    let mut ev = events.subscribe();
    let mut settings = rt
        .transport
        .policy()
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let prefetch = rt.config.prefetch;
    // Taken jobs not started yet (still SCHEDULED), in policy order: up to `prefetch` ahead
    // of the free slots, plus any held back by the unwritten-outcome cap below.
    let mut buffer: VecDeque<(StartedJob, Instant)> = VecDeque::new();
    // What this worker asks the engine for: free slots plus the prefetch headroom.
    let demand = |idle: u32, buffered: usize| (idle + prefetch).saturating_sub(buffered as u32);
    let mut idle = total;
    let heartbeat_every = rt.config.worker_ttl / 3;
    let mut heartbeat = tokio::time::interval(heartbeat_every);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(worker = %me, slots = total, prefetch, "worker started");
    metrics().worker_slots_total.set(i64::from(total));
    metrics().worker_slots_busy.set(0);

    // ---- normal operation ----
    // Taking and reading new work runs beside the loop, so a slot that frees while a refill
    // is on its way starts a buffered job at once. `retake`: something happened since the
    // last take came back empty (a slot freed, work was announced, a timer fired).
    let mut refill: Option<Refill> = None;
    let mut retake = true;
    while !shutdown.is_cancelled() {
        metrics().worker_slots_busy.set(i64::from(total - idle));
        // A slot frees before its outcome is written. Should the recorder fall behind (the
        // store refusing outcomes), stop starting jobs once `total` outcomes wait unwritten, so
        // the work whose result is not yet recorded stays bounded.
        let unrecorded = running.lock().map(|r| r.len()).unwrap_or(0);
        let room = (2 * total as usize).saturating_sub(unrecorded);
        let n = (idle as usize).min(buffer.len()).min(room);
        if n > 0 {
            let mut batch: Vec<(StartedJob, Instant)> = buffer.drain(..n).collect();
            // A job that waited in the buffer may have been cancelled or taken back meanwhile:
            // read those again before their bodies start.
            if batch
                .iter()
                .any(|(_, read)| read.elapsed() > REVALIDATE_AFTER)
            {
                batch = revalidate(&rt, batch, &me).await;
            }
            for (job, _) in batch {
                spawn_job(&rt, job, &settings, &running, &outcome_tx, &freed_tx);
                idle -= 1;
            }
        }
        if refill.is_none() && retake {
            let want = demand(idle, buffer.len());
            if want > 0 {
                retake = false;
                refill = Some(Box::pin(refill_jobs(rt.clone(), me.clone(), want)));
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            got = async { refill.as_mut().expect("branch enabled only with a refill").await },
                if refill.is_some() => {
                refill = None;
                match got {
                    // There may be more: take again.
                    Some(jobs) if !jobs.is_empty() => {
                        // The same token can come back to a live worker (reaped after a missed
                        // heartbeat): never run or buffer one twice.
                        let held: std::collections::HashSet<Token> = running
                            .lock()
                            .map(|r| r.keys().copied().collect())
                            .unwrap_or_default();
                        for (job, read) in jobs {
                            let token = job.token();
                            if held.contains(&token) || buffer.iter().any(|(b, _)| b.token() == token) {
                                tracing::debug!(job_id = %token.id, "token taken twice; ignoring the copy");
                                continue;
                            }
                            buffer.push_back((job, read));
                        }
                        retake = true;
                    }
                    Some(_) => {}
                    None => retake = true,
                }
            }
            Some(n) = freed_rx.recv() => {
                idle += n;
                while let Ok(n) = freed_rx.try_recv() { idle += n; }
                retake = true;
            }
            // Outcomes were written: room to start again if the cap above was reached.
            _ = recorded.notified() => {}
            e = ev.recv() => {
                if matches!(e, Ok(Event::PolicyChanged) | Err(broadcast::error::RecvError::Lagged(_)))
                    && let Ok(Some(s)) = rt.transport.policy().await
                {
                    settings = s;
                }
                // Only news of work is a reason to take; submissions and free slots are the
                // engine's business (a take on each would be a wasted round trip).
                retake |= !matches!(
                    e,
                    Ok(Event::Submitted(_) | Event::SlotsFree | Event::PolicyChanged)
                );
            }
            _ = heartbeat.tick() => {
                let want = demand(idle, buffer.len());
                if let Err(e) = rt.transport.report_slots(&me, want, total, rt.config.worker_ttl).await {
                    tracing::warn!(error = %e, "heartbeat to transport failed");
                }
                retake = true;
            }
            _ = tokio::time::sleep(rt.config.poll_interval) => retake = true,
        }
    }
    // A refill on its way has taken tokens: keep its jobs, so they are handed back below.
    if let Some(got) = refill.take()
        && let Some(jobs) = got.await
    {
        buffer.extend(jobs);
    }

    // ---- graceful shutdown ----
    tracing::info!(worker = %me, "shutting down: no new work; waiting for in-flight jobs");
    let _ = rt
        .transport
        .report_slots(&me, 0, total, rt.config.worker_ttl)
        .await;
    if !buffer.is_empty() {
        // Never started: back to the front of the ready queue for another worker.
        let tokens: Vec<Token> = buffer.drain(..).map(|(j, _)| j.token()).collect();
        if let Err(e) = rt.transport.release(&me, &tokens).await {
            tracing::warn!(error = %e, "cannot hand back prefetched jobs; they are re-dispatched when their dispatch lease expires");
        }
    }
    let deadline = Instant::now() + rt.config.shutdown_grace;
    let busy = |running: &RunningSet| running.lock().map(|r| r.len()).unwrap_or(0);
    while busy(&running) > 0 && Instant::now() < deadline {
        tokio::select! {
            _ = recorded.notified() => {}
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
    }
    if busy(&running) > 0 {
        // Ask preemptible jobs to stop; they come back as Requeue outcomes on their own.
        let flags: Vec<Arc<AtomicBool>> = running
            .lock()
            .map(|r| r.values().map(|run| run.stop.clone()).collect())
            .unwrap_or_default();
        for f in flags {
            f.store(true, Ordering::SeqCst);
        }
        let soft = Instant::now() + Duration::from_secs(1);
        while busy(&running) > 0 && Instant::now() < soft {
            tokio::select! {
                _ = recorded.notified() => {}
                _ = tokio::time::sleep_until(soft.into()) => {}
            }
        }
        // Hand back whatever still runs, without burning a retry.
        let left: Vec<Token> = running
            .lock()
            .map(|r| r.keys().copied().collect())
            .unwrap_or_default();
        if !left.is_empty() {
            tracing::warn!(
                count = left.len(),
                "handing back jobs that did not finish within the grace period"
            );
            for token in left {
                let _ = outcome_tx.send(Record::Done(Outcome::Requeue {
                    token,
                    checkpoint: None,
                }));
            }
        }
    }
    drop(outcome_tx);
    // Job tasks still hold senders; the finisher ends once they are all done or abandoned.
    let _ = tokio::time::timeout(Duration::from_secs(5), finisher).await;
    renew_stop.cancel();
    let _ = renewer.await;
    let _ = rt
        .transport
        .report_slots(&me, 0, 0, Duration::from_millis(1))
        .await;
    tracing::info!(worker = %me, "worker stopped");
    Ok(())
}

/// Keep the jobs of `batch` that are still SCHEDULED with their attempt (re-read those read
/// longer than [`REVALIDATE_AFTER`] ago); acknowledge and drop the rest. If the store cannot be
/// read, all are kept: each start write checks again.
async fn revalidate(
    rt: &Runtime,
    batch: Vec<(StartedJob, Instant)>,
    me: &str,
) -> Vec<(StartedJob, Instant)> {
    let stale: Vec<Token> = batch
        .iter()
        .filter(|(_, read)| read.elapsed() > REVALIDATE_AFTER)
        .map(|(j, _)| j.token())
        .collect();
    let valid: std::collections::HashSet<Token> = match rt.store.fetch(&stale).await {
        Ok(jobs) => jobs.iter().map(StartedJob::token).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "re-reading buffered jobs failed; starting them as read");
            return batch;
        }
    };
    let (keep, dropped): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .partition(|(j, _)| !stale.contains(&j.token()) || valid.contains(&j.token()));
    if !dropped.is_empty() {
        let tokens: Vec<Token> = dropped.iter().map(|(j, _)| j.token()).collect();
        tracing::debug!(
            count = tokens.len(),
            "buffered jobs were cancelled or taken back"
        );
        if let Err(e) = rt.transport.ack(me, &tokens).await {
            tracing::warn!(error = %e, "ack of dropped tokens failed");
        }
    }
    keep
}

/// Jobs taken, each with the instant its data was current (for [`REVALIDATE_AFTER`]).
type Taken = Vec<(StartedJob, Instant)>;

/// A take-and-read of new work in progress; `None` when taking failed (after a pause).
type Refill = std::pin::Pin<Box<dyn std::future::Future<Output = Option<Taken>> + Send>>;

/// Take up to `want` tokens (the transport records the demand left over and, if it changed,
/// tells the engine). A job whose data came with its token, dispatched less than
/// [`REVALIDATE_AFTER`] ago, is used as it came; the others are read from the store.
async fn refill_jobs(rt: Runtime, me: String, want: u32) -> Option<Taken> {
    let taken = match rt.transport.take_dispatched(&me, want).await {
        Ok(taken) => taken,
        Err(e) => {
            tracing::warn!(error = %e, "taking work failed; retrying");
            tokio::time::sleep(Duration::from_millis(200)).await;
            return None;
        }
    };
    let (now, instant) = (rt.clock.now(), Instant::now());
    let mut order = Vec::with_capacity(taken.len());
    let mut fresh: HashMap<Token, (StartedJob, Instant)> = HashMap::new();
    let mut unread = Vec::new();
    for (token, kept) in taken {
        order.push(token);
        let usable = kept.and_then(|d| {
            // A clock behind the engine's gives a negative age: counted as none.
            let age = (now - d.dispatched_at).to_std().unwrap_or_default();
            (age <= REVALIDATE_AFTER).then(|| (d.job, instant.checked_sub(age).unwrap_or(instant)))
        });
        match usable {
            Some(job) => {
                fresh.insert(token, job);
            }
            None => unread.push(token),
        }
    }
    let mut read: HashMap<Token, StartedJob> = fetch_jobs(&rt, &unread, &me)
        .await
        .into_iter()
        .map(|j| (j.token(), j))
        .collect();
    let read_at = Instant::now();
    // In the order taken (the policy's).
    Some(
        order
            .into_iter()
            .filter_map(|token| {
                fresh
                    .remove(&token)
                    .or_else(|| read.remove(&token).map(|j| (j, read_at)))
            })
            .collect(),
    )
}

/// Read the jobs behind freshly taken tokens; tokens whose job is no longer SCHEDULED with that
/// attempt (cancelled, or rescued and re-dispatched) are acknowledged and dropped.
async fn fetch_jobs(rt: &Runtime, tokens: &[Token], me: &str) -> Vec<StartedJob> {
    if tokens.is_empty() {
        return Vec::new();
    }
    let mut delay = Duration::from_millis(50);
    let jobs = loop {
        match rt.store.fetch(tokens).await {
            Ok(jobs) => break jobs,
            Err(e) => {
                // After a few tries the tokens are dropped (acknowledged below) and the jobs
                // stay SCHEDULED until the rescuer re-dispatches them when the dispatch lease
                // expires.
                tracing::warn!(error = %e, "reading taken jobs failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
                if delay >= Duration::from_secs(2) {
                    break Vec::new();
                }
            }
        }
    };
    let dropped: Vec<Token> = tokens
        .iter()
        .filter(|t| !jobs.iter().any(|j| j.id == t.id && j.attempt == t.attempt))
        .copied()
        .collect();
    if !dropped.is_empty() {
        tracing::debug!(count = dropped.len(), "dropped stale or cancelled tokens");
        if let Err(e) = rt.transport.ack(me, &dropped).await {
            tracing::warn!(error = %e, "ack of dropped tokens failed");
        }
    }
    jobs
}

fn spawn_job(
    rt: &Runtime,
    job: StartedJob,
    settings: &PolicySettings,
    running: &RunningSet,
    outcome_tx: &mpsc::UnboundedSender<Record>,
    freed_tx: &mpsc::UnboundedSender<u32>,
) {
    let token = job.token();
    let stop = Arc::new(AtomicBool::new(false));
    if let Ok(mut r) = running.lock() {
        r.insert(
            token,
            Run {
                stop: stop.clone(),
                start_recorded: false,
            },
        );
    }
    // The recorder sees the start before the outcome: one channel, sent in this order.
    let _ = outcome_tx.send(Record::Start(token, rt.clock.now()));
    let rt = rt.clone();
    let tx = outcome_tx.clone();
    let freed = freed_tx.clone();
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
        let _ = tx.send(Record::Done(outcome));
        let _ = freed.send(1);
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
                let run = AssertUnwindSafe(execute_async(
                    &rt, handler, job, &attempt, slice, stop, &timeout,
                ))
                .catch_unwind()
                .await;
                let outcome = run.unwrap_or_else(|panic| {
                    let message = format!("job run panicked: {}", panic_message(panic.as_ref()));
                    failure(&rt, &attempt, message, true)
                });
                let _ = tx.send(Record::Done(outcome));
                let _ = freed.send(1);
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
            stop.store(true, Ordering::SeqCst);
        })
    });
    // The whole run, outcome included, happens on one blocking thread: no async task per job,
    // so a job costs one thread hand-off each way.
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        // A panic anywhere around the body (not only inside it) still frees the slot and
        // records a failed attempt.
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
            execute(&rt, &*handler, job, &attempt, slice, stop, &timeout)
        }));
        let outcome = run.unwrap_or_else(|panic| {
            let message = format!("job run panicked: {}", panic_message(panic.as_ref()));
            failure(&rt, &attempt, message, true)
        });
        if let Some(w) = watchdog {
            w.abort();
        }
        let _ = tx.send(Record::Done(outcome));
        let _ = freed.send(1);
    });
}

/// What deciding a failed run needs to know about its job.
struct Attempt {
    token: Token,
    job_type: String,
    retry_count: i32,
    max_retries: i32,
}

impl Attempt {
    fn of(job: &StartedJob) -> Attempt {
        Attempt {
            token: job.token(),
            job_type: job.job_type.clone(),
            retry_count: job.retry_count,
            max_retries: job.max_retries,
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
    if retryable && job.retry_count < job.max_retries {
        let retry = u32::try_from(job.retry_count.saturating_add(1)).unwrap_or(1);
        let delay = rt.config.backoff.delay(retry, &mut rand::rng());
        tracing::info!(%error, retry, ?delay, "job failed; will retry");
        m.retries.with_label_values(&[job.job_type.as_str()]).inc();
        let now = rt.clock.now();
        let run_at = after(now, delay);
        Outcome::Retry {
            token,
            error,
            run_at,
        }
    } else {
        tracing::warn!(%error, retryable, "job failed for good");
        let outcome = if retryable { "dead_lettered" } else { "failed" };
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

/// The context a run of `job` gets. `slice`: the Round Robin quantum, if that policy is
/// active (a preemptible body stops at its end).
fn context(
    rt: &Runtime,
    handler: &dyn JobHandler,
    job: &StartedJob,
    slice: Option<Duration>,
    stop: Arc<AtomicBool>,
) -> JobContext {
    JobContext {
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
    stop: Arc<AtomicBool>,
    timeout: &Timeout,
) -> Outcome {
    let ctx = context(rt, handler, &job, slice, stop);
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
    stop: Arc<AtomicBool>,
    timeout: &Timeout,
) -> Outcome {
    let ctx = context(rt, &*handler, &job, slice, stop.clone());
    let began = Instant::now();
    let body = AssertUnwindSafe(handler.run_async(&job.payload, &ctx)).catch_unwind();
    tokio::pin!(body);
    let result = match timeout.after {
        Some(limit) => tokio::select! {
            r = &mut body => r,
            () = tokio::time::sleep(limit) => {
                timeout.fired.store(true, Ordering::SeqCst);
                stop.store(true, Ordering::SeqCst);
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

/// Writes starts and outcomes in batches behind the bodies, updates the dead-letter mirror and
/// acks tokens. Outcomes are written as soon as they arrive; a start waits up to
/// [`START_WRITE_DELAY`] for its outcome so that both go in one UPDATE.
async fn recorder(
    rt: Runtime,
    mut rx: mpsc::UnboundedReceiver<Record>,
    recorded: Arc<Notify>,
    running: RunningSet,
) {
    let me = rt.config.worker_id.clone();
    let mut starts: Unwritten = Vec::new();
    let mut done: Vec<Outcome> = Vec::new();
    // No start write before this instant (set after the store refused one).
    let mut backoff_until = Instant::now();
    let mut backoff = Duration::from_millis(50);
    let mut open = true;
    while open || !starts.is_empty() {
        let due_at = starts
            .first()
            .map(|s| (s.2 + START_WRITE_DELAY).max(backoff_until));
        if open {
            let message = match due_at {
                None => Some(rx.recv().await),
                Some(at) => tokio::select! {
                    m = rx.recv() => Some(m),
                    _ = tokio::time::sleep_until(at.into()) => None,
                },
            };
            match message {
                Some(Some(r)) => accept(r, &mut starts, &mut done),
                Some(None) => open = false,
                None => {}
            }
            while done.len() < rt.config.batch_size {
                match rx.try_recv() {
                    Ok(r) => accept(r, &mut starts, &mut done),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
        } else {
            // Closing with starts left to write: wait out a backoff instead of spinning.
            tokio::time::sleep_until(backoff_until.into()).await;
        }
        if !done.is_empty() {
            let batch = std::mem::take(&mut done);
            record_outcomes(&rt, &me, batch, &mut starts, &recorded, &running).await;
        }
        let now = Instant::now();
        let due = starts.first().is_some_and(|s| {
            now >= backoff_until
                && (!open || starts.len() >= rt.config.batch_size || now >= s.2 + START_WRITE_DELAY)
        });
        if due {
            let batch: Vec<(Token, DateTime<Utc>)> = starts.iter().map(|s| (s.0, s.1)).collect();
            let until = after(rt.clock.now(), rt.config.lease_ttl);
            match rt.store.record_starts(&batch, &me, until).await {
                Ok(applied) => {
                    starts.clear();
                    backoff = Duration::from_millis(50);
                    if let Ok(mut r) = running.lock() {
                        for (token, _) in &batch {
                            let Some(run) = r.get_mut(token) else {
                                continue;
                            };
                            if applied.contains(token) {
                                run.start_recorded = true;
                            } else {
                                // Cancelled or taken back meanwhile: its outcome will not be
                                // recorded, so ask the body to stop.
                                tracing::debug!(job_id = %token.id, "start refused; stopping the run");
                                run.stop.store(true, Ordering::SeqCst);
                            }
                        }
                    }
                }
                Err(e) => {
                    // Kept for the next try (or for their outcomes to carry them); if the store
                    // stays down, the rescuer takes the jobs back when the dispatch lease expires.
                    tracing::warn!(error = %e, "recording job starts failed; retrying in {backoff:?}");
                    backoff_until = Instant::now() + backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

fn accept(r: Record, starts: &mut Unwritten, done: &mut Vec<Outcome>) {
    match r {
        Record::Start(token, at) => starts.push((token, at, Instant::now())),
        Record::Done(o) => done.push(o),
    }
}

/// Write a batch of outcomes (each carrying its start if that is still unwritten), then mirror
/// dead letters, forget the runs and ack their tokens.
async fn record_outcomes(
    rt: &Runtime,
    me: &str,
    mut batch: Vec<Outcome>,
    starts: &mut Unwritten,
    recorded: &Notify,
    running: &RunningSet,
) {
    // One outcome per token: the first (a later shutdown hand-back of the same run is moot).
    let mut seen = std::collections::HashSet::new();
    batch.retain(|o| seen.insert(o.token()));
    let mut unwritten: HashMap<Token, DateTime<Utc>> = HashMap::new();
    starts.retain(|(token, at, _)| {
        if seen.contains(token) {
            unwritten.insert(*token, *at);
            false
        } else {
            true
        }
    });
    let runs: Vec<Finished> = batch
        .into_iter()
        .map(|outcome| Finished {
            started_at: unwritten.get(&outcome.token()).copied(),
            outcome,
        })
        .collect();
    let applied = write_outcomes(rt, &runs, me).await;
    let failed: Vec<JobId> = runs
        .iter()
        .filter_map(|f| match &f.outcome {
            Outcome::Failed { token, .. } if applied.contains(token) => Some(token.id),
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        mirror_dead_letters(rt, &failed).await;
    }
    let tokens: Vec<Token> = runs.iter().map(|f| f.outcome.token()).collect();
    // Recorded: stop renewing these leases before anything else.
    if let Ok(mut r) = running.lock() {
        for t in &tokens {
            r.remove(t);
        }
    }
    recorded.notify_one();
    if let Err(e) = rt.transport.ack(me, &tokens).await {
        tracing::warn!(error = %e, "ack failed; entries are cleaned up when this worker is reaped");
    }
}

async fn write_outcomes(rt: &Runtime, batch: &[Finished], me: &str) -> Vec<Token> {
    let mut delay = Duration::from_millis(50);
    loop {
        match rt.store.finish(batch, me, rt.clock.now()).await {
            Ok(applied) => {
                if applied.len() < batch.len() {
                    tracing::info!(
                        stale = batch.len() - applied.len(),
                        "some outcomes were stale (lease lost or job cancelled) and were not recorded"
                    );
                }
                return applied;
            }
            Err(e) => {
                // Keep retrying: the outcome is only lost if the lease expires first, and then
                // the job is retried by the rescuer (at-least-once execution).
                tracing::warn!(error = %e, "recording outcomes failed; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn mirror_dead_letters(rt: &Runtime, ids: &[JobId]) {
    let mut entries = Vec::new();
    for id in ids {
        if let Ok(Some(job)) = rt.store.get(*id).await {
            entries.push(jobsched_core::DeadLetter {
                job_id: job.id,
                job_type: job.job_type,
                name: job.name,
                error: job.error_message,
                retry_count: job.retry_count,
                failed_at: job.completed_at,
            });
        }
    }
    if let Err(e) = rt.transport.push_dead_letters(&entries).await {
        tracing::warn!(error = %e, "cannot update the dead-letter mirror; the leader rebuilds it");
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
            .map(|r| {
                r.iter()
                    .filter(|(_, run)| run.start_recorded)
                    .map(|(t, _)| *t)
                    .collect()
            })
            .unwrap_or_default();
        if tokens.is_empty() {
            continue;
        }
        let until = after(rt.clock.now(), rt.config.lease_ttl);
        match rt.store.renew(&tokens, &me, until).await {
            Ok(held) if held.len() < tokens.len() => {
                // A job whose outcome was recorded meanwhile has left the running set; only
                // the ones still running really lost their lease (the rescuer took them).
                let lost = running
                    .lock()
                    .map(|r| {
                        tokens
                            .iter()
                            .filter(|t| !held.contains(t) && r.contains_key(t))
                            .count()
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
