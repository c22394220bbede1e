//! A sampling profile of Postgres: every few milliseconds, which statements are active in the
//! benchmark database and what they wait on (`pg_stat_activity`). Without `pg_stat_statements`
//! this shows where the database's time goes.

use serde::Serialize;
use sqlx::postgres::PgPool;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;

/// `(query, wait_event_type, wait_event)` of an active backend.
type ActiveRow = (String, Option<String>, Option<String>);

/// Share of samples for one statement kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Share {
    /// Statement (by the store method that issues it) or wait event.
    pub what: String,
    /// Active backends seen running it, summed over samples.
    pub samples: u64,
    /// Average number of backends busy with it (samples ÷ sampling rounds).
    pub backends: f64,
}

/// The profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Profile {
    /// Sampling rounds taken.
    pub rounds: u64,
    /// By statement.
    pub statements: Vec<Share>,
    /// By wait event (`CPU` when not waiting).
    pub waits: Vec<Share>,
}

/// Name the store method a statement comes from.
pub fn label(query: &str) -> String {
    let q = query.split_whitespace().collect::<Vec<_>>().join(" ");
    let rules: [(&[&str], &str); 15] = [
        (
            &["WITH runs AS"],
            "finish (worker: outcomes of dispatched runs)",
        ),
        (
            &["WITH completed AS"],
            "exchange (worker: outcomes RUNNING→…, claims PENDING→RUNNING)",
        ),
        (
            &["SET status = 'SCHEDULED'"],
            "mark_scheduled (engine: PENDING→SCHEDULED)",
        ),
        (
            &["SET status = 'RUNNING'"],
            "record_starts (worker: SCHEDULED→RUNNING)",
        ),
        (
            &[
                "SELECT j.id, j.attempt, j.name",
                "(j.status = 'SCHEDULED') IS TRUE",
            ],
            "fetch (worker: re-read of SCHEDULED jobs whose data is stale)",
        ),
        (
            &["GROUP BY status"],
            "stats (GET /jobs/stats, engine gauges)",
        ),
        (&["WHERE q.seq > $1"], "pending_after (API activity)"),
        (
            &["DELETE FROM job_leases"],
            "rescue_expired (engine leader: lock the ended leases)",
        ),
        (
            &["undispatched AS"],
            "rescue_expired (engine leader: apply)",
        ),
        (
            &["UPDATE job_queue q SET delayed = false"],
            "promote_due (engine leader)",
        ),
        (&["SET lease_expires_at"], "renew (worker leases)"),
        (&["INSERT INTO leaders"], "try_lead (leader lease)"),
        (&["dead_letter"], "dead letters"),
        (&["INSERT INTO jobs"], "insert (API)"),
        (&["pg_stat_activity"], "this sampler"),
    ];
    for (needles, name) in rules {
        if needles.iter().all(|n| q.contains(n)) {
            return name.to_string();
        }
    }
    let short: String = q.chars().take(60).collect();
    format!("other: {short}")
}

/// A running sampler.
#[derive(Debug)]
pub struct Sampler {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Profile>,
}

impl Sampler {
    /// Start sampling the database `pool` is connected to every `every`.
    pub fn start(pool: PgPool, every: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut statements: HashMap<String, u64> = HashMap::new();
            let mut waits: HashMap<String, u64> = HashMap::new();
            let mut rounds = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let rows: Result<Vec<ActiveRow>, _> = sqlx::query_as(
                    "SELECT query, wait_event_type, wait_event FROM pg_stat_activity \
                     WHERE datname = current_database() AND state = 'active' \
                       AND pid <> pg_backend_pid()",
                )
                .fetch_all(&pool)
                .await;
                if let Ok(rows) = rows {
                    rounds += 1;
                    for (query, wtype, wevent) in rows {
                        *statements.entry(label(&query)).or_default() += 1;
                        let wait = match (wtype, wevent) {
                            (Some(t), Some(e)) => format!("{t}:{e}"),
                            _ => "CPU".to_string(),
                        };
                        *waits.entry(wait).or_default() += 1;
                    }
                }
                tokio::time::sleep(every).await;
            }
            let shares = |m: HashMap<String, u64>| {
                let mut v: Vec<Share> = m
                    .into_iter()
                    .map(|(what, samples)| Share {
                        what,
                        samples,
                        backends: samples as f64 / rounds.max(1) as f64,
                    })
                    .collect();
                v.sort_by_key(|s| std::cmp::Reverse(s.samples));
                v
            };
            Profile {
                rounds,
                statements: shares(statements),
                waits: shares(waits),
            }
        });
        Sampler { stop, task }
    }

    /// Stop and return the profile.
    pub async fn finish(self) -> Profile {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_named_by_store_method() {
        assert_eq!(
            label("WITH claim AS (SELECT ...) UPDATE jobs j SET status = 'SCHEDULED', attempt = 1"),
            "mark_scheduled (engine: PENDING→SCHEDULED)"
        );
        assert_eq!(
            label("SELECT status, count(*) AS n FROM jobs\n   GROUP BY status"),
            "stats (GET /jobs/stats, engine gauges)"
        );
        assert_eq!(
            label("WITH completed AS (UPDATE jobs j SET status = 'COMPLETED' ...), pick AS (...)"),
            "exchange (worker: outcomes RUNNING→…, claims PENDING→RUNNING)"
        );
        assert!(label("VACUUM jobs").starts_with("other: VACUUM"));
    }

    /// The store's own statements, as the sampler sees them, get their method's name.
    #[test]
    fn the_store_statements_are_named() {
        for (sql, name) in [
            (
                include_str!("../../store/sql/postgres/rescue_lock.sql"),
                "rescue_expired (engine leader: lock the ended leases)",
            ),
            (
                include_str!("../../store/sql/postgres/rescue_apply.sql"),
                "rescue_expired (engine leader: apply)",
            ),
            (
                include_str!("../../store/sql/postgres/promote_due_2.sql"),
                "promote_due (engine leader)",
            ),
            (
                include_str!("../../store/sql/postgres/pending_after.sql"),
                "pending_after (API activity)",
            ),
            (
                include_str!("../../store/sql/postgres/finish.sql"),
                "finish (worker: outcomes of dispatched runs)",
            ),
        ] {
            assert_eq!(label(sql), name, "{sql}");
        }
    }
}
