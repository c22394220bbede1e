//! The leader's engine: what must happen exactly once in the cluster, never in a job's way.
//!
//! Workers claim their own work from the store in the active policy's order (see
//! [`crate::worker`]), so the engine holds no queue and its memory does not grow with the
//! backlog. What is left for the single leader: take back expired leases (the rescuer) and
//! announce the jobs it sent back, reap workers that stopped heartbeating from the registry,
//! keep the policy key in the transport (rebuilt from the durable copy after a flush), move
//! delayed jobs into the queue when their `run_at` comes and wake the workers, fire periodic
//! schedules, delete jobs past
//! their retention, and refresh the gauges that count rows.

use crate::Runtime;
use jobsched_core::JobStatus;
use jobsched_core::policy::{self, PolicySettings};
use jobsched_core::ports::{Event, PruneCursor};
use jobsched_core::queue;
use jobsched_core::schedule::{FireDecision, Schedule};
use jobsched_metrics::metrics;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// The engine's state.
#[derive(Debug)]
pub struct Engine {
    rt: Runtime,
    settings: Option<PolicySettings>,
}

impl Engine {
    /// A fresh engine.
    pub fn new(rt: Runtime) -> Engine {
        Engine { rt, settings: None }
    }

    /// Run until cancelled.
    pub async fn run(mut self, mut events: broadcast::Receiver<Event>, stop: CancellationToken) {
        if let Err(e) = self.sync_settings().await {
            tracing::warn!(error = %e, "cannot read policy settings yet");
        }
        let every = Duration::from_secs(1).min(self.rt.config.dispatch_ttl / 2);
        // Rescue and gauges run beside the settings loop; they stop (after the round in
        // progress, which the store's row locks and status tests fence) when this engine
        // stops: leadership lost or shutdown.
        let maintenance_stop = stop.child_token();
        let _stop_maintenance = maintenance_stop.clone().drop_guard();
        let mut maintenance = tokio::spawn(maintenance(self.rt.clone(), every, maintenance_stop));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let mut sync;
            tokio::select! {
                _ = stop.cancelled() => return,
                ev = events.recv() => {
                    sync = matches!(ev, Ok(Event::PolicyChanged) | Err(_));
                    while let Ok(ev) = events.try_recv() {
                        sync |= ev == Event::PolicyChanged;
                    }
                }
                // The periodic tick re-asserts the settings: Redis may have been flushed.
                _ = tick.tick() => sync = true,
                // Only a panic ends it early: end the engine too, so the leader loop restarts
                // both rather than running on without rescue.
                _ = &mut maintenance => {
                    if !stop.is_cancelled() {
                        tracing::error!("engine maintenance task ended unexpectedly");
                    }
                    return;
                }
            }
            if sync && let Err(e) = self.sync_settings().await {
                tracing::warn!(error = %e, "policy sync failed");
            }
        }
    }

    /// Rebuild the transport's missing settings keys from the durable copies, then read the
    /// `default` queue's settings (for the switch metric and the active-policy gauge).
    async fn sync_settings(&mut self) -> jobsched_core::Result<()> {
        let (store, transport) = (&*self.rt.store, &*self.rt.transport);
        for name in queue::restore(store, transport).await? {
            tracing::info!(queue = %name, "queue settings missing in transport; restored from the store");
        }
        let settings = queue::current(store, transport, queue::DEFAULT_QUEUE)
            .await?
            .unwrap_or_default();
        if let Some(old) = &self.settings
            && !old.same_effect(&settings)
        {
            tracing::info!(from = %old.policy, to = %settings.policy, "policy switched");
            metrics().policy_switches.inc();
        }
        for kind in policy::PolicyKind::ALL {
            metrics()
                .active_policy
                .with_label_values(&[kind.as_str()])
                .set(i64::from(kind == settings.policy));
        }
        self.settings = Some(settings);
        Ok(())
    }
}

/// The leader's maintenance loop: lease rescue and dead-worker reaping every `every`, the
/// gauges that count every row every fifth round.
async fn maintenance(rt: Runtime, every: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rounds: u64 = 0;
    // When the earliest delayed job comes due (known after each promotion pass); a job
    // submitted for an earlier time since is found by the next round.
    let mut next_due: Option<tokio::time::Instant> = None;
    // Where the retention scan goes on from (it wraps around at the end).
    let mut prune_from: Option<PruneCursor> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
            _ = async { tokio::time::sleep_until(next_due.expect("branch enabled only when due")).await },
                if next_due.is_some() => {
                next_due = promote(&rt).await;
                continue;
            }
        }
        rescue(&rt).await;
        next_due = promote(&rt).await;
        fire_schedules(&rt).await;
        prune(&rt, &mut prune_from).await;
        if rounds % 5 == 0 {
            refresh_gauges(&rt).await;
        }
        rounds += 1;
    }
}

/// Schedules handled per round (the rest are next round's, a second later).
const FIRE_BATCH: u32 = 100;

/// Fire the schedules that are due: enqueue each one's job (its idempotency key names the
/// schedule and the fire time, so however often this runs, on however many leaders, one fire
/// time makes at most one job), then move the schedule on with a conditional write.
async fn fire_schedules(rt: &Runtime) {
    let now = rt.clock.now();
    let due = match rt.store.due_schedules(now, FIRE_BATCH).await {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read due schedules; trying again next round");
            return;
        }
    };
    let mut enqueued = 0u64;
    for s in due {
        if let Err(e) = fire(rt, &s, now, &mut enqueued).await {
            tracing::warn!(schedule = %s.name, error = %e, "firing a schedule failed; trying again next round");
        }
    }
    if enqueued > 0
        && let Err(e) = rt.transport.publish(Event::JobsAvailable).await
    {
        tracing::warn!(error = %e, "cannot announce scheduled jobs; workers find them at their next poll");
    }
}

async fn fire(
    rt: &Runtime,
    s: &Schedule,
    now: chrono::DateTime<chrono::Utc>,
    enqueued: &mut u64,
) -> jobsched_core::Result<()> {
    let (Some(expected), Some((fire, next))) = (s.next_fire_at, s.due(now)) else {
        return Ok(());
    };
    let last_open = match s.last_job_id {
        Some(id) => rt
            .store
            .get(id)
            .await?
            .is_some_and(|j| !j.status.is_terminal()),
        None => false,
    };
    let job = match s.decide(fire, now, last_open) {
        FireDecision::Enqueue => {
            let new = s.job_for(fire);
            jobsched_core::queue::ensure(&*rt.store, &*rt.transport, &new.queue).await?;
            let job = rt.store.insert(&new, now).await?;
            // Another id: an earlier pass (on this leader or another) enqueued this fire and
            // stopped before moving the schedule on; this pass only moves it on.
            if job.id == new.id {
                *enqueued += 1;
                metrics()
                    .schedule_fires
                    .with_label_values(&["enqueued"])
                    .inc();
                tracing::info!(schedule = %s.name, %fire, job_id = %job.id, "schedule fired");
            }
            Some(job.id)
        }
        FireDecision::Skip => {
            metrics()
                .schedule_fires
                .with_label_values(&["skipped"])
                .inc();
            tracing::info!(schedule = %s.name, %fire, last_open, "schedule fire skipped");
            None
        }
    };
    if !rt
        .store
        .advance_schedule(&s.name, expected, fire, next, job)
        .await?
    {
        tracing::debug!(schedule = %s.name, "schedule changed meanwhile; its new state stands");
    }
    Ok(())
}

/// Jobs a retention statement looks at, and statements per round: small deletes of rows no
/// claim touches, so dispatch never waits on them.
const PRUNE_BATCH: u32 = 500;
const PRUNE_ROUNDS: usize = 10;

/// Delete the jobs that outlived their retention (see [`crate::RuntimeConfig`]), a few small
/// batches per round, going on from where the last round stopped.
async fn prune(rt: &Runtime, from: &mut Option<PruneCursor>) {
    let (done, failed) = (rt.config.retention_completed, rt.config.retention_failed);
    if done.is_none() && failed.is_none() {
        return;
    }
    let now = rt.clock.now();
    // No setting (or one reaching before 1970) keeps everything of its kind.
    let before = |keep: Option<Duration>| {
        keep.and_then(|d| chrono::Duration::from_std(d).ok())
            .and_then(|d| now.checked_sub_signed(d))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::UNIX_EPOCH)
    };
    let (done_before, failed_before) = (before(done), before(failed));
    let mut deleted = 0u64;
    for _ in 0..PRUNE_ROUNDS {
        match rt
            .store
            .prune(done_before, failed_before, *from, PRUNE_BATCH)
            .await
        {
            Ok(p) => {
                deleted = deleted.saturating_add(p.deleted);
                *from = p.next;
                if from.is_none() {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "retention pass failed; trying again next round");
                break;
            }
        }
    }
    if deleted > 0 {
        metrics().jobs_pruned.inc_by(deleted);
        tracing::info!(deleted, "deleted jobs past their retention");
    }
}

/// Delayed jobs promoted per statement, and statements per pass (the rest wait a round).
const PROMOTE_BATCH: u32 = 1_000;
const PROMOTE_ROUNDS: usize = 20;

/// Move the delayed jobs whose time came into the queue and wake the workers; returns when
/// the next one is due.
async fn promote(rt: &Runtime) -> Option<tokio::time::Instant> {
    let mut promoted = 0u64;
    let mut next = None;
    for _ in 0..PROMOTE_ROUNDS {
        let now = rt.clock.now();
        match rt.store.promote_due(now, PROMOTE_BATCH).await {
            Ok(p) => {
                promoted = promoted.saturating_add(p.promoted);
                next = p.next_due.map(|at| {
                    let wait = (at - now).to_std().unwrap_or(Duration::ZERO);
                    tokio::time::Instant::now() + wait
                });
                if p.promoted < u64::from(PROMOTE_BATCH) {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "promoting delayed jobs failed; trying again next round");
                return None;
            }
        }
    }
    if promoted > 0 {
        metrics().jobs_promoted.inc_by(promoted);
        tracing::debug!(promoted, "delayed jobs came due");
        if let Err(e) = rt.transport.publish(Event::JobsAvailable).await {
            tracing::warn!(error = %e, "cannot announce jobs that came due; workers find them at their next poll");
        }
    }
    next
}

/// Refresh the gauges that come from the store and transport (leader only).
async fn refresh_gauges(rt: &Runtime) {
    let m = metrics();
    if let Ok(stats) = rt.store.stats().await {
        for (status, n) in [
            (JobStatus::Pending, stats.pending),
            (JobStatus::Scheduled, stats.scheduled),
            (JobStatus::Running, stats.running),
            (JobStatus::Completed, stats.completed),
            (JobStatus::Failed, stats.failed),
            (JobStatus::Cancelled, stats.cancelled),
        ] {
            m.jobs_by_status
                .with_label_values(&[status.as_str()])
                .set(n);
        }
        m.policy_queue_depth.set(stats.pending);
    }
    if let Ok(n) = rt.store.dead_letter_count().await {
        m.dead_letter_size.set(n);
    }
    if let Ok(w) = rt.transport.workers().await {
        m.workers_live.set(w.len() as i64);
    }
}

/// Take back expired leases; forget workers that stopped heartbeating.
async fn rescue(rt: &Runtime) {
    let now = rt.clock.now();
    let m = metrics();
    match rt.store.rescue_expired(now).await {
        Ok(report) => {
            m.lease_rescues
                .with_label_values(&["running"])
                .inc_by(report.retried.len() as u64);
            m.lease_rescues
                .with_label_values(&["scheduled"])
                .inc_by(report.undispatched.len() as u64);
            m.lease_rescues
                .with_label_values(&["dead_lettered"])
                .inc_by(report.dead_lettered.len() as u64);
            for d in &report.dead_lettered {
                m.jobs_finished
                    .with_label_values(&[d.job_type.as_str(), "dead_lettered"])
                    .inc();
            }
            if !report.retried.is_empty() || !report.undispatched.is_empty() {
                // Back in the queue: idle workers should claim them.
                if let Err(e) = rt.transport.publish(Event::JobsAvailable).await {
                    tracing::warn!(error = %e, "cannot announce rescued jobs; workers find them at their next poll");
                }
                tracing::warn!(
                    retried = report.retried.len(),
                    undispatched = report.undispatched.len(),
                    "rescued jobs with expired leases"
                );
            }
            if !report.dead_lettered.is_empty() {
                tracing::warn!(
                    count = report.dead_lettered.len(),
                    "dead-lettered jobs whose last lease expired"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "lease rescue failed"),
    }
    match rt.transport.reap_dead_workers().await {
        Ok(reaped) => {
            for worker in reaped {
                tracing::warn!(%worker, "worker stopped heartbeating; removed from the registry (the rescuer takes its jobs back when their leases expire)");
            }
        }
        Err(e) => tracing::warn!(error = %e, "reaping dead workers failed"),
    }
}
