//! The backlog gauges a worker autoscaler (KEDA) scales on: `jobsched_backlog_seconds`, the
//! estimated seconds of work waiting per live execution slot, and `jobsched_backlog_jobs`.
//!
//! The API sets them, not the engine: the engine leader lives in a worker, and with the
//! workers scaled to zero there would be nobody to report the backlog that should wake them.
//! Every replica reports the same figure (a query takes `max` over them). Postgres keeps the
//! sums with the counts; on SQLite the sum over PENDING rows is a scan of the queue index, so
//! the gauges are read every [`BACKLOG_EVERY`] and never take more than a fifth of the
//! sampler's time.

use crate::state::AppState;
use jobsched_core::Backlog;
use std::time::Duration;

/// The `job_type` labels `jobsched_unserved_jobs` was set for in this process (set back to 0
/// once served).
static UNSERVED_LABELS: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// How often the backlog is read.
pub const BACKLOG_EVERY: Duration = Duration::from_secs(10);

/// Seconds of work per slot: the summed estimates over the live slots, or the whole sum when
/// no slot is live (so a scaler woken from zero sees the full backlog).
pub fn per_slot(backlog: Backlog, slots: u64) -> f64 {
    backlog.seconds / slots.max(1) as f64
}

/// Read the backlog of each queue and the live slots once and set the gauges (label
/// `queue`; a queue whose backlog drained goes back to 0); returns the seconds per slot of
/// all queues together. Workers do not report which queues their slots serve, so each
/// queue's figure is per live slot of the whole installation.
pub async fn refresh(state: &AppState) -> Result<f64, jobsched_core::Error> {
    let (backlog, workers, queues, pending) = tokio::try_join!(
        state.store.backlog(),
        state.transport.workers(),
        jobsched_core::queue::all(&*state.store, &*state.transport),
        state.store.pending_by_type(),
    )?;
    let slots = workers.iter().map(|w| u64::from(w.total)).sum();
    let m = jobsched_metrics::metrics();
    for (name, _) in &queues {
        if !backlog.iter().any(|(q, _)| q == name) {
            m.backlog_seconds
                .with_label_values(&[name.as_str()])
                .set(0.0);
            m.backlog_jobs.with_label_values(&[name.as_str()]).set(0);
        }
    }
    for (name, b) in &backlog {
        m.backlog_seconds
            .with_label_values(&[name.as_str()])
            .set(per_slot(*b, slots));
        m.backlog_jobs
            .with_label_values(&[name.as_str()])
            .set(b.jobs);
    }
    // Unserved jobs per type; a type served again (or drained) goes back to 0.
    let unserved = crate::routes::scheduler::unserved(&pending, &workers);
    let mut labelled = UNSERVED_LABELS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for name in labelled.iter() {
        if !unserved.iter().any(|u| &u.job_type == name) {
            m.unserved_jobs.with_label_values(&[name.as_str()]).set(0);
        }
    }
    for u in &unserved {
        m.unserved_jobs
            .with_label_values(&[u.job_type.as_str()])
            .set(u.pending);
        labelled.insert(u.job_type.clone());
    }
    drop(labelled);
    Ok(per_slot(Backlog::total(&backlog), slots))
}

/// Refresh every [`BACKLOG_EVERY`] (or five times the last read's duration, if longer) until
/// `stop` is cancelled. A failed read leaves the gauges at their last value.
pub async fn run(state: &AppState, stop: tokio_util::sync::CancellationToken) {
    loop {
        let began = tokio::time::Instant::now();
        if let Err(e) = refresh(state).await {
            tracing::debug!(error = %e, "backlog gauge not refreshed; it keeps its last value");
        }
        let pause = BACKLOG_EVERY.max(began.elapsed() * 5);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_slot_divides_by_live_slots_and_by_one_without_any() {
        let b = Backlog {
            jobs: 4,
            seconds: 12.0,
        };
        assert_eq!(per_slot(b, 4), 3.0);
        assert_eq!(per_slot(b, 0), 12.0);
        assert_eq!(per_slot(Backlog::default(), 8), 0.0);
    }
}
