//! The job record, submissions, queries and their results.

use crate::error::{Error, Result};
use crate::state::JobStatus;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Identifier of a job.
pub type JobId = Uuid;

/// Default priority (1 = highest, 10 = lowest).
pub const DEFAULT_PRIORITY: i16 = 5;
/// Default estimated duration in seconds.
pub const DEFAULT_ESTIMATED_DURATION: f64 = 1.0;
/// Default retry budget.
pub const DEFAULT_MAX_RETRIES: i32 = 3;
/// Longest accepted job name, in characters.
pub const MAX_NAME_CHARS: usize = 255;

/// A job as stored. Field names are the REST contract.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Unique id.
    pub id: JobId,
    /// Human name, 1–255 characters.
    pub name: String,
    /// Registered job type (`sleep`, `word_count`, `thumbnail`, …).
    pub job_type: String,
    /// Lifecycle state.
    pub status: JobStatus,
    /// 1 (highest) to 10 (lowest).
    pub priority: i16,
    /// Estimated run time in seconds (> 0); the SJF key.
    pub estimated_duration: f64,
    /// Type-specific input (a JSON object).
    pub payload: Value,
    /// Output of a completed job.
    pub result: Option<Value>,
    /// Last error, if any.
    pub error_message: Option<String>,
    /// Failed runs so far; never exceeds `max_retries`.
    pub retry_count: i32,
    /// Retry budget (0–10).
    pub max_retries: i32,
    /// Submission time.
    pub created_at: DateTime<Utc>,
    /// Last dispatch time.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Start of the current or last run.
    pub started_at: Option<DateTime<Utc>>,
    /// Time the job reached COMPLETED or FAILED.
    pub completed_at: Option<DateTime<Utc>>,
    /// Dispatch counter and fencing token: bumped on every PENDING → SCHEDULED.
    pub attempt: i32,
    /// Not to be dispatched before this time (retry backoff).
    pub run_at: DateTime<Utc>,
    /// Worker holding the lease while SCHEDULED/RUNNING.
    pub lease_owner: Option<String>,
    /// Lease expiry; past it the rescuer takes the job back.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Saved progress of a preemptible job between Round Robin slices.
    pub checkpoint: Option<Value>,
    /// Number of slices (runs) the job has taken.
    pub slices: i32,
    /// Queue-entry sequence: set on submission and on every re-entry into PENDING. Policies
    /// break ties by it, so equal jobs run in the order they entered the queue.
    #[serde(skip)]
    pub seq: i64,
}

/// A validated submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    /// Id chosen by the caller (normally `Uuid::now_v7()`).
    pub id: JobId,
    /// Human name.
    pub name: String,
    /// Job type.
    pub job_type: String,
    /// 1–10.
    pub priority: i16,
    /// Seconds, > 0.
    pub estimated_duration: f64,
    /// JSON object.
    pub payload: Value,
    /// 0–10.
    pub max_retries: i32,
}

impl NewJob {
    /// Build and validate a submission; the error names the first bad field.
    pub fn new(
        name: &str,
        job_type: &str,
        priority: Option<i64>,
        estimated_duration: Option<f64>,
        payload: Option<Value>,
        max_retries: Option<i64>,
    ) -> Result<Self> {
        Self::build(
            name,
            job_type,
            priority,
            estimated_duration,
            payload,
            max_retries,
        )
        .map_err(|mut errors| {
            let (field, message) = errors.swap_remove(0);
            Error::Validation { field, message }
        })
    }

    /// Validate every generic field at once; returns `(field, message)` for each problem, or
    /// the job. Job-type payload checks are the job registry's business.
    pub fn build(
        name: &str,
        job_type: &str,
        priority: Option<i64>,
        estimated_duration: Option<f64>,
        payload: Option<Value>,
        max_retries: Option<i64>,
    ) -> std::result::Result<Self, Vec<(String, String)>> {
        let errors = Self::field_errors(
            name,
            priority,
            estimated_duration,
            payload.as_ref(),
            max_retries,
        );
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(NewJob {
            id: Uuid::now_v7(),
            name: name.to_string(),
            job_type: job_type.to_string(),
            priority: priority.unwrap_or(DEFAULT_PRIORITY as i64) as i16,
            estimated_duration: estimated_duration.unwrap_or(DEFAULT_ESTIMATED_DURATION),
            payload: payload.unwrap_or_else(|| Value::Object(Map::new())),
            max_retries: max_retries.unwrap_or(DEFAULT_MAX_RETRIES as i64) as i32,
        })
    }

    fn field_errors(
        name: &str,
        priority: Option<i64>,
        estimated_duration: Option<f64>,
        payload: Option<&Value>,
        max_retries: Option<i64>,
    ) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        let chars = name.chars().count();
        if chars == 0 || chars > MAX_NAME_CHARS || name.trim().is_empty() {
            errors.push((
                "name".to_string(),
                format!("must be 1 to {MAX_NAME_CHARS} characters and not blank (got {chars})"),
            ));
        }
        if let Some(p) = priority
            && !(1..=10).contains(&p)
        {
            errors.push((
                "priority".into(),
                format!("must be an integer from 1 (highest) to 10 (lowest), got {p}"),
            ));
        }
        if let Some(d) = estimated_duration
            && !(d.is_finite() && d > 0.0)
        {
            errors.push((
                "estimated_duration".into(),
                format!("must be a number of seconds greater than 0, got {d}"),
            ));
        }
        if let Some(p) = payload
            && !p.is_object()
        {
            errors.push(("payload".into(), "must be a JSON object".into()));
        }
        if let Some(m) = max_retries
            && !(0..=10).contains(&m)
        {
            errors.push((
                "max_retries".into(),
                format!("must be an integer from 0 to 10, got {m}"),
            ));
        }
        errors
    }
}

/// Filter and page for listing jobs. `page` starts at 1.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub status: Option<JobStatus>,
    /// Only jobs of this type.
    pub job_type: Option<String>,
    /// 1-based page number.
    pub page: u32,
    /// Jobs per page (1–100).
    pub page_size: u32,
}

/// One page of jobs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPage {
    /// The jobs on this page.
    pub jobs: Vec<Job>,
    /// Jobs matching the filter across all pages.
    pub total: i64,
    /// The page number.
    pub page: u32,
    /// The page size.
    pub page_size: u32,
}

/// Counts per state and the mean execution time of completed jobs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobStats {
    /// All jobs.
    pub total_jobs: i64,
    /// PENDING.
    pub pending: i64,
    /// SCHEDULED.
    pub scheduled: i64,
    /// RUNNING.
    pub running: i64,
    /// COMPLETED.
    pub completed: i64,
    /// FAILED.
    pub failed: i64,
    /// CANCELLED.
    pub cancelled: i64,
    /// Mean of `completed_at - started_at` over COMPLETED jobs, in milliseconds.
    pub avg_execution_time_ms: Option<f64>,
}

/// Result of a cancel request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job is now CANCELLED.
    Cancelled,
    /// No such job.
    NotFound,
    /// The job is in a state that cannot be cancelled.
    NotCancellable(JobStatus),
}

/// A PENDING job as the engine sees it: enough to order and dispatch it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PendingJob {
    /// Ordering data.
    pub queued: crate::policy::QueuedJob,
    /// Not before.
    pub run_at: DateTime<Utc>,
}

/// A dispatched job as a worker reads it (still SCHEDULED): everything needed to execute it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartedJob {
    /// Id.
    pub id: JobId,
    /// Fencing token for the outcome write.
    pub attempt: i32,
    /// Name (for dead-letter entries and logs).
    pub name: String,
    /// Type.
    pub job_type: String,
    /// Input.
    pub payload: Value,
    /// Progress saved by an earlier slice.
    pub checkpoint: Option<Value>,
    /// Failed runs so far.
    pub retry_count: i32,
    /// Retry budget.
    pub max_retries: i32,
    /// Submission time (for wait-time metrics).
    pub created_at: DateTime<Utc>,
    /// Slices taken before this run.
    pub slices: i32,
}

impl Job {
    /// The job's queue entry, as the engine holds it while the job is PENDING.
    pub fn pending(&self) -> PendingJob {
        PendingJob {
            queued: crate::policy::QueuedJob {
                id: self.id,
                seq: self.seq,
                priority: self.priority,
                estimated_duration: self.estimated_duration,
                attempt: self.attempt,
            },
            run_at: self.run_at,
        }
    }
}

impl StartedJob {
    /// The dispatch token of this run.
    pub fn token(&self) -> crate::ports::Token {
        crate::ports::Token {
            id: self.id,
            attempt: self.attempt,
        }
    }
}

/// A dead-lettered (FAILED) job as listed in the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Job id.
    pub job_id: JobId,
    /// Type.
    pub job_type: String,
    /// Name.
    pub name: String,
    /// Last error.
    pub error: Option<String>,
    /// Failed runs.
    pub retry_count: i32,
    /// When it failed for good.
    pub failed_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_apply() {
        let j = NewJob::build("a", "sleep", None, None, None, None).unwrap();
        assert_eq!(j.priority, 5);
        assert_eq!(j.estimated_duration, 1.0);
        assert_eq!(j.max_retries, 3);
        assert_eq!(j.payload, json!({}));
    }

    #[test]
    fn every_bad_field_is_named() {
        let errs = NewJob::build("", "sleep", Some(0), Some(-1.0), Some(json!([1])), Some(11))
            .unwrap_err();
        let fields: Vec<_> = errs.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "name",
                "priority",
                "estimated_duration",
                "payload",
                "max_retries"
            ]
        );
        let long = "x".repeat(256);
        assert!(NewJob::build(&long, "sleep", None, None, None, None).is_err());
        let ok = "é".repeat(255);
        assert!(NewJob::build(&ok, "sleep", Some(1), Some(0.001), None, Some(0)).is_ok());
        assert!(NewJob::build("a", "sleep", None, Some(f64::NAN), None, None).is_err());
    }

    #[test]
    fn new_reports_first_error() {
        let err = NewJob::new("ok", "sleep", Some(42), None, None, None).unwrap_err();
        assert!(matches!(err, Error::Validation { ref field, .. } if field == "priority"));
    }
}
