//! The rescuer: expired leases taken back (RUNNING jobs retried or dead-lettered by the one
//! failure rule, SCHEDULED ones requeued) and the jobs sent back announced.

use super::*;

/// Take back expired leases; forget workers that stopped heartbeating.
pub(super) async fn rescue(rt: &Runtime) {
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
