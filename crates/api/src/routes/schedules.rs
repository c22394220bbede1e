//! `/schedules`: periodic jobs (cron expression, time zone, job template).

use crate::dto::{ErrorBody, ScheduleBody, SchedulePath, ScheduleResponse, ValidationErrorBody};
use crate::error::{ApiError, FieldIssue};
use crate::extract::{Fields, JsonBody, check_payload_size, parse_submission};
use crate::openapi::failures;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use jobsched_core::schedule::{Cron, Overlap, Schedule, check_schedule_name};
use serde_json::Value;
use std::sync::Arc;

/// Parse and check a schedule body; `name` comes from the path (PUT) or the body (POST).
fn parse_schedule(
    body: &Value,
    path_name: Option<&str>,
    state: &AppState,
) -> Result<Schedule, ApiError> {
    let mut issues = Vec::new();
    check_payload_size(
        body.get("job").unwrap_or(&Value::Null),
        "job.",
        state.config.max_payload,
    )?;
    let mut fields = Fields::of(body, "", &mut issues).ok_or_else(|| {
        ApiError::Validation(vec![FieldIssue::body(
            "",
            "must be a JSON object",
            "type_error",
        )])
    })?;
    let body_name = fields.opt_str("name");
    let cron = fields.req_str("cron");
    let timezone = fields.opt_str("timezone");
    let overlap = fields.opt_str("overlap");
    let paused = fields.opt_bool("paused");
    let catch_up = fields.opt_bool("catch_up");
    let job = fields.opt_object("job");
    drop(fields);
    let name = match (path_name, body_name) {
        (Some(n), body_name) => {
            if let Ok(Some(b)) = &body_name
                && b != n
            {
                issues.push(FieldIssue::body(
                    "name",
                    format!("differs from the path's name ({n:?}), got {b:?}"),
                    "value_error",
                ));
            }
            if let Err(m) = check_schedule_name(n) {
                issues.push(FieldIssue::path("name", m));
            }
            Some(n.to_string())
        }
        (None, Ok(Some(b))) => {
            if let Err(m) = check_schedule_name(&b) {
                issues.push(FieldIssue::body("name", m, "value_error"));
            }
            Some(b)
        }
        (None, Ok(None)) => {
            issues.push(FieldIssue::body("name", "field required", "missing"));
            None
        }
        (None, Err(())) => None,
    };
    let timezone = timezone.ok().flatten().unwrap_or_else(|| "UTC".into());
    let when = cron.and_then(|c| match Cron::parse(&c, &timezone) {
        Ok(w) => Some(w),
        Err((field, m)) => {
            issues.push(FieldIssue::body(field, m, "value_error"));
            None
        }
    });
    let overlap = match overlap {
        Ok(None) => Some(Overlap::Skip),
        Ok(Some(o)) if o == "skip" => Some(Overlap::Skip),
        Ok(Some(o)) if o == "allow" => Some(Overlap::Allow),
        Ok(Some(o)) => {
            issues.push(FieldIssue::body(
                "overlap",
                format!("must be \"skip\" or \"allow\", got {o:?}"),
                "value_error",
            ));
            None
        }
        Err(()) => None,
    };
    let template = match job {
        Ok(Some(j)) => {
            for field in ["run_at", "delay_seconds", "unique_key"] {
                if j.get(field).is_some_and(|v| !v.is_null()) {
                    issues.push(FieldIssue::body(
                        &format!("job.{field}"),
                        "is set per fire by the schedule; leave it out of the template",
                        "value_error",
                    ));
                }
            }
            parse_submission(&j, "job.", state, &mut issues)
        }
        Ok(None) => {
            issues.push(FieldIssue::body("job", "field required", "missing"));
            None
        }
        Err(()) => None,
    };
    match (name, when, overlap, template) {
        (Some(name), Some(when), Some(overlap), Some(job)) if issues.is_empty() => {
            // Whole microseconds, as both stores keep them.
            let now = chrono::SubsecRound::trunc_subsecs(state.clock.now(), 6);
            Ok(Schedule {
                name,
                next_fire_at: when.next_after(now),
                when,
                job,
                overlap,
                paused: paused.ok().flatten().unwrap_or(false),
                catch_up: catch_up.ok().flatten().unwrap_or(true),
                last_fire_at: None,
                last_job_id: None,
                created_at: now,
                updated_at: now,
                managed_by: None,
            })
        }
        _ => Err(ApiError::Validation(issues)),
    }
}

/// A 409 when a Kubernetes `JobSchedule` owns schedule `name`: changes go through it.
async fn refuse_if_managed(state: &AppState, name: &str) -> Result<(), ApiError> {
    let owner = state
        .store
        .get_schedule(name)
        .await?
        .and_then(|s| s.managed_by);
    match owner {
        None => Ok(()),
        Some(owner) => {
            let hint = match owner.split_once('/') {
                Some((ns, obj)) => format!("kubectl edit jobschedule {obj} -n {ns}"),
                None => format!("kubectl edit jobschedule {owner}"),
            };
            Err(ApiError::Conflict(format!(
                "schedule {name:?} is managed by JobSchedule {owner}; change it with `{hint}`, \
                 or delete that resource to delete the schedule"
            )))
        }
    }
}

/// Create a periodic job.
#[utoipa::path(post, path = "/schedules", tag = "schedules", request_body = ScheduleBody, responses(
    (status = 201, description = "Created", body = ScheduleResponse),
    (status = 409, description = "A schedule with this name exists (PUT replaces it)", body = ErrorBody),
    (status = 422, description = "Invalid field(s): name, cron, timezone, overlap, job.…", body = ValidationErrorBody),
    failures::Payload, failures::Store))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<ScheduleResponse>), ApiError> {
    crate::catalog::known_types(&state, &body).await?;
    let schedule = parse_schedule(&body, None, &state)?;
    if !state.store.create_schedule(&schedule).await? {
        return Err(ApiError::Conflict(format!(
            "schedule {:?} exists; PUT /schedules/{} replaces it",
            schedule.name, schedule.name
        )));
    }
    tracing::info!(schedule = %schedule.name, cron = schedule.when.expression(), "schedule created");
    Ok((StatusCode::CREATED, Json(schedule.into())))
}

/// Create or replace a periodic job (its fire history stays; the next fire time is
/// recomputed from now).
#[utoipa::path(put, path = "/schedules/{name}", tag = "schedules", params(SchedulePath),
    request_body = ScheduleBody, responses(
        (status = 200, description = "Replaced", body = ScheduleResponse),
        (status = 201, description = "Created", body = ScheduleResponse),
        (status = 422, description = "Invalid field(s)", body = ValidationErrorBody),
        failures::ScheduleOwned, failures::Payload, failures::Store))]
pub async fn put(
    State(state): State<Arc<AppState>>,
    Path(SchedulePath { name }): Path<SchedulePath>,
    JsonBody(body): JsonBody,
) -> Result<(StatusCode, Json<ScheduleResponse>), ApiError> {
    crate::catalog::known_types(&state, &body).await?;
    let schedule = parse_schedule(&body, Some(&name), &state)?;
    refuse_if_managed(&state, &name).await?;
    let replaced = state.store.put_schedule(&schedule).await?;
    let stored = state
        .store
        .get_schedule(&schedule.name)
        .await?
        .unwrap_or(schedule);
    tracing::info!(schedule = %stored.name, replaced, "schedule written");
    let code = if replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((code, Json(stored.into())))
}

/// One periodic job, with its next and last fire times.
#[utoipa::path(get, path = "/schedules/{name}", tag = "schedules", params(SchedulePath),
    responses((status = 200, description = "The schedule", body = ScheduleResponse), failures::Schedule, failures::Store))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    Path(SchedulePath { name }): Path<SchedulePath>,
) -> Result<Json<ScheduleResponse>, ApiError> {
    match state.store.get_schedule(&name).await? {
        Some(s) => Ok(Json(s.into())),
        None => Err(ApiError::NotFound(format!("no schedule named {name:?}"))),
    }
}

/// Every periodic job, by name.
#[utoipa::path(get, path = "/schedules", tag = "schedules",
    responses((status = 200, description = "All schedules", body = Vec<ScheduleResponse>), failures::Store))]
pub async fn list(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Vec<ScheduleResponse>>, ApiError> {
    let all = state.store.list_schedules().await?;
    Ok(Json(all.into_iter().map(Into::into).collect()))
}

/// Delete a periodic job (the jobs it enqueued stay).
#[utoipa::path(delete, path = "/schedules/{name}", tag = "schedules", params(SchedulePath), responses(
    (status = 204, description = "Deleted"), failures::ScheduleOwned, failures::Schedule, failures::Store))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path(SchedulePath { name }): Path<SchedulePath>,
) -> Result<StatusCode, ApiError> {
    refuse_if_managed(&state, &name).await?;
    if state.store.delete_schedule(&name).await? {
        tracing::info!(schedule = %name, "schedule deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no schedule named {name:?}")))
    }
}
