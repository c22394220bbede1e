//! Tests that run the real `jobsched` binary as separate processes against real Postgres and
//! Redis: a mixed workload over two workers, kill -9 of a worker and of the engine leader,
//! SIGTERM, and `jobsched migrate`.

use chrono::Utc;
use jobsched_core::JobSpec;
use jobsched_core::policy::{PolicyKind, PolicySettings};
use jobsched_core::ports::{Event, Store};
use jobsched_core::ports::{EventBus as _, Settings as _};
use jobsched_core::{Job, JobStatus, NewJob};
use jobsched_store::testing::TestDb;
use jobsched_testkit::{Children, free_port, poll, required};
use jobsched_transport::RedisTransport;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_jobsched");

struct Env {
    redis_url: String,
    db: TestDb,
    store: Arc<dyn Store>,
    redis: RedisTransport,
    prefix: String,
    data: tempfile::TempDir,
    children: Children,
}

impl Env {
    async fn new() -> Option<Env> {
        Env::with_redis("redis://127.0.0.1:6379").await
    }

    async fn with_redis(redis_url: &str) -> Option<Env> {
        let db = TestDb::postgres().await?;
        let store = db.store().await;
        let prefix = format!("jobsched-proc-{}", uuid::Uuid::new_v4().simple());
        let redis = required("Redis", RedisTransport::connect(redis_url, &prefix).await)?;
        Some(Env {
            redis_url: redis_url.to_string(),
            db,
            store,
            redis,
            prefix,
            data: tempfile::tempdir().unwrap(),
            children: Children(Vec::new()),
        })
    }

    /// Start `jobsched worker`; returns its index in `children`.
    fn spawn_worker(&mut self, id: &str, concurrency: u32, extra: &[(&str, &str)]) -> usize {
        let mut cmd = Command::new(BIN);
        cmd.arg("worker")
            .env("JOBSCHED_DATABASE_URL", self.db.url())
            .env("JOBSCHED_REDIS_URL", &self.redis_url)
            .env("JOBSCHED_REDIS_PREFIX", &self.prefix)
            .env("JOBSCHED_DATA_DIR", self.data.path())
            .env("JOBSCHED_WORKER_ID", id)
            .env("JOBSCHED_WORKER_CONCURRENCY", concurrency.to_string())
            .env("JOBSCHED_LEASE_TTL", "3")
            .env("JOBSCHED_DISPATCH_TTL", "10")
            .env("JOBSCHED_LEADER_TTL", "2")
            .env("JOBSCHED_WORKER_TTL", "2")
            .env("JOBSCHED_BACKOFF_BASE", "0.05")
            .env("JOBSCHED_BACKOFF_CAP", "0.2")
            .env("JOBSCHED_METRICS_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in extra {
            cmd.env(k, v);
        }
        self.children
            .0
            .push(cmd.spawn().expect("spawn jobsched worker"));
        self.children.0.len() - 1
    }

    async fn set_policy(&self, policy: PolicyKind) {
        let s = PolicySettings {
            policy,
            ..PolicySettings::default()
        };
        self.store.set_policy(&s).await.unwrap();
        self.redis.set_policy(&s).await.unwrap();
    }

    async fn submit_many(&self, jobs: &[NewJob]) {
        for chunk in jobs.chunks(500) {
            self.store.insert_many(chunk, Utc::now()).await.unwrap();
        }
        self.redis.publish(Event::JobsAvailable).await.unwrap();
    }

    async fn all_jobs(&self) -> Vec<Job> {
        jobsched_store::testing::all_jobs(self.store.as_ref()).await
    }

    async fn wait_until<F: Fn(&[Job]) -> bool>(
        &self,
        timeout: Duration,
        what: &str,
        f: F,
    ) -> Vec<Job> {
        let deadline = Instant::now() + timeout;
        loop {
            let jobs = self.all_jobs().await;
            if f(&jobs) {
                return jobs;
            }
            if Instant::now() > deadline {
                let mut counts = std::collections::BTreeMap::new();
                for j in &jobs {
                    *counts.entry(j.status).or_insert(0) += 1;
                }
                panic!("timed out after {timeout:?} waiting for {what}; states: {counts:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until every job has ended, and assert that each one COMPLETED.
    async fn all_completed(&self, timeout: Duration, what: &str) -> Vec<Job> {
        let done = self.wait_until(timeout, what, all_terminal).await;
        let not = done.iter().find(|j| j.status != JobStatus::Completed);
        assert!(not.is_none(), "{what}: a job did not complete: {not:?}");
        done
    }

    async fn cleanup(self) {
        drop(self.children);
        let _ = self.redis.delete_all_keys().await;
        self.db.cleanup().await;
    }
}

/// Each named `async fn(&mut Env)` as a `#[tokio::test]` on a fresh [`Env`] (skipped where
/// Postgres or Redis is missing), cleaned up after it passes.
macro_rules! on_env {
    ($($name:ident),* $(,)?) => {
        mod on_env {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(mut env) = super::Env::new().await {
                        super::$name(&mut env).await;
                        env.cleanup().await;
                    }
                }
            )*
        }
    };
}

on_env!(
    thousand_mixed_jobs_over_two_worker_processes,
    kill_9_of_a_worker_mid_run_loses_no_job,
    kill_9_of_the_engine_leader_hands_over,
    sigterm_lets_in_flight_jobs_finish_and_exits_zero,
    sigterm_hands_back_jobs_that_outlive_the_grace_period,
    worker_metrics_count_the_jobs_it_ran,
);

fn all_terminal(jobs: &[Job]) -> bool {
    !jobs.is_empty() && jobs.iter().all(|j| j.status.is_terminal())
}

fn sleep_job(name: &str, duration: f64) -> NewJob {
    NewJob::new(JobSpec {
        name: name.into(),
        job_type: "sleep".into(),
        payload: Some(json!({ "duration": duration })),
        max_retries: Some(3),
        ..JobSpec::default()
    })
    .unwrap()
}

/// A file of the original system's samples: beside the checkout (`../shared`), or where this
/// machine keeps them (the unit tests of `jobsched-jobs` read the same place).
fn sample(name: &str) -> PathBuf {
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/seed/sample_data");
    let dir = if beside.is_dir() {
        beside
    } else {
        PathBuf::from("/work/shared/seed/sample_data")
    };
    dir.join(name)
}

/// `wc -w -l -m` of a file, as (words, lines, chars).
fn wc(path: &Path) -> (u64, u64, u64) {
    let out = Command::new("wc")
        .env("LC_ALL", "C.UTF-8")
        .arg("-lwm")
        .arg(path)
        .output()
        .expect("wc");
    let s = String::from_utf8(out.stdout).unwrap();
    let n: Vec<u64> = s
        .split_whitespace()
        .take(3)
        .map(|x| x.parse().unwrap())
        .collect();
    (n[1], n[0], n[2])
}

async fn thousand_mixed_jobs_over_two_worker_processes(env: &mut Env) {
    env.set_policy(PolicyKind::Fcfs).await;
    let data = env.data.path().to_path_buf();
    std::fs::copy(sample("sample.txt"), data.join("sample.txt")).unwrap();
    std::fs::copy(sample("sample.jpg"), data.join("sample.jpg")).unwrap();
    std::fs::write(
        data.join("unicode.txt"),
        "héllo wörld\tcafé\nnaïve  ünïcode 😀 text\nlast line no newline",
    )
    .unwrap();
    let mut jobs = Vec::new();
    for i in 0..1000 {
        let job = match i % 10 {
            0..=5 => sleep_job(&format!("sleep-{i}"), (i % 4) as f64 / 1000.0),
            6 | 7 => {
                let file = if i % 2 == 0 {
                    "sample.txt"
                } else {
                    "unicode.txt"
                };
                NewJob::new(JobSpec {
                    name: format!("wc-{i}"),
                    job_type: "word_count".into(),
                    payload: Some(json!({"file_path": file})),
                    max_retries: Some(3),
                    ..JobSpec::default()
                })
                .unwrap()
            }
            _ => {
                let w = 32 + (i % 7) * 16;
                let h = 32 + (i % 5) * 24;
                NewJob::new(JobSpec { name: format!("thumb-{i}"), job_type: "thumbnail".into(), payload: Some(json!({"input_path": "sample.jpg", "width": w, "height": h, "output_path": format!("out/t{i}.jpg")})), max_retries: Some(3), ..JobSpec::default() })
                .unwrap()
            }
        };
        jobs.push(job);
    }
    env.submit_many(&jobs).await;
    env.spawn_worker("wa", 4, &[]);
    env.spawn_worker("wb", 4, &[]);
    let done = env
        .wait_until(Duration::from_secs(240), "1000 jobs terminal", all_terminal)
        .await;
    assert_eq!(done.len(), 1000);
    let wc_sample = wc(&data.join("sample.txt"));
    assert_eq!(
        wc_sample,
        (189, 26, 1250),
        "the shared sample's known counts"
    );
    let wc_unicode = wc(&data.join("unicode.txt"));
    for j in &done {
        assert_eq!(
            j.status,
            JobStatus::Completed,
            "{} failed: {:?}",
            j.name,
            j.error_message
        );
        assert_eq!(j.attempt, 1, "{} was dispatched more than once", j.name);
        assert_eq!(j.slices, 1, "{} ran more than once", j.name);
        let r = j.result.as_ref().unwrap();
        if j.job_type == "word_count" {
            let expected = if j.payload["file_path"] == "sample.txt" {
                wc_sample
            } else {
                wc_unicode
            };
            let got = (
                r["word_count"].as_u64().unwrap(),
                r["line_count"].as_u64().unwrap(),
                r["char_count"].as_u64().unwrap(),
            );
            assert_eq!(got, expected, "{}", j.name);
        }
        if j.job_type == "thumbnail" {
            let (bw, bh) = (
                j.payload["width"].as_u64().unwrap(),
                j.payload["height"].as_u64().unwrap(),
            );
            let (w, h) = (r["width"].as_u64().unwrap(), r["height"].as_u64().unwrap());
            assert!(
                w <= bw && h <= bh,
                "{}: {w}x{h} exceeds the {bw}x{bh} box",
                j.name
            );
            assert!(
                w == bw || h == bh,
                "{}: {w}x{h} does not fill the {bw}x{bh} box",
                j.name
            );
            // 800x600 source: aspect 4:3 preserved to within rounding.
            assert!(
                ((w as f64 / h as f64) - 4.0 / 3.0).abs() < 0.05 * 4.0 / 3.0 + 1.0 / h as f64,
                "{}: {w}x{h}",
                j.name
            );
            let out = data.join(r["output_path"].as_str().unwrap());
            let (fw, fh) = image_dims(&out);
            assert_eq!(
                (fw as u64, fh as u64),
                (w, h),
                "reported size must be the file's size"
            );
        }
    }
}

fn image_dims(path: &Path) -> (u32, u32) {
    // JPEG SOF0/SOF2 marker scan: enough to read dimensions without an image dependency here.
    let b = std::fs::read(path).unwrap();
    let mut i = 2;
    while i + 9 < b.len() {
        if b[i] != 0xFF {
            i += 1;
            continue;
        }
        let marker = b[i + 1];
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        if (0xC0..=0xC3).contains(&marker) {
            let h = u16::from_be_bytes([b[i + 5], b[i + 6]]) as u32;
            let w = u16::from_be_bytes([b[i + 7], b[i + 8]]) as u32;
            return (w, h);
        }
        i += 2 + len;
    }
    panic!("no SOF marker in {}", path.display());
}

async fn kill_9_of_a_worker_mid_run_loses_no_job(env: &mut Env) {
    env.set_policy(PolicyKind::Fcfs).await;
    let jobs: Vec<NewJob> = (0..24)
        .map(|i| sleep_job(&format!("s{i:02}"), 0.4))
        .collect();
    env.submit_many(&jobs).await;
    let victim = env.spawn_worker("victim", 3, &[]);
    env.spawn_worker("survivor", 3, &[]);
    env.wait_until(Duration::from_secs(30), "victim running jobs", |js| {
        js.iter()
            .any(|j| j.status == JobStatus::Running && j.lease_owner.as_deref() == Some("victim"))
    })
    .await;
    env.children[victim].kill().unwrap();
    env.children[victim].wait().unwrap();
    let done = env
        .all_completed(Duration::from_secs(60), "all terminal after kill -9")
        .await;
    let rescued: Vec<&Job> = done.iter().filter(|j| j.retry_count == 1).collect();
    assert!(
        !rescued.is_empty(),
        "the killed worker's running jobs were rescued via lease expiry"
    );
    for j in &rescued {
        assert!(j.attempt >= 2 && j.slices >= 2, "{j:?}");
        assert!(
            j.error_message.as_deref().unwrap_or("").contains("lease"),
            "{:?}",
            j.error_message
        );
    }
}

async fn kill_9_of_the_engine_leader_hands_over(env: &mut Env) {
    env.set_policy(PolicyKind::Fcfs).await;
    let leader = env.spawn_worker("first", 2, &[]);
    env.submit_many(&[sleep_job("warmup", 0.0)]).await;
    // Only "first" runs, so it is the leader once the job completes.
    env.wait_until(Duration::from_secs(30), "warm-up job", all_terminal)
        .await;
    env.spawn_worker("second", 2, &[]);
    env.submit_many(&[sleep_job("both-alive", 0.0)]).await;
    env.wait_until(Duration::from_secs(30), "second job", all_terminal)
        .await;
    env.children[leader].kill().unwrap();
    env.children[leader].wait().unwrap();
    let after: Vec<NewJob> = (0..10)
        .map(|i| sleep_job(&format!("after-{i}"), 0.01))
        .collect();
    env.submit_many(&after).await;
    env.all_completed(Duration::from_secs(30), "jobs after the leader died")
        .await;
}

fn sigterm(child: &Child) {
    jobsched_testkit::signal(child, "TERM");
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    jobsched_testkit::wait_exit(child, timeout, "the process")
}

async fn sigterm_lets_in_flight_jobs_finish_and_exits_zero(env: &mut Env) {
    env.set_policy(PolicyKind::Fcfs).await;
    env.submit_many(&[sleep_job("a", 0.8), sleep_job("b", 0.8)])
        .await;
    let w = env.spawn_worker("term", 2, &[("JOBSCHED_SHUTDOWN_GRACE", "10")]);
    env.wait_until(Duration::from_secs(30), "both running", |js| {
        js.iter().all(|j| j.status == JobStatus::Running)
    })
    .await;
    sigterm(&env.children[w]);
    let st = wait_exit(&mut env.children[w], Duration::from_secs(15));
    assert!(st.success(), "exit status {st:?}");
    let jobs = env.all_jobs().await;
    assert!(
        jobs.iter().all(|j| j.status == JobStatus::Completed),
        "{jobs:?}"
    );
}

async fn sigterm_hands_back_jobs_that_outlive_the_grace_period(env: &mut Env) {
    env.set_policy(PolicyKind::Fcfs).await;
    env.submit_many(&[sleep_job("long", 30.0)]).await;
    let w = env.spawn_worker("term2", 1, &[("JOBSCHED_SHUTDOWN_GRACE", "0.3")]);
    env.wait_until(Duration::from_secs(30), "running", |js| {
        js[0].status == JobStatus::Running
    })
    .await;
    sigterm(&env.children[w]);
    let st = wait_exit(&mut env.children[w], Duration::from_secs(15));
    assert!(st.success(), "exit status {st:?}");
    let j = &env.all_jobs().await[0];
    assert_eq!(
        j.status,
        JobStatus::Pending,
        "handed back, not left RUNNING"
    );
    assert_eq!(j.retry_count, 0, "a hand-back does not burn a retry");
    assert!(j.checkpoint.is_some(), "the sleep job saved its progress");
}

#[tokio::test]
async fn migrate_twice_on_postgres_and_sqlite() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let migrate = |url: &str| {
        Command::new(BIN)
            .arg("migrate")
            .env("JOBSCHED_DATABASE_URL", url)
            .output()
            .unwrap()
    };
    // A database that does not exist yet (Postgres) or a new file (SQLite): migrate creates
    // it, and a second run is a no-op.
    let fresh = format!("{}_m", db.url());
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("new.db").display());
    for target in [&fresh, &url, &fresh, &url] {
        let out = migrate(target);
        assert!(
            out.status.success(),
            "{target}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(dir.path().join("new.db").exists());
    let bad = migrate("mysql://x");
    assert!(!bad.status.success());
    let msg = String::from_utf8_lossy(&bad.stderr);
    assert!(
        msg.contains("postgres://") && msg.lines().count() <= 2,
        "{msg}"
    );
    // Drop the extra database.
    let admin = jobsched_store::connect(db.url(), 1).await.unwrap();
    drop(admin);
    let name = fresh.rsplit('/').next().unwrap().to_string();
    drop_db(&name).await;
    db.cleanup().await;
}

async fn drop_db(name: &str) {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c"])
        .arg(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .output();
    if let Ok(o) = out {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

/// Value of one sample line (`name{labels} value`) in a Prometheus text page.
fn sample_value(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn worker_metrics_count_the_jobs_it_ran(env: &mut Env) {
    env.set_policy(PolicyKind::Fcfs).await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    env.spawn_worker("metered", 2, &[("JOBSCHED_METRICS_LISTEN", &listen)]);
    let mut jobs: Vec<NewJob> = (0..12)
        .map(|i| sleep_job(&format!("ok{i}"), 0.001))
        .collect();
    jobs.push(
        NewJob::new(JobSpec {
            name: "fatal".into(),
            job_type: "word_count".into(),
            payload: Some(json!({"file_path": "missing.txt"})),
            max_retries: Some(3),
            ..JobSpec::default()
        })
        .unwrap(),
    );
    env.submit_many(&jobs).await;
    env.wait_until(Duration::from_secs(30), "all terminal", all_terminal)
        .await;
    let http = reqwest::Client::new();
    let url = format!("http://{listen}/metrics");
    // The finished counters are updated before the outcome write; poll until the page shows them.
    let deadline = Instant::now() + Duration::from_secs(10);
    let page = loop {
        let page = http.get(&url).send().await.unwrap().text().await.unwrap();
        if sample_value(
            &page,
            r#"jobsched_jobs_finished_total{job_type="sleep",outcome="completed"}"#,
        ) == Some(12.0)
        {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed 12 completions:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        sample_value(
            &page,
            r#"jobsched_jobs_finished_total{job_type="word_count",outcome="failed"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample_value(&page, r#"jobsched_job_run_seconds_count{job_type="sleep"}"#),
        Some(12.0)
    );
    assert_eq!(
        sample_value(
            &page,
            r#"jobsched_job_run_seconds_count{job_type="word_count"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample_value(&page, r#"jobsched_job_wait_seconds_count{policy="fcfs"}"#),
        Some(13.0)
    );
    assert_eq!(
        sample_value(&page, "jobsched_dispatched_total"),
        Some(13.0),
        "the only worker is also the engine leader"
    );
    assert_eq!(sample_value(&page, "jobsched_worker_slots"), Some(2.0));
    assert_eq!(
        sample_value(&page, r#"jobsched_leader{role="engine"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample_value(&page, r#"jobsched_active_policy{policy="fcfs"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample_value(&page, r#"jobsched_active_policy{policy="sjf"}"#),
        Some(0.0)
    );
    for probe in ["livez", "readyz"] {
        let url = format!("http://{listen}/{probe}");
        let answer = http.get(&url).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{url}");
    }
}

/// A private `redis-server` on a free port, so a real FLUSHALL touches nobody else's keys.
struct PrivateRedis {
    /// Killed when the test ends.
    _child: jobsched_testkit::Killed,
    port: u16,
}

impl PrivateRedis {
    fn start() -> Option<PrivateRedis> {
        let (child, port) = jobsched_testkit::private_redis()?;
        Some(PrivateRedis {
            _child: child,
            port,
        })
    }

    fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_mid_run_loses_no_job() {
    let Some(redis) = PrivateRedis::start() else {
        return;
    };
    let Some(mut env) = Env::with_redis(&format!("redis://127.0.0.1:{}", redis.port)).await else {
        return;
    };
    env.set_policy(PolicyKind::Priority).await;
    let jobs: Vec<NewJob> = (0..60)
        .map(|i| sleep_job(&format!("f{i:02}"), 0.05))
        .collect();
    env.submit_many(&jobs).await;
    env.spawn_worker("fa", 2, &[]);
    env.spawn_worker("fb", 2, &[]);
    env.wait_until(Duration::from_secs(30), "10 completed", |js| {
        js.iter()
            .filter(|j| j.status == JobStatus::Completed)
            .count()
            >= 10
    })
    .await;
    assert!(redis.cli(&["FLUSHALL"]).contains("OK"));
    env.all_completed(Duration::from_secs(90), "all terminal after FLUSHALL")
        .await;
    // Rebuilt from the durable copy in Postgres, not reset to the default.
    let rebuilt = poll(Duration::from_secs(10), async || {
        env.redis
            .policy()
            .await
            .unwrap()
            .ok_or_else(|| "policy key was not rebuilt".to_string())
    })
    .await;
    assert_eq!(rebuilt.policy, PolicyKind::Priority);
    env.cleanup().await;
}
