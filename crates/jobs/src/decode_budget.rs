//! The process-wide image decode memory budget: a FIFO counting semaphore in bytes.
//!
//! A thumbnail run reserves its worst-case working memory before decoding and releases it when
//! done; while the budget is short it waits (first come, first served), checking its stop flag
//! every [`POLL`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Default budget: 192 MiB.
pub const DEFAULT_DECODE_BUDGET: u64 = 192 * 1024 * 1024;
/// Environment variable the binary reads the budget from (bytes).
pub const DECODE_BUDGET_ENV: &str = "JOBSCHED_DECODE_BUDGET";
/// How often a waiting reservation re-checks its stop flag.
pub const POLL: Duration = Duration::from_millis(25);

/// The budget every [`crate::ThumbnailJob::default`] uses.
pub(crate) static GLOBAL: DecodeBudget = DecodeBudget::new(DEFAULT_DECODE_BUDGET);

#[derive(Debug)]
pub(crate) struct DecodeBudget {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug)]
struct State {
    capacity: u64,
    in_use: u64,
    peak: u64,
    /// Tickets of waiting reservations, oldest first; only the oldest may take budget.
    queue: VecDeque<u64>,
    next_ticket: u64,
}

/// Why a reservation was not granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// More than the whole budget: waiting cannot help.
    TooLarge { capacity: u64 },
    /// The stop flag was set while waiting.
    Stopped,
}

/// Budget held until dropped.
#[derive(Debug)]
pub(crate) struct Reservation<'a> {
    budget: &'a DecodeBudget,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut st = self.budget.lock();
        st.in_use = st.in_use.saturating_sub(self.bytes);
        drop(st);
        self.budget.changed.notify_all();
    }
}

impl DecodeBudget {
    pub(crate) const fn new(capacity: u64) -> Self {
        DecodeBudget {
            state: Mutex::new(State {
                capacity,
                in_use: 0,
                peak: 0,
                queue: VecDeque::new(),
                next_ticket: 0,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_capacity(&self, bytes: u64) {
        self.lock().capacity = bytes;
        self.changed.notify_all();
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.lock().capacity
    }

    pub(crate) fn in_use(&self) -> u64 {
        self.lock().in_use
    }

    pub(crate) fn peak(&self) -> u64 {
        self.lock().peak
    }

    pub(crate) fn reset_peak(&self) {
        let mut st = self.lock();
        st.peak = st.in_use;
    }

    pub(crate) fn waiting(&self) -> usize {
        self.lock().queue.len()
    }

    /// Reserve `bytes`, waiting (FIFO) while others hold the budget.
    pub(crate) fn acquire(
        &self,
        bytes: u64,
        stop: &AtomicBool,
    ) -> Result<Reservation<'_>, Refusal> {
        let mut st = self.lock();
        let ticket = st.next_ticket;
        st.next_ticket = st.next_ticket.wrapping_add(1);
        st.queue.push_back(ticket);
        loop {
            let refusal = if bytes > st.capacity {
                Some(Refusal::TooLarge {
                    capacity: st.capacity,
                })
            } else if stop.load(Ordering::Relaxed) {
                Some(Refusal::Stopped)
            } else {
                None
            };
            if let Some(refusal) = refusal {
                st.queue.retain(|&t| t != ticket);
                drop(st);
                // The next in line may be able to go now.
                self.changed.notify_all();
                return Err(refusal);
            }
            let fits = st
                .in_use
                .checked_add(bytes)
                .is_some_and(|total| total <= st.capacity);
            if fits && st.queue.front() == Some(&ticket) {
                st.queue.pop_front();
                st.in_use += bytes;
                st.peak = st.peak.max(st.in_use);
                drop(st);
                self.changed.notify_all();
                return Ok(Reservation {
                    budget: self,
                    bytes,
                });
            }
            st = self
                .changed
                .wait_timeout(st, POLL)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "timed out: {what}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn counts_waits_in_order_and_releases() {
        let b: &'static DecodeBudget = Box::leak(Box::new(DecodeBudget::new(100)));
        let no = AtomicBool::new(false);
        let r60 = b.acquire(60, &no).unwrap();
        assert_eq!((b.in_use(), b.peak()), (60, 60));
        assert_eq!(
            b.acquire(101, &no).unwrap_err(),
            Refusal::TooLarge { capacity: 100 }
        );
        // 50 must wait; a later 10 that would fit must not overtake it.
        let spawn = |n: u64| {
            std::thread::spawn(move || {
                let stop = AtomicBool::new(false);
                b.acquire(n, &stop).unwrap().bytes
            })
        };
        let t50 = spawn(50);
        wait_until("50 queued", || b.waiting() == 1);
        let t10 = spawn(10);
        // A reservation queues its ticket and checks whether it may go in one critical
        // section, so seeing two waiting means the 10 already checked while it fitted
        // (60 + 10 <= 100) and stayed behind the 50. (Recording the order in which the two
        // threads return instead raced: the 10 is granted right after the 50 and may return
        // first.)
        wait_until("10 queued", || b.waiting() == 2);
        assert_eq!(b.in_use(), 60);
        drop(r60);
        assert_eq!(t50.join().unwrap(), 50);
        assert_eq!(t10.join().unwrap(), 10);
        assert_eq!(b.in_use(), 0);
        assert!(b.peak() <= 100, "{}", b.peak());
        b.reset_peak();
        assert_eq!(b.peak(), 0);
    }

    #[test]
    fn stop_flag_ends_a_wait_and_unblocks_the_queue() {
        let b: &'static DecodeBudget = Box::leak(Box::new(DecodeBudget::new(100)));
        let no = AtomicBool::new(false);
        let held = b.acquire(100, &no).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let waiter = std::thread::spawn(move || b.acquire(80, &stop2).map(|_| ()));
        wait_until("queued", || b.waiting() == 1);
        let flagged = Instant::now();
        stop.store(true, Ordering::SeqCst);
        wait_until("gave up", || waiter.is_finished());
        assert!(flagged.elapsed() < POLL * 4, "{:?}", flagged.elapsed());
        assert_eq!(waiter.join().unwrap(), Err(Refusal::Stopped));
        assert_eq!(b.waiting(), 0);
        drop(held);
        // Lowering the capacity below a waiting request refuses it.
        let held = b.acquire(10, &no).unwrap();
        let waiter = std::thread::spawn(move || {
            let no = AtomicBool::new(false);
            b.acquire(95, &no).map(|_| ())
        });
        wait_until("queued", || b.waiting() == 1);
        b.set_capacity(50);
        assert_eq!(
            waiter.join().unwrap(),
            Err(Refusal::TooLarge { capacity: 50 })
        );
        drop(held);
        assert_eq!(b.in_use(), 0);
    }
}
