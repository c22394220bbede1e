//! The machine's Postgres limit for a durable burn-down, with no scheduler around it.
//!
//! A scratch copy of the `jobs` table (`LIKE jobs INCLUDING ALL`: same columns, constraints
//! and indexes) gets N PENDING rows (UUIDv7 ids, like real submissions). Then, timed, chunks of
//! 1000 rows go through the same two batched statements the store issues for a short job —
//! PENDING→SCHEDULED as a `FOR UPDATE SKIP LOCKED` claim over `UNNEST`ed (id, attempt) arrays
//! that returns what a worker needs to run each job, and SCHEDULED→RUNNING→COMPLETED as one
//! `UNNEST` update (the start recorded with the outcome) — each statement its own transaction,
//! from `c` connections in parallel. Jobs per second is N over the timed part.

use crate::BenchError;
use chrono::Utc;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use uuid::Uuid;

const CHUNK: usize = 1000;
const TABLE: &str = "bench_scratch";

fn db(context: &str) -> impl FnOnce(sqlx::Error) -> BenchError {
    crate::cluster::db_err(format!("Postgres baseline: {context}"))
}

/// Measure jobs/s at each connection count; returns `(connections, jobs/s)`.
pub async fn measure(
    url: &str,
    jobs: u32,
    connections: &[u32],
) -> Result<Vec<(u32, f64)>, BenchError> {
    let max = connections.iter().copied().max().unwrap_or(1);
    // No ping per acquire (the store's pools do not ping busy connections either).
    let pool = PgPoolOptions::new()
        .max_connections(max + 1)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(30))
        .connect(url)
        .await
        .map_err(db("cannot connect"))?;
    let mut out = Vec::new();
    let mut result = Ok(());
    for &c in connections {
        match run_once(&pool, jobs as usize, c as usize).await {
            Ok(rate) => out.push((c, rate)),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let _ = sqlx::query(&format!("DROP TABLE IF EXISTS {TABLE}"))
        .execute(&pool)
        .await;
    pool.close().await;
    result.map(|()| out)
}

async fn run_once(pool: &PgPool, n: usize, connections: usize) -> Result<f64, BenchError> {
    sqlx::query(&format!("DROP TABLE IF EXISTS {TABLE}"))
        .execute(pool)
        .await
        .map_err(db("drop scratch table"))?;
    sqlx::query(&format!("CREATE TABLE {TABLE} (LIKE jobs INCLUDING ALL)"))
        .execute(pool)
        .await
        .map_err(db("create scratch table"))?;
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    let now = Utc::now();
    for chunk in ids.chunks(5000) {
        sqlx::query(&format!(
            "INSERT INTO {TABLE} (id, name, job_type, status, priority, estimated_duration, \
                                  payload, max_retries, created_at, run_at) \
             SELECT t.id, 'baseline', 'sleep', 'PENDING', 5, 1.0, '{{\"duration\": 0}}'::jsonb, \
                    0, $2, $2 \
             FROM UNNEST($1::uuid[]) AS t(id)"
        ))
        .bind(chunk)
        .bind(now)
        .execute(pool)
        .await
        .map_err(db("insert rows"))?;
    }
    let chunks: Arc<Vec<Vec<Uuid>>> = Arc::new(
        ids.chunks(CHUNK)
            .map(|c| {
                let mut c = c.to_vec();
                c.sort();
                c
            })
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks: Vec<tokio::task::JoinHandle<Result<(), BenchError>>> = Vec::new();
    for _ in 0..connections {
        let (pool, chunks, next) = (pool.clone(), chunks.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(chunk) = chunks.get(i) else {
                    return Ok(());
                };
                burn_chunk(&pool, chunk).await?;
            }
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| BenchError::Check(format!("Postgres baseline task failed: {e}")))??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    sqlx::query(&format!("DROP TABLE {TABLE}"))
        .execute(pool)
        .await
        .map_err(db("drop scratch table"))?;
    Ok(n as f64 / elapsed)
}

/// PENDING → SCHEDULED → (read) → RUNNING → COMPLETED for one chunk, three statements.
async fn burn_chunk(pool: &PgPool, ids: &[Uuid]) -> Result<(), BenchError> {
    let zero = vec![0i32; ids.len()];
    let now = Utc::now();
    let lease = now + chrono::Duration::seconds(30);
    let scheduled = sqlx::query(&format!(
        "WITH claim AS ( \
             SELECT j.id FROM {TABLE} j \
             JOIN UNNEST($1::uuid[], $2::int4[]) AS t(id, attempt) \
               ON j.id = t.id AND j.attempt = t.attempt \
             WHERE (j.status = 'PENDING') IS TRUE ORDER BY j.id FOR UPDATE OF j SKIP LOCKED) \
         UPDATE {TABLE} j SET status = 'SCHEDULED', attempt = j.attempt + 1, scheduled_at = $3, \
                              lease_owner = NULL, lease_expires_at = $4 \
         FROM claim WHERE j.id = claim.id AND (j.status = 'PENDING') IS TRUE \
         RETURNING j.id, j.attempt, j.name, j.job_type, j.payload, j.checkpoint, \
                   j.retry_count, j.max_retries, j.created_at, j.slices"
    ))
    .bind(ids)
    .bind(&zero)
    .bind(now)
    .bind(lease)
    .fetch_all(pool)
    .await
    .map_err(db("schedule"))?;
    let mut s_ids = Vec::with_capacity(scheduled.len());
    let mut s_att = Vec::with_capacity(scheduled.len());
    for row in &scheduled {
        s_ids.push(row.try_get::<Uuid, _>("id").map_err(db("schedule"))?);
        s_att.push(row.try_get::<i32, _>("attempt").map_err(db("schedule"))?);
        // Decoded as the engine does before handing the job out.
        let _: serde_json::Value = row.try_get("payload").map_err(db("schedule"))?;
    }
    sort_pairs(&mut s_ids, &mut s_att);
    let results = vec![serde_json::json!({"slept": 0}); s_ids.len()];
    let began = vec![Some(Utc::now()); s_ids.len()];
    let done = sqlx::query(&format!(
        "UPDATE {TABLE} j SET status = 'COMPLETED', result = t.result, completed_at = $4, \
                              lease_owner = NULL, \
                              started_at = COALESCE(t.started, j.started_at), \
                              slices = j.slices + (t.started IS NOT NULL)::int \
         FROM UNNEST($1::uuid[], $2::int4[], $5::timestamptz[], $3::jsonb[]) \
              AS t(id, attempt, started, result) \
         WHERE j.id = t.id AND j.attempt = t.attempt \
           AND ((j.status = 'RUNNING' AND j.lease_owner = $6) \
                OR (j.status = 'SCHEDULED' AND t.started IS NOT NULL)) IS TRUE \
         RETURNING j.id, j.attempt"
    ))
    .bind(&s_ids)
    .bind(&s_att)
    .bind(&results)
    .bind(Utc::now())
    .bind(&began)
    .bind("baseline")
    .fetch_all(pool)
    .await
    .map_err(db("complete"))?;
    if s_ids.len() != ids.len() || done.len() != ids.len() {
        return Err(BenchError::Check(format!(
            "Postgres baseline: a chunk of {} rows scheduled {}, completed {}",
            ids.len(),
            s_ids.len(),
            done.len()
        )));
    }
    Ok(())
}

fn sort_pairs(ids: &mut Vec<Uuid>, attempts: &mut Vec<i32>) {
    let mut pairs: Vec<(Uuid, i32)> = ids.iter().copied().zip(attempts.iter().copied()).collect();
    pairs.sort();
    (*ids, *attempts) = pairs.into_iter().unzip();
}
