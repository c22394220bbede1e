//! `fidelity`: does each policy do what it promises under a backlog?
//!
//! - Priority: a random arrival trace (exponential gaps, mean 5 ms; 10–30 ms jobs; random
//!   priorities) on `--fidelity-slots` slots, so a backlog builds. Priority inversions are
//!   counted over started pairs (see [`crate::stats::priority_inversions`]).
//! - SJF: the same kind of trace with exact estimates; the mean wait is compared with the
//!   offline non-preemptive SJF schedule of the same arrivals, slots and actual run times.
//! - Round Robin: `--rr-jobs` jobs of `--rr-duration` s with quantum `--rr-quantum`, all
//!   submitted at once; per-job progress is sampled halfway through the ideal makespan and
//!   Jain's index computed; slices per job are read at the end.

use super::Ran;
use super::{
    commit_floor, ensure_completed, fetch_jobs, ms, secs, set_policy, sleep_payload, times,
    wait_finished,
};
use crate::cluster::Cluster;
use crate::report::{Goal, Report};
use crate::stats::{
    SimJob, StartRecord, jain_index, offline_sjf_waits, priority_inversions, summarize,
};
use crate::{BenchArgs, BenchError, progress};
use chrono::{DateTime, Utc};
use jobsched_client::{Client, Job, JobId, JobStatus, PolicyKind, SubmitJob};
use jobsched_core::policy::DEFAULT_QUANTUM_SECONDS;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;

const S: &str = "fidelity";
/// Mean gap between arrivals in the traces, seconds.
const MEAN_GAP: f64 = 0.005;
/// Job lengths in the traces, seconds.
const MIN_RUN: f64 = 0.010;
const MAX_RUN: f64 = 0.030;
const WAIT: Duration = Duration::from_secs(180);

/// Give every process time to receive the policy-change event before jobs arrive (the worker
/// applies a Round Robin quantum only once it has seen the change).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[derive(Debug, Clone, Copy)]
struct Arrival {
    offset: f64,
    duration: f64,
    priority: i64,
}

fn trace(rng: &mut StdRng, n: u32) -> Vec<Arrival> {
    let mut t = 0.0;
    (0..n)
        .map(|_| {
            let u: f64 = rng.random();
            t += -MEAN_GAP * (1.0 - u).ln();
            Arrival {
                offset: t,
                duration: rng.random_range(MIN_RUN..MAX_RUN),
                priority: rng.random_range(1..=10),
            }
        })
        .collect()
}

/// Submit a trace at its arrival offsets (one POST per job); returns the ids and when each
/// POST was answered.
async fn submit_trace(
    client: &Client,
    trace: &[Arrival],
    tag: &str,
) -> Result<(Vec<JobId>, Vec<DateTime<Utc>>), BenchError> {
    let start = Instant::now();
    let mut ids = Vec::with_capacity(trace.len());
    let mut acked = Vec::with_capacity(trace.len());
    for (i, a) in trace.iter().enumerate() {
        tokio::time::sleep_until(start + Duration::from_secs_f64(a.offset)).await;
        let job = SubmitJob::new(format!("{tag}-{i}"), "sleep")
            .priority(a.priority)
            .estimated_duration(a.duration)
            .payload(sleep_payload(a.duration))
            .max_retries(0);
        ids.push(client.submit(&job).await?.id);
        acked.push(Utc::now());
    }
    Ok((ids, acked))
}

/// Run a fresh random trace of `args.fidelity_jobs` arrivals under `policy`; returns the
/// finished jobs and when each POST was answered.
async fn run_trace(
    cluster: &Cluster,
    policy: PolicyKind,
    rng: &mut StdRng,
    args: &BenchArgs,
    slots: usize,
) -> Result<(Vec<Job>, Vec<DateTime<Utc>>), BenchError> {
    progress(&format!(
        "fidelity/{policy}: {} arrivals on {slots} slots",
        args.fidelity_jobs
    ));
    let trace = &trace(rng, args.fidelity_jobs);
    set_policy(cluster, policy, false, Some(DEFAULT_QUANTUM_SECONDS)).await?;
    settle().await;
    let client = cluster.client();
    let base = client.stats().await?;
    let (ids, acked) = submit_trace(client, trace, &format!("fidelity-{policy}")).await?;
    wait_finished(
        client,
        &base,
        ids.len() as u64,
        WAIT,
        Duration::from_millis(50),
    )
    .await?;
    let jobs = fetch_jobs(client, &ids).await?;
    ensure_completed(&jobs)?;
    Ok((jobs, acked))
}

/// Run the scenario.
pub async fn run(args: &BenchArgs, cluster: &mut Cluster, report: &mut Report) -> Ran {
    let layout = cluster.ensure_workers(1, args.fidelity_slots).await?;
    let slots = layout.slots as usize;
    let mut rng = StdRng::seed_from_u64(args.rng_seed.wrapping_add(1));

    // ---- Priority ----
    let (jobs, acked) = run_trace(cluster, PolicyKind::Priority, &mut rng, args, slots).await?;
    let origin = first_created(&jobs);
    let records: Vec<StartRecord> = jobs
        .iter()
        .zip(&acked)
        .map(|(j, at)| {
            let (sch, st, _) = times(j);
            StartRecord {
                priority: j.priority,
                created: secs(origin, j.created_at),
                acked: secs(origin, *at),
                scheduled: secs(origin, sch),
                started: secs(origin, st),
            }
        })
        .collect();
    let inv = priority_inversions(&records);
    let waits: Vec<f64> = jobs.iter().map(|j| ms(j.created_at, times(j).1)).collect();
    let max_backlog = max_backlog(&records);
    report.figure(
        S,
        "priority: inversions (all started pairs)",
        Some(inv.total as f64),
        "",
    );
    report.add(
        S,
        "priority: inversions outside the in-flight window",
        Some(inv.outside_window as f64),
        "",
        Some(Goal::at_most(0.0)),
    );
    if inv.outside_window > 0 {
        report.note(format!(
            "the more urgent job's POST had been answered at most {:.2} ms before the other was dispatched",
            inv.max_lead * 1000.0
        ));
    }
    report.figure(
        S,
        "priority: peak backlog (jobs waiting)",
        Some(max_backlog as f64),
        "",
    );
    report.detail(
        S,
        "priority",
        json!({
            "jobs": jobs.len(),
            "slots": slots,
            "inversions": inv,
            "peak_backlog": max_backlog,
            "wait_ms": summarize(&waits),
        }),
    );

    // ---- SJF ----
    let (jobs, _) = run_trace(cluster, PolicyKind::Sjf, &mut rng, args, slots).await?;
    let origin = first_created(&jobs);
    let sim: Vec<SimJob> = jobs
        .iter()
        .map(|j| {
            let (_, st, done) = times(j);
            // The body's length: the sleep it asked for. `completed_at` is when the outcome
            // was written, which may trail the body (the slot is free before that).
            let asked = j
                .payload
                .get("duration")
                .and_then(serde_json::Value::as_f64);
            SimJob {
                arrival: secs(origin, j.created_at),
                run: asked.unwrap_or_else(|| secs(st, done)),
                key: j.estimated_duration,
            }
        })
        .collect();
    let actual: Vec<f64> = jobs
        .iter()
        .map(|j| secs(j.created_at, times(j).1))
        .collect();
    let offline = offline_sjf_waits(&sim, slots);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (actual_mean, offline_mean) = (mean(&actual), mean(&offline));
    let excess = (actual_mean - offline_mean) / offline_mean * 100.0;
    report.figure(S, "sjf: mean wait", Some(actual_mean * 1000.0), "ms");
    report.figure(
        S,
        "sjf: offline SJF mean wait (same trace)",
        Some(offline_mean * 1000.0),
        "ms",
    );
    report.add(
        S,
        "sjf: mean wait above offline SJF",
        offline_mean.is_normal().then_some(excess),
        "%",
        Some(Goal::at_most(2.0)),
    );
    let body: Vec<f64> = sim.iter().map(|s| s.run * 1000.0).collect();
    let span_actual = jobs
        .iter()
        .map(|j| times(j).2)
        .max()
        .map_or(0.0, |last| secs(origin, last));
    // Diagnostic: the same offline schedule with each job's slot occupancy stretched by the
    // measured per-job dispatch overhead (slot time outside job bodies from the first start to
    // the last completion), which separates the ordering from the overhead.
    let first_start = jobs
        .iter()
        .map(|j| times(j).1)
        .min()
        .map_or(0.0, |t| secs(origin, t));
    let body_total: f64 = sim.iter().map(|s| s.run).sum();
    let overhead = ((span_actual - first_start) * slots as f64 - body_total).max(0.0)
        / sim.len().max(1) as f64;
    let stretched: Vec<SimJob> = sim
        .iter()
        .map(|s| SimJob {
            run: s.run + overhead,
            ..*s
        })
        .collect();
    let stretched_mean = mean(&offline_sjf_waits(&stretched, slots));
    report.figure(
        S,
        "sjf: per-job dispatch overhead (slot time outside bodies)",
        Some(overhead * 1000.0),
        "ms",
    );
    report.figure(
        S,
        "sjf: mean wait above offline SJF with that overhead added",
        stretched_mean
            .is_normal()
            .then_some((actual_mean - stretched_mean) / stretched_mean * 100.0),
        "%",
    );
    // The least overhead the machine allows: one durable commit per start (see
    // [`commit_floor`]), after idle gaps like the trace's (a mean run ÷ slots).
    let mean_run = body_total / sim.len().max(1) as f64;
    let floor = commit_floor(
        cluster,
        Duration::from_secs_f64(mean_run / slots as f64),
        300,
    )
    .await;
    let floored_excess = floor.and_then(|floor| {
        let floored: Vec<SimJob> = sim
            .iter()
            .map(|s| SimJob {
                run: s.run + floor.p50 / 1000.0,
                ..*s
            })
            .collect();
        let floored_mean = mean(&offline_sjf_waits(&floored, slots));
        floored_mean
            .is_normal()
            .then_some((floored_mean - offline_mean) / offline_mean * 100.0)
    });
    report.figure(
        S,
        "sjf: durable commit round trip p50 (1-row UPDATE after idle gaps of a mean run ÷ slots)",
        floor.map(|f| f.p50),
        "ms",
    );
    report.figure(
        S,
        "sjf: least mean wait above offline SJF with one durable commit per start",
        floored_excess,
        "%",
    );
    report.detail(
        S,
        "sjf",
        json!({
            "jobs": jobs.len(),
            "slots": slots,
            "actual_mean_wait_ms": actual_mean * 1000.0,
            "offline_mean_wait_ms": offline_mean * 1000.0,
            "excess_pct": excess,
            "job_body_ms": summarize(&body),
            "makespan_s": span_actual,
            "overhead_per_job_ms": overhead * 1000.0,
            "offline_with_overhead_mean_wait_ms": stretched_mean * 1000.0,
        }),
    );

    // ---- Round Robin ----
    let (k, d, q) = (args.rr_jobs, args.rr_duration, args.rr_quantum);
    progress(&format!(
        "fidelity/round_robin: {k} jobs × {d} s, quantum {q} s, {slots} slots"
    ));
    set_policy(cluster, PolicyKind::RoundRobin, false, Some(q)).await?;
    settle().await;
    let client = cluster.client();
    let base = client.stats().await?;
    let batch: Vec<SubmitJob> = (0..k)
        .map(|i| {
            SubmitJob::new(format!("fidelity-rr-{i}"), "sleep")
                .estimated_duration(d)
                .payload(sleep_payload(d))
                .max_retries(0)
        })
        .collect();
    let ids = client.submit_batch(&batch).await?;
    let submitted = Instant::now();
    let makespan = f64::from(k) * d / slots as f64;
    tokio::time::sleep_until(submitted + Duration::from_secs_f64(makespan / 2.0)).await;
    let at = Utc::now();
    let snapshot = fetch_jobs(client, &ids).await?;
    let progress_s: Vec<f64> = snapshot
        .iter()
        .map(|j| {
            let saved = j
                .checkpoint
                .as_ref()
                .and_then(|c| c.get("elapsed"))
                .and_then(|v| v.as_f64())
                .unwrap_or(0.0);
            match (j.status, j.started_at) {
                (JobStatus::Completed, _) => d,
                (JobStatus::Running, Some(st)) => (saved + secs(st, at).clamp(0.0, q)).min(d),
                _ => saved.min(d),
            }
        })
        .collect();
    let jain = jain_index(&progress_s);
    wait_finished(client, &base, u64::from(k), WAIT, Duration::from_millis(50)).await?;
    let done = fetch_jobs(client, &ids).await?;
    ensure_completed(&done)?;
    let slices: Vec<f64> = done.iter().map(|j| f64::from(j.slices)).collect();
    let slice_s = summarize(&slices);
    let expected = (d / q - 1e-9).ceil();
    report.add(
        S,
        "round robin: Jain's index of progress at mid-run",
        jain,
        "",
        Some(Goal::at_least(0.95)),
    );
    report.figure(
        S,
        "round robin: slices per job (mean)",
        slice_s.map(|s| s.mean),
        "",
    );
    report.note(format!(
        "expected {expected:.0} (= ⌈{d} s ÷ {q} s⌉); range {:.0}–{:.0}",
        slice_s.map_or(0.0, |s| s.min),
        slice_s.map_or(0.0, |s| s.max)
    ));
    report.detail(
        S,
        "round_robin",
        json!({
            "jobs": k,
            "duration_s": d,
            "quantum_s": q,
            "slots": slots,
            "snapshot_after_s": makespan / 2.0,
            "progress_s": progress_s,
            "jain": jain,
            "slices": slices,
            "expected_slices": expected,
        }),
    );
    set_policy(
        cluster,
        PolicyKind::Fcfs,
        false,
        Some(DEFAULT_QUANTUM_SECONDS),
    )
    .await?;
    Ok(())
}

/// The most jobs waiting (submitted, not started) at any start instant.
fn max_backlog(records: &[StartRecord]) -> usize {
    records
        .iter()
        .map(|r| {
            records
                .iter()
                .filter(|o| o.created <= r.started && o.started > r.started)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// The earliest submission of a trace: time zero for its records.
fn first_created(jobs: &[jobsched_client::Job]) -> chrono::DateTime<Utc> {
    jobs.iter()
        .map(|j| j.created_at)
        .min()
        .unwrap_or_else(Utc::now)
}
