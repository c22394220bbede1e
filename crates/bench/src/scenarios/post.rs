//! `post`: single-job `POST /jobs/` throughput of the API.
//!
//! Dispatching is paused so the API is measured alone: `--post-clients` concurrent clients
//! submit no-op jobs one at a time for `--post-seconds`. Then dispatching resumes and the
//! backlog drains (its rate is reported too).

use super::Ran;
use super::{set_policy, sleep_payload, wait_finished};
use crate::cluster::Cluster;
use crate::report::Report;
use crate::stats::summarize;
use crate::{BenchArgs, BenchError, progress};
use jobsched_client::{PolicyKind, SubmitJob};
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;

const S: &str = "post";

/// Run the scenario.
pub async fn run(args: &BenchArgs, cluster: &mut Cluster, report: &mut Report) -> Ran {
    let layout = cluster.ensure_any_workers().await?;
    set_policy(cluster, PolicyKind::Fcfs, true, None).await?;
    let client = cluster.client().clone();
    let base = client.stats().await?;
    progress(&format!(
        "post: {} clients for {} s (dispatching paused)",
        args.post_clients, args.post_seconds
    ));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.post_seconds);
    let mut tasks = Vec::new();
    for c in 0..args.post_clients {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut last_error = None;
            let mut i = 0u64;
            while Instant::now() < deadline {
                let job = SubmitJob::new(format!("post-{c}-{i}"), "sleep")
                    .payload(sleep_payload(0.0))
                    .max_retries(0);
                i += 1;
                let t = Instant::now();
                match client.submit(&job).await {
                    Ok(_) => latencies.push(t.elapsed().as_secs_f64() * 1000.0),
                    Err(e) => {
                        errors += 1;
                        last_error = Some(e.to_string());
                    }
                }
            }
            (latencies, errors, last_error, Instant::now())
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut last_error = None;
    let mut end = start;
    for t in tasks {
        let (l, e, le, finished) = t
            .await
            .map_err(|e| BenchError::Check(format!("a POST client task failed: {e}")))?;
        latencies.extend(l);
        errors += e;
        last_error = last_error.or(le);
        end = end.max(finished);
    }
    let elapsed = (end - start).as_secs_f64();
    let ok = latencies.len() as u64;
    let rate = ok as f64 / elapsed;
    let lat = summarize(&latencies);
    progress(&format!(
        "post: {rate:.0} req/s, {errors} errors; draining {ok} jobs"
    ));
    report.figure(
        S,
        format!("POST /jobs/ throughput ({} clients)", args.post_clients),
        Some(rate),
        "req/s",
    );
    report.figure(S, "POST /jobs/ latency p50", lat.map(|s| s.p50), "ms");
    report.figure(S, "POST /jobs/ latency p99", lat.map(|s| s.p99), "ms");
    report.figure(S, "POST /jobs/ errors", Some(errors as f64), "");
    if let Some(e) = &last_error {
        report.note(format!("last error: {e}"));
    }
    let drain_start = Instant::now();
    set_policy(cluster, PolicyKind::Fcfs, false, None).await?;
    wait_finished(
        cluster.client(),
        &base,
        ok,
        Duration::from_secs(300),
        Duration::from_millis(50),
    )
    .await?;
    let drain = drain_start.elapsed().as_secs_f64();
    report.figure(
        S,
        format!("backlog drain ({} slots)", layout.slots),
        Some(ok as f64 / drain),
        "j/s",
    );
    report.detail(
        S,
        "post",
        json!({
            "clients": args.post_clients,
            "seconds": elapsed,
            "accepted": ok,
            "errors": errors,
            "latency_ms": lat,
            "drain_s": drain,
            "slots": layout.slots,
        }),
    );
    Ok(())
}
