//! jobsched-runtime: everything that moves jobs once they are stored.
//!
//! - [`leader`]: leader election through the store (a lease row), so exactly one engine runs
//!   at a time and another process takes over within `leader_ttl` if it dies.
//! - [`engine`]: the leader's maintenance: the rescuer (expired leases), reaping dead workers
//!   from the registry, the policy key (rebuilt from the durable copy after a flush), gauges.
//! - [`worker`]: a pool of execution slots that claims its own work from the store, in the
//!   active policy's order, in the same round trip that records the outcomes of the runs that
//!   ended; runs bodies as tasks (or on blocking threads) under renewed leases.

pub mod config;
pub mod engine;
pub mod error;
pub mod events;
pub mod leader;
pub mod notes;
mod served;
pub mod worker;

pub use config::RuntimeConfig;
pub use error::RuntimeError;

use jobsched_core::ports::{Clock, Store, Transport};
use jobsched_jobs::{DataDir, Registry};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Everything a runtime process needs.
#[derive(Clone)]
pub struct Runtime {
    /// The source of truth.
    pub store: Arc<dyn Store>,
    /// Dispatch transport.
    pub transport: Arc<dyn Transport>,
    /// Job types.
    pub registry: Registry,
    /// Sandbox root for file jobs.
    pub data_dir: DataDir,
    /// Time source.
    pub clock: Arc<dyn Clock>,
    /// Settings.
    pub config: RuntimeConfig,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Run the worker pool (and, if configured, the leader-elected engine) until `shutdown` is
/// cancelled, then shut down gracefully: in-flight jobs get `shutdown_grace` to finish and are
/// handed back (without burning a retry) after that.
pub async fn run(rt: Runtime, shutdown: CancellationToken) -> Result<(), RuntimeError> {
    rt.config.validate()?;
    jobsched_metrics::init_job_types(rt.registry.names());
    let events = events::EventPump::start(rt.transport.clone(), shutdown.clone());
    let leader = if rt.config.run_engine {
        Some(tokio::spawn(leader::run(
            rt.clone(),
            events.clone(),
            shutdown.clone(),
        )))
    } else {
        None
    };
    let worker_result = if rt.config.concurrency > 0 {
        worker::run(rt.clone(), events.clone(), shutdown.clone()).await
    } else {
        shutdown.cancelled().await;
        Ok(())
    };
    if let Some(leader) = leader {
        leader
            .await
            .map_err(|e| RuntimeError::Task(e.to_string()))?;
    }
    worker_result
}
