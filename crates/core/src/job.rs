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
/// Shortest per-run timeout a submission may ask for, seconds.
pub const MIN_TIMEOUT_SECONDS: f64 = 0.1;
/// Longest per-run timeout a submission may ask for, seconds (one week).
pub const MAX_TIMEOUT_SECONDS: f64 = 604_800.0;
/// Furthest ahead a submission may schedule its first run, seconds (365 days).
pub const MAX_SCHEDULE_AHEAD_SECONDS: f64 = 31_536_000.0;

/// A job as stored. Field names are the REST contract.
// The field docs are also the REST API's descriptions (its OpenAPI schema): they speak of JSON
// (`null`) and link no Rust items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Job {
    /// Unique id.
    #[cfg_attr(feature = "openapi", schema(value_type = uuid::Uuid))]
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
    /// Type-specific input (a JSON object). Always present on a single job; in lists only
    /// with `include=payload`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object, required = false))]
    pub payload: Value,
    /// Output of a completed job (in lists only with `include=result`).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>, required = false))]
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
    /// Not to be dispatched before this time: the submission's `run_at` / `delay_seconds`,
    /// or a retry's backoff.
    pub run_at: DateTime<Utc>,
    /// Worker holding the lease while SCHEDULED/RUNNING.
    pub lease_owner: Option<String>,
    /// Lease expiry; past it the rescuer takes the job back.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Saved progress of a preemptible job between Round Robin slices (in lists only with
    /// `include=checkpoint`).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>, required = false))]
    pub checkpoint: Option<Value>,
    /// Number of slices (runs) the job has taken.
    pub slices: i32,
    /// Longest a single run may take, seconds; `null` = the job type's default. A run past it
    /// is stopped and fails with "timed out after N s" (retried by the job's retry budget).
    #[serde(default)]
    pub timeout_seconds: Option<f64>,
    /// This job's retry backoff; `null` = the installation's (`JOBSCHED_BACKOFF_BASE` / `_CAP`).
    #[serde(default)]
    pub retry_backoff: Option<RetryBackoff>,
    /// The named queue the job waits in; never changes.
    #[serde(default = "default_queue")]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub queue: String,
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
    /// Per-run timeout in seconds ([`MIN_TIMEOUT_SECONDS`] to [`MAX_TIMEOUT_SECONDS`]);
    /// `None` = the job type's default.
    #[serde(default)]
    pub timeout_seconds: Option<f64>,
    /// Not to be dispatched before this time; `None` (or a time already past) = now. See
    /// [`check_run_at`].
    #[serde(default)]
    pub run_at: Option<DateTime<Utc>>,
    /// Idempotency: while a job with this key exists, submitting the same request with it
    /// again returns that job instead of a new one (the store then answers with the existing
    /// job, whose id differs from this submission's); a different request with it is
    /// [`Error::KeyConflict`].
    #[serde(default)]
    pub unique_key: Option<UniqueKey>,
    /// Retry backoff of this job; `None` = the installation's. See [`RetryBackoff::check`].
    #[serde(default)]
    pub retry_backoff: Option<RetryBackoff>,
    /// The named queue (see [`crate::queue::check_queue_name`]); `default` unless set.
    #[serde(default = "default_queue")]
    pub queue: String,
}

fn default_queue() -> String {
    crate::queue::DEFAULT_QUEUE.to_owned()
}

/// A job's own retry backoff: the delay before retry n is min(cap, base · 2^(n-1)), jittered
/// into its upper half.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
// Its OpenAPI schema keeps the name it was first published under.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = RetryBackoffSchema))]
pub struct RetryBackoff {
    /// Delay before the first retry, seconds (0.001 to 86400).
    #[cfg_attr(feature = "openapi", schema(minimum = 0.001, maximum = 86400))]
    pub base_seconds: f64,
    /// Longest delay, seconds (`base_seconds` to 86400).
    #[cfg_attr(feature = "openapi", schema(minimum = 0.001, maximum = 86400))]
    pub cap_seconds: f64,
}

impl RetryBackoff {
    /// Check the bounds (those of `JOBSCHED_BACKOFF_BASE` / `_CAP`); the error names the
    /// field (`base_seconds` or `cap_seconds`) and the range.
    pub fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        let ok = |v: f64| v.is_finite() && (0.001..=86_400.0).contains(&v);
        if !ok(self.base_seconds) {
            return Err((
                "base_seconds",
                format!(
                    "must be a number of seconds from 0.001 to 86400, got {:?}",
                    self.base_seconds
                ),
            ));
        }
        if !ok(self.cap_seconds) || self.cap_seconds < self.base_seconds {
            return Err((
                "cap_seconds",
                format!(
                    "must be a number of seconds from base_seconds ({}) to 86400, got {:?}",
                    self.base_seconds, self.cap_seconds
                ),
            ));
        }
        Ok(())
    }

    /// As the runtime's [`crate::retry::Backoff`]; out-of-range values are clamped (stored
    /// values were checked at submission).
    pub fn backoff(&self) -> crate::retry::Backoff {
        let secs = |v: f64| {
            std::time::Duration::try_from_secs_f64(v.clamp(0.001, 86_400.0))
                .unwrap_or(std::time::Duration::from_secs(1))
        };
        crate::retry::Backoff {
            base: secs(self.base_seconds),
            cap: secs(self.cap_seconds.max(self.base_seconds)),
        }
    }

    /// From the two stored columns (both set, or none).
    pub fn from_columns(base: Option<f64>, cap: Option<f64>) -> Option<RetryBackoff> {
        Some(RetryBackoff {
            base_seconds: base?,
            cap_seconds: cap?,
        })
    }
}

/// An idempotency key and the fingerprint of the request that came with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UniqueKey {
    /// The caller's key, 1 to [`MAX_UNIQUE_KEY_CHARS`] characters.
    pub key: String,
    /// A digest of the request (same request, same fingerprint).
    pub fingerprint: String,
}

/// Longest accepted idempotency key, in characters.
pub const MAX_UNIQUE_KEY_CHARS: usize = 255;

/// Check an idempotency key: 1 to [`MAX_UNIQUE_KEY_CHARS`] characters, not blank, no NUL.
pub fn check_unique_key(key: &str) -> std::result::Result<(), String> {
    let chars = key.chars().count();
    if chars == 0 || chars > MAX_UNIQUE_KEY_CHARS || key.trim().is_empty() {
        Err(format!(
            "must be 1 to {MAX_UNIQUE_KEY_CHARS} characters and not blank (got {chars})"
        ))
    } else if key.contains('\0') {
        Err("must not contain the NUL character (\\u0000)".into())
    } else {
        Ok(())
    }
}

/// The generic fields of a submission, before checks: each `None` takes its default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobSpec {
    /// Display name (1 to [`MAX_NAME_CHARS`] characters).
    pub name: String,
    /// The job type (checked by the job registry, not here).
    pub job_type: String,
    /// 1 (highest) to 10; default [`DEFAULT_PRIORITY`].
    pub priority: Option<i64>,
    /// Seconds, greater than 0; default [`DEFAULT_ESTIMATED_DURATION`].
    pub estimated_duration: Option<f64>,
    /// A JSON object; default `{}`.
    pub payload: Option<Value>,
    /// 0 to 10; default [`DEFAULT_MAX_RETRIES`].
    pub max_retries: Option<i64>,
}

impl JobSpec {
    /// A job of `job_type` named `name`, every other field at its default.
    pub fn new(name: impl Into<String>, job_type: impl Into<String>) -> JobSpec {
        JobSpec {
            name: name.into(),
            job_type: job_type.into(),
            ..JobSpec::default()
        }
    }
}

impl NewJob {
    /// Build and validate a submission; the error names the first bad field.
    pub fn new(spec: JobSpec) -> Result<Self> {
        Self::build(spec).map_err(|mut errors| {
            let (field, message) = errors.swap_remove(0);
            Error::Validation { field, message }
        })
    }

    /// Validate every generic field at once; returns `(field, message)` for each problem, or
    /// the job. Job-type payload checks are the job registry's business.
    pub fn build(spec: JobSpec) -> std::result::Result<Self, Vec<(String, String)>> {
        let errors = Self::field_errors(
            &spec.name,
            spec.priority,
            spec.estimated_duration,
            spec.payload.as_ref(),
            spec.max_retries,
        );
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(NewJob {
            id: Uuid::now_v7(),
            name: spec.name,
            job_type: spec.job_type,
            priority: spec.priority.unwrap_or(DEFAULT_PRIORITY as i64) as i16,
            estimated_duration: spec
                .estimated_duration
                .unwrap_or(DEFAULT_ESTIMATED_DURATION),
            payload: spec.payload.unwrap_or_else(|| Value::Object(Map::new())),
            max_retries: spec.max_retries.unwrap_or(DEFAULT_MAX_RETRIES as i64) as i32,
            timeout_seconds: None,
            run_at: None,
            unique_key: None,
            retry_backoff: None,
            queue: default_queue(),
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
        if name.contains('\0') {
            errors.push((
                "name".into(),
                "must not contain the NUL character (\\u0000)".into(),
            ));
        }
        if let Some(p) = payload {
            if !p.is_object() {
                errors.push(("payload".into(), "must be a JSON object".into()));
            } else if let Some(at) = nul_path(p, "payload") {
                errors.push((
                    at,
                    "must not contain the NUL character (\\u0000) in a string or key".into(),
                ));
            }
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

/// The exclusive upper bound of the names starting with `prefix`, in code-point (byte) order:
/// `prefix <= name < name_prefix_end(prefix)`.
pub fn name_prefix_end(prefix: &str) -> String {
    format!("{prefix}{}", char::MAX)
}

/// Check a per-run timeout asked for by a submission.
pub fn check_timeout(seconds: f64) -> std::result::Result<(), String> {
    if seconds.is_finite() && (MIN_TIMEOUT_SECONDS..=MAX_TIMEOUT_SECONDS).contains(&seconds) {
        Ok(())
    } else {
        Err(format!(
            "must be a number of seconds from {MIN_TIMEOUT_SECONDS} to {MAX_TIMEOUT_SECONDS}, \
             got {seconds:?}"
        ))
    }
}

/// Check a submission's first-run time against `now`: at most [`MAX_SCHEDULE_AHEAD_SECONDS`]
/// ahead. A time in the past is accepted (the job runs now).
pub fn check_run_at(run_at: DateTime<Utc>, now: DateTime<Utc>) -> std::result::Result<(), String> {
    let ahead = (run_at - now).num_milliseconds() as f64 / 1000.0;
    if ahead <= MAX_SCHEDULE_AHEAD_SECONDS {
        Ok(())
    } else {
        Err(format!(
            "must be at most 365 days ahead ({MAX_SCHEDULE_AHEAD_SECONDS} s), got {run_at} \
             ({ahead:.0} s ahead)"
        ))
    }
}

/// Check a submission's `delay_seconds`: a finite number from 0 to
/// [`MAX_SCHEDULE_AHEAD_SECONDS`].
pub fn check_delay(seconds: f64) -> std::result::Result<(), String> {
    if seconds.is_finite() && (0.0..=MAX_SCHEDULE_AHEAD_SECONDS).contains(&seconds) {
        Ok(())
    } else {
        Err(format!(
            "must be a number of seconds from 0 to {MAX_SCHEDULE_AHEAD_SECONDS} (365 days), \
             got {seconds:?}"
        ))
    }
}

/// The dotted path of the first string or key in `value` holding a NUL character (which
/// PostgreSQL cannot store in text or jsonb), if any. Iterative: deep nesting cannot overflow
/// the stack.
pub fn nul_path(value: &Value, root: &str) -> Option<String> {
    // The common case (no NUL) allocates no paths.
    let mut plain: Vec<&Value> = vec![value];
    let mut found = false;
    while let Some(v) = plain.pop() {
        match v {
            Value::String(s) if s.contains('\0') => found = true,
            Value::Array(items) => plain.extend(items),
            Value::Object(map) => {
                found |= map.keys().any(|k| k.contains('\0'));
                plain.extend(map.values());
            }
            _ => {}
        }
        if found {
            break;
        }
    }
    if !found {
        return None;
    }
    let mut stack: Vec<(&Value, String)> = vec![(value, root.to_string())];
    while let Some((v, path)) = stack.pop() {
        match v {
            Value::String(s) if s.contains('\0') => return Some(path),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    stack.push((item, format!("{path}[{i}]")));
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    if k.contains('\0') {
                        return Some(path);
                    }
                    stack.push((item, format!("{path}.{k}")));
                }
            }
            _ => {}
        }
    }
    None
}

/// Filter and page for listing jobs. `page` starts at 1.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub status: Option<JobStatus>,
    /// Only jobs of this type.
    pub job_type: Option<String>,
    /// Only the job with this id.
    #[serde(default)]
    pub id: Option<JobId>,
    /// Only jobs whose name starts with this (case-sensitive).
    #[serde(default)]
    pub name_prefix: Option<String>,
    /// Only jobs in this named queue.
    #[serde(default)]
    pub queue: Option<String>,
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

/// The work waiting to run: PENDING jobs and the sum of their estimated durations.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Backlog {
    /// PENDING jobs (due or waiting for a retry's backoff).
    pub jobs: i64,
    /// Sum of their estimated durations, seconds.
    pub seconds: f64,
}

impl Backlog {
    /// The backlog of every queue together.
    pub fn total<'a>(queues: impl IntoIterator<Item = &'a (String, Backlog)>) -> Backlog {
        queues
            .into_iter()
            .fold(Backlog::default(), |sum, (_, b)| Backlog {
                jobs: sum.jobs + b.jobs,
                seconds: sum.seconds + b.seconds,
            })
    }
}

/// Counts per state and the mean execution time of completed jobs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = JobStatsResponse))]
pub struct JobStats {
    /// All jobs.
    pub total_jobs: i64,
    /// PENDING (including `delayed`).
    pub pending: i64,
    /// Of the PENDING jobs, those submitted with a `run_at` that has not come yet.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub delayed: i64,
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
    /// Mean of `completed_at - started_at` over COMPLETED jobs, in milliseconds (null when
    /// none).
    pub avg_execution_time_ms: Option<f64>,
}

/// Result of a cancel request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job is now CANCELLED (it was PENDING or SCHEDULED).
    Cancelled,
    /// The job was RUNNING and is now CANCELLED: its worker can no longer record an outcome
    /// for it (the write is fenced by the RUNNING state), and is to stop the body.
    Stopping,
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
    /// Per-run timeout, seconds; `None` = the job type's default.
    #[serde(default)]
    pub timeout_seconds: Option<f64>,
    /// Retry backoff; `None` = the installation's.
    #[serde(default)]
    pub retry_backoff: Option<RetryBackoff>,
    /// The named queue, whose settings (Round Robin's quantum) apply to this run.
    #[serde(default = "default_queue")]
    pub queue: String,
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
    pub fn token(&self) -> Token {
        Token {
            id: self.id,
            attempt: self.attempt,
        }
    }
}

/// A dead-lettered (FAILED) job as listed in the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = DeadLetterResponse))]
pub struct DeadLetter {
    /// Job id.
    #[cfg_attr(feature = "openapi", schema(value_type = uuid::Uuid))]
    pub job_id: JobId,
    /// Job type.
    pub job_type: String,
    /// Job name.
    pub name: String,
    /// Final error.
    pub error: Option<String>,
    /// Failed runs.
    pub retry_count: i32,
    /// When it failed for good.
    pub failed_at: Option<DateTime<Utc>>,
}

/// A run's fencing token: a job id plus the attempt it was claimed as. Every outcome and lease
/// renewal is conditional on both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Token {
    /// Job id.
    pub id: JobId,
    /// Attempt number set by the dispatch.
    pub attempt: i32,
}

impl Token {
    /// `"<uuid>:<attempt>"`, the transport encoding.
    pub fn encode(&self) -> String {
        format!("{}:{}", self.id, self.attempt)
    }
    /// Parse [`Token::encode`] output.
    pub fn decode(s: &str) -> Option<Token> {
        let (id, attempt) = s.rsplit_once(':')?;
        Some(Token {
            id: id.parse().ok()?,
            attempt: attempt.parse().ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_round_trips() {
        let t = Token {
            id: uuid::Uuid::now_v7(),
            attempt: 7,
        };
        assert_eq!(Token::decode(&t.encode()), Some(t));
        assert_eq!(Token::decode("nope"), None);
        assert_eq!(Token::decode("x:1"), None);
    }
    use serde_json::json;

    #[test]
    fn nul_characters_are_refused_with_their_field() {
        let err = NewJob::new(JobSpec {
            name: "a\0b".into(),
            job_type: "sleep".into(),
            ..JobSpec::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("name"), "{err}");
        let payload = json!({"ok": "x", "deep": {"list": [1, "fine", "bad\u{0}"]}});
        let errors = NewJob::build(JobSpec {
            name: "n".into(),
            job_type: "sleep".into(),
            payload: Some(payload),
            ..JobSpec::default()
        })
        .unwrap_err();
        assert_eq!(errors[0].0, "payload.deep.list[2]");
        let key = json!({"k\u{0}": 1});
        let errors = NewJob::build(JobSpec {
            name: "n".into(),
            job_type: "sleep".into(),
            payload: Some(key),
            ..JobSpec::default()
        })
        .unwrap_err();
        assert_eq!(errors[0].0, "payload");
        assert_eq!(nul_path(&json!({"a": ["b", {"c": "d"}]}), "payload"), None);
        // Deep nesting is walked without recursion.
        let mut deep = json!("x\u{0}");
        for _ in 0..100 {
            deep = json!([deep]);
        }
        assert!(nul_path(&deep, "p").unwrap().starts_with("p[0][0]"));
    }

    #[test]
    fn timeouts_are_bounded() {
        assert!(check_timeout(1.0).is_ok());
        assert!(check_timeout(MAX_TIMEOUT_SECONDS).is_ok());
        for bad in [0.0, -1.0, 0.05, 1e300, f64::NAN, f64::INFINITY, 604_801.0] {
            let msg = check_timeout(bad).unwrap_err();
            assert!(msg.contains("604800"), "{msg}");
        }
    }

    #[test]
    fn defaults_apply() {
        let j = NewJob::build(JobSpec {
            name: "a".into(),
            job_type: "sleep".into(),
            ..JobSpec::default()
        })
        .unwrap();
        assert_eq!(j.priority, 5);
        assert_eq!(j.estimated_duration, 1.0);
        assert_eq!(j.max_retries, 3);
        assert_eq!(j.payload, json!({}));
    }

    #[test]
    fn every_bad_field_is_named() {
        let errs = NewJob::build(JobSpec {
            name: "".into(),
            job_type: "sleep".into(),
            priority: Some(0),
            estimated_duration: Some(-1.0),
            payload: Some(json!([1])),
            max_retries: Some(11),
        })
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
        assert!(
            NewJob::build(JobSpec {
                name: long.to_string(),
                job_type: "sleep".into(),
                ..JobSpec::default()
            })
            .is_err()
        );
        let ok = "é".repeat(255);
        assert!(
            NewJob::build(JobSpec {
                name: ok.to_string(),
                job_type: "sleep".into(),
                priority: Some(1),
                estimated_duration: Some(0.001),
                max_retries: Some(0),
                ..JobSpec::default()
            })
            .is_ok()
        );
        assert!(
            NewJob::build(JobSpec {
                name: "a".into(),
                job_type: "sleep".into(),
                estimated_duration: Some(f64::NAN),
                ..JobSpec::default()
            })
            .is_err()
        );
    }

    #[test]
    fn new_reports_first_error() {
        let err = NewJob::new(JobSpec {
            name: "ok".into(),
            job_type: "sleep".into(),
            priority: Some(42),
            ..JobSpec::default()
        })
        .unwrap_err();
        assert!(matches!(err, Error::Validation { ref field, .. } if field == "priority"));
    }
}
