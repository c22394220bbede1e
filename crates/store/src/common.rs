//! Pieces shared by both backends.
//!
//! The transitions each method performs are documented in the crate docs (`lib.rs`).

use jobsched_core::ports::{Finished, Token};
use std::collections::HashSet;

/// Tokens with duplicates removed (first occurrence wins), in input order.
pub(crate) fn dedupe(tokens: &[Token]) -> Vec<Token> {
    let mut seen = HashSet::with_capacity(tokens.len());
    tokens
        .iter()
        .copied()
        .filter(|t| seen.insert(t.id))
        .collect()
}

/// Outcomes with at most one per token (first occurrence wins), in input order. Two tokens of
/// one job (different attempts) both stay: at most one can match the row's attempt.
pub(crate) fn dedupe_outcomes(runs: &[Finished]) -> Vec<&Finished> {
    dedupe_by_token(runs, |f| f.outcome.token())
}

/// Items with at most one per token (first occurrence wins), in input order.
pub(crate) fn dedupe_by_token<T>(items: &[T], token: impl Fn(&T) -> Token) -> Vec<&T> {
    let mut seen = HashSet::with_capacity(items.len());
    items.iter().filter(|x| seen.insert(token(x))).collect()
}

/// Restore the caller's order: the applied subset of `requested`, in `requested` order.
pub(crate) fn in_request_order<T>(
    requested: &[Token],
    mut applied: Vec<T>,
    id_of: impl Fn(&T) -> uuid::Uuid,
) -> Vec<T> {
    let mut position = std::collections::HashMap::with_capacity(requested.len());
    for (i, t) in requested.iter().enumerate() {
        position.entry(t.id).or_insert(i);
    }
    applied.sort_by_key(|x| position.get(&id_of(x)).copied().unwrap_or(usize::MAX));
    applied
}

/// Normalised (page, page_size, offset): page ≥ 1, page_size ≥ 1.
pub(crate) fn paging(page: u32, page_size: u32) -> (u32, u32, i64) {
    let page = page.max(1);
    let size = page_size.max(1);
    (page, size, i64::from(page - 1) * i64::from(size))
}

/// `now + ttl`, saturating far in the future instead of overflowing.
pub(crate) fn add_ttl(
    now: chrono::DateTime<chrono::Utc>,
    ttl: std::time::Duration,
) -> chrono::DateTime<chrono::Utc> {
    chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
}

/// The settings key of the durable policy copy.
pub(crate) const POLICY_KEY: &str = "policy";

#[cfg(test)]
mod tests {
    use super::*;
    use jobsched_core::JobStatus;
    use uuid::Uuid;

    /// Every (from, to) pair the store performs; see the crate docs.
    const TRANSITIONS: &[(JobStatus, JobStatus)] = &[
        (JobStatus::Pending, JobStatus::Cancelled),
        (JobStatus::Scheduled, JobStatus::Cancelled),
        (JobStatus::Pending, JobStatus::Scheduled),
        (JobStatus::Pending, JobStatus::Running),
        (JobStatus::Running, JobStatus::Pending),
        (JobStatus::Running, JobStatus::Failed),
        (JobStatus::Scheduled, JobStatus::Pending),
        (JobStatus::Scheduled, JobStatus::Running),
        (JobStatus::Running, JobStatus::Completed),
        (JobStatus::Failed, JobStatus::Pending),
    ];

    #[test]
    fn transitions_are_allowed() {
        for (from, to) in TRANSITIONS {
            assert!(from.can_transition_to(*to), "{from} -> {to}");
        }
    }

    #[test]
    fn dedupe_keeps_first() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        let t = |id, attempt| Token { id, attempt };
        assert_eq!(dedupe(&[t(a, 1), t(b, 1), t(a, 2)]), vec![t(a, 1), t(b, 1)]);
        let ordered = in_request_order(&[t(b, 1), t(a, 1), t(b, 1)], vec![t(a, 2), t(b, 2)], |x| {
            x.id
        });
        assert_eq!(ordered, vec![t(b, 2), t(a, 2)]);
    }

    #[test]
    fn paging_normalises() {
        assert_eq!(paging(0, 0), (1, 1, 0));
        assert_eq!(paging(3, 20), (3, 20, 40));
    }
}
