//! Test harness: a real listener on 127.0.0.1:0 serving `jobsched_api::serve`, on either
//! Postgres + Redis or SQLite + the in-memory transport.

#![allow(dead_code)]

use async_trait::async_trait;
use chrono::Utc;
use jobsched_api::{ApiConfig, AppState};
use jobsched_client::{Client, ClientError, JobPage, ListQuery, PolicyUpdate, SchedulerStatus};
use jobsched_core::JobSpec;
use jobsched_core::ports::{
    Event, EventBus, Outcome, Settings, Store, Subscription, SystemClock, Token, Transport,
    WorkerRegistry, WorkerSlots,
};
use jobsched_core::{Job, NewJob, PolicyKind, PolicySettings};
use jobsched_jobs::{DataDir, Registry};
use jobsched_store::testing::TestDb;
use jobsched_testkit::in_ci;
use jobsched_transport::{MemoryTransport, RedisTransport};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Which configuration a suite instance runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Production: Postgres store + Redis transport.
    PostgresRedis,
    /// Dev mode: SQLite store + in-memory transport.
    SqliteMemory,
}

/// The concrete transport, for what the port does not expose (deleting its keys).
#[derive(Clone)]
pub enum ConcreteTransport {
    Redis(RedisTransport),
    Memory(MemoryTransport),
}

fn redis_url() -> String {
    std::env::var("JOBSCHED_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_string())
}

/// A transport whose every call fails, as when Redis is down.
#[derive(Debug, Default)]
pub struct DownTransport;

fn down<T>() -> jobsched_core::Result<T> {
    Err(jobsched_core::Error::backend(
        "redis",
        "connection refused (127.0.0.1:6390)",
    ))
}

#[async_trait]
impl WorkerRegistry for DownTransport {
    async fn report_slots(
        &self,
        _: &str,
        _: u32,
        _: u32,
        _: Duration,
    ) -> jobsched_core::Result<()> {
        down()
    }

    async fn workers(&self) -> jobsched_core::Result<Vec<WorkerSlots>> {
        down()
    }

    async fn report_types(&self, _: &str, _: &[String]) -> jobsched_core::Result<()> {
        down()
    }

    async fn reap_dead_workers(&self) -> jobsched_core::Result<Vec<String>> {
        down()
    }
}

#[async_trait]
impl Settings for DownTransport {
    async fn policy(&self) -> jobsched_core::Result<Option<PolicySettings>> {
        down()
    }

    async fn set_policy(&self, _: &PolicySettings) -> jobsched_core::Result<()> {
        down()
    }

    async fn queues(&self) -> jobsched_core::Result<Vec<(String, PolicySettings)>> {
        down()
    }

    async fn set_queue(&self, _: &str, _: &PolicySettings) -> jobsched_core::Result<()> {
        down()
    }

    async fn add_queue(&self, _: &str, _: &PolicySettings) -> jobsched_core::Result<bool> {
        down()
    }
}

#[async_trait]
impl EventBus for DownTransport {
    async fn publish(&self, _: Event) -> jobsched_core::Result<()> {
        down()
    }

    async fn subscribe(&self) -> jobsched_core::Result<Box<dyn Subscription>> {
        down()
    }
}

#[async_trait]
impl Transport for DownTransport {
    async fn ping(&self) -> jobsched_core::Result<()> {
        down()
    }
}

/// Options for [`Harness::start_with`].
#[derive(Debug, Default)]
pub struct Options {
    pub config: ApiConfig,
    /// Replace the real transport with one whose every call fails.
    pub transport_down: bool,
    /// Redis to use instead of the shared test Redis (Postgres + Redis backend).
    pub redis_url: Option<String>,
}

/// Options with the default [`ApiConfig`] changed by `f`.
pub fn config(f: impl FnOnce(&mut ApiConfig)) -> Options {
    let mut config = ApiConfig::default();
    f(&mut config);
    Options {
        config,
        ..Default::default()
    }
}

/// Options requiring `user` as the API token and `admin` as the admin token.
pub fn tokens(user: &str, admin: &str) -> Options {
    config(|c| {
        c.api_token = Some(user.into());
        c.admin_token = Some(admin.into());
    })
}

/// A running API server plus direct access to its store and transport.
pub struct Harness {
    pub backend: Backend,
    pub base: String,
    /// Typed client (no token).
    pub client: Client,
    /// Raw HTTP client (follows redirects).
    pub http: reqwest::Client,
    pub store: Arc<dyn Store>,
    pub transport: Arc<dyn Transport>,
    pub concrete: ConcreteTransport,
    pub db: TestDb,
    pub data_dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), jobsched_api::ApiError>>>,
    finished: bool,
}

impl Drop for Harness {
    /// When a test panicked before [`Harness::finish`], remove its Redis keys anyway (the
    /// database is removed by `TestDb`'s own `Drop`), on a blocking connection of its own, as
    /// the test's runtime may be shutting down.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let ConcreteTransport::Redis(t) = &self.concrete {
            let _ = RedisTransport::delete_all_keys_blocking(&redis_url(), t.prefix());
        }
    }
}

impl Harness {
    /// Start with the default config; `None` = skipped (service unreachable, not CI).
    pub async fn start(backend: Backend) -> Option<Harness> {
        Self::start_with(backend, Options::default()).await
    }

    pub async fn start_with(backend: Backend, options: Options) -> Option<Harness> {
        let (db, concrete) = match backend {
            Backend::PostgresRedis => {
                let db = TestDb::postgres().await?;
                let prefix = format!("jobsched_apitest_{}", uuid::Uuid::new_v4().simple());
                let url = options.redis_url.clone().unwrap_or_else(redis_url);
                match RedisTransport::connect(&url, &prefix).await {
                    Ok(t) => (db, ConcreteTransport::Redis(t)),
                    Err(e) => {
                        db.cleanup().await;
                        let msg = format!(
                            "cannot reach the test Redis at {} ({e}); start Redis or set \
                             JOBSCHED_TEST_REDIS_URL",
                            redis_url()
                        );
                        if in_ci() {
                            panic!("{msg} (CI=true: Redis tests must run)");
                        }
                        eprintln!("skipping Postgres+Redis test: {msg}");
                        return None;
                    }
                }
            }
            Backend::SqliteMemory => (
                TestDb::sqlite().await,
                ConcreteTransport::Memory(MemoryTransport::new()),
            ),
        };
        let store = db.store().await;
        let real: Arc<dyn Transport> = match &concrete {
            ConcreteTransport::Redis(t) => Arc::new(t.clone()),
            ConcreteTransport::Memory(t) => Arc::new(t.clone()),
        };
        let served: Arc<dyn Transport> = if options.transport_down {
            Arc::new(DownTransport)
        } else {
            real.clone()
        };
        let data_dir = tempfile::tempdir().unwrap();
        std::fs::write(data_dir.path().join("sample.txt"), "one two three\nfour\n").unwrap();
        let state = AppState {
            store: store.clone(),
            transport: served,
            registry: Registry::builtin(),
            catalog: Default::default(),
            data_dir: DataDir::new(data_dir.path()).unwrap(),
            clock: Arc::new(SystemClock),
            config: options.config,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(jobsched_api::serve(listener, state, async move {
            let _ = rx.await;
        }));
        Some(Harness {
            backend,
            client: Client::new(&base).unwrap(),
            http: reqwest::Client::new(),
            base,
            store,
            transport: real,
            concrete,
            db,
            data_dir,
            shutdown: Some(tx),
            server: Some(server),
            finished: false,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `method` `path` with `body` as JSON (none: no body): the status and the JSON body.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(body);
        }
        status_json(request.send().await.unwrap()).await
    }

    /// `method` `path` with `body` as is, under `content_type` (none: no header): the status
    /// and the JSON body.
    pub async fn send_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method.clone(), self.url(path)).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        // An answer must arrive (a reset or a hang-up is a failure of the test).
        let response = request.send().await;
        let response = response.unwrap_or_else(|e| panic!("no answer to {method} {path}: {e}"));
        status_json(response).await
    }

    /// `PUT /scheduler/policy` of `policy` (other settings unchanged) through the client.
    pub async fn switch(&self, policy: PolicyKind) -> Result<SchedulerStatus, ClientError> {
        switch(&self.client, policy).await
    }

    /// `GET /jobs` through the client, with the query `narrow` sets.
    pub async fn list_where(
        &self,
        narrow: impl FnOnce(&mut ListQuery),
    ) -> Result<JobPage, ClientError> {
        let mut query = ListQuery::default();
        narrow(&mut query);
        self.client.list(&query).await
    }

    /// `POST` `path` with `body` as is, as JSON: the status and the JSON body.
    pub async fn post_raw(&self, path: &str, body: String) -> (u16, Value) {
        self.send_raw(reqwest::Method::POST, path, Some("application/json"), body)
            .await
    }

    /// `method` `path` without a body: the status and the JSON body.
    pub async fn call(&self, method: reqwest::Method, path: &str) -> (u16, Value) {
        self.send(method, path, None).await
    }

    /// `GET path`: the status and the JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path).await
    }

    /// `POST path` with `body` as JSON: the status and the JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// `PUT path` with `body` as JSON: the status and the JSON body.
    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    /// `GET path`, answered 200: the JSON body.
    pub async fn get_ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// Stop the server (gracefully) and remove the database and Redis keys.
    pub async fn finish(mut self) {
        self.stop_server().await;
        if let ConcreteTransport::Redis(t) = &self.concrete {
            t.delete_all_keys().await.unwrap();
        }
        self.finished = true;
        let db = std::mem::replace(&mut self.db, TestDb::sqlite_unmigrated());
        db.cleanup().await;
    }

    pub async fn stop_server(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(10), server)
                .await
                .expect("server did not shut down within 10 s")
                .unwrap()
                .unwrap();
        }
    }

    /// Insert a PENDING sleep job directly through the store.
    pub async fn insert(&self, name: &str) -> Job {
        let new = NewJob::new(JobSpec {
            name: name.into(),
            job_type: "sleep".into(),
            payload: Some(json!({"duration": 0.01})),
            ..JobSpec::default()
        })
        .unwrap();
        self.store.insert(&new, Utc::now()).await.unwrap()
    }

    /// PENDING → SCHEDULED; returns the dispatch token.
    pub async fn schedule(&self, job: &Job) -> Token {
        let now = Utc::now();
        let tokens = self
            .store
            .mark_scheduled(
                &[Token {
                    id: job.id,
                    attempt: job.attempt,
                }],
                now,
                now + chrono::Duration::seconds(60),
            )
            .await
            .unwrap();
        assert_eq!(tokens.len(), 1, "mark_scheduled did not apply");
        tokens[0].token()
    }

    /// PENDING → SCHEDULED → RUNNING; returns the token.
    pub async fn run(&self, job: &Job) -> Token {
        let token = self.schedule(job).await;
        let now = Utc::now();
        let started = self
            .store
            .record_starts(
                &[(token, now)],
                "test-worker",
                now + chrono::Duration::seconds(60),
            )
            .await
            .unwrap();
        assert_eq!(started.len(), 1, "start did not apply");
        token
    }

    /// PENDING → … → FAILED (a dead letter).
    pub async fn fail(&self, job: &Job, error: &str) {
        self.end(job, |token| Outcome::Failed {
            token,
            error: error.to_string(),
            retry_count: job.max_retries,
        })
        .await;
    }

    /// PENDING → … → COMPLETED.
    pub async fn complete(&self, job: &Job) {
        self.end(job, |token| Outcome::Completed {
            token,
            result: json!({"slept": 0.01}),
        })
        .await;
    }

    /// PENDING → … → the outcome `end` makes of the run's token.
    async fn end(&self, job: &Job, end: impl FnOnce(Token) -> Outcome) {
        let token = self.run(job).await;
        let applied = self
            .store
            .finish(&[end(token).into()], "test-worker", Utc::now())
            .await
            .unwrap();
        assert_eq!(applied, vec![token]);
    }
}

/// Status and JSON body of a response.
pub async fn status_json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, body)
}

/// Assert a FastAPI-shaped 422 body and return its `(loc, msg, type)` entries.
pub fn validation_entries(body: &Value) -> Vec<(Value, String, String)> {
    let detail = body["detail"]
        .as_array()
        .unwrap_or_else(|| panic!("422 detail is not a list: {body}"));
    assert!(!detail.is_empty(), "empty 422 detail: {body}");
    detail
        .iter()
        .map(|d| {
            let obj = d
                .as_object()
                .unwrap_or_else(|| panic!("entry not an object: {d}"));
            assert_eq!(obj.len(), 3, "entry must have exactly loc, msg, type: {d}");
            assert!(d["loc"].is_array(), "{d}");
            (
                d["loc"].clone(),
                d["msg"].as_str().unwrap().to_string(),
                d["type"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `PUT /scheduler/policy` of `policy` (other settings unchanged) through `client`.
pub async fn switch(client: &Client, policy: PolicyKind) -> Result<SchedulerStatus, ClientError> {
    client.set_policy(&PolicyUpdate::new(policy)).await
}

/// The first issue of a 422 `body` is at `loc` and its message says `says`.
pub fn assert_first_issue(body: &Value, loc: Value, says: &str) {
    let entries = validation_entries(body);
    assert!(!entries.is_empty(), "no validation issue in {body}");
    assert_eq!(entries[0].0, loc, "{body}");
    let message = &entries[0].1;
    assert!(
        message.contains(says),
        "{loc}: {message:?} does not say {says:?}"
    );
}

/// The `loc`s of a 422 body.
pub fn locs(body: &Value) -> Vec<Value> {
    validation_entries(body)
        .into_iter()
        .map(|(l, _, _)| l)
        .collect()
}

/// What a suite's test takes: the backend, to start its own harness, or a harness already
/// started on it with the default config (the test is skipped when that is `None`).
pub trait Arg: Sized {
    fn on(backend: Backend) -> impl Future<Output = Option<Self>>;
}

impl Arg for Backend {
    async fn on(backend: Backend) -> Option<Self> {
        Some(backend)
    }
}

impl Arg for Harness {
    async fn on(backend: Backend) -> Option<Self> {
        Harness::start(backend).await
    }
}

/// Run `test` on `backend` (skipped when its [`Arg`] is `None`).
pub async fn run<A: Arg, F: Future<Output = ()>>(backend: Backend, test: impl FnOnce(A) -> F) {
    if let Some(arg) = A::on(backend).await {
        test(arg).await;
    }
}

/// Declare each listed `async fn name(arg)` as two tests, `postgres_redis::name` and
/// `sqlite_memory::name`; `arg` is a [`Backend`] or a started [`Harness`] (see [`Arg`]).
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod postgres_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::common::run(super::Backend::PostgresRedis, super::$name).await;
                }
            )*
        }
        mod sqlite_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    crate::common::run(super::Backend::SqliteMemory, super::$name).await;
                }
            )*
        }
    };
}
