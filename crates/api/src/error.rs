//! The crate's single error type and the one place it becomes an HTTP response.
//!
//! Bodies follow FastAPI's shapes so clients of the original Python service keep working:
//! `{"detail": "..."}` for simple errors and, for 422,
//! `{"detail": [{"loc": ["body", "payload", "duration"], "msg": "...", "type": "value_error"}]}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

/// One element of a FastAPI `loc`: an object key or an array index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum LocPart {
    /// An object key (or the `body` / `query` / `path` root).
    Key(String),
    /// An array index.
    Index(usize),
}

/// One problem with the request, in FastAPI's validation-error shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldIssue {
    /// Where the problem is: `["body", "jobs", 3, "name"]`, `["query", "page"]`, `["path", "id"]`.
    pub loc: Vec<LocPart>,
    /// What is wrong and what is accepted.
    pub msg: String,
    /// Machine-readable kind (`missing`, `type_error`, `value_error`, `json_invalid`, …).
    #[serde(rename = "type")]
    pub kind: String,
}

impl FieldIssue {
    /// A problem in the request body at a dotted path such as `jobs[3].payload.duration`
    /// (empty path = the body itself).
    pub fn body(path: &str, msg: impl Into<String>, kind: &str) -> Self {
        let mut loc = vec![LocPart::Key("body".into())];
        loc.extend(parse_path(path));
        FieldIssue {
            loc,
            msg: msg.into(),
            kind: kind.into(),
        }
    }

    /// A problem with a query parameter.
    pub fn query(name: &str, msg: impl Into<String>) -> Self {
        FieldIssue {
            loc: vec![LocPart::Key("query".into()), LocPart::Key(name.into())],
            msg: msg.into(),
            kind: "value_error".into(),
        }
    }

    /// A problem in a request header.
    pub fn header(name: &str, msg: impl Into<String>) -> Self {
        FieldIssue {
            loc: vec![LocPart::Key("header".into()), LocPart::Key(name.into())],
            msg: msg.into(),
            kind: "value_error".into(),
        }
    }

    /// A problem with a path parameter.
    pub fn path(name: &str, msg: impl Into<String>) -> Self {
        FieldIssue {
            loc: vec![LocPart::Key("path".into()), LocPart::Key(name.into())],
            msg: msg.into(),
            kind: "value_error".into(),
        }
    }

    /// The location as a dotted string (`body.jobs.3.name`), for logs and messages.
    pub fn dotted(&self) -> String {
        self.loc
            .iter()
            .map(|p| match p {
                LocPart::Key(k) => k.clone(),
                LocPart::Index(i) => i.to_string(),
            })
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// Split `jobs[3].payload.duration` into `jobs`, `3`, `payload`, `duration`.
fn parse_path(path: &str) -> Vec<LocPart> {
    let mut out = Vec::new();
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let mut rest = segment;
        if let Some(open) = rest.find('[') {
            if open > 0 {
                out.push(LocPart::Key(rest[..open].to_string()));
            }
            rest = &rest[open..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let Some(close) = stripped.find(']') else {
                    out.push(LocPart::Key(rest.to_string()));
                    rest = "";
                    break;
                };
                let inner = &stripped[..close];
                out.push(match inner.parse::<usize>() {
                    Ok(i) => LocPart::Index(i),
                    Err(_) => LocPart::Key(inner.to_string()),
                });
                rest = &stripped[close + 1..];
            }
            if !rest.is_empty() {
                out.push(LocPart::Key(rest.to_string()));
            }
        } else {
            out.push(LocPart::Key(rest.to_string()));
        }
    }
    out
}

/// Everything that can go wrong in the API, each variant mapped to one status code in
/// [`IntoResponse`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404: the resource does not exist.
    #[error("{0}")]
    NotFound(String),
    /// 409: the request conflicts with the resource's current state.
    #[error("{0}")]
    Conflict(String),
    /// 422: the request is malformed; every problem is listed.
    #[error("invalid request: {}", summarize(.0))]
    Validation(Vec<FieldIssue>),
    /// 401: no or a wrong bearer token.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: authenticated, but the operation needs the admin token.
    #[error("{0}")]
    Forbidden(String),
    /// 413: the request body exceeds the configured limit.
    #[error(
        "request body is larger than the {limit}-byte limit; send less per request (split a \
         batch into several /jobs/batch calls) or raise the server's body limit"
    )]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// 413: one field (a job's payload) exceeds its size limit.
    #[error(
        "{field} is {size} bytes of JSON; the limit is {limit} bytes (JOBSCHED_MAX_PAYLOAD): \
         keep large inputs in files under the data directory and pass their paths"
    )]
    FieldTooLarge {
        /// Dotted path of the field (`payload`, `jobs[3].payload`).
        field: String,
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// 408: the client did not send its request (body) in time.
    #[error("{0}")]
    RequestTimeout(String),
    /// 503: the server is at its limit of requests in flight; retry shortly.
    #[error(
        "the server is handling its limit of {limit} requests at once \
         (JOBSCHED_API_MAX_INFLIGHT); retry in a moment"
    )]
    Busy {
        /// The limit.
        limit: usize,
    },
    /// 503: the request could not be completed in time; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// 400: the request itself is malformed (e.g. a path that is not valid UTF-8).
    #[error("{0}")]
    BadRequest(String),
    /// 404 for an unknown route.
    #[error("Not Found")]
    NoRoute,
    /// 405 for a known route with an unsupported method.
    #[error("Method Not Allowed")]
    MethodNotAllowed,
    /// A domain or backend error from a port. Validation → 422, unknown policy → 422,
    /// illegal transition → 409, backend failure → 503 (details only in the log).
    #[error(transparent)]
    Core(#[from] jobsched_core::Error),
    /// The HTTP server itself failed (bind/accept I/O); 500 if it ever reaches a client.
    #[error("HTTP server I/O error: {0}")]
    Io(#[from] std::io::Error),
}

fn summarize(issues: &[FieldIssue]) -> String {
    issues
        .iter()
        .map(|i| format!("{}: {}", i.dotted(), i.msg))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    /// A single body-field problem (422).
    pub fn invalid_body(path: &str, msg: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldIssue::body(path, msg, "value_error")])
    }

    /// The HTTP status this error maps to.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::PayloadTooLarge { .. } | ApiError::FieldTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Busy { .. } | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Core(e) => match e {
                jobsched_core::Error::Validation { .. }
                | jobsched_core::Error::UnknownPolicy { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                jobsched_core::Error::IllegalTransition { .. }
                | jobsched_core::Error::KeyConflict { .. } => StatusCode::CONFLICT,
                jobsched_core::Error::Backend { .. } | jobsched_core::Error::Interrupted { .. } => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            },
            ApiError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            ApiError::Validation(issues) => json!({ "detail": issues }),
            ApiError::Core(jobsched_core::Error::Validation { field, message }) => {
                json!({ "detail": [FieldIssue::body(field, message.clone(), "value_error")] })
            }
            ApiError::Core(e @ jobsched_core::Error::UnknownPolicy { .. }) => {
                json!({ "detail": [FieldIssue::body("policy", e.to_string(), "value_error")] })
            }
            ApiError::Core(jobsched_core::Error::Backend { component, .. }) => {
                tracing::error!(error = %self, "backend failure while serving a request");
                json!({
                    "detail": format!(
                        "service unavailable: the {component} backend is failing; retry later"
                    )
                })
            }
            ApiError::Core(jobsched_core::Error::Interrupted { component, .. }) => {
                tracing::error!(error = %self, "backend connection lost while serving a request");
                json!({
                    "detail": format!(
                        "service unavailable: the {component} backend stopped answering during \
                         the request (connection lost, or no answer in time), so a change it \
                         asked for may or may not have been applied; check (e.g. GET \
                         /jobs/{{id}} or GET /jobs/?…) before retrying"
                    )
                })
            }
            ApiError::Io(_) => {
                tracing::error!(error = %self, "internal error while serving a request");
                json!({ "detail": "internal error" })
            }
            other => json!({ "detail": other.to_string() }),
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(
            self,
            ApiError::PayloadTooLarge { .. } | ApiError::RequestTimeout(_)
        ) {
            // The rest of the body was not read: the connection cannot be reused.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_paths_become_fastapi_locs() {
        let issue = FieldIssue::body("jobs[3].payload.duration", "bad", "value_error");
        assert_eq!(
            serde_json::to_value(&issue.loc).unwrap(),
            json!(["body", "jobs", 3, "payload", "duration"])
        );
        assert_eq!(
            serde_json::to_value(FieldIssue::body("", "x", "json_invalid").loc).unwrap(),
            json!(["body"])
        );
        assert_eq!(issue.dotted(), "body.jobs.3.payload.duration");
    }

    async fn body_of(err: ApiError) -> (StatusCode, serde_json::Value) {
        let resp = err.into_response();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    /// The `detail` of an error that must answer 503.
    async fn unavailable_detail(err: ApiError) -> String {
        let (status, body) = body_of(err).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        body["detail"].as_str().unwrap().to_string()
    }

    #[tokio::test]
    async fn backend_and_io_errors_do_not_leak() {
        let err = ApiError::Core(jobsched_core::Error::backend(
            "postgres",
            "password authentication failed for user secret",
        ));
        let detail = unavailable_detail(err).await;
        assert!(
            detail.contains("postgres") && !detail.contains("secret"),
            "{detail}"
        );
        // A connection lost mid-statement: 503, and the client is told the change is in doubt.
        let err = ApiError::Core(jobsched_core::Error::Interrupted {
            component: "postgres",
            source: "connection reset by 10.0.0.7:5432".into(),
        });
        let detail = unavailable_detail(err).await;
        assert!(
            detail.contains("may or may not have been applied") && !detail.contains("10.0.0.7"),
            "{detail}"
        );
        let (status, body) = body_of(ApiError::Io(std::io::Error::other("fd 7 at /srv"))).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body, json!({"detail": "internal error"}));
    }

    #[tokio::test]
    async fn core_errors_map_to_fastapi_shapes() {
        let (status, body) =
            body_of(jobsched_core::Error::invalid("quantum_seconds", "must be > 0").into()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            body,
            json!({"detail": [{"loc": ["body", "quantum_seconds"], "msg": "must be > 0", "type": "value_error"}]})
        );
        let (status, body) = body_of(ApiError::Unauthorized("send a token".into())).await;
        assert_eq!(
            (status, body),
            (StatusCode::UNAUTHORIZED, json!({"detail": "send a token"}))
        );
        let illegal = jobsched_core::Error::IllegalTransition {
            from: jobsched_core::JobStatus::Completed,
            to: jobsched_core::JobStatus::Pending,
        };
        assert_eq!(body_of(illegal.into()).await.0, StatusCode::CONFLICT);
    }
}
