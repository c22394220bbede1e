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

mod activity;
pub mod backlog;
pub mod catalog;
pub mod deadline;
pub mod dto;
pub mod error;
mod extract;
mod openapi;
pub mod routes;
mod state;

pub use deadline::{
    Deadline, DeadlineStore, DeadlineTransport, STORE_DEADLINE, TRANSPORT_DEADLINE,
    transport_with_deadline, with_deadline,
};
pub use error::{ApiError, FieldIssue, LocPart};
pub use extract::{JsonBody, RequireAdmin};
pub use openapi::openapi;
pub use state::{
    ApiConfig, AppState, DEFAULT_BODY_LIMIT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_INFLIGHT,
    DEFAULT_MAX_PAYLOAD,
};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};
use extract::{Caller, identify, unauthorized};
use routes::{health, job_types, jobs, queues, scheduler, schedules, ui};
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

/// Answer 503 (with `Retry-After`) at once when `max_inflight` requests are already being
/// served, instead of queueing without bound.
async fn limit_inflight(
    State((permits, limit)): State<(Arc<tokio::sync::Semaphore>, usize)>,
    request: Request,
    next: Next,
) -> Response {
    match permits.try_acquire_owned() {
        Ok(_permit) => next.run(request).await,
        Err(_) => ApiError::Busy { limit }.into_response(),
    }
}

/// Hold the bytes of every request body in flight against one budget (`JOBSCHED_API_BODY_BUDGET`),
/// so many large bodies at once (each parsed into JSON several times its size) cannot exhaust
/// the process: a request whose declared (or, if chunked, largest possible) body does not fit
/// is answered 503 with `Retry-After` at once.
async fn limit_body_bytes(
    State((budget, total_kib, body_limit)): State<(Arc<tokio::sync::Semaphore>, u32, usize)>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method();
    if method == axum::http::Method::GET
        || method == axum::http::Method::HEAD
        || method == axum::http::Method::DELETE
        || method == axum::http::Method::OPTIONS
    {
        return next.run(request).await;
    }
    let declared = extract::declared_length(request.headers())
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(body_limit)
        .min(body_limit);
    let kib = u32::try_from(declared.div_ceil(1024))
        .unwrap_or(u32::MAX)
        .clamp(1, total_kib);
    match budget.try_acquire_many_owned(kib) {
        Ok(_permit) => next.run(request).await,
        Err(_) => ApiError::Unavailable(format!(
            "the server holds its limit of {} KiB of request bodies at once \
             (JOBSCHED_API_BODY_BUDGET); retry in a moment",
            total_kib
        ))
        .into_response(),
    }
}

/// Give every request at most `timeout` from its headers to its response (503 after it: the
/// request may or may not have taken effect).
async fn limit_time(
    State(timeout): State<std::time::Duration>,
    request: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Unavailable(format!(
            "the request did not complete within {} s (JOBSCHED_API_REQUEST_TIMEOUT); it may or \
             may not have taken effect: check before retrying a submission",
            timeout.as_secs_f64()
        ))
        .into_response(),
    }
}

/// Every error response is JSON `{"detail": …}`: rejections produced outside the handlers
/// (a path that does not decode, an unsupported media type, …) come as plain text; they are
/// rewritten here.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let detail = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let body = serde_json::to_vec(&serde_json::json!({ "detail": detail })).unwrap_or_default();
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
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
/// document and Swagger UI, the web console, with the body limit and per-request tracing spans.
/// The console's overview samples the store on demand (see [`serve`] for the background
/// sampler).
pub fn router(state: AppState) -> Router {
    router_with(state, Arc::new(activity::Activity::default()))
}

fn router_with(state: AppState, activity: Arc<activity::Activity>) -> Router {
    jobsched_metrics::init_job_types(state.registry.names());
    let body_limit = state.config.body_limit;
    let request_timeout = state.config.request_timeout;
    let max_inflight = state.config.max_inflight.max(1);
    let permits = Arc::new(tokio::sync::Semaphore::new(max_inflight));
    let body_kib = u32::try_from(state.config.body_budget.div_ceil(1024))
        .unwrap_or(u32::MAX)
        .clamp(1, u32::MAX >> 3);
    let body_budget = Arc::new(tokio::sync::Semaphore::new(body_kib as usize));
    let state: SharedState = Arc::new(state);

    // Every REST path, each also with a trailing slash.
    let routes: [(&str, MethodRouter<SharedState>); 17] = [
        ("/jobs", get(jobs::list).post(jobs::submit)),
        ("/jobs/batch", post(jobs::submit_batch)),
        ("/jobs/stats", get(jobs::stats)),
        ("/jobs/{id}", get(jobs::get).delete(jobs::cancel)),
        ("/jobs/{id}/logs", get(jobs::logs)),
        ("/job-types", get(job_types::list)),
        ("/schedules", get(schedules::list).post(schedules::create)),
        (
            "/schedules/{name}",
            get(schedules::get)
                .put(schedules::put)
                .delete(schedules::delete),
        ),
        ("/queues", get(queues::list)),
        ("/queues/{name}", get(queues::get).put(queues::put)),
        ("/scheduler/policy", put(scheduler::set_policy)),
        (
            "/scheduler/policy/owner",
            axum::routing::delete(scheduler::release_policy_owner),
        ),
        ("/scheduler/status", get(scheduler::status)),
        ("/scheduler/workers", get(scheduler::workers)),
        ("/ui/api/overview", get(ui::overview)),
        (
            "/scheduler/dead-letter",
            get(scheduler::dead_letters).delete(scheduler::purge_dead_letters),
        ),
        (
            "/scheduler/dead-letter/{id}/retry",
            post(scheduler::retry_dead_letter),
        ),
    ];
    let api = routes
        .into_iter()
        .fold(Router::new(), |api, (path, route)| both(api, path, route));
    let api = api
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .route_layer(middleware::from_fn_with_state(
            (body_budget, body_kib, body_limit),
            limit_body_bytes,
        ))
        .route_layer(middleware::from_fn_with_state(
            (permits, max_inflight),
            limit_inflight,
        ));

    let mut open = Router::new();
    open = both(open, "/health", get(health::health));
    open = both(open, "/livez", get(health::livez));
    open = both(open, "/readyz", get(health::readyz));
    open = both(open, "/ui", get(ui::index));
    open = open.route("/ui/app.js", get(ui::app_js));
    open = open.route("/ui/app.css", get(ui::app_css));
    open = both(open, "/ui/api/whoami", get(ui::whoami));

    let docs: Router<SharedState> = SwaggerUi::new("/docs")
        .url("/api-docs/openapi.json", openapi())
        .into();

    Router::new()
        .merge(api)
        .merge(open)
        .merge(docs)
        .layer(middleware::from_fn(record_metrics))
        .layer(axum::Extension(activity))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(request_timeout, limit_time))
        .layer(middleware::from_fn(json_errors))
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

/// Serve [`router`] on `listener` until `shutdown` resolves, then let open connections finish
/// for at most [`ApiConfig::shutdown_timeout`] (whatever the clients do).
///
/// Slow clients cannot hold the server: headers must arrive within
/// [`ApiConfig::header_timeout`] (else the connection closes), bodies within
/// [`ApiConfig::body_timeout`] and whole requests within [`ApiConfig::request_timeout`]
/// (else 408); past [`ApiConfig::max_connections`] open connections a new one is answered 503
/// and closed.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ApiError> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt;

    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "REST API listening");
    }
    let config = state.config.clone();
    let activity = Arc::new(activity::Activity::default());
    let sampler_stop = tokio_util::sync::CancellationToken::new();
    {
        let (activity, state, stop) = (activity.clone(), state.clone(), sampler_stop.clone());
        tokio::spawn(async move { activity.run(&state, stop).await });
    }
    {
        let (state, stop) = (state.clone(), sampler_stop.clone());
        tokio::spawn(async move { backlog::run(&state, stop).await });
    }
    let app = router_with(state, activity);
    let connections = Arc::new(tokio::sync::Semaphore::new(config.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // HTTP/1.1 only (an Ingress or load balancer speaks it to us): its header-read timer runs
    // from the moment a connection waits for a request head, also before the first byte and
    // between keep-alive requests, so a silent connection cannot hold a slot.
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = config.max_connections, "connection limit reached; refusing a connection");
            tokio::spawn(refuse_connection(stream, config.max_connections));
            continue;
        };
        let service = TowerToHyperService::new(
            app.clone()
                .map_request(|r: axum::http::Request<hyper::body::Incoming>| r.map(Body::new)),
        );
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    sampler_stop.cancel();
    tracing::info!("REST API stopping: no new connections; letting open ones finish");
    if tokio::time::timeout(config.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout = ?config.shutdown_timeout,
            "connections still open after the shutdown timeout; closing them"
        );
    }
    Ok(())
}

/// Answer a connection over the limit with a 503 and close it.
async fn refuse_connection(mut stream: tokio::net::TcpStream, limit: usize) {
    use tokio::io::AsyncWriteExt;
    let body = serde_json::json!({
        "detail": format!(
            "the server has its limit of {limit} connections open \
             (JOBSCHED_API_MAX_CONNECTIONS); retry in a moment"
        )
    })
    .to_string();
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        let _ = stream.write_all(reply.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
