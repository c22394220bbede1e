//! Command-line interface: flags with environment fallbacks.

use clap::{Args, Parser, Subcommand};
pub use jobsched_worker::args::{Backends, DataArgs, DbArgs, RedisArgs, SlotArgs, WorkerArgs};
use std::path::PathBuf;

/// jobsched — a Kubernetes-native distributed job scheduler.
#[derive(Debug, Parser)]
#[command(name = "jobsched", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply database migrations (idempotent).
    Migrate(DbArgs),
    /// Run the REST API server.
    Api(ApiArgs),
    /// Run a worker process (execution slots + the leader-elected engine).
    Worker(WorkerArgs),
    /// Run API, engine and workers in one process on an embedded SQLite store; no services.
    Dev(DevArgs),
    /// Run the Kubernetes controller for the SchedulerConfig resource.
    Controller(ControllerArgs),
    /// Print a CustomResourceDefinition's YAML: schedulerconfigs (default) or jobschedules.
    Crd {
        /// Which one.
        #[arg(default_value = "schedulerconfigs", value_parser = ["schedulerconfigs", "jobschedules"])]
        which: String,
    },
    /// Submit a job (e.g. `jobsched submit sleep duration=3 --wait`).
    Submit {
        #[command(flatten)]
        conn: crate::client_cmd::Conn,
        #[command(flatten)]
        args: crate::client_cmd::SubmitArgs,
    },
    /// List jobs.
    Jobs {
        #[command(flatten)]
        conn: crate::client_cmd::Conn,
        #[command(flatten)]
        args: crate::client_cmd::JobsArgs,
    },
    /// Show one job.
    Job {
        #[command(flatten)]
        conn: crate::client_cmd::Conn,
        /// Job id.
        id: uuid::Uuid,
    },
    /// List the job types: built in, or registered by the workers that serve them.
    JobTypes {
        #[command(flatten)]
        conn: crate::client_cmd::Conn,
    },
    /// Show the log lines a job's runs wrote, per try.
    Logs {
        #[command(flatten)]
        conn: crate::client_cmd::Conn,
        /// Job id.
        id: uuid::Uuid,
        /// Only this try (1 = the first).
        #[arg(long)]
        attempt: Option<u32>,
    },
    /// Cancel a job that has not ended (a running one is stopped).
    Cancel {
        #[command(flatten)]
        conn: crate::client_cmd::Conn,
        /// Job id.
        id: uuid::Uuid,
    },
    /// Job counts per status.
    Stats {
        #[command(flatten)]
        conn: crate::client_cmd::Conn,
    },
    /// Show the scheduler status, or switch the policy (fcfs, sjf, priority, round_robin).
    Policy {
        #[command(flatten)]
        conn: crate::client_cmd::Conn,
        /// New policy; omit to show the current one.
        name: Option<String>,
        /// Round Robin quantum, seconds.
        #[arg(long)]
        quantum: Option<f64>,
        /// Pause (true) or resume (false) dispatching.
        #[arg(long)]
        paused: Option<bool>,
        /// Take the policy back from a SchedulerConfig whose controller is gone (admin).
        #[arg(long, conflicts_with_all = ["name", "quantum", "paused"])]
        release_ownership: bool,
    },
    /// Benchmarks: throughput, burn-down, latency, policy fidelity, switch time.
    Bench(jobsched_bench::BenchArgs),
    /// Dead-letter queue: list, retry ID, purge.
    Dlq {
        #[command(flatten)]
        conn: crate::client_cmd::Conn,
        #[command(subcommand)]
        cmd: crate::client_cmd::DlqCommand,
    },
    /// Named queues: list, show, put (create or change policy, pause, limit, weight).
    Queues {
        #[command(flatten)]
        conn: crate::client_cmd::Conn,
        #[command(subcommand)]
        cmd: crate::client_cmd::QueueCommand,
    },
    /// Periodic jobs: list, show, put (create or replace), delete.
    Schedules {
        #[command(flatten)]
        conn: crate::client_cmd::Conn,
        #[command(subcommand)]
        cmd: crate::client_cmd::ScheduleCommand,
    },
}

/// `jobsched controller`.
#[derive(Debug, Args)]
pub struct ControllerArgs {
    #[command(flatten)]
    pub redis: RedisArgs,
    /// Also keep the durable policy copy in this database (recommended).
    #[arg(long, env = "JOBSCHED_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Namespace to watch (the pod's own).
    #[arg(long, env = "JOBSCHED_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Name of the SchedulerConfig this installation follows.
    #[arg(long, env = "JOBSCHED_CONFIG_NAME", default_value = "jobsched")]
    pub config_name: String,
    /// Elect a leader through a coordination.k8s.io Lease (needed with 2+ replicas).
    #[arg(long, env = "JOBSCHED_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Lease name for leader election.
    #[arg(
        long,
        env = "JOBSCHED_LEASE_NAME",
        default_value = "jobsched-controller"
    )]
    pub lease_name: String,
    /// Seconds between re-asserting the desired state.
    #[arg(long, env = "JOBSCHED_REQUEUE_SECONDS", default_value_t = 60.0)]
    pub requeue_seconds: f64,
    /// Follow only the JobSchedules with these labels (a label selector, e.g.
    /// `app.kubernetes.io/instance=prod`); empty: every JobSchedule in the namespace.
    /// JobSchedules are followed only with --database-url.
    #[arg(long, env = "JOBSCHED_SCHEDULE_SELECTOR")]
    pub schedule_selector: Option<String>,
    /// Address of the `/metrics`, `/livez` and `/readyz` server ("off" to disable). Unset:
    /// 0.0.0.0:9090, or a free port (logged) when another process on the host holds 9090.
    #[arg(long, env = "JOBSCHED_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
}

/// HTTP API settings.
#[derive(Debug, Args, Clone)]
pub struct HttpArgs {
    /// Bearer token required on every route but health/probes/docs (from the environment or
    /// `--api-token-file`, never the command line).
    #[arg(skip = std::env::var("JOBSCHED_API_TOKEN").ok())]
    pub api_token: Option<String>,
    /// File holding the API token (first line); overrides JOBSCHED_API_TOKEN.
    #[arg(long, env = "JOBSCHED_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Bearer token required for policy switches and dead-letter operations (from the
    /// environment or `--admin-token-file`). With an API token but no admin token, admin
    /// operations are refused.
    #[arg(skip = std::env::var("JOBSCHED_ADMIN_TOKEN").ok())]
    pub admin_token: Option<String>,
    /// File holding the admin token (first line); overrides JOBSCHED_ADMIN_TOKEN.
    #[arg(long, env = "JOBSCHED_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Largest accepted request body, bytes.
    #[arg(long, env = "JOBSCHED_BODY_LIMIT", default_value_t = 1024 * 1024)]
    pub body_limit: usize,
    /// Largest job payload (serialized JSON), bytes; larger → 413 naming the field.
    #[arg(long, env = "JOBSCHED_MAX_PAYLOAD", default_value_t = 64 * 1024)]
    pub max_payload: usize,
    /// Most requests served at once; more are answered 503 with Retry-After.
    #[arg(long, env = "JOBSCHED_API_MAX_INFLIGHT", default_value_t = 128)]
    pub max_inflight: usize,
    /// Most open connections; more are answered 503 and closed.
    #[arg(long, env = "JOBSCHED_API_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Bytes of request bodies held at once across all requests; more are answered 503.
    #[arg(long, env = "JOBSCHED_API_BODY_BUDGET", default_value_t = 16 * 1024 * 1024)]
    pub body_budget: usize,
    /// Seconds a request may take, headers to response (408 after); bodies get the same.
    #[arg(long, env = "JOBSCHED_API_REQUEST_TIMEOUT", default_value_t = 30.0)]
    pub request_timeout: f64,
}

/// `jobsched api`.
#[derive(Debug, Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub backends: Backends,
    #[command(flatten)]
    pub http: HttpArgs,
    /// Listen address.
    #[arg(long, env = "JOBSCHED_LISTEN", default_value = "0.0.0.0:8000")]
    pub listen: String,
    /// Address of the API's `/metrics` server ("off" to disable). Unset: 0.0.0.0:9090, or a
    /// free port (logged) when that is taken.
    #[arg(long, env = "JOBSCHED_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
}

/// `jobsched dev`.
#[derive(Debug, Args)]
pub struct DevArgs {
    /// SQLite file holding the jobs.
    #[arg(long, default_value = "./jobsched-dev.db")]
    pub db: PathBuf,
    /// Keep everything in memory (nothing survives a restart).
    #[arg(long)]
    pub memory: bool,
    /// Listen address.
    #[arg(long, env = "JOBSCHED_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: String,
    /// Address of the `/metrics` server ("off" to disable). Unset: 127.0.0.1:9090, or a free
    /// port (printed) when that is taken.
    #[arg(long, env = "JOBSCHED_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub slots: SlotArgs,
}
