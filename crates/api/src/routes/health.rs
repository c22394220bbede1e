//! Health and Kubernetes probes. These routes never need a token.

use crate::dto::{HealthResponse, ProbeResponse};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long one backend check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

async fn check<F>(what: &str, fut: F) -> Result<(), String>
where
    F: Future<Output = jobsched_core::Result<()>>,
{
    match tokio::time::timeout(CHECK_TIMEOUT, fut).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(backend = what, error = %e, "health check failed");
            Err(format!("error: {e}"))
        }
        Err(_) => {
            tracing::warn!(backend = what, "health check timed out");
            Err(format!(
                "error: no answer within {}s",
                CHECK_TIMEOUT.as_secs()
            ))
        }
    }
}

fn label(r: &Result<(), String>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => e.clone(),
    }
}

/// Store and transport connectivity (`postgres` / `redis`, the original's field names).
#[utoipa::path(get, path = "/health", tag = "health", security(()), responses(
    (status = 200, description = "Both backends answer", body = HealthResponse),
    (status = 503, description = "A backend is failing; the field names which", body = HealthResponse)))]
pub async fn health(State(state): State<Arc<AppState>>) -> (StatusCode, Json<HealthResponse>) {
    let (store, transport) = tokio::join!(
        check("store", state.store.ping()),
        check("transport", state.transport.ping())
    );
    let healthy = store.is_ok() && transport.is_ok();
    let body = HealthResponse {
        status: if healthy { "healthy" } else { "unhealthy" }.into(),
        postgres: label(&store),
        redis: label(&transport),
    };
    let code = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/livez", tag = "health", security(()),
    responses((status = 200, description = "Alive", body = ProbeResponse)))]
pub async fn livez() -> Json<ProbeResponse> {
    Json(ProbeResponse {
        status: "ok".into(),
    })
}

/// Readiness: the store answers (the transport is optional for serving requests).
#[utoipa::path(get, path = "/readyz", tag = "health", security(()), responses(
    (status = 200, description = "Ready", body = ProbeResponse),
    (status = 503, description = "The store is failing", body = ProbeResponse)))]
pub async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, Json<ProbeResponse>) {
    match check("store", state.store.ping()).await {
        Ok(()) => (
            StatusCode::OK,
            Json(ProbeResponse {
                status: "ok".into(),
            }),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ProbeResponse { status: e }),
        ),
    }
}
