//! The worker's settings: command-line flags with `JOBSCHED_*` environment fallbacks, the
//! same for `jobsched worker` and a worker built with this crate.

use clap::Args;
use std::path::PathBuf;

/// Worker tuning shared by `worker` and `dev`.
#[derive(Debug, Args, Clone)]
pub struct SlotArgs {
    /// Execution slots in this process.
    #[arg(long, env = "JOBSCHED_WORKER_CONCURRENCY", default_value_t = 4)]
    pub concurrency: u32,
    /// Ignored (kept so existing settings still parse): a worker claims its own jobs for its
    /// free slots, in the same round trip that records the outcomes of the jobs that ended, so
    /// holding jobs ahead of a free slot no longer saves anything.
    #[arg(
        long,
        env = "JOBSCHED_WORKER_PREFETCH",
        default_value_t = 0,
        hide = true
    )]
    pub prefetch: u32,
    /// Lease of a running job, seconds (renewed every third).
    #[arg(long, env = "JOBSCHED_LEASE_TTL", default_value_t = 30.0)]
    pub lease_ttl: f64,
    /// Seconds a dispatched job may wait to be started before it is re-dispatched.
    #[arg(long, env = "JOBSCHED_DISPATCH_TTL", default_value_t = 30.0)]
    pub dispatch_ttl: f64,
    /// Engine leader lease, seconds; a dead leader is replaced within about this long.
    #[arg(long, env = "JOBSCHED_LEADER_TTL", default_value_t = 5.0)]
    pub leader_ttl: f64,
    /// Worker liveness deadline, seconds (heartbeat every third).
    #[arg(long, env = "JOBSCHED_WORKER_TTL", default_value_t = 6.0)]
    pub worker_ttl: f64,
    /// Retry backoff base, seconds.
    #[arg(long, env = "JOBSCHED_BACKOFF_BASE", default_value_t = 1.0)]
    pub backoff_base: f64,
    /// Retry backoff cap, seconds.
    #[arg(long, env = "JOBSCHED_BACKOFF_CAP", default_value_t = 300.0)]
    pub backoff_cap: f64,
    /// On SIGTERM, seconds in-flight jobs get to finish before being handed back.
    #[arg(long, env = "JOBSCHED_SHUTDOWN_GRACE", default_value_t = 25.0)]
    pub shutdown_grace: f64,
    /// Retention of COMPLETED jobs, seconds after completion (0 = keep forever).
    #[arg(
        long,
        env = "JOBSCHED_RETENTION_COMPLETED",
        default_value_t = 604_800.0
    )]
    pub retention_completed: f64,
    /// Retention of FAILED and CANCELLED jobs (dead letters stay until purged or retried),
    /// seconds after they ended (0 = keep forever).
    #[arg(long, env = "JOBSCHED_RETENTION_FAILED", default_value_t = 2_592_000.0)]
    pub retention_failed: f64,
    /// The named queues this process's slots serve, comma-separated (default: every queue).
    #[arg(long, env = "JOBSCHED_QUEUES", value_delimiter = ',')]
    pub queues: Vec<String>,
    /// Bytes all image decodes of this process may hold at once (jobs wait for budget).
    #[arg(long, env = "JOBSCHED_DECODE_BUDGET", default_value_t = 192 * 1024 * 1024)]
    pub decode_budget: u64,
}

/// Where a cluster process keeps its state: the database, Redis and the data directory.
#[derive(Debug, Args, Clone)]
pub struct Backends {
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub data: DataArgs,
}

/// `jobsched worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub backends: Backends,
    #[command(flatten)]
    pub slots: SlotArgs,
    /// This process's id (default: hostname-based, unique).
    #[arg(long, env = "JOBSCHED_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Do not compete for the engine leadership (execution slots only).
    #[arg(long, env = "JOBSCHED_NO_ENGINE")]
    pub no_engine: bool,
    /// Address of the `/metrics`, `/livez` and `/readyz` server ("off" to disable). Unset:
    /// 0.0.0.0:9090, or a free port (logged) when another process on the host holds 9090.
    #[arg(long, env = "JOBSCHED_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
}

/// Database selection.
#[derive(Debug, Args, Clone)]
pub struct DbArgs {
    /// Database URL: postgres://… or sqlite://…
    #[arg(long, env = "JOBSCHED_DATABASE_URL")]
    pub database_url: String,
}

/// Redis selection.
#[derive(Debug, Args, Clone)]
pub struct RedisArgs {
    /// Redis URL.
    #[arg(
        long,
        env = "JOBSCHED_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,
    /// Key prefix, so several installations (or tests) can share one Redis.
    #[arg(long, env = "JOBSCHED_REDIS_PREFIX", default_value = "jobsched")]
    pub redis_prefix: String,
}

/// Root directory for file jobs.
#[derive(Debug, Args, Clone)]
pub struct DataArgs {
    /// Every path in a job payload is resolved inside this directory.
    #[arg(long, env = "JOBSCHED_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}
