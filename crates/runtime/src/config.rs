//! Runtime settings.

use crate::error::RuntimeError;
use jobsched_core::retry::Backoff;
use std::time::Duration;

/// Settings of a worker / engine process.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Unique id of this process (lease owner, transport in-flight list).
    pub worker_id: String,
    /// Execution slots (0 = engine only).
    pub concurrency: u32,
    /// Lease of a RUNNING job; renewed every third of it.
    pub lease_ttl: Duration,
    /// How long a SCHEDULED job may wait to be started before it is re-dispatched (only jobs
    /// left SCHEDULED by an older version; workers claim PENDING → RUNNING directly).
    pub dispatch_ttl: Duration,
    /// Leader lease; a dead leader is replaced within about this long.
    pub leader_ttl: Duration,
    /// Worker liveness deadline in the transport (heartbeat every third of it).
    pub worker_ttl: Duration,
    /// Safety-net poll interval (events normally wake everything at once).
    pub poll_interval: Duration,
    /// Retry backoff.
    pub backoff: Backoff,
    /// On shutdown, time in-flight jobs get to finish before being handed back.
    pub shutdown_grace: Duration,
    /// Whether this process competes to run the engine.
    pub run_engine: bool,
    /// Most outcomes written in one store call.
    pub batch_size: usize,
    /// Retention (leader): COMPLETED jobs are deleted this long after they completed; `None`
    /// keeps them.
    pub retention_completed: Option<Duration>,
    /// Retention (leader): FAILED and CANCELLED jobs, except dead letters, are deleted this
    /// long after they ended; `None` keeps them.
    pub retention_failed: Option<Duration>,
    /// The named queues this worker claims from; `None` = every queue.
    pub queues: Option<Vec<String>>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            worker_id: format!("worker-{}", uuid::Uuid::new_v4().simple()),
            concurrency: 4,
            lease_ttl: Duration::from_secs(30),
            dispatch_ttl: Duration::from_secs(30),
            leader_ttl: Duration::from_secs(5),
            worker_ttl: Duration::from_secs(6),
            poll_interval: Duration::from_secs(1),
            backoff: Backoff::default(),
            shutdown_grace: Duration::from_secs(25),
            run_engine: true,
            batch_size: 1000,
            retention_completed: Some(Duration::from_secs(7 * 86_400)),
            retention_failed: Some(Duration::from_secs(30 * 86_400)),
            queues: None,
        }
    }
}

impl RuntimeConfig {
    /// Check the values; the error names the setting.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        let positive = [
            ("lease_ttl", self.lease_ttl),
            ("dispatch_ttl", self.dispatch_ttl),
            ("leader_ttl", self.leader_ttl),
            ("worker_ttl", self.worker_ttl),
            ("poll_interval", self.poll_interval),
        ];
        for (setting, d) in positive {
            if d.is_zero() {
                return Err(RuntimeError::Config {
                    setting,
                    message: "must be greater than zero".into(),
                });
            }
        }
        if self.worker_id.is_empty() || self.worker_id.contains(char::is_whitespace) {
            return Err(RuntimeError::Config {
                setting: "worker_id",
                message: format!("must be non-empty without spaces, got {:?}", self.worker_id),
            });
        }
        if self.batch_size == 0 {
            return Err(RuntimeError::Config {
                setting: "batch_size",
                message: "must be at least 1".into(),
            });
        }
        if self.concurrency > 10_000 {
            return Err(RuntimeError::Config {
                setting: "concurrency",
                message: format!("must be at most 10000, got {}", self.concurrency),
            });
        }
        for name in self.queues.iter().flatten() {
            jobsched_core::queue::check_queue_name(name).map_err(|e| RuntimeError::Config {
                setting: "queues",
                message: format!("queue name `{name}` {e}"),
            })?;
        }
        Ok(())
    }
}
