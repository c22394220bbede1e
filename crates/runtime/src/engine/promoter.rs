//! The promoter: delayed jobs whose `run_at` came enter the queue (a fresh queue position each),
//! and the workers are woken.

use super::*;

/// Delayed jobs promoted per statement, and statements per pass (the rest wait a round).
pub(super) const PROMOTE_BATCH: u32 = 1_000;
pub(super) const PROMOTE_ROUNDS: usize = 20;

/// Move the delayed jobs whose time came into the queue and wake the workers; returns when
/// the next one is due.
pub(super) async fn promote(rt: &Runtime) -> Option<tokio::time::Instant> {
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
