//! Operator input against the real binary: out-of-range settings are one-line errors (never a
//! panic), tokens are never taken from command-line values, and two workers on one host both
//! run with the default metrics address.

use jobsched_core::JobSpec;
use jobsched_core::NewJob;
use jobsched_core::ports::Store;
use jobsched_core::ports::{EventBus as _, WorkerRegistry as _};
use jobsched_store::testing::TestDb;
use jobsched_testkit::{Killed, required, wait_exit};
use jobsched_transport::RedisTransport;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_jobsched");

/// Run `cmd` to its end (at most 20 s); returns its exit status and stderr.
fn run(mut cmd: Command) -> (ExitStatus, String) {
    let err = tempfile::NamedTempFile::new().unwrap();
    cmd.stdout(Stdio::null())
        .stderr(err.reopen().unwrap())
        .env("RUST_LOG", "warn");
    let mut child = Killed(cmd.spawn().unwrap());
    let status = wait_exit(&mut child.0, Duration::from_secs(20), &format!("{cmd:?}"));
    (status, std::fs::read_to_string(err.path()).unwrap())
}

#[test]
fn out_of_range_duration_settings_are_one_line_errors() {
    let data = tempfile::tempdir().unwrap();
    const TTL: &str = "0.1 to 86400";
    const RETENTION: &str = "60 to 315360000";
    let cases = [
        ("worker", "JOBSCHED_LEASE_TTL", "1e300", TTL),
        ("worker", "JOBSCHED_LEASE_TTL", "NaN", TTL),
        ("worker", "JOBSCHED_DISPATCH_TTL", "-1", TTL),
        ("worker", "JOBSCHED_LEADER_TTL", "inf", TTL),
        ("worker", "JOBSCHED_WORKER_TTL", "1e19", TTL),
        ("worker", "JOBSCHED_BACKOFF_BASE", "1e300", "0.001 to 86400"),
        ("worker", "JOBSCHED_BACKOFF_CAP", "1e-300", "0.001 to 86400"),
        ("worker", "JOBSCHED_SHUTDOWN_GRACE", "1e300", "0 to 3600"),
        ("worker", "JOBSCHED_RETENTION_COMPLETED", "5", RETENTION),
        ("worker", "JOBSCHED_RETENTION_FAILED", "1e300", RETENTION),
        ("dev", "JOBSCHED_RETENTION_FAILED", "-1", "0 keeps forever"),
        ("dev", "JOBSCHED_LEASE_TTL", "1e300", TTL),
        ("api", "JOBSCHED_API_REQUEST_TIMEOUT", "1e300", "1 to 3600"),
        ("controller", "JOBSCHED_REQUEUE_SECONDS", "1e300", TTL),
    ];
    for (command, var, value, range) in cases {
        let mut cmd = Command::new(BIN);
        cmd.arg(command)
            .env(
                "JOBSCHED_DATABASE_URL",
                "postgres://127.0.0.1:1/unreachable",
            )
            .env("JOBSCHED_REDIS_URL", "redis://127.0.0.1:1")
            .env("JOBSCHED_DATA_DIR", data.path())
            .env("JOBSCHED_LISTEN", "127.0.0.1:0")
            .env("JOBSCHED_METRICS_LISTEN", "off")
            .env(var, value);
        if command == "dev" {
            cmd.arg("--memory");
        }
        let (status, stderr) = run(cmd);
        assert!(!status.success(), "{command} {var}={value} started");
        assert!(
            stderr.contains(var) && stderr.contains(range),
            "{command} {var}={value}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        let lines = stderr.lines().filter(|l| !l.trim().is_empty()).count();
        assert_eq!(lines, 1, "one line: {stderr}");
    }
}

#[test]
fn tokens_are_never_taken_from_command_line_values() {
    for args in [
        vec!["stats", "--token", "secret"],
        vec!["policy", "fcfs", "--token", "secret"],
        vec!["api", "--api-token", "secret"],
        vec!["api", "--admin-token", "secret"],
        vec!["dev", "--api-token", "secret"],
        vec!["bench", "--token", "secret"],
        vec!["bench", "--admin-token", "secret"],
    ] {
        let mut cmd = Command::new(BIN);
        cmd.args(&args);
        let (status, stderr) = run(cmd);
        assert!(!status.success(), "{args:?} accepted a token value");
        assert!(stderr.contains("unexpected argument"), "{args:?}: {stderr}");
    }
    // A token file is read; an unreadable one is named.
    let mut cmd = Command::new(BIN);
    cmd.args(["stats", "--token-file", "/nonexistent/token"]);
    let (status, stderr) = run(cmd);
    assert!(!status.success());
    assert!(stderr.contains("/nonexistent/token"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_one_host_both_run_with_the_default_metrics_address() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let prefix = format!("jobsched-hard-{}", uuid::Uuid::new_v4().simple());
    let Some(redis) = required(
        "Redis",
        RedisTransport::connect("redis://127.0.0.1:6379", &prefix).await,
    ) else {
        return;
    };
    // Hold the default port (if nobody else does already), so both workers meet it taken.
    let _held = std::net::TcpListener::bind("0.0.0.0:9090");
    let data = tempfile::tempdir().unwrap();
    let mut workers = Vec::new();
    let mut logs = Vec::new();
    for id in ["w1", "w2"] {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(BIN)
            .arg("worker")
            .env_remove("JOBSCHED_METRICS_LISTEN")
            .env("JOBSCHED_DATABASE_URL", db.url())
            .env("JOBSCHED_REDIS_PREFIX", &prefix)
            .env("JOBSCHED_DATA_DIR", data.path())
            .env("JOBSCHED_WORKER_ID", id)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        workers.push(Killed(child));
        logs.push(log);
    }
    let store: std::sync::Arc<dyn Store> = db.store().await;
    let job = NewJob::new(JobSpec {
        name: "hello".into(),
        job_type: "sleep".into(),
        payload: Some(serde_json::json!({"duration": 0.01})),
        ..JobSpec::default()
    })
    .unwrap();
    let job = store.insert(&job, chrono::Utc::now()).await.unwrap();
    redis
        .publish(jobsched_core::ports::Event::Submitted(job.pending()))
        .await
        .ok();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let registered = redis.workers().await.unwrap().len();
        let done = store
            .get(job.id)
            .await
            .unwrap()
            .unwrap()
            .status
            .is_terminal();
        for (w, log) in workers.iter_mut().zip(&logs) {
            assert!(
                w.0.try_wait().unwrap().is_none(),
                "a worker exited: {}",
                std::fs::read_to_string(log.path()).unwrap()
            );
        }
        if registered == 2 && done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{registered} workers registered, job done: {done}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for log in &logs {
        let text = std::fs::read_to_string(log.path()).unwrap();
        assert!(text.contains("free port"), "the fallback is logged: {text}");
    }
    drop(workers);
    let _ = redis.delete_all_keys().await;
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_exits_soon_after_sigterm_whatever_its_clients_do() {
    use tokio::io::AsyncWriteExt;
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let prefix = format!("jobsched-hard-{}", uuid::Uuid::new_v4().simple());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = tempfile::tempdir().unwrap();
    let mut api = Killed(
        Command::new(BIN)
            .arg("api")
            .env("JOBSCHED_DATABASE_URL", db.url())
            .env("JOBSCHED_REDIS_PREFIX", &prefix)
            .env("JOBSCHED_DATA_DIR", data.path())
            .env("JOBSCHED_LISTEN", format!("127.0.0.1:{port}"))
            .env("JOBSCHED_METRICS_LISTEN", "off")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let http = reqwest::Client::new();
    let live = async || {
        let r = http
            .get(format!("http://127.0.0.1:{port}/livez"))
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    };
    jobsched_testkit::eventually("the API to come up", Duration::from_secs(30), live).await;
    // Hostile clients: a body that never arrives, headers that never end, a silent socket.
    let mut held = Vec::new();
    for head in [
        "POST /jobs/ HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000000\r\n\r\n{",
        "GET /jobs/stats HTTP/1.1\r\nhost: x\r\n",
        "",
    ] {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        held.push(s);
    }
    let sent = Instant::now();
    jobsched_testkit::signal(&api.0, "TERM");
    let status = loop {
        if let Some(s) = api.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(20),
            "the API is still running {:?} after SIGTERM",
            sent.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    drop(held);
    if let Ok(r) = RedisTransport::connect("redis://127.0.0.1:6379", &prefix).await {
        let _ = r.delete_all_keys().await;
    }
    db.cleanup().await;
}
