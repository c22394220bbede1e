//! Runtime integration tests, each run on Postgres + Redis and on SQLite + the in-memory
//! transport (so `cargo test` without services still runs the engine and worker): dispatch order per policy,
//! policy switches, Round Robin slicing, retries into the dead-letter queue, recovery after the
//! transport's keys are wiped, and a claim whose reply was lost.

use chrono::{DateTime, Utc};
use jobsched_core::JobSpec;
use jobsched_core::layer::{Layer, Layered};
use jobsched_core::policy::{PolicyKind, PolicySettings};
use jobsched_core::ports::{Event, Store, SystemClock, Transport};
use jobsched_core::{Job, JobStatus, NewJob};
use jobsched_jobs::{DataDir, JobContext, JobError, Registry, RunOutput};
use jobsched_runtime::{Runtime, RuntimeConfig};
use jobsched_store::testing::{TestDb, sleep_job};
use jobsched_testkit::poll;
use jobsched_transport::{DropKeys, MemoryTransport, RedisTransport};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

struct Env {
    db: TestDb,
    store: Arc<dyn Store>,
    transport: Arc<dyn Transport>,
    backend: Backend,
    data: tempfile::TempDir,
}

/// The transport behind [`Env::transport`], for wiping it.
enum Backend {
    Redis {
        redis: Arc<RedisTransport>,
        _keys: DropKeys,
    },
    Memory(MemoryTransport),
}

const REDIS_URL: &str = "redis://127.0.0.1:6379";

impl Env {
    /// Postgres and Redis; `None` (after saying why) when either is down outside CI.
    async fn postgres_redis() -> Option<Env> {
        let db = TestDb::postgres().await?;
        let prefix = format!("jobsched-rt-{}", uuid::Uuid::new_v4().simple());
        let redis = Arc::new(jobsched_testkit::required(
            "Redis",
            RedisTransport::connect(REDIS_URL, &prefix).await,
        )?);
        let backend = Backend::Redis {
            redis: redis.clone(),
            _keys: DropKeys::new(REDIS_URL, &prefix),
        };
        Some(Env::with(db, redis, backend).await)
    }

    /// SQLite and the in-memory transport: needs no service.
    async fn sqlite_memory() -> Env {
        let memory = MemoryTransport::new();
        let backend = Backend::Memory(memory.clone());
        Env::with(TestDb::sqlite().await, Arc::new(memory), backend).await
    }

    async fn with(db: TestDb, transport: Arc<dyn Transport>, backend: Backend) -> Env {
        Env {
            store: db.store().await,
            db,
            transport,
            backend,
            data: tempfile::tempdir().unwrap(),
        }
    }

    /// Forget everything the transport holds (a Redis `FLUSHALL` of this test's keys);
    /// returns how many entries were dropped.
    async fn wipe_transport(&self) -> u64 {
        match &self.backend {
            Backend::Redis { redis, .. } => redis.delete_all_keys().await.unwrap(),
            Backend::Memory(memory) => memory.clear() as u64,
        }
    }

    fn runtime(&self, id: &str, concurrency: u32) -> Runtime {
        Runtime {
            store: self.store.clone(),
            transport: self.transport.clone(),
            registry: Registry::builtin(),
            data_dir: DataDir::new(self.data.path()).unwrap(),
            clock: Arc::new(SystemClock),
            config: RuntimeConfig {
                worker_id: id.to_string(),
                concurrency,
                lease_ttl: Duration::from_secs(5),
                dispatch_ttl: Duration::from_secs(2),
                leader_ttl: Duration::from_secs(2),
                worker_ttl: Duration::from_secs(3),
                poll_interval: Duration::from_millis(500),
                backoff: jobsched_core::retry::Backoff {
                    base: Duration::from_millis(20),
                    cap: Duration::from_millis(50),
                },
                shutdown_grace: Duration::from_secs(5),
                ..RuntimeConfig::default()
            },
        }
    }

    async fn set_policy(&self, policy: PolicyKind, quantum_seconds: f64) {
        let s = PolicySettings {
            policy,
            quantum_seconds,
            ..PolicySettings::default()
        };
        self.store.set_policy(&s).await.unwrap();
        self.transport.set_policy(&s).await.unwrap();
    }

    async fn submit(&self, name: &str, priority: i64, est: f64, payload: Value) -> Job {
        let job = NewJob::new(JobSpec {
            name: name.into(),
            job_type: "sleep".into(),
            priority: Some(priority),
            estimated_duration: Some(est),
            payload: Some(payload),
            max_retries: Some(0),
        })
        .unwrap();
        self.store.insert(&job, Utc::now()).await.unwrap()
    }

    async fn insert(&self, job: &NewJob) -> Job {
        self.store.insert(job, Utc::now()).await.unwrap()
    }

    async fn all_jobs(&self) -> Vec<Job> {
        jobsched_store::testing::all_jobs(self.store.as_ref()).await
    }

    /// Poll until every job is terminal.
    async fn wait_all_terminal(&self, timeout: Duration) -> Vec<Job> {
        poll(timeout, || async {
            let jobs = self.all_jobs().await;
            let open: Vec<_> = jobs
                .iter()
                .filter(|j| !j.status.is_terminal())
                .map(|j| (&j.name, j.status))
                .collect();
            if open.is_empty() {
                Ok(jobs)
            } else {
                Err(format!("jobs not terminal: {open:?}"))
            }
        })
        .await
    }

    /// Poll until at least `n` jobs are COMPLETED.
    async fn wait_completed(&self, n: i64) {
        poll(Duration::from_secs(20), || async {
            let done = self.store.stats().await.unwrap().completed;
            (done >= n)
                .then_some(())
                .ok_or(format!("{done} of {n} jobs completed"))
        })
        .await
    }

    async fn cleanup(self) {
        if let Backend::Redis { redis, .. } = &self.backend {
            let _ = redis.delete_all_keys().await;
        }
        self.db.cleanup().await;
    }
}

/// Assert that `jobs` (in start order) started by priority, then by name (submission order).
fn in_priority_order<'a>(jobs: impl IntoIterator<Item = &'a Job>, what: &str) {
    let keys: Vec<(i16, &str)> = jobs
        .into_iter()
        .map(|j| (j.priority, j.name.as_str()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "{what}");
}

fn start_order(jobs: &[Job]) -> Vec<&Job> {
    let mut v: Vec<&Job> = jobs.iter().collect();
    v.sort_by_key(|j| j.started_at);
    v
}

/// Run a runtime until the returned token is cancelled.
fn start(rt: Runtime) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let s = stop.clone();
    let h = tokio::spawn(async move { jobsched_runtime::run(rt, s).await.unwrap() });
    (stop, h)
}

async fn run_backlog(
    env: &Env,
    concurrency: u32,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    start(env.runtime("w1", concurrency))
}

async fn priority_backlog_starts_in_exact_priority_order(env: Env) {
    env.set_policy(PolicyKind::Priority, 5.0).await;
    let prios = [5, 3, 9, 1, 3, 7, 2, 10, 1, 6, 4, 8, 2, 5, 9, 3, 1, 7, 6, 4];
    for (i, p) in prios.iter().enumerate() {
        env.submit(&format!("j{i:02}"), *p, 1.0, json!({"duration": 0.005}))
            .await;
    }
    let (stop, h) = run_backlog(&env, 1).await;
    let jobs = env.wait_all_terminal(Duration::from_secs(30)).await;
    stop.cancel();
    h.await.unwrap();
    assert!(jobs.iter().all(|j| j.status == JobStatus::Completed));
    in_priority_order(
        start_order(&jobs),
        "start order must be priority, then submission",
    );
    env.cleanup().await;
}

async fn sjf_backlog_starts_in_estimated_duration_order(env: Env) {
    env.set_policy(PolicyKind::Sjf, 5.0).await;
    let ests = [3.0, 0.5, 9.0, 0.1, 2.0, 0.5, 7.5, 1.0, 4.0, 0.2, 6.0, 0.1];
    for (i, e) in ests.iter().enumerate() {
        env.submit(&format!("j{i:02}"), 5, *e, json!({"duration": 0.005}))
            .await;
    }
    let (stop, h) = run_backlog(&env, 1).await;
    let jobs = env.wait_all_terminal(Duration::from_secs(30)).await;
    stop.cancel();
    h.await.unwrap();
    let started: Vec<(u64, String)> = start_order(&jobs)
        .iter()
        .map(|j| ((j.estimated_duration * 1000.0) as u64, j.name.clone()))
        .collect();
    let mut expected = started.clone();
    expected.sort();
    assert_eq!(started, expected);
    env.cleanup().await;
}

async fn policy_switch_mid_backlog_reorders_what_remains(env: Env) {
    switch_mid_backlog(&env, "default").await;
    env.cleanup().await;
}

/// The same in a named queue: its policy switch applies to its jobs not yet started.
async fn a_named_queue_switch_reorders_what_remains_in_it(env: Env) {
    switch_mid_backlog(&env, "reports").await;
    env.cleanup().await;
}

/// Submit 16 jobs to `queue` in the reverse of priority order, run them on one slot under
/// FCFS, switch the queue to Priority after three, and check both orders.
async fn switch_mid_backlog(env: &Env, queue: &str) {
    set_queue(env, queue, PolicySettings::default()).await;
    for i in 0..16 {
        submit_to(env, queue, &format!("j{i:02}"), 10 - (i % 10), 0.03).await;
    }
    let (stop, h) = run_backlog(env, 1).await;
    // Wait until a few have completed under FCFS, then switch.
    env.wait_completed(3).await;
    let switched_at: DateTime<Utc> = Utc::now();
    set_queue(
        env,
        queue,
        PolicySettings {
            policy: PolicyKind::Priority,
            ..Default::default()
        },
    )
    .await;
    let jobs = env.wait_all_terminal(Duration::from_secs(30)).await;
    stop.cancel();
    h.await.unwrap();
    assert!(jobs.iter().all(|j| j.queue == queue));
    let order = start_order(&jobs);
    let before: Vec<&str> = order
        .iter()
        .filter(|j| j.started_at.unwrap() < switched_at)
        .map(|j| j.name.as_str())
        .collect();
    // FCFS before the switch: submission order.
    let mut sorted_before = before.clone();
    sorted_before.sort();
    assert_eq!(before, sorted_before);
    // After the switch, skipping at most one job already handed to the idle slot, every start
    // follows priority order.
    let after: Vec<&&Job> = order
        .iter()
        .filter(|j| j.started_at.unwrap() >= switched_at)
        .skip(1)
        .collect();
    assert!(
        after.len() >= 8,
        "switch came too late to observe: {}",
        after.len()
    );
    in_priority_order(
        after.iter().map(|j| **j),
        "after the switch jobs must start in priority order",
    );
}

async fn round_robin_slices_a_long_job_and_runs_short_ones_between(env: Env) {
    let quantum = 0.15;
    env.set_policy(PolicyKind::RoundRobin, quantum).await;
    let long = env
        .submit("long", 5, 1.0, json!({"duration": 3.0 * quantum}))
        .await;
    let mut shorts = Vec::new();
    for i in 0..4 {
        shorts.push(
            env.submit(&format!("short{i}"), 5, 1.0, json!({"duration": 0.01}))
                .await,
        );
    }
    let (stop, h) = run_backlog(&env, 1).await;
    let jobs = env.wait_all_terminal(Duration::from_secs(30)).await;
    stop.cancel();
    h.await.unwrap();
    let long = jobs.iter().find(|j| j.id == long.id).unwrap();
    assert_eq!(long.status, JobStatus::Completed);
    assert_eq!(long.slices, 3, "a 3-quantum job takes 3 slices");
    assert_eq!(long.retry_count, 0, "slices do not count as retries");
    // Short jobs ran between the long job's slices: all finished before the long one did.
    for s in jobs.iter().filter(|j| j.name.starts_with("short")) {
        assert_eq!(s.slices, 1);
        assert!(
            s.completed_at.unwrap() < long.completed_at.unwrap(),
            "{} finished after the long job",
            s.name
        );
    }
    env.cleanup().await;
}

async fn failures_retry_then_dead_letter_without_exceeding_max_retries(env: Env) {
    env.set_policy(PolicyKind::Fcfs, 5.0).await;
    let job = typed(
        "always-fails",
        "sleep",
        json!({"duration": 0.0, "fail_probability": 1.0}),
        2,
    );
    let job = env.insert(&job).await;
    let bad = typed(
        "missing-file",
        "word_count",
        json!({"file_path": "nope.txt"}),
        3,
    );
    let bad = env.insert(&bad).await;
    let (stop, h) = run_backlog(&env, 2).await;
    let jobs = env.wait_all_terminal(Duration::from_secs(30)).await;
    let failed = jobs.iter().find(|j| j.id == job.id).unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.retry_count, 2, "retry_count stops at max_retries");
    assert_eq!(failed.slices, 3, "one run plus two retries");
    let missing = jobs.iter().find(|j| j.id == bad.id).unwrap();
    assert_eq!(missing.status, JobStatus::Failed);
    assert_eq!(missing.retry_count, 0, "a missing file is not retried");
    assert_eq!(missing.slices, 1);
    let dlq = env.store.dead_letters(10).await.unwrap();
    assert_eq!(dlq.len(), 2);
    // Re-run from the dead-letter queue: it runs again (and fails again, for good).
    assert_eq!(
        env.store
            .retry_dead_letter(job.id, Utc::now())
            .await
            .unwrap(),
        jobsched_core::ports::Update::Applied
    );
    env.transport
        .publish(jobsched_core::ports::Event::JobsAvailable)
        .await
        .unwrap();
    let j = poll(Duration::from_secs(20), || async {
        let j = env.store.get(job.id).await.unwrap().unwrap();
        if j.status == JobStatus::Failed && j.slices == 6 {
            Ok(j)
        } else {
            Err(format!("dead-letter re-run did not finish: {j:?}"))
        }
    })
    .await;
    assert_eq!(j.retry_count, 2);
    stop.cancel();
    h.await.unwrap();
    env.cleanup().await;
}

async fn wiped_transport_mid_run_loses_no_job(env: Env) {
    env.set_policy(PolicyKind::Priority, 5.0).await;
    for i in 0..60 {
        env.submit(
            &format!("j{i:02}"),
            1 + (i % 10),
            1.0,
            json!({"duration": 0.02}),
        )
        .await;
    }
    let (stop, h) = run_backlog(&env, 4).await;
    env.wait_completed(10).await;
    // Equivalent of FLUSHALL for this installation (the Redis here is shared with other
    // tests, so only this test's prefix is wiped).
    let deleted = env.wipe_transport().await;
    assert!(deleted > 0);
    let jobs = env.wait_all_terminal(Duration::from_secs(40)).await;
    assert!(
        jobs.iter().all(|j| j.status == JobStatus::Completed),
        "{jobs:?}"
    );
    // The leader rebuilds the policy key from the durable copy.
    poll(Duration::from_secs(10), || async {
        match env.transport.policy().await.unwrap() {
            Some(s) if s.policy == PolicyKind::Priority => Ok(()),
            other => Err(format!("policy key not rebuilt: {other:?}")),
        }
    })
    .await;
    stop.cancel();
    h.await.unwrap();
    env.cleanup().await;
}

async fn cancelled_jobs_never_run(env: Env) {
    env.set_policy(PolicyKind::Fcfs, 5.0).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(
            env.submit(&format!("j{i}"), 5, 1.0, json!({"duration": 0.01}))
                .await
                .id,
        );
    }
    for id in ids.iter().skip(5) {
        assert_eq!(
            env.store.cancel(*id, Utc::now()).await.unwrap(),
            jobsched_core::CancelOutcome::Cancelled
        );
    }
    let (stop, h) = run_backlog(&env, 2).await;
    let jobs = env.wait_all_terminal(Duration::from_secs(20)).await;
    stop.cancel();
    h.await.unwrap();
    for j in &jobs {
        if ids[5..].contains(&j.id) {
            assert_eq!(j.status, JobStatus::Cancelled);
            assert!(j.started_at.is_none());
        } else {
            assert_eq!(j.status, JobStatus::Completed);
        }
    }
    env.cleanup().await;
}

/// A job of `job_type` with `payload` and a retry budget of `max_retries`.
fn typed(name: &str, job_type: &str, payload: Value, max_retries: i64) -> NewJob {
    NewJob::new(JobSpec {
        name: name.into(),
        job_type: job_type.into(),
        payload: Some(payload),
        max_retries: Some(max_retries),
        ..JobSpec::default()
    })
    .unwrap()
}

/// A job type built from two functions, for tests: whether it is preemptible (asked by the
/// worker around the body) and its body.
struct TestType {
    name: &'static str,
    /// Run on a blocking thread (`true`) or as a task.
    blocking: bool,
    preemptible: fn() -> bool,
    body: Box<dyn Fn() -> Result<RunOutput, JobError> + Send + Sync>,
}

impl std::fmt::Debug for TestType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl jobsched_jobs::JobHandler for TestType {
    fn name(&self) -> &'static str {
        self.name
    }
    fn preemptible(&self) -> bool {
        (self.preemptible)()
    }
    fn blocking(&self) -> bool {
        self.blocking
    }
    fn default_timeout(&self) -> Duration {
        Duration::from_secs(60)
    }
    fn validate(&self, _: &Value, _: &DataDir) -> Vec<jobsched_jobs::FieldError> {
        Vec::new()
    }
    fn run(&self, _: &Value, _: &JobContext) -> Result<RunOutput, JobError> {
        (self.body)()
    }
}

/// Assert that `job` ended `status` after `retries` retries, its last error containing `needle`.
fn ended_with(job: &Job, status: JobStatus, retries: i32, needle: &str) {
    assert_eq!((job.status, job.retry_count), (status, retries), "{job:?}");
    let error = job.error_message.as_deref().unwrap_or_default();
    assert!(error.contains(needle), "`{needle}` not in {job:?}");
}

/// The job `id` among `jobs`.
fn by_id(jobs: &[Job], id: jobsched_core::JobId) -> &Job {
    jobs.iter()
        .find(|j| j.id == id)
        .unwrap_or_else(|| panic!("job {id} not found"))
}

/// Run every job to its end on one worker of one slot that also serves the `extra` types.
async fn one_slot_with(env: &Env, extra: impl IntoIterator<Item = TestType>) -> Vec<Job> {
    let mut rt = env.runtime("w1", 1);
    let mut registry = Registry::builtin();
    for t in extra {
        registry.register(Arc::new(t));
    }
    rt.registry = registry;
    let (stop, h) = start(rt);
    let jobs = env.wait_all_terminal(Duration::from_secs(30)).await;
    stop.cancel();
    h.await.unwrap();
    jobs
}

/// A job type that counts its runs and panics on the first `panics` of them.
fn flaky(panics: u32) -> TestType {
    let runs = std::sync::atomic::AtomicU32::new(0);
    TestType {
        name: "flaky",
        blocking: true,
        preemptible: || false,
        body: Box::new(move || {
            let run = runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if run < panics {
                panic!("boom {run}");
            }
            Ok(RunOutput::Done(json!({"runs": run + 1})))
        }),
    }
}

async fn a_panicking_body_is_a_retryable_failure_and_the_worker_keeps_going(env: Env) {
    env.set_policy(PolicyKind::Fcfs, 5.0).await;
    let job = env.insert(&typed("panics", "flaky", json!({}), 3)).await;
    let after = env
        .submit("after", 5, 1.0, json!({"duration": 0.001}))
        .await;
    let jobs = one_slot_with(&env, [flaky(2)]).await;
    let panicked = by_id(&jobs, job.id);
    ended_with(
        panicked,
        JobStatus::Completed,
        2,
        "job body panicked: boom 1",
    );
    assert_eq!(panicked.result, Some(json!({"runs": 3})));
    assert_eq!(by_id(&jobs, after.id).status, JobStatus::Completed);
    env.cleanup().await;
}

async fn a_panic_around_the_body_frees_the_slot_and_fails_the_attempt(env: Env) {
    // Round Robin: the worker asks the type whether it is preemptible, outside the body.
    env.set_policy(PolicyKind::RoundRobin, 5.0).await;
    // Its `preemptible()` panics: the worker calls it around the body, outside the body's own
    // `catch_unwind`; once as a blocking type, once as one run as a task.
    let panics_around = |name, blocking| TestType {
        name,
        blocking,
        preemptible: || panic!("broken handler"),
        body: Box::new(|| Ok(RunOutput::Done(json!({})))),
    };
    let mut ids = Vec::new();
    for (i, job_type) in ["panics_around", "panics_around_async"]
        .repeat(2)
        .iter()
        .enumerate()
    {
        let new = NewJob::new(JobSpec {
            name: format!("p{i}"),
            job_type: job_type.to_string(),
            max_retries: Some(1),
            ..JobSpec::default()
        })
        .unwrap();
        ids.push(env.store.insert(&new, Utc::now()).await.unwrap().id);
    }
    let after = env
        .submit("after", 5, 1.0, json!({"duration": 0.001}))
        .await;
    // One slot: had any panic jammed it, `after` would never run.
    let types = [
        panics_around("panics_around", true),
        panics_around("panics_around_async", false),
    ];
    let jobs = one_slot_with(&env, types).await;
    for id in ids {
        // One retry, then dead-lettered.
        ended_with(
            by_id(&jobs, id),
            JobStatus::Failed,
            1,
            "job run panicked: broken handler",
        );
    }
    assert_eq!(by_id(&jobs, after.id).status, JobStatus::Completed);
    env.cleanup().await;
}

async fn a_run_past_its_timeout_is_stopped_and_retried_by_its_budget(env: Env) {
    env.set_policy(PolicyKind::Fcfs, 5.0).await;
    let mut new = typed("stuck", "sleep", json!({"duration": 3600}), 1);
    new.timeout_seconds = Some(0.3);
    let stuck = env.insert(&new).await;
    let after = env
        .submit("after", 5, 1.0, json!({"duration": 0.001}))
        .await;
    let began = Instant::now();
    let (stop, h) = start(env.runtime("w1", 1));
    let jobs = env.wait_all_terminal(Duration::from_secs(30)).await;
    stop.cancel();
    h.await.unwrap();
    let took = began.elapsed();
    assert!(took < Duration::from_secs(20), "{took:?}");
    ended_with(
        by_id(&jobs, stuck.id),
        JobStatus::Failed,
        1,
        "timed out after 0.3 s",
    );
    assert_eq!(by_id(&jobs, after.id).status, JobStatus::Completed);
    env.cleanup().await;
}

async fn out_of_range_stored_quanta_neither_panic_nor_livelock(env: Env) {
    // Values stored before the bounds existed (or written around the API): clamped on use.
    for quantum in [1e300, 1e19, 1e-300] {
        env.set_policy(PolicyKind::RoundRobin, quantum).await;
        let job = env
            .submit(&format!("q{quantum:?}"), 5, 1.0, json!({"duration": 0.05}))
            .await;
        let (stop, h) = start(env.runtime("w1", 2));
        let done = poll(Duration::from_secs(20), || async {
            let j = env.store.get(job.id).await.unwrap().unwrap();
            if j.status.is_terminal() {
                Ok(j)
            } else {
                Err(format!("{} is {}", j.name, j.status))
            }
        })
        .await;
        stop.cancel();
        h.await.unwrap();
        assert_eq!(done.status, JobStatus::Completed, "{done:?}");
        // 0.05 s at a quantum of at least 0.01 s: a handful of slices, not thousands.
        assert!(done.slices <= 20, "{quantum}: {} slices", done.slices);
    }
    env.cleanup().await;
}

async fn a_file_job_stopped_by_shutdown_is_handed_back_without_a_retry(env: Env) {
    env.set_policy(PolicyKind::Fcfs, 5.0).await;
    // Zeros to read for far longer than the test runs (sparse: no disk used).
    let big = std::fs::File::create(env.data.path().join("big.txt")).unwrap();
    big.set_len(200 << 30).unwrap();
    let job = typed("count", "word_count", json!({"file_path": "big.txt"}), 0);
    let job = env.insert(&job).await;
    let mut rt = env.runtime("w1", 1);
    rt.config.shutdown_grace = Duration::from_millis(200);
    let (stop, h) = start(rt);
    poll(Duration::from_secs(20), || async {
        let j = env.store.get(job.id).await.unwrap().unwrap();
        (j.status == JobStatus::Running)
            .then_some(())
            .ok_or(format!("{}", j.status))
    })
    .await;
    let began = Instant::now();
    stop.cancel();
    h.await.unwrap();
    let took = began.elapsed();
    assert!(took < Duration::from_secs(10), "stopped after {took:?}");
    let j = env.store.get(job.id).await.unwrap().unwrap();
    // With max_retries 0 a counted failure would have dead-lettered it.
    assert_eq!(j.status, JobStatus::Pending, "{j:?}");
    assert_eq!(j.retry_count, 0, "{j:?}");
    env.cleanup().await;
}

/// Three workers (one of them also the engine leader) claim from one backlog at once: every
/// job runs exactly once (attempt 1, one slice, no retry).
async fn workers_claiming_one_backlog_run_each_job_exactly_once(env: Env) {
    let jobs: Vec<NewJob> = (0..300)
        .map(|i| sleep_job(&format!("c{i:03}"), json!({"duration": 0.005}), 3))
        .collect();
    env.store.insert_many(&jobs, Utc::now()).await.unwrap();
    let mut runs = Vec::new();
    for id in ["c1", "c2", "c3"] {
        let mut rt = env.runtime(id, 8);
        rt.config.run_engine = id == "c1";
        runs.push(start(rt));
    }
    let done = env.wait_all_terminal(Duration::from_secs(60)).await;
    for (stop, h) in runs {
        stop.cancel();
        h.await.unwrap();
    }
    assert_eq!(done.len(), 300);
    for j in &done {
        assert_eq!(j.status, JobStatus::Completed, "{j:?}");
        assert_eq!((j.attempt, j.slices, j.retry_count), (1, 1, 0), "{j:?}");
        assert!(
            j.started_at.is_some() && j.completed_at >= j.started_at,
            "{j:?}"
        );
    }
    env.cleanup().await;
}

/// Loses the reply of the first exchange (in the test below it claims the jobs waiting before
/// the worker starts): the exchange commits and the worker is told the connection broke, as
/// when Postgres crashes between commit and reply.
struct LoseFirstClaimReply {
    armed: std::sync::atomic::AtomicBool,
}

impl Layer for LoseFirstClaimReply {
    async fn around<T: Send>(
        &self,
        op: &'static str,
        call: impl std::future::Future<Output = jobsched_core::Result<T>> + Send,
    ) -> jobsched_core::Result<T> {
        let result = call.await;
        if op == "exchange"
            && result.is_ok()
            && self.armed.swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(jobsched_core::Error::Interrupted {
                component: "postgres",
                source: "connection lost after the commit (injected by the test)".into(),
            });
        }
        result
    }
}

async fn a_claim_whose_reply_was_lost_is_handed_back_at_once_without_a_retry(env: Env) {
    let jobs: Vec<NewJob> = (0..4)
        .map(|i| sleep_job(&format!("l{i}"), json!({"duration": 0.01}), 3))
        .collect();
    env.store.insert_many(&jobs, Utc::now()).await.unwrap();
    let mut rt = env.runtime("w1", 4);
    let lossy = Arc::new(Layered::new(
        env.store.clone(),
        LoseFirstClaimReply { armed: true.into() },
    ));
    rt.store = lossy.clone();
    // Far longer than the test waits: the jobs must not wait for the rescuer.
    rt.config.lease_ttl = Duration::from_secs(120);
    let (stop, h) = start(rt);
    let done = env.wait_all_terminal(Duration::from_secs(20)).await;
    stop.cancel();
    h.await.unwrap();
    assert!(
        !lossy
            .layer()
            .armed
            .load(std::sync::atomic::Ordering::SeqCst),
        "the fault was injected"
    );
    for j in &done {
        assert_eq!(j.status, JobStatus::Completed, "{j:?}");
        // Claimed twice (the lost claim, then again after the hand-back), run once, and the
        // lost claim burned no retry.
        assert_eq!((j.attempt, j.retry_count), (2, 0), "{j:?}");
        assert_eq!(j.error_message, None, "{j:?}");
    }
    env.cleanup().await;
}

async fn scheduled_jobs_start_at_their_time_and_not_before(env: Env) {
    env.set_policy(PolicyKind::Fcfs, 5.0).await;
    let now = Utc::now();
    let mut ids = Vec::new();
    // Submitted in the order late, sooner, now; expected to start now, sooner, late.
    for (name, delay_ms) in [("late", Some(1_500)), ("sooner", Some(700)), ("now", None)] {
        let job = NewJob {
            run_at: delay_ms.map(|ms| now + chrono::Duration::milliseconds(ms)),
            ..sleep_job(name, json!({"duration": 0.01}), 0)
        };
        ids.push(env.store.insert(&job, now).await.unwrap().id);
    }
    assert_eq!(env.store.stats().await.unwrap().delayed, 2);
    let (stop, h) = run_backlog(&env, 1).await;
    let jobs = env.wait_all_terminal(Duration::from_secs(20)).await;
    stop.cancel();
    h.await.unwrap();
    let order: Vec<&str> = start_order(&jobs).iter().map(|j| j.name.as_str()).collect();
    assert_eq!(order, ["now", "sooner", "late"]);
    for j in &jobs {
        assert_eq!(j.status, JobStatus::Completed, "{}", j.name);
        let started = j.started_at.expect("started");
        assert!(
            started >= j.run_at,
            "{} started at {started}, before its run_at {}",
            j.name,
            j.run_at
        );
    }
    assert_eq!(env.store.stats().await.unwrap().delayed, 0);
    env.cleanup().await;
}

async fn the_leader_deletes_finished_jobs_past_their_retention_and_keeps_dead_letters(env: Env) {
    env.set_policy(PolicyKind::Fcfs, 5.0).await;
    for i in 0..5 {
        env.submit(&format!("ok{i}"), 5, 1.0, json!({"duration": 0.001}))
            .await;
    }
    let dead = env
        .submit(
            "dead",
            5,
            1.0,
            json!({"duration": 0, "fail_probability": 1}),
        )
        .await;
    let cancelled = env
        .submit("cancelled", 5, 1.0, json!({"duration": 0}))
        .await;
    env.store.cancel(cancelled.id, Utc::now()).await.unwrap();
    let mut rt = env.runtime("w1", 2);
    rt.config.retention_completed = Some(Duration::from_millis(300));
    rt.config.retention_failed = Some(Duration::from_millis(300));
    let (stop, h) = start(rt);
    // Everything but the dead letter goes once it is older than its retention.
    let left = poll(Duration::from_secs(20), || async {
        let jobs = env.all_jobs().await;
        match jobs.as_slice() {
            [only] if only.id == dead.id => Ok(jobs),
            _ => Err(format!(
                "jobs left: {:?}",
                jobs.iter().map(|j| (&j.name, j.status)).collect::<Vec<_>>()
            )),
        }
    })
    .await;
    stop.cancel();
    h.await.unwrap();
    assert_eq!(left[0].status, JobStatus::Failed);
    let stats = env.store.stats().await.unwrap();
    assert_eq!(
        (
            stats.total_jobs,
            stats.failed,
            stats.completed,
            stats.cancelled
        ),
        (1, 1, 0, 0),
        "the counts follow the deletes"
    );
    assert_eq!(env.store.dead_letter_count().await.unwrap(), 1);
    env.cleanup().await;
}

async fn a_job_retries_after_its_own_backoff(env: Env) {
    env.set_policy(PolicyKind::Fcfs, 5.0).await;
    // The installation's backoff here is 20–50 ms; this job asks for 2 s (jittered to 1–2 s).
    let new = NewJob {
        retry_backoff: Some(jobsched_core::RetryBackoff {
            base_seconds: 2.0,
            cap_seconds: 2.0,
        }),
        ..sleep_job(
            "slow-retry",
            json!({"duration": 0, "fail_probability": 1}),
            1,
        )
    };
    let id = env.store.insert(&new, Utc::now()).await.unwrap().id;
    let (stop, h) = run_backlog(&env, 1).await;
    let retried = poll(Duration::from_secs(20), || async {
        let j = env.store.get(id).await.unwrap().unwrap();
        (j.retry_count == 1)
            .then_some(j.clone())
            .ok_or(format!("{:?}, retry_count {}", j.status, j.retry_count))
    })
    .await;
    let seen = Utc::now();
    assert_eq!(retried.retry_backoff, new.retry_backoff);
    // Failed within the last moment; due at least 1 s after that.
    assert!(
        retried.run_at - seen > chrono::Duration::milliseconds(700),
        "run_at {} is not the job's own backoff after {seen}",
        retried.run_at
    );
    let done = env.wait_all_terminal(Duration::from_secs(20)).await;
    stop.cancel();
    h.await.unwrap();
    assert_eq!(done[0].status, JobStatus::Failed);
    assert!(done[0].started_at.unwrap() >= retried.run_at);
    env.cleanup().await;
}

async fn a_running_job_cancelled_stops_and_never_completes(env: Env) {
    env.set_policy(PolicyKind::Fcfs, 5.0).await;
    let told = env.submit("told", 5, 1.0, json!({"duration": 60})).await;
    let untold = env.submit("untold", 5, 1.0, json!({"duration": 60})).await;
    let (stop, h) = run_backlog(&env, 2).await;
    poll(Duration::from_secs(20), || async {
        let s = env.store.stats().await.unwrap();
        (s.running == 2)
            .then_some(())
            .ok_or(format!("{} running", s.running))
    })
    .await;
    // One cancel comes with the API's message to the workers, the other without (the worker
    // then finds out when its lease renewal fails, every third of the 5 s lease here).
    for (job, tell) in [(&told, true), (&untold, false)] {
        assert_eq!(
            env.store.cancel(job.id, Utc::now()).await.unwrap(),
            jobsched_core::CancelOutcome::Stopping
        );
        if tell {
            env.transport
                .publish(Event::Cancelled(job.id))
                .await
                .unwrap();
        }
    }
    // Both slots come free long before the 60 s bodies would end: two new jobs run at once.
    let a = env.submit("a", 5, 1.0, json!({"duration": 2})).await;
    let b = env.submit("b", 5, 1.0, json!({"duration": 2})).await;
    poll(Duration::from_secs(20), || async {
        let (a, b) = (
            env.store.get(a.id).await.unwrap().unwrap(),
            env.store.get(b.id).await.unwrap().unwrap(),
        );
        (a.status == JobStatus::Running && b.status == JobStatus::Running)
            .then_some(())
            .ok_or(format!("{:?} {:?}", a.status, b.status))
    })
    .await;
    stop.cancel();
    h.await.unwrap();
    for id in [told.id, untold.id] {
        let j = env.store.get(id).await.unwrap().unwrap();
        assert_eq!(
            (j.status, j.result),
            (JobStatus::Cancelled, None),
            "{}",
            j.name
        );
    }
    env.cleanup().await;
}

/// A schedule named `name` that fires every second, enqueuing a sleep of `duration` seconds.
fn every_second(
    name: &str,
    duration: f64,
    overlap: jobsched_core::schedule::Overlap,
) -> jobsched_core::schedule::Schedule {
    let now = Utc::now();
    let when = jobsched_core::schedule::Cron::parse("* * * * * *", "UTC").unwrap();
    jobsched_core::schedule::Schedule {
        name: name.into(),
        next_fire_at: when.next_after(now),
        when,
        job: NewJob::new(JobSpec {
            name: name.into(),
            job_type: "sleep".into(),
            payload: Some(json!({ "duration": duration })),
            ..JobSpec::default()
        })
        .unwrap(),
        overlap,
        paused: false,
        catch_up: true,
        last_fire_at: None,
        last_job_id: None,
        created_at: now,
        updated_at: now,
        managed_by: None,
    }
}

/// A schedule that fires every second, on two engines where the first leader stops midway:
/// the new leader goes on, and no fire time makes two jobs.
async fn a_schedule_fires_once_per_time_across_a_leader_change(env: Env) {
    env.set_policy(PolicyKind::Fcfs, 5.0).await;
    let tick = every_second("tick", 0.0, jobsched_core::schedule::Overlap::Allow);
    assert!(env.store.create_schedule(&tick).await.unwrap());
    let count = || async { env.store.stats().await.unwrap().total_jobs };
    let (stop_a, a) = start(env.runtime("a", 1));
    poll(Duration::from_secs(20), || async {
        let n = count().await;
        (n >= 3).then_some(()).ok_or(format!("{n} fires"))
    })
    .await;
    let (stop_b, b) = start(env.runtime("b", 1));
    stop_a.cancel();
    a.await.unwrap();
    let at_handover = count().await;
    poll(Duration::from_secs(30), || async {
        let n = count().await;
        (n >= at_handover + 3).then_some(()).ok_or(format!(
            "{n} fires, {at_handover} before the leader stopped"
        ))
    })
    .await;
    env.store.delete_schedule("tick").await.unwrap();
    stop_b.cancel();
    b.await.unwrap();
    // One job per fire second: no two jobs were created in the same second's fire.
    let mut created: Vec<_> = env.all_jobs().await.iter().map(|j| j.created_at).collect();
    created.sort();
    for pair in created.windows(2) {
        assert!(
            pair[1] - pair[0] >= chrono::Duration::milliseconds(300),
            "two jobs for one fire: {pair:?}"
        );
    }
    env.cleanup().await;
}

/// `overlap: skip`: while the last fire's job runs, fires enqueue nothing.
async fn a_schedule_skips_fires_while_its_last_job_runs(env: Env) {
    env.set_policy(PolicyKind::Fcfs, 5.0).await;
    let s = every_second("slow", 2.5, jobsched_core::schedule::Overlap::Skip);
    assert!(env.store.create_schedule(&s).await.unwrap());
    let (stop, h) = start(env.runtime("w", 4));
    poll(Duration::from_secs(30), || async {
        let done = env.store.stats().await.unwrap().completed;
        (done >= 2).then_some(()).ok_or(format!("{done} completed"))
    })
    .await;
    env.store.delete_schedule("slow").await.unwrap();
    stop.cancel();
    h.await.unwrap();
    // Never two of its jobs open at once, although slots were free and it fired every second.
    let jobs = env.all_jobs().await;
    for a in &jobs {
        for b in &jobs {
            if a.id < b.id {
                let (Some(a_end), Some(b_start)) = (a.completed_at, b.started_at) else {
                    continue;
                };
                assert!(
                    b_start >= a_end,
                    "{} started at {b_start}, before {} ended at {a_end}",
                    b.name,
                    a.name
                );
            }
        }
    }
    env.cleanup().await;
}

/// Set queue `name`'s settings as the API does (durable copy, then the transport's).
async fn set_queue(env: &Env, name: &str, settings: PolicySettings) {
    jobsched_core::queue::apply(&*env.store, &*env.transport, name, &settings)
        .await
        .unwrap();
}

/// Submit a sleep of `duration` seconds to `queue` (created as the API does on first use).
async fn submit_to(env: &Env, queue: &str, name: &str, priority: i64, duration: f64) -> Job {
    jobsched_core::queue::ensure(&*env.store, &*env.transport, queue)
        .await
        .unwrap();
    let mut job = NewJob::new(JobSpec {
        name: name.into(),
        job_type: "sleep".into(),
        priority: Some(priority),
        estimated_duration: Some(1.0),
        payload: Some(json!({ "duration": duration })),
        max_retries: Some(0),
    })
    .unwrap();
    job.queue = queue.into();
    env.store.insert(&job, Utc::now()).await.unwrap()
}

/// Two queues with backlogs: each starts its jobs in its own policy's order, the slots are
/// shared 3 : 1 by weight while both have work, and a paused queue starts nothing until it
/// is resumed.
async fn queues_keep_their_own_order_and_share_slots_by_weight(env: Env) {
    set_queue(
        &env,
        "hi",
        PolicySettings {
            policy: PolicyKind::Priority,
            weight: 3,
            ..Default::default()
        },
    )
    .await;
    set_queue(
        &env,
        "held",
        PolicySettings {
            paused: true,
            ..Default::default()
        },
    )
    .await;
    for i in 0..40 {
        submit_to(&env, "hi", &format!("hi{i:02}"), 10 - (i % 10), 0.01).await;
        submit_to(&env, "default", &format!("lo{i:02}"), 5, 0.01).await;
    }
    for i in 0..3 {
        submit_to(&env, "held", &format!("held{i}"), 5, 0.0).await;
    }
    let (stop, h) = start(env.runtime("w", 2));
    env.wait_completed(80).await;
    let jobs = env.all_jobs().await;
    assert!(
        jobs.iter()
            .filter(|j| j.queue == "held")
            .all(|j| j.status == JobStatus::Pending),
        "a paused queue's job started"
    );
    let order = start_order(&jobs);
    // Jobs claimed by one exchange share a start time: within it they are in the policy's
    // order, so ties are broken by each queue's policy key.
    let mut hi: Vec<_> = order
        .iter()
        .filter(|j| j.queue == "hi")
        .map(|j| (j.started_at, j.priority, j.name.as_str()))
        .collect();
    hi.sort();
    let hi: Vec<(i16, &str)> = hi.into_iter().map(|(_, p, n)| (p, n)).collect();
    let mut sorted = hi.clone();
    sorted.sort();
    assert_eq!(hi, sorted, "queue `hi` runs in priority order");
    let mut lo: Vec<_> = order
        .iter()
        .filter(|j| j.queue == "default")
        .map(|j| (j.started_at, j.name.as_str()))
        .collect();
    lo.sort();
    let lo: Vec<&str> = lo.into_iter().map(|(_, n)| n).collect();
    let mut sorted = lo.clone();
    sorted.sort();
    assert_eq!(lo, sorted, "queue `default` runs in submission order");
    // While both had work (the first 40 starts), `hi` got about three of every four slots.
    let hi_share = order.iter().take(40).filter(|j| j.queue == "hi").count();
    assert!(
        (25..=35).contains(&hi_share),
        "{hi_share} of the first 40 starts were `hi` (weight 3 against 1)"
    );
    set_queue(&env, "held", PolicySettings::default()).await;
    env.wait_all_terminal(Duration::from_secs(20)).await;
    stop.cancel();
    h.await.unwrap();
    env.cleanup().await;
}

/// A worker started with `queues: [only]` takes jobs of that queue alone.
async fn a_worker_serves_only_its_queues(env: Env) {
    for i in 0..4 {
        submit_to(&env, "mine", &format!("m{i}"), 5, 0.0).await;
        submit_to(&env, "theirs", &format!("t{i}"), 5, 0.0).await;
    }
    let mut rt = env.runtime("picky", 2);
    rt.config.queues = Some(vec!["mine".into()]);
    let (stop, h) = start(rt);
    env.wait_completed(4).await;
    // One more job of its own, announced: the wake-up that has the worker claim it would
    // have it claim the other queue's jobs too, were it serving that queue.
    submit_to(&env, "mine", "m-last", 5, 0.0).await;
    env.transport
        .publish(jobsched_core::ports::Event::JobsAvailable)
        .await
        .unwrap();
    env.wait_completed(5).await;
    let jobs = env.all_jobs().await;
    stop.cancel();
    h.await.unwrap();
    for j in &jobs {
        let expected = if j.queue == "mine" {
            JobStatus::Completed
        } else {
            JobStatus::Pending
        };
        assert_eq!(j.status, expected, "{} in queue {}", j.name, j.queue);
    }
    env.cleanup().await;
}

/// A queue limited to 2 running jobs, served by two workers with 4 slots each: never more
/// than 2 of its jobs run at once, and all of them finish.
async fn a_queue_never_runs_more_than_its_concurrency_limit(env: Env) {
    set_queue(
        &env,
        "lim",
        PolicySettings {
            concurrency_limit: Some(2),
            ..Default::default()
        },
    )
    .await;
    for i in 0..8 {
        submit_to(&env, "lim", &format!("l{i}"), 5, 0.2).await;
    }
    // The store's own count of the queue's SCHEDULED and RUNNING jobs, sampled all along (one
    // clock: the workers' timestamps are taken on two clocks and before the claim's lock).
    let sampling = CancellationToken::new();
    let sampler = {
        let store = env.store.clone();
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let mut most = 0;
            while !sampling.is_cancelled() {
                let counts = store.queue_counts().await.unwrap();
                if let Some((_, c)) = counts.iter().find(|(q, _)| q == "lim") {
                    most = most.max(c.running);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            most
        })
    };
    let (stop_a, a) = start(env.runtime("a", 4));
    let (stop_b, b) = start(env.runtime("b", 4));
    let jobs = env.wait_all_terminal(Duration::from_secs(30)).await;
    sampling.cancel();
    let most = sampler.await.unwrap();
    stop_a.cancel();
    stop_b.cancel();
    a.await.unwrap();
    b.await.unwrap();
    assert!(jobs.iter().all(|j| j.status == JobStatus::Completed));
    assert_eq!(most, 2, "at most 2 at once, and the limit was used");
    env.cleanup().await;
}

/// A job type written on the SDK's `Handler`: its progress and log lines reach the store (the
/// last ones before the outcome), and only a worker serving a type takes its jobs: a worker
/// without it leaves them PENDING, one with it runs them.
async fn sdk_handlers_report_progress_and_logs_and_workers_take_only_their_types(env: Env) {
    use jobsched_jobs::{Ctx, Handler, Typed};

    #[derive(serde::Deserialize, schemars::JsonSchema)]
    struct Steps {
        steps: u32,
    }
    struct Stepper;
    impl Handler for Stepper {
        type Payload = Steps;
        const NAME: &'static str = "stepper";
        async fn run(&self, ctx: Ctx, p: Steps) -> Result<Value, JobError> {
            for i in 1..=p.steps {
                tokio::time::sleep(Duration::from_millis(2)).await;
                ctx.info(format!("step {i} of try {}", ctx.attempt()));
                ctx.progress(f64::from(i) / f64::from(p.steps), format!("step {i}"));
            }
            Ok(json!({"steps": p.steps, "job": ctx.job_id().to_string()}))
        }
    }

    let job = env
        .insert(&typed("s", "stepper", json!({"steps": 5}), 0))
        .await;
    // A stock worker does not serve `stepper`: it registers its own types and leaves the job.
    let (stop_a, a) = start(env.runtime("stock", 2));
    let stock_types = poll(Duration::from_secs(10), || async {
        let types = env.store.job_types().await.unwrap();
        if types.iter().any(|t| t.name == "sleep") {
            Ok(types)
        } else {
            Err(format!("types registered so far: {types:?}"))
        }
    })
    .await;
    assert!(stock_types.iter().all(|t| t.name != "stepper"));
    let sleeper = env
        .submit("after", 5, 0.01, json!({"duration": 0.01}))
        .await;
    env.wait_completed(1).await;
    let still = env.store.get(job.id).await.unwrap().unwrap();
    assert_eq!(
        still.status,
        JobStatus::Pending,
        "the stock worker took a job it cannot run"
    );
    assert_eq!(
        env.store.get(sleeper.id).await.unwrap().unwrap().status,
        JobStatus::Completed
    );
    // A worker serving it runs it; its notes are kept.
    let mut rt = env.runtime("custom", 2);
    let mut registry = Registry::new();
    registry.register(Arc::new(Typed::new(Stepper)));
    rt.registry = registry;
    let (stop_b, b) = start(rt);
    let done = env.wait_all_terminal(Duration::from_secs(30)).await;
    stop_a.cancel();
    stop_b.cancel();
    a.await.unwrap();
    b.await.unwrap();
    let ran = done.iter().find(|j| j.id == job.id).unwrap();
    assert_eq!(ran.status, JobStatus::Completed, "{:?}", ran.error_message);
    assert_eq!(ran.result.as_ref().unwrap()["job"], job.id.to_string());
    let p = env.store.progress(job.id).await.unwrap().unwrap();
    assert_eq!(
        (p.fraction, p.message.as_deref(), p.attempt),
        (1.0, Some("step 5"), 1)
    );
    let logs = env.store.logs(job.id, None).await.unwrap();
    assert_eq!(logs.len(), 1);
    let lines: Vec<&str> = logs[0].lines.iter().map(|l| l.message.as_str()).collect();
    assert_eq!(
        lines,
        (1..=5)
            .map(|i| format!("step {i} of try 1"))
            .collect::<Vec<_>>()
    );
    let types = env.store.job_types().await.unwrap();
    let stepper = types.iter().find(|t| t.name == "stepper").unwrap();
    assert_eq!(stepper.registered_by, "custom");
    assert_eq!(stepper.schema["required"], json!(["steps"]));
    env.cleanup().await;
}

/// Every test above runs twice: on Postgres + Redis (skipped outside CI when either is down)
/// and on SQLite + the in-memory transport (needs no service).
macro_rules! dispatch_suite {
    ($($name:ident),* $(,)?) => {
        mod postgres_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(env) = super::Env::postgres_redis().await else {
                        return;
                    };
                    super::$name(env).await;
                }
            )*
        }
        mod sqlite_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Env::sqlite_memory().await).await;
                }
            )*
        }
    };
}

dispatch_suite!(
    priority_backlog_starts_in_exact_priority_order,
    sjf_backlog_starts_in_estimated_duration_order,
    policy_switch_mid_backlog_reorders_what_remains,
    a_named_queue_switch_reorders_what_remains_in_it,
    round_robin_slices_a_long_job_and_runs_short_ones_between,
    failures_retry_then_dead_letter_without_exceeding_max_retries,
    wiped_transport_mid_run_loses_no_job,
    cancelled_jobs_never_run,
    a_panicking_body_is_a_retryable_failure_and_the_worker_keeps_going,
    a_panic_around_the_body_frees_the_slot_and_fails_the_attempt,
    a_run_past_its_timeout_is_stopped_and_retried_by_its_budget,
    out_of_range_stored_quanta_neither_panic_nor_livelock,
    a_file_job_stopped_by_shutdown_is_handed_back_without_a_retry,
    workers_claiming_one_backlog_run_each_job_exactly_once,
    a_claim_whose_reply_was_lost_is_handed_back_at_once_without_a_retry,
    scheduled_jobs_start_at_their_time_and_not_before,
    the_leader_deletes_finished_jobs_past_their_retention_and_keeps_dead_letters,
    a_job_retries_after_its_own_backoff,
    a_running_job_cancelled_stops_and_never_completes,
    a_schedule_fires_once_per_time_across_a_leader_change,
    a_schedule_skips_fires_while_its_last_job_runs,
    queues_keep_their_own_order_and_share_slots_by_weight,
    a_worker_serves_only_its_queues,
    a_queue_never_runs_more_than_its_concurrency_limit,
    sdk_handlers_report_progress_and_logs_and_workers_take_only_their_types,
);
