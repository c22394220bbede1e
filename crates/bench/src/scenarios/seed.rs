//! `seed`: the original system's benchmark workload, per policy.
//!
//! Sleep jobs of `--seed-duration-ms` on `--seed-slots` slots, priorities spread 1..10 and
//! varied estimates, submitted with one `POST /jobs/` per job, [`SUBMITTERS`] requests in
//! flight (one sequential client cannot keep 4 × 10 ms slots fed on two shared cores, and the
//! scheduler, not the client, is what is measured here). Throughput runs from the first
//! submit (client clock) to the last `completed_at` (server clock; same machine); completion is
//! detected by polling `GET /jobs/stats` only, and the jobs are read back afterwards.

use super::Ran;
use super::{
    commit_floor, ensure_completed, fetch_jobs, ms, secs, set_policy, sleep_payload, times,
    wait_finished,
};
use crate::cluster::Cluster;
use crate::plot::PolicyBar;
use crate::report::{Goal, Report};
use crate::stats::summarize;
use crate::{BenchArgs, cpu, progress};
use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use jobsched_client::{PolicyKind, SubmitJob};
use jobsched_core::policy::DEFAULT_QUANTUM_SECONDS;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;

const S: &str = "seed";

/// Single-job POSTs in flight while submitting.
pub const SUBMITTERS: usize = 8;

/// Run the scenario.
pub async fn run(args: &BenchArgs, cluster: &mut Cluster, report: &mut Report) -> Ran {
    let layout = cluster.ensure_workers(1, args.seed_slots).await?;
    let duration = args.seed_duration_ms / 1000.0;
    let bound = layout.slots as f64 / duration;
    let n = args.seed_jobs as usize;
    report.figure(S, "sleep bound (slots ÷ duration)", Some(bound), "j/s");
    // What the machine allows: each start waits for its claim's commit (no job is claimed
    // ahead of a free slot), so a slot spends at least one durable commit per job.
    let gap = Duration::from_secs_f64(duration / layout.slots.max(1) as f64);
    if let Some(floor) = commit_floor(cluster, gap, 400).await {
        report.figure(
            S,
            "durable commit round trip p50 (1-row UPDATE after idle gaps of duration ÷ slots)",
            Some(floor.p50),
            "ms",
        );
        report.figure(
            S,
            "efficiency ceiling: one durable commit per start, nothing else",
            Some(duration * 1000.0 / (duration * 1000.0 + floor.p50) * 100.0),
            "%",
        );
    }
    let mut rng = StdRng::seed_from_u64(args.rng_seed);
    let mut details = Vec::new();
    let scenario_start = cpu::machine();
    for policy in PolicyKind::ALL {
        set_policy(cluster, policy, false, Some(DEFAULT_QUANTUM_SECONDS)).await?;
        let client = cluster.client();
        let jobs: Vec<SubmitJob> = (0..n)
            .map(|i| {
                SubmitJob::new(format!("seed-{policy}-{i}"), "sleep")
                    .priority(rng.random_range(1..=10))
                    .estimated_duration(rng.random_range(0.005..0.05))
                    .payload(sleep_payload(duration))
                    .max_retries(0)
            })
            .collect();
        let base = client.stats().await?;
        progress(&format!(
            "seed/{policy}: submitting {n} jobs, one POST each, {SUBMITTERS} in flight"
        ));
        let cpu_before = cpu::snapshot();
        let machine_before = cpu::machine();
        let t0 = Utc::now();
        let i0 = Instant::now();
        let ids: Vec<_> = futures::stream::iter(jobs.iter().map(|job| client.submit(job)))
            .buffered(SUBMITTERS)
            .map(|r| r.map(|j| j.id))
            .try_collect()
            .await?;
        let submit_secs = i0.elapsed().as_secs_f64();
        let timeout = Duration::from_secs_f64((n as f64 * duration * 20.0).max(60.0));
        wait_finished(client, &base, n as u64, timeout, Duration::from_millis(20)).await?;
        let cpu_used = cpu::usage(&cpu_before, &cpu::snapshot(), cluster.classifier());
        let machine_after = cpu::machine();
        let busy_secs = i0.elapsed().as_secs_f64();
        let done = fetch_jobs(client, &ids).await?;
        ensure_completed(&done)?;
        let last = done.iter().map(|j| times(j).2).max().unwrap_or(t0);
        let span = secs(t0, last);
        let throughput = n as f64 / span;
        let efficiency = throughput / bound * 100.0;
        let run_ms: Vec<f64> = done.iter().map(|j| ms(times(j).1, times(j).2)).collect();
        let e2e_ms: Vec<f64> = done.iter().map(|j| ms(j.created_at, times(j).2)).collect();
        let wait_ms: Vec<f64> = done.iter().map(|j| ms(j.created_at, times(j).1)).collect();
        // Slot time per job beyond the body's nominal length (dispatch, start, the sleep's
        // own overshoot; the outcome write trails the freed slot and is not in it).
        let idle_gap_ms = (layout.slots as f64 * span / n as f64 - duration) * 1000.0;
        let run = summarize(&run_ms);
        let e2e = summarize(&e2e_ms);
        progress(&format!(
            "seed/{policy}: {throughput:.0} j/s ({efficiency:.1} % of {bound:.0}); submit {:.0} req/s",
            n as f64 / submit_secs
        ));
        report.figure(S, format!("{policy} throughput"), Some(throughput), "j/s");
        report.add(
            S,
            format!("{policy} efficiency vs sleep bound"),
            Some(efficiency),
            "%",
            Some(Goal::at_least(97.0)),
        );
        // Where a slot's time goes between two jobs while the backlog lasts: the k-th dispatch
        // (in time order) reuses the slot freed by the (k − slots)-th recorded completion.
        let slots = layout.slots as usize;
        let mut by_dispatch: Vec<&jobsched_client::Job> = done.iter().collect();
        by_dispatch.sort_by_key(|j| times(j).0);
        let mut completions: Vec<_> = done.iter().map(|j| times(j).2).collect();
        completions.sort();
        let react: Vec<f64> = by_dispatch
            .iter()
            .enumerate()
            .skip(slots)
            .filter(|(k, j)| j.created_at < completions[k - slots])
            .map(|(k, j)| ms(completions[k - slots], times(j).0))
            .collect();
        let to_start: Vec<f64> = done.iter().map(|j| ms(times(j).0, times(j).1)).collect();
        let react_s = summarize(&react);
        let to_start_s = summarize(&to_start);
        report.figure(
            S,
            format!("{policy} slot time per job beyond the nominal body"),
            Some(idle_gap_ms),
            "ms",
        );
        let others = cpu_used
            .iter()
            .find(|(g, _)| g == "other processes")
            .map_or(0.0, |(_, s)| *s);
        let machine = machine_before
            .zip(machine_after)
            .and_then(|(b, a)| cpu::machine_cores(b, a));
        for (name, value) in [
            (
                "phase: completion recorded → next claim p50",
                react_s.map(|s| s.p50),
            ),
            ("phase: dispatch → start p50", to_start_s.map(|s| s.p50)),
            ("phase: start → completion recorded p50", run.map(|s| s.p50)),
            ("submit→complete p50", e2e.map(|s| s.p50)),
            ("submit→complete p99", e2e.map(|s| s.p99)),
        ] {
            report.figure(S, format!("{policy} {name}"), value, "ms");
        }
        report.plot.seed.push(PolicyBar {
            policy: policy.to_string(),
            throughput,
            bound,
            p50_ms: e2e.map_or(f64::NAN, |s| s.p50),
            p99_ms: e2e.map_or(f64::NAN, |s| s.p99),
        });
        details.push(json!({
            "policy": policy,
            "jobs": n,
            "slots": layout.slots,
            "span_s": span,
            "submit_s": submit_secs,
            "throughput_jps": throughput,
            "efficiency_pct": efficiency,
            "job_body_ms": run,
            "submit_to_start_ms": summarize(&wait_ms),
            "submit_to_complete_ms": e2e,
            "slot_gap_per_job_ms": idle_gap_ms,
            "completion_to_next_dispatch_ms": react_s,
            "dispatch_to_start_ms": to_start_s,
            "sequential_post_rate": n as f64 / submit_secs,
            "cpu_seconds": cpu_used,
            "other_processes_cores": others / busy_secs,
            "machine_busy_iowait_steal_cores": machine,
        }));
    }
    cpu::report_machine(report, S, "all policies", scenario_start, cpu::machine());
    report.detail(S, "policies", details);
    report.detail(S, "layout", layout);
    Ok(())
}
