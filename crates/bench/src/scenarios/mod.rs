//! The scenarios and the helpers they share.

pub mod backlog;
pub mod burn;
pub mod console;
pub mod fidelity;
pub mod latency;
pub mod post;
pub mod seed;
pub mod switch;

use crate::cluster::Cluster;
use crate::report::Report;
use crate::{BenchArgs, BenchError};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use jobsched_client::{Client, Job, JobId, JobStats, JobStatus, PolicyKind, PolicyUpdate};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;

/// What a scenario's `run` returns: its figures go to the report as it measures them.
pub type Ran = Result<(), BenchError>;

/// Concurrent requests used to read jobs back after a measurement.
const FETCH_CONCURRENCY: usize = 16;

/// Milliseconds from `a` to `b`.
pub(crate) fn ms(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    (b - a)
        .num_microseconds()
        .map_or(f64::NAN, |us| us as f64 / 1000.0)
}

/// Seconds from `a` to `b`.
pub(crate) fn secs(a: DateTime<Utc>, b: DateTime<Utc>) -> f64 {
    ms(a, b) / 1000.0
}

/// The benchmark database, for a scenario that writes its rows itself (spawn mode only).
pub(crate) fn own_database(cluster: &Cluster, scenario: &str) -> Result<sqlx::PgPool, BenchError> {
    cluster.job_db().cloned().ok_or_else(|| {
        BenchError::Check(format!(
            "the {scenario} scenario writes its rows itself: run it with --spawn"
        ))
    })
}

/// Switch the policy (and pause state, and quantum if given).
pub(crate) async fn set_policy(
    cluster: &Cluster,
    policy: PolicyKind,
    paused: bool,
    quantum: Option<f64>,
) -> Result<(), BenchError> {
    let mut update = PolicyUpdate::new(policy);
    update.paused = Some(paused);
    update.quantum_seconds = quantum;
    cluster.admin().set_policy(&update).await?;
    Ok(())
}

/// Read jobs back (after a measurement, so it adds no load to it), in the order of `ids`.
pub(crate) async fn fetch_jobs(client: &Client, ids: &[JobId]) -> Result<Vec<Job>, BenchError> {
    futures::stream::iter(ids.iter().copied())
        .map(|id| async move { client.get(id).await })
        .buffered(FETCH_CONCURRENCY)
        .try_collect()
        .await
        .map_err(BenchError::from)
}

fn finished(s: &JobStats) -> i64 {
    s.completed + s.failed + s.cancelled
}

/// Poll `GET /jobs/stats` until `n` more jobs than in `base` have finished.
pub(crate) async fn wait_finished(
    client: &Client,
    base: &JobStats,
    n: u64,
    timeout: Duration,
    poll: Duration,
) -> Result<JobStats, BenchError> {
    let deadline = Instant::now() + timeout;
    loop {
        let stats = client.stats().await?;
        if finished(&stats) - finished(base) >= n as i64 {
            return Ok(stats);
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout {
                what: format!("{n} jobs to finish"),
                secs: timeout.as_secs(),
                hint: format!(
                    "{} finished so far (pending {}, scheduled {}, running {}); check the \
                     workers with GET /scheduler/status",
                    finished(&stats) - finished(base),
                    stats.pending,
                    stats.scheduled,
                    stats.running
                ),
            });
        }
        tokio::time::sleep(poll).await;
    }
}

/// Every job COMPLETED with its timestamps, else a clear error.
pub(crate) fn ensure_completed(jobs: &[Job]) -> Result<(), BenchError> {
    let bad: Vec<&Job> = jobs
        .iter()
        .filter(|j| {
            j.status != JobStatus::Completed
                || j.started_at.is_none()
                || j.completed_at.is_none()
                || j.scheduled_at.is_none()
        })
        .collect();
    if let Some(first) = bad.first() {
        return Err(BenchError::Check(format!(
            "{} of {} jobs did not complete normally; e.g. job {} is {} ({}); the figures would be \
             meaningless",
            bad.len(),
            jobs.len(),
            first.id,
            first.status,
            first.error_message.as_deref().unwrap_or("no error message")
        )));
    }
    Ok(())
}

/// `(scheduled, started, completed)` of a completed job (checked by [`ensure_completed`]).
pub(crate) fn times(j: &Job) -> (DateTime<Utc>, DateTime<Utc>, DateTime<Utc>) {
    let t = j.created_at;
    (
        j.scheduled_at.unwrap_or(t),
        j.started_at.unwrap_or(t),
        j.completed_at.unwrap_or(t),
    )
}

/// Sleep payload.
pub(crate) fn sleep_payload(seconds: f64) -> Value {
    json!({ "duration": seconds })
}

/// Record the machine, versions and settings in the report's meta.
pub(crate) async fn describe(
    args: &BenchArgs,
    cluster: &Cluster,
    report: &mut Report,
    started: DateTime<Utc>,
) {
    let meta = &mut report.meta;
    meta.insert("started_at".into(), json!(started.to_rfc3339()));
    meta.insert("finished_at".into(), json!(Utc::now().to_rfc3339()));
    meta.insert("mode".into(), json!(cluster.mode()));
    meta.insert("api_url".into(), json!(cluster.url()));
    meta.insert("redis_prefix".into(), json!(cluster.prefix()));
    meta.insert(
        "args".into(),
        serde_json::to_value(args).unwrap_or(Value::Null),
    );
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_string());
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| {
        c.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    });
    let pg = match cluster.job_db() {
        Some(pool) => sqlx::query_scalar::<_, String>("SELECT version()")
            .fetch_one(pool)
            .await
            .ok(),
        None => None,
    };
    let redis = match cluster.redis_url() {
        Some(url) => redis_info(url, "server").await.and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("redis_version:"))
                .map(|l| l.trim_start_matches("redis_version:").trim().to_string())
        }),
        None => None,
    };
    meta.insert(
        "load_average_at_start".into(),
        json!(LOAD_AT_START.get().cloned().flatten()),
    );
    meta.insert("load_average_at_end".into(), json!(load_average()));
    meta.insert(
        "machine".into(),
        json!({
            "cores": cores,
            "memory_gib": mem_gib,
            "cpu": cpu,
            "kernel": kernel,
            "postgres": pg,
            "redis": redis,
        }),
    );
}

/// `INFO <section>` of a Redis server.
pub(crate) async fn redis_info(url: &str, section: &str) -> Option<String> {
    let client = redis::Client::open(url).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    redis::cmd("INFO")
        .arg(section)
        .query_async::<String>(&mut conn)
        .await
        .ok()
}

/// Commands processed by the Redis server so far (server-wide).
pub(crate) async fn redis_commands(url: &str) -> Option<u64> {
    let info = redis_info(url, "stats").await?;
    info.lines()
        .find(|l| l.starts_with("total_commands_processed:"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
}

/// `/proc/loadavg` when the benchmark started (set by [`record_load`]).
static LOAD_AT_START: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Remember the load average now (call once, at the start).
pub(crate) fn record_load() {
    let _ = LOAD_AT_START.set(load_average());
}

/// The 1/5/15-minute load averages.
pub(crate) fn load_average() -> Option<String> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

/// Checkpoints the Postgres server has performed so far (timed + requested).
pub(crate) async fn pg_checkpoints(pool: &sqlx::PgPool) -> Option<i64> {
    sqlx::query_scalar("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
        .fetch_one(pool)
        .await
        .ok()
}

/// The round trip of the smallest durable write on the benchmark database: one autocommit
/// UPDATE of a one-row table, `rounds` times, each after an idle `gap` (a freed slot's claim
/// comes after such a gap, and a server woken from idle answers slower than a busy one). A
/// job can only start once its claim is committed, so with no job claimed ahead of a free
/// slot (prefetch 0) every start waits at least this long. `None` without Postgres (dev
/// mode) or when the probe cannot run.
pub(crate) async fn commit_floor(
    cluster: &Cluster,
    gap: Duration,
    rounds: usize,
) -> Option<crate::stats::Summary> {
    let pool = cluster.job_db()?;
    let mut conn = pool.acquire().await.ok()?;
    let table = format!(
        "bench_commit_floor_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    sqlx::raw_sql(&format!(
        "CREATE TABLE {table} (id int PRIMARY KEY, n bigint NOT NULL); \
         INSERT INTO {table} VALUES (1, 0)"
    ))
    .execute(&mut *conn)
    .await
    .ok()?;
    let update = format!("UPDATE {table} SET n = n + 1 WHERE id = 1");
    let mut took = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        tokio::time::sleep(gap).await;
        let t = Instant::now();
        if sqlx::query(&update).execute(&mut *conn).await.is_err() {
            break;
        }
        took.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let _ = sqlx::raw_sql(&format!("DROP TABLE {table}"))
        .execute(&mut *conn)
        .await;
    crate::stats::summarize(&took)
}
