//! `/queues`: named queues, each with its own policy, quantum, pause, concurrency limit and
//! weight, and how many of its jobs wait and run.

use crate::dto::{QueuePath, QueueResponse, QueueUpdate, ValidationErrorBody};
use crate::error::{ApiError, FieldIssue};
use crate::extract::{Fields, JsonBody, RequireAdmin};
use crate::openapi::failures;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use jobsched_core::PolicyKind;
use jobsched_core::PolicySettings;
use jobsched_core::policy::{MAX_CONCURRENCY_LIMIT, MAX_WEIGHT, MIN_WEIGHT};
use jobsched_core::queue::{self, QueueCounts, check_queue_name};
use serde_json::Value;
use std::sync::Arc;

fn check_path_name(name: &str) -> Result<(), ApiError> {
    check_queue_name(name).map_err(|m| ApiError::Validation(vec![FieldIssue::path("name", m)]))
}

/// `settings` changed by the fields of a `PUT /queues/{name}` body (unset fields keep their
/// value; `concurrency_limit: null` removes the limit).
fn updated(body: &Value, mut settings: PolicySettings) -> Result<PolicySettings, ApiError> {
    let mut issues = Vec::new();
    let Some(mut f) = Fields::of(body, "", &mut issues) else {
        return Err(ApiError::Validation(issues));
    };
    let policy = f.opt_str("policy");
    let quantum = f.opt_f64("quantum_seconds");
    let paused = f.opt_bool("paused");
    let limit = f.opt_int("concurrency_limit");
    let weight = f.opt_int("weight");
    drop(f);
    if let Ok(Some(name)) = &policy {
        match name.parse::<PolicyKind>() {
            Ok(kind) => settings.policy = kind,
            Err(_) => issues.push(FieldIssue::body(
                "policy",
                format!(
                    "unknown policy `{name}`; valid policies are {}",
                    PolicyKind::ALL.map(PolicyKind::as_str).join(", ")
                ),
                "value_error",
            )),
        }
    }
    if let Ok(Some(q)) = quantum {
        settings.quantum_seconds = q;
    }
    if let Ok(Some(p)) = paused {
        settings.paused = p;
    }
    match limit {
        Ok(Some(n)) => match u32::try_from(n) {
            Ok(n) if (1..=MAX_CONCURRENCY_LIMIT).contains(&n) => {
                settings.concurrency_limit = Some(n);
            }
            _ => issues.push(FieldIssue::body(
                "concurrency_limit",
                format!(
                    "must be a whole number from 1 to {MAX_CONCURRENCY_LIMIT} (or null for no \
                     limit; to stop a queue, set `paused`), got {n}"
                ),
                "value_error",
            )),
        },
        Ok(None) if body.get("concurrency_limit").is_some_and(Value::is_null) => {
            settings.concurrency_limit = None;
        }
        _ => {}
    }
    if let Ok(Some(w)) = weight {
        match u32::try_from(w) {
            Ok(w) if (MIN_WEIGHT..=MAX_WEIGHT).contains(&w) => settings.weight = w,
            _ => issues.push(FieldIssue::body(
                "weight",
                format!("must be a whole number from {MIN_WEIGHT} to {MAX_WEIGHT}, got {w}"),
                "value_error",
            )),
        }
    }
    if !issues.is_empty() {
        return Err(ApiError::Validation(issues));
    }
    settings.validate()?;
    Ok(settings)
}

fn response(name: String, settings: PolicySettings, counts: QueueCounts) -> QueueResponse {
    QueueResponse {
        name,
        policy: settings.policy,
        quantum_seconds: settings.quantum_seconds,
        paused: settings.paused,
        concurrency_limit: settings.concurrency_limit,
        weight: settings.weight,
        managed_by: settings.managed_by,
        pending: counts.pending,
        delayed: counts.delayed,
        running: counts.running,
    }
}

/// Every queue with its settings and counts, `default` first, then by name.
async fn all_queues(state: &AppState) -> Result<Vec<QueueResponse>, ApiError> {
    let (settings, counts) = tokio::try_join!(
        async {
            queue::all(&*state.store, &*state.transport)
                .await
                .map_err(ApiError::from)
        },
        async { state.store.queue_counts().await.map_err(ApiError::from) },
    )?;
    let mut counts: std::collections::HashMap<String, QueueCounts> = counts.into_iter().collect();
    let mut out: Vec<QueueResponse> = settings
        .into_iter()
        .map(|(name, s)| {
            let c = counts.remove(&name).unwrap_or_default();
            response(name, s, c)
        })
        .collect();
    // Jobs in a queue without settings (from before queues had them) still show.
    let mut rest: Vec<(String, QueueCounts)> = counts.into_iter().collect();
    rest.sort_by(|a, b| a.0.cmp(&b.0));
    out.extend(
        rest.into_iter()
            .map(|(name, c)| response(name, PolicySettings::default(), c)),
    );
    Ok(out)
}

/// Every named queue: its settings, PENDING (and delayed) jobs and running jobs.
#[utoipa::path(get, path = "/queues", tag = "queues", responses(
    (status = 200, description = "The queues, `default` first, then by name", body = Vec<QueueResponse>),
    failures::Store))]
pub async fn list(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Vec<QueueResponse>>, ApiError> {
    Ok(Json(all_queues(&state).await?))
}

/// One queue's settings and counts.
#[utoipa::path(get, path = "/queues/{name}", tag = "queues", params(QueuePath),
    responses((status = 200, description = "The queue", body = QueueResponse), failures::Queue, failures::Store))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Path(QueuePath { name }): Path<QueuePath>,
) -> Result<Json<QueueResponse>, ApiError> {
    check_path_name(&name)?;
    all_queues(&state)
        .await?
        .into_iter()
        .find(|q| q.name == name)
        .map(Json)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "queue `{name}` does not exist; create it with `PUT /queues/{name}` or by \
                 submitting a job with `\"queue\": \"{name}\"`"
            ))
        })
}

/// Create or change a queue. Unset fields keep their value (a new queue's are the defaults:
/// `fcfs`, quantum 5 s, not paused, no concurrency limit, weight 1). `PUT /scheduler/policy`
/// sets the `default` queue's policy the same way.
#[utoipa::path(put, path = "/queues/{name}", tag = "queues", params(QueuePath),
    request_body = QueueUpdate, responses(
        (status = 200, description = "Changed", body = QueueResponse),
        (status = 201, description = "Created", body = QueueResponse),
        (status = 422, description = "Bad name, policy, quantum, limit or weight", body = ValidationErrorBody),
        failures::ConfigOwned, failures::Body, failures::AdminBoth))]
pub async fn put(
    State(state): State<Arc<AppState>>,
    _admin: RequireAdmin,
    Path(QueuePath { name }): Path<QueuePath>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<QueueResponse>), ApiError> {
    check_path_name(&name)?;
    let current = queue::current(&*state.store, &*state.transport, &name).await?;
    let created = current.is_none();
    let current = current.unwrap_or_default();
    if let Some(owner) = &current.managed_by {
        let hint = match owner.split_once('/') {
            Some((ns, obj)) => format!("kubectl edit schedulerconfig {obj} -n {ns}"),
            None => format!("kubectl edit schedulerconfig {owner}"),
        };
        return Err(ApiError::Conflict(format!(
            "queue `{name}` is managed by SchedulerConfig {owner}; change it in that \
             resource's spec.queues (`{hint}`), or remove it from that list to manage it here"
        )));
    }
    let settings = updated(&body, current)?;
    queue::apply(&*state.store, &*state.transport, &name, &settings).await?;
    tracing::info!(queue = %name, policy = %settings.policy, paused = settings.paused,
        concurrency_limit = ?settings.concurrency_limit, weight = settings.weight,
        "queue settings changed");
    let counts = state
        .store
        .queue_counts()
        .await?
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, c)| c)
        .unwrap_or_default();
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(response(name, settings, counts))))
}
