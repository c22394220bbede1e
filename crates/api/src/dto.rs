//! Request and response bodies of the REST API, with their OpenAPI schemas.
//!
//! Where a body is a core type as it is (a job record, a status, a policy name, a backoff, a
//! run's progress and logs, the stats, a dead letter), core carries its schema behind its
//! `openapi` feature; the other response types are views of core types, kept in step by their
//! `From` conversions, and the integration tests decode every response back into the core
//! types.

use chrono::{DateTime, Utc};
use jobsched_core::JobPage;
pub use jobsched_core::notes::{LogLine, Progress, TryLog};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// A permanently failed job, as `GET /scheduler/dead-letter` lists it (published under this
/// name).
pub use jobsched_core::DeadLetter as DeadLetterResponse;
/// `GET /jobs/stats` (published under this name).
pub use jobsched_core::JobStats as JobStatsResponse;
pub use jobsched_core::{Job, JobStatus, PolicyKind, RetryBackoff};
pub use jobsched_wire::{HealthResponse, JobCreate, PolicyUpdate, SchedulerStatus, UnservedType};

/// Several submissions inserted in one transaction (all or nothing).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BatchCreate {
    /// 1 to 1000 submissions.
    pub jobs: Vec<JobCreate>,
}

/// Ids of a batch, in submission order.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BatchCreated {
    /// The new jobs' ids.
    pub ids: Vec<Uuid>,
}

/// A job as stored, with its latest progress on `GET /jobs/{id}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobResponse {
    /// The job record.
    #[serde(flatten)]
    pub job: Job,
    /// The latest progress its runs reported (`GET /jobs/{id}` only; `null` when none did).
    #[schema(required = false)]
    pub progress: Option<Progress>,
}

/// `GET /jobs/{id}/logs`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobLogsResponse {
    /// The job.
    pub job_id: Uuid,
    /// One entry per try that reported progress or logged, oldest first.
    pub attempts: Vec<TryLog>,
}

/// The path parameter of the routes on one job (`/jobs/{id}`); the handler parses the id, so
/// that a malformed one gets the API's own 422.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct JobPath {
    /// Job id
    #[param(value_type = Uuid)]
    pub id: String,
}

/// The path parameter of the routes on one queue (`/queues/{name}`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct QueuePath {
    /// Queue name: 1 to 64 of `a-z 0-9 - _ .`
    pub name: String,
}

/// The path parameter of the routes on one schedule (`/schedules/{name}`).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SchedulePath {
    /// Schedule name
    pub name: String,
}

/// Query parameters of `GET /jobs/{id}/logs`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Only this try's log (1 = first).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000000)]
    pub attempt: Option<String>,
}

impl From<Job> for JobResponse {
    fn from(job: Job) -> Self {
        JobResponse {
            job,
            progress: None,
        }
    }
}

/// One page of jobs, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobListResponse {
    /// The jobs on this page. `payload`, `result` and `checkpoint` are left out unless asked
    /// for with `include` (they can be large; `GET /jobs/{id}` always has them).
    #[schema(value_type = Vec<JobResponse>)]
    pub jobs: Vec<Value>,
    /// Jobs matching the filter across all pages.
    pub total: i64,
    /// The page number (1-based).
    pub page: u32,
    /// The page size.
    pub page_size: u32,
}

/// The large fields of a job, which a list carries only when asked.
pub const LARGE_FIELDS: [&str; 3] = ["payload", "result", "checkpoint"];

/// Fields of a single job that a list never carries (`GET /jobs/{id}` has them).
pub const SINGLE_ONLY_FIELDS: [&str; 1] = ["progress"];

impl JobListResponse {
    /// A page whose jobs carry, of [`LARGE_FIELDS`], only those named in `include`.
    pub fn new(p: JobPage, include: &[&str]) -> Self {
        let jobs = p
            .jobs
            .into_iter()
            .map(|j| {
                let mut v = serde_json::to_value(JobResponse::from(j)).unwrap_or(Value::Null);
                if let Some(obj) = v.as_object_mut() {
                    for field in LARGE_FIELDS {
                        if !include.contains(&field) {
                            obj.remove(field);
                        }
                    }
                    for field in SINGLE_ONLY_FIELDS {
                        obj.remove(field);
                    }
                }
                v
            })
            .collect();
        JobListResponse {
            jobs,
            total: p.total,
            page: p.page,
            page_size: p.page_size,
        }
    }
}

/// Query parameters of `GET /jobs/`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only jobs in this state (case-insensitive).
    #[param(value_type = Option<JobStatus>)]
    pub status: Option<String>,
    /// Only jobs of this type.
    pub job_type: Option<String>,
    /// Only jobs in this named queue.
    pub queue: Option<String>,
    /// 1-based page number (default 1).
    #[param(minimum = 1)]
    pub page: Option<u32>,
    /// Jobs per page, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub page_size: Option<u32>,
    /// Large fields to include in each job, comma-separated: `payload`, `result`,
    /// `checkpoint` (default: none of them).
    pub include: Option<String>,
    /// A job id (that job only) or the start of job names (case-sensitive).
    pub q: Option<String>,
}

/// Query parameters of `GET /scheduler/dead-letter`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterParams {
    /// Most entries to return, 1–10000 (default 1000), most recent failure first.
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<u32>,
}

/// A change to a named queue (`PUT /queues/{name}`). Omitted fields keep their values (a new
/// queue's are the defaults).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"policy": "priority", "concurrency_limit": 10, "weight": 3}))]
pub struct QueueUpdate {
    /// `fcfs`, `sjf`, `priority` or `round_robin` (default `fcfs`).
    #[schema(value_type = Option<PolicyKind>)]
    pub policy: Option<String>,
    /// Round Robin time quantum in seconds (0.01 to 86400; default 5).
    #[schema(minimum = 0.01, maximum = 86400)]
    pub quantum_seconds: Option<f64>,
    /// Stop starting this queue's jobs (running ones finish).
    pub paused: Option<bool>,
    /// Most of this queue's jobs running at once across the cluster (1 to 1000000); `null`
    /// removes the limit (the default).
    #[schema(minimum = 1, maximum = 1000000)]
    pub concurrency_limit: Option<u32>,
    /// This queue's share of a worker's slots while other queues also have work, relative to
    /// their weights (1 to 1000; default 1).
    #[schema(minimum = 1, maximum = 1000)]
    pub weight: Option<u32>,
}

/// A named queue: its settings and its jobs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueueResponse {
    /// Name.
    pub name: String,
    /// Its policy.
    pub policy: PolicyKind,
    /// Round Robin time quantum in seconds.
    pub quantum_seconds: f64,
    /// Whether starting its jobs is paused.
    pub paused: bool,
    /// Most of its jobs running at once across the cluster (`null`: no limit).
    pub concurrency_limit: Option<u32>,
    /// Its share of slots relative to other queues' weights.
    pub weight: u32,
    /// The Kubernetes `SchedulerConfig` (`namespace/name`) that owns these settings, if any;
    /// the REST API cannot change them while one does.
    pub managed_by: Option<String>,
    /// PENDING jobs (the queue's depth), delayed ones included.
    pub pending: i64,
    /// PENDING jobs whose `run_at` has not come yet.
    pub delayed: i64,
    /// SCHEDULED and RUNNING jobs.
    pub running: i64,
}

/// A job type: built into the API, registered by the workers that serve it, or both.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobTypeResponse {
    /// The `job_type` name.
    pub name: String,
    /// The payload's JSON Schema as the last worker to register the type gave it (`null` for a
    /// type only built into the API, which checks its payloads itself).
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
    /// Whether its runs can yield at a Round Robin slice's end and resume.
    pub preemptible: Option<bool>,
    /// Run time limit of a job that sets no `timeout_seconds`, seconds.
    pub default_timeout_seconds: Option<f64>,
    /// The worker that registered this version, and when.
    pub registered_by: Option<String>,
    /// When it was registered.
    pub registered_at: Option<DateTime<Utc>>,
    /// Live workers that serve it.
    pub workers: Vec<String>,
    /// Its PENDING jobs (delayed ones included).
    pub pending: i64,
}

/// `GET /job-types`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobTypesResponse {
    /// Every known type, by name.
    pub job_types: Vec<JobTypeResponse>,
}

/// A live worker and its slots.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct WorkerResponse {
    /// Worker id.
    pub worker: String,
    /// Its execution slots.
    pub slots: u32,
    /// Slots running (or about to run) a job.
    pub busy: u32,
    /// The job types it serves.
    #[serde(default)]
    pub job_types: Vec<String>,
}

impl From<jobsched_core::ports::WorkerSlots> for WorkerResponse {
    fn from(w: jobsched_core::ports::WorkerSlots) -> Self {
        WorkerResponse {
            busy: w.total.saturating_sub(w.idle),
            slots: w.total,
            worker: w.worker,
            job_types: w.job_types,
        }
    }
}

/// Result of purging the dead-letter queue.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PurgeResponse {
    /// Entries removed (the jobs stay FAILED).
    pub purged: u64,
}

/// Result of a liveness/readiness probe.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProbeResponse {
    /// `ok`, or `error: <reason>`.
    pub status: String,
}

/// A simple error: `{"detail": "Job not found"}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong and how to fix it.
    pub detail: String,
}

/// One validation problem (FastAPI shape).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ValidationIssue {
    /// Location: `["body", "payload", "duration"]`, `["query", "page"]`, `["path", "id"]`.
    #[schema(schema_with = loc_schema)]
    pub loc: Vec<Value>,
    /// What is wrong and what is accepted.
    pub msg: String,
    /// Kind: `missing`, `type_error`, `value_error`, `json_invalid`, …
    #[serde(rename = "type")]
    pub kind: String,
}

/// `loc` items are object keys (strings) or array indexes (integers).
fn loc_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};
    ArrayBuilder::new()
        .items(
            OneOfBuilder::new()
                .item(ObjectBuilder::new().schema_type(Type::String))
                .item(ObjectBuilder::new().schema_type(Type::Integer)),
        )
        .build()
}

/// A 422 body: every problem found.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ValidationErrorBody {
    /// The problems.
    pub detail: Vec<ValidationIssue>,
}

/// A periodic job as submitted (`POST /schedules`; `PUT /schedules/{name}` takes the name from
/// the path).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"name": "nightly-report", "cron": "0 2 * * *", "timezone": "Europe/Berlin",
    "job": {"name": "Nightly report", "job_type": "sleep", "payload": {"duration": 1}}}))]
pub struct ScheduleBody {
    /// 1 to 128 of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    /// Cron expression: 5 fields (`minute hour day-of-month month day-of-week`, e.g.
    /// `*/15 * * * *`), or 6 to 7 with seconds first and an optional year.
    pub cron: String,
    /// IANA time zone the expression is read in (default `UTC`).
    pub timezone: Option<String>,
    /// The job each fire enqueues: a `POST /jobs/` body without `run_at`, `delay_seconds`
    /// and `unique_key` (each fire sets those).
    pub job: JobCreate,
    /// While the previous fire's job has not ended: `skip` (default) enqueues nothing, `allow`
    /// enqueues anyway.
    #[schema(value_type = Option<String>, example = "skip")]
    pub overlap: Option<String>,
    /// No fires while paused (default false).
    pub paused: Option<bool>,
    /// A fire time that passed while no engine leader ran (more than 60 s late): enqueue one
    /// job for it on recovery (default true), or skip it. Fire times missed together make one
    /// job.
    pub catch_up: Option<bool>,
}

/// The job template of a schedule, as stored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleJob {
    /// Job name.
    pub name: String,
    /// Job type.
    pub job_type: String,
    /// 1 (highest) to 10.
    pub priority: i16,
    /// Estimated run time, seconds.
    pub estimated_duration: f64,
    /// Type-specific input.
    #[schema(value_type = Object)]
    pub payload: Value,
    /// Retry budget.
    pub max_retries: i32,
    /// Per-run timeout, seconds (`null` = the job type's default).
    pub timeout_seconds: Option<f64>,
    /// Retry backoff (`null` = the installation's).
    pub retry_backoff: Option<RetryBackoff>,
    /// The named queue each fire's job goes to.
    pub queue: String,
}

/// A periodic job and its fire state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ScheduleResponse {
    /// Name.
    pub name: String,
    /// Cron expression, as given.
    pub cron: String,
    /// IANA time zone.
    pub timezone: String,
    /// What each fire enqueues.
    pub job: ScheduleJob,
    /// `skip` or `allow`.
    pub overlap: String,
    /// No fires while paused.
    pub paused: bool,
    /// Whether a fire missed while no leader ran is enqueued on recovery.
    pub catch_up: bool,
    /// The next fire time (`null`: never again).
    pub next_fire_at: Option<DateTime<Utc>>,
    /// The last fire time handled (enqueued or skipped).
    pub last_fire_at: Option<DateTime<Utc>>,
    /// The job the last enqueuing fire created.
    pub last_job_id: Option<Uuid>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change by a user.
    pub updated_at: DateTime<Utc>,
    /// The Kubernetes `JobSchedule` (`namespace/name`) that owns this schedule, if any; the
    /// REST API cannot change or delete it while one does.
    pub managed_by: Option<String>,
}

impl From<jobsched_core::schedule::Schedule> for ScheduleResponse {
    fn from(s: jobsched_core::schedule::Schedule) -> Self {
        ScheduleResponse {
            cron: s.when.expression().to_string(),
            timezone: s.when.timezone().to_string(),
            job: ScheduleJob {
                name: s.job.name,
                job_type: s.job.job_type,
                priority: s.job.priority,
                estimated_duration: s.job.estimated_duration,
                payload: s.job.payload,
                max_retries: s.job.max_retries,
                timeout_seconds: s.job.timeout_seconds,
                retry_backoff: s.job.retry_backoff,
                queue: s.job.queue,
            },
            overlap: match s.overlap {
                jobsched_core::schedule::Overlap::Skip => "skip".into(),
                jobsched_core::schedule::Overlap::Allow => "allow".into(),
            },
            name: s.name,
            paused: s.paused,
            catch_up: s.catch_up,
            next_fire_at: s.next_fire_at,
            last_fire_at: s.last_fire_at,
            last_job_id: s.last_job_id,
            created_at: s.created_at,
            updated_at: s.updated_at,
            managed_by: s.managed_by,
        }
    }
}
