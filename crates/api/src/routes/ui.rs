//! `/ui`: the web console. Its assets are compiled into the binary (no CDN, nothing fetched at
//! run time) and served with a strict Content-Security-Policy. The page itself needs no token;
//! every piece of data it shows comes from the API with the bearer token the user signs in with,
//! which the page keeps in `sessionStorage` and sends as a header: never in a URL, never in a
//! cookie (so no cross-site request can carry it: CSRF-safe by construction).

use crate::activity::{Activity, Sample};
use crate::dto::{ErrorBody, JobStatsResponse, SchedulerStatus, WorkerResponse};
use crate::error::ApiError;
use crate::extract::{Caller, identify, unauthorized};
use crate::openapi::failures;
use crate::routes::scheduler::{current_settings, status_of};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::sync::Arc;
use utoipa::ToSchema;

const INDEX_HTML: &str = include_str!("../../ui/index.html");
const APP_JS: &str = include_str!("../../ui/app.js");
const APP_CSS: &str = include_str!("../../ui/app.css");

/// The console's Content-Security-Policy: only its own assets and same-origin API calls.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The console's page.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// The console's script.
pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// The console's style sheet.
pub async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

/// Who the presented token makes the caller.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WhoAmI {
    /// Whether the server requires a token at all.
    pub auth_required: bool,
    /// `admin` (may switch the policy and handle dead letters), `user`, or `anonymous`.
    pub role: &'static str,
}

/// Which role the presented token has: the console shows admin controls only to admins (the
/// API refuses them to others all the same).
#[utoipa::path(get, path = "/ui/api/whoami", tag = "console", responses(
    (status = 200, description = "The caller's role", body = WhoAmI),
    (status = 401, description = "A token was sent and is wrong", body = ErrorBody)))]
pub async fn whoami(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<WhoAmI>, ApiError> {
    let auth_required = state.config.api_token.is_some() || state.config.admin_token.is_some();
    let presented = crate::extract::bearer(&headers).is_some();
    let role = match identify(&state, &headers) {
        Caller::Admin => "admin",
        // Nothing configured: everything is open, admin operations included.
        Caller::User if !auth_required => "admin",
        Caller::User if state.config.api_token.is_some() => "user",
        // A token that matches nothing configured.
        _ if presented => return Err(unauthorized(&headers)),
        _ => "anonymous",
    };
    Ok(Json(WhoAmI {
        auth_required,
        role,
    }))
}

/// Everything the overview page shows, from the background samples (a page view never counts
/// the table itself).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Overview {
    /// Counts per status at the latest sample.
    pub stats: JobStatsResponse,
    /// Policy, pause, owner, queue depth, dead letters and slots.
    pub status: SchedulerStatus,
    /// Live workers and their slots.
    pub workers: Vec<WorkerResponse>,
    /// Seconds between samples.
    pub interval_seconds: f64,
    /// The samples of the last minutes, oldest first (counts are cumulative).
    pub samples: Vec<Sample>,
}

/// The overview: counts, policy, workers and the last minutes' activity.
#[utoipa::path(get, path = "/ui/api/overview", tag = "console",
    responses((status = 200, description = "The overview", body = Overview), failures::Both))]
pub async fn overview(
    State(state): State<Arc<AppState>>,
    Extension(activity): Extension<Arc<Activity>>,
) -> Result<Json<Overview>, ApiError> {
    activity.viewed();
    let (mut samples, mut latest) = activity.snapshot();
    if latest.is_none() {
        // Nothing sampled since the API started: take the first sample now (later views are
        // answered from the background samples, however many jobs there are).
        activity.sample(&state).await?;
        (samples, latest) = activity.snapshot();
    }
    let latest = latest.unwrap_or_default();
    let (settings, workers) = tokio::try_join!(current_settings(&state), async {
        state.transport.workers().await.map_err(ApiError::from)
    })?;
    let status = status_of(settings, &latest.stats, latest.dead_letters, &workers);
    Ok(Json(Overview {
        stats: latest.stats,
        status,
        workers: workers.into_iter().map(Into::into).collect(),
        interval_seconds: crate::activity::SAMPLE_EVERY.as_secs_f64(),
        samples,
    }))
}
