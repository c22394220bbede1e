//! Faults injected into real processes: `jobsched api` and `jobsched worker` on a fresh
//! database (the shared server, or a private one with its own `initdb` and `pg_ctl` on a free
//! port when the test stops Postgres) and a unique prefix on the shared Redis. The `probe` job
//! type (`JOBSCHED_PROBE_LOG`) records each body's start and end outside the database, so a
//! second run is observed, not inferred. Each test prints its row of RELIABILITY.md.
//!
//! - Postgres stopped (a crash, or a fast shutdown) for 3 s, or unreachable behind a cut
//!   proxy for 10 s, while jobs are submitted and run: every request is answered in bounded
//!   time (503 with a JSON `detail` and `Retry-After`, never a hang or a 500), every process
//!   resumes by itself, every stored job completes once, and the stored jobs are the accepted
//!   submissions plus at most those whose 503 said they were in doubt.
//! - Redis killed and restarted empty: submissions stay fast, claiming never stalls.
//! - A worker frozen (SIGSTOP) past its lease, thawed while another worker reruns its jobs:
//!   its late outcomes are refused.
//! - kill -9 of a worker (only what it ran is rerun) and of the API mid-batch (a batch is
//!   stored whole or not at all); SIGTERM of every worker at once (work handed back, no retry
//!   burned, nothing completed twice).

use jobsched_testkit::{Children, free_port, poll_every, required, signal};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_jobsched");

/// A Postgres server of its own in a temporary directory, stopped and removed when dropped.
struct PrivatePg {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    /// Run the server tools as the `postgres` OS user (initdb refuses root).
    as_postgres: bool,
}

impl PrivatePg {
    /// Initialise and start one; `None` (outside CI) when the server tools are missing.
    fn start() -> Option<PrivatePg> {
        let Some(bin) = pg_bin_dir() else {
            assert!(
                !jobsched_testkit::in_ci(),
                "CI needs the Postgres server tools (initdb, pg_ctl)"
            );
            eprintln!("skipping: no initdb/pg_ctl found");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let as_postgres = is_root();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()
                .unwrap()
                .success();
            assert!(
                ok,
                "cannot hand {} to the postgres user",
                dir.path().display()
            );
        }
        let pg = PrivatePg {
            dir,
            bin,
            port: free_port(),
            as_postgres,
        };
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        pg.up();
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Run one of the server tools, as the postgres user when this process is root.
    fn tool(&self, tool: &str, args: &[&str]) -> std::io::Result<std::process::Output> {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        }
    }

    /// [`PrivatePg::tool`], which must succeed.
    fn run(&self, tool: &str, args: &[&str]) {
        let out = self
            .tool(tool, args)
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.join(tool).display()));
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Start the server (again) on its port and wait until it accepts connections.
    fn up(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=100",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
    }

    /// Stop the server: `immediate` is a crash (no shutdown checkpoint, recovery on start).
    fn down(&self, mode: &str) {
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data().to_str().unwrap(),
                "-m",
                mode,
                "-w",
                "stop",
            ],
        );
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let data = self.data();
        let args = ["-D", data.to_str().unwrap(), "-m", "immediate", "stop"];
        let _ = self.tool("pg_ctl", &args);
    }
}

/// The directory holding `initdb` and `pg_ctl`: on `PATH`, else Debian's versioned directory.
fn pg_bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p).find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
    });
    on_path.or_else(|| {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|d| d.join("initdb").is_file())
            .collect();
        dirs.sort();
        dirs.pop()
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Each named `async fn(&mut Cluster)` as a `#[tokio::test]` on a fresh [`Cluster`] (skipped
/// where Postgres or Redis is missing).
macro_rules! on_cluster {
    ($($name:ident),* $(,)?) => {
        mod on_cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(mut c) = super::Cluster::start(None).await {
                        super::$name(&mut c).await;
                    }
                }
            )*
        }
    };
}

on_cluster!(
    sigterm_of_every_worker_mid_load_hands_work_back_without_a_retry_or_a_second_completion,
    kill_9_of_the_engine_leader_mid_load_reruns_only_what_it_was_running,
    kill_9_of_the_api_mid_batch_stores_each_batch_whole_or_not_at_all,
    a_worker_cut_from_postgres_only_loses_its_jobs_and_cannot_record_them_late,
    a_worker_cut_from_redis_only_keeps_claiming_from_postgres,
);

/// One line of the reliability table (RELIABILITY.md), printed for `make chaos` to collect:
/// the fault, the time to full recovery, jobs lost, bodies that ran twice, what clients saw,
/// and the leak check ([`no_leaks`]).
fn report(fault: &str, recovery: Duration, lost: usize, twice: &str, api: &str, leaks: &str) {
    eprintln!(
        "RELIABILITY | {fault} | {:.2} s | {lost} | {twice} | {api} | {leaks} |",
        recovery.as_secs_f64()
    );
}

/// Most Postgres connections one process may hold: its main pool (16 for the API, 8 for a
/// worker) plus three side pools of four.
const CONNECTIONS_PER_PROCESS: usize = 16 + 3 * 4;

/// The Redis keys an installation keeps, whatever its load: the policy cache and the slot
/// registry (three keys).
const FIXED_KEYS: [&str; 6] = ["policy", "queues", "idle", "total", "alive", "types"];

/// Connections jobsched processes hold to the database at `db_url` (they name themselves
/// `jobsched-<command>`; the test's own are left out).
fn pg_connections(db_url: &str) -> usize {
    psql_count(
        db_url,
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name LIKE 'jobsched-%'",
    )
}

/// The number `query` answers, run with `psql`.
fn psql_count(db_url: &str, query: &str) -> usize {
    let out = Command::new("psql")
        .arg(db_url)
        .args(["-Atc", query])
        .output()
        .expect("psql runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("psql answered {out:?}"))
}

/// The keys under `prefix`, without it.
fn redis_keys(redis_url: &str, prefix: &str) -> Vec<String> {
    let out = Command::new("redis-cli")
        .args([
            "-u",
            redis_url,
            "--scan",
            "--pattern",
            &format!("{prefix}:*"),
        ])
        .output()
        .expect("redis-cli runs");
    assert!(out.status.success(), "redis-cli --scan failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|k| {
            k.strip_prefix(&format!("{prefix}:"))
                .unwrap_or(k)
                .to_string()
        })
        .collect()
}

/// Entries of the worker registry's liveness set.
fn registered_workers(redis_url: &str, prefix: &str) -> usize {
    let out = Command::new("redis-cli")
        .args(["-u", redis_url, "ZCARD", &format!("{prefix}:alive")])
        .output()
        .expect("redis-cli runs");
    assert!(out.status.success(), "redis-cli ZCARD failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("ZCARD answered {out:?}"))
}

/// The end of every scenario: nothing leaked. While the processes still run, the database holds
/// no more connections than their pools allow, Redis holds no key outside [`FIXED_KEYS`], and
/// the worker registry (once dead workers are reaped) no more entries than processes alive;
/// after every process is stopped (SIGTERM), no connection is left behind (none stuck on the
/// server for a client that went away). The dead-letter queue holds exactly `failed` jobs.
/// Returns a summary for the report.
async fn no_leaks(
    db_url: &str,
    redis_url: &str,
    prefix: &str,
    children: &mut Children,
    failed: usize,
) -> String {
    let alive = children
        .0
        .iter_mut()
        .map(Child::try_wait)
        .filter(|r| matches!(r, Ok(None)))
        .count();
    let connections = pg_connections(db_url);
    assert!(
        (alive == 0 || connections > 0) && connections <= alive * CONNECTIONS_PER_PROCESS,
        "{connections} connections for {alive} processes (at most {CONNECTIONS_PER_PROCESS} each)"
    );
    let dead = psql_count(db_url, "SELECT count(*) FROM jobs WHERE status = 'FAILED'");
    assert_eq!(dead, failed, "jobs in the dead-letter queue");
    let keys = redis_keys(redis_url, prefix);
    let stray: Vec<&String> = keys
        .iter()
        .filter(|k| !FIXED_KEYS.contains(&k.as_str()))
        .collect();
    assert!(
        stray.is_empty(),
        "Redis keys left under {prefix}: {stray:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let registered = registered_workers(redis_url, prefix);
        if registered <= alive {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{registered} workers registered for {alive} processes alive: dead ones not reaped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for c in &mut children.0 {
        // Only processes still running (a reaped one's pid may belong to another by now).
        if matches!(c.try_wait(), Ok(None)) {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    for c in &mut children.0 {
        while matches!(c.try_wait(), Ok(None)) {
            if Instant::now() >= deadline {
                let _ = c.kill();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let every = Duration::from_millis(100);
    poll_every(
        every,
        Duration::from_secs(15),
        async || match pg_connections(db_url) {
            0 => Ok(()),
            left => Err(format!(
                "{left} connections left after every process stopped"
            )),
        },
    )
    .await;
    format!(
        "{connections} connections for {alive} processes, 0 after they stopped; {} Redis keys; \
         {dead} dead letters",
        keys.len()
    )
}

fn spawn(role: &str, env: &[(&str, String)], data: &Path) -> Child {
    let mut cmd = Command::new(BIN);
    cmd.arg(role)
        .env("JOBSCHED_DATA_DIR", data)
        .env("JOBSCHED_METRICS_LISTEN", "127.0.0.1:0")
        .env(
            "RUST_LOG",
            std::env::var("CHAOS_LOG").unwrap_or("error".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("spawn jobsched {role}: {e}"))
}

/// One submission's answer: status, how long it took, the body.
struct Answer {
    status: u16,
    took: Duration,
    body: Value,
}

/// Start an API on `port` and a worker of 4 slots (retry backoff 0.05 to 0.2 s, plus the
/// `worker` settings), both with the `common` environment.
fn api_and_worker(
    common: &[(&'static str, String)],
    port: u16,
    worker: &[(&'static str, &str)],
    data: &Path,
) -> Children {
    let mut api_env = common.to_vec();
    api_env.push(("JOBSCHED_LISTEN", format!("127.0.0.1:{port}")));
    let mut worker_env = common.to_vec();
    let defaults = [
        ("JOBSCHED_WORKER_CONCURRENCY", "4"),
        ("JOBSCHED_BACKOFF_BASE", "0.05"),
        ("JOBSCHED_BACKOFF_CAP", "0.2"),
    ];
    let settings = defaults.iter().chain(worker);
    worker_env.extend(settings.map(|(k, v)| (*k, v.to_string())));
    Children(vec![
        spawn("api", &api_env, data),
        spawn("worker", &worker_env, data),
    ])
}

/// An HTTP client whose requests give up after `secs`.
fn http_client(secs: u64) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(secs))
        .build()
        .unwrap()
}

/// How many `answers` were 503s that say the submission may or may not have been stored.
fn in_doubt(answers: &[Answer]) -> usize {
    let says = |a: &&Answer| {
        let detail = a.body["detail"].as_str().unwrap_or_default();
        detail.contains("may or may not have been applied")
    };
    answers
        .iter()
        .filter(|a| a.status == 503)
        .filter(says)
        .count()
}

/// `GET {base}{path}`'s JSON body.
async fn get_json(http: &reqwest::Client, base: &str, path: &str) -> Value {
    let response = http.get(format!("{base}{path}")).send().await;
    response.unwrap().json().await.unwrap()
}

/// `GET /jobs/stats`.
async fn stats(http: &reqwest::Client, base: &str) -> Value {
    get_json(http, base, "/jobs/stats").await
}

/// Wait up to 30 s for the API at `base` to answer.
async fn api_up(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let up = async || {
        let response = http.get(format!("{base}/jobs/stats")).send().await;
        response.is_ok_and(|r| r.status().is_success())
    };
    while !up().await {
        assert!(Instant::now() < deadline, "the API never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The id of the job a submission's answer created; the answer must be a 201 (`what` names the
/// request and why it must succeed, printed with the body otherwise).
async fn created_id(response: reqwest::Response, what: &str) -> jobsched_core::JobId {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 201, "{what}: {body}");
    body["id"].as_str().unwrap().parse().unwrap()
}

/// `POST /jobs/` of `job`, timed; a 503 must carry Retry-After.
async fn submit(http: &reqwest::Client, base: &str, job: Value) -> Answer {
    let t = Instant::now();
    let r = http.post(format!("{base}/jobs/")).json(&job).send().await;
    let r = r.expect("the API answers every request");
    let status = r.status().as_u16();
    let retry_after = r.headers().contains_key("retry-after");
    let body: Value = r.json().await.unwrap_or(Value::Null);
    if status == 503 {
        assert!(retry_after, "a 503 carries Retry-After: {body}");
    }
    Answer {
        status,
        took: t.elapsed(),
        body,
    }
}

/// `prefix-0` to `prefix-{n - 1}`.
fn numbered(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// Every answer during a fault is a 201, or a 503 that names the problem, in less than `limit`
/// (`why` says where the limit comes from), and some are 503s: how many, and the slowest.
fn fault_answers(during: &[Answer], limit: Duration, why: &str) -> (usize, Duration) {
    for a in during {
        assert!(
            a.status == 201 || a.status == 503,
            "during the fault every answer is 201 or 503, got {} {}",
            a.status,
            a.body
        );
        assert!(
            a.took < limit,
            "a request took {:?} during the fault ({why})",
            a.took
        );
        if a.status == 503 {
            let detail = a.body["detail"].as_str().unwrap_or_default();
            assert!(!detail.is_empty(), "a 503 names the problem: {}", a.body);
        }
    }
    let unavailable = during.iter().filter(|a| a.status == 503).count();
    assert!(unavailable > 0, "no request saw the fault");
    let slowest = during.iter().map(|a| a.took).max().unwrap_or_default();
    (unavailable, slowest)
}

/// Numbered submissions, each made by `post(i)`, and the answers kept.
struct Load<F> {
    post: F,
    next: usize,
    answers: Vec<Answer>,
}

impl<F: Fn(usize) -> Fut, Fut: Future<Output = Answer>> Load<F> {
    fn new(post: F) -> Self {
        Load {
            post,
            next: 0,
            answers: Vec::new(),
        }
    }

    async fn one(&mut self) -> Answer {
        let answer = (self.post)(self.next).await;
        self.next += 1;
        answer
    }

    /// `n` submissions one after another, their answers kept.
    async fn some(&mut self, n: usize) {
        for _ in 0..n {
            let answer = self.one().await;
            self.answers.push(answer);
        }
    }

    /// Submissions one after another for `span`: their answers, for the caller to look at
    /// (and keep).
    async fn during(&mut self, span: Duration) -> Vec<Answer> {
        let start = Instant::now();
        let mut answers = Vec::new();
        while start.elapsed() < span {
            answers.push(self.one().await);
        }
        answers
    }

    /// After a fault: keep the answers `during` it, then submit 100 ms apart until one is
    /// accepted (the test fails, saying `what`, when none is within 30 s), then `after` more.
    /// How long recovery took, and every answer.
    async fn recover(
        mut self,
        during: Vec<Answer>,
        what: &str,
        after: usize,
    ) -> (Duration, Vec<Answer>) {
        self.answers.extend(during);
        let start = Instant::now();
        loop {
            let answer = self.one().await;
            let ok = answer.status == 201;
            self.answers.push(answer);
            if ok {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "{what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let took = start.elapsed();
        self.some(after).await;
        (took, self.answers)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_mid_load_answers_503_at_once_and_everything_recovers_without_restarts() {
    postgres_down_for_3_s("immediate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fast_restart_mid_load_answers_503_at_once_and_everything_recovers() {
    postgres_down_for_3_s("fast").await;
}

/// Postgres stopped in `mode` (`immediate`: a crash; `fast`: sessions ended, a clean
/// shutdown) for 3 s under submissions and runs, then started again.
async fn postgres_down_for_3_s(mode: &'static str) {
    let Some(pg) = PrivatePg::start() else {
        return;
    };
    jobsched_store::migrate(&pg.url()).await.unwrap();
    let Some((redis_url, prefix)) = redis_prefix().await else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let common = vec![
        ("JOBSCHED_DATABASE_URL", pg.url()),
        ("JOBSCHED_REDIS_URL", redis_url.clone()),
        ("JOBSCHED_REDIS_PREFIX", prefix.clone()),
    ];
    // Leases longer than the outage: a run that ends while Postgres is down records its
    // outcome after the restart, under the lease it still holds.
    let worker = [
        ("JOBSCHED_LEASE_TTL", "20"),
        ("JOBSCHED_LEADER_TTL", "2"),
        ("JOBSCHED_WORKER_TTL", "2"),
    ];
    let mut children = api_and_worker(&common, port, &worker, data.path());
    let http = http_client(20);
    // Up: the API answers.
    api_up(&http, &base).await;

    let job = |i: usize| {
        json!({"name": format!("chaos-{i}"), "job_type": "sleep",
               "payload": {"duration": 0.02}, "max_retries": 3})
    };
    let mut load = Load::new(|i| submit(&http, &base, job(i)));
    // Load before the fault.
    load.some(40).await;
    // The crash, with submissions going on throughout.
    let crash = tokio::task::spawn_blocking(move || {
        pg.down(mode);
        pg
    });
    let during = load.during(Duration::from_secs(3)).await;
    let pg = crash.await.unwrap();
    let why = "the API waits at most 1 s for a connection";
    let (unavailable, slowest) = fault_answers(&during, Duration::from_millis(2500), why);
    // Back: no process is restarted.
    pg.up();
    let what = "the API did not reconnect by itself";
    let (reconnected, answers) = load.recover(during, what, 40).await;
    let accepted: Vec<String> = answers
        .iter()
        .filter(|a| a.status == 201)
        .map(|a| {
            a.body["id"]
                .as_str()
                .expect("a 201 carries the job id")
                .to_string()
        })
        .collect();

    // Every accepted job completes: the worker reconnected by itself too, and before the 20 s
    // lease of a claim whose reply the crash cut off could expire (the worker hands such a
    // claim back as soon as it reaches the database again).
    let deadline = Instant::now() + Duration::from_secs(15);
    let stats = loop {
        let stats: Value = stats(&http, &base).await;
        let completed = stats["completed"].as_u64().unwrap_or(0);
        let total = stats["total_jobs"].as_u64().unwrap_or(0);
        if completed >= accepted.len() as u64 && completed == total {
            break stats;
        }
        assert!(
            Instant::now() < deadline,
            "only {completed} of {} accepted jobs completed: {stats}",
            accepted.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The accepted submissions are stored, and besides them at most the ones whose 503 said
    // the connection broke mid-request (their commit may have gone through); a 503 that said
    // the database was unavailable left nothing behind.
    let in_doubt = in_doubt(&answers) as u64;
    let stored = stats["total_jobs"].as_u64().unwrap_or(0);
    let accepted_n = accepted.len() as u64;
    assert!(
        stored >= accepted_n && stored <= accepted_n + in_doubt,
        "{stored} jobs stored for {accepted_n} accepted submissions and {in_doubt} in doubt: \
         {stats}"
    );
    let mut rerun = 0;
    for id in &accepted {
        let job = get_json(&http, &base, &format!("/jobs/{id}")).await;
        assert_eq!(job["status"], "COMPLETED", "{job}");
        // A claim whose reply the crash cut off is committed but unknown to the worker; it
        // hands the job back without a retry (the body never ran), so it is claimed again.
        assert_eq!(
            job["retry_count"], 0,
            "no run failed and no claim burned a retry: {job}"
        );
        rerun += usize::from(job["attempt"].as_i64() != Some(1));
    }
    let leaks = no_leaks(&pg.url(), &redis_url, &prefix, &mut children, 0).await;
    report(
        &format!("Postgres stopped (`pg_ctl -m {mode}`) for 3 s under submissions and runs"),
        reconnected,
        0,
        &format!(
            "0 ({rerun} claimed again: their claim's reply was cut off; handed back on \
             reconnect, no retry burned)"
        ),
        &format!(
            "{unavailable} × 503 in 3 s ({in_doubt} in doubt), slowest {:.2} s",
            slowest.as_secs_f64()
        ),
        &leaks,
    );
}

/// A fresh database and a Redis prefix of its own; `None` (outside CI) when a backend is down.
async fn database_and_redis_prefix() -> Option<(jobsched_store::testing::TestDb, String, String)> {
    let db = jobsched_store::testing::TestDb::postgres().await?;
    let (redis_url, prefix) = redis_prefix().await?;
    Some((db, redis_url, prefix))
}

/// A Redis prefix of its own on the shared Redis; `None` (outside CI) when Redis is down.
async fn redis_prefix() -> Option<(String, String)> {
    let url = "redis://127.0.0.1:6379".to_string();
    let prefix = format!("jobsched-chaos-{}", uuid::Uuid::new_v4().simple());
    required(
        "Redis",
        jobsched_transport::RedisTransport::connect(&url, &prefix).await,
    )?;
    Some((url, prefix))
}

/// The probe log's lines as `(event, tag, pid)`.
fn probe_lines(log: &Path) -> Vec<(String, String, u32)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split(' ');
            Some((
                it.next()?.to_string(),
                it.next()?.to_string(),
                it.next()?.parse().ok()?,
            ))
        })
        .collect()
}

/// Poll the probe log until `done` holds for its lines.
async fn wait_probe<F: Fn(&[(String, String, u32)]) -> bool>(log: &Path, what: &str, done: F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lines = probe_lines(log);
        if done(&lines) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; probe log: {lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_frozen_past_its_lease_cannot_record_its_late_outcomes() {
    let Some((db, redis_url, prefix)) = database_and_redis_prefix().await else {
        return;
    };
    let store = db.store().await;
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("probe.log");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let common = vec![
        ("JOBSCHED_DATABASE_URL", db.url().to_string()),
        ("JOBSCHED_REDIS_URL", redis_url.clone()),
        ("JOBSCHED_REDIS_PREFIX", prefix.clone()),
        ("JOBSCHED_PROBE_LOG", log.display().to_string()),
    ];
    let worker_env = |id: &str| {
        let mut env = common.clone();
        env.extend([
            ("JOBSCHED_WORKER_ID", id.to_string()),
            ("JOBSCHED_WORKER_CONCURRENCY", "2".to_string()),
            ("JOBSCHED_LEASE_TTL", "2".to_string()),
            ("JOBSCHED_LEADER_TTL", "2".to_string()),
            ("JOBSCHED_WORKER_TTL", "2".to_string()),
        ]);
        env
    };
    let mut api_env = common.clone();
    api_env.push(("JOBSCHED_LISTEN", format!("127.0.0.1:{port}")));
    let mut children = Children(vec![
        spawn("api", &api_env, data.path()),
        spawn("worker", &worker_env("frozen"), data.path()),
    ]);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let submitted: Value = loop {
        // Two runs long enough that the thawed worker wakes while the rerun is under way.
        let r = http
            .post(format!("{base}/jobs/batch"))
            .json(&json!({"jobs": [
                {"name": "p0", "job_type": "probe", "payload": {"tag": "p0", "duration": 4}},
                {"name": "p1", "job_type": "probe", "payload": {"tag": "p1", "duration": 4}},
            ]}))
            .send()
            .await;
        if let Ok(r) = r
            && r.status().is_success()
        {
            break r.json().await.unwrap();
        }
        assert!(Instant::now() < deadline, "the API never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let ids: Vec<jobsched_core::JobId> = submitted["ids"]
        .as_array()
        .expect("the batch answer lists the ids")
        .iter()
        .map(|id| id.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{submitted}");
    let frozen_pid = children.0[1].id();
    wait_probe(&log, "both bodies started on the first worker", |l| {
        events(l, "start", None, Some(frozen_pid)) == 2
    })
    .await;
    signal(&children.0[1], "STOP");
    let frozen_at = Instant::now();

    // Another worker comes up; once the frozen worker's leases expire the rescuer (on whichever
    // worker leads now) hands the jobs back and the new worker runs them again.
    children
        .0
        .push(spawn("worker", &worker_env("healthy"), data.path()));
    let healthy_pid = children.0[2].id();
    wait_probe(&log, "both bodies restarted on the second worker", |l| {
        events(l, "start", None, Some(healthy_pid)) == 2
    })
    .await;
    let rerun_after = frozen_at.elapsed();
    // Thaw while the reruns are under way: the first runs' deadlines have passed, so they
    // end at once and their outcomes race the reruns.
    signal(&children.0[1], "CONT");
    wait_probe(&log, "the thawed worker's bodies to end", |l| {
        let ended = |event| events(l, event, None, Some(frozen_pid));
        ended("end") + ended("stopped") == 2
    })
    .await;

    let deadline = Instant::now() + Duration::from_secs(30);
    let jobs = loop {
        let mut jobs = Vec::new();
        for id in &ids {
            jobs.push(store.get(*id).await.unwrap().expect("the job exists"));
        }
        if jobs
            .iter()
            .all(|j| j.status == jobsched_core::JobStatus::Completed)
        {
            break jobs;
        }
        assert!(Instant::now() < deadline, "jobs never completed: {jobs:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let lines = probe_lines(&log);
    for job in &jobs {
        let tag = job.payload["tag"].as_str().unwrap();
        // The outcome recorded is the rerun's: the late one (attempt 1) was refused.
        assert_eq!(job.attempt, 2, "{job:?}");
        let result = job.result.clone().unwrap_or_default();
        assert_eq!(
            result["pid"].as_u64(),
            Some(u64::from(healthy_pid)),
            "the rerun's outcome stands, not the thawed worker's: {job:?}"
        );
        let count = |event, pid| events(&lines, event, Some(tag), Some(pid));
        assert_eq!(count("start", frozen_pid), 1, "{lines:?}");
        assert_eq!(count("start", healthy_pid), 1, "{lines:?}");
        assert_eq!(count("end", healthy_pid), 1, "{lines:?}");
    }
    let leaks = no_leaks(db.url(), &redis_url, &prefix, &mut children, 0).await;
    report(
        "worker frozen (SIGSTOP) past its 2 s lease while running 2 jobs, thawed during their rerun",
        rerun_after,
        0,
        "2 (the frozen runs; their late outcomes refused)",
        "none",
        &leaks,
    );
}

/// `jobsched api` and workers on a fresh database of the shared Postgres, a Redis prefix of
/// their own and a probe log.
struct Cluster {
    env: Vec<(&'static str, String)>,
    data: tempfile::TempDir,
    log: PathBuf,
    base: String,
    http: reqwest::Client,
    children: Children,
    store: std::sync::Arc<dyn jobsched_core::ports::Store>,
    db: jobsched_store::testing::TestDb,
}

impl Cluster {
    /// Start the API (not yet any worker); `None` when a backend is missing outside CI.
    async fn start(redis_url: Option<String>) -> Option<Cluster> {
        let db = jobsched_store::testing::TestDb::postgres().await?;
        let (redis_url, prefix) = match redis_url {
            Some(url) => (
                url,
                format!("jobsched-chaos-{}", uuid::Uuid::new_v4().simple()),
            ),
            None => redis_prefix().await?,
        };
        let data = tempfile::tempdir().unwrap();
        let log = data.path().join("probe.log");
        let port = free_port();
        let env = vec![
            ("JOBSCHED_DATABASE_URL", db.url().to_string()),
            ("JOBSCHED_REDIS_URL", redis_url),
            ("JOBSCHED_REDIS_PREFIX", prefix),
            ("JOBSCHED_PROBE_LOG", log.display().to_string()),
        ];
        let mut api_env = env.clone();
        api_env.push(("JOBSCHED_LISTEN", format!("127.0.0.1:{port}")));
        let children = Children(vec![spawn("api", &api_env, data.path())]);
        let c = Cluster {
            store: db.store().await,
            env,
            data,
            log,
            base: format!("http://127.0.0.1:{port}"),
            http: http_client(20),
            children,
            db,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while c
            .http
            .get(format!("{}/jobs/stats", c.base))
            .send()
            .await
            .map_or(true, |r| !r.status().is_success())
        {
            assert!(Instant::now() < deadline, "the API never came up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(c)
    }

    /// Start one more API process; its base URL.
    async fn api(&mut self) -> String {
        let port = free_port();
        let mut env = self.env.clone();
        env.push(("JOBSCHED_LISTEN", format!("127.0.0.1:{port}")));
        self.children.0.push(spawn("api", &env, self.data.path()));
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self
            .http
            .get(format!("{base}/jobs/stats"))
            .send()
            .await
            .map_or(true, |r| !r.status().is_success())
        {
            assert!(Instant::now() < deadline, "the second API never came up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        base
    }

    /// A worker of `slots` that reaches the backend of `self.env[backend]` (0 Postgres, 1
    /// Redis) through a proxy that can cut it off: its index, and the proxy.
    async fn worker_behind_proxy(
        &mut self,
        id: &str,
        slots: u32,
        backend: usize,
    ) -> (usize, Proxy) {
        let (var, url) = self.env[backend].clone();
        let proxy = Proxy::start(authority(&url)).await;
        let worker = self.worker(id, slots, &[(var, &through(&url, proxy.port))]);
        (worker, proxy)
    }

    /// After a cut from `cut.0` to `cut.1`: wait until every job of `ids` completed, assert
    /// that some completed during the cut, that none waited `max_gap` for the next, and that
    /// each probe of `tags` ended once; then report `fault` with `api` (given how many
    /// completed during the cut) and the leak check.
    async fn report_drained_through_cut(
        &mut self,
        (ids, tags): (&[jobsched_core::JobId], &[String]),
        cut: (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>),
        max_gap: Duration,
        fault: &str,
        api: impl FnOnce(usize) -> String,
    ) {
        let jobs = self.all_completed(ids).await;
        let during = jobs
            .iter()
            .filter_map(|j| j.completed_at)
            .filter(|t| *t > cut.0 && *t < cut.1)
            .count();
        let stall = longest_gap(&jobs);
        assert!(during > 0, "no job completed during the cut");
        assert!(stall < max_gap, "no job completed for {stall:?} in a row");
        each_probe_ended_once(&self.log, tags);
        let leaks = self.no_leaks().await;
        report(fault, stall, 0, "0", &api(during), &leaks);
    }

    /// [`no_leaks`] for this cluster with no dead letters (its processes stop).
    async fn no_leaks(&mut self) -> String {
        self.no_leaks_failing(0).await
    }

    /// [`no_leaks`] for this cluster with `failed` dead letters (its processes stop).
    async fn no_leaks_failing(&mut self, failed: usize) -> String {
        let (redis_url, prefix) = (self.env[1].1.clone(), self.env[2].1.clone());
        no_leaks(
            self.db.url(),
            &redis_url,
            &prefix,
            &mut self.children,
            failed,
        )
        .await
    }

    /// Start a worker; returns its index in `children`.
    fn worker(&mut self, id: &str, slots: u32, extra: &[(&'static str, &str)]) -> usize {
        let mut env = self.env.clone();
        env.extend([
            ("JOBSCHED_WORKER_ID", id.to_string()),
            ("JOBSCHED_WORKER_CONCURRENCY", slots.to_string()),
            ("JOBSCHED_LEASE_TTL", "2".to_string()),
            ("JOBSCHED_LEADER_TTL", "2".to_string()),
            ("JOBSCHED_WORKER_TTL", "2".to_string()),
            ("JOBSCHED_BACKOFF_BASE", "0.05".to_string()),
            ("JOBSCHED_BACKOFF_CAP", "0.2".to_string()),
        ]);
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        self.children
            .0
            .push(spawn("worker", &env, self.data.path()));
        self.children.0.len() - 1
    }

    /// Wait until the probe log holds at least `n` `event` lines from process `pid`.
    async fn wait_events(&self, what: &str, event: &str, pid: u32, n: usize) {
        wait_probe(&self.log, what, |l| events(l, event, None, Some(pid)) >= n).await;
    }

    /// Submit probe jobs `tags` (each `duration` s) in one batch; their ids.
    async fn probes(&self, tags: &[String], duration: f64) -> Vec<jobsched_core::JobId> {
        let jobs: Vec<Value> = tags
            .iter()
            .map(|t| json!({"name": t, "job_type": "probe", "payload": {"tag": t, "duration": duration}}))
            .collect();
        self.submit_batch_to(&self.base, &jobs).await
    }

    /// `POST {base}/jobs/` of `job`, answered 201; the new job's id.
    async fn submit_to(&self, base: &str, job: &Value) -> jobsched_core::JobId {
        let r = self.http.post(format!("{base}/jobs/")).json(job).send();
        created_id(r.await.unwrap(), &format!("POST {base}/jobs/ of {job}")).await
    }

    /// `POST {base}/jobs/batch` of `jobs`, answered 201; their ids in order.
    async fn submit_batch_to(&self, base: &str, jobs: &[Value]) -> Vec<jobsched_core::JobId> {
        let r = self.http.post(format!("{base}/jobs/batch"));
        let r = r.json(&json!({ "jobs": jobs })).send().await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(
            status,
            201,
            "POST {base}/jobs/batch of {} jobs: {body}",
            jobs.len()
        );
        let ids = body["ids"].as_array().unwrap().iter();
        ids.map(|id| id.as_str().unwrap().parse().unwrap())
            .collect()
    }

    /// Poll until every job in `ids` is COMPLETED; the jobs.
    async fn all_completed(&self, ids: &[jobsched_core::JobId]) -> Vec<jobsched_core::Job> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut jobs = Vec::new();
            for id in ids {
                jobs.push(self.store.get(*id).await.unwrap().expect("the job exists"));
            }
            let done = jobs
                .iter()
                .filter(|j| j.status == jobsched_core::JobStatus::Completed)
                .count();
            if done == jobs.len() {
                return jobs;
            }
            let others: Vec<_> = jobs
                .iter()
                .filter(|j| j.status != jobsched_core::JobStatus::Completed)
                .map(|j| (j.name.clone(), j.status, j.attempt))
                .collect();
            assert!(
                Instant::now() < deadline,
                "{done} of {} jobs completed; the others: {others:?}",
                jobs.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Every probe in `tags` ended exactly once, and each of its extra starts was stopped (handed
/// back), as the probe log at `log` shows; how many runs were stopped.
fn each_probe_ended_once(log: &Path, tags: &[String]) -> usize {
    let lines = probe_lines(log);
    let mut stopped = 0;
    for t in tags {
        let (starts, ends, stops, _) = runs_of(&lines, t, 0);
        assert_eq!(ends, 1, "{t} completed exactly once: {lines:?}");
        assert_eq!(
            starts,
            1 + stops,
            "{t}: every extra start was handed back: {lines:?}"
        );
        stopped += stops;
    }
    stopped
}

/// The longest gap between two completions of `jobs`.
fn longest_gap(jobs: &[jobsched_core::Job]) -> Duration {
    let mut done: Vec<_> = jobs.iter().filter_map(|j| j.completed_at).collect();
    done.sort();
    done.windows(2)
        .map(|w| (w[1] - w[0]).to_std().unwrap_or_default())
        .max()
        .unwrap_or_default()
}

/// Per tag, from the probe log: (starts, ends, stops, starts by `pid` with no end or stop by it).
fn runs_of(lines: &[(String, String, u32)], tag: &str, pid: u32) -> (usize, usize, usize, usize) {
    let n = |event: &str| events(lines, event, Some(tag), None);
    let by = |event: &str| events(lines, event, Some(tag), Some(pid));
    let cut = by("start").saturating_sub(by("end") + by("stopped"));
    (n("start"), n("end"), n("stopped"), cut)
}

/// How many probe-log lines record `event` of `tag` by `pid` (`None`: any tag, any pid).
fn events(
    lines: &[(String, String, u32)],
    event: &str,
    tag: Option<&str>,
    pid: Option<u32>,
) -> usize {
    let wanted = |(e, t, p): &&(String, String, u32)| {
        e == event && tag.is_none_or(|tag| tag == t) && pid.is_none_or(|pid| pid == *p)
    };
    lines.iter().filter(wanted).count()
}

async fn sigterm_of_every_worker_mid_load_hands_work_back_without_a_retry_or_a_second_completion(
    c: &mut Cluster,
) {
    let grace = [("JOBSCHED_SHUTDOWN_GRACE", "0.3")];
    let first: Vec<usize> = (0..3)
        .map(|i| c.worker(&format!("old-{i}"), 2, &grace))
        .collect();
    let tags = numbered("term", 30);
    let ids = c.probes(&tags, 0.6).await;
    // A rolling update in one go: every worker told to stop while each runs jobs.
    wait_probe(&c.log, "six bodies running", |l| {
        events(l, "start", None, None) >= 6
    })
    .await;
    let termed = Instant::now();
    for &i in &first {
        signal(&c.children.0[i], "TERM");
    }
    for &i in &first {
        let status = c.children.0[i].wait().unwrap();
        assert!(
            status.success(),
            "a worker stops cleanly on SIGTERM: {status}"
        );
    }
    let stopped_in = termed.elapsed();
    for i in 0..3 {
        c.worker(&format!("new-{i}"), 2, &grace);
    }
    let jobs = c.all_completed(&ids).await;
    let stopped = each_probe_ended_once(&c.log, &tags);
    assert!(
        stopped > 0,
        "the grace period was meant to cut some runs short"
    );
    for j in &jobs {
        assert_eq!(j.retry_count, 0, "a hand-back burns no retry: {j:?}");
    }
    let leaks = c.no_leaks().await;
    report(
        "SIGTERM of all 3 workers at once (0.3 s grace) with 30 jobs of 0.6 s, then 3 new workers",
        stopped_in,
        0,
        &format!("{stopped} stopped at the grace and handed back, none completed twice"),
        "none",
        &leaks,
    );
}

async fn kill_9_of_the_engine_leader_mid_load_reruns_only_what_it_was_running(c: &mut Cluster) {
    // The victim leads the engine (the rescuer runs there): its death must move that too.
    let victim = c.worker("victim", 3, &[]);
    let db_url = c.env[0].1.clone();
    wait_for("the victim to lead", || {
        engine_leader(&db_url).as_deref() == Some("victim")
    })
    .await;
    c.worker("survivor", 3, &[]);
    let tags = numbered("kill", 30);
    let ids = c.probes(&tags, 0.3).await;
    let victim_pid = c.children.0[victim].id();
    c.wait_events("the victim running jobs", "start", victim_pid, 4)
        .await;
    let killed = Instant::now();
    c.children.0[victim].kill().unwrap();
    c.children.0[victim].wait().unwrap();
    wait_for("the survivor to take the lead", || {
        engine_leader(&db_url).as_deref() == Some("survivor")
    })
    .await;
    let failover = killed.elapsed();
    let jobs = c.all_completed(&ids).await;
    let recovered = killed.elapsed();
    let lines = probe_lines(&c.log);
    let (mut cut_short, mut finished_unrecorded) = (0, 0);
    for t in &tags {
        let (starts, ends, stops, cut) = runs_of(&lines, t, victim_pid);
        let victim_ends = events(&lines, "end", Some(t), Some(victim_pid));
        // At most one body finished on the survivor's side, and one on the victim's.
        assert!(
            victim_ends <= 1 && ends - victim_ends <= 1 && ends >= 1,
            "{t}: {lines:?}"
        );
        // The at-least-once window: the victim finished a body but died before recording it,
        // so the job ran to the end twice.
        let twice = usize::from(ends == 2);
        assert_eq!(starts, 1 + stops + cut + twice, "{t}: {lines:?}");
        assert!(cut <= 1);
        cut_short += cut;
        finished_unrecorded += twice;
    }
    assert!(
        cut_short + finished_unrecorded > 0,
        "the victim was running jobs when it died"
    );
    let leaks = c.no_leaks().await;
    report(
        &format!(
            "kill -9 of the engine leader, one of 2 workers (3 slots each), with 30 jobs of \
             0.3 s; 2 s lease and leader TTL (the other led after {:.2} s)",
            failover.as_secs_f64()
        ),
        recovered,
        0,
        &format!(
            "{cut_short} cut short and rerun, {finished_unrecorded} finished but unrecorded and \
             rerun (at-least-once)"
        ),
        "none",
        &leaks,
    );
    let survivor_pid = c.children.0[victim + 1].id();
    for j in jobs.iter().filter(|j| j.attempt > 1) {
        assert_eq!(
            j.result.as_ref().and_then(|r| r["pid"].as_u64()),
            Some(u64::from(survivor_pid)),
            "a rescued job is finished by the survivor: {j:?}"
        );
    }
}

async fn kill_9_of_the_api_mid_batch_stores_each_batch_whole_or_not_at_all(c: &mut Cluster) {
    let api = c.children.0.remove(0);
    let pid = api.id();
    c.children.0.push(api);
    let batch: Vec<Value> = (0..1000)
        .map(|i| json!({"name": format!("b{i}"), "job_type": "sleep", "payload": {"duration": 0.01}}))
        .collect();
    let body = json!({ "jobs": batch });
    // Batches in a loop; the API is killed while one is on its way.
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    });
    let mut accepted = 0u64;
    loop {
        match c
            .http
            .post(format!("{}/jobs/batch", c.base))
            .json(&body)
            .send()
            .await
        {
            Ok(r) if r.status().as_u16() == 201 => accepted += 1,
            Ok(r) => panic!("unexpected answer {}", r.status()),
            Err(_) => break,
        }
    }
    killer.await.unwrap();
    // Reap the killed API (pushed last), so the leak check counts it as gone, not racing its exit.
    let api = c.children.0.last_mut().expect("the API process");
    assert!(!api.wait().unwrap().success(), "the API was killed");
    assert!(accepted > 0, "no batch went through before the kill");
    let stats = c.store.stats().await.unwrap();
    let stored = u64::try_from(stats.total_jobs).unwrap();
    assert_eq!(
        stored % 1000,
        0,
        "a batch was stored in part: {stored} jobs"
    );
    assert!(
        stored / 1000 == accepted || stored / 1000 == accepted + 1,
        "{accepted} batches accepted, {stored} jobs stored"
    );
    let leaks = c.no_leaks().await;
    report(
        "kill -9 of the API during POST /jobs/batch (1,000 jobs per batch)",
        Duration::ZERO,
        0,
        "—",
        &format!(
            "the batch in flight: connection reset, {} (all or nothing)",
            if stored / 1000 > accepted {
                "stored"
            } else {
                "not stored"
            }
        ),
        &leaks,
    );
}

/// A `redis-server` of its own on a free port, without persistence; killed when dropped.
struct PrivateRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    persistent: bool,
}

impl PrivateRedis {
    /// `persistent`: an append-only file synced on every write, reloaded on restart.
    fn start(persistent: bool) -> Option<PrivateRedis> {
        let mut r = PrivateRedis {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            persistent,
        };
        if !r.up() {
            assert!(!jobsched_testkit::in_ci(), "CI needs redis-server");
            eprintln!("skipping: cannot start redis-server");
            return None;
        }
        Some(r)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Start it (again, empty) and wait until it answers; false if it cannot start.
    fn up(&mut self) -> bool {
        let Ok(child) = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(if self.persistent {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "no"]
            })
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        else {
            return false;
        };
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// kill -9: every key is gone, every connection cut.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_load_slows_no_submission_and_loses_no_job() {
    redis_fault(RedisFault::Kill { persistent: false }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_with_persistence_killed_mid_load_slows_nothing_and_loses_no_job() {
    redis_fault(RedisFault::Kill { persistent: true }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_flushall_mid_load_slows_nothing_and_loses_no_job() {
    redis_fault(RedisFault::Flushall).await;
}

/// What happens to Redis mid-load.
#[derive(Debug, Clone, Copy)]
enum RedisFault {
    /// kill -9 for 3 s, then restarted: empty, or from its append-only file.
    Kill { persistent: bool },
    /// `FLUSHALL`: every key gone at once, the server up throughout.
    Flushall,
}

async fn redis_fault(fault: RedisFault) {
    let persistent = matches!(fault, RedisFault::Kill { persistent: true });
    let Some(mut redis) = PrivateRedis::start(persistent) else {
        return;
    };
    let Some(mut c) = Cluster::start(Some(redis.url())).await else {
        return;
    };
    c.worker("w1", 3, &[]);
    c.worker("w2", 3, &[]);
    // One probe submission: its tag, its id and how long the API took to answer.
    let submit = async |n: usize| {
        let tag = format!("redis-{n}");
        let job =
            json!({"name": tag, "job_type": "probe", "payload": {"tag": tag, "duration": 0.05}});
        let t = Instant::now();
        let id = c.submit_to(&c.base, &job).await;
        (tag, id, t.elapsed())
    };
    let mut submitted = Vec::new();
    for n in 0..20 {
        submitted.push(submit(n).await);
    }
    match fault {
        RedisFault::Kill { .. } => redis.kill(),
        RedisFault::Flushall => {
            let ok = Command::new("redis-cli")
                .args(["-p", &redis.port.to_string(), "FLUSHALL"])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "redis-cli FLUSHALL");
        }
    }
    let down = Instant::now();
    // Postgres is the truth: a submission does not wait on Redis.
    let mut slowest_while_down = Duration::ZERO;
    while down.elapsed() < Duration::from_secs(3) {
        let answered = submit(submitted.len()).await;
        slowest_while_down = slowest_while_down.max(answered.2);
        submitted.push(answered);
        // About as fast as six slots run 50 ms jobs: a backlog that neither runs dry nor grows.
        tokio::time::sleep(Duration::from_millis(8)).await;
    }
    assert!(
        slowest_while_down < Duration::from_millis(500),
        "a submission took {slowest_while_down:?} while Redis was down"
    );
    if matches!(fault, RedisFault::Kill { .. }) {
        assert!(redis.up(), "redis-server restarts");
    }
    for _ in 0..20 {
        submitted.push(submit(submitted.len()).await);
    }
    let (tags, ids): (Vec<String>, Vec<_>) =
        submitted.into_iter().map(|(t, id, _)| (t, id)).unzip();
    let jobs = c.all_completed(&ids).await;
    // The backlog never ran dry, so the workers never stopped: Redis down stalled nothing.
    let stall = longest_gap(&jobs);
    assert!(
        stall < Duration::from_millis(1500),
        "no job completed for {stall:?} in a row"
    );
    let leaks = c.no_leaks().await;
    report(
        match fault {
            RedisFault::Kill { persistent: false } => {
                "kill -9 of Redis for 3 s under submissions and runs, restarted empty"
            }
            RedisFault::Kill { persistent: true } => {
                "kill -9 of Redis (append-only file, fsync always) for 3 s under load, restarted from its file"
            }
            RedisFault::Flushall => "FLUSHALL of Redis under submissions and runs",
        },
        stall,
        0,
        "0",
        &format!(
            "none; slowest submission {:.3} s",
            slowest_while_down.as_secs_f64()
        ),
        &leaks,
    );
    each_probe_ended_once(&c.log, &tags);
}

/// A TCP proxy in front of a backend that can be cut: while cut, no byte passes either way
/// (bytes already sent wait, as TCP would keep retransmitting them) and new connections are
/// held; when the cut ends everything flows again. Stops with the test's runtime.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let cut = flag.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    held(&cut).await;
                    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(pipe(cr, sw, cut.clone()), pipe(sr, cw, cut));
                });
            }
        });
        Proxy { port, cut }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
    }
}

/// Wait while the proxy is cut.
async fn held(cut: &AtomicBool) {
    while cut.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        held(&cut).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        // Bytes read just before or during a cut wait for its end too.
        held(&cut).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_for_10_s_gets_503s_in_bounded_time_and_everything_resumes() {
    let Some((db, redis_url, prefix)) = database_and_redis_prefix().await else {
        return;
    };
    // Every process reaches Postgres through the proxy.
    let direct = db.url().to_string();
    let rest = direct
        .split_once('@')
        .map(|(_, r)| r)
        .expect("a TestDb URL names user@host");
    let (hostport, dbname) = rest.split_once('/').expect("host:port/database");
    let proxy = Proxy::start(hostport.to_string()).await;
    let via_proxy = format!(
        "{}@127.0.0.1:{}/{dbname}",
        direct.split_once('@').unwrap().0,
        proxy.port
    );
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("probe.log");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let common = vec![
        ("JOBSCHED_DATABASE_URL", via_proxy),
        ("JOBSCHED_REDIS_URL", redis_url.clone()),
        ("JOBSCHED_REDIS_PREFIX", prefix.clone()),
        ("JOBSCHED_PROBE_LOG", log.display().to_string()),
    ];
    // Leases longer than the cut: runs in progress keep them across it.
    let worker = [("JOBSCHED_LEASE_TTL", "30")];
    let mut children = api_and_worker(&common, port, &worker, data.path());
    let http = http_client(30);
    let post = |i: usize| {
        let tag = format!("cut-{i}");
        let job =
            json!({"name": tag, "job_type": "probe", "payload": {"tag": tag, "duration": 0.02}});
        submit(&http, &base, job)
    };
    api_up(&http, &base).await;
    let mut load = Load::new(post);
    load.some(30).await;
    proxy.set_cut(true);
    let during = load.during(Duration::from_secs(10)).await;
    proxy.set_cut(false);
    let limit = Duration::from_millis(6500);
    let (unavailable, slowest) = fault_answers(&during, limit, "store calls get 5 s");
    // Once a call ran out of time the API presumes the database unreachable for a moment and
    // answers at once, without sending anything.
    let at_once = during
        .iter()
        .filter(|a| a.status == 503 && a.took < Duration::from_millis(200))
        .count();
    assert!(
        at_once > 0,
        "every 503 waited: {:?}",
        during.iter().map(|a| a.took).collect::<Vec<_>>()
    );
    let what = "the API did not recover by itself";
    let (recovered, answers) = load.recover(during, what, 30).await;
    let accepted: Vec<String> = answers
        .iter()
        .filter(|a| a.status == 201)
        .map(|a| a.body["payload"]["tag"].as_str().unwrap().to_string())
        .collect();
    let in_doubt = in_doubt(&answers);
    // Every stored job completes, each body once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let stats = loop {
        let stats: Value = stats(&http, &base).await;
        let total = stats["total_jobs"].as_u64().unwrap_or(0);
        if stats["completed"].as_u64() == Some(total) && total >= accepted.len() as u64 {
            break stats;
        }
        assert!(
            Instant::now() < deadline,
            "jobs never all completed: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stored = stats["total_jobs"].as_u64().unwrap() as usize;
    assert!(
        stored >= accepted.len() && stored <= accepted.len() + in_doubt,
        "{stored} stored for {} accepted and {in_doubt} in doubt",
        accepted.len()
    );
    each_probe_ended_once(&log, &accepted);
    let leaks = no_leaks(db.url(), &redis_url, &prefix, &mut children, 0).await;
    report(
        "Postgres unreachable (every connection blackholed) for 10 s under submissions and runs",
        recovered,
        0,
        "0",
        &format!(
            "{unavailable} × 503 in 10 s ({at_once} at once, {in_doubt} in doubt), slowest {:.2} s",
            slowest.as_secs_f64()
        ),
        &leaks,
    );
}

/// The worker holding the engine lease in the database at `db_url`, read with `psql`.
fn engine_leader(db_url: &str) -> Option<String> {
    let out = Command::new("psql")
        .arg(db_url)
        .args([
            "-Atc",
            "SELECT holder FROM leaders WHERE role = 'engine' AND expires_at > now()",
        ])
        .output()
        .ok()?;
    let holder = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!holder.is_empty()).then_some(holder)
}

/// Poll `done` until it holds (30 s at most).
async fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `url` (`scheme://[user@]host:port/rest`) pointed at 127.0.0.1:`port` instead.
fn through(url: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let (user, rest) = match rest.split_once('@') {
        Some((user, rest)) => (format!("{user}@"), rest),
        None => (String::new(), rest),
    };
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    format!("{scheme}://{user}127.0.0.1:{port}{path}")
}

/// `host:port` of `url`.
fn authority(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_string()
}

async fn a_worker_cut_from_postgres_only_loses_its_jobs_and_cannot_record_them_late(
    c: &mut Cluster,
) {
    let (cut_off, proxy) = c.worker_behind_proxy("cut-off", 2, 0).await;
    let tags = vec!["pcut-0".to_string(), "pcut-1".to_string()];
    let ids = c.probes(&tags, 4.0).await;
    let cut_pid = c.children.0[cut_off].id();
    wait_probe(
        &c.log,
        "both bodies started on the worker to cut off",
        |l| events(l, "start", None, Some(cut_pid)) == 2,
    )
    .await;
    proxy.set_cut(true);
    let cut_at = Instant::now();
    let other = c.worker("other", 2, &[]);
    let other_pid = c.children.0[other].id();
    wait_probe(&c.log, "both bodies rerun on the other worker", |l| {
        events(l, "start", None, Some(other_pid)) == 2
    })
    .await;
    let rerun_after = cut_at.elapsed();
    // The cut-off worker's bodies end meanwhile; their outcomes wait in the cut and reach
    // Postgres when it ends, while the reruns hold the jobs.
    wait_probe(&c.log, "the cut-off worker's bodies to end", |l| {
        let ended = |event| events(l, event, None, Some(cut_pid));
        ended("end") + ended("stopped") == 2
    })
    .await;
    proxy.set_cut(false);
    let jobs = c.all_completed(&ids).await;
    let lines = probe_lines(&c.log);
    for job in &jobs {
        let tag = job.payload["tag"].as_str().unwrap();
        assert_eq!(job.attempt, 2, "{job:?}");
        assert_eq!(
            job.result.as_ref().and_then(|r| r["pid"].as_u64()),
            Some(u64::from(other_pid)),
            "the rerun's outcome stands, not the cut-off worker's: {job:?}"
        );
        let (_, ends, _, _) = runs_of(&lines, tag, cut_pid);
        let by = |event| events(&lines, event, Some(tag), Some(other_pid));
        assert_eq!(by("start"), 1, "{lines:?}");
        assert_eq!(by("end"), 1, "{lines:?}");
        assert!(ends <= 2, "{lines:?}");
    }
    let leaks = c.no_leaks().await;
    report(
        "one worker cut from Postgres (not from Redis) while running 2 jobs of 4 s; 2 s lease",
        rerun_after,
        0,
        "2 (the cut-off runs; their late outcomes refused)",
        "none",
        &leaks,
    );
}

async fn a_worker_cut_from_redis_only_keeps_claiming_from_postgres(c: &mut Cluster) {
    let (w, proxy) = c.worker_behind_proxy("redis-cut", 3, 1).await;
    let tags = numbered("rcut", 90);
    let ids = c.probes(&tags, 0.1).await;
    let pid = c.children.0[w].id();
    c.wait_events("the worker running jobs", "end", pid, 6)
        .await;
    // Redis stops answering this worker (its connections hang, nothing is refused).
    proxy.set_cut(true);
    let cut_at = chrono::Utc::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.set_cut(false);
    let cut_end = chrono::Utc::now();
    c.report_drained_through_cut(
        (&ids, &tags),
        (cut_at, cut_end),
        Duration::from_millis(1500),
        "one worker cut from Redis (not from Postgres) for 3 s while draining 90 jobs of 0.1 s",
        |during| format!("none; {during} jobs completed during the cut"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_for_10_s_slows_no_request_and_loses_no_job() {
    let Some((shared, _)) = redis_prefix().await else {
        return;
    };
    // Every process reaches Redis through the proxy.
    let proxy = Proxy::start(authority(&shared)).await;
    let Some(mut c) = Cluster::start(Some(through(&shared, proxy.port))).await else {
        return;
    };
    c.worker("w1", 3, &[]);
    c.worker("w2", 3, &[]);
    let mut tags = numbered("rdown", 30);
    let mut ids = c.probes(&tags, 0.05).await;
    wait_probe(&c.log, "jobs running", |l| {
        events(l, "end", None, None) >= 6
    })
    .await;
    proxy.set_cut(true);
    let cut_at = chrono::Utc::now();
    let started = Instant::now();
    let (mut slowest_post, mut slowest_status) = (Duration::ZERO, Duration::ZERO);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(10) {
        let tag = format!("rdown-cut-{n}");
        n += 1;
        let t = Instant::now();
        let r = c
            .http
            .post(format!("{}/jobs/", c.base))
            .json(&json!({"name": tag, "job_type": "probe", "payload": {"tag": tag, "duration": 0.05}}))
            .send()
            .await
            .unwrap();
        slowest_post = slowest_post.max(t.elapsed());
        ids.push(created_id(r, "a submission needs only Postgres").await);
        tags.push(tag);
        let t = Instant::now();
        let r = c
            .http
            .get(format!("{}/scheduler/status", c.base))
            .send()
            .await
            .unwrap();
        slowest_status = slowest_status.max(t.elapsed());
        let code = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        assert!(
            code == 200 || (code == 503 && body["detail"].as_str().is_some_and(|d| !d.is_empty())),
            "status during the cut: {code} {body}"
        );
        *statuses.entry(code).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.set_cut(false);
    let cut_end = chrono::Utc::now();
    assert!(
        slowest_post < Duration::from_secs(1),
        "a submission took {slowest_post:?} while Redis was unreachable"
    );
    assert!(
        slowest_status < Duration::from_millis(2500),
        "GET /scheduler/status took {slowest_status:?} while Redis was unreachable"
    );
    // Without Redis the workers hear of no submission; they claim from Postgres at their poll
    // interval and as slots free up.
    c.report_drained_through_cut(
        (&ids, &tags),
        (cut_at, cut_end),
        Duration::from_millis(2500),
        "Redis unreachable (every connection blackholed) for 10 s under submissions, status reads and runs",
        |during| {
            format!(
                "{n} submissions, all 201, slowest {:.3} s; GET /scheduler/status {statuses:?}, \
                 slowest {:.2} s; {during} jobs completed during the cut",
                slowest_post.as_secs_f64(),
                slowest_status.as_secs_f64()
            )
        },
    )
    .await;
}

/// Resident memory of process `pid`, bytes (0 once it is gone).
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// One soak sample: RSS per process, jobsched connections, Redis keys, registered workers.
struct Sample {
    rss: Vec<u64>,
    connections: usize,
    keys: usize,
    registered: usize,
}

/// `SOAK_SECONDS` (default 20; `make chaos` runs 600) of mixed load on two APIs and three
/// workers under Round Robin: batches and single submissions of probe jobs, jobs that fail every
/// attempt (dead letters), jobs sliced at the quantum. Every process's RSS stays flat after
/// warm-up, connections stay within the pools, Redis keys within the fixed set; at the end every
/// job is terminal, every probe body ended exactly once and the dead letters are exactly the
/// failing jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_mixed_load_keeps_memory_connections_and_keys_flat() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let Some(mut c) = Cluster::start(None).await else {
        return;
    };
    let second = c.api().await;
    let apis = [c.base.clone(), second];
    for i in 0..3 {
        c.worker(&format!("soak-{i}"), 8, &[]);
    }
    let r = c
        .http
        .put(format!("{}/scheduler/policy", c.base))
        .json(&json!({"policy": "round_robin", "quantum_seconds": 0.1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let db_url = c.db.url().to_string();
    let (redis_url, prefix) = (c.env[1].1.clone(), c.env[2].1.clone());
    let pids: Vec<u32> = c.children.0.iter().map(Child::id).collect();
    let every = Duration::from_secs((seconds / 60).max(1));
    let stop = tokio_util::sync::CancellationToken::new();
    let sampler = {
        let stop = stop.clone();
        let (pids, db_url, redis_url, prefix) = (
            pids.clone(),
            db_url.clone(),
            redis_url.clone(),
            prefix.clone(),
        );
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while !stop.is_cancelled() {
                let (pids, db_url, redis_url, prefix) = (
                    pids.clone(),
                    db_url.clone(),
                    redis_url.clone(),
                    prefix.clone(),
                );
                let sample = tokio::task::spawn_blocking(move || Sample {
                    rss: pids.iter().map(|p| rss(*p)).collect(),
                    connections: pg_connections(&db_url),
                    keys: redis_keys(&redis_url, &prefix).len(),
                    registered: registered_workers(&redis_url, &prefix),
                })
                .await
                .unwrap();
                assert!(
                    sample.rss.iter().all(|r| *r > 0),
                    "a process of the soak died: RSS {:?}",
                    sample.rss
                );
                samples.push(sample);
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(every) => {}
                }
            }
            samples
        })
    };

    let started = Instant::now();
    let (mut probes, mut failing, mut sliced) = (Vec::new(), Vec::new(), Vec::new());
    let mut tick = 0usize;
    while started.elapsed() < Duration::from_secs(seconds) {
        let base = &apis[tick % 2];
        let probe = |n: usize| {
            let tag = format!("soak-{n}");
            let duration = 0.005 + (n % 6) as f64 * 0.005;
            (
                tag.clone(),
                json!({"name": tag, "job_type": "probe", "payload": {"tag": tag, "duration": duration}}),
            )
        };
        let (tags, jobs): (Vec<String>, Vec<Value>) = (0..20).map(|k| probe(tick * 32 + k)).unzip();
        let ids = c.submit_batch_to(base, &jobs).await;
        probes.extend(tags.into_iter().zip(ids));
        for k in 20..22 {
            let (tag, job) = probe(tick * 32 + k);
            probes.push((tag, c.submit_to(base, &job).await));
        }
        if tick % 10 == 0 {
            let fail = json!({"name": format!("soak-fail-{tick}"), "job_type": "sleep",
                "payload": {"duration": 0.01, "fail_probability": 1.0}, "max_retries": 2});
            let slice = json!({"name": format!("soak-slice-{tick}"), "job_type": "sleep",
                "payload": {"duration": 0.25}});
            for (job, into) in [(fail, &mut failing), (slice, &mut sliced)] {
                into.push(c.submit_to(base, &job).await);
            }
        }
        tick += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let submitted = probes.len() + failing.len() + sliced.len();
    // Drain: every job terminal.
    let deadline = Instant::now() + Duration::from_secs(120);
    let stats = loop {
        let s = c.store.stats().await.unwrap();
        if s.completed + s.failed == submitted as i64 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "{submitted} submitted, not all terminal: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    stop.cancel();
    let samples = sampler.await.unwrap();
    assert_eq!(stats.total_jobs, submitted as i64, "{stats:?}");
    assert_eq!(
        stats.failed,
        failing.len() as i64,
        "only the failing jobs failed: {stats:?}"
    );
    assert_eq!(
        c.store.dead_letter_count().await.unwrap(),
        failing.len() as i64,
        "the dead letters are exactly the failing jobs"
    );
    for id in &failing {
        let j = c.store.get(*id).await.unwrap().unwrap();
        assert_eq!(
            (j.status, j.retry_count),
            (jobsched_core::JobStatus::Failed, 2),
            "{j:?}"
        );
    }
    for id in &sliced {
        let j = c.store.get(*id).await.unwrap().unwrap();
        assert_eq!(j.status, jobsched_core::JobStatus::Completed, "{j:?}");
        assert!(
            j.slices >= 2,
            "a 0.25 s job is sliced at a 0.1 s quantum: {j:?}"
        );
    }
    let lines = probe_lines(&c.log);
    let mut ends: HashMap<&str, usize> = HashMap::new();
    for (e, t, _) in &lines {
        if e == "end" {
            *ends.entry(t.as_str()).or_default() += 1;
        }
    }
    let twice = ends.values().filter(|n| **n > 1).count();
    for (tag, _) in &probes {
        assert!(ends.contains_key(tag.as_str()), "{tag} never ended");
    }
    assert_eq!(twice, 0, "a probe body completed twice");

    // Flat after warm-up: compare the second half of the samples with the first (after the
    // first quarter).
    assert!(samples.len() >= 8, "only {} samples", samples.len());
    let warm = samples.len() / 4;
    let mid = warm + (samples.len() - warm) / 2;
    let roles: Vec<&str> = std::iter::once("api")
        .chain(std::iter::once("api"))
        .chain(std::iter::repeat_n("worker", 3))
        .collect();
    let mut growth = Vec::new();
    for (p, role) in roles.iter().enumerate() {
        let max_of = |range: &[Sample]| range.iter().map(|s| s.rss[p]).max().unwrap_or(0);
        let (first, second) = (max_of(&samples[warm..mid]), max_of(&samples[mid..]));
        assert!(
            second <= first + first / 5 + 8 * 1024 * 1024,
            "{role} {p}: RSS grew from {first} to {second} bytes after warm-up"
        );
        growth.push(format!(
            "{role} {:.0}→{:.0} MB",
            first as f64 / 1e6,
            second as f64 / 1e6
        ));
    }
    let max_conn = samples.iter().map(|s| s.connections).max().unwrap_or(0);
    assert!(
        max_conn <= 5 * CONNECTIONS_PER_PROCESS,
        "{max_conn} connections"
    );
    let (first_conn, last_conn) = (
        samples[warm..mid]
            .iter()
            .map(|s| s.connections)
            .max()
            .unwrap_or(0),
        samples[mid..]
            .iter()
            .map(|s| s.connections)
            .max()
            .unwrap_or(0),
    );
    // Pools open connections lazily up to their caps; a leak would keep growing past them.
    assert!(
        last_conn <= first_conn + 4,
        "connections grew from {first_conn} to {last_conn}"
    );
    let max_keys = samples.iter().map(|s| s.keys).max().unwrap_or(0);
    assert!(max_keys <= FIXED_KEYS.len(), "{max_keys} Redis keys");
    let max_registered = samples.iter().map(|s| s.registered).max().unwrap_or(0);
    assert!(max_registered <= 3, "{max_registered} workers registered");
    let leaks = c.no_leaks_failing(failing.len()).await;
    report(
        &format!(
            "soak: {seconds} s of mixed load on 2 APIs and 3 workers (8 slots each) under Round \
             Robin (0.1 s quantum): {submitted} jobs in batches of 20 and singly, {} failing \
             every attempt, {} sliced",
            failing.len(),
            sliced.len()
        ),
        Duration::ZERO,
        0,
        "0 bodies completed twice",
        &format!(
            "none; RSS max first half → second half after warm-up: {}; connections ≤ {max_conn}, \
             Redis keys ≤ {max_keys}",
            growth.join(", ")
        ),
        &leaks,
    );
}
