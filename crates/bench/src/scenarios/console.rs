//! `console`: the web console's server time per page with a large store.
//!
//! Fills the API's database with `--console-jobs` jobs in one SQL statement (mostly COMPLETED,
//! some FAILED and dead-lettered, some CANCELLED, a few PENDING behind a paused scheduler),
//! then replays, page by page, the requests the console makes for that page and times them
//! (sequentially, as the page does): Overview, Jobs (unfiltered, by status, by name prefix, by
//! id, a deep page), Job, Dead letters and Policy. Spawn mode only (it writes the rows itself).

use super::Ran;
use super::{own_database, set_policy};
use crate::cluster::Cluster;
use crate::report::{Goal, Report};
use crate::stats::summarize;
use crate::{BenchArgs, BenchError, progress};
use jobsched_client::PolicyKind;
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;

const S: &str = "console";
/// Timed views of each page (after two warm-up views).
const VIEWS: usize = 20;

/// Run the scenario.
pub async fn run(args: &BenchArgs, cluster: &mut Cluster, report: &mut Report) -> Ran {
    let pool = own_database(cluster, S)?;
    let base = cluster
        .url()
        .ok_or_else(|| BenchError::Check("the API is not up".into()))?
        .to_string();
    set_policy(cluster, PolicyKind::Fcfs, true, None).await?;
    let n = i64::from(args.console_jobs);
    progress(&format!("console: writing {n} jobs"));
    let started = Instant::now();
    // 90 % COMPLETED, 5 % FAILED (half of them dead letters), 4 % CANCELLED, 1 % PENDING.
    sqlx::query(
        "INSERT INTO jobs (id, name, job_type, status, priority, estimated_duration, payload, \
                           result, error_message, retry_count, max_retries, created_at, \
                           scheduled_at, started_at, completed_at, attempt, run_at, \
                           dead_letter, failed_at) \
         SELECT gen_random_uuid(), 'bench-' || g, \
                CASE WHEN s.status = 'PENDING' THEN 'sleep' \
                     ELSE (ARRAY['sleep', 'word_count', 'thumbnail'])[1 + g % 3] END, s.status, \
                1 + g % 10, 1.0, '{\"duration\": 0.01}'::jsonb, \
                CASE WHEN s.status = 'COMPLETED' THEN '{\"slept\": 0.01}'::jsonb END, \
                CASE WHEN s.status = 'FAILED' THEN 'simulated failure' END, \
                0, 3, t.at, \
                CASE WHEN s.status <> 'PENDING' THEN t.at END, \
                CASE WHEN s.status IN ('COMPLETED', 'FAILED') THEN t.at END, \
                CASE WHEN s.status IN ('COMPLETED', 'FAILED') THEN t.at + interval '10 ms' END, \
                CASE WHEN s.status = 'PENDING' THEN 0 ELSE 1 END, t.at, \
                s.status = 'FAILED' AND g % 2 = 0, \
                CASE WHEN s.status = 'FAILED' THEN t.at + interval '10 ms' END \
         FROM generate_series(1, $1::bigint) AS g, \
              LATERAL (SELECT CASE WHEN g % 100 < 90 THEN 'COMPLETED' \
                                   WHEN g % 100 < 95 THEN 'FAILED' \
                                   WHEN g % 100 < 99 THEN 'CANCELLED' \
                                   ELSE 'PENDING' END AS status) AS s, \
              LATERAL (SELECT now() - make_interval(secs => ($1 - g)::float8 / 1000) AS at) AS t",
    )
    .bind(n)
    .execute(&pool)
    .await
    .map_err(|e| BenchError::Check(format!("cannot write the console's rows: {e}")))?;
    sqlx::query("ANALYZE jobs, job_catalog")
        .execute(&pool)
        .await
        .map_err(|e| BenchError::Check(format!("cannot analyze: {e}")))?;
    report.figure(
        S,
        format!("rows written ({n} jobs, one statement)"),
        Some(started.elapsed().as_secs_f64()),
        "s",
    );
    let (some_id, failed_id): (uuid::Uuid, uuid::Uuid) = sqlx::query_as(
        "SELECT (SELECT id FROM jobs WHERE name = 'bench-12345'), \
                (SELECT id FROM jobs WHERE dead_letter LIMIT 1)",
    )
    .fetch_one(&pool)
    .await
    .map_err(|e| BenchError::Check(format!("cannot pick jobs: {e}")))?;

    let http = reqwest::Client::new();
    let token = args.admin_token.clone().or_else(|| args.token.clone());
    // The background sampler has to have read the store once before the overview is cheap.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = get(&http, &base, "/ui/api/overview", token.as_deref()).await?;
        if r["stats"]["total_jobs"].as_i64() >= Some(n) {
            break;
        }
        if Instant::now() > deadline {
            return Err(BenchError::Check(format!(
                "the console's overview never showed the {n} jobs: {r}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let pages: Vec<(&str, Vec<String>)> = vec![
        (
            "Overview",
            vec![
                "/ui".into(),
                "/ui/app.js".into(),
                "/ui/app.css".into(),
                "/ui/api/whoami".into(),
                "/ui/api/overview".into(),
            ],
        ),
        ("Jobs", vec!["/jobs/?page=1&page_size=25".into()]),
        (
            "Jobs, by status",
            vec!["/jobs/?status=FAILED&page=1&page_size=25".into()],
        ),
        (
            "Jobs, a status no job is in (RUNNING)",
            vec!["/jobs/?status=RUNNING&page=1&page_size=25".into()],
        ),
        (
            "Jobs, COMPLETED",
            vec!["/jobs/?status=COMPLETED&page=1&page_size=25".into()],
        ),
        (
            "Jobs, by name prefix",
            vec!["/jobs/?q=bench-12345&page=1&page_size=25".into()],
        ),
        (
            "Jobs, by id",
            vec![format!("/jobs/?q={some_id}&page=1&page_size=25")],
        ),
        (
            "Jobs, page 400",
            vec!["/jobs/?page=400&page_size=25".into()],
        ),
        (
            "Job (a dead letter)",
            vec![
                format!("/jobs/{failed_id}"),
                "/scheduler/dead-letter?limit=1000".into(),
            ],
        ),
        (
            "Dead letters",
            vec!["/scheduler/dead-letter?limit=1000".into()],
        ),
        ("Policy", vec!["/ui/api/overview".into()]),
    ];
    let mut details = serde_json::Map::new();
    for (page, paths) in &pages {
        let mut times = Vec::with_capacity(VIEWS);
        for view in 0..VIEWS + 2 {
            let t = Instant::now();
            for p in paths {
                get(&http, &base, p, token.as_deref()).await?;
            }
            if view >= 2 {
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        let s = summarize(&times);
        report.add(
            S,
            format!("{page} p50"),
            s.map(|s| s.p50),
            "ms",
            Some(Goal::at_most(100.0)),
        );
        report.figure(S, format!("{page} p99"), s.map(|s| s.p99), "ms");
        details.insert(page.to_string(), json!({"paths": paths, "ms": s}));
    }
    report.detail(S, "pages", details);
    set_policy(cluster, PolicyKind::Fcfs, false, None).await?;
    Ok(())
}

async fn get(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    token: Option<&str>,
) -> Result<serde_json::Value, BenchError> {
    let mut rb = http.get(format!("{base}{path}"));
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let r = rb
        .send()
        .await
        .map_err(|e| BenchError::Check(format!("GET {path}: {e}")))?;
    let status = r.status();
    let text = r
        .text()
        .await
        .map_err(|e| BenchError::Check(format!("GET {path}: {e}")))?;
    if !status.is_success() {
        return Err(BenchError::Check(format!(
            "GET {path}: {status} {text:.300}"
        )));
    }
    Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}
