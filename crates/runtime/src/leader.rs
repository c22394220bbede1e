//! Leader election for the engine.
//!
//! The lease lives in the store (`leaders` row with holder and expiry), not in a Postgres
//! advisory lock: an advisory lock is tied to one pooled connection and is invisible on
//! SQLite, while a lease row works through any pool, on both backends, is easy to inspect
//! (`SELECT * FROM leaders`), and expires by time even if the holder's connection hangs.
//! The holder renews every third of `leader_ttl`; a dead leader is replaced within one TTL.

use crate::Runtime;
use crate::engine::Engine;
use crate::events::EventPump;
use jobsched_core::ports::Lease;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Name of the engine's leader lease.
pub const ENGINE_ROLE: &str = "engine";

/// Compete for leadership until `shutdown`; run the engine while holding it.
pub async fn run(rt: Runtime, events: EventPump, shutdown: CancellationToken) {
    let me = rt.config.worker_id.clone();
    let ttl = rt.config.leader_ttl;
    let renew_every = ttl / 3;
    let lease = Lease {
        role: ENGINE_ROLE,
        holder: &me,
        ttl,
    };
    let mut engine: Option<(tokio::task::JoinHandle<()>, CancellationToken)> = None;
    let mut last_renewed: Option<Instant> = None;
    loop {
        let now = rt.clock.now();
        match rt.store.try_lead(&lease, now).await {
            Ok(true) => last_renewed = Some(Instant::now()),
            Ok(false) => last_renewed = None,
            Err(e) => tracing::warn!(error = %e, "leader lease renewal failed"),
        }
        // Without a renewal inside the TTL we must assume someone else leads now.
        let leading = last_renewed.is_some_and(|t| t.elapsed() < ttl);
        jobsched_metrics::metrics()
            .leader
            .with_label_values(&[ENGINE_ROLE])
            .set(i64::from(leading));
        match (&engine, leading) {
            (None, true) => {
                tracing::info!(worker = %me, "became engine leader");
                let stop = shutdown.child_token();
                let e = Engine::new(rt.clone());
                let handle = tokio::spawn(e.run(events.subscribe(), stop.clone()));
                engine = Some((handle, stop));
            }
            (Some(_), false) => {
                tracing::warn!(worker = %me, "lost engine leadership");
                if let Some((handle, stop)) = engine.take() {
                    stop.cancel();
                    let _ = handle.await;
                }
            }
            _ => {}
        }
        if let Some((handle, _)) = &engine
            && handle.is_finished()
        {
            tracing::error!("engine task ended unexpectedly; restarting it");
            engine = None;
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(renew_every) => {}
        }
    }
    if let Some((handle, stop)) = engine.take() {
        stop.cancel();
        let _ = handle.await;
    }
    jobsched_metrics::metrics()
        .leader
        .with_label_values(&[ENGINE_ROLE])
        .set(0);
    if let Err(e) = rt.store.resign(&lease).await {
        tracing::warn!(error = %e, "could not resign leadership; it expires by itself");
    }
}
