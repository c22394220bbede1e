//! `/jobs`: submit, batch-submit, list, stats, get and cancel.

use crate::dto::{
    BatchCreate, BatchCreated, ErrorBody, JobCreate, JobListResponse, JobLogsResponse, JobPath,
    JobResponse, JobStatsResponse, ListParams, LogsQuery, ValidationErrorBody,
};
use crate::error::{ApiError, FieldIssue};
use crate::extract::{
    Fields, JsonBody, check_payload_size, fingerprint, parse_job_id, parse_submission,
};
use crate::openapi::failures;
use crate::routes::{QueryPairs, publish_jobs_available};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use jobsched_core::ports::Event;
use jobsched_core::{CancelOutcome, JobFilter, JobStatus, UniqueKey};
use std::sync::Arc;

/// Most submissions in one batch.
pub const MAX_BATCH: usize = 1000;
/// Default page size of `GET /jobs/`.
pub const DEFAULT_PAGE_SIZE: u32 = 20;
/// Largest page size of `GET /jobs/`.
pub const MAX_PAGE_SIZE: u32 = 100;
/// Largest page number accepted (keeps offsets far from overflow).
pub const MAX_PAGE: u32 = 10_000_000;

/// Submit a job.
#[utoipa::path(post, path = "/jobs/", tag = "jobs", request_body = JobCreate,
    params(("Idempotency-Key" = Option<String>, Header,
            description = "Idempotency key, as the body's `unique_key` (1 to 255 characters)")),
    responses(
        (status = 200, description = "The job an earlier submission with the same idempotency key and the same request created", body = JobResponse),
        (status = 201, description = "Created (PENDING)", body = JobResponse),
        (status = 401, description = "Missing or wrong API token", body = ErrorBody),
        (status = 409, description = "The idempotency key names a job submitted with a different request", body = ErrorBody),
        (status = 422, description = "Invalid field(s) or payload", body = ValidationErrorBody),
        (status = 503, description = "Store unavailable, or the server at its limits (retry after `Retry-After`)", body = ErrorBody),
        failures::Payload))]
pub async fn submit(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<JobResponse>), ApiError> {
    check_payload_size(&body, "", state.config.max_payload)?;
    crate::catalog::known_types(&state, &body).await?;
    let mut issues = Vec::new();
    let new = parse_submission(&body, "", &state, &mut issues);
    let header_key = idempotency_header(&headers, &body, &mut issues);
    let Some(mut new) = new.filter(|_| issues.is_empty()) else {
        return Err(ApiError::Validation(issues));
    };
    if let Some(key) = header_key {
        new.unique_key = Some(UniqueKey {
            key,
            fingerprint: fingerprint(&body),
        });
    }
    ensure_queues(&state, [new.queue.as_str()]).await?;
    let job = state.store.insert(&new, state.clock.now()).await?;
    if job.id != new.id {
        // The key's first submission: nothing new was stored or announced.
        tracing::info!(job_id = %job.id, "idempotent repeat of a submission");
        return Ok((StatusCode::OK, Json(job.into())));
    }
    tracing::info!(job_id = %job.id, job_type = %job.job_type, "job submitted");
    jobsched_metrics::metrics()
        .jobs_submitted
        .with_label_values(&[job.job_type.as_str()])
        .inc();
    publish_jobs_available(&state, Some(&job)).await;
    Ok((StatusCode::CREATED, Json(job.into())))
}

/// The `Idempotency-Key` header, checked: 1 to 255 characters, and the same as the body's
/// `unique_key` when both are given. Problems go to `issues`.
fn idempotency_header(
    headers: &HeaderMap,
    body: &serde_json::Value,
    issues: &mut Vec<FieldIssue>,
) -> Option<String> {
    let raw = headers.get(IDEMPOTENCY_KEY)?;
    let problem = |message: String| FieldIssue::header("Idempotency-Key", message);
    let Ok(key) = raw.to_str() else {
        issues.push(problem("must be visible ASCII text".into()));
        return None;
    };
    if let Err(message) = jobsched_core::check_unique_key(key) {
        issues.push(problem(message));
        return None;
    }
    match body.get("unique_key").and_then(|v| v.as_str()) {
        Some(field) if field != key => {
            issues.push(problem(format!(
                "differs from the body's unique_key ({field:?}); give one key, or the same in both"
            )));
            None
        }
        _ => Some(key.to_string()),
    }
}

/// Create the named queues a submission puts jobs in that do not exist yet (with the default
/// settings), so the workers that serve every queue learn of them.
async fn ensure_queues<'a>(
    state: &AppState,
    queues: impl IntoIterator<Item = &'a str>,
) -> Result<(), ApiError> {
    let queues: std::collections::BTreeSet<&str> = queues.into_iter().collect();
    for q in queues {
        jobsched_core::queue::ensure(&*state.store, &*state.transport, q).await?;
    }
    Ok(())
}

/// The header that carries a submission's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Submit up to 1000 jobs in one transaction (all or nothing).
#[utoipa::path(post, path = "/jobs/batch", tag = "jobs", request_body = BatchCreate, responses(
    (status = 201, description = "Created (all PENDING), ids in input order; an item whose `unique_key` names an existing job (same request) gets that job's id", body = BatchCreated),
    (status = 409, description = "An item's `unique_key` names a job submitted with a different request; nothing of the batch is stored", body = ErrorBody),
    (status = 422, description = "Invalid job(s); `loc` names `jobs[i].field`", body = ValidationErrorBody),
    failures::Payload, failures::Store))]
pub async fn submit_batch(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<BatchCreated>), ApiError> {
    let mut issues = Vec::new();
    let items = Fields::of(&body, "", &mut issues).and_then(|mut f| f.req_array("jobs"));
    let Some(items) = items else {
        return Err(ApiError::Validation(issues));
    };
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(ApiError::invalid_body(
            "jobs",
            format!(
                "must hold 1 to {MAX_BATCH} jobs, got {}; split larger submissions into several \
                 batches",
                items.len()
            ),
        ));
    }
    for (i, item) in items.iter().enumerate() {
        check_payload_size(item, &format!("jobs[{i}]."), state.config.max_payload)?;
    }
    crate::catalog::known_types(&state, &body).await?;
    let mut jobs = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if let Some(job) = parse_submission(item, &format!("jobs[{i}]."), &state, &mut issues) {
            jobs.push(job);
        }
    }
    if !issues.is_empty() {
        return Err(ApiError::Validation(issues));
    }
    ensure_queues(&state, jobs.iter().map(|j| j.queue.as_str())).await?;
    let ids = state.store.insert_many(&jobs, state.clock.now()).await?;
    tracing::info!(count = ids.len(), "job batch submitted");
    for job in &jobs {
        jobsched_metrics::metrics()
            .jobs_submitted
            .with_label_values(&[job.job_type.as_str()])
            .inc();
    }
    publish_jobs_available(&state, None).await;
    Ok((StatusCode::CREATED, Json(BatchCreated { ids })))
}

/// The large fields a list was asked to include (`?include=payload,result`).
fn parse_include(query: &QueryPairs) -> Result<Vec<&'static str>, ApiError> {
    let mut fields = Vec::new();
    for name in query
        .get("include")
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match crate::dto::LARGE_FIELDS.iter().find(|f| **f == name) {
            Some(f) => fields.push(*f),
            None => {
                return Err(ApiError::Validation(vec![FieldIssue::query(
                    "include",
                    format!(
                        "unknown field `{name}`; include takes a comma-separated list of {}",
                        crate::dto::LARGE_FIELDS.join(", ")
                    ),
                )]));
            }
        }
    }
    Ok(fields)
}

fn parse_list_params(query: &QueryPairs) -> Result<JobFilter, ApiError> {
    let mut issues = Vec::new();
    let mut filter = JobFilter {
        status: None,
        job_type: None,
        id: None,
        name_prefix: None,
        queue: None,
        page: 1,
        page_size: DEFAULT_PAGE_SIZE,
    };
    if let Some(raw) = query.get("q").filter(|s| !s.trim().is_empty()) {
        let raw = raw.trim();
        if raw.chars().count() > jobsched_core::job::MAX_NAME_CHARS || raw.contains('\0') {
            issues.push(FieldIssue::query(
                "q",
                format!(
                    "must be a job id or a name prefix of at most {} characters, without NUL",
                    jobsched_core::job::MAX_NAME_CHARS
                ),
            ));
        } else {
            match raw.parse::<jobsched_core::JobId>() {
                Ok(id) => filter.id = Some(id),
                Err(_) => filter.name_prefix = Some(raw.to_string()),
            }
        }
    }
    if let Some(raw) = query.get("status").filter(|s| !s.is_empty()) {
        match raw.parse::<JobStatus>() {
            Ok(status) => filter.status = Some(status),
            Err(_) => issues.push(FieldIssue::query(
                "status",
                format!(
                    "unknown status `{raw}`; expected one of PENDING, SCHEDULED, RUNNING, \
                     COMPLETED, FAILED, CANCELLED"
                ),
            )),
        }
    }
    if let Some(raw) = query.get("job_type").filter(|s| !s.is_empty()) {
        filter.job_type = Some(raw.to_string());
    }
    if let Some(raw) = query.get("queue").filter(|s| !s.is_empty()) {
        match jobsched_core::queue::check_queue_name(raw) {
            Ok(()) => filter.queue = Some(raw.to_string()),
            Err(m) => issues.push(FieldIssue::query("queue", m)),
        }
    }
    match query.int("page", 1, MAX_PAGE) {
        Ok(Some(page)) => filter.page = page,
        Ok(None) => {}
        Err(issue) => issues.push(issue),
    }
    match query.int("page_size", 1, MAX_PAGE_SIZE) {
        Ok(Some(size)) => filter.page_size = size,
        Ok(None) => {}
        Err(issue) => issues.push(issue),
    }
    if issues.is_empty() {
        Ok(filter)
    } else {
        Err(ApiError::Validation(issues))
    }
}

/// List jobs, newest first, filtered by state and type.
#[utoipa::path(get, path = "/jobs/", tag = "jobs", params(ListParams), responses(
    (status = 200, description = "One page", body = JobListResponse),
    (status = 422, description = "Bad query parameter", body = ValidationErrorBody), failures::Store))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    query: QueryPairs,
) -> Result<Json<JobListResponse>, ApiError> {
    let filter = parse_list_params(&query)?;
    let include = parse_include(&query)?;
    let page = state.store.list(&filter).await?;
    Ok(Json(JobListResponse::new(page, &include)))
}

/// Counts per state and the mean execution time.
#[utoipa::path(get, path = "/jobs/stats", tag = "jobs",
    responses((status = 200, description = "Statistics", body = JobStatsResponse), failures::Store))]
pub async fn stats(State(state): State<Arc<AppState>>) -> Result<Json<JobStatsResponse>, ApiError> {
    Ok(Json(state.store.stats().await?))
}

/// One job.
#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs", params(JobPath),
    responses((status = 200, description = "The job", body = JobResponse), failures::Job, failures::Store))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Path(JobPath { id }): Path<JobPath>,
) -> Result<Json<JobResponse>, ApiError> {
    let id = parse_job_id(&id)?;
    match state.store.get(id).await? {
        Some(job) => {
            let mut job = JobResponse::from(job);
            job.progress = state.store.progress(id).await?;
            Ok(Json(job))
        }
        None => Err(ApiError::NotFound("Job not found".into())),
    }
}

/// The log lines a job's runs wrote, per try.
///
/// Kept per try (1 = first, one more per retry; the Round Robin slices of a try share it):
/// the newest 1,000 lines and 256 KiB of each, `dropped` counting the older ones. Lines are
/// written by the worker about once a second while the job runs, and at its end.
#[utoipa::path(get, path = "/jobs/{id}/logs", tag = "jobs", params(JobPath, LogsQuery), responses(
    (status = 200, description = "The job's logs", body = JobLogsResponse),
    (status = 404, description = "No such job", body = ErrorBody),
    (status = 422, description = "Malformed id or attempt", body = ValidationErrorBody), failures::Store))]
pub async fn logs(
    State(state): State<Arc<AppState>>,
    Path(JobPath { id }): Path<JobPath>,
    query: QueryPairs,
) -> Result<Json<JobLogsResponse>, ApiError> {
    let id = parse_job_id(&id)?;
    let attempt = match query.get("attempt") {
        None => None,
        Some(a) => match a.trim().parse::<u32>() {
            Ok(n) if (1..=1_000_000).contains(&n) => Some(n),
            _ => {
                return Err(ApiError::Validation(vec![FieldIssue::query(
                    "attempt",
                    format!(
                        "must be a try number from 1 to 1000000 (1 = the first try), got {a:?}"
                    ),
                )]));
            }
        },
    };
    if state.store.get(id).await?.is_none() {
        return Err(ApiError::NotFound("Job not found".into()));
    }
    let attempts = state.store.logs(id, attempt).await?;
    Ok(Json(JobLogsResponse {
        job_id: id,
        attempts,
    }))
}

/// Cancel a job that has not ended.
///
/// A PENDING or SCHEDULED job is CANCELLED at once (204). A RUNNING job is CANCELLED at once
/// too, and its worker is told to stop the body (202): the outcome the worker then writes is
/// refused (it is fenced by the RUNNING state), so a job cancelled here never ends COMPLETED.
/// Built-in job types check their stop flag at least every 100 ms; a worker that misses the
/// message stops the body at its next lease renewal. Cancelling a CANCELLED job again is a
/// no-op (204).
#[utoipa::path(delete, path = "/jobs/{id}", tag = "jobs", params(JobPath), responses(
    (status = 202, description = "Was RUNNING: now CANCELLED, its worker stops the body"),
    (status = 204, description = "Cancelled (or already CANCELLED)"),
    (status = 409, description = "Already COMPLETED or FAILED", body = ErrorBody), failures::Job, failures::Store))]
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    Path(JobPath { id }): Path<JobPath>,
) -> Result<StatusCode, ApiError> {
    let id = parse_job_id(&id)?;
    let outcome = state.store.cancel(id, state.clock.now()).await?;
    let code = match outcome {
        CancelOutcome::Cancelled => StatusCode::NO_CONTENT,
        CancelOutcome::Stopping => {
            // Best effort: a worker that misses it finds out when its lease renewal fails.
            if let Err(e) = state.transport.publish(Event::Cancelled(id)).await {
                tracing::warn!(job_id = %id, error = %e, "cannot tell the workers to stop a cancelled job; its worker stops it at its next lease renewal");
            }
            StatusCode::ACCEPTED
        }
        CancelOutcome::NotFound => return Err(ApiError::NotFound("Job not found".into())),
        CancelOutcome::NotCancellable(JobStatus::Cancelled) => return Ok(StatusCode::NO_CONTENT),
        CancelOutcome::NotCancellable(status) => {
            return Err(ApiError::Conflict(format!(
                "Job is {status}; only PENDING, SCHEDULED or RUNNING jobs can be cancelled"
            )));
        }
    };
    tracing::info!(job_id = %id, running = code == StatusCode::ACCEPTED, "job cancelled");
    // Label by type: one extra read on a rare path.
    if let Ok(Some(job)) = state.store.get(id).await {
        jobsched_metrics::metrics()
            .jobs_finished
            .with_label_values(&[job.job_type.as_str(), "cancelled"])
            .inc();
    }
    Ok(code)
}
