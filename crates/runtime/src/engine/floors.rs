//! The floors: where claims in sequence order start in each queue (see
//! [`jobsched_core::ports::DispatchStore::raise_floors`]), raised each round once the
//! transactions open at the previous mark have ended.

use super::*;
use jobsched_core::ports::FloorMark;

/// Every this many raises, the floors are computed from the front of each queue, not from
/// where they stand (entries written below a floor by hand are found within about half a
/// minute at one round per second; the recount's sweep resets the floors itself).
pub(super) const FULL_EVERY: u64 = 30;

/// What the floor keeping remembers between rounds.
#[derive(Debug, Default)]
pub(crate) struct Floors {
    /// The mark taken last round, waiting for its transactions to end.
    mark: Option<FloorMark>,
    /// Raises so far.
    raised: u64,
    /// Rounds the current mark has waited for its transactions.
    waited: u64,
}

/// Rounds a mark may wait for its transactions before the wait is logged (and every this many
/// after).
const WAIT_LOGGED_AFTER: u64 = 60;

impl Floors {
    /// Raise the floors from the last mark if its transactions have ended, then take a new
    /// mark; keep the old one while they have not.
    pub(super) async fn round(&mut self, rt: &Runtime) {
        if let Some(mark) = &self.mark {
            let full = self.raised % FULL_EVERY == 0;
            match rt.store.raise_floors(mark, full).await {
                Ok(true) => self.raised = self.raised.wrapping_add(1),
                Ok(false) => {
                    self.waited = self.waited.saturating_add(1);
                    if self.waited % WAIT_LOGGED_AFTER == 0 {
                        tracing::warn!(
                            rounds = self.waited,
                            "the queues' floors wait for a transaction open for {} rounds; until it ends, claims in FCFS and Round Robin order read past every queue entry claimed since the last vacuum. Find it with SELECT pid, state, xact_start FROM pg_stat_activity WHERE datname = current_database() ORDER BY xact_start, and end it (pg_terminate_backend) if it is a session left idle in a transaction",
                            self.waited
                        );
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "raising the queues' floors failed; claims read more of the queue index until a later round");
                }
            }
        }
        self.waited = 0;
        self.mark = match rt.store.floor_mark().await {
            Ok(mark) => mark,
            Err(e) => {
                tracing::warn!(error = %e, "taking a floor mark failed; trying again next round");
                None
            }
        };
    }
}
