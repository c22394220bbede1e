//! jobsched-metrics: every Prometheus metric jobsched exports, in one place.
//!
//! Metrics live in the process-wide default registry (so the controller's metrics, registered
//! elsewhere, appear on the same `/metrics`). Names follow Prometheus conventions: `jobsched_`
//! prefix, `_total` counters, `_seconds` units, and no per-job or per-object labels.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, TextEncoder, default_registry,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

mod server;
pub use server::{ReadyCheck, metrics_handler, serve};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The metrics listener failed.
    #[error("metrics server on {addr} failed: {source}")]
    Serve {
        /// Listen address.
        addr: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Every metric jobsched exports.
#[derive(Debug)]
pub struct Metrics {
    /// Jobs accepted by the API, by job_type.
    pub jobs_submitted: IntCounterVec,
    /// Jobs that reached an end, by job_type and outcome (completed, failed, cancelled, dead_lettered).
    pub jobs_finished: IntCounterVec,
    /// Failed runs scheduled for another attempt, by job_type.
    pub retries: IntCounterVec,
    /// Runs stopped because they exceeded their timeout, by job_type.
    pub job_timeouts: IntCounterVec,
    /// Leases taken back by the rescuer, by kind (running, scheduled, dead_lettered).
    pub lease_rescues: IntCounterVec,
    /// Time from submission to start of the first run, by policy.
    pub wait_seconds: HistogramVec,
    /// Run time of one run (slice), by job_type.
    pub run_seconds: HistogramVec,
    /// Round Robin slices that ended with the job preempted.
    pub rr_preemptions: IntCounter,
    /// Jobs per status (refreshed by the engine leader from the store).
    pub jobs_by_status: IntGaugeVec,
    /// PENDING jobs (the leader's gauge refresh).
    pub policy_queue_depth: IntGauge,
    /// Entries in the dead-letter queue.
    pub dead_letter_size: IntGauge,
    /// 1 for the active policy, 0 for the others (label `policy`).
    pub active_policy: IntGaugeVec,
    /// Policy switches applied by the engine.
    pub policy_switches: IntCounter,
    /// Jobs handed to the transport by the engine.
    pub dispatched: IntCounter,
    /// Seconds of work waiting per live execution slot (label `queue`): the summed estimated
    /// durations of PENDING jobs ÷ the slots of live workers (÷ 1 when none is live). Set by
    /// the API; what a KEDA trigger scales workers on.
    pub backlog_seconds: GaugeVec,
    /// PENDING jobs (label `queue`), sampled with [`Metrics::backlog_seconds`].
    pub backlog_jobs: IntGaugeVec,
    /// PENDING jobs of a type no live worker serves (label `job_type`), sampled with
    /// [`Metrics::backlog_seconds`]: they wait until a worker serving the type starts.
    pub unserved_jobs: IntGaugeVec,
    /// Jobs a worker found claimed under its lease by an exchange whose reply was lost, and
    /// handed back without counting a retry.
    pub claims_handed_back: IntCounter,
    /// Delayed jobs (submitted with a future `run_at`) moved into the queue when it came.
    pub jobs_promoted: IntCounter,
    /// Finished jobs deleted by retention.
    pub jobs_pruned: IntCounter,
    /// Schedule fire times handled, by result (enqueued, skipped).
    pub schedule_fires: IntCounterVec,
    /// Busy execution slots in this worker.
    pub worker_slots_busy: IntGauge,
    /// Execution slots in this worker.
    pub worker_slots_total: IntGauge,
    /// Live workers seen by the engine.
    pub workers_live: IntGauge,
    /// HTTP requests, by route template, method and status.
    pub http_requests: IntCounterVec,
    /// HTTP latency, by route template and method.
    pub http_duration: HistogramVec,
    /// 1 while this process holds the leader lease of `role` (engine, controller).
    pub leader: IntGaugeVec,
}

/// Buckets for waits and run times: 0.5 ms … 5 min.
const TIME_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0,
];

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    register(Box::new(c.clone()));
    c
}
fn counter(name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    register(Box::new(c.clone()));
    c
}
fn gauge(name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    register(Box::new(g.clone()));
    g
}
fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    register(Box::new(g.clone()));
    g
}
fn float_gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    register(Box::new(g.clone()));
    g
}
fn histogram_vec(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(TIME_BUCKETS.to_vec()),
        labels,
    )
    .expect("valid metric");
    register(Box::new(h.clone()));
    h
}
/// Names registered through this crate (a vector metric without series is absent from
/// `gather()`, but it is still exported once a series appears).
static REGISTERED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn register(c: Box<dyn prometheus::core::Collector>) {
    if let Ok(mut names) = REGISTERED.lock() {
        names.extend(c.desc().iter().map(|d| d.fq_name.clone()));
    }
    if let Err(e) = default_registry().register(c) {
        tracing::error!(error = %e, "metric registration failed");
    }
}

impl Metrics {
    fn new() -> Metrics {
        Metrics {
            jobs_submitted: counter_vec(
                "jobsched_jobs_submitted_total",
                "Jobs accepted by the API.",
                &["job_type"],
            ),
            jobs_finished: counter_vec(
                "jobsched_jobs_finished_total",
                "Jobs that reached an end, by outcome.",
                &["job_type", "outcome"],
            ),
            retries: counter_vec(
                "jobsched_job_retries_total",
                "Failed runs scheduled for another attempt.",
                &["job_type"],
            ),
            job_timeouts: counter_vec(
                "jobsched_job_timeouts_total",
                "Runs stopped because they exceeded their timeout.",
                &["job_type"],
            ),
            lease_rescues: counter_vec(
                "jobsched_lease_rescues_total",
                "Expired leases taken back by the rescuer.",
                &["kind"],
            ),
            wait_seconds: histogram_vec(
                "jobsched_job_wait_seconds",
                "Time from submission to the start of the first run.",
                &["policy"],
            ),
            run_seconds: histogram_vec(
                "jobsched_job_run_seconds",
                "Duration of one run (or Round Robin slice).",
                &["job_type"],
            ),
            rr_preemptions: counter(
                "jobsched_round_robin_preemptions_total",
                "Round Robin slices that ended with the job preempted.",
            ),
            jobs_by_status: gauge_vec(
                "jobsched_jobs",
                "Jobs per status, from the store.",
                &["status"],
            ),
            policy_queue_depth: gauge(
                "jobsched_policy_queue_depth",
                "PENDING jobs waiting to be claimed (refreshed by the leader).",
            ),
            dead_letter_size: gauge(
                "jobsched_dead_letter_size",
                "Entries in the dead-letter queue.",
            ),
            active_policy: gauge_vec(
                "jobsched_active_policy",
                "1 for the active scheduling policy.",
                &["policy"],
            ),
            policy_switches: counter(
                "jobsched_policy_switches_total",
                "Policy switches applied by the engine.",
            ),
            dispatched: counter(
                "jobsched_dispatched_total",
                "Jobs handed to workers by the engine.",
            ),
            backlog_seconds: float_gauge_vec(
                "jobsched_backlog_seconds",
                "Seconds of estimated work waiting per live execution slot (all slots busy).",
                &["queue"],
            ),
            backlog_jobs: gauge_vec("jobsched_backlog_jobs", "PENDING jobs.", &["queue"]),
            unserved_jobs: gauge_vec(
                "jobsched_unserved_jobs",
                "PENDING jobs of a type no live worker serves.",
                &["job_type"],
            ),
            claims_handed_back: counter(
                "jobsched_claims_handed_back_total",
                "Jobs claimed by an exchange whose reply was lost, handed back without a retry.",
            ),
            jobs_promoted: counter(
                "jobsched_jobs_promoted_total",
                "Delayed jobs moved into the queue when their run_at came.",
            ),
            schedule_fires: counter_vec(
                "jobsched_schedule_fires_total",
                "Fire times of periodic schedules handled, by result (enqueued, skipped).",
                &["result"],
            ),
            jobs_pruned: counter(
                "jobsched_jobs_pruned_total",
                "Finished jobs deleted by retention (JOBSCHED_RETENTION_COMPLETED / _FAILED).",
            ),
            worker_slots_busy: gauge(
                "jobsched_worker_slots_busy",
                "Busy execution slots in this worker.",
            ),
            worker_slots_total: gauge("jobsched_worker_slots", "Execution slots in this worker."),
            workers_live: gauge("jobsched_workers_live", "Live workers seen by the engine."),
            http_requests: counter_vec(
                "jobsched_http_requests_total",
                "HTTP requests by route template, method and status.",
                &["route", "method", "status"],
            ),
            http_duration: histogram_vec(
                "jobsched_http_request_duration_seconds",
                "HTTP request latency by route template and method.",
                &["route", "method"],
            ),
            leader: gauge_vec(
                "jobsched_leader",
                "1 while this process holds the leader lease of a role.",
                &["role"],
            ),
        }
    }
}

/// The process-wide metrics (registered on first use).
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Outcomes `jobsched_jobs_finished_total` counts.
pub const OUTCOMES: [&str; 4] = ["completed", "failed", "cancelled", "dead_lettered"];

/// Create every per-job-type series at 0 for the given job types (and the rescue kinds), so a
/// fresh process exports `jobsched_job_retries_total{job_type="sleep"} 0` and the like before
/// the first event: dashboards and `rate()` see a series from the start instead of nothing.
pub fn init_job_types<'a>(job_types: impl IntoIterator<Item = &'a str>) {
    let m = metrics();
    for t in job_types {
        m.jobs_submitted.with_label_values(&[t]);
        m.retries.with_label_values(&[t]);
        m.job_timeouts.with_label_values(&[t]);
        m.run_seconds.with_label_values(&[t]);
        for outcome in OUTCOMES {
            m.jobs_finished.with_label_values(&[t, outcome]);
        }
    }
    for kind in ["running", "scheduled", "dead_lettered"] {
        m.lease_rescues.with_label_values(&[kind]);
    }
    for result in ["enqueued", "skipped"] {
        m.schedule_fires.with_label_values(&[result]);
    }
}

/// Render every registered metric in the Prometheus text format.
pub fn render() -> String {
    let _ = metrics();
    let mut buf = Vec::new();
    let families = prometheus::gather();
    if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// Names of every metric family in the process: those this crate defines plus anything else
/// registered in the default registry with at least one series (for dashboard cross-checks).
pub fn metric_names() -> Vec<String> {
    let _ = metrics();
    let mut names: Vec<String> = prometheus::gather()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    if let Ok(registered) = REGISTERED.lock() {
        names.extend(registered.iter().cloned());
    }
    names.sort();
    names.dedup();
    names
}

/// A boxed readiness future.
pub type BoxReady = Pin<Box<dyn Future<Output = bool> + Send>>;

/// Make a [`ReadyCheck`] from a closure.
pub fn ready_check<F>(f: F) -> ReadyCheck
where
    F: Fn() -> BoxReady + Send + Sync + 'static,
{
    Arc::new(f)
}

/// Always-ready check.
pub fn always_ready() -> ReadyCheck {
    ready_check(|| Box::pin(async { true }))
}

/// Observe a duration in a histogram without a label.
pub fn observe(h: &Histogram, seconds: f64) {
    h.observe(seconds);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_series_exist_at_zero_before_any_event() {
        init_job_types(["zero_type"]);
        let page = render();
        for series in [
            r#"jobsched_job_retries_total{job_type="zero_type"} 0"#,
            r#"jobsched_jobs_submitted_total{job_type="zero_type"} 0"#,
            r#"jobsched_job_timeouts_total{job_type="zero_type"} 0"#,
            r#"jobsched_jobs_finished_total{job_type="zero_type",outcome="dead_lettered"} 0"#,
            r#"jobsched_lease_rescues_total{kind="running"} 0"#,
        ] {
            assert!(page.contains(series), "{series} missing");
        }
    }

    #[test]
    fn names_follow_conventions() {
        let m = metrics();
        m.jobs_submitted.with_label_values(&["sleep"]).inc();
        m.wait_seconds.with_label_values(&["fcfs"]).observe(0.001);
        let text = render();
        assert!(text.contains("jobsched_jobs_submitted_total{job_type=\"sleep\"} 1"));
        assert!(text.contains("jobsched_job_wait_seconds_bucket{policy=\"fcfs\",le=\"0.001\"} 1"));
        for name in metric_names().iter().filter(|n| n.starts_with("jobsched_")) {
            let text_type = text
                .lines()
                .find(|l| l.starts_with(&format!("# TYPE {name} ")))
                .unwrap_or_default();
            if text_type.ends_with("counter") {
                assert!(
                    name.ends_with("_total"),
                    "counter {name} must end in _total"
                );
            }
            assert!(
                !name.contains("millis") && !name.contains("_ms"),
                "{name}: base units only"
            );
        }
    }
}
