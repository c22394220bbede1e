//! Retention: finished jobs past their retention are deleted in small batches, resuming where the
//! previous pass stopped; dead letters are kept.

use super::*;

/// Jobs a retention statement looks at, and statements per round: small deletes of rows no
/// claim touches, so dispatch never waits on them.
pub(super) const PRUNE_BATCH: u32 = 500;
pub(super) const PRUNE_ROUNDS: usize = 10;

/// Delete the jobs that outlived their retention (see [`crate::RuntimeConfig`]), a few small
/// batches per round, going on from where the last round stopped.
pub(super) async fn prune(rt: &Runtime, from: &mut Option<PruneCursor>) {
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
        let scan = PruneScan {
            completed_before: done_before,
            failed_before,
            after: *from,
            limit: PRUNE_BATCH,
        };
        match rt.store.prune(&scan).await {
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
