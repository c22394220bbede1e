//! `switch`: from `PUT /scheduler/policy` to the first dispatch that follows the new policy.
//!
//! One slot; a backlog of `--switch-jobs` 10 ms jobs submitted in one batch under FCFS, with
//! priorities falling from 10 to 1 in submission order (so FCFS always picks the least urgent
//! waiting job and a priority pick is unmistakable). Once three jobs finished, the policy is
//! switched to `priority`; the figure is `started_at` of the first job that was the priority
//! minimum of the jobs waiting when it started, minus the client's time just before the PUT.

use super::Ran;
use super::{
    ensure_completed, fetch_jobs, ms, secs, set_policy, sleep_payload, times, wait_finished,
};
use crate::cluster::Cluster;
use crate::report::{Goal, Report};
use crate::stats::{SwitchRecord, first_priority_compliant, summarize};
use crate::{BenchArgs, BenchError, progress};
use chrono::Utc;
use jobsched_client::{PolicyKind, SubmitJob};
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;

const S: &str = "switch";
const JOB_SECONDS: f64 = 0.010;

/// Run the scenario.
pub async fn run(args: &BenchArgs, cluster: &mut Cluster, report: &mut Report) -> Ran {
    let layout = cluster.ensure_workers(1, 1).await?;
    let n = args.switch_jobs;
    let mut delays = Vec::new();
    let mut skipped = Vec::new();
    let mut put_ms = Vec::new();
    let mut trials = Vec::new();
    for trial in 0..args.switch_trials {
        set_policy(cluster, PolicyKind::Fcfs, false, None).await?;
        let client = cluster.client();
        let base = client.stats().await?;
        let batch: Vec<SubmitJob> = (0..n)
            .map(|i| {
                let priority = 10 - i64::from(i * 10 / n);
                SubmitJob::new(format!("switch-{trial}-{i}"), "sleep")
                    .priority(priority)
                    .estimated_duration(JOB_SECONDS)
                    .payload(sleep_payload(JOB_SECONDS))
                    .max_retries(0)
            })
            .collect();
        let ids = client.submit_batch(&batch).await?;
        wait_finished(
            client,
            &base,
            3,
            Duration::from_secs(60),
            Duration::from_millis(2),
        )
        .await?;
        let put_at = Utc::now();
        let i0 = Instant::now();
        set_policy(cluster, PolicyKind::Priority, false, None).await?;
        put_ms.push(i0.elapsed().as_secs_f64() * 1000.0);
        let client = cluster.client();
        wait_finished(
            client,
            &base,
            u64::from(n),
            Duration::from_secs(120),
            Duration::from_millis(20),
        )
        .await?;
        let jobs = fetch_jobs(client, &ids).await?;
        ensure_completed(&jobs)?;
        let origin = jobs.iter().map(|j| j.created_at).min().unwrap_or(put_at);
        let records: Vec<SwitchRecord> = jobs
            .iter()
            .map(|j| SwitchRecord {
                priority: j.priority,
                created: secs(origin, j.created_at),
                started: secs(origin, times(j).1),
            })
            .collect();
        let Some((index, before)) = first_priority_compliant(&records, secs(origin, put_at)) else {
            return Err(BenchError::Check(format!(
                "switch trial {trial}: no job started after the switch followed the priority \
                 order; the policy change did not take effect"
            )));
        };
        let delay = ms(put_at, times(&jobs[index]).1);
        progress(&format!(
            "switch trial {}: first priority pick {delay:.1} ms after the PUT ({before} FCFS start(s) in between)",
            trial + 1
        ));
        delays.push(delay);
        skipped.push(before as f64);
        trials.push(json!({"delay_ms": delay, "starts_before": before}));
    }
    let d = summarize(&delays);
    report.figure(
        S,
        "switch → first compliant start, median",
        d.map(|s| s.p50),
        "ms",
    );
    report.add(
        S,
        "switch → first compliant start, worst trial",
        d.map(|s| s.max),
        "ms",
        Some(Goal::at_most(50.0)),
    );
    report.figure(
        S,
        "starts after the PUT that still followed FCFS (max)",
        summarize(&skipped).map(|s| s.max),
        "",
    );
    report.note("such starts were claimed before the worker saw the switch");
    report.figure(
        S,
        "PUT /scheduler/policy round trip, median",
        summarize(&put_ms).map(|s| s.p50),
        "ms",
    );
    report.detail(
        S,
        "trials",
        json!({"slots": layout.slots, "jobs_per_trial": n, "job_seconds": JOB_SECONDS, "trials": trials}),
    );
    set_policy(cluster, PolicyKind::Fcfs, false, None).await?;
    Ok(())
}
