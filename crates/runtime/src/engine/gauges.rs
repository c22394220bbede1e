//! The gauges that count rows (queue depth per status, dead letters), refreshed by the leader.

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
