//! The system under test: a running API (`--url`), or processes this benchmark spawns
//! (`jobsched api` + `jobsched worker`s on a fresh Postgres database and Redis prefix, or
//! `jobsched dev --memory`), and their cleanup.

use crate::{BenchArgs, BenchError, progress};
use jobsched_client::{Client, JobStatus, PolicyUpdate, SubmitJob};
pub use jobsched_store::redact;
use sqlx::Connection;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// How the benchmark reaches the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A running API the user started.
    Url,
    /// `jobsched api` + workers spawned on Postgres and Redis.
    Spawn,
    /// `jobsched dev --memory` spawned (one process, SQLite in memory).
    Dev,
}

/// Worker processes and slots actually serving the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Layout {
    /// Live worker processes.
    pub workers: u32,
    /// Their slots in total.
    pub slots: u64,
}

/// Peak and current resident memory of a process.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Rss {
    /// Process name in this benchmark.
    pub process: String,
    /// `VmHWM`, MiB.
    pub peak_mib: f64,
    /// `VmRSS`, MiB.
    pub current_mib: f64,
}

#[derive(Debug)]
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

/// The processes, database and key prefix of one benchmark run.
#[derive(Debug)]
pub struct Cluster {
    mode: Mode,
    bin: PathBuf,
    token: Option<String>,
    admin_token: Option<String>,
    redis_url: String,
    server_url: String,
    dir: tempfile::TempDir,
    databases: Vec<String>,
    db_url: Option<String>,
    pool: Option<PgPool>,
    server_pool: Option<PgPool>,
    prefix: Option<String>,
    api: Option<Proc>,
    workers: Vec<Proc>,
    logs: Vec<(String, PathBuf)>,
    layout: Option<(u32, u32)>,
    client: Option<Client>,
    admin: Option<Client>,
    spawned: u32,
    url: Option<String>,
    default_slots: u32,
    /// With `--url`: the settings found, restored at teardown.
    original: Option<jobsched_client::SchedulerStatus>,
}

const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Replace the database name in a Postgres URL.
pub fn with_database(url: &str, database: &str) -> Result<String, BenchError> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let Some(scheme_end) = base.find("://").map(|i| i + 3) else {
        return Err(BenchError::Options(format!(
            "--database-url `{}` is not a URL; expected e.g. postgres://postgres@127.0.0.1:5432/postgres",
            redact(url)
        )));
    };
    let authority = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    Ok(match query {
        Some(q) => format!("{authority}/{database}?{q}"),
        None => format!("{authority}/{database}"),
    })
}

pub(crate) fn db_err(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> BenchError {
    let context = context.into();
    move |source| BenchError::Database { context, source }
}

fn free_port() -> Result<u16, BenchError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|source| BenchError::Io {
        context: "cannot find a free local port".into(),
        source,
    })?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|source| BenchError::Io {
            context: "cannot find a free local port".into(),
            source,
        })
}

/// The last `n` lines of a log file.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut s = lines[start..].join("\n");
    if s.is_empty() {
        s = "(no output)".into();
    }
    s
}

/// `VmHWM` and `VmRSS` of a process, MiB.
fn read_rss(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

impl Cluster {
    /// Prepare (nothing is started until [`Cluster::setup`]).
    pub fn new(args: &BenchArgs) -> Result<Cluster, BenchError> {
        let mode = if args.url.is_some() {
            Mode::Url
        } else if args.dev {
            Mode::Dev
        } else {
            Mode::Spawn
        };
        let bin = match &args.jobsched_bin {
            Some(p) => p.clone(),
            None => std::env::current_exe().map_err(|source| BenchError::Io {
                context: "cannot locate this executable to spawn `jobsched api`/`worker`; pass \
                          --jobsched-bin PATH"
                    .into(),
                source,
            })?,
        };
        let dir = tempfile::Builder::new()
            .prefix("jobsched-bench-")
            .tempdir()
            .map_err(|source| BenchError::Io {
                context: "cannot create a temporary directory for logs and the data dir".into(),
                source,
            })?;
        Ok(Cluster {
            mode,
            bin,
            token: args.token.clone().filter(|t| !t.is_empty()),
            admin_token: args.admin_token.clone().filter(|t| !t.is_empty()),
            redis_url: args.redis_url.clone(),
            server_url: args.database_url.clone(),
            dir,
            databases: Vec::new(),
            db_url: None,
            pool: None,
            server_pool: None,
            prefix: None,
            api: None,
            workers: Vec::new(),
            logs: Vec::new(),
            layout: None,
            client: None,
            admin: None,
            spawned: 0,
            url: args.url.clone(),
            default_slots: args.seed_slots,
            original: None,
        })
    }

    /// How the system is reached.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The API base URL (once set up).
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref()
    }

    /// The Redis key prefix (spawn mode).
    pub fn prefix(&self) -> Option<&str> {
        self.prefix.as_deref()
    }

    /// The client for the API.
    pub fn client(&self) -> &Client {
        self.client
            .as_ref()
            .expect("Cluster::setup runs before any scenario")
    }

    /// The client for admin routes (policy).
    pub fn admin(&self) -> &Client {
        self.admin
            .as_ref()
            .expect("Cluster::setup runs before any scenario")
    }

    /// A pool on the database the API uses (spawn mode only).
    pub fn job_db(&self) -> Option<&PgPool> {
        self.pool.as_ref()
    }

    /// The Redis URL the spawned processes use (not known in dev mode).
    pub fn redis_url(&self) -> Option<&str> {
        (self.mode != Mode::Dev).then_some(self.redis_url.as_str())
    }

    fn make_clients(&mut self, url: &str) -> Result<(), BenchError> {
        let mut client = Client::new(url)?;
        if let Some(t) = &self.token {
            client = client.with_token(t.clone());
        }
        let mut admin = Client::new(url)?;
        if let Some(t) = self.admin_token.as_ref().or(self.token.as_ref()) {
            admin = admin.with_token(t.clone());
        }
        self.client = Some(client);
        self.admin = Some(admin);
        self.url = Some(url.to_string());
        Ok(())
    }

    /// Connect to the API, or create the database and prefix and start the API.
    pub async fn setup(&mut self) -> Result<(), BenchError> {
        match self.mode {
            Mode::Url => {
                let url = self.url.clone().unwrap_or_default();
                self.make_clients(&url)?;
                let health = self.client().health().await?;
                if !health.is_healthy() {
                    return Err(BenchError::Check(format!(
                        "the API at {url} is unhealthy (postgres: {}, redis: {}); fix its \
                         backends first",
                        health.postgres, health.redis
                    )));
                }
                self.original = Some(self.client().status().await?);
                Ok(())
            }
            Mode::Dev => self.ensure_workers(1, self.default_slots).await.map(|_| ()),
            Mode::Spawn => {
                let name = format!("jobsched_bench_{}", uuid::Uuid::new_v4().simple());
                let url = with_database(&self.server_url, &name)?;
                progress(&format!(
                    "creating database {name} on {} and Redis prefix",
                    redact(&self.server_url)
                ));
                self.databases.push(name);
                jobsched_store::migrate(&url).await?;
                let pool = PgPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect(&url)
                    .await
                    .map_err(db_err(format!("cannot connect to {}", redact(&url))))?;
                // Schema experiments (A/B of a table setting without a rebuild): SQL run on the
                // fresh database after the migrations.
                if let Ok(sql) = std::env::var("JOBSCHED_BENCH_SETUP_SQL") {
                    progress(&format!("running JOBSCHED_BENCH_SETUP_SQL: {sql}"));
                    sqlx::raw_sql(&sql)
                        .execute(&pool)
                        .await
                        .map_err(db_err("JOBSCHED_BENCH_SETUP_SQL failed".to_string()))?;
                }
                self.pool = Some(pool);
                self.db_url = Some(url);
                let prefix = format!(
                    "jobsched_bench_{}",
                    &uuid::Uuid::new_v4().simple().to_string()[..12]
                );
                // Connecting checks that Redis answers, with a clear error if not.
                jobsched_transport::RedisTransport::connect(&self.redis_url, &prefix).await?;
                self.prefix = Some(prefix);
                self.start_api().await
            }
        }
    }

    fn command(&mut self, role: &str) -> Result<(Command, String, PathBuf), BenchError> {
        self.spawned += 1;
        let name = format!("{role}-{}", self.spawned);
        let log = self.dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).map_err(|source| BenchError::Io {
            context: format!("cannot create log file {}", log.display()),
            source,
        })?;
        let err_file = file.try_clone().map_err(|source| BenchError::Io {
            context: format!("cannot open log file {}", log.display()),
            source,
        })?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg(role)
            .env("JOBSCHED_DATA_DIR", self.dir.path().join("data"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err_file))
            .kill_on_drop(true);
        if let Some(url) = &self.db_url {
            cmd.env("JOBSCHED_DATABASE_URL", url);
        }
        if let Some(prefix) = &self.prefix {
            cmd.env("JOBSCHED_REDIS_URL", &self.redis_url)
                .env("JOBSCHED_REDIS_PREFIX", prefix);
        }
        for (var, value) in [
            ("JOBSCHED_API_TOKEN", &self.token),
            ("JOBSCHED_ADMIN_TOKEN", &self.admin_token),
        ] {
            match value {
                Some(v) => cmd.env(var, v),
                None => cmd.env_remove(var),
            };
        }
        self.logs.push((name.clone(), log.clone()));
        Ok((cmd, name, log))
    }

    fn spawn(
        &self,
        mut cmd: Command,
        name: String,
        log: PathBuf,
        what: &str,
    ) -> Result<Proc, BenchError> {
        let child = cmd.spawn().map_err(|source| BenchError::Spawn {
            bin: self.bin.display().to_string(),
            what: what.to_string(),
            source,
        })?;
        Ok(Proc { name, child, log })
    }

    async fn start_api(&mut self) -> Result<(), BenchError> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let (mut cmd, name, log) = self.command("api")?;
        cmd.env("JOBSCHED_LISTEN", &addr);
        let proc = self.spawn(cmd, name, log, "api")?;
        self.api = Some(proc);
        self.make_clients(&format!("http://{addr}"))?;
        self.wait_healthy().await
    }

    async fn start_dev(&mut self, slots: u32) -> Result<(), BenchError> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let (mut cmd, name, log) = self.command("dev")?;
        cmd.arg("--memory")
            .env("JOBSCHED_LISTEN", &addr)
            .env("JOBSCHED_WORKER_CONCURRENCY", slots.to_string());
        let proc = self.spawn(cmd, name, log, "dev --memory")?;
        self.api = Some(proc);
        self.make_clients(&format!("http://{addr}"))?;
        self.wait_healthy().await
    }

    /// Fail if a spawned process has exited.
    fn check_alive(&mut self) -> Result<(), BenchError> {
        for p in self.api.iter_mut().chain(self.workers.iter_mut()) {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Err(BenchError::ChildExited {
                    what: p.name.clone(),
                    status: status.to_string(),
                    tail: tail(&p.log, 20),
                });
            }
        }
        Ok(())
    }

    async fn wait_healthy(&mut self) -> Result<(), BenchError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_alive()?;
            if let Ok(h) = self.client().health().await
                && h.is_healthy()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(BenchError::Timeout {
                    what: "the spawned API to become healthy".into(),
                    secs: READY_TIMEOUT.as_secs(),
                    hint: format!(
                        "check that Postgres and Redis are reachable; log: {}",
                        self.api
                            .as_ref()
                            .map(|p| tail(&p.log, 10))
                            .unwrap_or_default()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Make `count` worker processes with `slots` slots each serve the API (restarting workers
    /// when the layout changes; in dev mode the one process gets `count × slots` slots). With
    /// `--url`, nothing is started: the layout found is returned.
    pub async fn ensure_workers(&mut self, count: u32, slots: u32) -> Result<Layout, BenchError> {
        let want = (count, slots);
        match self.mode {
            Mode::Url => {
                let status = self.client().status().await?;
                if status.total_slots == 0 {
                    return Err(BenchError::Check(format!(
                        "no worker slots are connected to the API at {}; start `jobsched worker` \
                         processes against the same database and Redis",
                        self.url.as_deref().unwrap_or("?")
                    )));
                }
                if status.workers != count || status.total_slots != u64::from(count * slots) {
                    progress(&format!(
                        "note: this scenario is designed for {count} worker(s) × {slots} slots; \
                         the API has {} worker(s) with {} slots",
                        status.workers, status.total_slots
                    ));
                }
                self.probe().await?;
                return Ok(Layout {
                    workers: status.workers,
                    slots: status.total_slots,
                });
            }
            Mode::Dev => {
                if self.layout != Some(want) {
                    progress(&format!(
                        "starting jobsched dev --memory with {} slots",
                        count * slots
                    ));
                    if let Some(p) = self.api.take() {
                        terminate(vec![p]).await;
                    }
                    self.start_dev(count * slots).await?;
                }
            }
            Mode::Spawn => {
                if self.layout != Some(want) {
                    progress(&format!("starting {count} worker(s) × {slots} slots"));
                    let old = std::mem::take(&mut self.workers);
                    terminate(old).await;
                    for _ in 0..count {
                        let (mut cmd, name, log) = self.command("worker")?;
                        cmd.env("JOBSCHED_WORKER_CONCURRENCY", slots.to_string())
                            .env("JOBSCHED_WORKER_ID", format!("bench-{name}"))
                            .env("JOBSCHED_METRICS_LISTEN", "127.0.0.1:0");
                        let proc = self.spawn(cmd, name, log, "worker")?;
                        self.workers.push(proc);
                    }
                }
            }
        }
        self.layout = None;
        let total = u64::from(count * slots);
        let deadline = Instant::now() + READY_TIMEOUT;
        let expected_workers = if self.mode == Mode::Dev { 1 } else { count };
        loop {
            self.check_alive()?;
            let status = self.client().status().await?;
            if status.workers == expected_workers && status.total_slots == total {
                break;
            }
            if Instant::now() > deadline {
                return Err(BenchError::Timeout {
                    what: format!("{expected_workers} worker(s) with {total} slots to register"),
                    secs: READY_TIMEOUT.as_secs(),
                    hint: format!(
                        "the API reports {} worker(s) with {} slots; worker logs are in {}",
                        status.workers,
                        status.total_slots,
                        self.dir.path().display()
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.probe().await?;
        self.layout = Some(want);
        Ok(Layout {
            workers: expected_workers,
            slots: total,
        })
    }

    /// Ensure some workers are running (the current layout, or the default one).
    pub async fn ensure_any_workers(&mut self) -> Result<Layout, BenchError> {
        match self.layout {
            Some((count, slots)) => self.ensure_workers(count, slots).await,
            None => self.ensure_workers(1, self.default_slots).await,
        }
    }

    /// Run one no-op job end to end: proves the engine leader and a worker are up.
    async fn probe(&mut self) -> Result<(), BenchError> {
        let status = self.client().status().await?;
        if status.paused {
            let mut update = PolicyUpdate::new(status.current_policy);
            update.paused = Some(false);
            self.admin().set_policy(&update).await?;
        }
        let job = SubmitJob::new("bench-probe", "sleep")
            .payload(serde_json::json!({"duration": 0}))
            .max_retries(0);
        let job = self.client().submit(&job).await?;
        let done = self.client().wait_terminal(job.id, READY_TIMEOUT).await?;
        if done.status != JobStatus::Completed {
            return Err(BenchError::Check(format!(
                "the probe job ended {} ({}); the workers cannot run `sleep` jobs",
                done.status,
                done.error_message.unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// Peak and current RSS of the worker processes (the dev process in dev mode).
    pub fn worker_rss(&self) -> Vec<Rss> {
        let procs: Vec<&Proc> = match self.mode {
            Mode::Dev => self.api.iter().collect(),
            _ => self.workers.iter().collect(),
        };
        procs
            .into_iter()
            .filter_map(|p| {
                let (peak, current) = read_rss(p.child.id()?)?;
                Some(Rss {
                    process: p.name.clone(),
                    peak_mib: peak,
                    current_mib: current,
                })
            })
            .collect()
    }

    /// A database with the jobsched schema for the Postgres-limit baseline: the benchmark
    /// database when spawning, else a fresh scratch database on `--database-url`'s server
    /// (dropped at teardown). `None` in dev mode (no Postgres involved).
    pub async fn baseline_url(&mut self) -> Result<Option<String>, BenchError> {
        match self.mode {
            Mode::Dev => Ok(None),
            Mode::Spawn => Ok(self.db_url.clone()),
            Mode::Url => {
                let name = format!("jobsched_bench_scratch_{}", uuid::Uuid::new_v4().simple());
                let url = with_database(&self.server_url, &name)?;
                self.databases.push(name);
                jobsched_store::migrate(&url).await?;
                Ok(Some(url))
            }
        }
    }

    /// A pool on the Postgres server (for server-wide counters), when Postgres is in use.
    pub async fn server_pool(&mut self) -> Option<PgPool> {
        match self.mode {
            Mode::Dev => None,
            Mode::Spawn => self.pool.clone(),
            Mode::Url => {
                if self.server_pool.is_none() {
                    self.server_pool = PgPoolOptions::new()
                        .max_connections(2)
                        .acquire_timeout(Duration::from_secs(5))
                        .connect(&self.server_url)
                        .await
                        .ok();
                }
                self.server_pool.clone()
            }
        }
    }

    /// Labels the CPU accounting uses for a process: spawned API / workers / dev process,
    /// this benchmark, Postgres, Redis, or anything else on the machine.
    pub fn classifier(&self) -> impl Fn(u32, &str) -> String + use<> {
        let workers: Vec<u32> = self.workers.iter().filter_map(|p| p.child.id()).collect();
        let api = self.api.as_ref().and_then(|p| p.child.id());
        let api_label = if self.mode == Mode::Dev {
            "jobsched dev"
        } else {
            "jobsched api"
        };
        let me = std::process::id();
        move |pid, comm| {
            if workers.contains(&pid) {
                "jobsched workers".into()
            } else if Some(pid) == api {
                api_label.into()
            } else if pid == me {
                "benchmark client".into()
            } else if comm == "postgres" {
                "postgres".into()
            } else if comm.starts_with("redis-server") {
                "redis".into()
            } else {
                "other processes".into()
            }
        }
    }

    /// The last lines of every spawned process's log.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for (name, path) in &self.logs {
            let t = tail(path, 15);
            if t != "(no output)" {
                out.push_str(&format!("--- {name} ({}) ---\n{t}\n", path.display()));
            }
        }
        out
    }

    /// Stop every spawned process, drop the databases and delete the Redis keys. Idempotent;
    /// problems are reported on stderr.
    pub async fn teardown(&mut self) {
        if let (Some(original), Some(admin)) = (self.original.take(), self.admin.as_ref()) {
            let update = PolicyUpdate {
                policy: original.current_policy,
                quantum_seconds: Some(original.quantum_seconds),
                paused: Some(original.paused),
            };
            if let Err(e) = admin.set_policy(&update).await {
                eprintln!(
                    "warning: could not restore the scheduler settings ({}, quantum {} s, paused \
                     {}): {e}",
                    original.current_policy, original.quantum_seconds, original.paused
                );
            }
        }
        let mut procs = std::mem::take(&mut self.workers);
        terminate(std::mem::take(&mut procs)).await;
        if let Some(api) = self.api.take() {
            terminate(vec![api]).await;
        }
        if let Some(pool) = self.pool.take() {
            pool.close().await;
        }
        if let Some(pool) = self.server_pool.take() {
            pool.close().await;
        }
        for name in std::mem::take(&mut self.databases) {
            if let Err(e) = drop_database(&self.server_url, &name).await {
                eprintln!(
                    "warning: could not drop database {name} (if it was created): {e}; drop it \
                     with `DROP DATABASE \"{name}\" WITH (FORCE)`"
                );
            }
        }
        if let Some(prefix) = self.prefix.take() {
            match jobsched_transport::RedisTransport::connect(&self.redis_url, &prefix).await {
                Ok(t) => {
                    if let Err(e) = t.delete_all_keys().await {
                        eprintln!("warning: could not delete Redis keys {prefix}:*: {e}");
                    }
                }
                Err(e) => eprintln!("warning: could not delete Redis keys {prefix}:*: {e}"),
            }
        }
    }
}

async fn drop_database(server_url: &str, name: &str) -> Result<(), BenchError> {
    let mut conn = PgConnection::connect(server_url)
        .await
        .map_err(db_err(format!("cannot connect to {}", redact(server_url))))?;
    let sql = format!(
        "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
        name.replace('"', "")
    );
    let result = sqlx::query(&sql)
        .execute(&mut conn)
        .await
        .map_err(db_err(format!("cannot drop database {name}")));
    let _ = conn.close().await;
    result.map(|_| ())
}

/// SIGTERM each process (graceful shutdown), wait up to 40 s, then kill.
async fn terminate(procs: Vec<Proc>) {
    let mut procs = procs;
    for p in &procs {
        if let Some(pid) = p.child.id() {
            let sent = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !sent {
                eprintln!("warning: could not send SIGTERM to {} (pid {pid})", p.name);
            }
        }
    }
    for p in &mut procs {
        match tokio::time::timeout(Duration::from_secs(40), p.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!(
                    "warning: {} did not stop within 40 s of SIGTERM; killing it",
                    p.name
                );
                let _ = p.child.kill().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "b").unwrap(),
            "postgres://postgres@127.0.0.1:5432/b"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "b").unwrap(),
            "postgres://u:p@h/b?sslmode=disable"
        );
        assert_eq!(
            with_database("postgresql://h:5", "b").unwrap(),
            "postgresql://h:5/b"
        );
        assert!(with_database("nonsense", "b").is_err());
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    }
}
