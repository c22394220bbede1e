//! The slots' bodies: a claimed job run as a task (or on a blocking thread) under its time
//! limit, and its result (or panic) turned into the run's outcome.

use super::*;

pub(super) fn spawn_job(
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
                let run = AssertUnwindSafe(async {
                    // Inside the guard: building the context asks the type whether it is
                    // preemptible, which may panic too.
                    let ctx = context(&rt, &*handler, &job, slice, signals);
                    execute_async(&rt, handler, job, ctx, &attempt, &timeout).await
                })
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
            let ctx = context(&rt, &*handler, &job, slice, signals);
            execute(&rt, &*handler, job, &ctx, &attempt, &timeout)
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
pub(super) struct Attempt {
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
pub(super) struct Timeout {
    after: Option<Duration>,
    fired: Arc<AtomicBool>,
}

/// The text of a panic payload.
pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// A failed run's outcome: a retry after backoff while the budget lasts and the error is
/// retryable, else FAILED.
pub(super) fn failure(rt: &Runtime, job: &Attempt, error: String, retryable: bool) -> Outcome {
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
pub(super) fn context(
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
pub(super) fn execute(
    rt: &Runtime,
    handler: &dyn JobHandler,
    job: StartedJob,
    ctx: &JobContext,
    attempt: &Attempt,
    timeout: &Timeout,
) -> Outcome {
    let began = Instant::now();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| handler.run(&job.payload, ctx)));
    conclude(rt, &job.job_type, attempt, result, began, timeout)
}

/// Run one job body as a future (a handler that does not block) and turn its result into an
/// outcome. The timeout is a timer raced against the body in this same task.
pub(super) async fn execute_async(
    rt: &Runtime,
    handler: Arc<dyn JobHandler>,
    job: StartedJob,
    ctx: JobContext,
    attempt: &Attempt,
    timeout: &Timeout,
) -> Outcome {
    let stop = ctx.stop.clone();
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
pub(super) fn conclude(
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

/// The try a run of `job` is: 1, then one more per retry spent.
pub(super) fn try_of(job: &StartedJob) -> u32 {
    u32::try_from(job.retry_count)
        .unwrap_or(0)
        .saturating_add(1)
}

/// Write a run's last progress and lines before its outcome (bounded: a store that does not
/// answer costs the outcome at most [`notes::FINAL_FLUSH_TIMEOUT`]).
pub(super) async fn last_notes(rt: &Runtime, notes: &RunNotes) {
    if notes.dirty()
        && tokio::time::timeout(notes::FINAL_FLUSH_TIMEOUT, notes.flush(rt.store.as_ref()))
            .await
            .is_err()
    {
        tracing::warn!("the run's last progress and log lines were not written in time; dropped");
    }
}
