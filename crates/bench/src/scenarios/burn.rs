//! `burn`: a durable burn-down of no-op jobs, against the machine's Postgres limit.
//!
//! 1. The Postgres limit ([`crate::baseline`]) is measured first, on a scratch table that is
//!    dropped before the burn.
//! 2. `--burn-workers` × `--burn-slots` are started; their idle peak RSS is read.
//! 3. Dispatching is paused; `--burn-jobs` `sleep 0` jobs are inserted through
//!    `POST /jobs/batch` (`--burn-chunk` per request, 4 requests in flight); one second is left
//!    for the paused engine to finish loading them.
//! 4. Dispatching resumes; completion is detected by polling `GET /jobs/stats` every 100 ms.
//!    With spawned processes the exact end (last `completed_at`) and per-phase timings come from
//!    the database afterwards, with WAL bytes and write transactions per job (server-wide) and
//!    Redis commands per job (server-wide).

use super::Ran;
use super::{ms, pg_checkpoints, redis_commands, secs, set_policy, sleep_payload, wait_finished};
use crate::cluster::{Cluster, Rss};
use crate::report::{Goal, Report};
use crate::stats::{percentile, summarize};
use crate::{BenchArgs, BenchError, baseline, cpu, pgsample, progress};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use jobsched_client::{JobId, PolicyKind, SubmitJob};
use serde_json::json;
use sqlx::postgres::PgPool;
use std::time::Duration;
use tokio::time::Instant;

const S: &str = "burn";

/// `(scheduled_at, started_at, completed_at)` of a job row.
type Stamps = (
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

/// Server-wide Postgres counters.
#[derive(Debug, Clone)]
struct PgCounters {
    wal_lsn: String,
    next_xid: i64,
    checkpoints: Option<i64>,
}

async fn pg_counters(pool: &PgPool) -> Option<PgCounters> {
    let (wal_lsn, next_xid): (String, i64) = sqlx::query_as(
        "SELECT pg_current_wal_lsn()::text, txid_snapshot_xmax(txid_current_snapshot())",
    )
    .fetch_one(pool)
    .await
    .ok()?;
    Some(PgCounters {
        wal_lsn,
        next_xid,
        checkpoints: pg_checkpoints(pool).await,
    })
}

async fn wal_bytes(pool: &PgPool, from: &str, to: &str) -> Option<f64> {
    sqlx::query_scalar("SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn)::float8")
        .bind(to)
        .bind(from)
        .fetch_one(pool)
        .await
        .ok()
}

fn max_peak(rss: &[Rss]) -> Option<f64> {
    rss.iter().map(|r| r.peak_mib).reduce(f64::max)
}

/// Run the scenario.
pub async fn run(args: &BenchArgs, cluster: &mut Cluster, report: &mut Report) -> Ran {
    let n = args.burn_jobs;

    // ---- 1. the Postgres limit ----
    let baseline_url = match cluster.baseline_url().await {
        Ok(Some(url)) => Some(url),
        Ok(None) => {
            report.missing(S, "Postgres limit", "j/s", None, "dev mode uses SQLite");
            None
        }
        Err(e) => {
            report.missing(S, "Postgres limit", "j/s", None, e.to_string());
            None
        }
    };
    let mut limit: Option<(u32, f64)> = None;
    if let Some(url) = &baseline_url {
        progress(&format!(
            "burn: Postgres limit for {n} rows × 3 batched transitions, connections {:?}",
            args.baseline_connections
        ));
        limit = measure_limit(report, url, n, &args.baseline_connections, "").await;
    }

    // ---- 2. workers, idle memory ----
    let layout = cluster
        .ensure_workers(args.burn_workers, args.burn_slots)
        .await?;
    let rss_idle = cluster.worker_rss();

    // ---- 3. backlog while paused ----
    set_policy(cluster, PolicyKind::Fcfs, true, None).await?;
    let client = cluster.client().clone();
    let base = client.stats().await?;
    let chunk = args.burn_chunk;
    let chunks = n.div_ceil(chunk);
    // A checkpoint whose redo point falls between the insert and the burn makes the burn's
    // first change to every page it touches log the whole page (8 KiB), which depends on
    // where the server's checkpoint cycle happens to be, not on jobsched (the Postgres limit
    // above writes several hundred MB). Start the insert right after a checkpoint, as a peer
    // run that writes little WAL effectively does.
    if let Some(p) = cluster.server_pool().await {
        if let Err(e) = sqlx::query("CHECKPOINT").execute(&p).await {
            progress(&format!(
                "burn: CHECKPOINT refused ({e}); the burn may log full pages"
            ));
        }
    }
    progress(&format!(
        "burn: inserting {n} jobs in {chunks} batches (dispatching paused)"
    ));
    let i0 = Instant::now();
    let batches: Vec<Vec<JobId>> = futures::stream::iter(0..chunks)
        .map(|c| {
            let client = client.clone();
            async move {
                let from = c * chunk;
                let to = (from + chunk).min(n);
                let jobs: Vec<SubmitJob> = (from..to)
                    .map(|i| {
                        SubmitJob::new(format!("burn-{i}"), "sleep")
                            .payload(sleep_payload(0.0))
                            .max_retries(0)
                    })
                    .collect();
                client.submit_batch(&jobs).await
            }
        })
        .buffered(4)
        .try_collect()
        .await?;
    let insert_secs = i0.elapsed().as_secs_f64();
    let ids: Vec<JobId> = batches.into_iter().flatten().collect();
    report.figure(S, "jobs", Some(f64::from(n)), "jobs");
    report.figure(
        S,
        "bulk insert via POST /jobs/batch",
        Some(f64::from(n) / insert_secs),
        "j/s",
    );

    // ---- 4. burn ----
    let server = cluster.server_pool().await;
    let pg_before = match &server {
        Some(p) => pg_counters(p).await,
        None => None,
    };
    let redis_url = cluster.redis_url().map(str::to_string);
    let redis_before = match &redis_url {
        Some(u) => redis_commands(u).await,
        None => None,
    };
    progress(&format!(
        "burn: unpausing {} worker(s) × {} slots",
        layout.workers,
        layout.slots / u64::from(layout.workers.max(1))
    ));
    let sampler = cluster
        .job_db()
        .map(|p| pgsample::Sampler::start(p.clone(), Duration::from_millis(10)));
    let cpu_before = cpu::snapshot();
    let machine_before = cpu::machine();
    let unpaused_at = Utc::now();
    let i0 = Instant::now();
    set_policy(cluster, PolicyKind::Fcfs, false, None).await?;
    let timeout = Duration::from_secs((u64::from(n) / 200).max(300));
    match cluster.job_db() {
        // A cheap check on the partial indexes instead of GROUP BY over every row.
        Some(pool) => wait_drained(pool, timeout).await?,
        None => {
            wait_finished(
                &client,
                &base,
                u64::from(n),
                timeout,
                Duration::from_millis(250),
            )
            .await?;
        }
    }
    let observed = i0.elapsed().as_secs_f64();
    let cpu_used = cpu::usage(&cpu_before, &cpu::snapshot(), cluster.classifier());
    let machine_after = cpu::machine();
    let profile = match sampler {
        Some(s) => Some(s.finish().await),
        None => None,
    };
    let stats = client.stats().await?;
    let redis_after = match &redis_url {
        Some(u) => redis_commands(u).await,
        None => None,
    };
    let pg_after = match &server {
        Some(p) => pg_counters(p).await,
        None => None,
    };
    let rss_burn = cluster.worker_rss();
    let failed = stats.failed - base.failed;
    if failed > 0 {
        return Err(BenchError::Check(format!(
            "{failed} burn jobs FAILED; see GET /scheduler/dead-letter"
        )));
    }

    // Exact timings from the database when we own it.
    let mut throughput = f64::from(n) / observed;
    let mut phases = serde_json::Value::Null;
    if let Some(pool) = cluster.job_db() {
        let rows: Vec<Stamps> = sqlx::query_as(
            "SELECT scheduled_at, started_at, completed_at FROM jobs WHERE id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(pool)
        .await
        .map_err(crate::cluster::db_err("reading burn job timestamps"))?;
        let mut sched = Vec::with_capacity(rows.len());
        let mut to_start = Vec::with_capacity(rows.len());
        let mut to_done = Vec::with_capacity(rows.len());
        let mut done_at = Vec::with_capacity(rows.len());
        for (sc, st, co) in rows {
            if let (Some(sc), Some(st), Some(co)) = (sc, st, co) {
                sched.push(secs(unpaused_at, sc));
                to_start.push(ms(sc, st));
                to_done.push(ms(st, co));
                done_at.push(secs(unpaused_at, co));
            }
        }
        done_at.sort_by(f64::total_cmp);
        sched.sort_by(f64::total_cmp);
        if let (Some(&end), Some(&first_dispatch), Some(&last_dispatch)) =
            (done_at.last(), sched.first(), sched.last())
        {
            throughput = f64::from(n) / end;
            let p10 = percentile(&done_at, 10.0).unwrap_or(0.0);
            let p90 = percentile(&done_at, 90.0).unwrap_or(end);
            let steady = 0.8 * f64::from(n) / (p90 - p10);
            let sch = summarize(&to_start);
            let run = summarize(&to_done);
            report.add(
                S,
                "burn-down throughput",
                Some(throughput),
                "j/s",
                Some(Goal::at_least(50_000.0).milestone(20_000.0)),
            );
            // Does the rate hold up as the table fills with processed rows?
            let quarter = end / 4.0;
            let first_q = done_at.partition_point(|&t| t <= quarter) as f64 / quarter;
            let last_q =
                (done_at.len() - done_at.partition_point(|&t| t <= end - quarter)) as f64 / quarter;
            let rates = [
                ("steady rate (10 %→90 % of completions)", steady),
                ("completion rate, first quarter of the burn", first_q),
                ("completion rate, last quarter of the burn", last_q),
                ("claim rate (all claims)", f64::from(n) / last_dispatch),
            ];
            for (name, value) in rates {
                report.figure(S, name, Some(value), "j/s");
            }
            let durations = [
                ("unpause → first dispatch", Some(first_dispatch * 1000.0)),
                (
                    "phase: claimed→started p50 (0: a claim starts the job)",
                    sch.map(|s| s.p50),
                ),
                ("phase: started→completed recorded p50", run.map(|s| s.p50)),
            ];
            for (name, value) in durations {
                report.figure(S, name, value, "ms");
            }
            phases = json!({
                "end_s": end,
                "first_dispatch_s": first_dispatch,
                "last_dispatch_s": last_dispatch,
                "completions_10pct_s": p10,
                "completions_90pct_s": p90,
                "rate_first_quarter_jps": first_q,
                "rate_last_quarter_jps": last_q,
                "scheduled_to_started_ms": sch,
                "started_to_completed_ms": run,
            });
        }
    }
    if phases.is_null() {
        report.add(
            S,
            "burn-down throughput",
            Some(throughput),
            "j/s",
            Some(Goal::at_least(50_000.0).milestone(20_000.0)),
        );
        report.note("end detected by polling GET /jobs/stats every 100 ms");
    }
    // The disk and CPU are shared: measure the limit once more after the burn, at the best
    // connection count, and keep the better figure.
    if let (Some(url), Some((c, _))) = (&baseline_url, limit) {
        progress(&format!("burn: Postgres limit again, {c} connection(s)"));
        if let Some(again) = measure_limit(report, url, n, &[c], ", after the burn").await
            && limit.is_none_or(|(_, l)| again.1 > l)
        {
            limit = Some(again);
        }
    }
    let limit = limit.map(|(_, l)| l);
    match limit {
        Some(l) => {
            report.figure(S, "Postgres limit (best)", Some(l), "j/s");
            report.add(
                S,
                "burn-down ÷ Postgres limit",
                Some(throughput / l * 100.0),
                "%",
                Some(Goal::at_least(75.0)),
            );
        }
        None => report.missing(
            S,
            "burn-down ÷ Postgres limit",
            "%",
            Some(Goal::at_least(75.0)),
            "no Postgres limit measured",
        ),
    }
    report.plot.burn = Some((throughput, limit));

    let per_job = |v: f64| v / f64::from(n);
    let mut counters = json!({});
    if let (Some(p), Some(b), Some(a)) = (&server, &pg_before, &pg_after) {
        let wal = wal_bytes(p, &b.wal_lsn, &a.wal_lsn).await;
        let xacts = (a.next_xid - b.next_xid) as f64;
        report.figure(
            S,
            "Postgres WAL per job (server-wide)",
            wal.map(per_job),
            "B/job",
        );
        if let (Some(cb), Some(ca)) = (b.checkpoints, a.checkpoints) {
            report.figure(
                S,
                "Postgres checkpoints during the burn (server-wide)",
                Some((ca - cb) as f64),
                "",
            );
        }
        report.figure(
            S,
            "Postgres write transactions per 1000 jobs (server-wide)",
            Some(per_job(xacts) * 1000.0),
            "",
        );
        counters = json!({
            "wal_bytes": wal,
            "wal_from": b.wal_lsn,
            "wal_to": a.wal_lsn,
            "write_transactions": xacts,
        });
    }
    if let (Some(b), Some(a)) = (redis_before, redis_after) {
        let cmds = a.saturating_sub(b) as f64;
        report.figure(
            S,
            "Redis commands per 1000 jobs (server-wide)",
            Some(per_job(cmds) * 1000.0),
            "",
        );
        counters["redis_commands"] = json!(cmds);
    }
    // Who kept the CPU busy: cores in use on average while the burn ran.
    cpu::report_machine(report, S, "burn", machine_before, machine_after);
    for (group, seconds) in &cpu_used {
        report.figure(
            S,
            format!("CPU during burn: {group}"),
            Some(seconds / observed),
            "cores",
        );
        if group == "postgres" {
            // What each job cost the database, comparable with a peer's figure.
            report.figure(
                S,
                "Postgres CPU per job",
                Some(seconds / f64::from(n) * 1e6),
                "µs",
            );
        }
    }
    if let Some(p) = &profile {
        for share in p.statements.iter().take(6) {
            report.figure(
                S,
                format!("Postgres active backends (sampled): {}", share.what),
                Some(share.backends),
                "backends",
            );
        }
        for share in p.waits.iter().take(4) {
            report.figure(
                S,
                format!("Postgres active backends by wait (sampled): {}", share.what),
                Some(share.backends),
                "backends",
            );
        }
    }
    match (max_peak(&rss_idle), max_peak(&rss_burn)) {
        (Some(idle), Some(burn)) => {
            report.figure(
                S,
                "worker peak RSS, idle (largest process)",
                Some(idle),
                "MiB",
            );
            report.figure(
                S,
                "worker peak RSS, during burn (largest process)",
                Some(burn),
                "MiB",
            );
        }
        _ => {
            report.missing(
                S,
                "worker peak RSS, idle",
                "MiB",
                None,
                "workers not spawned by the benchmark",
            );
            report.missing(
                S,
                "worker peak RSS, during burn",
                "MiB",
                None,
                "workers not spawned by the benchmark",
            );
        }
    }
    report.detail(
        S,
        "burn",
        json!({
            "jobs": n,
            "workers": layout.workers,
            "slots": layout.slots,
            "insert_s": insert_secs,
            "observed_s": observed,
            "throughput_jps": throughput,
            "postgres_limit_jps": limit,
            "phases": phases,
            "counters": counters,
            "rss_idle": rss_idle,
            "rss_burn": rss_burn,
            "cpu_seconds": cpu_used,
            "postgres_profile": profile,
        }),
    );
    Ok(())
}

/// Poll until no job is PENDING, SCHEDULED or RUNNING.
async fn wait_drained(pool: &PgPool, timeout: Duration) -> Result<(), BenchError> {
    let deadline = Instant::now() + timeout;
    loop {
        let busy: bool = sqlx::query_scalar(
            "SELECT coalesce(sum(n), 0) <> 0 FROM job_counts \
             WHERE status IN ('PENDING', 'SCHEDULED', 'RUNNING')",
        )
        .fetch_one(pool)
        .await
        .map_err(crate::cluster::db_err(
            "checking whether the burn-down finished",
        ))?;
        if !busy {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout {
                what: "the burn-down to finish".into(),
                secs: timeout.as_secs(),
                hint: "check the workers with GET /scheduler/status and their logs".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Run the baseline at each connection count, record the figures, return the best.
async fn measure_limit(
    report: &mut Report,
    url: &str,
    n: u32,
    connections: &[u32],
    suffix: &str,
) -> Option<(u32, f64)> {
    match baseline::measure(url, n, connections).await {
        Ok(rates) => {
            for (c, rate) in &rates {
                report.figure(
                    S,
                    format!("Postgres limit, {c} connection(s){suffix}"),
                    Some(*rate),
                    "j/s",
                );
            }
            rates
                .into_iter()
                .reduce(|a, b| if b.1 > a.1 { b } else { a })
        }
        Err(e) => {
            report.missing(
                S,
                format!("Postgres limit{suffix}"),
                "j/s",
                None,
                e.to_string(),
            );
            None
        }
    }
}
