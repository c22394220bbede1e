//! jobsched-wire: the REST API's bodies that both sides speak, declared once. The server
//! (`jobsched-api`) builds and documents them (feature `openapi` derives their OpenAPI
//! schemas); the client (`jobsched-client`) sends and reads them.

use chrono::{DateTime, Utc};
use jobsched_core::{PolicyKind, RetryBackoff};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A job submission. Only `name` and `job_type` are required.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(example = json!({"name": "Hello world", "job_type": "sleep", "payload": {"duration": 3}}))
)]
pub struct JobCreate {
    /// Human name, 1–255 characters.
    pub name: String,
    /// Registered job type: `sleep`, `word_count` or `thumbnail`.
    pub job_type: String,
    /// 1 (highest) to 10 (lowest); default 5.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10))]
    pub priority: Option<i64>,
    /// Estimated run time in seconds (> 0; the SJF key); default 1.0.
    pub estimated_duration: Option<f64>,
    /// Type-specific input (a JSON object); default `{}`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub payload: Option<Value>,
    /// Retry budget, 0–10; default 3.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 10))]
    pub max_retries: Option<i64>,
    /// Longest one run may take, seconds (0.1 to 604800); default: the job type's (sleep
    /// 86460, word_count 600, thumbnail 300). A run past it is stopped and fails with
    /// "timed out after N s", then retries by `max_retries`.
    #[cfg_attr(feature = "openapi", schema(minimum = 0.1, maximum = 604800))]
    pub timeout_seconds: Option<f64>,
    /// Not to be started before this time (RFC 3339, at most 365 days ahead; a time in the
    /// past runs now). Until then the job is PENDING and counted as `delayed` in
    /// `/jobs/stats`; when it comes, the job joins the queue behind the jobs already waiting.
    /// Give either this or `delay_seconds`.
    pub run_at: Option<DateTime<Utc>>,
    /// Not to be started before this many seconds from now (0 to 31536000). Sets `run_at`.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 31536000))]
    pub delay_seconds: Option<f64>,
    /// Idempotency key (1 to 255 characters; or the `Idempotency-Key` header). While the job
    /// it created exists, the same request with the same key answers 200 with that job
    /// instead of creating another; a different request with it answers 409. In a batch,
    /// per item.
    pub unique_key: Option<String>,
    /// This job's retry backoff (default: the installation's `JOBSCHED_BACKOFF_BASE` / `_CAP`).
    pub retry_backoff: Option<RetryBackoff>,
    /// The named queue (default `default`): 1 to 64 of `a-z 0-9 - _ .`, starting with a letter
    /// or digit. A queue named for the first time is created with the default settings
    /// (see `PUT /queues/{name}`).
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 64))]
    pub queue: Option<String>,
}

/// Builder methods that set an optional field: `name: Type;` becomes
/// `pub fn name(self, value: Type) -> Self` storing `Some(value.into())`.
macro_rules! setters {
    ($($(#[$doc:meta])* $field:ident: $ty:ty;)*) => {$(
        $(#[$doc])*
        pub fn $field(mut self, value: $ty) -> Self {
            self.$field = Some(value.into());
            self
        }
    )*};
}

impl JobCreate {
    /// A submission with defaults for everything but the name and type.
    pub fn new(name: impl Into<String>, job_type: impl Into<String>) -> Self {
        JobCreate {
            name: name.into(),
            job_type: job_type.into(),
            ..JobCreate::default()
        }
    }
    setters! {
        /// Put the job in named queue `queue`.
        queue: impl Into<String>;
        /// Set the priority.
        priority: i64;
        /// Set the estimated duration (seconds).
        estimated_duration: f64;
        /// Set the payload.
        payload: Value;
        /// Set the retry budget.
        max_retries: i64;
        /// Set the per-run timeout (seconds).
        timeout_seconds: f64;
        /// Do not start before this time.
        run_at: DateTime<Utc>;
        /// Set the idempotency key.
        unique_key: impl Into<String>;
        /// Do not start before this many seconds from now (as the server's clock reads at
        /// submission).
        delay_seconds: f64;
    }
    /// Set this job's retry backoff (seconds).
    pub fn retry_backoff(mut self, base_seconds: f64, cap_seconds: f64) -> Self {
        self.retry_backoff = Some(RetryBackoff {
            base_seconds,
            cap_seconds,
        });
        self
    }
}

/// A policy change. Omitted optional fields keep their current values.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({"policy": "priority"})))]
pub struct PolicyUpdate {
    /// `fcfs`, `sjf`, `priority` or `round_robin`.
    pub policy: PolicyKind,
    /// Round Robin time quantum in seconds (> 0).
    pub quantum_seconds: Option<f64>,
    /// Pause dispatching (running jobs finish).
    pub paused: Option<bool>,
}

impl PolicyUpdate {
    /// Switch to `policy`, keeping quantum and pause state.
    pub fn new(policy: PolicyKind) -> Self {
        PolicyUpdate {
            policy,
            quantum_seconds: None,
            paused: None,
        }
    }
}

/// The scheduler's settings and load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SchedulerStatus {
    /// Active policy.
    pub current_policy: PolicyKind,
    /// Round Robin time quantum in seconds.
    pub quantum_seconds: f64,
    /// Whether dispatching is paused.
    pub paused: bool,
    /// The Kubernetes `SchedulerConfig` (`namespace/name`) that owns the settings, if any; the
    /// REST API cannot change the policy while one does.
    pub managed_by: Option<String>,
    /// Jobs waiting: PENDING + SCHEDULED.
    pub queue_depth: i64,
    /// Entries in the dead-letter queue.
    pub dead_letter_count: i64,
    /// Live workers.
    pub workers: u32,
    /// Slots of all live workers.
    pub total_slots: u64,
    /// Idle slots of all live workers.
    pub free_slots: u64,
    /// Job types with PENDING jobs that no live worker serves: they wait until one does.
    #[serde(default)]
    pub unserved: Vec<UnservedType>,
}

/// A job type with PENDING jobs and no live worker serving it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UnservedType {
    /// The job type.
    pub job_type: String,
    /// Its PENDING jobs (delayed ones included).
    pub pending: i64,
}

/// Connectivity of the backends. Field names are the original service's (`postgres`, `redis`)
/// even when the dev mode runs on SQLite and in-memory transport.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthResponse {
    /// `healthy` or `unhealthy`.
    pub status: String,
    /// `ok` or `error: <reason>` for the job store.
    pub postgres: String,
    /// `ok` or `error: <reason>` for the transport.
    pub redis: String,
}

impl HealthResponse {
    /// True when both backends answered.
    pub fn is_healthy(&self) -> bool {
        self.status == "healthy"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the client sends: only the fields it set; what the server reads back is the same.
    #[test]
    fn a_submission_sends_only_what_was_set_and_reads_back_the_same() {
        let job = JobCreate::new("n", "sleep")
            .priority(2)
            .payload(serde_json::json!({"duration": 1}))
            .retry_backoff(0.5, 10.0);
        let sent = serde_json::to_value(&job).unwrap();
        assert_eq!(
            sent,
            serde_json::json!({
                "name": "n", "job_type": "sleep", "priority": 2,
                "payload": {"duration": 1},
                "retry_backoff": {"base_seconds": 0.5, "cap_seconds": 10.0}
            })
        );
        assert_eq!(serde_json::from_value::<JobCreate>(sent).unwrap(), job);
        let update = serde_json::to_value(PolicyUpdate::new(PolicyKind::RoundRobin)).unwrap();
        assert_eq!(update, serde_json::json!({"policy": "round_robin"}));
        let health: HealthResponse = serde_json::from_value(
            serde_json::json!({"status": "unhealthy", "postgres": "ok", "redis": "error: down"}),
        )
        .unwrap();
        assert!(!health.is_healthy());
    }
}
