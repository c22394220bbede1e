//! jobsched-client: a typed async HTTP client for the jobsched REST API.
//!
//! Used by the CLI, the benchmark and the API's black-box tests. Responses decode into the
//! core types where the shapes match ([`Job`], [`JobPage`], [`JobStats`], [`DeadLetter`]);
//! every non-2xx answer becomes [`ClientError::Api`] with the status code and the server's
//! `detail` (FastAPI shape: a string, or a list of field problems).
//!
//! ```no_run
//! # async fn demo() -> Result<(), jobsched_client::ClientError> {
//! use jobsched_client::{Client, SubmitJob};
//! use std::time::Duration;
//! let client = Client::new("http://127.0.0.1:8000")?.with_token("secret");
//! let job = client
//!     .submit(&SubmitJob::new("hello", "sleep").payload(serde_json::json!({"duration": 0.1})))
//!     .await?;
//! let done = client.wait_terminal(job.id, Duration::from_secs(30)).await?;
//! println!("{} is {}", done.id, done.status);
//! # Ok(()) }
//! ```

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::time::Duration;
use tokio::time::Instant;

pub use jobsched_core::notes::{LogLine, Progress, TryLog};
pub use jobsched_core::{DeadLetter, Job, JobId, JobPage, JobStats, JobStatus, PolicyKind};
pub use jobsched_wire::{
    HealthResponse as Health, JobCreate as SubmitJob, PolicyUpdate, SchedulerStatus, UnservedType,
};

/// Everything that can go wrong talking to the API.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL is unusable.
    #[error("invalid API URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The request could not be sent or the response not read (server down, timeout, …).
    /// The message names every cause in the chain (reqwest's own says only "error sending
    /// request", whether the connection was refused or the server did not answer in time).
    #[error(
        "{method} {url} failed: {}; is the jobsched API running at that address?",
        causes(.source)
    )]
    Request {
        /// HTTP method.
        method: Method,
        /// Full URL.
        url: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with a non-2xx status.
    #[error("{method} {path} returned HTTP {status}: {detail}")]
    Api {
        /// HTTP method.
        method: Method,
        /// Request path.
        path: String,
        /// Status code.
        status: StatusCode,
        /// The server's `detail` (for 422: every problem, `loc: msg`, joined by `; `).
        detail: String,
        /// For 422: the individual problems.
        errors: Vec<FieldProblem>,
    },
    /// A 2xx response whose body is not what this client expects (version mismatch?).
    #[error("unexpected response body from {path}: {reason}")]
    Decode {
        /// Request path.
        path: String,
        /// What did not match.
        reason: String,
    },
    /// [`Client::wait_terminal`] gave up.
    #[error(
        "job {id} did not reach a terminal state within {waited:?} (last seen {last}); wait \
         longer or check the workers with `GET /scheduler/status`"
    )]
    Timeout {
        /// Job id.
        id: JobId,
        /// How long it waited.
        waited: Duration,
        /// The last status seen.
        last: JobStatus,
    },
}

impl ClientError {
    /// The HTTP status of an [`ClientError::Api`] error.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// One problem of a 422 answer (FastAPI shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldProblem {
    /// Location, e.g. `["body", "payload", "duration"]`.
    pub loc: Vec<Value>,
    /// Message.
    pub msg: String,
    /// Kind (`missing`, `value_error`, …).
    #[serde(rename = "type", default)]
    pub kind: String,
}

impl FieldProblem {
    /// The location without its root, dotted: `payload.duration`, `jobs.3.name`, `page`.
    pub fn field(&self) -> String {
        self.loc
            .iter()
            .skip(1)
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(".")
    }
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field(), self.msg)
    }
}

/// Filter and page for [`Client::list`]. `Default` lists the first page of everything; unset
/// fields are left out of the query string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ListQuery {
    /// Only this state.
    pub status: Option<JobStatus>,
    /// Only this type.
    pub job_type: Option<String>,
    /// Only this named queue.
    pub queue: Option<String>,
    /// 1-based page.
    pub page: Option<u32>,
    /// Page size (1–100).
    pub page_size: Option<u32>,
    /// Large fields to include (`payload,result,checkpoint`); lists leave them out otherwise.
    pub include: Option<String>,
}

#[derive(Serialize)]
struct BatchBody<'a> {
    jobs: &'a [SubmitJob],
}

#[derive(Deserialize)]
struct BatchIds {
    ids: Vec<JobId>,
}

#[derive(Deserialize)]
struct Purged {
    purged: u64,
}

/// Default per-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long an idle kept-alive connection is kept for the next request: below the server's
/// 10 s header-read timeout, after which it closes the connection.
const IDLE_CONNECTION_KEPT: Duration = Duration::from_secs(5);

/// A client for one jobsched API server.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    admin_token: Option<String>,
}

/// Whether `method path` is an admin operation (policy switch, dead-letter retry or purge):
/// only those carry the admin token.
/// `e` and each error beneath it, joined by ": ".
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = cause.source();
    }
    out
}

fn is_admin_route(method: &Method, path: &str) -> bool {
    let path = path.trim_end_matches('/');
    (*method == Method::PUT && (path == "/scheduler/policy" || path.starts_with("/queues/")))
        || (*method == Method::DELETE && path == "/scheduler/policy/owner")
        || (*method == Method::DELETE && path == "/scheduler/dead-letter")
        || (*method == Method::POST
            && path.starts_with("/scheduler/dead-letter/")
            && path.ends_with("/retry"))
}

impl Client {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:8000`), with a 30 s
    /// per-request timeout.
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Self::with_timeout(base_url, DEFAULT_TIMEOUT)
    }

    /// Like [`Client::new`] with a custom per-request timeout.
    pub fn with_timeout(base_url: &str, timeout: Duration) -> Result<Self, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: base_url.to_string(),
            reason: reason.to_string(),
        };
        let base = base_url.trim().trim_end_matches('/').to_string();
        let parsed = reqwest::Url::parse(&base)
            .map_err(|e| invalid(&format!("{e}; expected e.g. http://127.0.0.1:8000")))?;
        if parsed.scheme() != "http" {
            return Err(invalid(
                "only http:// is supported (this client is built without TLS; terminate TLS in \
                 front of it or use a port-forward)",
            ));
        }
        // The server closes a kept-alive connection after 10 s without a request (its
        // header-read timeout). A request sent on such a connection as the server closes it
        // fails with "connection reset": idle connections are dropped well before that.
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .pool_idle_timeout(IDLE_CONNECTION_KEPT)
            .build()
            .map_err(|e| invalid(&e.to_string()))?;
        Ok(Client {
            http,
            base,
            token: None,
            admin_token: None,
        })
    }

    /// Send `Authorization: Bearer <token>` with every request (admin operations too, unless
    /// an admin token is set).
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Send this token, instead of the one of [`Client::with_token`], with the admin operations
    /// only (policy switch, dead-letter retry and purge); never with other requests.
    pub fn with_admin_token(mut self, token: impl Into<String>) -> Self {
        self.admin_token = Some(token.into());
        self
    }

    /// The base URL (without trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The bearer token sent with `method path`.
    fn token_for(&self, method: &Method, path: &str) -> Option<&String> {
        if is_admin_route(method, path) {
            self.admin_token.as_ref().or(self.token.as_ref())
        } else {
            self.token.as_ref()
        }
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let token = self.token_for(&method, path);
        let rb = self.http.request(method, format!("{}{path}", self.base));
        match token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// Send; non-2xx → [`ClientError::Api`] (unless `accept` lists the status).
    async fn send(
        &self,
        method: Method,
        path: &str,
        build: impl FnOnce(RequestBuilder) -> RequestBuilder,
        accept: &[StatusCode],
    ) -> Result<reqwest::Response, ClientError> {
        let rb = build(self.request(method.clone(), path));
        let response = rb.send().await.map_err(|source| ClientError::Request {
            method: method.clone(),
            url: format!("{}{path}", self.base),
            source,
        })?;
        let status = response.status();
        if status.is_success() || accept.contains(&status) {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        let (detail, errors) = parse_detail(&text, status);
        Err(ClientError::Api {
            method,
            path: path.to_string(),
            status,
            detail,
            errors,
        })
    }

    async fn json<T: DeserializeOwned>(
        &self,
        response: reqwest::Response,
        path: &str,
    ) -> Result<T, ClientError> {
        let bytes = response.bytes().await.map_err(|e| ClientError::Decode {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            path: path.to_string(),
            reason: e.to_string(),
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        build: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = self.send(method, path, build, &[]).await?;
        self.json(response, path).await
    }

    /// `POST /jobs/`: submit one job.
    pub async fn submit(&self, job: &SubmitJob) -> Result<Job, ClientError> {
        self.call(Method::POST, "/jobs/", |rb| rb.json(job)).await
    }

    /// `POST /jobs/batch`: submit up to 1000 jobs atomically; ids in input order.
    pub async fn submit_batch(&self, jobs: &[SubmitJob]) -> Result<Vec<JobId>, ClientError> {
        let ids: BatchIds = self
            .call(Method::POST, "/jobs/batch", |rb| {
                rb.json(&BatchBody { jobs })
            })
            .await?;
        Ok(ids.ids)
    }

    /// `GET /queues`: every named queue with its settings and counts (the API's JSON).
    pub async fn queues(&self) -> Result<Vec<Value>, ClientError> {
        self.call(Method::GET, "/queues", |rb| rb).await
    }

    /// `method` on `/{collection}/{name}` (with `body` as JSON): the API's JSON.
    async fn named(
        &self,
        method: Method,
        (collection, name): (&str, &str),
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let path = format!("/{collection}/{name}");
        self.call(method, &path, |rb| match body {
            Some(body) => rb.json(body),
            None => rb,
        })
        .await
    }

    /// `GET /queues/{name}`.
    pub async fn queue(&self, name: &str) -> Result<Value, ClientError> {
        self.named(Method::GET, ("queues", name), None).await
    }

    /// `PUT /queues/{name}`: create or change (`body` as in the API: policy, quantum_seconds,
    /// paused, concurrency_limit, weight; unset fields keep their value).
    pub async fn put_queue(&self, name: &str, body: &Value) -> Result<Value, ClientError> {
        self.named(Method::PUT, ("queues", name), Some(body)).await
    }

    /// `GET /schedules`: every periodic job (the API's JSON).
    pub async fn schedules(&self) -> Result<Vec<Value>, ClientError> {
        self.call(Method::GET, "/schedules", |rb| rb).await
    }

    /// `GET /schedules/{name}`.
    pub async fn schedule(&self, name: &str) -> Result<Value, ClientError> {
        self.named(Method::GET, ("schedules", name), None).await
    }

    /// `PUT /schedules/{name}`: create or replace (`body` as in the API: cron, timezone, job,
    /// overlap, paused, catch_up).
    pub async fn put_schedule(&self, name: &str, body: &Value) -> Result<Value, ClientError> {
        self.named(Method::PUT, ("schedules", name), Some(body))
            .await
    }

    /// `DELETE /schedules/{name}`.
    pub async fn delete_schedule(&self, name: &str) -> Result<(), ClientError> {
        self.send(Method::DELETE, &format!("/schedules/{name}"), |rb| rb, &[])
            .await
            .map(|_| ())
    }

    /// `GET /jobs/{id}`.
    pub async fn get(&self, id: JobId) -> Result<Job, ClientError> {
        self.call(Method::GET, &format!("/jobs/{id}"), |rb| rb)
            .await
    }

    /// `GET /jobs/{id}`: the job and the latest progress its runs reported.
    pub async fn get_with_progress(
        &self,
        id: JobId,
    ) -> Result<(Job, Option<Progress>), ClientError> {
        let path = format!("/jobs/{id}");
        let mut v: Value = self.call(Method::GET, &path, |rb| rb).await?;
        let progress = v
            .as_object_mut()
            .and_then(|o| o.remove("progress"))
            .filter(|p| !p.is_null())
            .map(serde_json::from_value::<Progress>)
            .transpose()
            .map_err(|e| ClientError::Decode {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let job = serde_json::from_value(v).map_err(|e| ClientError::Decode {
            path,
            reason: e.to_string(),
        })?;
        Ok((job, progress))
    }

    /// `GET /job-types`: every job type, its payload schema, live workers and PENDING jobs.
    pub async fn job_types(&self) -> Result<Vec<Value>, ClientError> {
        let v: Value = self.call(Method::GET, "/job-types", |rb| rb).await?;
        Ok(v["job_types"].as_array().cloned().unwrap_or_default())
    }

    /// `GET /jobs/{id}/logs`: the log each try kept (only try `attempt`'s when given).
    pub async fn logs(&self, id: JobId, attempt: Option<u32>) -> Result<Vec<TryLog>, ClientError> {
        #[derive(serde::Deserialize)]
        struct Logs {
            attempts: Vec<TryLog>,
        }
        let logs: Logs = self
            .call(
                Method::GET,
                &format!("/jobs/{id}/logs"),
                |rb| match attempt {
                    Some(a) => rb.query(&[("attempt", a)]),
                    None => rb,
                },
            )
            .await?;
        Ok(logs.attempts)
    }

    /// `GET /jobs/`: one page, newest first.
    pub async fn list(&self, query: &ListQuery) -> Result<JobPage, ClientError> {
        self.call(Method::GET, "/jobs/", |rb| rb.query(query)).await
    }

    /// `GET /jobs/stats`.
    pub async fn stats(&self) -> Result<JobStats, ClientError> {
        self.call(Method::GET, "/jobs/stats", |rb| rb).await
    }

    /// `DELETE /jobs/{id}`: cancel a job that has not ended (a RUNNING one is stopped: 202).
    pub async fn cancel(&self, id: JobId) -> Result<(), ClientError> {
        self.send(Method::DELETE, &format!("/jobs/{id}"), |rb| rb, &[])
            .await
            .map(|_| ())
    }

    /// `PUT /scheduler/policy`; returns the status after the change.
    pub async fn set_policy(&self, update: &PolicyUpdate) -> Result<SchedulerStatus, ClientError> {
        self.call(Method::PUT, "/scheduler/policy", |rb| rb.json(update))
            .await
    }

    /// `DELETE /scheduler/policy/owner`: an admin takes the policy back from a
    /// `SchedulerConfig` whose controller is gone; returns the status.
    pub async fn release_policy_owner(&self) -> Result<SchedulerStatus, ClientError> {
        self.call(Method::DELETE, "/scheduler/policy/owner", |rb| rb)
            .await
    }

    /// `GET /scheduler/status`.
    pub async fn status(&self) -> Result<SchedulerStatus, ClientError> {
        self.call(Method::GET, "/scheduler/status", |rb| rb).await
    }

    /// `GET /scheduler/dead-letter`: most recent failure first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, ClientError> {
        self.call(Method::GET, "/scheduler/dead-letter", |rb| rb)
            .await
    }

    /// `POST /scheduler/dead-letter/{id}/retry`: re-run a dead letter; returns the job.
    pub async fn retry_dead_letter(&self, id: JobId) -> Result<Job, ClientError> {
        self.call(
            Method::POST,
            &format!("/scheduler/dead-letter/{id}/retry"),
            |rb| rb,
        )
        .await
    }

    /// `DELETE /scheduler/dead-letter`: returns how many entries were purged.
    pub async fn purge_dead_letters(&self) -> Result<u64, ClientError> {
        let purged: Purged = self
            .call(Method::DELETE, "/scheduler/dead-letter", |rb| rb)
            .await?;
        Ok(purged.purged)
    }

    /// `GET /health`. A 503 (a backend failing) is returned as `Ok` with the failing field set;
    /// check [`Health::is_healthy`].
    pub async fn health(&self) -> Result<Health, ClientError> {
        let response = self
            .send(
                Method::GET,
                "/health",
                |rb| rb,
                &[StatusCode::SERVICE_UNAVAILABLE],
            )
            .await?;
        self.json(response, "/health").await
    }

    /// Poll `GET /jobs/{id}` until the job is COMPLETED, FAILED or CANCELLED, or `timeout`
    /// passes ([`ClientError::Timeout`]). Polls every 20 ms at first, backing off to 500 ms.
    pub async fn wait_terminal(&self, id: JobId, timeout: Duration) -> Result<Job, ClientError> {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut interval = Duration::from_millis(20);
        loop {
            let job = self.get(id).await?;
            if job.status.is_terminal() {
                return Ok(job);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ClientError::Timeout {
                    id,
                    waited: now - start,
                    last: job.status,
                });
            }
            tokio::time::sleep(interval.min(deadline - now)).await;
            interval = (interval * 2).min(Duration::from_millis(500));
        }
    }
}

/// Turn an error body into a message (and the 422 problems).
fn parse_detail(text: &str, status: StatusCode) -> (String, Vec<FieldProblem>) {
    let fallback = || {
        let t = text.trim();
        if t.is_empty() {
            status
                .canonical_reason()
                .unwrap_or("no error detail")
                .to_string()
        } else {
            t.chars().take(500).collect()
        }
    };
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return (fallback(), Vec::new());
    };
    match value.get("detail") {
        Some(Value::String(s)) => (s.clone(), Vec::new()),
        Some(list @ Value::Array(_)) => {
            let problems: Vec<FieldProblem> =
                serde_json::from_value(list.clone()).unwrap_or_default();
            if problems.is_empty() {
                (list.to_string(), Vec::new())
            } else {
                let joined = problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ");
                (joined, problems)
            }
        }
        Some(other) => (other.to_string(), Vec::new()),
        None => (fallback(), Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failed_request_names_its_cause() {
        // A port nothing listens on: the message says the connection was refused, not only
        // that the request could not be sent.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = Client::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let e = c.stats().await.unwrap_err().to_string();
        assert!(e.contains("GET"), "{e}");
        assert!(e.to_lowercase().contains("refused"), "{e}");
    }

    #[test]
    fn admin_token_goes_only_to_admin_routes() {
        let c = Client::new("http://127.0.0.1:1")
            .unwrap()
            .with_token("user")
            .with_admin_token("admin");
        let id = "0190a6f2-7c1e-7d3a-9f4b-2a6c1e5d8b90";
        for (m, p) in [
            (Method::PUT, "/scheduler/policy"),
            (Method::DELETE, "/scheduler/dead-letter"),
            (Method::POST, &*format!("/scheduler/dead-letter/{id}/retry")),
        ] {
            assert_eq!(
                c.token_for(&m, p).map(String::as_str),
                Some("admin"),
                "{m} {p}"
            );
        }
        for (m, p) in [
            (Method::GET, "/scheduler/status"),
            (Method::GET, "/scheduler/dead-letter"),
            (Method::POST, "/jobs/"),
            (Method::DELETE, &*format!("/jobs/{id}")),
            (Method::GET, "/jobs/stats"),
        ] {
            assert_eq!(
                c.token_for(&m, p).map(String::as_str),
                Some("user"),
                "{m} {p}"
            );
        }
        let admin_only = Client::new("http://127.0.0.1:1")
            .unwrap()
            .with_admin_token("admin");
        assert_eq!(admin_only.token_for(&Method::GET, "/jobs/"), None);
    }

    #[test]
    fn details_are_parsed() {
        let (d, e) = parse_detail(r#"{"detail":"Job not found"}"#, StatusCode::NOT_FOUND);
        assert_eq!(d, "Job not found");
        assert!(e.is_empty());
        let body = r#"{"detail":[{"loc":["body","jobs",2,"name"],"msg":"field required","type":"missing"}]}"#;
        let (d, e) = parse_detail(body, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(d, "jobs.2.name: field required");
        assert_eq!(e[0].kind, "missing");
        let (d, _) = parse_detail("", StatusCode::BAD_GATEWAY);
        assert_eq!(d, "Bad Gateway");
        let (d, _) = parse_detail("oops", StatusCode::BAD_GATEWAY);
        assert_eq!(d, "oops");
    }

    #[test]
    fn urls_are_checked() {
        assert!(Client::new("http://127.0.0.1:8000/").is_ok());
        assert_eq!(
            Client::new("http://127.0.0.1:8000/").unwrap().base_url(),
            "http://127.0.0.1:8000"
        );
        assert!(matches!(
            Client::new("127.0.0.1:8000"),
            Err(ClientError::InvalidUrl { .. })
        ));
        assert!(matches!(
            Client::new("https://example.invalid"),
            Err(ClientError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn submissions_omit_unset_fields() {
        let v = serde_json::to_value(SubmitJob::new("a", "sleep").priority(2)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"name": "a", "job_type": "sleep", "priority": 2})
        );
        let q = ListQuery {
            status: Some(JobStatus::Failed),
            page_size: Some(5),
            ..Default::default()
        };
        // The query string leaves unset fields out.
        let request = reqwest::Client::new()
            .get("http://127.0.0.1:1/jobs/")
            .query(&q);
        let url = request.build().unwrap().url().clone();
        assert_eq!(url.query(), Some("status=FAILED&page_size=5"));
    }
}
