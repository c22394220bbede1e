//! jobsched-worker: run a jobsched worker with your own job types.
//!
//! A worker binary of your own depends on this crate, implements [`Handler`] for each job type
//! it serves, and hands them to a [`Worker`]. It runs exactly as `jobsched worker` does: the
//! same flags and `JOBSCHED_*` variables ([`args::WorkerArgs`]), leases, retries, metrics and
//! probes, leader-elected maintenance, and on SIGTERM in-flight jobs get the grace period and
//! are then handed back without spending a retry. At start it registers its job types and
//! their payload schemas in the store: the API then accepts submissions of them (checked
//! against the schema), and only workers serving a type take its jobs.
//!
//! ```no_run
//! use jobsched_worker::{Ctx, Handler, JobError, Worker};
//! use serde_json::{Value, json};
//!
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! struct Greet {
//!     name: String,
//! }
//!
//! struct GreetJob;
//!
//! impl Handler for GreetJob {
//!     type Payload = Greet;
//!     const NAME: &'static str = "greet";
//!     async fn run(&self, ctx: Ctx, p: Greet) -> Result<Value, JobError> {
//!         ctx.info(format!("greeting {}", p.name));
//!         Ok(json!({"greeting": format!("hello, {}", p.name)}))
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     Worker::new().handler(GreetJob).main()
//! }
//! ```

pub mod args;
mod error;
pub mod logging;
pub mod serve;

pub use error::WorkerError;
pub use jobsched_jobs::{
    Ctx, DataDir, FieldError, Handler, JobError, JobHandler, LogLevel, Registry, Typed,
};

use args::WorkerArgs;
use jobsched_core::ports::SystemClock;
use jobsched_runtime::Runtime;
use std::sync::Arc;

/// A worker and the job types it serves.
#[derive(Debug, Clone, Default)]
pub struct Worker {
    registry: Registry,
}

/// The command line of a worker binary: the same flags as `jobsched worker`.
#[derive(Debug, clap::Parser)]
#[command(version, about = "A jobsched worker")]
struct Cli {
    #[command(flatten)]
    args: WorkerArgs,
}

impl Worker {
    /// A worker serving no job type yet.
    pub fn new() -> Worker {
        Worker::default()
    }

    /// A worker serving jobsched's built-in types (`sleep`, `word_count`, `thumbnail`; and
    /// `probe` when `JOBSCHED_PROBE_LOG` is set).
    pub fn builtin() -> Worker {
        Worker {
            registry: Registry::builtin().with_probe_from_env(),
        }
    }

    /// Serve `handler`'s job type too (replacing one of the same name).
    pub fn handler<H: Handler>(mut self, handler: H) -> Worker {
        self.registry.register(Arc::new(Typed::new(handler)));
        self
    }

    /// Serve a job type given as a [`JobHandler`] (blocking bodies, or your own validation).
    pub fn job_type(mut self, handler: Arc<dyn JobHandler>) -> Worker {
        self.registry.register(handler);
        self
    }

    /// The job types served.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Parse the command line and environment (as `jobsched worker` does), run until SIGTERM or
    /// Ctrl-C, and return the process's exit code (an error is printed to stderr).
    pub fn main(self) -> std::process::ExitCode {
        let cli = <Cli as clap::Parser>::parse();
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        jobsched_store::name_connections("jobsched-worker");
        match rt.block_on(self.run(cli.args)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::ExitCode::FAILURE
            }
        }
    }

    /// Run with these settings until SIGTERM or Ctrl-C.
    pub async fn run(self, args: WorkerArgs) -> Result<(), WorkerError> {
        logging::init("info");
        if self.registry.names().is_empty() {
            return Err(WorkerError::Config(
                "this worker serves no job type; add handlers with Worker::handler".into(),
            ));
        }
        for name in self.registry.names() {
            if let Err(why) = jobsched_core::job_type::check_type_name(name) {
                return Err(WorkerError::Config(format!("job type name `{name}` {why}")));
            }
        }
        let config = serve::runtime_config(&args.slots, args.worker_id.clone(), !args.no_engine)?;
        let data_dir = serve::data_dir(&args.backends.data.data_dir)?;
        let store = serve::connect_store(&args.backends.db.database_url, 8).await?;
        let transport = serve::connect_redis(&args.backends.redis).await?;
        let rt = Runtime {
            store,
            transport,
            registry: self.registry,
            data_dir,
            clock: Arc::new(SystemClock),
            config,
        };
        let shutdown = serve::shutdown_signal();
        let metrics = serve::spawn_metrics_server(
            args.metrics_listen.as_deref(),
            serve::DEFAULT_METRICS_LISTEN,
            serve::backends_ready(&rt.store, &rt.transport),
            &shutdown,
        )
        .await?;
        jobsched_runtime::run(rt, shutdown).await?;
        metrics.stopped().await;
        Ok(())
    }
}
