//! Periodic schedules: each due schedule fires its job once per fire time (a conditional advance
//! of its next fire time), across leader changes.

use super::*;
use jobsched_core::schedule::Fired;

/// Schedules handled per round (the rest are next round's, a second later).
pub(super) const FIRE_BATCH: u32 = 100;

/// Fire the schedules that are due: enqueue each one's job (its idempotency key names the
/// schedule and the fire time, so however often this runs, on however many leaders, one fire
/// time makes at most one job), then move the schedule on with a conditional write.
pub(super) async fn fire_schedules(rt: &Runtime) {
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

pub(super) async fn fire(
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
        .advance_schedule(
            &s.name,
            &Fired {
                expected,
                fire,
                next,
                job,
            },
        )
        .await?
    {
        tracing::debug!(schedule = %s.name, "schedule changed meanwhile; its new state stands");
    }
    Ok(())
}
