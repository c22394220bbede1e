//! jobsched-bench: the benchmark behind `jobsched bench`.
//!
//! It measures the scheduler end to end through its REST API, against processes it spawns
//! (`jobsched api` + `jobsched worker`s on a fresh Postgres database and Redis key prefix, or
//! `jobsched dev --memory`) or against a running API (`--url`):
//!
//! - `seed`: the original system's workload (10 ms sleep jobs, 4 slots, single-job POSTs, 8 in
//!   flight) per policy, as throughput and efficiency against the sleep bound;
//! - `burn`: a durable burn-down of many no-op jobs, against the machine's Postgres limit for
//!   the same batched row updates, plus worker memory;
//! - `latency`: idle submit→start / submit→complete percentiles;
//! - `fidelity`: priority inversions, SJF waits against the offline SJF schedule, Round Robin
//!   fairness (Jain's index);
//! - `switch`: time from a policy switch to the first dispatch that follows it;
//! - `post`: single-job POST throughput of the API.
//!
//! [`run`] prints a table (or one JSON document with `--json`) and can draw an SVG chart.
//! Spawned processes, the database and the Redis keys are removed at the end, also on errors
//! and Ctrl-C.

mod baseline;
mod cluster;
mod cpu;
mod pgsample;
mod plot;
pub mod report;
mod scenarios;
pub mod stats;

use clap::{Args, ValueEnum};
use report::Report;
use serde::Serialize;
use std::path::PathBuf;

pub use cluster::Mode;

/// A benchmark scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// The original's workload per policy: throughput and efficiency vs the sleep bound.
    Seed,
    /// Durable no-op burn-down vs the Postgres limit; worker memory.
    Burn,
    /// Idle submit→start / submit→complete percentiles.
    Latency,
    /// Priority inversions, SJF vs offline SJF, Round Robin fairness.
    Fidelity,
    /// Policy switch to first compliant dispatch.
    Switch,
    /// Single-job POST throughput of the API.
    Post,
    /// The web console's server time per page with a large store (not part of `all`).
    Console,
    /// Insert rate, status latency, dispatch rate and leader memory with a very large queue
    /// (not part of `all`).
    Backlog,
    /// Every scenario but `console` and `backlog`.
    All,
}

impl Scenario {
    /// The order `all` runs them in: idle measurements first, the heavy burn-down late.
    pub const ORDER: [Scenario; 6] = [
        Scenario::Seed,
        Scenario::Latency,
        Scenario::Fidelity,
        Scenario::Switch,
        Scenario::Burn,
        Scenario::Post,
    ];

    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Seed => "seed",
            Scenario::Burn => "burn",
            Scenario::Latency => "latency",
            Scenario::Fidelity => "fidelity",
            Scenario::Switch => "switch",
            Scenario::Post => "post",
            Scenario::Console => "console",
            Scenario::Backlog => "backlog",
            Scenario::All => "all",
        }
    }
}

/// Options of `jobsched bench`.
#[derive(Debug, Clone, Args, Serialize)]
pub struct BenchArgs {
    /// Scenarios to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub scenario: Vec<Scenario>,
    /// Benchmark a running API at this URL (e.g. http://127.0.0.1:8000) instead of spawning
    /// processes; its workers are used as they are. The benchmark submits jobs, switches
    /// policies and pauses dispatching there; the policy settings are restored at the end.
    #[arg(long, conflicts_with_all = ["spawn", "dev"])]
    pub url: Option<String>,
    /// Spawn `jobsched api` and workers on a fresh database and Redis prefix (the default
    /// without --url).
    #[arg(long, conflicts_with = "dev")]
    pub spawn: bool,
    /// Spawn `jobsched dev --memory` (SQLite in memory, one process) instead.
    #[arg(long)]
    pub dev: bool,
    /// Postgres server on which the fresh `jobsched_bench_<uuid>` database is created (the
    /// database in this URL is only used to create and drop it).
    #[arg(
        long,
        env = "JOBSCHED_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    #[serde(serialize_with = "serialize_redacted")]
    pub database_url: String,
    /// Redis for the spawned processes (a fresh key prefix is used and deleted afterwards).
    #[arg(
        long,
        env = "JOBSCHED_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    #[serde(serialize_with = "serialize_redacted")]
    pub redis_url: String,
    /// API bearer token: JOBSCHED_API_TOKEN (never a flag, where `ps` would show it).
    #[arg(skip = std::env::var("JOBSCHED_API_TOKEN").ok())]
    #[serde(skip)]
    pub token: Option<String>,
    /// Admin bearer token (policy switches): JOBSCHED_ADMIN_TOKEN.
    #[arg(skip = std::env::var("JOBSCHED_ADMIN_TOKEN").ok())]
    #[serde(skip)]
    pub admin_token: Option<String>,
    /// The jobsched binary to spawn (default: this executable).
    #[arg(long, value_name = "PATH")]
    pub jobsched_bin: Option<PathBuf>,
    /// Print one JSON document with every figure instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Write an SVG chart of throughput and latency per policy to this file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Seed of the random workload generators (same seed, same workload).
    #[arg(long, default_value_t = 42)]
    pub rng_seed: u64,

    /// seed: jobs per policy.
    #[arg(long, default_value_t = 400, value_parser = at_least(1))]
    pub seed_jobs: u32,
    /// seed: worker slots.
    #[arg(long, default_value_t = 4, value_parser = at_least(1))]
    pub seed_slots: u32,
    /// seed: sleep per job, milliseconds.
    #[arg(long, default_value_t = 10.0)]
    pub seed_duration_ms: f64,

    /// burn: no-op jobs to burn down.
    #[arg(long, default_value_t = 100_000, value_parser = at_least(1))]
    pub burn_jobs: u32,
    /// burn: worker processes.
    #[arg(long, default_value_t = 2, value_parser = at_least(1))]
    pub burn_workers: u32,
    /// burn: slots per worker process. 512 matches what the graphile-worker peer holds per
    /// process (a local queue of 500 plus 24 running), so both claim in batches of similar size.
    #[arg(long, default_value_t = 512, value_parser = at_least(1))]
    pub burn_slots: u32,
    /// burn: jobs per `POST /jobs/batch` (1 to 1000, the API's batch limit).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub burn_chunk: u32,
    /// burn: Postgres-limit baseline connection counts to try (the best is the limit).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub baseline_connections: Vec<u32>,

    /// latency: jobs, one submitted every --latency-interval-ms.
    #[arg(long, default_value_t = 200, value_parser = at_least(1))]
    pub latency_jobs: u32,
    /// latency: milliseconds between submissions.
    #[arg(long, default_value_t = 20)]
    pub latency_interval_ms: u64,

    /// fidelity: jobs in each priority / SJF arrival trace.
    #[arg(long, default_value_t = 100, value_parser = at_least(1))]
    pub fidelity_jobs: u32,
    /// fidelity: worker slots.
    #[arg(long, default_value_t = 2, value_parser = at_least(1))]
    pub fidelity_slots: u32,
    /// fidelity: Round Robin jobs.
    #[arg(long, default_value_t = 8, value_parser = at_least(1))]
    pub rr_jobs: u32,
    /// fidelity: Round Robin job length, seconds (many quanta, so progress at an instant is
    /// not dominated by the ±1 quantum of a round in progress).
    #[arg(long, default_value_t = 1.0)]
    pub rr_duration: f64,
    /// fidelity: Round Robin quantum, seconds.
    #[arg(long, default_value_t = 0.05)]
    pub rr_quantum: f64,

    /// switch: trials.
    #[arg(long, default_value_t = 5, value_parser = at_least(1))]
    pub switch_trials: u32,
    /// switch: backlog per trial (at least 10, so that it spans every priority).
    #[arg(long, default_value_t = 40, value_parser = at_least(10))]
    pub switch_jobs: u32,

    /// post: concurrent clients.
    #[arg(long, default_value_t = 16, value_parser = at_least(1))]
    pub post_clients: u32,
    /// post: seconds to run.
    #[arg(long, default_value_t = 3.0)]
    pub post_seconds: f64,
    /// console: jobs in the store while the console's pages are timed.
    #[arg(long, default_value_t = 1_000_000)]
    pub console_jobs: u32,
    /// backlog: pending jobs written before the queue is measured.
    #[arg(long, default_value_t = 10_000_000, value_parser = at_least(1))]
    pub backlog_jobs: u32,
}

/// Everything that can stop the benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Bad command-line options.
    #[error("invalid options: {0}")]
    Options(String),
    /// An API call failed.
    #[error(transparent)]
    Client(#[from] jobsched_client::ClientError),
    /// A direct database operation failed.
    #[error("{context}: {source}")]
    Database {
        /// What was being done.
        context: String,
        /// The driver error.
        #[source]
        source: sqlx::Error,
    },
    /// Creating or migrating the benchmark database failed.
    #[error("cannot prepare the benchmark database: {0}")]
    Store(#[from] jobsched_store::StoreError),
    /// Redis could not be used.
    #[error("{0}")]
    Transport(#[from] jobsched_transport::TransportError),
    /// A process could not be started.
    #[error(
        "cannot start `{bin} {what}`: {source}; pass --jobsched-bin PATH pointing at the jobsched binary"
    )]
    Spawn {
        /// The binary.
        bin: String,
        /// The subcommand.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A spawned process exited while it was needed.
    #[error("spawned `{what}` exited early ({status}); its last log lines:\n{tail}")]
    ChildExited {
        /// Process name.
        what: String,
        /// Exit status.
        status: String,
        /// End of its log.
        tail: String,
    },
    /// Something did not happen in time.
    #[error("timed out after {secs} s waiting for {what}; {hint}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        secs: u64,
        /// What to check.
        hint: String,
    },
    /// A local I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The system under test did something the benchmark cannot measure (a job failed, data
    /// is missing, …).
    #[error("{0}")]
    Check(String),
    /// Ctrl-C.
    #[error(
        "interrupted; spawned processes, the benchmark database and Redis keys were cleaned up"
    )]
    Interrupted,
    /// Some scenarios failed (the others' figures were printed).
    #[error("{} scenario(s) failed: {}", .0.len(), .0.join("; "))]
    ScenariosFailed(Vec<String>),
}

/// URLs go into the JSON report without their passwords.
fn serialize_redacted<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&cluster::redact(url))
}

/// A progress line on stderr.
pub(crate) fn progress(msg: &str) {
    eprintln!("[bench] {msg}");
}

impl BenchArgs {
    fn scenarios(&self) -> Vec<Scenario> {
        let all = self.scenario.is_empty() || self.scenario.contains(&Scenario::All);
        let mut chosen: Vec<Scenario> = Scenario::ORDER
            .into_iter()
            .filter(|s| all || self.scenario.contains(s))
            .collect();
        // Heavy (they fill the store): only when named.
        for heavy in [Scenario::Console, Scenario::Backlog] {
            if self.scenario.contains(&heavy) {
                chosen.push(heavy);
            }
        }
        chosen
    }

    /// Check what clap's parsers do not (counts are range-checked as they are parsed).
    fn validate(&self) -> Result<(), BenchError> {
        for (name, v) in [
            ("--seed-duration-ms", self.seed_duration_ms),
            ("--rr-duration", self.rr_duration),
            ("--rr-quantum", self.rr_quantum),
            ("--post-seconds", self.post_seconds),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(BenchError::Options(format!(
                    "{name} must be a number > 0, got {v}"
                )));
            }
        }
        if self.baseline_connections.is_empty() || self.baseline_connections.contains(&0) {
            return Err(BenchError::Options(
                "--baseline-connections must list connection counts ≥ 1, e.g. 1,2,4".into(),
            ));
        }
        if let Some(url) = &self.url
            && !url.starts_with("http://")
        {
            return Err(BenchError::Options(format!(
                "--url must be an http:// URL such as http://127.0.0.1:8000, got `{url}`"
            )));
        }
        Ok(())
    }
}

/// A clap parser for a count of at least `min`; the error names the flag and the range.
fn at_least(min: u32) -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(i64::from(min)..)
}

/// Run the selected scenarios, print the table (or JSON with `--json`) on stdout, write the
/// SVG with `--plot`, and clean up everything that was spawned or created.
pub async fn run(args: BenchArgs) -> Result<(), BenchError> {
    args.validate()?;
    let scenarios = args.scenarios();
    let mut cluster = cluster::Cluster::new(&args)?;
    let mut report = Report::default();
    let started = chrono::Utc::now();
    scenarios::record_load();
    let outcome = tokio::select! {
        r = run_all(&args, &scenarios, &mut cluster, &mut report) => r,
        _ = tokio::signal::ctrl_c() => Err(BenchError::Interrupted),
    };
    if outcome.is_err() || !report.errors.is_empty() {
        let tails = cluster.log_tails();
        if !tails.is_empty() {
            eprintln!("Logs of the spawned processes:\n{tails}");
        }
    }
    scenarios::describe(&args, &cluster, &mut report, started).await;
    progress("cleaning up");
    cluster.teardown().await;
    if matches!(outcome, Err(BenchError::Interrupted)) {
        return outcome;
    }
    let printed = emit(&args, &report);
    outcome?;
    printed?;
    if report.errors.is_empty() {
        Ok(())
    } else {
        Err(BenchError::ScenariosFailed(report.errors.clone()))
    }
}

async fn run_all(
    args: &BenchArgs,
    scenarios: &[Scenario],
    cluster: &mut cluster::Cluster,
    report: &mut Report,
) -> Result<(), BenchError> {
    cluster.setup().await?;
    for &s in scenarios {
        progress(&format!("scenario {}", s.as_str()));
        let result = match s {
            Scenario::Seed => scenarios::seed::run(args, cluster, report).await,
            Scenario::Burn => scenarios::burn::run(args, cluster, report).await,
            Scenario::Latency => scenarios::latency::run(args, cluster, report).await,
            Scenario::Fidelity => scenarios::fidelity::run(args, cluster, report).await,
            Scenario::Switch => scenarios::switch::run(args, cluster, report).await,
            Scenario::Post => scenarios::post::run(args, cluster, report).await,
            Scenario::Console => scenarios::console::run(args, cluster, report).await,
            Scenario::Backlog => scenarios::backlog::run(args, cluster, report).await,
            Scenario::All => Ok(()),
        };
        if let Err(e) = result {
            progress(&format!("scenario {} failed: {e}", s.as_str()));
            report.errors.push(format!("{}: {e}", s.as_str()));
            // A dead process makes every later scenario fail the same way.
            if matches!(e, BenchError::ChildExited { .. }) {
                break;
            }
        }
    }
    Ok(())
}

fn emit(args: &BenchArgs, report: &Report) -> Result<(), BenchError> {
    if args.json {
        let doc = serde_json::to_string_pretty(report)
            .map_err(|e| BenchError::Check(format!("cannot encode the report as JSON: {e}")))?;
        println!("{doc}");
    } else {
        print!("{}", report.table());
    }
    if let Some(path) = &args.plot {
        let svg = plot::render(report);
        std::fs::write(path, svg).map_err(|source| BenchError::Io {
            context: format!("cannot write the chart to {}", path.display()),
            source,
        })?;
        progress(&format!("chart written to {}", path.display()));
    }
    Ok(())
}
