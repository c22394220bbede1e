//! The Postgres row layout (`migrations/postgres/0013_baseline.sql`): what the burn-down's cost
//! rests on.

use chrono::{TimeZone, Utc};
use jobsched_core::NewJob;
use jobsched_core::PolicyKind;
use jobsched_core::ports::{Claim, DispatchStore, Finished, JobRepo, Outcome, Token, WorkerStore};
use jobsched_store::PgStore;
use jobsched_store::testing::{TestDb, sleep_job};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use std::time::{Duration, Instant};

/// Updates and HOT updates of `jobs` so far, as the statistics system reports them once this
/// (single) connection has flushed its counters.
async fn updates(pool: &sqlx::PgPool) -> (i64, i64) {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(pool)
        .await
        .unwrap();
    // The flush happens when the transaction above ends; this reads the result.
    sqlx::query_as(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'jobs'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// One connection (so a test's statements and its statistics or WAL reads share a backend) to
/// a table whose pages are nearly empty. Whether a row's new version is logged small or is a
/// HOT update depends on what changed and on the version fitting on the old one's page. At
/// fillfactor 10 every claim and completion fits without pruning, which other sessions'
/// snapshots can hold back, so these tests see the layout alone.
/// `None` (a skip) without Postgres.
async fn roomy_table() -> Option<(TestDb, sqlx::PgPool, PgStore)> {
    let db = TestDb::postgres().await?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(db.url())
        .await
        .unwrap();
    sqlx::query("ALTER TABLE jobs SET (fillfactor = 10)")
        .execute(&pool)
        .await
        .unwrap();
    let store = PgStore::new(pool.clone());
    Some((db, pool, store))
}

/// `n` no-op sleep jobs named `{prefix}{i}`.
fn sleep_jobs(prefix: &str, n: u32) -> Vec<NewJob> {
    (0..n)
        .map(|i| sleep_job(&format!("{prefix}{i}"), json!({ "duration": 0 }), 3))
        .collect()
}

#[tokio::test]
async fn a_dispatched_job_completes_with_a_hot_update() {
    // HOT needs no indexed column to change (this test) and room on the page (given).
    let Some((db, pool, store)) = roomy_table().await else {
        return;
    };
    let t0 = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    let jobs = sleep_jobs("h", 500);
    let ids = store.insert_many(&jobs, t0).await.unwrap();
    let tokens: Vec<Token> = ids.iter().map(|&id| Token { id, attempt: 0 }).collect();
    let lease = t0 + chrono::Duration::seconds(30);
    let scheduled = store.mark_scheduled(&tokens, t0, lease).await.unwrap();
    assert_eq!(scheduled.len(), 500);
    let (before, hot_before) = updates(&pool).await;

    let runs: Vec<Finished> = scheduled
        .iter()
        .map(|j| Finished {
            outcome: Outcome::Completed {
                token: j.token(),
                result: json!({ "ok": true }),
            },
            started_at: Some(t0),
        })
        .collect();
    assert_eq!(store.finish(&runs, "w", t0).await.unwrap().len(), 500);

    // Statistics arrive asynchronously: poll until the 500 updates are counted.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (after, hot_after) = loop {
        let (n, hot) = updates(&pool).await;
        if n >= before + 500 || Instant::now() > deadline {
            break (n, hot);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(after - before, 500, "completions counted");
    // Every completion is HOT (with the old layout, none was).
    let hot = hot_after - hot_before;
    assert_eq!(hot, 500, "HOT completions of 500");
    // And the job reads as an ordinary completed job: no lease shown.
    let job = store.get(ids[0]).await.unwrap().unwrap();
    assert_eq!(job.lease_expires_at, None);
    pool.close().await;
    db.cleanup().await;
}

/// Updates of `jobs` counted after `before` once `n` more have arrived (statistics arrive
/// asynchronously), with how many of them were HOT.
async fn updates_after(pool: &sqlx::PgPool, before: (i64, i64), n: i64) -> (i64, i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (all, hot) = updates(pool).await;
        if all >= before.0 + n || Instant::now() > deadline {
            return (all - before.0, hot - before.1);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_claim_and_its_completion_are_hot_updates() {
    // The claim takes the job's queue entry (`job_queue`) and changes no column an index of
    // `jobs` names; so does the completion.
    let Some((db, pool, store)) = roomy_table().await else {
        return;
    };
    // Nor does Postgres compute a generated column again (migration 0018): it would on every
    // update of the row, whatever the update changes.
    let generated: Vec<String> = sqlx::query_scalar(
        "SELECT attname::text FROM pg_attribute \
          WHERE attrelid = 'jobs'::regclass AND attgenerated <> '' AND NOT attisdropped",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(generated.is_empty(), "generated columns: {generated:?}");
    let t0 = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    store.insert_many(&sleep_jobs("c", 300), t0).await.unwrap();
    let claim = Claim {
        limit: 300,
        order: PolicyKind::Fcfs,
        lease_until: t0 + chrono::Duration::seconds(30),
        queue: "default".into(),
        concurrency_limit: None,
        job_types: None,
    };
    let before = updates(&pool).await;
    let claimed = store.exchange(&[], "w", t0, &claim).await.unwrap().claimed;
    assert_eq!(claimed.len(), 300);
    assert_eq!(
        updates_after(&pool, before, 300).await,
        (300, 300),
        "claims, HOT claims"
    );

    let done: Vec<Outcome> = claimed
        .iter()
        .map(|j| Outcome::Completed {
            token: j.token(),
            result: json!(null),
        })
        .collect();
    let before = updates(&pool).await;
    let none = Claim { limit: 0, ..claim };
    let applied = store.exchange(&done, "w", t0, &none).await.unwrap().applied;
    assert_eq!(applied.len(), 300);
    assert_eq!(
        updates_after(&pool, before, 300).await,
        (300, 300),
        "completions, HOT completions"
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM job_queue")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "every claimed job left the queue");
    pool.close().await;
    db.cleanup().await;
}

/// Rows written straight into `jobs` (a migration, an operator's SQL) are listed and counted:
/// the insert trigger keeps `job_catalog` and `job_counts` whole.
#[tokio::test]
async fn rows_written_outside_the_store_are_listed_and_counted() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(db.url())
        .await
        .unwrap();
    let store = PgStore::new(pool.clone());
    sqlx::query(
        "INSERT INTO jobs (id, name, job_type, status, priority, estimated_duration, payload, \
                           max_retries, created_at, run_at) \
         SELECT gen_random_uuid(), 'by-hand-' || g, 'sleep', \
                CASE WHEN g % 2 = 0 THEN 'COMPLETED' ELSE 'PENDING' END, 5, 1.0, '{}', 3, \
                now(), now() \
         FROM generate_series(1, 10) g",
    )
    .execute(&pool)
    .await
    .unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!(
        (stats.total_jobs, stats.pending, stats.completed),
        (10, 5, 5)
    );
    let page = |status| jobsched_core::JobFilter {
        status,
        name_prefix: Some("by-hand-1".into()),
        page: 1,
        page_size: 50,
        ..Default::default()
    };
    // by-hand-1 and by-hand-10: one PENDING (its own index), one COMPLETED (the catalog).
    let all = store.list(&page(None)).await.unwrap();
    assert_eq!(all.jobs.len(), 2, "{:?}", all.jobs);
    let done = store
        .list(&page(Some(jobsched_core::JobStatus::Completed)))
        .await
        .unwrap();
    assert_eq!(
        done.jobs
            .iter()
            .map(|j| j.name.as_str())
            .collect::<Vec<_>>(),
        vec!["by-hand-10"]
    );
    // FAILED and CANCELLED rows are listed under their status (the insert trigger sets the
    // listing key, `rare_end`, that the store's own statements set).
    sqlx::query(
        "INSERT INTO jobs (id, name, job_type, status, priority, estimated_duration, payload, \
                           max_retries, created_at, run_at) \
         VALUES (gen_random_uuid(), 'ended-failed', 'sleep', 'FAILED', 5, 1.0, '{}', 3, now(), \
                 now()), \
                (gen_random_uuid(), 'ended-cancelled', 'sleep', 'CANCELLED', 5, 1.0, '{}', 3, \
                 now(), now())",
    )
    .execute(&pool)
    .await
    .unwrap();
    for (status, name) in [
        (jobsched_core::JobStatus::Failed, "ended-failed"),
        (jobsched_core::JobStatus::Cancelled, "ended-cancelled"),
    ] {
        let listed = store
            .list(&jobsched_core::JobFilter {
                status: Some(status),
                page: 1,
                page_size: 50,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            listed
                .jobs
                .iter()
                .map(|j| j.name.as_str())
                .collect::<Vec<_>>(),
            vec![name],
            "{status:?}"
        );
    }
    pool.close().await;
    db.cleanup().await;
}

/// WAL records of this database's pages between two positions (pg_walinspect; other
/// databases' records are left out, so tests running beside this one do not count): their
/// bytes without full-page images, and how many full-page images there were.
async fn wal_of_database(pool: &sqlx::PgPool, from: &str, to: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT COALESCE(sum(record_length - fpi_length), 0)::int8, \
                count(*) FILTER (WHERE fpi_length > 0) \
           FROM pg_get_wal_records_info($1::pg_lsn, $2::pg_lsn) \
          WHERE block_ref LIKE '%/' || (SELECT oid FROM pg_database \
                                         WHERE datname = current_database()) || '/%'",
    )
    .bind(from)
    .bind(to)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The WAL flushed so far. pg_walinspect reads no further; this test's statements commit
/// synchronously, so their records lie before it once they returned.
async fn wal_position(pool: &sqlx::PgPool) -> String {
    sqlx::query_scalar("SELECT pg_current_wal_flush_lsn()::text")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The column order: a claim and a completion log the columns they change, not the whole row
/// (the columns they write sit together at the end of the row, so where the new version stays
/// on its page Postgres logs only what differs): 504 bytes per job here. The same test on the
/// layout before the columns were reordered logged 681; the peer's whole trip takes about 500
/// under load.
#[tokio::test]
async fn a_claim_and_a_completion_log_little_more_than_the_columns_they_change() {
    // The page's room is given (see `roomy_table`; the bench measures it under load): this
    // test is about what the layout makes Postgres log.
    let Some((db, pool, store)) = roomy_table().await else {
        return;
    };
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        .execute(&pool)
        .await
        .expect("pg_walinspect (PostgreSQL contrib) is needed to read the WAL");
    let t0 = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    let n = 500;
    let owner = format!("worker-{}", uuid::Uuid::new_v4().simple());
    let claim = Claim {
        limit: n,
        order: PolicyKind::Fcfs,
        lease_until: t0 + chrono::Duration::seconds(30),
        queue: "default".into(),
        concurrency_limit: None,
        job_types: None,
    };
    // A checkpoint between the insert and the measurement (another test dropping its database
    // forces one) makes the first change to each page log the page whole and its rows in full,
    // whatever the layout: such a round is measured again on new rows.
    let mut rounds = Vec::new();
    for round in 0..5 {
        // New jobs (new ids) each round: a round measured again must not re-insert the last.
        let jobs = sleep_jobs(&format!("wal-{round}-"), n);
        store.insert_many(&jobs, t0).await.unwrap();
        // Settle the insert's pages (hint bits) before measuring.
        sqlx::query("SELECT count(*) FROM jobs")
            .execute(&pool)
            .await
            .unwrap();
        let from = wal_position(&pool).await;
        let claimed = store.exchange(&[], &owner, t0, &claim).await.unwrap();
        assert_eq!(claimed.claimed.len(), n as usize);
        let outcomes: Vec<Outcome> = claimed
            .claimed
            .iter()
            .map(|j| Outcome::Completed {
                token: j.token(),
                result: json!({ "slept": 0 }),
            })
            .collect();
        let done = store
            .exchange(&outcomes, &owner, t0, &Claim::none(t0))
            .await
            .unwrap();
        assert_eq!(done.applied.len(), n as usize);
        let to = wal_position(&pool).await;
        let (bytes, full_pages) = wal_of_database(&pool, &from, &to).await;
        rounds.push((bytes / i64::from(n), full_pages));
        if full_pages == 0 {
            break;
        }
    }
    let Some(&(per_job, _)) = rounds.iter().find(|(_, full_pages)| *full_pages == 0) else {
        panic!("every round ran into a checkpoint (B per job, full pages): {rounds:?}");
    };
    assert!(
        per_job < 600,
        "a claim and a completion logged {per_job} B per job (goal: under 600); rounds {rounds:?}"
    );
    pool.close().await;
    db.cleanup().await;
}
