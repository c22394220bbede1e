//! The gauges that count rows (queue depth per status, dead letters), refreshed by the leader,
//! and the correction of the kept counts they are read from.

use super::*;

/// Refresh the gauges that come from the store and transport (leader only).
pub(super) async fn refresh_gauges(rt: &Runtime) {
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

/// How often the leader checks the kept counts against the rows (and once when it takes over).
pub(super) const RECOUNT_EVERY: Duration = Duration::from_secs(3600);

/// Recount now, then every `every`, until `stop` (leader only).
pub(super) async fn recount_every(rt: Runtime, every: Duration, stop: CancellationToken) {
    loop {
        recount(&rt).await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Bring the kept counts back in line with the rows (see
/// [`jobsched_core::ports::DispatchStore::recount`]).
async fn recount(rt: &Runtime) {
    match rt.store.recount(rt.clock.now()).await {
        Ok(0) => {}
        Ok(drift) => tracing::warn!(
            drift,
            "the kept job counts differed from the rows by {drift} jobs and were corrected \
             (were processes of an earlier version running?)"
        ),
        Err(e) => tracing::warn!(error = %e, "recount failed; trying again next round"),
    }
}
