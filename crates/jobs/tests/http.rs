//! The `http` job type against a local server: success, retry on 503, no retry on 404, the
//! request timeout, a refused host, a redirect off the host, an oversized response, secrets in
//! headers.

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use axum::routing::{any, get};
use jobsched_jobs::http::{AllowList, HttpJob, MAX_RESPONSE};
use jobsched_jobs::{DataDir, JobContext, JobError, JobHandler, RunOutput, Typed};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn server() -> u16 {
    let app = Router::new()
        .route(
            "/ok",
            get(|| async { axum::Json(json!({"hello": "world"})) }),
        )
        .route("/text", get(|| async { "plain words" }))
        .route(
            "/busy",
            any(|| async { (StatusCode::SERVICE_UNAVAILABLE, "try later") }),
        )
        .route("/limited", any(|| async { StatusCode::TOO_MANY_REQUESTS }))
        .route(
            "/missing",
            any(|| async { (StatusCode::NOT_FOUND, "no such thing") }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route("/big", get(|| async { vec![b'x'; MAX_RESPONSE + 1] }))
        .route("/hop", get(|| async { Redirect::temporary("/ok") }))
        .route(
            "/echo",
            any(|headers: HeaderMap, body: String| async move {
                axum::Json(json!({
                    "authorization": headers.get("authorization").and_then(|v| v.to_str().ok()),
                    "content_type": headers.get("content-type").and_then(|v| v.to_str().ok()),
                    "body": body,
                }))
                .into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

struct Fixture {
    port: u16,
    _data: tempfile::TempDir,
    ctx: JobContext,
    secrets: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Fixture {
        let port = server().await;
        let data = tempfile::tempdir().unwrap();
        let ctx = JobContext::new(DataDir::new(data.path()).unwrap());
        let secrets = tempfile::tempdir().unwrap();
        std::fs::write(secrets.path().join("api-token"), "Bearer s3cret\n").unwrap();
        Fixture {
            port,
            _data: data,
            ctx,
            secrets,
        }
    }

    fn job(&self, allow: &str) -> Typed<HttpJob> {
        Typed::new(HttpJob::new(
            AllowList::parse(allow),
            Some(self.secrets.path().to_path_buf()),
        ))
    }

    async fn run(&self, allow: &str, payload: Value) -> Result<RunOutput, JobError> {
        self.job(allow).run_async(&payload, &self.ctx).await
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A GET of `path` on the fixture's server, loopback allowed.
    async fn get(&self, path: &str) -> Result<RunOutput, JobError> {
        self.run("127.0.0.1", json!({"url": self.url(path), "method": "GET"}))
            .await
    }
}

fn done(out: Result<RunOutput, JobError>) -> Value {
    match out {
        Ok(RunOutput::Done(v)) => v,
        other => panic!("expected a result, got {other:?}"),
    }
}

fn failed(out: Result<RunOutput, JobError>) -> JobError {
    match out {
        Err(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn success_returns_the_response() {
    let f = Fixture::new().await;
    let v = done(f.get("/ok").await);
    assert_eq!(v["status"], 200);
    assert_eq!(v["body"], json!({"hello": "world"}));
    assert!(
        v["headers"]["content-type"]
            .as_str()
            .unwrap()
            .contains("json")
    );
    let v = done(f.get("/text").await);
    assert_eq!(v["body"], "plain words");
    // POST (the default) with a JSON body and a header from a secret.
    let v = done(
        f.run(
            "127.0.0.1",
            json!({"url": f.url("/echo"), "body": {"n": 1},
                   "headers": {"Authorization": {"secret": "api-token"}}}),
        )
        .await,
    );
    assert_eq!(v["body"]["authorization"], "Bearer s3cret");
    assert_eq!(v["body"]["content_type"], "application/json");
    assert_eq!(v["body"]["body"], "{\"n\":1}");
    // A same-host redirect is followed.
    let v = done(f.get("/hop").await);
    assert_eq!(v["body"], json!({"hello": "world"}));
}

#[tokio::test]
async fn server_errors_retry_and_client_errors_do_not() {
    let f = Fixture::new().await;
    let e = failed(f.run("127.0.0.1", json!({"url": f.url("/busy")})).await);
    assert!(e.is_retryable(), "{e}");
    assert!(
        e.to_string().contains("503") && e.to_string().contains("try later"),
        "{e}"
    );
    let e = failed(f.run("127.0.0.1", json!({"url": f.url("/limited")})).await);
    assert!(e.is_retryable(), "{e}");
    let e = failed(f.run("127.0.0.1", json!({"url": f.url("/missing")})).await);
    assert!(!e.is_retryable(), "{e}");
    assert!(e.to_string().contains("404"), "{e}");
    // Nothing listens: a connection error, retried.
    let closed = jobsched_testkit_free_port();
    let e = failed(
        f.run(
            "127.0.0.1",
            json!({"url": format!("http://127.0.0.1:{closed}/x")}),
        )
        .await,
    );
    assert!(e.is_retryable(), "{e}");
}

/// A port nothing listens on.
fn jobsched_testkit_free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn the_request_timeout_holds() {
    let f = Fixture::new().await;
    let began = Instant::now();
    let e = failed(
        f.run(
            "127.0.0.1",
            json!({"url": f.url("/slow"), "method": "GET", "timeout_seconds": 0.3}),
        )
        .await,
    );
    assert!(e.is_retryable(), "{e}");
    assert!(e.to_string().contains("timed out"), "{e}");
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
}

#[tokio::test]
async fn hosts_off_the_list_are_refused() {
    let f = Fixture::new().await;
    // Not on the list.
    let e = failed(
        f.run(
            "api.example.com",
            json!({"url": f.url("/ok"), "method": "GET"}),
        )
        .await,
    );
    assert!(!e.is_retryable());
    assert!(e.to_string().contains("JOBSCHED_HTTP_ALLOW"), "{e}");
    // No list at all: every URL refused, saying how to allow one.
    let e = failed(f.run("", json!({"url": f.url("/ok")})).await);
    assert!(!e.is_retryable());
    assert!(e.to_string().contains("set JOBSCHED_HTTP_ALLOW"), "{e}");
    // A pinned port is a different host.
    let e = failed(f.run("127.0.0.1:1", json!({"url": f.url("/ok")})).await);
    assert!(!e.is_retryable(), "{e}");
    // A redirect to another host (localhost is not 127.0.0.1 here) is not followed.
    let app_port = f.port;
    let redirect = Router::new().route(
        "/away",
        get(move || async move { Redirect::temporary(&format!("http://localhost:{app_port}/ok")) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, redirect).await.unwrap() });
    let e = failed(
        f.run(
            "127.0.0.1,localhost",
            json!({"url": format!("http://127.0.0.1:{port}/away"), "method": "GET"}),
        )
        .await,
    );
    assert!(!e.is_retryable(), "{e}");
    assert!(e.to_string().contains("another host"), "{e}");
}

#[tokio::test]
async fn oversized_responses_fail() {
    let f = Fixture::new().await;
    let e = failed(f.get("/big").await);
    assert!(!e.is_retryable());
    assert!(e.to_string().contains("over 1048576 bytes"), "{e}");
}

#[tokio::test]
async fn payloads_are_checked_at_submission() {
    let f = Fixture::new().await;
    let h = f.job("127.0.0.1");
    let d = DataDir::new(f._data.path()).unwrap();
    let fields =
        |p: Value| -> Vec<String> { h.validate(&p, &d).into_iter().map(|e| e.field).collect() };
    assert!(fields(json!({"url": "https://api.example.com/x"})).is_empty());
    assert_eq!(fields(json!({})), ["payload.url"]);
    assert_eq!(fields(json!({"url": "ftp://x/y"})), ["payload.url"]);
    assert_eq!(
        fields(json!({"url": "https://a/", "method": "BREW"})),
        ["payload.method"]
    );
    assert_eq!(
        fields(json!({"url": "https://a/", "timeout_seconds": 301})),
        ["payload.timeout_seconds"]
    );
    assert_eq!(
        fields(json!({"url": "https://a/", "headers": {"X-Key": {"secret": "../etc/passwd"}}})),
        ["payload.headers.X-Key.secret"]
    );
    assert_eq!(
        fields(json!({"url": "https://a/", "surprise": 1})),
        ["payload.surprise"]
    );
}
