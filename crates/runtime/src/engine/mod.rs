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

mod floors;
mod gauges;
mod promoter;
mod rescuer;
mod retention;
mod schedules;

use floors::*;
use gauges::*;
use promoter::*;
use rescuer::*;
use retention::*;
use schedules::*;

use crate::Runtime;
use jobsched_core::JobStatus;
use jobsched_core::policy::{self, PolicySettings};
use jobsched_core::ports::{Event, PruneCursor, PruneScan};
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

/// The leader's maintenance: one [`Maintenance::step`] every `every`, and a promotion pass
/// as soon as the earliest delayed job comes due; beside them, a recount of the kept counts
/// now and every [`RECOUNT_EVERY`] (it reads every row, so it never holds the rounds up).
async fn maintenance(rt: Runtime, every: Duration, stop: CancellationToken) {
    tokio::spawn(recount_every(rt.clone(), RECOUNT_EVERY, stop.clone()));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut state = Maintenance::default();
    // When the earliest delayed job comes due (known after each promotion pass); a job
    // submitted for an earlier time since is found by the next round.
    let mut next_due: Option<tokio::time::Instant> = None;
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
        next_due = state.step(&rt).await;
    }
}

/// What the maintenance remembers between rounds.
#[derive(Debug, Default)]
pub(crate) struct Maintenance {
    /// Rounds run so far.
    rounds: u64,
    /// Where the retention scan goes on from (it wraps around at the end).
    prune_from: Option<PruneCursor>,
    /// The queues' floors.
    floors: Floors,
}

impl Maintenance {
    /// One round at the runtime clock's `now`: take back expired leases and reap dead workers,
    /// promote due delayed jobs, fire due schedules, delete a batch of jobs past retention,
    /// raise the queues' floors and (every fifth round) refresh the row-counting gauges.
    /// Returns when the earliest delayed job still waiting comes due.
    pub(crate) async fn step(&mut self, rt: &Runtime) -> Option<tokio::time::Instant> {
        rescue(rt).await;
        let next_due = promote(rt).await;
        fire_schedules(rt).await;
        prune(rt, &mut self.prune_from).await;
        self.floors.round(rt).await;
        if self.rounds % 5 == 0 {
            refresh_gauges(rt).await;
        }
        self.rounds += 1;
        next_due
    }
}

#[cfg(test)]
mod tests;
