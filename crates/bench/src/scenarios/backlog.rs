//! `backlog`: what a very large queue costs (not part of `all`).
//!
//! Behind a paused scheduler, writes `--backlog-jobs` PENDING no-op jobs straight into the
//! database (one SQL statement per million rows; the triggers keep the listing keys and counts
//! as for any writer) and reports the rate. Then, with that backlog, times `GET /jobs/stats` and
//! `GET /scheduler/status` (the goal: ≤ 10 ms), reads the workers' memory, unpauses, and
//! measures the dispatch rate over a window after a warm-up, with the largest worker's RSS
//! while it dispatches (the engine leader lives in a worker). The queue is paused again at the
//! end; the benchmark database is dropped with the rest. Spawn mode only.

use super::{own_database, set_policy};
use crate::cluster::{Cluster, Rss};
use crate::report::{Goal, Report};
use crate::stats::summarize;
use crate::{BenchArgs, BenchError, progress};
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
pub async fn run(
    args: &BenchArgs,
    cluster: &mut Cluster,
    report: &mut Report,
) -> Result<(), BenchError> {
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
    let mut written = 0u32;
    while written < n {
        let rows = CHUNK.min(n - written);
        sqlx::query(
            "INSERT INTO jobs (id, name, job_type, status, priority, estimated_duration, \
                               payload, max_retries, created_at, run_at) \
             SELECT gen_random_uuid(), 'backlog-' || ($2::bigint + g), 'sleep', 'PENDING', \
                    1 + g % 10, 1.0, '{\"duration\": 0}'::jsonb, 0, now(), now() \
             FROM generate_series(1, $1::bigint) AS g",
        )
        .bind(i64::from(rows))
        .bind(i64::from(written))
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
    report.add(S, "pending jobs", Some(f64::from(n)), "jobs", None);
    report.add(
        S,
        "rows written (SQL, 1M per statement)",
        Some(f64::from(n) / write_s),
        "j/s",
        None,
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

    // Dispatch with the backlog: completions per second over the window.
    progress("backlog: unpausing");
    set_policy(cluster, PolicyKind::Fcfs, false, None).await?;
    tokio::time::sleep(WARM_UP).await;
    let before = client.stats().await?.completed;
    let t0 = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let after = client.stats().await?.completed;
    let window_s = t0.elapsed().as_secs_f64();
    let busy = largest(&cluster.worker_rss());
    set_policy(cluster, PolicyKind::Fcfs, true, None).await?;
    report.add(
        S,
        "dispatch rate with the backlog (completions per second)",
        Some((after - before) as f64 / window_s),
        "j/s",
        None,
    );
    report.add(S, "largest worker RSS, paused", idle, "MiB", None);
    report.add(
        S,
        "largest worker RSS, dispatching (incl. the engine leader)",
        busy,
        "MiB",
        Some(Goal::at_most(256.0)),
    );
    Ok(())
}
