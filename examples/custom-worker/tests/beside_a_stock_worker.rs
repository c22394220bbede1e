//! The example worker as a real process, beside a stock worker (the built-in types) and the
//! API, on Postgres and Redis: each takes only its own types, the API checks the example's
//! payloads against the schema it registered, and its progress and logs are served.

use jobsched_api::{ApiConfig, AppState};
use jobsched_client::{Client, SubmitJob};
use jobsched_core::JobStatus;
use jobsched_core::ports::{SystemClock, Transport};
use jobsched_jobs::{DataDir, Registry};
use jobsched_runtime::{Runtime, RuntimeConfig};
use jobsched_store::testing::TestDb;
use jobsched_testkit::{Killed, poll, required};
use jobsched_transport::RedisTransport;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const REDIS_URL: &str = "redis://127.0.0.1:6379";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_serves_its_types_beside_a_stock_worker() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let prefix = format!("jobsched-example-{}", uuid::Uuid::new_v4().simple());
    let Some(redis) = required("Redis", RedisTransport::connect(REDIS_URL, &prefix).await) else {
        return;
    };
    let redis = Arc::new(redis);
    let store = db.store().await;
    let data = tempfile::tempdir().unwrap();
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(data.path().join("blob.bin"), &content).unwrap();
    let expected: String = Sha256::digest(&content)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    // The API and a stock worker, in this process.
    let stop = CancellationToken::new();
    let state = AppState {
        store: store.clone(),
        transport: redis.clone() as Arc<dyn Transport>,
        registry: Registry::builtin(),
        catalog: Default::default(),
        data_dir: DataDir::new(data.path()).unwrap(),
        clock: Arc::new(SystemClock),
        config: ApiConfig::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let api = tokio::spawn({
        let stop = stop.clone();
        async move { jobsched_api::serve(listener, state, async move { stop.cancelled().await }).await }
    });
    let stock = Runtime {
        store: store.clone(),
        transport: redis.clone() as Arc<dyn Transport>,
        registry: Registry::builtin(),
        data_dir: DataDir::new(data.path()).unwrap(),
        clock: Arc::new(SystemClock),
        config: RuntimeConfig {
            worker_id: "stock-1".into(),
            concurrency: 2,
            worker_ttl: Duration::from_secs(3),
            ..RuntimeConfig::default()
        },
    };
    let stock = tokio::spawn(jobsched_runtime::run(stock, stop.clone()));

    // The example, as its own process, with the settings `jobsched worker` takes.
    let mut example = Killed(
        Command::new(env!("CARGO_BIN_EXE_custom-worker"))
            .args(["--concurrency", "2", "--no-engine"])
            .env("JOBSCHED_DATABASE_URL", db.url())
            .env("JOBSCHED_REDIS_URL", REDIS_URL)
            .env("JOBSCHED_REDIS_PREFIX", &prefix)
            .env("JOBSCHED_DATA_DIR", data.path())
            .env("JOBSCHED_WORKER_ID", "custom-1")
            .env("JOBSCHED_WORKER_TTL", "3")
            .env("JOBSCHED_METRICS_LISTEN", "off")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the example worker starts"),
    );
    let client = Client::new(&base).unwrap();
    let http = reqwest::Client::new();

    // Once the example registered its types, the API accepts them, checked by their schema.
    let checksum = poll(Duration::from_secs(30), || async {
        client
            .submit(&SubmitJob::new("sum", "checksum").payload(json!({"file_path": "blob.bin"})))
            .await
            .map_err(|e| format!("checksum not accepted yet: {e}"))
    })
    .await;
    let bad = http
        .post(format!("{base}/jobs/"))
        .json(&json!({"name": "x", "job_type": "primes", "payload": {"below": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let bad: Value = bad.json().await.unwrap();
    assert_eq!(
        bad["detail"][0]["loc"],
        json!(["body", "payload", "below"]),
        "{bad}"
    );
    let primes = client
        .submit(&SubmitJob::new("p", "primes").payload(json!({"below": 100_000})))
        .await
        .unwrap();
    let sleep = client
        .submit(&SubmitJob::new("z", "sleep").payload(json!({"duration": 0.05})))
        .await
        .unwrap();

    for (id, what) in [
        (checksum.id, "checksum"),
        (primes.id, "primes"),
        (sleep.id, "sleep"),
    ] {
        let j = client
            .wait_terminal(id, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            j.status,
            JobStatus::Completed,
            "{what}: {:?}",
            j.error_message
        );
    }
    let done = client.get(checksum.id).await.unwrap();
    assert_eq!(
        done.result.unwrap(),
        json!({"sha256": expected, "bytes": content.len()})
    );
    assert_eq!(
        client.get(primes.id).await.unwrap().result.unwrap(),
        json!({"below": 100_000, "primes": 9_592})
    );
    let (_, progress) = client.get_with_progress(checksum.id).await.unwrap();
    assert_eq!(progress.unwrap().fraction, 1.0);
    let logs = client.logs(checksum.id, None).await.unwrap();
    let last = logs[0].lines.last().unwrap();
    assert_eq!(last.message, format!("sha256 {expected}"));

    // Who serves what.
    let types = client.job_types().await.unwrap();
    let served_by = |name: &str| -> Value {
        types
            .iter()
            .find(|t| t["name"] == name)
            .map(|t| t["workers"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(served_by("checksum"), json!(["custom-1"]), "{types:?}");
    assert_eq!(served_by("primes"), json!(["custom-1"]), "{types:?}");
    assert_eq!(served_by("sleep"), json!(["stock-1"]), "{types:?}");

    // SIGTERM: the example stops cleanly.
    let pid = example.0.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let exit = poll(Duration::from_secs(30), || {
        let status = example.0.try_wait();
        async move {
            match status {
                Ok(Some(s)) => Ok(s),
                Ok(None) => Err("the example is still running".to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await;
    assert!(exit.success(), "{exit:?}");

    stop.cancel();
    stock.await.unwrap().unwrap();
    api.await.unwrap().unwrap();
    let _ = RedisTransport::delete_all_keys_blocking(REDIS_URL, &prefix);
    db.cleanup().await;
}
