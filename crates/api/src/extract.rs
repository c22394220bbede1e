//! Request extraction with FastAPI-shaped errors: JSON bodies, typed fields, query parameters,
//! path ids, and the bearer-token checks.

use crate::dto::JobCreate;
use crate::error::{ApiError, FieldIssue};
use crate::state::AppState;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use jobsched_core::{JobId, NewJob, UniqueKey};
use serde_json::{Map, Value};
use std::sync::Arc;

/// A request body that must be JSON. Wrong content type, unreadable or malformed JSON → 422;
/// over the body limit → 413.
#[derive(Debug)]
pub struct JsonBody(pub Value);

fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// How much of an oversized body is read (and thrown away) before the 413 is sent, so that a
/// client writing its whole body reads the answer instead of a broken pipe.
pub const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

/// The body length a request declares (`Content-Length`), if it declares a valid one.
pub(crate) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Read a body of at most `limit` bytes within `timeout`. An oversized one is drained up to
/// [`DRAIN_LIMIT`] (within the same time) and answered 413; a slow one 408.
async fn read_body(
    body: axum::body::Body,
    declared: Option<u64>,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Vec<u8>, ApiError> {
    use futures::StreamExt;
    let too_large = ApiError::PayloadTooLarge { limit };
    let declared = declared.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    if declared.is_some_and(|n| n > DRAIN_LIMIT) {
        // Not worth reading: answer at once and close.
        return Err(too_large);
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stream = body.into_data_stream();
    // Grown as bytes arrive: a declared length is no reason to allocate before they do.
    let mut buf: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0).min(limit).min(64 * 1024));
    let mut seen: usize = 0;
    loop {
        let next = tokio::time::timeout_at(deadline, stream.next()).await;
        let chunk = match next {
            Err(_) if seen > limit => return Err(too_large),
            Err(_) => {
                return Err(ApiError::RequestTimeout(format!(
                    "the request body did not arrive within {} s; send it at once",
                    timeout.as_secs_f64()
                )));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::Validation(vec![FieldIssue::body(
                    "",
                    format!("could not read the request body: {e}"),
                    "body_error",
                )]));
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        seen = seen.saturating_add(chunk.len());
        if seen <= limit {
            buf.extend_from_slice(&chunk);
        } else {
            buf = Vec::new();
            if seen > DRAIN_LIMIT {
                return Err(too_large);
            }
        }
    }
    if seen > limit {
        return Err(too_large);
    }
    Ok(buf)
}

impl FromRequest<Arc<AppState>> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let json_ct = is_json_content_type(req.headers());
        let declared = declared_length(req.headers());
        let bytes = read_body(
            req.into_body(),
            declared,
            state.config.body_limit,
            state.config.body_timeout,
        )
        .await?;
        if !json_ct {
            return Err(ApiError::Validation(vec![FieldIssue::body(
                "",
                "expected a JSON body: send the header `Content-Type: application/json`",
                "content_type",
            )]));
        }
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            ApiError::Validation(vec![FieldIssue::body(
                "",
                format!("malformed JSON ({e}); send a JSON object"),
                "json_invalid",
            )])
        })
    }
}

/// Reads typed fields out of a JSON object, collecting every problem.
pub(crate) struct Fields<'a, 'i> {
    map: &'a Map<String, Value>,
    prefix: String,
    issues: &'i mut Vec<FieldIssue>,
}

impl<'a, 'i> Fields<'a, 'i> {
    /// Fields of `value` (at dotted `prefix`, e.g. `jobs[2].` or empty); `None` (with an issue
    /// recorded) when it is not an object.
    pub(crate) fn of(
        value: &'a Value,
        prefix: &str,
        issues: &'i mut Vec<FieldIssue>,
    ) -> Option<Self> {
        match value.as_object() {
            Some(map) => Some(Fields {
                map,
                prefix: prefix.to_string(),
                issues,
            }),
            None => {
                issues.push(FieldIssue::body(
                    prefix.trim_end_matches('.'),
                    format!("must be a JSON object, got {}", kind_of(value)),
                    "type_error",
                ));
                None
            }
        }
    }

    fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn present(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name).filter(|v| !v.is_null())
    }

    fn type_error(&mut self, name: &str, expected: &str, got: &Value) {
        let path = self.path(name);
        self.issues.push(FieldIssue::body(
            &path,
            format!("must be {expected}, got {}", kind_of(got)),
            "type_error",
        ));
    }

    /// A required string.
    pub(crate) fn req_str(&mut self, name: &str) -> Option<String> {
        match self.present(name) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.type_error(name, "a string", other);
                None
            }
            None => {
                let path = self.path(name);
                self.issues
                    .push(FieldIssue::body(&path, "field required", "missing"));
                None
            }
        }
    }

    /// An optional integer (`3` or `3.0`); `Err(())` when present but not an integer.
    pub(crate) fn opt_int(&mut self, name: &str) -> Result<Option<i64>, ()> {
        match self.present(name) {
            None => Ok(None),
            Some(v) => {
                if let Some(i) = v.as_i64() {
                    return Ok(Some(i));
                }
                if let Some(f) = v.as_f64()
                    && f.fract() == 0.0
                    && f.abs() < 9.0e15
                {
                    return Ok(Some(f as i64));
                }
                self.type_error(name, "an integer", v);
                Err(())
            }
        }
    }

    /// An optional number.
    pub(crate) fn opt_f64(&mut self, name: &str) -> Result<Option<f64>, ()> {
        match self.present(name) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(f) => Ok(Some(f)),
                None => {
                    self.type_error(name, "a number", v);
                    Err(())
                }
            },
        }
    }

    /// An optional boolean.
    pub(crate) fn opt_bool(&mut self, name: &str) -> Result<Option<bool>, ()> {
        match self.present(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => {
                self.type_error(name, "true or false", v);
                Err(())
            }
        }
    }

    /// An optional string.
    pub(crate) fn opt_str(&mut self, name: &str) -> Result<Option<String>, ()> {
        match self.present(name) {
            None => Ok(None),
            Some(Value::String(v)) => Ok(Some(v.clone())),
            Some(v) => {
                self.type_error(name, "a string", v);
                Err(())
            }
        }
    }

    /// An optional RFC 3339 time (`2026-12-24T18:00:00Z`, any offset).
    pub(crate) fn opt_time(&mut self, name: &str) -> Result<Option<DateTime<Utc>>, ()> {
        match self.present(name) {
            None => Ok(None),
            Some(Value::String(t)) => match DateTime::parse_from_rfc3339(t) {
                Ok(t) => Ok(Some(t.with_timezone(&Utc))),
                Err(e) => {
                    let path = self.path(name);
                    self.issues.push(FieldIssue::body(
                        &path,
                        format!(
                            "must be an RFC 3339 time such as 2026-12-24T18:00:00Z ({e}), got {t:?}"
                        ),
                        "value_error",
                    ));
                    Err(())
                }
            },
            Some(v) => {
                self.type_error(name, "an RFC 3339 time string", v);
                Err(())
            }
        }
    }

    /// An optional JSON object.
    pub(crate) fn opt_object(&mut self, name: &str) -> Result<Option<Value>, ()> {
        match self.present(name) {
            None => Ok(None),
            Some(v @ Value::Object(_)) => Ok(Some(v.clone())),
            Some(v) => {
                self.type_error(name, "a JSON object", v);
                Err(())
            }
        }
    }

    /// An optional array.
    pub(crate) fn req_array(&mut self, name: &str) -> Option<&'a Vec<Value>> {
        match self.present(name) {
            Some(Value::Array(a)) => Some(a),
            Some(v) => {
                self.type_error(name, "a JSON array", v);
                None
            }
            None => {
                let path = self.path(name);
                self.issues
                    .push(FieldIssue::body(&path, "field required", "missing"));
                None
            }
        }
    }
}

/// A short name of a JSON value's type, for messages.
pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parse and validate one submission at dotted `prefix`: JSON types, the generic fields
/// ([`NewJob::build`]) and the job type's payload (the registry). Every problem goes to
/// `issues`; `None` when there was any.
pub(crate) fn parse_submission(
    value: &Value,
    prefix: &str,
    state: &AppState,
    issues: &mut Vec<FieldIssue>,
) -> Option<NewJob> {
    let before = issues.len();
    let mut fields = Fields::of(value, prefix, issues)?;
    let name = fields.req_str("name");
    let job_type = fields.req_str("job_type");
    let priority = fields.opt_int("priority");
    let estimated_duration = fields.opt_f64("estimated_duration");
    let payload = fields.opt_object("payload");
    let max_retries = fields.opt_int("max_retries");
    let timeout = fields.opt_f64("timeout_seconds");
    let run_at = fields.opt_time("run_at");
    let delay = fields.opt_f64("delay_seconds");
    let unique_key = fields.opt_str("unique_key");
    let backoff = fields.opt_object("retry_backoff");
    let queue = fields.opt_str("queue");
    drop(fields);
    if let Ok(Some(q)) = &queue
        && let Err(message) = jobsched_core::queue::check_queue_name(q)
    {
        issues.push(FieldIssue::body(
            &format!("{prefix}queue"),
            message,
            "value_error",
        ));
    }
    let backoff = match backoff {
        Ok(Some(b)) => retry_backoff(&b, &format!("{prefix}retry_backoff."), issues),
        _ => None,
    };
    if let Ok(Some(k)) = &unique_key
        && let Err(message) = jobsched_core::check_unique_key(k)
    {
        issues.push(FieldIssue::body(
            &format!("{prefix}unique_key"),
            message,
            "value_error",
        ));
    }
    let run_at = first_run(run_at, delay, prefix, state.clock.now(), issues);
    if let Ok(Some(t)) = timeout
        && let Err(message) = jobsched_core::check_timeout(t)
    {
        issues.push(FieldIssue::body(
            &format!("{prefix}timeout_seconds"),
            message,
            "value_error",
        ));
    }

    // Generic checks on whatever parsed; fields with a type problem are not re-reported.
    let create = JobCreate {
        name: name.clone().unwrap_or_default(),
        job_type: job_type.clone().unwrap_or_default(),
        priority: priority.unwrap_or(None),
        estimated_duration: estimated_duration.unwrap_or(None),
        payload: payload.clone().unwrap_or(None),
        max_retries: max_retries.unwrap_or(None),
        timeout_seconds: timeout.unwrap_or(None),
        run_at: None,
        delay_seconds: None,
        unique_key: None,
        retry_backoff: None,
        queue: None,
    };
    let built = NewJob::build(
        &create.name,
        &create.job_type,
        create.priority,
        create.estimated_duration,
        create.payload.clone(),
        create.max_retries,
    );
    let built = match built {
        Ok(mut job) => {
            job.timeout_seconds = timeout.ok().flatten();
            job.run_at = run_at;
            job.retry_backoff = backoff;
            if let Ok(Some(q)) = queue {
                job.queue = q;
            }
            job.unique_key = unique_key.ok().flatten().map(|key| UniqueKey {
                key,
                fingerprint: fingerprint(value),
            });
            Some(job)
        }
        Err(errors) => {
            for (field, message) in errors {
                if field == "name" && name.is_none() {
                    continue;
                }
                issues.push(FieldIssue::body(
                    &format!("{prefix}{field}"),
                    message,
                    "value_error",
                ));
            }
            None
        }
    };

    if let (Some(job_type), Ok(payload)) = (&job_type, &payload) {
        let payload = payload.clone().unwrap_or_else(|| Value::Object(Map::new()));
        for e in state
            .catalog
            .validate(&state.registry, job_type, &payload, &state.data_dir)
        {
            let field = if e.field == "job_type"
                || e.field == "payload"
                || e.field.starts_with("payload.")
                || e.field.starts_with("payload[")
            {
                e.field.clone()
            } else {
                format!("payload.{}", e.field)
            };
            issues.push(FieldIssue::body(
                &format!("{prefix}{field}"),
                e.message.clone(),
                "value_error",
            ));
        }
    }

    if issues.len() > before { None } else { built }
}

/// The idempotency fingerprint of a submission: SHA-256 (hex) of its JSON with object keys
/// sorted and its own `unique_key` left out, so the same request always gives the same digest.
pub(crate) fn fingerprint(submission: &Value) -> String {
    use sha2::Digest;
    fn canonical(v: &Value, top: bool, out: &mut String) {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map
                    .keys()
                    .filter(|k| !(top && k.as_str() == "unique_key"))
                    .collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    canonical(&map[k], false, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical(item, false, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut text = String::new();
    canonical(submission, true, &mut text);
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A submission's `retry_backoff` object at dotted `prefix`: both numbers, in range.
fn retry_backoff(
    value: &Value,
    prefix: &str,
    issues: &mut Vec<FieldIssue>,
) -> Option<jobsched_core::RetryBackoff> {
    let mut fields = Fields::of(value, prefix, issues)?;
    let base = fields.opt_f64("base_seconds");
    let cap = fields.opt_f64("cap_seconds");
    drop(fields);
    let mut required = |name: &str, v: Result<Option<f64>, ()>| match v {
        Ok(Some(v)) => Some(v),
        Ok(None) => {
            issues.push(FieldIssue::body(
                &format!("{prefix}{name}"),
                "field required",
                "missing",
            ));
            None
        }
        Err(()) => None,
    };
    let (base, cap) = (required("base_seconds", base), required("cap_seconds", cap));
    let backoff = jobsched_core::RetryBackoff {
        base_seconds: base?,
        cap_seconds: cap?,
    };
    match backoff.check() {
        Ok(()) => Some(backoff),
        Err((field, message)) => {
            issues.push(FieldIssue::body(
                &format!("{prefix}{field}"),
                message,
                "value_error",
            ));
            None
        }
    }
}

/// The first-run time a submission asks for: `run_at`, or `now + delay_seconds`; not both.
/// Problems go to `issues`.
fn first_run(
    run_at: Result<Option<DateTime<Utc>>, ()>,
    delay: Result<Option<f64>, ()>,
    prefix: &str,
    now: DateTime<Utc>,
    issues: &mut Vec<FieldIssue>,
) -> Option<DateTime<Utc>> {
    let mut problem = |field: &str, message: String| {
        issues.push(FieldIssue::body(
            &format!("{prefix}{field}"),
            message,
            "value_error",
        ));
    };
    match (run_at, delay) {
        (Ok(Some(_)), Ok(Some(_))) => {
            problem(
                "delay_seconds",
                "give either run_at or delay_seconds, not both".into(),
            );
            None
        }
        (Ok(Some(at)), _) => match jobsched_core::check_run_at(at, now) {
            Ok(()) => Some(at),
            Err(message) => {
                problem("run_at", message);
                None
            }
        },
        (_, Ok(Some(seconds))) => match jobsched_core::check_delay(seconds) {
            // Within a year: whole microseconds fit easily.
            Ok(()) => Some(now + chrono::Duration::microseconds((seconds * 1e6).round() as i64)),
            Err(message) => {
                problem("delay_seconds", message);
                None
            }
        },
        _ => None,
    }
}

/// Counts the bytes written to it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(buf.len());
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Refuse a submission whose `payload` serializes to more than `limit` bytes (413 naming the
/// field and the limit).
pub(crate) fn check_payload_size(
    value: &Value,
    prefix: &str,
    limit: usize,
) -> Result<(), ApiError> {
    let Some(payload) = value.get("payload") else {
        return Ok(());
    };
    let mut count = ByteCount(0);
    // Writing to a counter cannot fail.
    let _ = serde_json::to_writer(&mut count, payload);
    if count.0 > limit {
        return Err(ApiError::FieldTooLarge {
            field: format!("{prefix}payload"),
            size: count.0,
            limit,
        });
    }
    Ok(())
}

/// Parse a job id from the path; malformed → 422 naming `path.id`.
pub(crate) fn parse_job_id(raw: &str) -> Result<JobId, ApiError> {
    raw.parse::<JobId>().map_err(|_| {
        ApiError::Validation(vec![FieldIssue::path(
            "id",
            format!("`{raw}` is not a valid job id; expected a UUID like 0190a6f2-7c1e-7d3a-9f4b-2a6c1e5d8b90"),
        )])
    })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_matches_eq() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, "Bearer ".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn json_content_types() {
        let mut h = HeaderMap::new();
        assert!(!is_json_content_type(&h));
        for (ct, ok) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/merge-patch+json", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
        ] {
            h.insert(CONTENT_TYPE, ct.parse().unwrap());
            assert_eq!(is_json_content_type(&h), ok, "{ct}");
        }
    }
}
