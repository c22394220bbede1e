//! The bearer-token checks: who the caller is, and the admin guard.

use super::*;

/// Compare two secrets in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The bearer token of a request, if any.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Who the caller is, as far as the configured tokens tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Caller {
    /// Holds the admin token.
    Admin,
    /// Holds the API token, or no API token is configured.
    User,
    /// Presented nothing valid while an API token is required.
    Unknown,
}

pub(crate) fn identify(state: &AppState, headers: &HeaderMap) -> Caller {
    let token = bearer(headers);
    let matches = |secret: &Option<String>| match (secret, token) {
        (Some(s), Some(t)) => constant_time_eq(s.as_bytes(), t.as_bytes()),
        _ => false,
    };
    if matches(&state.config.admin_token) {
        Caller::Admin
    } else if state.config.api_token.is_none() || matches(&state.config.api_token) {
        Caller::User
    } else {
        Caller::Unknown
    }
}

pub(crate) fn unauthorized(headers: &HeaderMap) -> ApiError {
    if bearer(headers).is_some() {
        ApiError::Unauthorized(
            "invalid bearer token; send `Authorization: Bearer <token>` with the configured API \
             token"
                .into(),
        )
    } else {
        ApiError::Unauthorized(
            "Not authenticated: send `Authorization: Bearer <token>` with the configured API token"
                .into(),
        )
    }
}

/// Extractor guarding admin operations (policy change, dead-letter retry and purge). When an
/// admin token is configured the caller must present it: 401 without a valid token, 403 with
/// the plain API token. With an API token but no admin token they are refused (403 naming
/// `JOBSCHED_ADMIN_TOKEN`); with no token configured at all they are open.
#[derive(Debug, Clone, Copy)]
pub struct RequireAdmin;

impl FromRequestParts<Arc<AppState>> for RequireAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        if state.config.admin_token.is_none() {
            if state.config.api_token.is_none() {
                // No auth configured at all (a laptop): everything is open.
                return Ok(RequireAdmin);
            }
            return Err(ApiError::Forbidden(
                "admin operations are disabled: the server has an API token but no admin token; \
                 set JOBSCHED_ADMIN_TOKEN on the server and send it as `Authorization: Bearer \
                 <admin token>`"
                    .into(),
            ));
        }
        match identify(state, &parts.headers) {
            Caller::Admin => Ok(RequireAdmin),
            Caller::User if bearer(&parts.headers).is_some() => Err(ApiError::Forbidden(
                "this operation needs the admin token; send `Authorization: Bearer <admin token>`"
                    .into(),
            )),
            _ => Err(ApiError::Unauthorized(
                "Not authenticated: this operation needs `Authorization: Bearer <admin token>`"
                    .into(),
            )),
        }
    }
}
