//! jobsched-api: the REST API of the jobsched scheduler (axum).
//!
//! It keeps the contract of the original FastAPI service (`POST/GET/DELETE /jobs`,
//! `PUT /scheduler/policy`, `GET /scheduler/status`, `GET /scheduler/dead-letter`,
//! `GET /health`), including FastAPI-shaped error bodies, and adds batch submission,
//! dead-letter retry/purge, Kubernetes probes (`/livez`, `/readyz`), bearer-token auth, an
//! OpenAPI document (`/api-docs/openapi.json`) and a vendored Swagger UI (`/docs`). Every API
//! path answers with and without a trailing slash.
//!
//! The API only talks to the ports: the [`Store`](jobsched_core::ports::Store) is the truth,
//! the [`Transport`](jobsched_core::ports::Transport) carries events and live runtime state.

pub mod dto;
pub mod error;
mod extract;
mod openapi;
pub mod routes;
mod state;

pub use error::{ApiError, FieldIssue, LocPart};
pub use extract::{JsonBody, RequireAdmin};
pub use openapi::openapi;
pub use state::{ApiConfig, AppState, DEFAULT_BODY_LIMIT};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};
use extract::{Caller, identify, unauthorized};
use routes::{health, jobs, scheduler};
use std::future::Future;
use std::sync::Arc;
use tower_http::trace::TraceLayer;
use utoipa_swagger_ui::SwaggerUi;

type SharedState = Arc<AppState>;

/// Register `path` both without and with a trailing slash.
fn both(
    router: Router<SharedState>,
    path: &str,
    method_router: MethodRouter<SharedState>,
) -> Router<SharedState> {
    let bare = path.trim_end_matches('/');
    router
        .route(bare, method_router.clone())
        .route(&format!("{bare}/"), method_router)
}

/// The route template a request matched, without a trailing slash (`/jobs/{id}`), for span and
/// metric labels; `<unmatched>` for 404s.
pub fn route_label(request: &Request<Body>) -> String {
    match request.extensions().get::<MatchedPath>() {
        Some(p) => {
            let s = p.as_str();
            if s.len() > 1 {
                s.trim_end_matches('/').to_string()
            } else {
                s.to_string()
            }
        }
        None => "<unmatched>".to_string(),
    }
}

/// Reject requests without the API token (when one is configured).
async fn require_token(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    if state.config.api_token.is_some() && identify(&state, request.headers()) == Caller::Unknown {
        return unauthorized(request.headers()).into_response();
    }
    next.run(request).await
}

/// Count and time every request by route template (bounded cardinality), method and status.
async fn record_metrics(request: Request, next: Next) -> Response {
    let route = route_label(&request);
    let method: &'static str = match request.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    };
    let start = std::time::Instant::now();
    let response = next.run(request).await;
    let m = jobsched_metrics::metrics();
    m.http_requests
        .with_label_values(&[route.as_str(), method, response.status().as_str()])
        .inc();
    m.http_duration
        .with_label_values(&[route.as_str(), method])
        .observe(start.elapsed().as_secs_f64());
    response
}

async fn no_route() -> ApiError {
    ApiError::NoRoute
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Build the full application: API routes (token-protected when configured), probes, OpenAPI
/// document and Swagger UI, with the body limit and per-request tracing spans.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.body_limit;
    let state: SharedState = Arc::new(state);

    let mut api = Router::new();
    api = both(api, "/jobs", get(jobs::list).post(jobs::submit));
    api = both(api, "/jobs/batch", post(jobs::submit_batch));
    api = both(api, "/jobs/stats", get(jobs::stats));
    api = both(api, "/jobs/{id}", get(jobs::get).delete(jobs::cancel));
    api = both(api, "/scheduler/policy", put(scheduler::set_policy));
    api = both(api, "/scheduler/status", get(scheduler::status));
    api = both(
        api,
        "/scheduler/dead-letter",
        get(scheduler::dead_letters).delete(scheduler::purge_dead_letters),
    );
    api = both(
        api,
        "/scheduler/dead-letter/{id}/retry",
        post(scheduler::retry_dead_letter),
    );
    let api = api.route_layer(middleware::from_fn_with_state(state.clone(), require_token));

    let mut open = Router::new();
    open = both(open, "/health", get(health::health));
    open = both(open, "/livez", get(health::livez));
    open = both(open, "/readyz", get(health::readyz));
    open = open.route(
        "/metrics",
        get(|| async { jobsched_metrics::metrics_handler().await }),
    );

    let docs: Router<SharedState> = SwaggerUi::new("/docs")
        .url("/api-docs/openapi.json", openapi())
        .into();

    Router::new()
        .merge(api)
        .merge(open)
        .merge(docs)
        .layer(middleware::from_fn(record_metrics))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<Body>| {
                tracing::info_span!(
                    "http_request",
                    method = %request.method(),
                    route = %route_label(request),
                    path = %request.uri().path(),
                )
            }),
        )
        .with_state(state)
}

/// Serve [`router`] on `listener` until `shutdown` resolves, then finish in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "REST API listening");
    }
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
