//! Request bodies and paths: JSON bodies within the size limit, typed fields with errors naming
//! each one, path ids.

use super::*;

/// A request body that must be JSON. Wrong content type, unreadable or malformed JSON → 422;
/// over the body limit → 413.
#[derive(Debug)]
pub struct JsonBody(pub Value);

pub(super) fn is_json_content_type(headers: &HeaderMap) -> bool {
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
pub(super) async fn read_body(
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
                    format!(
                        "must be a JSON object, got {}",
                        jobsched_jobs::json_kind(value)
                    ),
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
            format!("must be {expected}, got {}", jobsched_jobs::json_kind(got)),
            "type_error",
        ));
    }

    /// A required field read by `read`: `None` (and an issue) when it is missing or null, or
    /// when `read` does not take it (not `expected`).
    fn req<T>(
        &mut self,
        name: &str,
        expected: &str,
        read: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Option<T> {
        let Some(v) = self.present(name) else {
            let path = self.path(name);
            self.issues
                .push(FieldIssue::body(&path, "field required", "missing"));
            return None;
        };
        let value = read(v);
        if value.is_none() {
            self.type_error(name, expected, v);
        }
        value
    }

    /// A required string.
    pub(crate) fn req_str(&mut self, name: &str) -> Option<String> {
        self.req(name, "a string", |v| v.as_str().map(str::to_owned))
    }

    /// An optional field read by `read` (which says what it holds, or `None`); `Err(())`, with
    /// an issue saying it must be `expected`, when present but not readable.
    fn opt<T>(
        &mut self,
        name: &str,
        expected: &str,
        read: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<Option<T>, ()> {
        let Some(v) = self.present(name) else {
            return Ok(None);
        };
        match read(v) {
            Some(t) => Ok(Some(t)),
            None => {
                self.type_error(name, expected, v);
                Err(())
            }
        }
    }

    /// An optional integer (`3` or `3.0`); `Err(())` when present but not an integer.
    pub(crate) fn opt_int(&mut self, name: &str) -> Result<Option<i64>, ()> {
        self.opt(name, "an integer", |v| {
            v.as_i64().or_else(|| {
                v.as_f64()
                    .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                    .map(|f| f as i64)
            })
        })
    }

    /// An optional number.
    pub(crate) fn opt_f64(&mut self, name: &str) -> Result<Option<f64>, ()> {
        self.opt(name, "a number", Value::as_f64)
    }

    /// An optional boolean.
    pub(crate) fn opt_bool(&mut self, name: &str) -> Result<Option<bool>, ()> {
        self.opt(name, "true or false", Value::as_bool)
    }

    /// An optional string.
    pub(crate) fn opt_str(&mut self, name: &str) -> Result<Option<String>, ()> {
        self.opt(name, "a string", |v| v.as_str().map(str::to_owned))
    }

    /// An optional RFC 3339 time (`2026-12-24T18:00:00Z`, any offset).
    pub(crate) fn opt_time(&mut self, name: &str) -> Result<Option<DateTime<Utc>>, ()> {
        let Some(t) = self.opt(name, "an RFC 3339 time string", Value::as_str)? else {
            return Ok(None);
        };
        match DateTime::parse_from_rfc3339(t) {
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
        }
    }

    /// An optional JSON object.
    pub(crate) fn opt_object(&mut self, name: &str) -> Result<Option<Value>, ()> {
        self.opt(name, "a JSON object", |v| v.is_object().then(|| v.clone()))
    }

    /// A required array.
    pub(crate) fn req_array(&mut self, name: &str) -> Option<&'a Vec<Value>> {
        self.req(name, "a JSON array", Value::as_array)
    }
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
