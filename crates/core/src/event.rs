//! What travels between processes: [`Event`]s and each live worker's [`WorkerSlots`].

use crate::job::{JobId, PendingJob};
use serde::{Deserialize, Serialize};

/// One live worker's slots as reported to the transport.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerSlots {
    /// Worker id.
    pub worker: String,
    /// Slots waiting for work.
    pub idle: u32,
    /// All slots.
    pub total: u32,
    /// The job types it serves (empty until it reported them).
    #[serde(default)]
    pub job_types: Vec<String>,
}

/// Events broadcast between processes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// New PENDING jobs exist (submission, retry, requeue): idle workers should claim.
    JobsAvailable,
    /// The policy settings changed.
    PolicyChanged,
    /// This PENDING job was just committed (one submission), with its queue data: idle
    /// workers should claim.
    Submitted(PendingJob),
    /// This job was cancelled while RUNNING: the worker running it stops the body (without
    /// the event, it finds out at its next lease renewal).
    Cancelled(JobId),
}
