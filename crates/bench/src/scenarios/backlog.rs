//! `backlog`: what a very large queue costs (not part of `all`).
//!
//! Behind a paused scheduler, writes `--backlog-jobs` PENDING no-op jobs straight into the
//! database (one SQL statement per million rows; the triggers keep the listing keys and counts
//! as for any writer) and reports the rate. Then, with that backlog, times `GET /jobs/stats` and
//! `GET /scheduler/status` (the goal: ≤ 10 ms), reads the workers' memory, unpauses, and
//! measures the dispatch rate over a window after a warm-up, with the largest worker's RSS
//! while it dispatches (the engine leader lives in a worker). The queue is paused again at the
//! end; the benchmark database is dropped with the rest. Spawn mode only.

use super::Ran;
use super::{own_database, pg_checkpoints, set_policy};
use crate::cluster::{Cluster, Rss};
use crate::report::{Goal, Report};
use crate::stats::summarize;
use crate::{BenchArgs, BenchError, progress};
use chrono::Utc;
use jobsched_client::PolicyKind;
use std::time::Duration;
use tokio::time::Instant;

const S: &str = "backlog";
/// Rows written per statement.
const CHUNK: u32 = 1_000_000;
/// Timed reads of each status endpoint (after two warm-up reads).
const READS: usize = 20;
/// Dispatching before the measured window starts.
const WARM_UP: Duration = Duration::from_secs(3);
/// The measured window.
const WINDOW: Duration = Duration::from_secs(10);

fn largest(rss: &[Rss]) -> Option<f64> {
    rss.iter().map(|r| r.current_mib).reduce(f64::max)
}

/// Run the scenario.
pub async fn run(args: &BenchArgs, cluster: &mut Cluster, report: &mut Report) -> Ran {
    let pool = own_database(cluster, S)?;
    cluster
        .ensure_workers(args.burn_workers, args.burn_slots)
        .await?;
    set_policy(cluster, PolicyKind::Fcfs, true, None).await?;
    let client = cluster.client().clone();
    let n = args.backlog_jobs;
    progress(&format!(
        "backlog: writing {n} pending jobs (dispatching paused)"
    ));
    let started = Instant::now();
    // Ids like the API's (UUIDv7: a millisecond timestamp, then a counter), in submission
    // order, so the primary key grows at its right edge as it does with real submissions.
    // Random (v4) ids would scatter each claim's new index entry over the whole key range.
    let base_ms = Utc::now().timestamp_millis();
    let mut written = 0u32;
    while written < n {
        let rows = CHUNK.min(n - written);
        sqlx::query(
            "INSERT INTO jobs (id, name, job_type, status, priority, estimated_duration, \
                               payload, max_retries, created_at, run_at) \
             SELECT uuid7, 'backlog-' || ($2::bigint + g), 'sleep', 'PENDING', \
                    1 + g % 10, 1.0, '{\"duration\": 0}'::jsonb, 0, now(), now() \
             FROM generate_series(1, $1::bigint) AS g, \
                  LATERAL (SELECT replace(gen_random_uuid()::text, '-', '') AS r, \
                                  $2::bigint + g AS k) AS x, \
                  LATERAL (SELECT (lpad(to_hex($3::bigint + x.k / 4096), 12, '0') || '7' \
                                   || lpad(to_hex(x.k % 4096), 3, '0') || '8' \
                                   || substr(x.r, 18, 15))::uuid AS uuid7) AS y",
        )
        .bind(i64::from(rows))
        .bind(i64::from(written))
        .bind(base_ms)
        .execute(&pool)
        .await
        .map_err(|e| BenchError::Check(format!("cannot write the backlog's rows: {e}")))?;
        written += rows;
        progress(&format!("backlog: {written} of {n} written"));
    }
    let write_s = started.elapsed().as_secs_f64();
    sqlx::query("ANALYZE jobs, job_catalog")
        .execute(&pool)
        .await
        .map_err(|e| BenchError::Check(format!("cannot analyze: {e}")))?;
    report.figure(S, "pending jobs", Some(f64::from(n)), "jobs");
    report.figure(
        S,
        "rows written (SQL, 1M per statement)",
        Some(f64::from(n) / write_s),
        "j/s",
    );

    // Status reads with the whole backlog queued.
    for (what, stats) in [("GET /jobs/stats", true), ("GET /scheduler/status", false)] {
        let mut times = Vec::with_capacity(READS);
        for i in 0..READS + 2 {
            let t = Instant::now();
            if stats {
                client.stats().await?;
            } else {
                client.status().await?;
            }
            if i >= 2 {
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        report.add_latency(
            S,
            what,
            summarize(&times),
            (Some(Goal::at_most(10.0)), None),
        );
    }
    let idle = largest(&cluster.worker_rss());

    // The write leaves gigabytes of dirty pages that the checkpointer and the kernel would
    // flush during the window, on the same two cores. A backlog that built up over time has
    // long been flushed: measure dispatch against that state. The pages a dispatch touches
    // still need a full-page image each after this checkpoint, as they would in production.
    // `JOBSCHED_BENCH_BACKLOG_CHECKPOINT=0` skips it (to measure what it changes).
    let t = Instant::now();
    let skip = std::env::var("JOBSCHED_BENCH_BACKLOG_CHECKPOINT").is_ok_and(|v| v == "0");
    match if skip {
        Err(sqlx::Error::Protocol(
            "skipped by JOBSCHED_BENCH_BACKLOG_CHECKPOINT=0".into(),
        ))
    } else {
        sqlx::query("CHECKPOINT").execute(&pool).await
    } {
        Ok(_) => report.figure(
            S,
            "CHECKPOINT after the write",
            Some(t.elapsed().as_secs_f64()),
            "s",
        ),
        Err(e) => progress(&format!(
            "backlog: CHECKPOINT refused ({e}); the window shares the machine with the write's flush"
        )),
    }

    // Dispatch with the backlog: completions per second over the window.
    progress("backlog: unpausing");
    set_policy(cluster, PolicyKind::Fcfs, false, None).await?;
    tokio::time::sleep(WARM_UP).await;
    let server = cluster.server_pool().await;
    let wal_before = match &server {
        Some(p) => wal_counters(p).await,
        None => None,
    };
    let before = client.stats().await?.completed;
    let t0 = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let after = client.stats().await?.completed;
    let window_s = t0.elapsed().as_secs_f64();
    let wal_after = match &server {
        Some(p) => wal_counters(p).await,
        None => None,
    };
    if let (Some(b), Some(a)) = (wal_before, wal_after) {
        // Server-wide, like the burn's figures. Full-page images are what a dispatch through
        // pages last written before a checkpoint pays on top of the claim and the outcome.
        let jobs = (after - before).max(1) as f64;
        report.figure(
            S,
            "Postgres WAL per dispatched job (server-wide)",
            Some((a.bytes - b.bytes) / jobs),
            "B/job",
        );
        report.figure(
            S,
            "of which full-page images, per dispatched job",
            Some((a.fpi - b.fpi) as f64 / jobs),
            "pages/job",
        );
        report.figure(
            S,
            "Postgres checkpoints during the window (server-wide)",
            Some((a.checkpoints - b.checkpoints) as f64),
            "",
        );
    }
    let busy = largest(&cluster.worker_rss());
    set_policy(cluster, PolicyKind::Fcfs, true, None).await?;
    report.figure(
        S,
        "dispatch rate with the backlog (completions per second)",
        Some((after - before) as f64 / window_s),
        "j/s",
    );
    report.figure(S, "largest worker RSS, paused", idle, "MiB");
    report.add(
        S,
        "largest worker RSS, dispatching (incl. the engine leader)",
        busy,
        "MiB",
        Some(Goal::at_most(256.0)),
    );
    Ok(())
}

/// Server-wide WAL counters (`pg_stat_wal`) and checkpoints started.
struct WalCounters {
    bytes: f64,
    fpi: i64,
    checkpoints: i64,
}

async fn wal_counters(pool: &sqlx::PgPool) -> Option<WalCounters> {
    let (bytes, fpi): (f64, i64) =
        sqlx::query_as("SELECT wal_bytes::float8, wal_fpi FROM pg_stat_wal")
            .fetch_one(pool)
            .await
            .ok()?;
    Some(WalCounters {
        bytes,
        fpi,
        checkpoints: pg_checkpoints(pool).await?,
    })
}
