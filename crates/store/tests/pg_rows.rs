//! The Postgres row layout (migration 0004): what the burn-down's cost rests on.

use chrono::{TimeZone, Utc};
use jobsched_core::NewJob;
use jobsched_core::ports::{DispatchStore, Finished, JobRepo, Outcome, Token, WorkerStore};
use jobsched_store::PgStore;
use jobsched_store::testing::TestDb;
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

#[tokio::test]
async fn a_dispatched_job_completes_with_a_hot_update() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    // One connection, so the statements below and the stats flush share a backend.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(db.url())
        .await
        .unwrap();
    // Whether an update is HOT depends on two things: no indexed column changes, and the new
    // version fits on the old one's page. This test is about the first. Pages this empty give
    // every claim and completion room without pruning, which other sessions' snapshots can
    // hold back.
    sqlx::query("ALTER TABLE jobs SET (fillfactor = 10)")
        .execute(&pool)
        .await
        .unwrap();
    let store = PgStore::new(pool.clone());
    let t0 = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    let jobs: Vec<NewJob> = (0..500)
        .map(|i| {
            let name = format!("h{i}");
            NewJob::new(
                &name,
                "sleep",
                Some(5),
                Some(1.0),
                Some(json!({ "duration": 0 })),
                Some(3),
            )
            .unwrap()
        })
        .collect();
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
    pool.close().await;
    db.cleanup().await;
}
