//! `/scheduler`: policy switching, status and the dead-letter queue.

use crate::dto::{
    DeadLetterParams, DeadLetterResponse, ErrorBody, JobPath, JobResponse, PolicyUpdate,
    PurgeResponse, SchedulerStatus, ValidationErrorBody, WorkerResponse,
};
use crate::error::{ApiError, FieldIssue};
use crate::extract::{Fields, JsonBody, RequireAdmin, parse_job_id};
use crate::openapi::failures;
use crate::routes::{QueryPairs, publish_jobs_available};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use jobsched_core::ports::Update;
use jobsched_core::queue::DEFAULT_QUEUE;
use jobsched_core::{PolicyKind, PolicySettings};
use std::sync::Arc;

/// Default number of dead letters listed.
pub const DEFAULT_DEAD_LETTER_LIMIT: u32 = 1000;
/// Most dead letters listed at once.
pub const MAX_DEAD_LETTER_LIMIT: u32 = 10_000;

/// The live settings: the transport's copy, else (missing, or Redis not answering) the
/// store's durable copy, else the default.
pub(crate) async fn current_settings(state: &AppState) -> Result<PolicySettings, ApiError> {
    Ok(
        jobsched_core::queue::current(&*state.store, &*state.transport, DEFAULT_QUEUE)
            .await?
            .unwrap_or_default(),
    )
}

async fn scheduler_status(state: &AppState) -> Result<SchedulerStatus, ApiError> {
    let (settings, stats, dead_letters, workers, pending) = tokio::try_join!(
        current_settings(state),
        async { state.store.stats().await.map_err(ApiError::from) },
        async {
            state
                .store
                .dead_letter_count()
                .await
                .map_err(ApiError::from)
        },
        async { state.transport.workers().await.map_err(ApiError::from) },
        async { state.store.pending_by_type().await.map_err(ApiError::from) },
    )?;
    let mut status = status_of(settings, &stats, dead_letters, &workers);
    status.unserved = unserved(&pending, &workers);
    Ok(status)
}

/// The types among `pending` (PENDING jobs per type) that no live worker serves.
pub(crate) fn unserved(
    pending: &[(String, i64)],
    workers: &[jobsched_core::ports::WorkerSlots],
) -> Vec<crate::dto::UnservedType> {
    pending
        .iter()
        .filter(|(t, n)| *n > 0 && !workers.iter().any(|w| w.job_types.contains(t)))
        .map(|(t, n)| crate::dto::UnservedType {
            job_type: t.clone(),
            pending: *n,
        })
        .collect()
}

/// The status from its parts (live, or the console's samples).
pub(crate) fn status_of(
    settings: PolicySettings,
    stats: &jobsched_core::JobStats,
    dead_letters: i64,
    workers: &[jobsched_core::ports::WorkerSlots],
) -> SchedulerStatus {
    SchedulerStatus {
        current_policy: settings.policy,
        quantum_seconds: settings.quantum_seconds,
        paused: settings.paused,
        managed_by: settings.managed_by,
        queue_depth: stats.pending + stats.scheduled,
        dead_letter_count: dead_letters,
        workers: u32::try_from(workers.len()).unwrap_or(u32::MAX),
        total_slots: workers.iter().map(|w| u64::from(w.total)).sum(),
        free_slots: workers.iter().map(|w| u64::from(w.idle)).sum(),
        unserved: Vec::new(),
    }
}

/// Write new settings: the durable copy first, so a transport rebuild never resurrects the
/// old ones.
async fn save_settings(state: &AppState, settings: &PolicySettings) -> Result<(), ApiError> {
    jobsched_core::queue::apply(&*state.store, &*state.transport, DEFAULT_QUEUE, settings).await?;
    Ok(())
}

/// The 409 message when a Kubernetes `SchedulerConfig` owns the settings.
fn managed_conflict(owner: &str) -> ApiError {
    let hint = match owner.split_once('/') {
        Some((ns, name)) => format!("kubectl edit schedulerconfig {name} -n {ns}"),
        None => format!("kubectl edit schedulerconfig {owner}"),
    };
    ApiError::Conflict(format!(
        "policy is managed by SchedulerConfig {owner}; change it with `{hint}` or delete that \
         resource (if its controller is gone, an admin can take the policy back with \
         `DELETE /scheduler/policy/owner` or `jobsched policy --release-ownership`)"
    ))
}

/// Switch the scheduling policy at runtime (no restart).
#[utoipa::path(put, path = "/scheduler/policy", tag = "scheduler", request_body = PolicyUpdate,
    responses(
        (status = 200, description = "The scheduler status after the change", body = SchedulerStatus),
        (status = 422, description = "Unknown policy or bad quantum", body = ValidationErrorBody),
        failures::ConfigOwned, failures::Body, failures::AdminBoth))]
pub async fn set_policy(
    State(state): State<Arc<AppState>>,
    _admin: RequireAdmin,
    JsonBody(body): JsonBody,
) -> Result<Json<SchedulerStatus>, ApiError> {
    let mut issues = Vec::new();
    let (name, quantum, paused) = match Fields::of(&body, "", &mut issues) {
        Some(mut f) => (
            f.req_str("policy"),
            f.opt_f64("quantum_seconds"),
            f.opt_bool("paused"),
        ),
        None => return Err(ApiError::Validation(issues)),
    };
    let policy = name.as_deref().and_then(|n| match n.parse::<PolicyKind>() {
        Ok(kind) => Some(kind),
        Err(_) => {
            issues.push(FieldIssue::body(
                "policy",
                format!(
                    "unknown policy `{n}`; valid policies are {}",
                    PolicyKind::ALL.map(PolicyKind::as_str).join(", ")
                ),
                "value_error",
            ));
            None
        }
    });
    let (Some(policy), Ok(quantum), Ok(paused)) = (policy, quantum, paused) else {
        return Err(ApiError::Validation(issues));
    };
    if !issues.is_empty() {
        return Err(ApiError::Validation(issues));
    }

    let current = current_settings(&state).await?;
    if let Some(owner) = &current.managed_by {
        return Err(managed_conflict(owner));
    }
    let settings = PolicySettings {
        policy,
        quantum_seconds: quantum.unwrap_or(current.quantum_seconds),
        paused: paused.unwrap_or(current.paused),
        managed_by: None,
        ..current
    };
    settings.validate()?;
    save_settings(&state, &settings).await?;
    tracing::info!(policy = %settings.policy, quantum = settings.quantum_seconds, paused = settings.paused, "scheduling policy changed");
    Ok(Json(scheduler_status(&state).await?))
}

/// Admin override: take the policy back from a Kubernetes `SchedulerConfig` whose controller can
/// no longer release it (uninstalled, or stopped before it saw its object deleted). The policy
/// itself stays as it is; only `managed_by` is cleared, durable copy first. A running
/// controller whose object still exists takes ownership back at its next reconcile.
#[utoipa::path(delete, path = "/scheduler/policy/owner", tag = "scheduler", responses(
    (status = 200, description = "The status, with no owner", body = SchedulerStatus), failures::AdminBoth))]
pub async fn release_policy_owner(
    State(state): State<Arc<AppState>>,
    _admin: RequireAdmin,
) -> Result<Json<SchedulerStatus>, ApiError> {
    if let Some(owner) =
        jobsched_core::queue::release(Some(&*state.store), &*state.transport, DEFAULT_QUEUE, None)
            .await
            .map_err(jobsched_core::Error::from)?
    {
        tracing::warn!(
            owner = %owner,
            "policy ownership released by an admin override; the REST API may change the policy again"
        );
    }
    Ok(Json(scheduler_status(&state).await?))
}

/// Current policy, queue depth, dead letters and worker slots.
#[utoipa::path(get, path = "/scheduler/status", tag = "scheduler",
    responses((status = 200, description = "Status", body = SchedulerStatus), failures::Both))]
pub async fn status(State(state): State<Arc<AppState>>) -> Result<Json<SchedulerStatus>, ApiError> {
    Ok(Json(scheduler_status(&state).await?))
}

/// Live workers and their slots, by worker id.
#[utoipa::path(get, path = "/scheduler/workers", tag = "scheduler", responses(
    (status = 200, description = "Live workers", body = Vec<WorkerResponse>),
    (status = 401, description = "Missing or wrong API token", body = ErrorBody),
    (status = 503, description = "Transport unavailable", body = ErrorBody)))]
pub async fn workers(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Vec<WorkerResponse>>, ApiError> {
    let mut workers: Vec<WorkerResponse> = state
        .transport
        .workers()
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    workers.sort_by(|a, b| a.worker.cmp(&b.worker));
    Ok(Json(workers))
}

/// Permanently failed jobs, most recent failure first.
#[utoipa::path(get, path = "/scheduler/dead-letter", tag = "scheduler", params(DeadLetterParams),
    responses(
        (status = 200, description = "Dead letters", body = Vec<DeadLetterResponse>),
        (status = 422, description = "Bad `limit`", body = ValidationErrorBody), failures::Store))]
pub async fn dead_letters(
    State(state): State<Arc<AppState>>,
    query: QueryPairs,
) -> Result<Json<Vec<DeadLetterResponse>>, ApiError> {
    let limit = query
        .int("limit", 1, MAX_DEAD_LETTER_LIMIT)
        .map_err(|issue| ApiError::Validation(vec![issue]))?
        .unwrap_or(DEFAULT_DEAD_LETTER_LIMIT);
    Ok(Json(state.store.dead_letters(limit).await?))
}

/// Re-run a dead-lettered job: back to PENDING with fresh retries.
#[utoipa::path(post, path = "/scheduler/dead-letter/{id}/retry", tag = "scheduler", params(JobPath),
    responses(
        (status = 200, description = "The job, now PENDING", body = JobResponse),
        (status = 404, description = "Not in the dead-letter queue", body = ErrorBody),
        (status = 422, description = "Malformed id", body = ValidationErrorBody), failures::AdminStore))]
pub async fn retry_dead_letter(
    State(state): State<Arc<AppState>>,
    _admin: RequireAdmin,
    Path(JobPath { id }): Path<JobPath>,
) -> Result<Json<JobResponse>, ApiError> {
    let id = parse_job_id(&id)?;
    match state.store.retry_dead_letter(id, state.clock.now()).await? {
        Update::Applied => {
            publish_jobs_available(&state, None).await;
            tracing::info!(job_id = %id, "dead letter re-queued");
            let job = state
                .store
                .get(id)
                .await?
                .ok_or_else(|| ApiError::NotFound("Job not found".into()))?;
            Ok(Json(job.into()))
        }
        Update::Stale => match state.store.get(id).await? {
            None => Err(ApiError::NotFound("Job not found".into())),
            Some(job) => Err(ApiError::NotFound(format!(
                "Job {id} is not in the dead-letter queue (it is {}); only FAILED jobs in the \
                 queue can be retried",
                job.status
            ))),
        },
    }
}

/// Empty the dead-letter queue (the jobs stay FAILED).
#[utoipa::path(delete, path = "/scheduler/dead-letter", tag = "scheduler",
    responses((status = 200, description = "Entries removed", body = PurgeResponse), failures::AdminStore))]
pub async fn purge_dead_letters(
    State(state): State<Arc<AppState>>,
    _admin: RequireAdmin,
) -> Result<Json<PurgeResponse>, ApiError> {
    let purged = state.store.purge_dead_letters().await?;
    tracing::info!(purged, "dead-letter queue purged");
    Ok(Json(PurgeResponse { purged }))
}
