//! What the web console's overview shows, sampled in the background so a page view never waits
//! for a count over the whole table: job counts per status, the dead-letter count and the age of
//! the oldest waiting job, every [`SAMPLE_EVERY`], kept for [`KEEP`].
//!
//! Counting costs the database a scan of the jobs, so the sampler runs only while someone has
//! looked at the console in the last [`WATCHED_FOR`], and never spends more than a fifth of its
//! time counting (with a million jobs a sample takes ~0.4 s, so one comes every ~2 s).

use crate::state::AppState;
use chrono::{DateTime, Utc};
use jobsched_core::JobStats;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use utoipa::ToSchema;

/// How often the sampler reads the store.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// How much history is kept (10 minutes).
pub const KEEP: usize = 300;
/// How long after the last console view the sampler keeps sampling.
pub const WATCHED_FOR: Duration = Duration::from_secs(600);

/// One reading of the store.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Sample {
    /// When it was read.
    pub at: DateTime<Utc>,
    /// Jobs ever submitted (all jobs in the store).
    pub submitted: i64,
    /// COMPLETED jobs.
    pub completed: i64,
    /// FAILED jobs.
    pub failed: i64,
    /// Seconds the oldest queued job has been due (0 when none waits).
    pub oldest_pending_seconds: f64,
}

/// The latest full reading.
#[derive(Debug, Clone, Default)]
pub struct Latest {
    /// Counts per status.
    pub stats: JobStats,
    /// Entries in the dead-letter queue.
    pub dead_letters: i64,
}

/// The sampled history, shared by the sampler and the handlers.
#[derive(Debug, Default)]
pub struct Activity {
    inner: Mutex<(VecDeque<Sample>, Option<Latest>)>,
    /// When the console last asked.
    viewed: Mutex<Option<std::time::Instant>>,
    /// Wakes the sampler when the console is viewed after a pause.
    wake: tokio::sync::Notify,
}

impl Activity {
    /// Record a console view (the sampler runs while views keep coming).
    pub fn viewed(&self) {
        if let Ok(mut v) = self.viewed.lock() {
            let idle = v.is_none_or(|at| at.elapsed() > WATCHED_FOR);
            *v = Some(std::time::Instant::now());
            if idle {
                self.wake.notify_one();
            }
        }
    }

    fn watched(&self) -> bool {
        self.viewed
            .lock()
            .ok()
            .and_then(|v| *v)
            .is_some_and(|at| at.elapsed() <= WATCHED_FOR)
    }

    /// The samples, oldest first, and the latest full reading (if one was taken yet).
    pub fn snapshot(&self) -> (Vec<Sample>, Option<Latest>) {
        match self.inner.lock() {
            Ok(g) => (g.0.iter().cloned().collect(), g.1.clone()),
            Err(_) => (Vec::new(), None),
        }
    }

    fn push(&self, sample: Sample, latest: Latest) {
        if let Ok(mut g) = self.inner.lock() {
            if g.0.len() >= KEEP {
                g.0.pop_front();
            }
            g.0.push_back(sample);
            g.1 = Some(latest);
        }
    }

    /// Read the store once and record the result.
    pub async fn sample(&self, state: &AppState) -> Result<(), jobsched_core::Error> {
        let (stats, dead_letters, oldest) = tokio::try_join!(
            state.store.stats(),
            state.store.dead_letter_count(),
            state.store.pending_after(0, 1),
        )?;
        let now = state.clock.now();
        let oldest_pending_seconds = oldest
            .first()
            .map(|p| (now - p.run_at).num_milliseconds().max(0) as f64 / 1000.0)
            .unwrap_or(0.0);
        self.push(
            Sample {
                at: now,
                submitted: stats.total_jobs,
                completed: stats.completed,
                failed: stats.failed,
                oldest_pending_seconds,
            },
            Latest {
                stats,
                dead_letters,
            },
        );
        Ok(())
    }

    /// Sample every [`SAMPLE_EVERY`] (or five times the last sample's duration, if longer) while
    /// the console is watched, until `stop` is cancelled.
    pub async fn run(&self, state: &AppState, stop: tokio_util::sync::CancellationToken) {
        loop {
            if !self.watched() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.wake.notified() => {}
                }
                continue;
            }
            let began = tokio::time::Instant::now();
            if let Err(e) = self.sample(state).await {
                tracing::debug!(error = %e, "activity sample failed; the console shows the last one");
            }
            let pause = SAMPLE_EVERY.max(began.elapsed() * 5);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(began + pause) => {}
            }
        }
    }
}
