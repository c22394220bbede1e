//! `/job-types`: the job types the API accepts, their payload schemas, and the live workers
//! that serve each.

use crate::dto::{JobTypeResponse, JobTypesResponse};
use crate::error::ApiError;
use crate::openapi::failures;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Every job type: the ones built into this API and the ones workers registered, each with its
/// payload schema, the live workers serving it and its PENDING jobs.
///
/// A worker registers the types it serves when it starts. A type whose workers are all gone
/// stays listed (with no workers): its jobs wait PENDING until a worker serves it again
/// (`GET /scheduler/status` lists such types under `unserved`).
#[utoipa::path(get, path = "/job-types", tag = "jobs",
    responses((status = 200, description = "The job types", body = JobTypesResponse), failures::Both))]
pub async fn list(State(state): State<Arc<AppState>>) -> Result<Json<JobTypesResponse>, ApiError> {
    let (registered, workers, pending) = tokio::try_join!(
        async {
            state
                .catalog
                .reload(state.store.as_ref())
                .await
                .map_err(ApiError::from)
        },
        async { state.transport.workers().await.map_err(ApiError::from) },
        async { state.store.pending_by_type().await.map_err(ApiError::from) },
    )?;
    let mut out: BTreeMap<String, JobTypeResponse> = BTreeMap::new();
    let blank = |name: &str| JobTypeResponse {
        name: name.to_string(),
        schema: None,
        preemptible: None,
        default_timeout_seconds: None,
        registered_by: None,
        registered_at: None,
        workers: Vec::new(),
        pending: 0,
    };
    for name in state.registry.names() {
        let h = state.registry.get(name);
        let mut t = blank(name);
        t.schema = h.as_ref().and_then(|h| h.schema());
        t.preemptible = h.as_ref().map(|h| h.preemptible());
        t.default_timeout_seconds = h.as_ref().map(|h| h.default_timeout().as_secs_f64());
        out.insert(name.to_string(), t);
    }
    for r in registered {
        let t = out.entry(r.name.clone()).or_insert_with(|| blank(&r.name));
        t.schema = Some(r.schema);
        t.preemptible = Some(r.preemptible);
        t.default_timeout_seconds = Some(r.default_timeout_seconds);
        t.registered_by = Some(r.registered_by);
        t.registered_at = Some(r.updated_at);
    }
    for (name, n) in pending {
        out.entry(name.clone())
            .or_insert_with(|| blank(&name))
            .pending = n;
    }
    for w in workers {
        for ty in &w.job_types {
            if let Some(t) = out.get_mut(ty) {
                t.workers.push(w.worker.clone());
            }
        }
    }
    Ok(Json(JobTypesResponse {
        job_types: out.into_values().collect(),
    }))
}
