//! The controller's Prometheus metrics, registered in the process-wide default registry.
//!
//! The leader gauge `jobsched_leader{role="controller"}` is the shared one from
//! `jobsched-metrics` (one collector per metric name may exist in a registry).

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, default_registry};
use std::sync::OnceLock;

/// The controller's metrics.
#[derive(Debug)]
pub(crate) struct ControllerMetrics {
    /// `jobsched_controller_reconciles_total{result="ok|error"}`.
    pub reconciles: IntCounterVec,
    /// `jobsched_controller_reconcile_errors_total{reason}`.
    pub errors: IntCounterVec,
    /// `jobsched_controller_reconcile_duration_seconds`.
    pub duration: Histogram,
    /// `jobsched_leader{role="controller"}`.
    pub leader: IntGauge,
}

fn register(c: Box<dyn prometheus::core::Collector>) {
    if let Err(e) = default_registry().register(c) {
        tracing::error!(error = %e, "registering a controller metric failed");
    }
}

impl ControllerMetrics {
    fn new() -> ControllerMetrics {
        let reconciles = IntCounterVec::new(
            Opts::new(
                "jobsched_controller_reconciles_total",
                "SchedulerConfig reconciliations, by result (ok, error).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let errors = IntCounterVec::new(
            Opts::new(
                "jobsched_controller_reconcile_errors_total",
                "Failed SchedulerConfig reconciliations, by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "jobsched_controller_reconcile_duration_seconds",
                "Duration of one SchedulerConfig reconciliation.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .expect("valid metric");
        register(Box::new(reconciles.clone()));
        register(Box::new(errors.clone()));
        register(Box::new(duration.clone()));
        // Pre-create the series so dashboards see zeros before the first reconcile.
        for result in ["ok", "error"] {
            reconciles.with_label_values(&[result]);
        }
        for reason in [
            "RedisUnavailable",
            "StoreUnavailable",
            "KubernetesApiError",
            "InvalidSpec",
        ] {
            errors.with_label_values(&[reason]);
        }
        let leader = jobsched_metrics::metrics()
            .leader
            .with_label_values(&["controller"]);
        ControllerMetrics {
            reconciles,
            errors,
            duration,
            leader,
        }
    }
}

/// The process-wide controller metrics (registered on first use).
pub(crate) fn metrics() -> &'static ControllerMetrics {
    static METRICS: OnceLock<ControllerMetrics> = OnceLock::new();
    METRICS.get_or_init(ControllerMetrics::new)
}
